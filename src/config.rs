//! Where Coder is and who we are there: the flags and environment, else what the `coder`
//! CLI stored at `coder login`.

use std::path::{Path, PathBuf};

use crate::coder::SessionToken;

/// A Coder URL and token, and where each came from (for error messages).
#[derive(Debug)]
pub struct Credentials {
    pub url: String,
    pub token: SessionToken,
    pub url_source: String,
    pub token_source: String,
}

/// What `coder login` stored: each file read once.
struct CoderLogin {
    dir: Option<PathBuf>,
    url: Option<(String, String)>,
    session: Option<(String, String)>,
}

impl CoderLogin {
    /// Reads the `url` and `session` files of the `coder` CLI's config directory.
    fn read() -> CoderLogin {
        let dir = coder_config_dir();
        let file = |name: &str| -> Option<(String, String)> {
            let path = dir.as_ref()?.join(name);
            let text = std::fs::read_to_string(&path).ok()?;
            let text = text.trim().to_owned();
            (!text.is_empty()).then(|| (text, path.display().to_string()))
        };
        CoderLogin {
            url: file("url"),
            session: file("session"),
            dir,
        }
    }

    fn describe(&self, file: &str) -> String {
        describe_dir(self.dir.as_deref(), file)
    }
}

/// The `coder` CLI's config directory: `$CODER_CONFIG_DIR`, else `<OS config dir>/coderv2`.
pub fn coder_config_dir() -> Option<PathBuf> {
    match std::env::var_os("CODER_CONFIG_DIR") {
        Some(dir) if !dir.is_empty() => Some(PathBuf::from(dir)),
        _ => dirs::config_dir().map(|d| d.join("coderv2")),
    }
}

/// The Coder URL from --coder-url/CODER_URL, else `coder login`'s `url` file, and where
/// it came from.
pub fn resolve_url(url: Option<&str>) -> Result<(String, String), String> {
    resolve_url_with(url, &CoderLogin::read())
}

fn resolve_url_with(url: Option<&str>, login: &CoderLogin) -> Result<(String, String), String> {
    if let Some(url) = url.map(str::trim).filter(|s| !s.is_empty()) {
        return Ok((url.to_owned(), "--coder-url/CODER_URL".to_owned()));
    }
    login.url.clone().ok_or_else(|| {
        format!(
            "no Coder URL: pass --coder-url or set CODER_URL (or run `coder login <url>`, which stores it in {})",
            login.describe("url")
        )
    })
}

/// Resolves the URL and token from flags/environment, falling back to `coder login`'s
/// files.
pub fn resolve_credentials(
    url: Option<&str>,
    token: Option<&SessionToken>,
) -> Result<Credentials, String> {
    let login = CoderLogin::read();
    let (url, url_source) = resolve_url_with(url, &login)?;
    let (token, token_source) = match token.filter(|t| !t.is_empty()) {
        Some(token) => (token.clone(), "--token/CODER_SESSION_TOKEN".to_owned()),
        // `coder login` stores the token of the deployment in its `url` file: never send it
        // to another deployment named by --coder-url/CODER_URL.
        None => match (&login.session, &login.url) {
            (Some((token, source)), Some((login_url, _))) if same_deployment(&url, login_url) => {
                (SessionToken::new(token), source.clone())
            }
            (Some(_), login_url) => {
                let url = without_credentials(&url);
                return Err(format!(
                    "no Coder session token for {url}: set CODER_SESSION_TOKEN (create a token with `coder tokens create`). The token `coder login` stored in {} belongs to {}, so it is not sent to {url}",
                    login.describe("session"),
                    login_url.as_ref().map_or_else(
                        || "an unrecorded deployment".to_owned(),
                        |(u, _)| format!("another deployment ({u})")
                    ),
                ));
            }
            (None, _) => {
                return Err(format!(
                    "no Coder session token: set CODER_SESSION_TOKEN (create a token with `coder tokens create`), or run `coder login` (which stores it in {}; on macOS and Windows it may use the OS keyring instead, then set CODER_SESSION_TOKEN)",
                    login.describe("session")
                ));
            }
        },
    };
    Ok(Credentials {
        url,
        token,
        url_source,
        token_source,
    })
}

/// `url` as it may be shown: without a user name or password (refused later anyway).
fn without_credentials(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Whether `url` names the deployment `coder login` recorded (trailing slashes and case of
/// scheme and host aside).
fn same_deployment(url: &str, login_url: &str) -> bool {
    let canonical = |u: &str| {
        reqwest::Url::parse(u.trim().trim_end_matches('/'))
            .map(|u| u.to_string().trim_end_matches('/').to_owned())
            .ok()
    };
    canonical(url).is_some() && canonical(url) == canonical(login_url)
}

fn describe_dir(dir: Option<&Path>, file: &str) -> String {
    dir.map_or_else(
        || format!("the coder CLI's config directory ({file})"),
        |d| d.join(file).display().to_string(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_deployment_ignores_case_and_trailing_slashes() {
        assert!(same_deployment(
            "https://Coder.Example.com/",
            "https://coder.example.com"
        ));
        assert!(!same_deployment(
            "https://coder.example.com",
            "https://other.example.com"
        ));
        assert!(!same_deployment("not a url", "not a url"));
    }
}
