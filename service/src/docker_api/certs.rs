//! Certificates of the Docker endpoint's TLS listener.
//!
//! The deployment's one CA ([`crate::pki`], [`berth_tls::Ca`]) signs both the
//! listener's server certificate and tenants' client certificates, so the single
//! `ca.pem` a tenant gets lets the docker CLI verify the server (`DOCKER_TLS_VERIFY`)
//! and the server verify the tenant. A client certificate is issued from a CSR, so the
//! tenant's private key never leaves their machine; which user and project it acts for
//! is recorded in the database by its fingerprint ([`fingerprint`]), not trusted from
//! its subject. Tenant certificates name no Berth identity (no `urn:berth:` URI), so
//! the relay refuses them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use berth_tls::{Ca, Subject};
use rustls::pki_types::CertificateDer;
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

pub use berth_tls::IssueError;

/// The listener's certificate in a generated TLS directory, written on every start.
pub const SERVER_CERT_FILE: &str = "docker-cert.pem";
/// The listener's key (mode 0600).
pub const SERVER_KEY_FILE: &str = "docker-key.pem";

/// How long a generated server certificate is valid (it is made again on each start).
const SERVER_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);

/// The CA as the Docker endpoint uses it.
#[derive(Debug, Clone)]
pub struct DockerCa(Arc<Ca>);

/// A client certificate issued from a CSR.
#[derive(Debug, Clone)]
pub struct IssuedCertificate {
    /// The certificate, PEM.
    pub pem: String,
    /// SHA-256 of its DER, lowercase hex: the key it is registered under.
    pub fingerprint: String,
    /// When it stops being valid.
    pub expires_at: chrono::NaiveDateTime,
}

/// Who a client certificate is issued to; names go into its subject (for people
/// reading it: the endpoint identifies certificates by fingerprint only).
#[derive(Debug, Clone)]
pub struct ClientSubject<'a> {
    /// The user's name.
    pub user_name: &'a str,
    /// The project's name.
    pub project_name: &'a str,
}

impl DockerCa {
    /// The Docker endpoint's use of `ca`.
    pub fn new(ca: Arc<Ca>) -> DockerCa {
        DockerCa(ca)
    }

    /// The CA certificate, PEM: the `ca.pem` clients verify the server with.
    pub fn pem(&self) -> &str {
        self.0.pem()
    }

    /// Signs a client certificate for the public key of `csr_pem`, valid for
    /// `valid_for`. Only the key is taken from the CSR: subject, usages and validity are
    /// Berth's.
    pub fn issue_client(
        &self,
        csr_pem: &str,
        subject: &ClientSubject<'_>,
        valid_for: Duration,
    ) -> Result<IssuedCertificate, IssueError> {
        let issued = self.0.sign_csr(
            csr_pem,
            Subject::Named {
                common_name: subject.user_name,
                organization: Some(subject.project_name),
            },
            valid_for,
        )?;
        let expires_at = chrono::DateTime::from_timestamp(issued.not_after, 0)
            .ok_or_else(|| IssueError::Sign("the validity end is out of range".into()))?
            .naive_utc();
        Ok(IssuedCertificate {
            fingerprint: fingerprint(&issued.der),
            pem: issued.pem,
            expires_at,
        })
    }

    /// The TLS configuration of the listener: this server certificate, client
    /// certificates of this CA verified when presented, and clients without one let in
    /// too (they may `_ping`, or authenticate with a token header).
    pub fn server_config(
        &self,
        cert_chain_pem: &str,
        key_pem: &str,
    ) -> anyhow::Result<Arc<ServerConfig>> {
        server_config(std::slice::from_ref(self.0.der()), cert_chain_pem, key_pem)
    }
}

/// What `POST /v1/docker/credentials` needs: the CA, how long certificates last, and
/// where the TLS listener is reached.
#[derive(Debug)]
pub struct Issuer {
    /// Signs client certificates.
    pub ca: DockerCa,
    /// How long a client certificate is valid.
    pub validity: Duration,
    /// `tcp://HOST:PORT` of the TLS listener, for `DOCKER_HOST`.
    pub docker_host: String,
}

/// Where the listener's certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsSource {
    /// A CA kept in this directory (made there on first start), and a server
    /// certificate made there on every start.
    Generated {
        /// The directory.
        dir: PathBuf,
        /// The names (DNS or IP) the server certificate is made for.
        names: Vec<String>,
    },
    /// The deployment's CA (the relay connections' too), and a server certificate made
    /// by it in memory on every start.
    Deployment {
        /// The CA.
        ca: Arc<Ca>,
        /// The names (DNS or IP) the server certificate is made for.
        names: Vec<String>,
    },
    /// The deployment's own files (PEM).
    Files {
        /// The CA that signs client certificates (and usually the server's).
        ca_cert: PathBuf,
        /// Its key.
        ca_key: PathBuf,
        /// The listener's certificate chain.
        server_cert: PathBuf,
        /// Its key.
        server_key: PathBuf,
    },
}

