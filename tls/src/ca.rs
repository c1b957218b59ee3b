//! The deployment's certificate authority.
//!
//! One CA per deployment signs the relay's server certificate, the service's and every
//! agent's client certificate, and (in the service) the Docker endpoint's server and
//! tenants' client certificates. It is made on first use in a directory (key mode
//! 0600) or loaded from the deployment's own files.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CertificateSigningRequestParams,
    DistinguishedName, DnType, ExtendedKeyUsagePurpose, Ia5String, IsCa, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber,
};
use rustls::pki_types::CertificateDer;

use crate::identity::Identity;

/// Certificates are valid from a little before they are made, so that a peer whose
/// clock is slightly behind does not refuse them.
const CLOCK_SKEW: Duration = Duration::from_secs(300);

/// A CA: its certificate (PEM, as handed to peers) and what signs with it.
pub struct Ca {
    pem: String,
    der: CertificateDer<'static>,
    issuer: Certificate,
    key: KeyPair,
}

impl std::fmt::Debug for Ca {
    // The key is never shown.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca").finish_non_exhaustive()
    }
}

/// A certificate with a private key made for it (PEM both).
#[derive(Clone)]
pub struct CertifiedKey {
    /// The certificate followed by the CA's (the chain a peer presents).
    pub cert_pem: String,
    /// The private key (PKCS#8 PEM). Keep it 0600.
    pub key_pem: String,
}

impl std::fmt::Debug for CertifiedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertifiedKey")
            .field("cert_pem", &self.cert_pem)
            .finish_non_exhaustive()
    }
}

/// A certificate signed for someone else's key (from a CSR).
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate, PEM.
    pub pem: String,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// When it stops being valid (Unix seconds).
    pub not_after: i64,
}

/// Who a certificate signed from a CSR is for. Only the key is taken from the CSR:
/// names, usages and validity are always the CA's choice.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A Berth agent or service: the identity goes into a URI subject alternative name.
    Identity(Identity),
    /// A person (a Docker endpoint client): names for people reading the certificate,
    /// no Berth identity.
    Named {
        /// The common name.
        common_name: &'a str,
        /// The organisation.
        organization: Option<&'a str>,
    },
}

/// Why a CSR could not be turned into a certificate.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The CSR is not a PEM certificate signing request.
    #[error("the CSR could not be read ({0}); send a PEM `CERTIFICATE REQUEST`")]
    BadCsr(String),
    /// Signing failed.
    #[error("the certificate could not be signed: {0}")]
    Sign(String),
}

/// A new P-256 key and a CSR for it: (key PEM, CSR PEM). The CSR carries no names;
/// the CA decides them.
pub fn new_key_and_csr() -> anyhow::Result<(String, String)> {
    let key = KeyPair::generate().context("generating a key")?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .context("CSR parameters")?
        .serialize_request(&key)
        .context("making the CSR")?
        .pem()
        .context("encoding the CSR")?;
    Ok((key.serialize_pem(), csr))
}

impl Ca {
    /// The CA certificate's file name in a CA directory.
    pub const CERT_FILE: &'static str = "ca.pem";
    /// The CA key's file name (mode 0600).
    pub const KEY_FILE: &'static str = "ca-key.pem";

    /// A new self-signed CA valid for `valid_for`, named `common_name`.
    pub fn generate(common_name: &str, valid_for: Duration) -> anyhow::Result<Ca> {
        let key = KeyPair::generate().context("generating the CA key")?;
        let mut params = CertificateParams::default();
        params.distinguished_name = name(common_name, None);
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        params.serial_number = Some(random_serial());
        let (not_before, not_after) = validity(valid_for);
        params.not_before = not_before;
        params.not_after = not_after;
        let cert = params
            .self_signed(&key)
            .context("signing the CA certificate")?;
        Ca::from_pem(&cert.pem(), &key.serialize_pem())
    }

    /// The CA kept in `dir` (`ca.pem`, `ca-key.pem`), made there on first use.
    pub fn load_or_create(dir: &Path, common_name: &str) -> anyhow::Result<Ca> {
        let cert_path = dir.join(Ca::CERT_FILE);
        let key_path = dir.join(Ca::KEY_FILE);
        if cert_path.exists() || key_path.exists() {
            return Ca::from_files(&cert_path, &key_path);
        }
        {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .with_context(|| format!("creating the CA directory {}", dir.display()))?;
        }
        let ca = Ca::generate(common_name, Duration::from_secs(10 * 365 * 24 * 3600))?;
        // The key first: a CA certificate without its key would stop every later start.
        crate::write_private(&key_path, ca.key.serialize_pem().as_bytes())?;
        std::fs::write(&cert_path, &ca.pem)
            .with_context(|| format!("writing {}", cert_path.display()))?;
        tracing::info!(path = %cert_path.display(), "made a CA");
        Ok(ca)
    }

    /// A CA from its certificate and key files (PEM).
    pub fn from_files(cert: &Path, key: &Path) -> anyhow::Result<Ca> {
        let pem = std::fs::read_to_string(cert)
            .with_context(|| format!("reading the CA certificate {}", cert.display()))?;
        let key_pem = std::fs::read_to_string(key)
            .with_context(|| format!("reading the CA key {}", key.display()))?;
        Ca::from_pem(&pem, &key_pem).with_context(|| format!("loading the CA {}", cert.display()))
    }

