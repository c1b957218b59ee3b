//! Secrets the service keeps in its database, sealed at rest: today the passwords of
//! Zun registries. AES-256-GCM (ring) under a key stored in the keys directory (made on
//! first start, mode 0600, like the signing keys); each value is bound to the row it
//! belongs to, so a sealed password copied to another row does not open.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use base64::Engine;
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};

/// The file in the keys directory holding the registry key (32 random bytes).
pub const REGISTRY_KEY_FILE: &str = "registry-secrets.key";

/// What a sealed value starts with; the rest is base64 of nonce ‖ ciphertext ‖ tag.
const PREFIX: &str = "aes256gcm:";

/// A key that seals and opens stored secrets.
#[derive(Clone)]
pub struct SecretKey {
    key: Arc<LessSafeKey>,
    rng: SystemRandom,
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretKey").finish_non_exhaustive()
    }
}

/// A stored value that could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct OpenError(String);

impl SecretKey {
    /// A key from its 32 bytes.
    pub fn from_bytes(bytes: &[u8]) -> anyhow::Result<SecretKey> {
        anyhow::ensure!(
            bytes.len() == AES_256_GCM.key_len(),
            "a registry key is {} bytes, this one has {}",
            AES_256_GCM.key_len(),
            bytes.len()
        );
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| anyhow::anyhow!("not an AES-256 key"))?;
        Ok(SecretKey {
            key: Arc::new(LessSafeKey::new(unbound)),
            rng: SystemRandom::new(),
        })
    }

    /// A fresh random key and its bytes.
    fn generate() -> anyhow::Result<(SecretKey, Vec<u8>)> {
        let mut bytes = vec![0u8; AES_256_GCM.key_len()];
        SystemRandom::new()
            .fill(&mut bytes)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        Ok((SecretKey::from_bytes(&bytes)?, bytes))
    }

    /// Loads the key stored at `path`, or makes one and stores it there (mode 0600).
    pub fn load_or_create(path: &Path) -> anyhow::Result<SecretKey> {
        if path.exists() {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading key {}", path.display()))?;
            return SecretKey::from_bytes(&bytes)
                .with_context(|| format!("key file {}", path.display()));
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        }
        let (key, bytes) = SecretKey::generate()?;
        crate::identity::keys::write_private(path, &bytes)?;
        Ok(key)
    }

    /// Seals `plain` for the row `context` (e.g. the registry's uuid).
    pub fn seal(&self, context: &str, plain: &str) -> anyhow::Result<String> {
        let mut nonce = [0u8; NONCE_LEN];
        self.rng
            .fill(&mut nonce)
            .map_err(|_| anyhow::anyhow!("the system random source failed"))?;
        let mut data = plain.as_bytes().to_vec();
        self.key
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(context.as_bytes()),
                &mut data,
            )
            .map_err(|_| anyhow::anyhow!("sealing a secret failed"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&data);
        Ok(format!(
            "{PREFIX}{}",
            base64::engine::general_purpose::STANDARD.encode(out)
        ))
    }

    /// Opens a value [`SecretKey::seal`] made for the same `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<String, OpenError> {
        let broken = |why: &str| {
            OpenError(format!(
                "the stored secret of {context} cannot be read ({why}); set it again \
                 (e.g. `openstack appcontainer registry update --password ...`)"
            ))
        };
        let b64 = sealed
            .strip_prefix(PREFIX)
            .ok_or_else(|| broken("it is not sealed"))?;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(b64)
            .map_err(|_| broken("it is not base64"))?;
        if raw.len() < NONCE_LEN {
            return Err(broken("it is too short"));
        }
        let (nonce, data) = raw.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| broken("bad nonce"))?;
        let mut data = data.to_vec();
        let plain = self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut data)
            .map_err(|_| {
                broken("it was sealed under another key or for another record, or was altered")
            })?;
        String::from_utf8(plain.to_vec()).map_err(|_| broken("it is not text"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SecretKey {
        SecretKey::generate().unwrap().0
    }

    #[test]
    fn a_sealed_value_opens_to_the_plain_text_and_does_not_contain_it() {
        let k = key();
        let sealed = k.seal("reg-1", "hunter2-password").unwrap();
        assert!(!sealed.contains("hunter2"), "{sealed}");
        assert!(sealed.starts_with(PREFIX));
        assert_eq!(k.open("reg-1", &sealed).unwrap(), "hunter2-password");
        // A fresh nonce each time: the same password seals differently.
        assert_ne!(sealed, k.seal("reg-1", "hunter2-password").unwrap());
    }

    #[test]
    fn another_record_another_key_or_a_plain_value_does_not_open() {
        let k = key();
        let sealed = k.seal("reg-1", "pw").unwrap();
        assert!(k.open("reg-2", &sealed).is_err());
        assert!(key().open("reg-1", &sealed).is_err());
        assert!(k.open("reg-1", "pw").is_err());
        let mut tampered = sealed.clone();
        tampered.pop();
        tampered.push(if sealed.ends_with('A') { 'B' } else { 'A' });
        assert!(k.open("reg-1", &tampered).is_err());
    }

    #[test]
    fn the_stored_key_loads_back_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(REGISTRY_KEY_FILE);
        let a = SecretKey::load_or_create(&path).unwrap();
        let b = SecretKey::load_or_create(&path).unwrap();
        assert_eq!(b.open("r", &a.seal("r", "pw").unwrap()).unwrap(), "pw");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(&path, b"short").unwrap();
        assert!(SecretKey::load_or_create(&path).is_err());
    }
}
