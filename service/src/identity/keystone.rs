//! Tokens from an external Keystone, validated as keystonemiddleware's `auth_token`
//! validates them.
//!
//! Berth authenticates itself with its own service credentials (`POST /v3/auth/tokens`)
//! and asks Keystone about each user token (`GET /v3/auth/tokens?nocatalog` with
//! `X-Subject-Token`). A success is cached by the token's SHA-256 for
//! `min(cache_ttl, expires_at − now)`, so a revoked token stops working within
//! `cache_ttl` and a cached token never outlives its expiry. Failures are not cached.
//!
//! With Keystone's JWS public keys, a token that is an ES256 JWS is first checked
//! offline (signature against every key, expiry), which turns away forged, tampered
//! and expired tokens without a network hop. The payload carries no roles and no
//! revocation state, so the online validation (cached) still decides.
//!
//! Containers reference `projects(id)`, so each validated project is shadowed into
//! the `projects` table on first sight.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use anyhow::Context;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::RequestContext;
use crate::api::error::ApiError;
use crate::db::Db;
use crate::settings::IdentitySettings;

/// How many validated tokens the cache holds before it sheds expired ones (and, if
/// that is not enough, starts again empty): a bound on memory, not a tuning knob.
const CACHE_CAPACITY: usize = 10_000;

/// How often the JWS key directory may be re-read when a signature matches no key
/// (Keystone's keys rotate; a new node's key may appear).
const KEY_RELOAD_INTERVAL: Duration = Duration::from_secs(60);

/// The offline verdict that may change when the key directory is read again.
const NO_KEY_MATCHES: JwsCheck =
    JwsCheck::Rejected("its signature matches none of Keystone's public keys");

/// A user token Keystone has vouched for.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidatedToken {
    /// The user's id.
    pub user_id: String,
    /// The user's name.
    pub user_name: String,
    /// The project the token is scoped to (for a trust, the trust's project).
    pub project_id: String,
    /// That project's name.
    pub project_name: String,
    /// That project's domain id.
    pub project_domain_id: String,
    /// Role names, implied roles included.
    pub roles: Vec<String>,
    /// When the token stops being valid.
    pub expires_at: DateTime<Utc>,
    /// The trust, for a trust-scoped token (Heat's deferred operations).
    pub trust_id: Option<String>,
    /// The application credential the token was made from.
    pub application_credential_id: Option<String>,
}

/// Why a token was not accepted.
#[derive(Debug, thiserror::Error)]
pub enum ValidationError {
    /// The token is bad (forged, tampered, expired, revoked, unknown, unscoped) → 401.
    #[error("{0}")]
    Invalid(String),
    /// Keystone could not answer (down, or refuses Berth's own credentials) → 503.
    #[error("{0}")]
    Unavailable(String),
}

impl From<ValidationError> for ApiError {
    fn from(e: ValidationError) -> Self {
        match e {
            ValidationError::Invalid(m) => ApiError::Unauthorized(m),
            ValidationError::Unavailable(m) => ApiError::Unavailable(m),
        }
    }
}

/// The latest time a validated token may be served from the cache: `ttl` from now,
/// but never past the token's expiry. None: do not cache (expired, or caching off).
pub fn cache_deadline(
    now: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    ttl: Duration,
) -> Option<DateTime<Utc>> {
    if ttl.is_zero() || expires_at <= now {
        return None;
    }
    let by_ttl = now + chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::MAX);
    Some(by_ttl.min(expires_at))
}

/// Validated tokens by SHA-256 of the token, each with the time it may be served until.
pub struct TokenCache {
    ttl: Duration,
    entries: HashMap<[u8; 32], (Arc<ValidatedToken>, DateTime<Utc>)>,
}

impl TokenCache {
    /// An empty cache keeping entries at most `ttl`.
    pub fn new(ttl: Duration) -> Self {
        TokenCache {
            ttl,
            entries: HashMap::new(),
        }
    }

    /// The cached validation of the token hashing to `key`, if still good at `now`.
    pub fn get(&mut self, key: &[u8; 32], now: DateTime<Utc>) -> Option<Arc<ValidatedToken>> {
        let (token, until) = self.entries.get(key)?;
        // The expiry is checked again on every hit, as keystonemiddleware does.
        if now < *until && now < token.expires_at {
            return Some(token.clone());
        }
        self.entries.remove(key);
        None
    }

    /// Remembers a validation made at `now` (if it may be cached at all).
    pub fn insert(&mut self, key: [u8; 32], token: Arc<ValidatedToken>, now: DateTime<Utc>) {
        let Some(until) = cache_deadline(now, token.expires_at, self.ttl) else {
            return;
        };
        if self.entries.len() >= CACHE_CAPACITY {
            self.entries.retain(|_, (_, u)| *u > now);
            if self.entries.len() >= CACHE_CAPACITY {
                self.entries.clear();
            }
        }
        self.entries.insert(key, (token, until));
    }

