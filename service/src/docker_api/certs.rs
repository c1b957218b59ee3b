//! Certificates of the Docker endpoint's TLS listener.
//!
//! One CA signs both the listener's server certificate and tenants' client
//! certificates, so the single `ca.pem` a tenant gets lets the docker CLI verify the
//! server (`DOCKER_TLS_VERIFY`) and the server verify the tenant. The CA is either made
//! here on first start and kept in a directory (key mode 0600), or the deployment's own
//! (`[docker] ca_cert` / `ca_key`). A client certificate is issued from a CSR, so the
//! tenant's private key never leaves their machine; which user and project it acts for
//! is recorded in the database by its fingerprint ([`fingerprint`]), not trusted from
//! its subject.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use crate::identity::keys::write_private;

/// The CA certificate's file in a generated TLS directory.
pub const CA_CERT_FILE: &str = "ca.pem";
/// The CA key's file (mode 0600).
pub const CA_KEY_FILE: &str = "ca-key.pem";
/// The listener's certificate, written on every start.
pub const SERVER_CERT_FILE: &str = "server-cert.pem";
/// The listener's key (mode 0600).
pub const SERVER_KEY_FILE: &str = "server-key.pem";

/// How long a generated CA is valid.
const CA_VALIDITY: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// How long a generated server certificate is valid (it is made again on each start).
const SERVER_VALIDITY: Duration = Duration::from_secs(397 * 24 * 3600);
/// Certificates are valid from a little before they are made, so that a client whose
/// clock is slightly behind does not refuse them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// The CA: its certificate (PEM, as handed to clients) and what signs with it.
pub struct DockerCa {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for DockerCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DockerCa").finish_non_exhaustive()
    }
}

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

/// Why a CSR could not be turned into a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR is not a PEM certificate signing request rcgen can read.
    #[error("the CSR could not be read ({0}); send a PEM `CERTIFICATE REQUEST` (`osc docker-credentials` makes one)")]
    BadCsr(String),
    /// Signing failed.
    #[error("the certificate could not be signed: {0}")]
    Sign(String),
}

