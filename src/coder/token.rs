//! The Coder session token, redacted at the type level.

use std::fmt;
use std::hash::{Hash, Hasher};

use secrecy::{ExposeSecret, SecretString};

/// A Coder session token, held in `secrecy`'s string (wiped from memory when dropped,
/// never printed by `Debug`). Its `Display` never prints it either, so a token cannot
/// leak through a log line, an error message or a panic; the only way to read it is
/// [`SessionToken::expose`], used where it goes on the wire. It is comparable and
/// hashable, because sessions are bound to the token that opened them.
#[derive(Clone)]
pub struct SessionToken(SecretString);

impl SessionToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(SecretString::from(token.into().trim().to_owned()))
    }

    /// The secret itself, for the `Coder-Session-Token` header only.
    pub fn expose(&self) -> &str {
        self.0.expose_secret()
    }

    pub fn is_empty(&self) -> bool {
        self.expose().is_empty()
    }
}

impl PartialEq for SessionToken {
    fn eq(&self, other: &Self) -> bool {
        self.expose() == other.expose()
    }
}

impl Eq for SessionToken {}

impl Hash for SessionToken {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.expose().hash(state);
    }
}

impl fmt::Debug for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionToken(<redacted>)")
    }
}

impl fmt::Display for SessionToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_the_secret() {
        let token = SessionToken::new("  s3cr3t-value ");
        assert_eq!(token.expose(), "s3cr3t-value");
        assert!(!format!("{token:?} {token}").contains("s3cr3t"));
    }
}