    /// How many entries are held (expired ones included until touched).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What the offline check concluded about a token.
#[derive(Debug, Clone, PartialEq)]
pub enum JwsCheck {
    /// Not an ES256 JWS (e.g. a Fernet token): only Keystone can tell.
    NotJws,
    /// Signed by one of the keys and not expired; Keystone still has the last word.
    Valid {
        /// The user id.
        sub: String,
        /// The project id, for a project-scoped token.
        project_id: Option<String>,
    },
    /// Refused without asking Keystone; the reason is for logs and the error message.
    Rejected(&'static str),
}

#[derive(Deserialize)]
struct JwsClaims {
    sub: String,
    exp: i64,
    #[serde(default)]
    openstack_project_id: Option<String>,
}

/// Keystone's JWS public keys, from a directory of PEM files (Keystone's
/// `jws_public_key_repository`: JWS headers carry no key id, so every key is tried).
pub struct JwsKeys {
    dir: PathBuf,
    keys: RwLock<(Vec<DecodingKey>, Instant)>,
}

impl JwsKeys {
    /// Loads every public key in `dir`; fails when there is none, since then every
    /// JWS would be refused.
    pub fn load(dir: &Path) -> anyhow::Result<JwsKeys> {
        let keys = read_keys(dir)?;
        anyhow::ensure!(
            !keys.is_empty(),
            "no PEM public key in {}: copy Keystone's jws_public_key_repository files there",
            dir.display()
        );
        Ok(JwsKeys {
            dir: dir.to_owned(),
            keys: RwLock::new((keys, Instant::now())),
        })
    }

    /// Checks `token` offline: ES256 signature against every key, then `exp`.
    pub fn check(&self, token: &str) -> JwsCheck {
        match jsonwebtoken::decode_header(token) {
            Ok(h) if h.alg == Algorithm::ES256 => {}
            // Another algorithm (Keystone 30 can sign with ES384/ES512/EdDSA) or no
            // JWS at all: leave it to Keystone.
            _ => return JwsCheck::NotJws,
        }
        let verdict = self.check_with_loaded(token);
        if verdict != NO_KEY_MATCHES {
            return verdict;
        }
        if self.reload_if_stale() {
            return self.check_with_loaded(token);
        }
        verdict
    }

    fn check_with_loaded(&self, token: &str) -> JwsCheck {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_required_spec_claims(&["exp", "sub"]);
        v.leeway = 0;
        v.validate_aud = false;
        let keys = self.keys.read().expect("the key lock is never poisoned");
        for key in &keys.0 {
            use jsonwebtoken::errors::ErrorKind;
            match jsonwebtoken::decode::<JwsClaims>(token, key, &v) {
                // jsonwebtoken still accepts a token during the second of its `exp`;
                // Keystone holds it expired from `exp` on.
                Ok(d) if d.claims.exp <= Utc::now().timestamp() => {
                    return JwsCheck::Rejected("it has expired")
                }
                Ok(d) => {
                    return JwsCheck::Valid {
                        sub: d.claims.sub,
                        project_id: d.claims.openstack_project_id,
                    }
                }
                Err(e) => match e.kind() {
                    ErrorKind::InvalidSignature => continue,
                    // The signature is checked before the claims, so this key signed it.
                    ErrorKind::ExpiredSignature => return JwsCheck::Rejected("it has expired"),
                    _ => return JwsCheck::Rejected("it is not a well-formed Keystone JWS"),
                },
            }
        }
        NO_KEY_MATCHES
    }

