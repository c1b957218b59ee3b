//! rustls configurations: the relay's (client certificates required) and its peers'.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::TcpStream;

use crate::identity::{Identity, IdentityError};

/// A TLS stream accepted by a [`ServerTls`].
pub type ServerStream = tokio_rustls::server::TlsStream<TcpStream>;

/// The three PEM files of one TLS party: the CA it trusts, its certificate chain and
/// its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate (PEM) peers are verified against.
    pub ca_cert: PathBuf,
    /// This party's certificate chain (PEM).
    pub cert: PathBuf,
    /// Its private key (PEM).
    pub key: PathBuf,
}

impl TlsFiles {
    /// `ca.pem`, `<name>-cert.pem` and `<name>-key.pem` in `dir`.
    pub fn in_dir(dir: &Path, name: &str) -> TlsFiles {
        TlsFiles {
            ca_cert: dir.join(crate::Ca::CERT_FILE),
            cert: dir.join(format!("{name}-cert.pem")),
            key: dir.join(format!("{name}-key.pem")),
        }
    }

    /// The three files' contents: (CA, chain, key).
    pub fn read(&self) -> anyhow::Result<(String, String, String)> {
        let read = |what: &str, path: &Path| {
            std::fs::read_to_string(path)
                .with_context(|| format!("cannot read the {what} {}", path.display()))
        };
        Ok((
            read("CA certificate", &self.ca_cert)?,
            read("certificate", &self.cert)?,
            read("private key", &self.key)?,
        ))
    }
}

/// The relay's TLS: its server certificate, and a client certificate of the CA
/// required of every peer.
#[derive(Clone)]
pub struct ServerTls {
    config: Arc<ServerConfig>,
}

impl std::fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerTls").finish_non_exhaustive()
    }
}

impl ServerTls {
    /// From PEM text: the CA that client certificates must chain to, the server's
    /// chain and its key.
    pub fn from_pem(ca_pem: &str, chain_pem: &str, key_pem: &str) -> anyhow::Result<ServerTls> {
        let roots = roots(ca_pem)?;
        let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .context("building the client certificate verifier")?;
        let config = ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_client_cert_verifier(verifier)
            .with_single_cert(parse_certificates(chain_pem)?, parse_private_key(key_pem)?)
            .context("the server certificate and key do not match")?;
        Ok(ServerTls {
            config: Arc::new(config),
        })
    }

    /// From files.
    pub fn from_files(files: &TlsFiles) -> anyhow::Result<ServerTls> {
        let (ca, chain, key) = files.read()?;
        ServerTls::from_pem(&ca, &chain, &key)
            .with_context(|| format!("loading the TLS certificate {}", files.cert.display()))
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ServerConfig> {
        Arc::clone(&self.config)
    }

    /// The TLS handshake on an accepted connection, and the identity its verified
    /// client certificate names (an error when it names none).
    pub async fn accept(
        &self,
        tcp: TcpStream,
    ) -> std::io::Result<(ServerStream, Result<Identity, IdentityError>)> {
        let stream = tokio_rustls::TlsAcceptor::from(self.config())
            .accept(tcp)
            .await?;
        let identity = Identity::of_chain(stream.get_ref().1.peer_certificates());
        Ok((stream, identity))
    }
}

/// A relay client's TLS (agent or service): the CA the relay's certificate must chain
/// to, and the client certificate presented.
#[derive(Clone)]
pub struct ClientTls {
    config: Arc<ClientConfig>,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// From PEM text: the CA, the client's chain and its key.
    pub fn from_pem(ca_pem: &str, chain_pem: &str, key_pem: &str) -> anyhow::Result<ClientTls> {
        let config = ClientConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()
            .context("TLS protocol versions")?
            .with_root_certificates(roots(ca_pem)?)
            .with_client_auth_cert(parse_certificates(chain_pem)?, parse_private_key(key_pem)?)
            .context("the client certificate and key do not match")?;
        Ok(ClientTls {
            config: Arc::new(config),
        })
    }

    /// From files.
    pub fn from_files(files: &TlsFiles) -> anyhow::Result<ClientTls> {
        let (ca, chain, key) = files.read()?;
        ClientTls::from_pem(&ca, &chain, &key)
            .with_context(|| format!("loading the TLS certificate {}", files.cert.display()))
    }

    /// The rustls configuration.
    pub fn config(&self) -> Arc<ClientConfig> {
        Arc::clone(&self.config)
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(ca_pem: &str) -> anyhow::Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    let cas = parse_certificates(ca_pem).context("the CA certificate")?;
    for ca in cas {
        roots
            .add(ca)
            .context("the CA certificate is not a usable trust anchor")?;
    }
    Ok(roots)
}

/// Every certificate in PEM text; an error when there is none.
pub fn parse_certificates(pem: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<_, _>>()
        .context("a PEM certificate could not be read")?;
    if certs.is_empty() {
        anyhow::bail!("no PEM certificate found (expected -----BEGIN CERTIFICATE-----)");
    }
    Ok(certs)
}

/// The first private key in PEM text.
pub fn parse_private_key(pem: &str) -> anyhow::Result<PrivateKeyDer<'static>> {
    rustls_pemfile::private_key(&mut pem.as_bytes())
        .context("the private key is not PEM")?
        .context("no PEM private key found (expected -----BEGIN PRIVATE KEY-----)")
}