/// The CA and the listener's TLS configuration, from `source`.
pub fn load(source: &TlsSource) -> anyhow::Result<(DockerCa, Arc<ServerConfig>)> {
    match source {
        TlsSource::Generated { dir, names } => {
            let ca = DockerCa(Arc::new(Ca::load_or_create(dir, "Berth CA")?));
            // Made again on every start, so that it always carries the names the
            // listener is reached by now; clients trust the CA, not this certificate.
            let made = ca.0.server_certificate(names, SERVER_VALIDITY)?;
            berth_tls::write_private(&dir.join(SERVER_KEY_FILE), made.key_pem.as_bytes())?;
            std::fs::write(dir.join(SERVER_CERT_FILE), &made.cert_pem)
                .with_context(|| format!("writing {}", dir.join(SERVER_CERT_FILE).display()))?;
            let config = ca.server_config(&made.cert_pem, &made.key_pem)?;
            Ok((ca, config))
        }
        TlsSource::Deployment { ca, names } => {
            let ca = DockerCa(Arc::clone(ca));
            let made = ca.0.server_certificate(names, SERVER_VALIDITY)?;
            let config = ca.server_config(&made.cert_pem, &made.key_pem)?;
            Ok((ca, config))
        }
        TlsSource::Files {
            ca_cert,
            ca_key,
            server_cert,
            server_key,
        } => {
            let ca = DockerCa(Arc::new(Ca::from_files(ca_cert, ca_key)?));
            let chain = std::fs::read_to_string(server_cert)
                .with_context(|| format!("reading {}", server_cert.display()))?;
            let key = std::fs::read_to_string(server_key)
                .with_context(|| format!("reading {}", server_key.display()))?;
            let config = ca.server_config(&chain, &key)?;
            Ok((ca, config))
        }
    }
}

/// A rustls server configuration with client certificates of `client_roots`
/// verified when presented and optional.
pub fn server_config(
    client_roots: &[CertificateDer<'static>],
    cert_chain_pem: &str,
    key_pem: &str,
) -> anyhow::Result<Arc<ServerConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut roots = RootCertStore::empty();
    for root in client_roots {
        roots
            .add(root.clone())
            .context("the CA certificate is not a usable trust anchor")?;
    }
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .allow_unauthenticated()
        .build()
        .context("building the client certificate verifier")?;
    let chain = berth_tls::parse_certificates(cert_chain_pem).context("the server certificate")?;
    let key = berth_tls::parse_private_key(key_pem).context("the server key")?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("the server certificate and key do not match")?;
    Ok(Arc::new(config))
}

/// SHA-256 of a certificate's DER, lowercase hex.
pub fn fingerprint(der: &[u8]) -> String {
    hex::encode(Sha256::digest(der))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> String {
        berth_tls::new_key_and_csr().unwrap().1
    }

    #[test]
    fn a_client_certificate_from_a_csr_is_accepted_by_the_listener_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let source = TlsSource::Generated {
            dir: dir.path().to_owned(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let (ca, _config) = load(&source).unwrap();
        let issued = ca
            .issue_client(
                &csr(),
                &ClientSubject {
                    user_name: "alice",
                    project_name: "demo",
                },
                Duration::from_secs(3600),
            )
            .unwrap();
        let der = berth_tls::parse_certificates(&issued.pem)
            .unwrap()
            .remove(0);
        assert_eq!(issued.fingerprint, fingerprint(&der));
        assert_eq!(issued.fingerprint.len(), 64);
        let left = issued.expires_at - chrono::Utc::now().naive_utc();
        assert!(left <= chrono::Duration::seconds(3600) && left > chrono::Duration::seconds(3500));
        // A tenant's certificate names no Berth identity: the relay refuses it.
        assert!(berth_tls::Identity::of(&der).is_err());

        let mut roots = RootCertStore::empty();
        roots.add(ca.0.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
            .allow_unauthenticated()
            .build()
            .unwrap();
        assert!(!verifier.client_auth_mandatory(), "anonymous clients pass");
        verifier
            .verify_client_cert(&der, &[], rustls::pki_types::UnixTime::now())
            .expect("the CA's client certificate verifies");

        // A certificate of another CA does not.
        let other = DockerCa(Arc::new(
            Ca::load_or_create(&dir.path().join("other"), "other").unwrap(),
        ));
        let foreign = other
            .issue_client(
                &csr(),
                &ClientSubject {
                    user_name: "mallory",
                    project_name: "demo",
                },
                Duration::from_secs(3600),
            )
            .unwrap();
        let foreign = berth_tls::parse_certificates(&foreign.pem)
            .unwrap()
            .remove(0);
        assert!(verifier
            .verify_client_cert(&foreign, &[], rustls::pki_types::UnixTime::now())
            .is_err());
    }

    #[test]
    fn garbage_is_not_a_csr() {
        let dir = tempfile::tempdir().unwrap();
        let (ca, _) = load(&TlsSource::Generated {
            dir: dir.path().to_owned(),
            names: vec!["localhost".into()],
        })
        .unwrap();
        let err = ca
            .issue_client(
                "not a csr",
                &ClientSubject {
                    user_name: "a",
                    project_name: "b",
                },
                Duration::from_secs(60),
            )
            .unwrap_err();
        assert!(matches!(err, IssueError::BadCsr(_)), "{err}");
    }
}