    /// Re-reads the directory if the last read is older than [`KEY_RELOAD_INTERVAL`].
    fn reload_if_stale(&self) -> bool {
        {
            let keys = self.keys.read().expect("the key lock is never poisoned");
            if keys.1.elapsed() < KEY_RELOAD_INTERVAL {
                return false;
            }
        }
        match read_keys(&self.dir) {
            Ok(fresh) if !fresh.is_empty() => {
                tracing::info!(dir = %self.dir.display(), keys = fresh.len(), "reloaded Keystone's JWS public keys");
                *self.keys.write().expect("the key lock is never poisoned") =
                    (fresh, Instant::now());
                true
            }
            Ok(_) | Err(_) => {
                tracing::warn!(dir = %self.dir.display(), "could not reload Keystone's JWS public keys; keeping the loaded ones");
                self.keys.write().expect("the key lock is never poisoned").1 = Instant::now();
                false
            }
        }
    }
}

fn read_keys(dir: &Path) -> anyhow::Result<Vec<DecodingKey>> {
    let mut keys = Vec::new();
    let entries = std::fs::read_dir(dir)
        .with_context(|| format!("reading the JWS public key directory {}", dir.display()))?;
    for entry in entries {
        let path = entry?.path();
        if !path.is_file() {
            continue;
        }
        let pem = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        match DecodingKey::from_ec_pem(&pem) {
            Ok(k) => keys.push(k),
            Err(e) => {
                tracing::warn!(file = %path.display(), error = %e, "skipping a file that is not an EC public key")
            }
        }
    }
    Ok(keys)
}

/// Berth's own token, with which it asks Keystone about users' tokens.
struct ServiceToken {
    token: String,
    /// When to get a new one: before it expires, so that no validation fails on it.
    refresh_at: DateTime<Utc>,
}

struct Inner {
    http: reqwest::Client,
    /// Keystone's v3 base, without a trailing slash.
    v3: String,
    settings: IdentitySettings,
    cache: Mutex<TokenCache>,
    service_token: tokio::sync::Mutex<Option<ServiceToken>>,
    jws: Option<JwsKeys>,
    /// Projects (id, name) already shadowed in the database by this process.
    shadowed: Mutex<HashSet<(String, String)>>,
}

/// Validates users' tokens against an external Keystone. Cheap to clone.
#[derive(Clone)]
pub struct KeystoneValidator {
    inner: Arc<Inner>,
}

impl KeystoneValidator {
    /// A validator for the Keystone at `settings.keystone_url` (which must be set).
    /// Loads the JWS public keys when a directory is given; contacts nobody yet.
    pub fn new(settings: &IdentitySettings) -> anyhow::Result<KeystoneValidator> {
        let url = settings
            .keystone_url
            .as_deref()
            .context("identity.keystone_url is not set")?;
        let parsed = url::Url::parse(url)
            .with_context(|| format!("identity.keystone_url {url:?} is not a URL"))?;
        anyhow::ensure!(
            matches!(parsed.scheme(), "http" | "https"),
            "identity.keystone_url {url:?} must be an http:// or https:// URL"
        );
        let base = url.trim_end_matches('/');
        let v3 = if base.ends_with("/v3") {
            base.to_owned()
        } else {
            format!("{base}/v3")
        };
        anyhow::ensure!(
            !settings.password.is_empty(),
            "identity.password (Berth's Keystone service user's password) is not set"
        );
        let jws = settings
            .jws_public_keys_dir
            .as_deref()
            .map(JwsKeys::load)
            .transpose()?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .build()
            .context("building the Keystone HTTP client")?;
        Ok(KeystoneValidator {
            inner: Arc::new(Inner {
                http,
                v3,
                settings: settings.clone(),
                cache: Mutex::new(TokenCache::new(Duration::from_secs(
                    settings.cache_ttl_secs,
                ))),
                service_token: tokio::sync::Mutex::new(None),
                jws,
                shadowed: Mutex::new(HashSet::new()),
            }),
        })
    }

    /// Keystone's v3 URL.
    pub fn keystone_url(&self) -> &str {
        &self.inner.v3
    }

    /// The request context of `token`: offline check (when keys are given), then the
    /// cache or Keystone, then the project's shadow row.
    pub async fn authenticate(&self, db: &Db, token: &str) -> Result<RequestContext, ApiError> {
        let validated = self.validate(token).await?;
        self.shadow(db, &validated).await?;
        Ok(RequestContext {
            user_id: validated.user_id.clone(),
            user_name: validated.user_name.clone(),
            project_id: validated.project_id.clone(),
            project_name: validated.project_name.clone(),
            roles: validated.roles.clone(),
        })
    }

