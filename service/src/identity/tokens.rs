//! Keystone-style JWS tokens (ES256), as Keystone's `jws` provider issues them.

use std::time::Duration;

use jsonwebtoken::{Algorithm, Header, Validation};
use serde::{Deserialize, Serialize};

use super::keys::SigningKey;

/// The payload, with Keystone's claim names.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenClaims {
    /// User id.
    pub sub: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expiry (Unix seconds).
    pub exp: i64,
    /// Authentication methods used.
    pub openstack_methods: Vec<String>,
    /// Audit ids.
    pub openstack_audit_ids: Vec<String>,
    /// The project the token is scoped to.
    pub openstack_project_id: String,
}

/// Issues and verifies tokens.
#[derive(Clone)]
pub struct TokenSigner {
    key: SigningKey,
    ttl: Duration,
}

/// A freshly issued token.
pub struct IssuedToken {
    /// The JWS.
    pub token: String,
    /// Its claims.
    pub claims: TokenClaims,
}

impl TokenSigner {
    /// A signer with `key`, issuing tokens valid for `ttl`.
    pub fn new(key: SigningKey, ttl: Duration) -> Self {
        Self { key, ttl }
    }

    /// Issues a project-scoped token for `user`.
    pub fn issue(&self, user: &str, project: &str, method: &str) -> anyhow::Result<IssuedToken> {
        let now = chrono::Utc::now().timestamp();
        let audit = uuid::Uuid::new_v4().simple().to_string();
        let claims = TokenClaims {
            sub: user.to_owned(),
            iat: now,
            exp: now + self.ttl.as_secs() as i64,
            openstack_methods: vec![method.to_owned()],
            openstack_audit_ids: vec![audit[..22].to_owned()],
            openstack_project_id: project.to_owned(),
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::ES256),
            &claims,
            &self.key.encoding_key(),
        )?;
        Ok(IssuedToken { token, claims })
    }

    /// The claims of `token` when its signature and expiry are valid.
    pub fn verify(&self, token: &str) -> Option<TokenClaims> {
        let mut v = Validation::new(Algorithm::ES256);
        v.set_required_spec_claims(&["exp", "sub"]);
        v.leeway = 0;
        jsonwebtoken::decode::<TokenClaims>(token, &self.key.decoding_key(), &v)
            .ok()
            .map(|d| d.claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_and_a_tampered_one_does_not() {
        let s = TokenSigner::new(SigningKey::generate().unwrap(), Duration::from_secs(60));
        let t = s.issue("u1", "p1", "password").unwrap();
        assert_eq!(s.verify(&t.token).unwrap().openstack_project_id, "p1");
        let mut bad = t.token.clone();
        bad.push('x');
        assert!(s.verify(&bad).is_none());
        let other = TokenSigner::new(SigningKey::generate().unwrap(), Duration::from_secs(60));
        assert!(other.verify(&t.token).is_none());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let s = TokenSigner::new(SigningKey::generate().unwrap(), Duration::from_secs(0));
        let t = s.issue("u1", "p1", "password").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert!(s.verify(&t.token).is_none());
    }
}
