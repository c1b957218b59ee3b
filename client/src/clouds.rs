//! `clouds.yaml`, as openstacksdk and python-openstackclient read it.
//!
//! ```yaml
//! clouds:
//!   berth:
//!     auth:
//!       auth_url: http://127.0.0.1:9517/identity/v3
//!       username: alice
//!       password: s3cret
//!       project_name: demo
//!       user_domain_name: Default
//!       project_domain_name: Default
//!     region_name: RegionOne
//!     interface: public
//!     identity_api_version: 3
//! ```
//!
//! Nothing here reads the environment: the caller passes the files to search (see
//! [`search_paths`]).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The whole file; only `clouds` matters here.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CloudsFile {
    /// Named clouds.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub clouds: BTreeMap<String, CloudConfig>,
}

/// One named cloud. Unknown keys are ignored.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CloudConfig {
    /// Authentication settings.
    #[serde(default)]
    pub auth: CloudAuth,
    /// Auth plugin (`password`, `token`, `admin_token`, ...); informational.
    #[serde(default)]
    pub auth_type: Option<String>,
    /// Region of the endpoint.
    #[serde(default)]
    pub region_name: Option<String>,
    /// A list of regions; the first is used when `region_name` is not set.
    #[serde(default)]
    pub regions: Vec<serde_yaml::Value>,
    /// Endpoint interface (`public`, `internal`, `admin`).
    #[serde(default)]
    pub interface: Option<String>,
    /// Identity API version; only 3 is supported.
    #[serde(default, deserialize_with = "string_or_number")]
    pub identity_api_version: Option<String>,
}

/// The `auth` section of a cloud. Unknown keys are ignored.
#[derive(Clone, Default, PartialEq, Eq, Deserialize)]
pub struct CloudAuth {
    /// Identity URL.
    pub auth_url: Option<String>,
    /// User name.
    pub username: Option<String>,
    /// Password.
    pub password: Option<String>,
    /// Project name.
    pub project_name: Option<String>,
    /// Domain of the user.
    pub user_domain_name: Option<String>,
    /// Domain of the project.
    pub project_domain_name: Option<String>,
    /// Domain id of the user; only `default` can be used (it means `Default`).
    pub user_domain_id: Option<String>,
    /// Domain id of the project; only `default` can be used (it means `Default`).
    pub project_domain_id: Option<String>,
    /// A token, for the `token`/`admin_token` plugins.
    pub token: Option<String>,
    /// Fixed endpoint, for the `admin_token` plugin.
    pub endpoint: Option<String>,
}