    /// Validates `token` (offline check, cache, then Keystone).
    pub async fn validate(&self, token: &str) -> Result<Arc<ValidatedToken>, ValidationError> {
        if let Some(keys) = &self.inner.jws {
            if let JwsCheck::Rejected(why) = keys.check(token) {
                tracing::info!(reason = why, "token refused offline");
                return Err(ValidationError::Invalid(format!(
                    "The token was refused: {why}. Get a new token from Keystone (`openstack token issue`)."
                )));
            }
        }
        let key: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(hit) = self.cache().get(&key, Utc::now()) {
            return Ok(hit);
        }
        let validated = Arc::new(self.validate_online(token).await?);
        self.cache().insert(key, validated.clone(), Utc::now());
        tracing::debug!(user.id = %validated.user_id, project.id = %validated.project_id, "token validated by Keystone");
        Ok(validated)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, TokenCache> {
        self.inner
            .cache
            .lock()
            .expect("the cache lock is never poisoned")
    }

    async fn validate_online(&self, token: &str) -> Result<ValidatedToken, ValidationError> {
        let mut service = self.service_token(None).await?;
        let url = format!("{}/auth/tokens?nocatalog", self.inner.v3);
        for attempt in 0..2 {
            let resp = self
                .inner
                .http
                .get(&url)
                .header("X-Auth-Token", &service)
                .header("X-Subject-Token", token)
                .send()
                .await
                .map_err(|e| self.unreachable(&e))?;
            let status = resp.status();
            match status.as_u16() {
                200 => {
                    let body: Value = resp.json().await.map_err(|e| {
                        ValidationError::Unavailable(format!(
                            "Keystone's answer to a token validation could not be read ({e}); retry shortly."
                        ))
                    })?;
                    return parse_validation(&body);
                }
                404 => {
                    return Err(ValidationError::Invalid(
                        "Keystone does not accept this token: it is invalid, expired or revoked. Get a new one from Keystone (`openstack token issue`).".into(),
                    ))
                }
                // Berth's own token was refused (expired early, revoked): get a new one
                // and ask once more.
                401 if attempt == 0 => {
                    tracing::info!("Keystone refused Berth's service token; getting a new one");
                    service = self.service_token(Some(&service)).await?;
                }
                401 | 403 => {
                    tracing::error!(status = status.as_u16(), user = %self.inner.settings.username, "Keystone does not let Berth's service user validate tokens");
                    return Err(ValidationError::Unavailable(format!(
                        "Berth cannot validate tokens: Keystone answered {status} to its service user `{}`, which needs the `service` role in project `{}`. Tell the operator.",
                        self.inner.settings.username, self.inner.settings.project_name
                    )));
                }
                400 => {
                    return Err(ValidationError::Invalid(
                        "Keystone says the token is malformed. Get a new one from Keystone (`openstack token issue`).".into(),
                    ))
                }
                _ => {
                    tracing::warn!(status = status.as_u16(), "Keystone failed a token validation");
                    return Err(ValidationError::Unavailable(format!(
                        "Keystone answered {status} when asked to validate the token; retry shortly."
                    )));
                }
            }
        }
        unreachable!("the loop returns on its second attempt")
    }

    fn unreachable(&self, e: &reqwest::Error) -> ValidationError {
        tracing::warn!(url = %self.inner.v3, error = %e, "Keystone is unreachable");
        ValidationError::Unavailable(format!(
            "Keystone at {} could not be reached to validate the token; retry shortly.",
            self.inner.v3
        ))
    }

    /// Berth's service token: the held one unless it is due for refresh or is
    /// `stale` (the one Keystone just refused).
    async fn service_token(&self, stale: Option<&str>) -> Result<String, ValidationError> {
        let mut held = self.inner.service_token.lock().await;
        if let Some(t) = held.as_ref() {
            if Utc::now() < t.refresh_at && stale != Some(t.token.as_str()) {
                return Ok(t.token.clone());
            }
        }
        let fresh = self.issue_service_token().await?;
        let token = fresh.token.clone();
        *held = Some(fresh);
        Ok(token)
    }

    async fn issue_service_token(&self) -> Result<ServiceToken, ValidationError> {
        let s = &self.inner.settings;
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": s.username, "domain": {"id": s.user_domain_id}, "password": s.password}}},
            "scope": {"project": {"name": s.project_name, "domain": {"id": s.project_domain_id}}},
        }});
        let resp = self
            .inner
            .http
            .post(format!("{}/auth/tokens?nocatalog", self.inner.v3))
            .json(&body)
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status();
        if !status.is_success() {
            tracing::error!(status = status.as_u16(), user = %s.username, project = %s.project_name, "Keystone refused Berth's service credentials");
            return Err(ValidationError::Unavailable(format!(
                "Berth cannot validate tokens: Keystone answered {status} to its service credentials (user `{}`, project `{}`). Tell the operator to check [identity] username, password and project_name.",
                s.username, s.project_name
            )));
        }
        let token = resp
            .headers()
            .get("X-Subject-Token")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or_else(|| {
                ValidationError::Unavailable(
                    "Keystone issued Berth a service token without an X-Subject-Token header; is identity.keystone_url Keystone's v3 endpoint?".into(),
                )
            })?;
        let body: Value = resp.json().await.map_err(|e| {
            ValidationError::Unavailable(format!(
                "Keystone's answer to Berth's authentication could not be read ({e})."
            ))
        })?;
        let expires_at = timestamp(&body["token"]["expires_at"]).ok_or_else(|| {
            ValidationError::Unavailable(
                "Keystone issued Berth a service token without expires_at.".into(),
            )
        })?;
        let issued_at = timestamp(&body["token"]["issued_at"]).unwrap_or_else(Utc::now);
        Ok(ServiceToken {
            token,
            refresh_at: refresh_time(issued_at, expires_at),
        })
    }

    /// Makes sure the token's project has its row in `projects`, which containers
    /// reference; written once per (id, name) per process.
    async fn shadow(&self, db: &Db, t: &ValidatedToken) -> Result<(), ApiError> {
        let pair = (t.project_id.clone(), t.project_name.clone());
        if self.shadowed().contains(&pair) {
            return Ok(());
        }
        let (id, name, domain) = (
            t.project_id.clone(),
            t.project_name.clone(),
            t.project_domain_id.clone(),
        );
        db.run(move |c| shadow::upsert_project(c, &id, &name, &domain))
            .await?;
        tracing::info!(project.id = %pair.0, project.name = %pair.1, "shadowed a Keystone project");
        self.shadowed().insert(pair);
        Ok(())
    }

    fn shadowed(&self) -> std::sync::MutexGuard<'_, HashSet<(String, String)>> {
        self.inner
            .shadowed
            .lock()
            .expect("the shadow lock is never poisoned")
    }
}

/// When to refresh a service token issued at `issued` and expiring at `expires`:
/// five minutes before expiry, or halfway for a token that lives less than ten.
pub fn refresh_time(issued: DateTime<Utc>, expires: DateTime<Utc>) -> DateTime<Utc> {
    let margin = ((expires - issued) / 2).min(chrono::Duration::minutes(5));
    expires - margin.max(chrono::Duration::zero())
}

