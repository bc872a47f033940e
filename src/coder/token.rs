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

/// Finds the token to use after Coder refused `used` (see [`LiveToken`]).
pub type Renew = Box<
    dyn Fn(SessionToken) -> futures::future::BoxFuture<'static, Option<SessionToken>> + Send + Sync,
>;

/// A sign-in's Coder token that changes while calls use it: an OAuth grant's, which is
/// refreshed (and Coder deletes the one before) while a build is being waited on, here or
/// on another replica. Calls holding it send its current value with every request, and
/// a request Coder refuses (401) asks `renew` for a newer one and is sent once more.
pub struct LiveToken {
    current: parking_lot::RwLock<SessionToken>,
    renew: Renew,
}

impl LiveToken {
    pub fn new(token: SessionToken, renew: Renew) -> LiveToken {
        LiveToken {
            current: parking_lot::RwLock::new(token),
            renew,
        }
    }

    pub fn current(&self) -> SessionToken {
        self.current.read().clone()
    }

    pub fn set(&self, token: SessionToken) {
        *self.current.write() = token;
    }

    /// Coder refused `used`: the token to send instead, if there is another.
    pub async fn renewed(&self, used: &SessionToken) -> Option<SessionToken> {
        let current = self.current();
        if current != *used {
            return Some(current);
        }
        let newer = (self.renew)(used.clone()).await?;
        self.set(newer.clone());
        (newer != *used).then_some(newer)
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
