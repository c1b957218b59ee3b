//! `--os-*` options and how they, `OS_*` variables and clouds.yaml combine into an
//! [`AuthConfig`], as python-openstackclient combines them: a flag (or its variable)
//! overrides the named cloud's value.

use std::path::{Path, PathBuf};

use clap::Args;

use super::error::CliError;
use crate::auth::{AuthConfig, PasswordAuth};
use crate::clouds::{self, CloudConfig};

/// Authentication options; each also reads the `OS_*` variable of the same name.
#[derive(Debug, Clone, Default, Args)]
#[command(next_help_heading = "Authentication (flags override OS_* variables and clouds.yaml)")]
pub struct AuthArgs {
    /// Cloud to use from clouds.yaml
    #[arg(
        long = "os-cloud",
        env = "OS_CLOUD",
        global = true,
        value_name = "NAME"
    )]
    pub cloud: Option<String>,
    /// clouds.yaml to read before ./clouds.yaml, ~/.config/openstack/clouds.yaml and /etc/openstack/clouds.yaml
    #[arg(
        long = "os-client-config-file",
        env = "OS_CLIENT_CONFIG_FILE",
        global = true,
        value_name = "PATH"
    )]
    pub client_config_file: Option<PathBuf>,
    /// Identity URL, e.g. http://127.0.0.1:9517/identity/v3
    #[arg(
        long = "os-auth-url",
        env = "OS_AUTH_URL",
        global = true,
        value_name = "URL"
    )]
    pub auth_url: Option<String>,
    /// User name
    #[arg(
        long = "os-username",
        env = "OS_USERNAME",
        global = true,
        value_name = "NAME"
    )]
    pub username: Option<String>,
    /// Password
    #[arg(
        long = "os-password",
        env = "OS_PASSWORD",
        hide_env_values = true,
        global = true,
        value_name = "PASSWORD"
    )]
    pub password: Option<String>,
    /// Project to work in
    #[arg(
        long = "os-project-name",
        env = "OS_PROJECT_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub project_name: Option<String>,
    /// Domain of the user [default: Default]
    #[arg(
        long = "os-user-domain-name",
        env = "OS_USER_DOMAIN_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub user_domain_name: Option<String>,
    /// Domain of the project [default: Default]
    #[arg(
        long = "os-project-domain-name",
        env = "OS_PROJECT_DOMAIN_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub project_domain_name: Option<String>,
    /// Region of the container endpoint
    #[arg(
        long = "os-region-name",
        env = "OS_REGION_NAME",
        global = true,
        value_name = "NAME"
    )]
    pub region_name: Option<String>,
    /// Endpoint interface: public, internal or admin [default: public]
    #[arg(
        long = "os-interface",
        env = "OS_INTERFACE",
        global = true,
        value_name = "INTERFACE"
    )]
    pub interface: Option<String>,
    /// A token to use instead of a password (needs --os-endpoint)
    #[arg(
        long = "os-token",
        env = "OS_TOKEN",
        hide_env_values = true,
        global = true,
        value_name = "TOKEN"
    )]
    pub token: Option<String>,
    /// Container endpoint, e.g. http://127.0.0.1:9517/v1 (skips the catalog)
    #[arg(
        long = "os-endpoint",
        env = "OS_ENDPOINT",
        global = true,
        value_name = "URL"
    )]
    pub endpoint: Option<String>,
}

/// Where clouds.yaml may be, apart from `--os-client-config-file`.
#[derive(Debug, Clone, Default)]
pub struct ConfigDirs {
    /// The current directory.
    pub cwd: Option<PathBuf>,
    /// The home directory.
    pub home: Option<PathBuf>,
    /// `$XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
}

const DEFAULT_DOMAIN: &str = "Default";