fn timestamp(v: &Value) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(v.as_str()?)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// Reads Keystone's validation body (`{"token": {...}}`) into a [`ValidatedToken`].
pub fn parse_validation(body: &Value) -> Result<ValidatedToken, ValidationError> {
    let t = &body["token"];
    let str_of = |v: &Value| v.as_str().map(str::to_owned);
    let expires_at = timestamp(&t["expires_at"]).ok_or_else(|| {
        ValidationError::Unavailable(
            "Keystone's token validation had no expires_at; is identity.keystone_url Keystone's v3 endpoint?".into(),
        )
    })?;
    let project = &t["project"];
    let (Some(project_id), Some(user_id)) = (str_of(&project["id"]), str_of(&t["user"]["id"]))
    else {
        return Err(ValidationError::Invalid(
            "The token is not scoped to a project: containers belong to projects. Get a project-scoped token (set OS_PROJECT_NAME, or `openstack token issue --os-project-name ...`).".into(),
        ));
    };
    let roles = t["roles"]
        .as_array()
        .map(|rs| rs.iter().filter_map(|r| str_of(&r["name"])).collect())
        .unwrap_or_default();
    Ok(ValidatedToken {
        user_name: str_of(&t["user"]["name"]).unwrap_or_else(|| user_id.clone()),
        user_id,
        project_name: str_of(&project["name"]).unwrap_or_else(|| project_id.clone()),
        project_domain_id: str_of(&project["domain"]["id"]).unwrap_or_else(|| "default".into()),
        project_id,
        roles,
        expires_at,
        trust_id: str_of(&t["OS-TRUST:trust"]["id"]),
        application_credential_id: str_of(&t["application_credential"]["id"]),
    })
}

/// The embedded `/identity` routes in external mode: Keystone is the identity
/// service, so every call here says where to go instead.
pub fn configure_external(cfg: &mut web::ServiceConfig, keystone_url: String) {
    cfg.service(web::scope("/identity").default_service(web::to(move || {
        let url = keystone_url.clone();
        async move {
            HttpResponse::NotFound().json(json!({"error": {
                "code": 404,
                "title": "Not Found",
                "message": format!("This Berth issues no tokens: it accepts tokens from the Keystone at {url}. Authenticate there (OS_AUTH_URL={url})."),
            }}))
        }
    })));
}

/// The shadow of external projects in the `projects` table.
pub mod shadow {
    use diesel::prelude::*;

    use crate::db::schema::projects;
    use crate::db::{is_unique_violation, now, DbConnection, DbError};

