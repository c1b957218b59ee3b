//! Berth's TLS: one deployment CA, and the rustls configurations with which the
//! service, the relay and the agents authenticate one another.
//!
//! Every relay connection is `wss://` and mutually authenticated:
//!
//! - the relay serves a server certificate of the deployment's CA and requires a client
//!   certificate of the same CA ([`ServerTls`]);
//! - agents and services verify the relay's certificate against that CA and present
//!   their own ([`ClientTls`], [`connect_websocket`]);
//! - a client certificate names who it belongs to in a URI subject alternative name
//!   ([`Identity`]): `urn:berth:instance:<uuid>` for the agent of one instance,
//!   `urn:berth:service` for the service. The relay reads it with [`Identity::of`] and
//!   checks it against the bearer credential's claims.
//!
//! [`Ca`] makes and loads the CA and issues certificates (from a CSR, so an agent's key
//! never leaves its instance, or with a fresh key for `berth up` and tests). There is no
//! switch that turns verification off.

#![warn(missing_docs)]

mod ca;
mod config;
mod dial;
mod identity;

pub use ca::{new_key_and_csr, Ca, CertifiedKey, IssueError, Issued, Subject};
pub use config::{
    parse_certificates, parse_private_key, ClientTls, ServerStream, ServerTls, TlsFiles,
};
pub use dial::{connect_websocket, ClientStream, WsClient};
pub use identity::{Identity, IdentityError};

/// Writes `bytes` to `path` readable by its owner only (mode 0600), through a
/// temporary file and a rename so that a crash never leaves half a key.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot make the directory {}", dir.display()))?;
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("cannot move {} into place", path.display()))?;
    Ok(())
}
