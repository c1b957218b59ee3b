//! Client certificates for Berth's Docker-compatible endpoint
//! (`/v1/docker/credentials`, a Berth extension), and the certificate directory the
//! docker CLI reads (`DOCKER_CERT_PATH`: `ca.pem`, `cert.pem`, `key.pem`).
//!
//! The private key is made here and never sent: the server signs a CSR.

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::{Map, Value};

/// What `POST /docker/credentials` answers.
#[derive(Debug, Clone, Deserialize)]
pub struct IssuedCredentials {
    /// The client certificate, PEM.
    pub certificate: String,
    /// The endpoint's CA certificate, PEM.
    pub ca: String,
    /// SHA-256 of the certificate's DER, hex: the name to revoke it by.
    pub fingerprint: String,
    /// When the certificate expires.
    pub expires_at: String,
    /// `tcp://HOST:PORT` of the TLS listener.
    pub docker_host: String,
}

/// A registered certificate as `GET /docker/credentials` lists it.
pub type CredentialView = Map<String, Value>;

/// The body of `GET /docker/credentials`.
#[derive(Debug, Deserialize)]
pub(crate) struct CredentialList {
    #[serde(default)]
    pub credentials: Vec<CredentialView>,
}

/// Fields of a credential, in the order `docker-credentials-list` shows them.
pub const CREDENTIAL_FIELDS: &[&str] = &[
    "fingerprint",
    "user_name",
    "project_name",
    "created_at",
    "expires_at",
    "user_id",
    "project_id",
];

/// Default columns of `docker-credentials-list`.
pub const CREDENTIAL_LIST_COLUMNS: &[&str] =
    &["fingerprint", "user_name", "created_at", "expires_at"];

/// A new private key (ECDSA P-256) and a CSR for it, both PEM.
pub fn key_and_csr() -> Result<(String, String), rcgen::Error> {
    let key = rcgen::KeyPair::generate()?;
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new())?;
    // The server sets the subject; this one only names the request.
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "berth docker client");
    let csr = params.serialize_request(&key)?;
    Ok((key.serialize_pem(), csr.pem()?))
}

/// Writes `ca.pem`, `cert.pem` and `key.pem` (mode 0600) into `dir` (made with mode
/// 0700 if missing) and returns its absolute path.
pub fn write_cert_dir(
    dir: &Path,
    issued: &IssuedCredentials,
    key_pem: &str,
) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let write = |name: &str, text: &str, mode: u32| -> std::io::Result<()> {
        use std::io::Write;
        let path = dir.join(name);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&path)?;
        // An existing file keeps its mode through `open`: set it.
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(mode))?;
        f.write_all(text.as_bytes())
    };
    write("key.pem", key_pem, 0o600)?;
    write("cert.pem", &issued.certificate, 0o644)?;
    write("ca.pem", &issued.ca, 0o644)?;
    dir.canonicalize()
}

/// The shell lines that point the docker CLI at the endpoint with this directory.
pub fn exports(docker_host: &str, dir: &Path) -> String {
    format!(
        "export DOCKER_HOST={}\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH={}\n",
        shell_quote(docker_host),
        shell_quote(&dir.display().to_string())
    )
}

fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-:[]@%+=,".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cert_dir_has_the_three_files_and_a_private_key() {
        use std::os::unix::fs::PermissionsExt;
        let (key, csr) = key_and_csr().unwrap();
        assert!(csr.contains("BEGIN CERTIFICATE REQUEST"), "{csr}");
        assert!(key.contains("PRIVATE KEY"));
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("certs");
        let issued = IssuedCredentials {
            certificate: "CERT".into(),
            ca: "CA".into(),
            fingerprint: "ff".into(),
            expires_at: "2027-01-01 00:00:00".into(),
            docker_host: "tcp://127.0.0.1:2376".into(),
        };
        let abs = write_cert_dir(&dir, &issued, &key).unwrap();
        assert_eq!(std::fs::read_to_string(abs.join("ca.pem")).unwrap(), "CA");
        assert_eq!(
            std::fs::read_to_string(abs.join("cert.pem")).unwrap(),
            "CERT"
        );
        let mode = std::fs::metadata(abs.join("key.pem"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            exports("tcp://127.0.0.1:2376", Path::new("/a b")),
            "export DOCKER_HOST=tcp://127.0.0.1:2376\nexport DOCKER_TLS_VERIFY=1\nexport DOCKER_CERT_PATH='/a b'\n"
        );
    }
}