    /// Inserts or updates the row of Keystone project `id`. Names are unique in the
    /// table but only per domain in Keystone (and a local project may hold one), so a
    /// name taken by another id is stored as `NAME (ID)`.
    pub fn upsert_project(
        conn: &mut DbConnection,
        id: &str,
        name: &str,
        domain_id: &str,
    ) -> Result<(), DbError> {
        let existing: Option<(String, String)> = projects::table
            .find(id)
            .select((projects::name, projects::domain_id))
            .first(conn)
            .optional()?;
        let fallback = format!("{name} ({id})");
        match existing {
            Some((n, d)) if (n == name || n == fallback) && d == domain_id => Ok(()),
            Some(_) => {
                let rename = |conn: &mut DbConnection, n: &str| {
                    diesel::update(projects::table.find(id))
                        .set((projects::name.eq(n), projects::domain_id.eq(domain_id)))
                        .execute(conn)
                        .map_err(DbError::from)
                };
                match rename(conn, name) {
                    Err(e) if is_unique_violation(&e) => rename(conn, &fallback).map(drop),
                    r => r.map(drop),
                }
            }
            None => {
                let insert = |conn: &mut DbConnection, n: &str| {
                    diesel::insert_into(projects::table)
                        .values((
                            projects::id.eq(id),
                            projects::name.eq(n),
                            projects::domain_id.eq(domain_id),
                            projects::description
                                .eq("Shadow of a project of the external Keystone."),
                            projects::enabled.eq(true),
                            projects::created_at.eq(now()),
                        ))
                        .execute(conn)
                        .map_err(DbError::from)
                };
                match insert(conn, name) {
                    Err(e) if is_unique_violation(&e) => {
                        // Either a concurrent request shadowed the same project, or the
                        // name belongs to another project.
                        let raced = projects::table
                            .find(id)
                            .select(projects::id)
                            .first::<String>(conn)
                            .optional()?
                            .is_some();
                        if raced {
                            Ok(())
                        } else {
                            insert(conn, &fallback).map(drop)
                        }
                    }
                    r => r.map(drop),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::keys::SigningKey;
    use chrono::TimeZone;

    fn at(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0).unwrap()
    }

    fn token(expires_at: DateTime<Utc>) -> Arc<ValidatedToken> {
        Arc::new(ValidatedToken {
            user_id: "u".into(),
            user_name: "alice".into(),
            project_id: "p".into(),
            project_name: "tenant-a".into(),
            project_domain_id: "default".into(),
            roles: vec!["member".into(), "reader".into()],
            expires_at,
            trust_id: None,
            application_credential_id: None,
        })
    }

    #[test]
    fn the_cache_deadline_is_the_ttl_or_the_expiry_whichever_comes_first() {
        let ttl = Duration::from_secs(300);
        assert_eq!(cache_deadline(at(0), at(3600), ttl), Some(at(300)));
        assert_eq!(cache_deadline(at(0), at(20), ttl), Some(at(20)));
        assert_eq!(cache_deadline(at(0), at(0), ttl), None);
        assert_eq!(cache_deadline(at(10), at(5), ttl), None);
        assert_eq!(cache_deadline(at(0), at(3600), Duration::ZERO), None);
    }

    #[test]
    fn a_cached_token_is_never_served_past_its_expiry() {
        let mut cache = TokenCache::new(Duration::from_secs(300));
        let key = [7u8; 32];
        cache.insert(key, token(at(20)), at(0));
        assert!(cache.get(&key, at(19)).is_some());
        assert!(cache.get(&key, at(20)).is_none(), "served at its expiry");
        assert!(
            cache.get(&key, at(19)).is_none(),
            "a stale entry is dropped"
        );
    }

    #[test]
    fn a_cached_token_is_served_no_longer_than_the_ttl() {
        let mut cache = TokenCache::new(Duration::from_secs(5));
        let key = [1u8; 32];
        cache.insert(key, token(at(3600)), at(0));
        assert_eq!(cache.get(&key, at(4)).unwrap().project_id, "p");
        assert!(cache.get(&key, at(5)).is_none());
    }

    #[test]
    fn expired_tokens_and_a_zero_ttl_are_not_cached() {
        let mut cache = TokenCache::new(Duration::from_secs(300));
        cache.insert([2u8; 32], token(at(-1)), at(0));
        assert!(cache.is_empty());
        let mut off = TokenCache::new(Duration::ZERO);
        off.insert([3u8; 32], token(at(3600)), at(0));
        assert!(off.is_empty());
    }

    #[test]
    fn the_service_token_is_refreshed_before_it_expires() {
        assert_eq!(refresh_time(at(0), at(3600)), at(3300));
        assert_eq!(refresh_time(at(0), at(30)), at(15));
    }

    /// Signs claims as Keystone's JWS provider does (ES256, no `kid`).
    fn keystone_jws(key: &SigningKey, exp: i64) -> String {
        let claims = json!({
            "sub": "c0ffee", "iat": exp - 3600, "exp": exp,
            "openstack_methods": ["password"], "openstack_audit_ids": ["gjdESsQvS_Swyay3iLvw-A"],
            "openstack_project_id": "72bc",
        });
        jsonwebtoken::encode(
            &jsonwebtoken::Header::new(Algorithm::ES256),
            &claims,
            &key.encoding_key(),
        )
        .unwrap()
    }

    /// A key directory holding an unrelated key first, then Keystone's.
    fn key_dir(keystone: &SigningKey) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let other = SigningKey::generate().unwrap();
        std::fs::write(dir.path().join("a-other.pem"), other.public_key_pem()).unwrap();
        std::fs::write(dir.path().join("b-keystone.pem"), keystone.public_key_pem()).unwrap();
        std::fs::write(dir.path().join("README"), "not a key").unwrap();
        dir
    }

    #[test]
    fn a_jws_signed_by_any_key_in_the_directory_passes_the_offline_check() {
        let keystone = SigningKey::generate().unwrap();
        let dir = key_dir(&keystone);
        let keys = JwsKeys::load(dir.path()).unwrap();
        let t = keystone_jws(&keystone, Utc::now().timestamp() + 600);
        assert_eq!(
            keys.check(&t),
            JwsCheck::Valid {
                sub: "c0ffee".into(),
                project_id: Some("72bc".into())
            }
        );
    }

    #[test]
    fn forged_tampered_and_expired_jws_are_rejected_offline() {
        let keystone = SigningKey::generate().unwrap();
        let dir = key_dir(&keystone);
        let keys = JwsKeys::load(dir.path()).unwrap();
        let exp = Utc::now().timestamp() + 600;

        let forged = keystone_jws(&SigningKey::generate().unwrap(), exp);
        assert!(matches!(keys.check(&forged), JwsCheck::Rejected(_)));

        let genuine = keystone_jws(&keystone, exp);
        let (head, sig) = genuine.rsplit_once('.').unwrap();
        let mut sig = sig.as_bytes().to_vec();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        let tampered = format!("{head}.{}", String::from_utf8(sig).unwrap());
        assert!(matches!(keys.check(&tampered), JwsCheck::Rejected(_)));

        // A payload changed to another project, under the original signature.
        let (header, rest) = genuine.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        use base64::Engine;
        let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
            json!({"sub": "c0ffee", "exp": exp, "openstack_project_id": "other"}).to_string(),
        );
        let swapped = format!("{header}.{payload}.{sig}");
        assert!(matches!(keys.check(&swapped), JwsCheck::Rejected(_)));

        let expired = keystone_jws(&keystone, Utc::now().timestamp() - 1);
        assert_eq!(keys.check(&expired), JwsCheck::Rejected("it has expired"));
        // Expired from the second of `exp` on, as Keystone holds it.
        let expiring = keystone_jws(&keystone, Utc::now().timestamp());
        assert_eq!(keys.check(&expiring), JwsCheck::Rejected("it has expired"));
    }

    #[test]
    fn a_token_that_is_not_a_jws_is_left_to_keystone() {
        let keystone = SigningKey::generate().unwrap();
        let dir = key_dir(&keystone);
        let keys = JwsKeys::load(dir.path()).unwrap();
        // A Fernet token looks like this: no dots, base64url.
        assert_eq!(
            keys.check("gAAAAABhZ2x1ZV9mZXJuZXRfdG9rZW5fc2FtcGxl"),
            JwsCheck::NotJws
        );
        assert_eq!(keys.check("garbage"), JwsCheck::NotJws);
    }

    #[test]
    fn an_empty_key_directory_is_a_configuration_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = JwsKeys::load(dir.path()).err().unwrap().to_string();
        assert!(err.contains("no PEM public key"), "{err}");
    }