impl AuthArgs {
    /// Combines flags, variables and (with `--os-cloud`) clouds.yaml into an
    /// [`AuthConfig`], or says exactly what is missing.
    pub fn resolve(&self, dirs: &ConfigDirs) -> Result<AuthConfig, CliError> {
        let (cloud, origin) = match given(&self.cloud) {
            Some(name) => {
                let paths = clouds::search_paths(
                    self.client_config_file.as_deref(),
                    dirs.cwd.as_deref(),
                    dirs.home.as_deref(),
                    dirs.xdg_config_home.as_deref(),
                );
                let (path, cloud) = clouds::load_cloud(&name, &paths)?;
                (cloud, Some((name, path)))
            }
            None => (CloudConfig::default(), None),
        };
        self.merge(
            &cloud,
            origin.as_ref().map(|(n, p)| (n.as_str(), p.as_path())),
        )
    }

    fn merge(
        &self,
        cloud: &CloudConfig,
        origin: Option<(&str, &Path)>,
    ) -> Result<AuthConfig, CliError> {
        let pick =
            |flag: &Option<String>, file: &Option<String>| given(flag).or_else(|| given(file));
        let endpoint = pick(&self.endpoint, &cloud.auth.endpoint);
        if let Some(endpoint) = &endpoint {
            crate::client::parse_base_url(endpoint)
                .map_err(|e| CliError::new(format!("--os-endpoint: {e}")))?;
        }

        if let Some(token) = pick(&self.token, &cloud.auth.token) {
            let Some(endpoint) = endpoint else {
                return Err(CliError::new(
                    "a token (OS_TOKEN / --os-token) needs the container endpoint too",
                )
                .with_hint("set OS_ENDPOINT or --os-endpoint, e.g. http://127.0.0.1:9517/v1"));
            };
            return Ok(AuthConfig::Token { token, endpoint });
        }

        let auth_url = pick(&self.auth_url, &cloud.auth.auth_url);
        let username = pick(&self.username, &cloud.auth.username);
        let password = pick(&self.password, &cloud.auth.password);
        let project_name = pick(&self.project_name, &cloud.auth.project_name);
        let required = [
            ("OS_AUTH_URL", "auth_url", &auth_url),
            ("OS_USERNAME", "username", &username),
            ("OS_PASSWORD", "password", &password),
            ("OS_PROJECT_NAME", "project_name", &project_name),
        ];
        let missing: Vec<(&str, &str)> = required
            .iter()
            .filter(|(_, _, value)| value.is_none())
            .map(|(var, key, _)| (*var, *key))
            .collect();
        if !missing.is_empty() {
            let vars: Vec<&str> = missing.iter().map(|(var, _)| *var).collect();
            return Err(match origin {
                Some((name, path)) => {
                    let keys: Vec<String> = missing
                        .iter()
                        .map(|(_, key)| format!("auth.{key}"))
                        .collect();
                    CliError::new(format!(
                        "cloud {name:?} in {} has no {}",
                        path.display(),
                        keys.join(", ")
                    ))
                    .with_hint(format!("add it there or set {}", vars.join(", ")))
                }
                None => CliError::new(format!("missing {}", vars.join(", "))).with_hint(
                    "set them (or the matching --os-* flags), choose a cloud from clouds.yaml \
                     with --os-cloud NAME / OS_CLOUD, or pass --os-token with --os-endpoint",
                ),
            });
        }
        let (Some(auth_url), Some(username), Some(password), Some(project_name)) =
            (auth_url, username, password, project_name)
        else {
            // Every None was reported above.
            return Err(CliError::new("incomplete credentials"));
        };
        let user_domain_name = match given(&self.user_domain_name) {
            Some(name) => name,
            None => cloud
                .user_domain()?
                .unwrap_or_else(|| DEFAULT_DOMAIN.into()),
        };
        let project_domain_name = match given(&self.project_domain_name) {
            Some(name) => name,
            None => cloud
                .project_domain()?
                .unwrap_or_else(|| DEFAULT_DOMAIN.into()),
        };
        Ok(AuthConfig::Password(PasswordAuth {
            auth_url,
            username,
            password,
            project_name,
            user_domain_name,
            project_domain_name,
            region_name: given(&self.region_name).or_else(|| cloud.region()),
            interface: pick(&self.interface, &cloud.interface),
            endpoint_override: endpoint,
        }))
    }
}

