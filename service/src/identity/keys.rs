//! ES256 signing keys: one signs users' tokens, one signs agent and service credentials.

use std::path::Path;

use anyhow::Context;
use base64::Engine;
use jsonwebtoken::{DecodingKey, EncodingKey};
use ring::rand::SystemRandom;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};

/// The DER prefix of a P-256 SubjectPublicKeyInfo; the 65-byte point follows it.
const P256_SPKI_PREFIX: [u8; 26] = [
    0x30, 0x59, 0x30, 0x13, 0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01, 0x06, 0x08, 0x2a,
    0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07, 0x03, 0x42, 0x00,
];

/// An ES256 (P-256) key pair.
#[derive(Clone)]
pub struct SigningKey {
    pkcs8: Vec<u8>,
    public: Vec<u8>,
}

impl SigningKey {
    /// A fresh key pair.
    pub fn generate() -> anyhow::Result<SigningKey> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("could not generate a P-256 key"))?;
        SigningKey::from_pkcs8(pkcs8.as_ref())
    }

    /// A key pair from PKCS#8 DER.
    pub fn from_pkcs8(der: &[u8]) -> anyhow::Result<SigningKey> {
        let rng = SystemRandom::new();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng)
            .map_err(|e| anyhow::anyhow!("not a PKCS#8 P-256 key: {e}"))?;
        Ok(SigningKey {
            pkcs8: der.to_vec(),
            public: pair.public_key().as_ref().to_vec(),
        })
    }

    /// Loads the key stored at `path`, or makes one and stores it there (mode 0600).
    pub fn load_or_create(path: &Path) -> anyhow::Result<SigningKey> {
        if path.exists() {
            let der =
                std::fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
            return SigningKey::from_pkcs8(&der)
                .with_context(|| format!("key file {}", path.display()));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let key = SigningKey::generate()?;
        write_private(path, &key.pkcs8)?;
        Ok(key)
    }

    /// For signing.
    pub fn encoding_key(&self) -> EncodingKey {
        EncodingKey::from_ec_der(&self.pkcs8)
    }

    /// For verifying.
    pub fn decoding_key(&self) -> DecodingKey {
        DecodingKey::from_ec_der(&self.public)
    }

    /// The public key as PEM (`BEGIN PUBLIC KEY`), for relays and other verifiers.
    pub fn public_key_pem(&self) -> String {
        let mut der = P256_SPKI_PREFIX.to_vec();
        der.extend_from_slice(&self.public);
        let b64 = base64::engine::general_purpose::STANDARD.encode(der);
        let mut pem = String::from("-----BEGIN PUBLIC KEY-----\n");
        for chunk in b64.as_bytes().chunks(64) {
            pem.push_str(std::str::from_utf8(chunk).expect("base64 is ASCII"));
            pem.push('\n');
        }
        pem.push_str("-----END PUBLIC KEY-----\n");
        pem
    }
}

/// Writes a secret file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(contents)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pem_public_key_verifies_what_the_private_key_signs() {
        let key = SigningKey::generate().unwrap();
        let claims = serde_json::json!({"sub": "x", "exp": 4_000_000_000i64});
        let token = jsonwebtoken::encode(
            &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256),
            &claims,
            &key.encoding_key(),
        )
        .unwrap();
        let pem = DecodingKey::from_ec_pem(key.public_key_pem().as_bytes()).unwrap();
        let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::ES256);
        v.set_required_spec_claims(&["exp"]);
        jsonwebtoken::decode::<serde_json::Value>(&token, &pem, &v).unwrap();
    }

    #[test]
    fn a_stored_key_loads_back_identically() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.pk8");
        let a = SigningKey::load_or_create(&path).unwrap();
        let b = SigningKey::load_or_create(&path).unwrap();
        assert_eq!(a.public_key_pem(), b.public_key_pem());
    }
}
