//! Random tokens, their hashes, PKCE, and the sealing of what is stored encrypted.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
// XChaCha20-Poly1305 from RustCrypto (`chacha20poly1305`, audited by NCC Group, pure Rust,
// no C toolchain): an AEAD whose 192-bit nonce may be drawn at random for every seal
// without any counter to keep across replicas or restarts (AES-GCM's 96-bit nonce makes
// random nonces risky over many writes under one key), and constant-time in software.
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

/// `n` random bytes from the operating system, URL-safe base64 without padding.
pub fn random_token(bytes: usize) -> Result<String, getrandom::Error> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// The key a code or token is stored under: its SHA-256 (hex), so that the store never
/// holds one that could be presented.
pub fn hash(secret: &str) -> String {
    Sha256::digest(secret.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// PKCE S256: `BASE64URL(SHA256(verifier))`.
pub fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// A PKCE code challenge or verifier: 43 to 128 unreserved characters (RFC 7636 §4.1).
pub fn valid_pkce(value: &str) -> bool {
    (43..=128).contains(&value.len())
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// The key that seals what the store keeps encrypted (`CODER_MCP_OAUTH_KEY`).
pub struct SealKey(XChaCha20Poly1305);

impl SealKey {
    /// From 32 bytes in base64 (standard or URL-safe, padded or not).
    pub fn from_base64(text: &str) -> Result<SealKey, String> {
        let text = text.trim();
        let bytes = STANDARD
            .decode(text)
            .or_else(|_| URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')))
            .map_err(|_| "is not base64 (make one with `openssl rand -base64 32`)".to_owned())?;
        if bytes.len() != 32 {
            return Err(format!(
                "must be 32 bytes, base64-encoded, not {} (make one with `openssl rand -base64 32`)",
                bytes.len()
            ));
        }
        XChaCha20Poly1305::new_from_slice(&bytes)
            .map(SealKey)
            .map_err(|_| "is not a valid key".to_owned())
    }

    /// Encrypts `plain`, bound to `context` (the row it is stored in: a sealed value
    /// moved to another row does not open). Base64 of nonce ‖ ciphertext.
    pub fn seal(&self, context: &str, plain: &[u8]) -> Result<String, String> {
        let mut nonce = [0u8; 24];
        getrandom::fill(&mut nonce).map_err(|e| e.to_string())?;
        let sealed = self
            .0
            .encrypt(
                XNonce::from_slice(&nonce),
                Payload {
                    msg: plain,
                    aad: context.as_bytes(),
                },
            )
            .map_err(|_| "encryption failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(STANDARD.encode(out))
    }

    /// Decrypts what [`SealKey::seal`] made for `context`; `None` if it was made with
    /// another key or context, or altered.
    pub fn open(&self, context: &str, sealed: &str) -> Option<Vec<u8>> {
        let bytes = STANDARD.decode(sealed).ok()?;
        if bytes.len() < 24 {
            return None;
        }
        let (nonce, ciphertext) = bytes.split_at(24);
        self.0
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: context.as_bytes(),
                },
            )
            .ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_their_key_and_context() {
        let key = SealKey::from_base64(&STANDARD.encode([7u8; 32])).unwrap();
        let other = SealKey::from_base64(&URL_SAFE_NO_PAD.encode([8u8; 32])).unwrap();
        let sealed = key.seal("grant:1", b"secret").unwrap();
        assert!(!sealed.contains("secret"));
        assert_eq!(key.open("grant:1", &sealed).unwrap(), b"secret");
        assert!(key.open("grant:2", &sealed).is_none());
        assert!(other.open("grant:1", &sealed).is_none());
        assert_ne!(
            sealed,
            key.seal("grant:1", b"secret").unwrap(),
            "fresh nonce"
        );
        assert!(SealKey::from_base64(&STANDARD.encode([1u8; 16])).is_err());
        assert!(SealKey::from_base64("not base64!").is_err());
    }

    #[test]
    fn pkce_s256_is_base64url_of_sha256() {
        assert_eq!(
            s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r7wW1gFWFOEjXk"),
            "bwWFMyPfdG9qreDhH2lmftFx_dFeLDalzcT1gb_j68g",
            "as Python's hashlib and base64.urlsafe_b64encode compute it"
        );
        assert!(valid_pkce("E9Melhoa2OwvFrEjTkncnA1rFCvTlQdpNF9ZKIwDjlM"));
        assert!(!valid_pkce("short"));
        assert!(!valid_pkce(&"a+".repeat(30)));
        assert_ne!(random_token(32).unwrap(), random_token(32).unwrap());
        assert_eq!(hash("abc").len(), 64);
    }
}
