//! Password hashing: PBKDF2-HMAC-SHA256 with a random salt.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD_NO_PAD as B64;
use base64::Engine;
use ring::pbkdf2;
use ring::rand::{SecureRandom, SystemRandom};

const ITERATIONS: u32 = 100_000;

/// Hashes `password` as `pbkdf2-sha256$ITER$SALT$HASH`.
pub fn hash(password: &str) -> String {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .expect("the system RNG works");
    let mut out = [0u8; 32];
    let iters = NonZeroU32::new(ITERATIONS).expect("non-zero");
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA256,
        iters,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    format!(
        "pbkdf2-sha256${ITERATIONS}${}${}",
        B64.encode(salt),
        B64.encode(out)
    )
}

/// Whether `password` matches `stored` (in constant time).
pub fn verify(password: &str, stored: &str) -> bool {
    let parts: Vec<&str> = stored.split('$').collect();
    let [scheme, iters, salt, expected] = parts.as_slice() else {
        return false;
    };
    let (Some(iters), Ok(salt), Ok(expected)) = (
        iters.parse::<u32>().ok().and_then(NonZeroU32::new),
        B64.decode(salt),
        B64.decode(expected),
    ) else {
        return false;
    };
    *scheme == "pbkdf2-sha256"
        && pbkdf2::verify(
            pbkdf2::PBKDF2_HMAC_SHA256,
            iters,
            &salt,
            password.as_bytes(),
            &expected,
        )
        .is_ok()
}

/// A random password for bootstrap accounts: 24 URL-safe characters.
pub fn generate() -> String {
    let mut bytes = [0u8; 18];
    SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system RNG works");
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let h = hash("s3cret");
        assert!(verify("s3cret", &h));
        assert!(!verify("s3cret!", &h));
        assert!(!verify("s3cret", "garbage"));
    }
}