impl std::fmt::Debug for CloudAuth {
    // Secrets never appear in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CloudAuth")
            .field("auth_url", &self.auth_url)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("project_name", &self.project_name)
            .field("user_domain_name", &self.user_domain_name)
            .field("project_domain_name", &self.project_domain_name)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl CloudConfig {
    /// The region: `region_name`, else the first of `regions` (a name or `{name: ..}`).
    pub fn region(&self) -> Option<String> {
        self.region_name.clone().or_else(|| {
            self.regions.first().and_then(|r| match r {
                serde_yaml::Value::String(name) => Some(name.clone()),
                other => other
                    .get("name")
                    .and_then(|n| n.as_str())
                    .map(str::to_string),
            })
        })
    }

    /// The user's domain name, mapping the id `default` to the name `Default`.
    pub fn user_domain(&self) -> Result<Option<String>, CloudsError> {
        domain(
            &self.auth.user_domain_name,
            &self.auth.user_domain_id,
            "user_domain",
        )
    }

    /// The project's domain name, mapping the id `default` to the name `Default`.
    pub fn project_domain(&self) -> Result<Option<String>, CloudsError> {
        domain(
            &self.auth.project_domain_name,
            &self.auth.project_domain_id,
            "project_domain",
        )
    }

    /// Fails unless the identity API version is unset or 3.
    pub fn check_identity_version(&self) -> Result<(), CloudsError> {
        match self.identity_api_version.as_deref() {
            None | Some("3") | Some("3.0") => Ok(()),
            Some(other) => Err(CloudsError(format!(
                "identity_api_version {other} is not supported; Berth speaks identity API v3"
            ))),
        }
    }
}

fn domain(
    name: &Option<String>,
    id: &Option<String>,
    what: &str,
) -> Result<Option<String>, CloudsError> {
    match (name, id) {
        (Some(name), _) => Ok(Some(name.clone())),
        (None, Some(id)) if id.eq_ignore_ascii_case("default") => Ok(Some("Default".into())),
        (None, Some(id)) => Err(CloudsError(format!(
            "{what}_id {id:?} is not supported; set {what}_name instead"
        ))),
        (None, None) => Ok(None),
    }
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<BTreeMap<String, CloudConfig>, D::Error> {
    Ok(Option::deserialize(deserializer)?.unwrap_or_default())
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<String>, D::Error> {
    Ok(
        match Option::<serde_yaml::Value>::deserialize(deserializer)? {
            None | Some(serde_yaml::Value::Null) => None,
            Some(serde_yaml::Value::String(s)) => Some(s),
            Some(serde_yaml::Value::Number(n)) => Some(n.to_string()),
            Some(other) => Some(format!("{other:?}")),
        },
    )
}

/// A problem with clouds.yaml: unreadable, malformed, or without the named cloud.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct CloudsError(String);

/// Parses the text of a clouds.yaml file.
pub fn parse(text: &str) -> Result<CloudsFile, serde_yaml::Error> {
    if text.trim().is_empty() {
        return Ok(CloudsFile::default());
    }
    serde_yaml::from_str(text)
}

/// The files to search, in order, as openstacksdk does: `OS_CLIENT_CONFIG_FILE` (if
/// given), `./clouds.yaml`, `$XDG_CONFIG_HOME/openstack/clouds.yaml` (or
/// `~/.config/openstack/clouds.yaml`), `/etc/openstack/clouds.yaml`.
pub fn search_paths(
    explicit: Option<&Path>,
    cwd: Option<&Path>,
    home: Option<&Path>,
    xdg_config_home: Option<&Path>,
) -> Vec<PathBuf> {
    let mut paths = Vec::new();
    if let Some(explicit) = explicit {
        paths.push(explicit.to_path_buf());
    }
    paths.push(match cwd {
        Some(cwd) => cwd.join("clouds.yaml"),
        None => PathBuf::from("clouds.yaml"),
    });
    if let Some(config) = xdg_config_home.filter(|p| p.is_absolute()) {
        paths.push(config.join("openstack").join("clouds.yaml"));
    }
    if let Some(home) = home {
        let path = home.join(".config").join("openstack").join("clouds.yaml");
        if !paths.contains(&path) {
            paths.push(path);
        }
    }
    paths.push(PathBuf::from("/etc/openstack/clouds.yaml"));
    paths
}

/// Finds the cloud `name` in the first of `paths` that defines it.
///
/// The error names the files that were read and the clouds they define, or says that
/// none of the files exists.
pub fn load_cloud(name: &str, paths: &[PathBuf]) -> Result<(PathBuf, CloudConfig), CloudsError> {
    let mut read = Vec::new();
    let mut defined = Vec::new();
    for path in paths {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => {
                return Err(CloudsError(format!(
                    "could not read {}: {err}",
                    path.display()
                )))
            }
        };
        let file = parse(&text)
            .map_err(|err| CloudsError(format!("could not parse {}: {err}", path.display())))?;
        if let Some(cloud) = file.clouds.get(name) {
            cloud.check_identity_version()?;
            return Ok((path.clone(), cloud.clone()));
        }
        read.push(path.display().to_string());
        defined.extend(file.clouds.into_keys());
    }
    let searched = paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    if read.is_empty() {
        return Err(CloudsError(format!(
            "cloud {name:?} not found: there is no clouds.yaml (looked at {searched}); create one or set OS_CLIENT_CONFIG_FILE"
        )));
    }
    let defined = if defined.is_empty() {
        "none".to_string()
    } else {
        defined.join(", ")
    };
    Err(CloudsError(format!(
        "cloud {name:?} not found in {}; defined clouds: {defined}",
        read.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
clouds:
  berth:
    auth:
      auth_url: http://127.0.0.1:9517/identity/v3
      username: alice
      password: s3cret
      project_name: demo
      user_domain_name: Default
      project_domain_name: Default
    region_name: RegionOne
    interface: public
    identity_api_version: 3
  devstack:
    auth:
      auth_url: http://ctrl/identity
      username: admin
      password: pw
      project_name: admin
      user_domain_id: default
      project_domain_id: default
    regions:
      - name: RegionTwo
    identity_api_version: "3"
    unknown_key: [1, 2]
  old:
    auth: {auth_url: http://old:5000/v2.0}
    identity_api_version: 2
"#;

    #[test]
    fn clouds_yaml_yields_auth_region_and_interface() {
        let file = parse(SAMPLE).unwrap();
        let cloud = &file.clouds["berth"];
        assert_eq!(
            cloud.auth.auth_url.as_deref(),
            Some("http://127.0.0.1:9517/identity/v3")
        );
        assert_eq!(cloud.auth.username.as_deref(), Some("alice"));
        assert_eq!(cloud.auth.password.as_deref(), Some("s3cret"));
        assert_eq!(cloud.auth.project_name.as_deref(), Some("demo"));
        assert_eq!(cloud.user_domain().unwrap().as_deref(), Some("Default"));
        assert_eq!(cloud.region().as_deref(), Some("RegionOne"));
        assert_eq!(cloud.interface.as_deref(), Some("public"));
        assert_eq!(cloud.identity_api_version.as_deref(), Some("3"));
        assert!(cloud.check_identity_version().is_ok());
    }

    #[test]
    fn domain_id_default_and_region_lists_are_understood() {
        let file = parse(SAMPLE).unwrap();
        let cloud = &file.clouds["devstack"];
        assert_eq!(cloud.user_domain().unwrap().as_deref(), Some("Default"));
        assert_eq!(cloud.project_domain().unwrap().as_deref(), Some("Default"));
        assert_eq!(cloud.region().as_deref(), Some("RegionTwo"));
    }

    #[test]
    fn identity_v2_is_rejected() {
        let file = parse(SAMPLE).unwrap();
        let err = file.clouds["old"].check_identity_version().unwrap_err();
        assert!(err.to_string().contains("identity API v3"), "{err}");
    }

    #[test]
    fn load_cloud_uses_the_first_file_that_defines_the_cloud() {
        let dir = std::env::temp_dir().join(format!("berth-clouds-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let first = dir.join("first.yaml");
        let second = dir.join("second.yaml");
        std::fs::write(&first, "clouds:\n  other:\n    auth: {username: x}\n").unwrap();
        std::fs::write(&second, SAMPLE).unwrap();
        let paths = vec![dir.join("missing.yaml"), first.clone(), second.clone()];

        let (path, cloud) = load_cloud("berth", &paths).unwrap();
        assert_eq!(path, second);
        assert_eq!(cloud.auth.username.as_deref(), Some("alice"));

        let err = load_cloud("nope", &paths).unwrap_err().to_string();
        assert!(
            err.contains("defined clouds: other, berth, devstack, old"),
            "{err}"
        );

        let err = load_cloud("berth", &[dir.join("missing.yaml")])
            .unwrap_err()
            .to_string();
        assert!(err.contains("there is no clouds.yaml"), "{err}");

        std::fs::write(&first, "clouds: [not, a, map").unwrap();
        let err = load_cloud("berth", &paths).unwrap_err().to_string();
        assert!(err.starts_with("could not parse"), "{err}");

        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn search_paths_follow_openstacksdk_order() {
        let paths = search_paths(
            Some(Path::new("/tmp/mine.yaml")),
            Some(Path::new("/work")),
            Some(Path::new("/home/a")),
            None,
        );
        assert_eq!(
            paths,
            [
                "/tmp/mine.yaml",
                "/work/clouds.yaml",
                "/home/a/.config/openstack/clouds.yaml",
                "/etc/openstack/clouds.yaml"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn empty_clouds_yaml_has_no_clouds() {
        assert!(parse("").unwrap().clouds.is_empty());
        assert!(parse("clouds: {}").unwrap().clouds.is_empty());
        assert!(parse("clouds:\n").unwrap().clouds.is_empty());
    }
}