/// A value counts as given when it is set and not blank (an exported but empty `OS_*`
/// variable means "not set", as in python-openstackclient).
fn given(value: &Option<String>) -> Option<String> {
    value.as_ref().filter(|v| !v.trim().is_empty()).cloned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> AuthArgs {
        AuthArgs {
            auth_url: Some("http://127.0.0.1:9517/identity/v3".into()),
            username: Some("alice".into()),
            password: Some("pw".into()),
            project_name: Some("demo".into()),
            ..AuthArgs::default()
        }
    }

    #[test]
    fn password_settings_get_default_domains_and_public_interface() {
        let AuthConfig::Password(password) = full().resolve(&ConfigDirs::default()).unwrap() else {
            panic!("expected password auth");
        };
        assert_eq!(password.user_domain_name, "Default");
        assert_eq!(password.project_domain_name, "Default");
        assert_eq!(password.interface, None);
        assert_eq!(password.endpoint_override, None);
    }

    #[test]
    fn missing_settings_are_all_named_with_a_hint() {
        let args = AuthArgs {
            username: Some("alice".into()),
            password: Some("  ".into()),
            ..AuthArgs::default()
        };
        let line = args.resolve(&ConfigDirs::default()).unwrap_err().lines()[0].clone();
        assert!(
            line.starts_with("Error: missing OS_AUTH_URL, OS_PASSWORD, OS_PROJECT_NAME; set"),
            "{line}"
        );
        assert!(line.contains("--os-cloud"), "{line}");
    }

    #[test]
    fn token_wins_over_password_and_needs_an_endpoint() {
        let mut args = full();
        args.token = Some("tok".into());
        let err = args.resolve(&ConfigDirs::default()).unwrap_err();
        assert!(err.lines()[0].contains("OS_ENDPOINT"), "{err}");
        args.endpoint = Some("http://127.0.0.1:9517/v1".into());
        assert_eq!(
            args.resolve(&ConfigDirs::default()).unwrap(),
            AuthConfig::Token {
                token: "tok".into(),
                endpoint: "http://127.0.0.1:9517/v1".into()
            }
        );
    }

    #[test]
    fn cloud_values_are_used_and_flags_override_them() {
        let dir = std::env::temp_dir().join(format!("berth-auth-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("clouds.yaml"),
            "clouds:\n  lab:\n    auth:\n      auth_url: http://lab/identity/v3\n      username: bob\n      password: pw\n      project_name: lab\n      project_domain_name: Lab\n    region_name: RegionLab\n    interface: internal\n",
        )
        .unwrap();
        let dirs = ConfigDirs {
            cwd: Some(dir.clone()),
            ..ConfigDirs::default()
        };
        let args = AuthArgs {
            cloud: Some("lab".into()),
            username: Some("carol".into()),
            ..AuthArgs::default()
        };
        let AuthConfig::Password(password) = args.resolve(&dirs).unwrap() else {
            panic!("expected password auth");
        };
        assert_eq!(password.auth_url, "http://lab/identity/v3");
        assert_eq!(password.username, "carol");
        assert_eq!(password.project_domain_name, "Lab");
        assert_eq!(password.user_domain_name, "Default");
        assert_eq!(password.region_name.as_deref(), Some("RegionLab"));
        assert_eq!(password.interface.as_deref(), Some("internal"));

        let missing = AuthArgs {
            cloud: Some("nope".into()),
            ..AuthArgs::default()
        };
        let err = missing.resolve(&dirs).unwrap_err().to_string();
        assert!(err.contains("defined clouds: lab"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
