//! What every request handler and background task shares.

use crate::agents::Agents;
use crate::db::Db;
use crate::identity::tokens::TokenSigner;
use crate::lifecycle::Lifecycle;
use crate::policy::Policy;
use crate::providers::Provisioner;

/// Shared application state.
#[derive(Clone)]
pub struct AppState {
    /// The database.
    pub db: Db,
    /// Issues and verifies users' tokens.
    pub tokens: TokenSigner,
    /// Commands to agents.
    pub agents: Agents,
    /// Drives containers through their lifecycle in the background.
    pub lifecycle: Lifecycle,
    /// Makes instances on demand for projects that have none.
    pub providers: Provisioner,
    /// Base URL clients reach this service at (no trailing slash).
    pub public_url: String,
    /// Region name in the catalog.
    pub region: String,
    /// Who may do what (defaults overridden by the policy file).
    pub policy: std::sync::Arc<Policy>,
    /// Validates tokens against an external Keystone; None: the embedded identity
    /// service issues and checks them.
    pub keystone: Option<crate::identity::keystone::KeystoneValidator>,
    /// Issues client certificates of the Docker endpoint's TLS listener; None when
    /// that listener is off.
    pub docker_issuer: Option<std::sync::Arc<crate::docker_api::certs::Issuer>>,
    /// Notices of container changes, for callers that wait for a state.
    pub watch: crate::watch::ContainerWatch,
    /// Seals registry passwords at rest.
    pub registry_key: crate::secrets::SecretKey,
}
