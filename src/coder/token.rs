//! The Coder session token, redacted at the type level.

use std::fmt;

/// A Coder session token. Its `Debug` and `Display` never print the secret, so a
/// token cannot leak through a log line, an error message or a panic; the only
/// way to read it is [`SessionToken::expose`], used where it goes on the wire.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct SessionToken(String);

impl SessionToken {
    pub fn new(token: impl Into<String>) -> Self {
        Self(token.into().trim().to_owned())
    }

    /// The secret itself, for the `Coder-Session-Token` header only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
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
