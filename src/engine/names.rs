//! Workspace names, following Coder's `codersdk.NameValid` / `UsernameFrom` and the
//! name generation of Coder's own `create_workspace` tool.

/// Coder's limit on workspace names, in bytes.
pub const MAX_NAME_LEN: usize = 32;
/// Room left for `-` and four hex characters.
const MAX_BASE_LEN: usize = MAX_NAME_LEN - 5;

/// Coder's `UsernameValidRegex`, `^[a-zA-Z0-9]+(?:-[a-zA-Z0-9]+)*$`: ASCII letters and
/// digits in runs joined by single hyphens.
fn valid_shape(name: &str) -> bool {
    name.split('-')
        .all(|run| !run.is_empty() && run.bytes().all(|b| b.is_ascii_alphanumeric()))
}

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
    if !valid_shape(name) {
        return Some("must be alphanumeric with hyphens".into());
    }
    None
}

/// The workspace a requested name stands for: the name itself when Coder accepts it,
/// otherwise a valid name derived from it *deterministically* (`My Dev Box!` →
/// `my-dev-box-` + 4 hex characters of its hash), so the same request finds the same
/// workspace from any session, process or replica. `None` for a blank name.
pub fn canonical_name(requested: &str) -> Option<String> {
    let requested = requested.trim();
    if requested.is_empty() {
        return None;
    }
    if name_problem(requested).is_none() {
        return Some(requested.to_owned());
    }
    Some(with_suffix(requested, &hex_of(requested.as_bytes())))
}

/// A fresh name for a workspace of a template: `<template>-<4 random hex>`.
pub fn generate_name(seed: &str) -> String {
    with_suffix(seed, &uuid::Uuid::new_v4().simple().to_string()[..4])
}

/// The name of the workspace that replaces `replaced` while that one still holds the
/// name `base`: `<base>-<4 hex of the replaced workspace's id>`. Deterministic, so two
/// processes replacing the same workspace at once pick the same name and Coder's name
/// uniqueness lets only one of them create it.
pub fn replacement_name(base: &str, replaced: uuid::Uuid) -> String {
    with_suffix(base, &hex_of(replaced.as_bytes()))
}

/// Four hex characters of a stable hash of `bytes`.
fn hex_of(bytes: &[u8]) -> String {
    let hash = uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, bytes);
    hash.simple().to_string()[..4].to_owned()
}

/// `<base>-<suffix>`: base derived from `seed` like Coder's `UsernameFrom(lower(seed))`,
/// cut to leave room for the suffix, so the whole name stays within 32 characters.
fn with_suffix(seed: &str, suffix: &str) -> String {
    let mut base = sanitize(&seed.trim().to_lowercase());
    if base.len() > MAX_BASE_LEN {
        base.truncate(MAX_BASE_LEN);
        base = base.trim_end_matches('-').to_owned();
    }
    if base.is_empty() {
        base = "workspace".into();
    }
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
    let mut name = String::with_capacity(local.len());
    for c in local.chars() {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if !(c == '-' && name.ends_with('-')) {
            name.push(c);
        }
    }
    name.trim_matches('-').to_owned()
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
    fn canonical_names_keep_valid_names_and_repair_invalid_ones_the_same_way_every_time() {
        assert_eq!(canonical_name("  dev-box ").as_deref(), Some("dev-box"));
        let repaired = canonical_name("My Dev Box!").unwrap();
        assert!(repaired.starts_with("my-dev-box-"), "{repaired}");
        assert!(name_problem(&repaired).is_none());
        assert_eq!(
            canonical_name("My Dev Box!").unwrap(),
            repaired,
            "deterministic"
        );
        assert_ne!(canonical_name("My Dev Box?").unwrap(), repaired);
        assert_eq!(canonical_name("   "), None);
        let long = canonical_name(&"x".repeat(40)).unwrap();
        assert!(
            long.len() <= MAX_NAME_LEN && name_problem(&long).is_none(),
            "{long}"
        );
    }

    #[test]
    fn replacement_names_are_derived_from_the_replaced_workspace() {
        let a = uuid::Uuid::new_v4();
        let b = uuid::Uuid::new_v4();
        let name = replacement_name("dev-1", a);
        assert!(
            name.starts_with("dev-1-") && name.len() == "dev-1-".len() + 4,
            "{name}"
        );
        assert_eq!(replacement_name("dev-1", a), name);
        assert_ne!(replacement_name("dev-1", b), name);
        let long = replacement_name(&"d".repeat(32), a);
        assert!(name_problem(&long).is_none(), "{long}");
    }
}