    /// A CA from PEM text.
    pub fn from_pem(cert_pem: &str, key_pem: &str) -> anyhow::Result<Ca> {
        let key = KeyPair::from_pem(key_pem).context("the CA key is not a PEM private key")?;
        let der = crate::config::parse_certificates(cert_pem)?
            .into_iter()
            .next()
            .context("no PEM certificate found")?;
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
        Ok(Ca {
            pem: cert_pem.to_owned(),
            der,
            issuer,
            key,
        })
    }

    /// The CA certificate, PEM: what peers verify with.
    pub fn pem(&self) -> &str {
        &self.pem
    }

    /// The CA certificate, DER.
    pub fn der(&self) -> &CertificateDer<'static> {
        &self.der
    }

    /// A server certificate for `names` (DNS names or IP addresses) with a new key.
    pub fn server_certificate(
        &self,
        names: &[String],
        valid_for: Duration,
    ) -> anyhow::Result<CertifiedKey> {
        let mut names: Vec<String> = names.to_vec();
        names.sort();
        names.dedup();
        let key = KeyPair::generate().context("generating a server key")?;
        let mut params = CertificateParams::new(names)
            .context("a server name is not a valid DNS name or IP address")?;
        params.distinguished_name = name("Berth server", None);
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let cert = self.sign(params, &key, valid_for)?;
        Ok(CertifiedKey {
            cert_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// A client certificate naming `identity`, with a new key.
    pub fn identity_certificate(
        &self,
        identity: Identity,
        valid_for: Duration,
    ) -> anyhow::Result<CertifiedKey> {
        let key = KeyPair::generate().context("generating a client key")?;
        self.identity_certificate_for_key(identity, &key, valid_for)
    }

    /// A client certificate naming `identity` for an existing key (PEM). Cheaper than
    /// [`Ca::identity_certificate`] when many are needed (benchmarks: one key, many
    /// instances).
    pub fn identity_certificate_for_key_pem(
        &self,
        identity: Identity,
        key_pem: &str,
        valid_for: Duration,
    ) -> anyhow::Result<CertifiedKey> {
        let key = KeyPair::from_pem(key_pem).context("the key is not a PEM private key")?;
        self.identity_certificate_for_key(identity, &key, valid_for)
    }

    fn identity_certificate_for_key(
        &self,
        identity: Identity,
        key: &KeyPair,
        valid_for: Duration,
    ) -> anyhow::Result<CertifiedKey> {
        let cert = self.sign(client_params(Subject::Identity(identity))?, key, valid_for)?;
        Ok(CertifiedKey {
            cert_pem: format!("{}{}", cert.pem(), self.pem),
            key_pem: key.serialize_pem(),
        })
    }

    /// Signs a client certificate for the public key of `csr_pem`, valid for
    /// `valid_for`. Only the key is taken from the CSR: names, usages and validity are
    /// the CA's.
    pub fn sign_csr(
        &self,
        csr_pem: &str,
        subject: Subject<'_>,
        valid_for: Duration,
    ) -> Result<Issued, IssueError> {
        let mut csr = CertificateSigningRequestParams::from_pem(csr_pem)
            .map_err(|e| IssueError::BadCsr(e.to_string()))?;
        let mut params = client_params(subject).map_err(|e| IssueError::Sign(e.to_string()))?;
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = validity(valid_for);
        params.not_before = not_before;
        params.not_after = not_after;
        csr.params = params;
        let cert = csr
            .signed_by(&self.issuer, &self.key)
            .map_err(|e| IssueError::Sign(e.to_string()))?;
        Ok(Issued {
            pem: cert.pem(),
            der: cert.der().clone(),
            not_after: not_after.unix_timestamp(),
        })
    }

    fn sign(
        &self,
        mut params: CertificateParams,
        key: &KeyPair,
        valid_for: Duration,
    ) -> anyhow::Result<Certificate> {
        params.serial_number = Some(random_serial());
        params.use_authority_key_identifier_extension = true;
        let (not_before, not_after) = validity(valid_for);
        params.not_before = not_before;
        params.not_after = not_after;
        params
            .signed_by(key, &self.issuer, &self.key)
            .context("signing a certificate")
    }
}

fn client_params(subject: Subject<'_>) -> anyhow::Result<CertificateParams> {
    let mut params = CertificateParams::default();
    match subject {
        Subject::Identity(identity) => {
            let common = match identity {
                Identity::Instance(id) => format!("berth-agent {id}"),
                Identity::Service => "berth-service".to_owned(),
            };
            params.distinguished_name = name(&common, Some("Berth"));
            params.subject_alt_names = vec![SanType::URI(
                Ia5String::try_from(identity.uri()).context("an identity URI is ASCII")?,
            )];
        }
        Subject::Named {
            common_name,
            organization,
        } => params.distinguished_name = name(common_name, organization),
    }
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(params)
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
    // Whole seconds: that is what the certificate holds.
    let now = now.replace_nanosecond(0).expect("0 is a valid nanosecond");
    (now - CLOCK_SKEW, now + valid_for)
}
