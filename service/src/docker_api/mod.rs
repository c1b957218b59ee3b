//! The Docker-compatible endpoint: the stock `docker` CLI runs a tenant's containers on
//! Berth.
//!
//! It is a second front door on the same service layer as the Zun API: the same
//! container rows, policy, quotas, placement and project isolation. It is served by
//! hyper rather than actix-web because `docker attach` and `docker exec` hijack the
//! HTTP connection (`101 UPGRADED`, then raw bytes both ways), which actix-web's
//! response path cannot carry.
//!
//! - [`server`] — the plain (loopback) and TLS listeners, one hyper connection each.
//! - [`auth`] — who is calling: a registered TLS client certificate or `X-Auth-Token`.
//! - [`certs`] — the CA, the listener's certificate, client certificates from CSRs.
//! - [`router`] — API version prefix, the route table, auth before every route but
//!   `_ping`.
//! - [`system`] — `_ping`, `version`, `info`.
//! - [`containers`] — create, list, inspect, start/stop/…, wait, rename, update, top.
//! - [`streams`] — attach, exec, logs, resize: byte streams through relay and agent.
//! - [`images`] — pull (to the project's instances), list, inspect, remove.
//! - [`ids`] — 64-hex Docker ids ⇄ Berth uuids; name and short-id lookup.
//! - [`error`] — Docker's `{"message": …}` errors.

pub mod auth;
pub mod certs;
pub mod containers;
pub mod error;
pub mod ids;
pub mod images;
pub mod router;
pub mod server;
pub mod stats;
pub mod streams;
pub mod system;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use hyper::{Method, StatusCode};

pub use error::DockerError;

use crate::identity::RequestContext;
use crate::state::AppState;

/// The newest Docker Engine API version served (moby 28.5); also the version of
/// unversioned paths.
pub const API_VERSION: ApiVersion = ApiVersion(1, 51);
/// The oldest Docker Engine API version served.
pub const MIN_API_VERSION: ApiVersion = ApiVersion(1, 24);

/// A Docker Engine API version, `1.51` = `ApiVersion(1, 51)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ApiVersion(pub u16, pub u16);

impl std::fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.0, self.1)
    }
}

impl ApiVersion {
    /// Parses `1.51`.
    pub fn parse(s: &str) -> Option<ApiVersion> {
        let (major, minor) = s.split_once('.')?;
        Some(ApiVersion(major.parse().ok()?, minor.parse().ok()?))
    }
}

/// A response body: either whole or streamed.
pub type Body = BoxBody<Bytes, std::io::Error>;
/// A response of this endpoint.
pub type Response = hyper::Response<Body>;

/// Process-wide state of the Docker endpoint, shared by every connection.
pub struct DockerShared {
    /// The service layer.
    pub state: AppState,
    /// Exec instances made by `POST /containers/{id}/exec`, until they are inspected
    /// after they end.
    pub execs: streams::ExecTable,
    /// Server name reported by `/version` and `/info`.
    pub server_name: String,
}

impl DockerShared {
    /// Shared state over the service layer.
    pub fn new(state: AppState) -> Arc<DockerShared> {
        Arc::new(DockerShared {
            state,
            execs: streams::ExecTable::default(),
            server_name: "Berth".to_owned(),
        })
    }
}

/// One authenticated call: who, and the shared state.
pub struct Cx {
    /// Shared endpoint state (and through it the service layer).
    pub shared: Arc<DockerShared>,
    /// The caller, as every Zun API request has it.
    pub ctx: RequestContext,
}

impl Cx {
    /// The service layer.
    pub fn state(&self) -> &AppState {
        &self.shared.state
    }
}

/// One parsed request.
pub struct Call {
    /// HTTP method.
    pub method: Method,
    /// The API version the path asked for (or [`API_VERSION`] without a prefix).
    pub version: ApiVersion,
    /// The path after the version prefix, split at `/` and percent-decoded.
    pub segments: Vec<String>,
    /// Query parameters.
    pub query: Query,
    /// Request headers.
    pub headers: HeaderMap,
    /// The whole request body (bounded by the router).
    pub body: Bytes,
    /// Present when the client asked to upgrade the connection (`Upgrade: tcp`):
    /// attach and exec start hijack it.
    pub upgrade: Option<hyper::upgrade::OnUpgrade>,
}

impl Call {
    /// Path segment `i` (after the version), or "".
    pub fn segment(&self, i: usize) -> &str {
        self.segments.get(i).map(String::as_str).unwrap_or("")
    }

    /// The body parsed as JSON, with a 400 naming the problem; an empty body reads as
    /// `{}`... only for types that accept it.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, DockerError> {
        let body: &[u8] = if self.body.is_empty() {
            b"{}"
        } else {
            &self.body
        };
        serde_json::from_slice(body)
            .map_err(|e| DockerError::bad_request(format!("invalid JSON in request body: {e}")))
    }
}

/// Query parameters with Docker's parsing rules.
#[derive(Debug, Default, Clone)]
pub struct Query(pub HashMap<String, String>);

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: Option<&str>) -> Query {
        let mut map = HashMap::new();
        if let Some(raw) = raw {
            for pair in raw.split('&').filter(|p| !p.is_empty()) {
                let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                map.insert(decode(k), decode(v));
            }
        }
        Query(map)
    }

    /// The raw value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// A boolean as moby reads it: absent is `default`; "", "0", "no", "false" and
    /// "none" are false; anything else is true.
    pub fn bool(&self, name: &str, default: bool) -> bool {
        match self.get(name) {
            None => default,
            Some(v) => !matches!(
                v.to_ascii_lowercase().as_str(),
                "" | "0" | "no" | "false" | "none"
            ),
        }
    }

    /// An integer, or a 400 naming the parameter.
    pub fn i64(&self, name: &str) -> Result<Option<i64>, DockerError> {
        match self.get(name) {
            None | Some("") => Ok(None),
            Some(v) => v.parse().map(Some).map_err(|_| {
                DockerError::bad_request(format!(
                    "invalid value for {name}: {v:?} is not an integer"
                ))
            }),
        }
    }

    /// `filters` as moby takes them: `{"key":{"value":true}}` or the legacy
    /// `{"key":["value"]}`; key → values.
    pub fn filters(&self) -> Result<HashMap<String, Vec<String>>, DockerError> {
        let Some(raw) = self.get("filters").filter(|r| !r.is_empty()) else {
            return Ok(HashMap::new());
        };
        if let Ok(m) = serde_json::from_str::<HashMap<String, HashMap<String, bool>>>(raw) {
            return Ok(m
                .into_iter()
                .map(|(k, v)| {
                    (
                        k,
                        v.into_iter()
                            .filter(|(_, on)| *on)
                            .map(|(s, _)| s)
                            .collect(),
                    )
                })
                .collect());
        }
        serde_json::from_str::<HashMap<String, Vec<String>>>(raw)
            .map_err(|e| DockerError::bad_request(format!("invalid filters: {e}")))
    }
}

fn decode(s: &str) -> String {
    let plus = s.replace('+', " ");
    percent_encoding::percent_decode_str(&plus)
        .decode_utf8_lossy()
        .into_owned()
}

/// A JSON response.
pub fn json(status: StatusCode, value: &impl serde::Serialize) -> Response {
    let body = serde_json::to_vec(value).expect("JSON values serialise");
    let mut resp = hyper::Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// An empty response (204, 304, …).
pub fn empty(status: StatusCode) -> Response {
    let mut resp = hyper::Response::new(
        Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp
}

/// A whole body.
pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}