    #[test]
    fn a_validation_body_gives_project_roles_and_expiry() {
        let body = json!({"token": {
            "methods": ["password"],
            "user": {"domain": {"id": "default", "name": "Default"}, "id": "a008", "name": "rita"},
            "expires_at": "2026-11-23T20:23:33.000000Z",
            "project": {"domain": {"id": "default", "name": "Default"}, "id": "4670", "name": "tenant-a"},
            "roles": [{"id": "e490", "name": "reader"}],
            "OS-TRUST:trust": {"id": "t1", "impersonation": true},
        }});
        let t = parse_validation(&body).unwrap();
        assert_eq!(t.project_id, "4670");
        assert_eq!(t.project_name, "tenant-a");
        assert_eq!(t.user_name, "rita");
        assert_eq!(t.roles, vec!["reader".to_owned()]);
        assert_eq!(t.trust_id.as_deref(), Some("t1"));
        assert_eq!(
            t.expires_at,
            Utc.with_ymd_and_hms(2026, 11, 23, 20, 23, 33).unwrap()
        );
    }

    /// The shadow upsert's cases, on one database.
    fn shadow_cases(db: &Db) {
        use crate::db::schema::projects;
        use diesel::prelude::*;
        let mut conn = db.conn().unwrap();
        let c = &mut *conn;
        let name_of = |c: &mut crate::db::DbConnection, id: &str| -> Option<String> {
            projects::table
                .find(id)
                .select(projects::name)
                .first(c)
                .optional()
                .unwrap()
        };
        shadow::upsert_project(c, "p1", "tenant-a", "default").unwrap();
        shadow::upsert_project(c, "p1", "tenant-a", "default").unwrap();
        assert_eq!(name_of(c, "p1").as_deref(), Some("tenant-a"));
        // Renamed in Keystone.
        shadow::upsert_project(c, "p1", "tenant-b", "default").unwrap();
        assert_eq!(name_of(c, "p1").as_deref(), Some("tenant-b"));
        // Same name in another domain (or held by a local project): kept apart.
        shadow::upsert_project(c, "p2", "tenant-b", "other").unwrap();
        assert_eq!(name_of(c, "p2").as_deref(), Some("tenant-b (p2)"));
        shadow::upsert_project(c, "p2", "tenant-b", "other").unwrap();
        assert_eq!(name_of(c, "p2").as_deref(), Some("tenant-b (p2)"));
        let count: i64 = projects::table.count().get_result(c).unwrap();
        assert_eq!(count, 2);
    }

