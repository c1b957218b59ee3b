//! What every request handler and background task shares.

use crate::agents::Agents;
use crate::db::Db;
use crate::identity::tokens::TokenSigner;
use crate::lifecycle::Lifecycle;

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
    /// Base URL clients reach this service at (no trailing slash).
    pub public_url: String,
    /// Region name in the catalog.
    pub region: String,
}
