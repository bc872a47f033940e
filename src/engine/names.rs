//! Workspace names, following Coder's `codersdk.NameValid` / `UsernameFrom` and the
//! name generation of Coder's own `create_workspace` tool.

use std::sync::LazyLock;

use regex::Regex;

/// Coder's limit on workspace names, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Room left for `-` and four hex characters.
const MAX_BASE_LEN: usize = MAX_NAME_LEN - 5;

static VALID_NAME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$").expect("valid regex"));
static INVALID_CHARS: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"[^a-zA-Z0-9-]+").expect("valid regex"));
static HYPHEN_RUNS: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"-{2,}").expect("valid regex"));

/// Why Coder would refuse a name (`codersdk.NameValid`), or `None` when it is fine.
pub fn name_problem(name: &str) -> Option<String> {
    if name.len() > MAX_NAME_LEN {
        return Some(format!("must be <= {MAX_NAME_LEN} characters"));
    }
    if name.is_empty() {
        return Some("must be >= 1 character".into());
    }
    if name == "new" || name == "create" {
        return Some(format!("cannot use {name:?} as a name"));
    }
    if !VALID_NAME.is_match(name) {
        return Some("must be alphanumeric with hyphens".into());
    }
    None
}

/// A name Coder accepts: `name` itself when it is valid, otherwise one generated from it.
pub fn resolve_name(requested: Option<&str>, template_name: &str) -> String {
    match requested.map(str::trim).filter(|n| !n.is_empty()) {
        Some(name) if name_problem(name).is_none() => name.to_owned(),
        Some(name) => generate_name(name),
        None => generate_name(template_name),
    }
}

/// `<base>-<4 hex>`: base derived from `seed` like Coder's `UsernameFrom(lower(seed))`,
/// cut to leave room for the suffix, so the whole name stays within 32 characters.
pub fn generate_name(seed: &str) -> String {
    let mut base = sanitize(&seed.trim().to_lowercase());
    if base.len() > MAX_BASE_LEN {
        base.truncate(MAX_BASE_LEN);
        base = base.trim_end_matches('-').to_owned();
    }
    if base.is_empty() {
        base = "workspace".into();
    }
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..4];
    let name = format!("{base}-{suffix}");
    if name_problem(&name).is_none() {
        name
    } else {
        format!("workspace-{suffix}")
    }
}

/// `UsernameFrom` without its random fallback: keep the local part of an e-mail
/// address, drop every character outside `[a-zA-Z0-9-]`, and (unlike Coder, which
/// falls back to a random name here) also fold runs of hyphens and trim them.
fn sanitize(seed: &str) -> String {
    let local = seed.rsplit_once('@').map_or(seed, |(local, _)| local);
    let replaced = INVALID_CHARS.replace_all(local, "-");
    let folded = HYPHEN_RUNS.replace_all(&replaced, "-");
    folded.trim_matches('-').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validity_follows_codersdk() {
        assert!(name_problem("my-ws-1").is_none());
        assert!(name_problem("MyWs").is_none());
        assert!(name_problem("-x").is_some());
        assert!(name_problem("a--b").is_some());
        assert!(name_problem("new").is_some());
        assert!(name_problem("a_b").is_some());
        assert!(name_problem(&"a".repeat(33)).is_some());
        assert!(name_problem(&"a".repeat(32)).is_none());
    }

    #[test]
    fn generated_names_are_valid_and_bounded() {
        for seed in [
            "Docker Containers",
            "",
            "___",
            "a-very-long-template-name-that-goes-on-and-on",
            "Ünïcödé 🚀 stuff",
            "new",
            "user@example.com",
        ] {
            let name = generate_name(seed);
            assert!(name_problem(&name).is_none(), "{seed:?} -> {name:?}");
            assert!(name.len() <= MAX_NAME_LEN);
        }
        assert!(generate_name("Docker Containers").starts_with("docker-containers-"));
        assert!(generate_name("").starts_with("workspace-"));
    }

    #[test]
    fn resolve_keeps_valid_names_and_repairs_invalid_ones() {
        assert_eq!(resolve_name(Some("  dev-box "), "docker"), "dev-box");
        let repaired = resolve_name(Some("My Dev Box!"), "docker");
        assert!(repaired.starts_with("my-dev-box-"), "{repaired}");
        assert!(resolve_name(None, "docker").starts_with("docker-"));
        assert!(resolve_name(Some("   "), "docker").starts_with("docker-"));
    }
}