    #[test]
    fn keystone_projects_are_shadowed_renamed_and_kept_apart_from_taken_names_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::connect(&format!("sqlite://{}", dir.path().join("db").display())).unwrap();
        shadow_cases(&db);
    }

    #[test]
    fn keystone_projects_are_shadowed_renamed_and_kept_apart_from_taken_names_on_postgres() {
        use diesel::{Connection, RunQueryDsl};
        let admin_url = std::env::var("BERTH_TEST_DATABASE_URL").expect(
            "BERTH_TEST_DATABASE_URL is not set: run the tests with scripts/test, which starts PostgreSQL",
        );
        let name = format!("berth_shadow_{}", uuid::Uuid::new_v4().simple());
        let mut admin = diesel::PgConnection::establish(&admin_url).unwrap();
        diesel::sql_query(format!("CREATE DATABASE {name}"))
            .execute(&mut admin)
            .unwrap();
        let base = admin_url.rsplit_once('/').unwrap().0;
        let result = std::panic::catch_unwind(|| {
            let db = Db::connect(&format!("{base}/{name}")).unwrap();
            shadow_cases(&db);
        });
        diesel::sql_query(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .unwrap();
        if let Err(panic) = result {
            std::panic::resume_unwind(panic);
        }
    }

    /// A stand-in for Keystone's two token calls, counting them: service tokens are
    /// `svc-1`, `svc-2`, …; `refuse` lists service tokens it answers 401 to; subject
    /// `good` is valid, anything else unknown (404).
    struct FakeKeystone {
        url: String,
        issued: Arc<std::sync::atomic::AtomicUsize>,
        validations: Arc<std::sync::atomic::AtomicUsize>,
        _server: actix_web::dev::ServerHandle,
    }

    async fn fake_keystone(refuse: &'static [&'static str]) -> FakeKeystone {
        use actix_web::{App, HttpRequest, HttpServer};
        use std::sync::atomic::{AtomicUsize, Ordering};
        let issued = Arc::new(AtomicUsize::new(0));
        let validations = Arc::new(AtomicUsize::new(0));
        let (i, v) = (issued.clone(), validations.clone());
        let server = HttpServer::new(move || {
            let (i, v) = (i.clone(), v.clone());
            App::new()
                .route(
                    "/v3/auth/tokens",
                    web::post().to(move || {
                        let n = i.fetch_add(1, Ordering::SeqCst) + 1;
                        let exp = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
                        async move {
                            HttpResponse::Created()
                                .insert_header(("X-Subject-Token", format!("svc-{n}")))
                                .json(json!({"token": {"expires_at": exp}}))
                        }
                    }),
                )
                .route(
                    "/v3/auth/tokens",
                    web::get().to(move |req: HttpRequest| {
                        v.fetch_add(1, Ordering::SeqCst);
                        let header = |n: &str| {
                            req.headers()
                                .get(n)
                                .and_then(|h| h.to_str().ok())
                                .unwrap_or("")
                                .to_owned()
                        };
                        let (caller, subject) = (header("X-Auth-Token"), header("X-Subject-Token"));
                        async move {
                            if refuse.contains(&caller.as_str()) {
                                return HttpResponse::Unauthorized().finish();
                            }
                            if subject != "good" {
                                return HttpResponse::NotFound().finish();
                            }
                            let exp = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
                            HttpResponse::Ok().json(json!({"token": {
                                "expires_at": exp,
                                "user": {"id": "u1", "name": "alice"},
                                "project": {"id": "p1", "name": "tenant-a", "domain": {"id": "default"}},
                                "roles": [{"id": "r1", "name": "member"}, {"id": "r2", "name": "reader"}],
                            }}))
                        }
                    }),
                )
        })
        .workers(1)
        .disable_signals()
        .bind("127.0.0.1:0")
        .unwrap();
        let port = server.addrs()[0].port();
        let server = server.run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeKeystone {
            url: format!("http://127.0.0.1:{port}/v3"),
            issued,
            validations,
            _server: handle,
        }
    }

    fn validator(url: &str) -> KeystoneValidator {
        KeystoneValidator::new(&IdentitySettings {
            keystone_url: Some(url.to_owned()),
            password: "pw".into(),
            ..IdentitySettings::default()
        })
        .unwrap()
    }

    fn count(c: &Arc<std::sync::atomic::AtomicUsize>) -> usize {
        c.load(std::sync::atomic::Ordering::SeqCst)
    }

    #[actix_web::test]
    async fn a_validation_is_cached_and_the_service_token_reused() {
        let ks = fake_keystone(&[]).await;
        let v = validator(&ks.url);
        let t = v.validate("good").await.unwrap();
        assert_eq!(t.roles, vec!["member".to_owned(), "reader".to_owned()]);
        v.validate("good").await.unwrap();
        assert_eq!(
            count(&ks.validations),
            1,
            "the second call came from the cache"
        );
        assert!(matches!(
            v.validate("unknown").await,
            Err(ValidationError::Invalid(_))
        ));
        assert_eq!(count(&ks.issued), 1, "one service token for everything");
    }

    #[actix_web::test]
    async fn a_refused_service_token_is_replaced_once_and_the_validation_retried() {
        let ks = fake_keystone(&["svc-1"]).await;
        let v = validator(&ks.url);
        assert_eq!(v.validate("good").await.unwrap().project_id, "p1");
        assert_eq!(count(&ks.issued), 2);
        assert_eq!(count(&ks.validations), 2);

        // Refused again after the refresh: Berth's credentials are the problem → 503.
        let ks = fake_keystone(&["svc-1", "svc-2"]).await;
        let v = validator(&ks.url);
        assert!(matches!(
            v.validate("good").await,
            Err(ValidationError::Unavailable(_))
        ));
        assert_eq!(count(&ks.issued), 2, "refreshed once, not in a loop");
    }

    #[actix_web::test]
    async fn an_unreachable_keystone_makes_validation_unavailable() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let v = validator(&format!("http://127.0.0.1:{port}"));
        let err = v.validate("good").await.unwrap_err();
        assert!(matches!(err, ValidationError::Unavailable(_)), "{err}");
        use actix_web::ResponseError;
        assert_eq!(ApiError::from(err).status_code(), 503);
    }

    #[test]
    fn an_unscoped_token_is_refused() {
        let body = json!({"token": {
            "user": {"id": "a008", "name": "rita"},
            "expires_at": "2026-11-23T20:23:33.000000Z",
        }});
        assert!(matches!(
            parse_validation(&body),
            Err(ValidationError::Invalid(_))
        ));
    }
}
