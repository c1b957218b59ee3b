//! The deployment's PKI: one CA for the relay connections and the Docker endpoint.
//!
//! - The relay serves a server certificate of the CA and requires a client certificate
//!   of it from every peer (see `berth_tls`).
//! - The service holds the CA (certificate and key): it signs agents' certificates at
//!   enrollment ([`crate::enrollment`]), makes its own client certificate
//!   (`urn:berth:service`) at start, and signs the Docker endpoint's certificates.
//! - A PKI directory ([`init_dir`], `berth-service pki init --dir D`, `berth up`'s
//!   `<data>/pki`) holds `ca.pem`, `ca-key.pem` (0600), `relay-cert.pem`,
//!   `relay-key.pem`, `service-cert.pem` and `service-key.pem`.
//! - A deployment may bring its own CA instead (`[tls] ca_cert`, `ca_key`, and
//!   optionally `cert`/`key` for the service's client certificate).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_tls::{Ca, ClientTls, Identity, TlsFiles};

use crate::settings::TlsSettings;

/// The CA's common name when Berth makes it.
pub const CA_NAME: &str = "Berth deployment CA";
/// File stem of the relay's server certificate in a PKI directory.
pub const RELAY: &str = "relay";
/// File stem of the service's client certificate in a PKI directory.
pub const SERVICE: &str = "service";
/// How long server and service certificates made here are valid.
pub const CERT_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);

/// The relay's files in a PKI directory: `ca.pem`, `relay-cert.pem`, `relay-key.pem`.
pub fn relay_files(dir: &Path) -> TlsFiles {
    TlsFiles::in_dir(dir, RELAY)
}

/// The service's files in a PKI directory: `ca.pem`, `service-cert.pem`,
/// `service-key.pem`.
pub fn service_files(dir: &Path) -> TlsFiles {
    TlsFiles::in_dir(dir, SERVICE)
}

/// Makes or completes the PKI directory `dir`: the CA (kept once made), and a relay
/// server certificate for `relay_names` (DNS names or IP addresses the relay is
/// dialled at) and a service client certificate, both made afresh on every call.
pub fn init_dir(dir: &Path, relay_names: &[String]) -> anyhow::Result<Ca> {
    anyhow::ensure!(
        !relay_names.is_empty(),
        "the relay certificate needs at least one name (the host or IP agents and services dial)"
    );
    let ca = Ca::load_or_create(dir, CA_NAME)?;
    let relay = ca.server_certificate(relay_names, CERT_VALIDITY)?;
    write_pair(&relay_files(dir), &relay.cert_pem, &relay.key_pem)?;
    let service = ca.identity_certificate(Identity::Service, CERT_VALIDITY)?;
    write_pair(&service_files(dir), &service.cert_pem, &service.key_pem)?;
    Ok(ca)
}

/// Writes a certificate (0644) and its key (0600).
pub fn write_pair(files: &TlsFiles, cert_pem: &str, key_pem: &str) -> anyhow::Result<()> {
    berth_tls::write_private(&files.key, key_pem.as_bytes())?;
    std::fs::write(&files.cert, cert_pem)
        .with_context(|| format!("writing {}", files.cert.display()))?;
    Ok(())
}

/// The service's side of the PKI: the CA it signs with, and its client TLS for the
/// relay.
#[derive(Debug, Clone)]
pub struct Pki {
    ca: Arc<Ca>,
    client: ClientTls,
}

impl Pki {
    /// From `[tls]`: a PKI directory (the CA made there if missing), or the
    /// deployment's own CA files. The service's client certificate is read from
    /// `cert`/`key` when given, else made by the CA now.
    pub fn load(settings: &TlsSettings) -> anyhow::Result<Pki> {
        let ca = match (&settings.dir, &settings.ca_cert, &settings.ca_key) {
            (_, Some(cert), Some(key)) => Ca::from_files(cert, key)?,
            (Some(dir), None, None) => Ca::load_or_create(dir, CA_NAME)?,
            (_, Some(_), None) | (_, None, Some(_)) => anyhow::bail!(
                "[tls] needs both ca_cert and ca_key (the service signs agents' certificates with the CA)"
            ),
            (None, None, None) => anyhow::bail!(
                "relay connections need TLS: set [tls] dir (BERTH_SERVICE_TLS_DIR; `berth-service pki init --dir DIR` makes one) \
                 or [tls] ca_cert and ca_key (the deployment's own CA)"
            ),
        };
        let client = match (&settings.cert, &settings.key) {
            (Some(cert), Some(key)) => {
                let files = TlsFiles {
                    ca_cert: settings.ca_cert.clone().unwrap_or_else(|| {
                        settings
                            .dir
                            .as_deref()
                            .map(|d| d.join(Ca::CERT_FILE))
                            .unwrap_or_default()
                    }),
                    cert: cert.clone(),
                    key: key.clone(),
                };
                ClientTls::from_files(&files)?
            }
            (None, None) => {
                let made = ca.identity_certificate(Identity::Service, CERT_VALIDITY)?;
                ClientTls::from_pem(ca.pem(), &made.cert_pem, &made.key_pem)?
            }
            _ => anyhow::bail!("[tls] needs both cert and key, or neither"),
        };
        Ok(Pki {
            ca: Arc::new(ca),
            client,
        })
    }

    /// The CA.
    pub fn ca(&self) -> &Arc<Ca> {
        &self.ca
    }

    /// The CA certificate (PEM), as agents get it.
    pub fn ca_pem(&self) -> &str {
        self.ca.pem()
    }

    /// The service's TLS for dialling relays.
    pub fn client_tls(&self) -> &ClientTls {
        &self.client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_initialised_directory_serves_the_relay_and_the_service_and_keeps_its_ca() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init_dir(dir.path(), &["127.0.0.1".into(), "localhost".into()]).unwrap();
        berth_tls::ServerTls::from_files(&relay_files(dir.path())).unwrap();
        ClientTls::from_files(&service_files(dir.path())).unwrap();
        let again = init_dir(dir.path(), &["relay.example".into()]).unwrap();
        assert_eq!(ca.pem(), again.pem());
        let pki = Pki::load(&TlsSettings {
            dir: Some(dir.path().to_owned()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(pki.ca_pem(), ca.pem());
    }

    #[test]
    fn without_tls_settings_the_error_says_what_to_set() {
        let err = Pki::load(&TlsSettings::default()).unwrap_err().to_string();
        assert!(
            err.contains("[tls] dir") && err.contains("pki init"),
            "{err}"
        );
    }
}