impl DockerCa {
    /// The CA kept in `dir`, made there on first use (the key with mode 0600).
    pub fn load_or_create(dir: &Path) -> anyhow::Result<DockerCa> {
        let cert_path = dir.join(CA_CERT_FILE);
        let key_path = dir.join(CA_KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return DockerCa::from_files(&cert_path, &key_path);
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the Docker TLS directory {}", dir.display()))?;
        }
        let key = KeyPair::generate().context("generating the Docker CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name("Berth Docker endpoint CA", None);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let (not_before, not_after) = validity(CA_VALIDITY);
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .self_signed(&key)
            .context("signing the Docker CA certificate")?;
        // The key first: a CA certificate without its key would stop every later start.
        write_private(&key_path, key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, cert.pem())
            .with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(path = %cert_path.display(), "made a CA for the Docker endpoint");
        DockerCa::from_files(&cert_path, &key_path)
    }

    /// A CA from its certificate and key files (PEM).
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<DockerCa> {
        let pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading the Docker CA certificate {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading the Docker CA key {}", key.display()))?;
        DockerCa::from_pem(&pem, &key_pem)
            .with_context(|| format!("loading the Docker CA {}", cert.display()))
    }

    /// A CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<DockerCa> {
        let key = KeyPair::from_pem(key_pem).context("the CA key is not a PEM private key")?;
        let der = first_certificate(cert_pem)?;
        // rcgen signs with an issuer's name, key identifier and key; re-deriving the
        // certificate object from the parsed parameters gives exactly those.
        let params = CertificateParams::from_ca_cert_der(&der)
            .context("the CA certificate could not be parsed")?;
        let issuer = params
            .self_signed(&key)
            .context("the CA key does not sign with the CA certificate's parameters")?;
        if issuer.params().is_ca == IsCa::NoCa {
            anyhow::bail!("the CA certificate is not a CA (no basicConstraints CA:TRUE)");
        }
        Ok(DockerCa {
            pem: cert_pem.to_owned(),
            der,
            issuer,
            key,
        })
    }

    /// The CA certificate, PEM: the `ca.pem` clients verify the server with.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// Makes a server certificate for `names` (DNS names or IP addresses), signed by
    /// this CA: PEM certificate chain and PEM key.
    pub fn server_certificate(&self, names: &[String]) -> anyhow::Result<(String, String)> {
        let mut names: Vec<String> = names.to_vec();
        names.sort();
        names.dedup();
        let key = KeyPair::generate().context("generating the Docker server key")?;
        let mut params = CertificateParams::new(names)
            .context("a name of the Docker endpoint is not a valid DNS name or IP address")?;
        params.distinguished_name = name("Berth Docker endpoint", None);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = validity(SERVER_VALIDITY);
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .signed_by(&key, &self.issuer, &self.key)
            .context("signing the Docker server certificate")?;
        Ok((format!("{}{}", cert.pem(), self.pem), key.serialize_pem()))
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
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(subject.user_name, Some(subject.project_name));
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = validity(valid_for);
        params.not_before = not_before;
        params.not_after = not_after;
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer, &self.key)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        let expires_at = chrono::DateTime::from_timestamp(not_after.unix_timestamp(), 0)
            .expect("a validity end is a valid time")
            .naive_utc();
        Ok(IssuedCertificate {
            pem: cert.pem(),
            fingerprint: fingerprint(cert.der()),
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
        server_config(std::slice::from_ref(&self.der), cert_chain_pem, key_pem)
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
    /// A CA and server certificate made and kept in this directory.
    Generated {
        /// The directory.
        dir: PathBuf,
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
            let ca = DockerCa::load_or_create(dir)?;
            // Made again on every start, so that it always carries the names the
            // listener is reached by now; clients trust the CA, not this certificate.
            let (chain, key) = ca.server_certificate(names)?;
            write_private(&dir.join(SERVER_KEY_FILE), key.as_bytes())?;
            std::fs::write(dir.join(SERVER_CERT_FILE), &chain)
                .with_context(|| format!("writing {}", dir.join(SERVER_CERT_FILE).display()))?;
            let config = ca.server_config(&chain, &key)?;
            Ok((ca, config))
        }
        TlsSource::Files {
            ca_cert,
            ca_key,
            server_cert,
            server_key,
        } => {
            let ca = DockerCa::from_files(ca_cert, ca_key)?;
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
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_chain_pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("the server certificate is not PEM")?;
    if chain.is_empty() {
        anyhow::bail!("the server certificate file holds no certificate");
    }
    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .context("the server key is not PEM")?
        .context("the server key file holds no private key")?;
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

fn first_certificate(pem: &str) -> anyhow::Result<CertificateDer<'static>> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .next()
        .context("no PEM certificate found")?
        .context("the PEM certificate could not be read")
}

fn name(common_name: &str, organization: Option<&str>) -> DistinguishedName {
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(o) = organization {
        dn.push(DnType::OrganizationName, o);
    }
    dn
}

/// A positive 127-bit serial number.
fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    bytes[0] &= 0x7f;
    SerialNumber::from_slice(&bytes)
}

fn validity(valid_for: Duration) -> (time::OffsetDateTime, time::OffsetDateTime) {
    let now = time::OffsetDateTime::now_utc();
    // Whole seconds: that is what the certificate holds, and what the database keeps.
    let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
    (now - CLOCK_SKEW, now + valid_for)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn csr() -> (KeyPair, String) {
        let key = KeyPair::generate().unwrap();
        let csr = CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap();
        (key, csr.pem().unwrap())
    }

    #[test]
    fn a_generated_ca_is_kept_with_a_private_key_and_reloaded_the_same() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let first = DockerCa::load_or_create(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(CA_KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let again = DockerCa::load_or_create(dir.path()).unwrap();
        assert_eq!(first.pem(), again.pem());
    }

    #[test]
    fn a_client_certificate_from_a_csr_is_accepted_by_the_listener_verifier() {
        let dir = tempfile::tempdir().unwrap();
        let source = TlsSource::Generated {
            dir: dir.path().to_owned(),
            names: vec!["localhost".into(), "127.0.0.1".into()],
        };
        let (ca, _config) = load(&source).unwrap();
        let (_key, csr) = csr();
        let issued = ca
            .issue_client(
                &csr,
                &ClientSubject {
                    user_name: "alice",
                    project_name: "demo",
                },
                Duration::from_secs(3600),
            )
            .unwrap();
        let der = first_certificate(&issued.pem).unwrap();
        assert_eq!(issued.fingerprint, fingerprint(&der));
        assert_eq!(issued.fingerprint.len(), 64);
        let left = issued.expires_at - chrono::Utc::now().naive_utc();
        assert!(left <= chrono::Duration::seconds(3600) && left > chrono::Duration::seconds(3500));

        let mut roots = RootCertStore::empty();
        roots.add(ca.der.clone()).unwrap();
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
        let other = DockerCa::load_or_create(&dir.path().join("other")).unwrap();
        let (_key, csr) = self::csr();
        let foreign = other
            .issue_client(
                &csr,
                &ClientSubject {
                    user_name: "mallory",
                    project_name: "demo",
                },
                Duration::from_secs(3600),
            )
            .unwrap();
        let foreign = first_certificate(&foreign.pem).unwrap();
        assert!(verifier
            .verify_client_cert(&foreign, &[], rustls::pki_types::UnixTime::now())
            .is_err());
    }

    #[test]
    fn garbage_is_not_a_csr() {
        let dir = tempfile::tempdir().unwrap();
        let ca = DockerCa::load_or_create(dir.path()).unwrap();
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
