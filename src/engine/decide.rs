//! The idempotency decision: a pure function of (the task's workspace as Coder reports
//! it, the request, the key's history, the time) → what to do. The effects around it
//! (Coder calls, store writes, waiting) live in [`super::create`].
//!
//! The task's workspace is found by the requested name first (a name that names one of
//! the caller's workspaces means *that* workspace, from any session, process or
//! replica; when the store says the name now stands for a replacement, the key's
//! history decides between it and a workspace Coder has under the name:
//! [`stands_for`]), then by the conversation's key (chat, session, stdio process):
//!
//! The table, which the README shows as it is (a test keeps them equal):
//!
//! | the task's workspace | what the call does |
//! |---|---|
//! | none | creates one, under the requested name or a generated one |
//! | only an intent (a create was about to be sent), and Coder has no workspace of its name | creates it, under the intended name |
//! | deleted | creates a new one, under the requested name, else the deleted one's (now free) name |
//! | found by name, made from another template | tool error naming that template and suggesting another name |
//! | its build is pending or running | waits for it → `created: false, status: "already_exists"` |
//! | running (its agent connecting, or away for less than `--agent-timeout`) | returns it once the agent and its scripts are ready → `already_exists` |
//! | stopped (e.g. by autostop), stopping, or its stop failed | starts it (`transition: start`) and waits → `already_exists` |
//! | its build failed or was canceled, it is being deleted (or its deletion failed), it is dormant, or its agent has been gone for longer than `--agent-timeout` | creates a new one (see below), and the `message` says why |
//! | the conversation's, made from another template | returns it, and the `message` says so |
//! | the conversation's, while the requested `name` names nothing | returns it, and the `message` says so; the name stays free for another conversation |
//!
//! A replacement takes the requested name when that is free. When the unusable
//! workspace still holds it (Coder names are unique per owner among workspaces not yet
//! deleted), the replacement is named after the replaced workspace's id
//! (`dev-1` → `dev-1-3f2a`), so that two processes replacing it at once choose the same
//! name and Coder's uniqueness lets only one create it. Without a requested name, a new
//! name is generated.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::coder::types::{
    ProvisionerJobStatus, Workspace, WorkspaceAgentStatus, WorkspaceTransition,
};

/// How the task's workspace was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// By the requested workspace name (or what the store says that name stands for).
    Name,
    /// By the conversation's key (chat, session, stdio process).
    Key,
}

/// The task's workspace, as Coder reports it now.
#[derive(Debug, Clone)]
pub enum Target {
    /// Nothing is recorded for the keys, and no workspace has the requested name.
    Nothing,
    /// A create under `name` was about to be sent (the intent was recorded) and Coder
    /// has no workspace of that name: the create never went through.
    Intent { name: String },
    /// The key's workspace was deleted.
    Gone { name: String },
    /// A workspace.
    Found { workspace: Box<Workspace>, via: Via },
}

/// What the call asks for, and when.
#[derive(Debug, Clone, Copy)]
pub struct Ask<'a> {
    pub template_id: Uuid,
    /// The requested template's name, for messages.
    pub template_name: &'a str,
    /// The requested name, canonical (see [`super::names::canonical_name`]).
    pub name: Option<&'a str>,
    pub now: DateTime<Utc>,
    /// How long an agent may stay away before its workspace counts as gone.
    pub agent_timeout: std::time::Duration,
}

/// What to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a workspace.
    Create {
        name: NewName,
        /// The unusable workspace it replaces, if any.
        replaces: Option<Replacing>,
    },
    /// Use the found workspace: wait for it, start it or return it.
    Resume {
        state: Found,
        /// Why the answer is this workspace rather than what was asked, if it is not.
        note: Option<ResumeNote>,
    },
    /// A tool error: the request cannot mean the found workspace.
    Refuse(String),
}

/// The state of a workspace that is used as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Its start build is pending or running.
    Building,
    /// It is stopping, stopped, or its stop failed: it is started (again).
    Stopped,
    /// It runs; its agent may still be connecting or running its startup scripts.
    Running,
}

/// Why a resumed workspace is not exactly what the call asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumeNote {
    /// The conversation's workspace, made from another template than requested.
    OtherTemplate,
    /// The conversation's workspace, while the requested name names nothing.
    NameIsFree,
}

/// The name a new workspace is created under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewName {
    /// This very name (requested, intended earlier, or freed by a deletion).
    Exactly(String),
    /// One generated from the template's name.
    Generated,
}

/// An unusable workspace being replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replacing {
    pub id: Option<Uuid>,
    pub name: String,
    pub why: String,
    /// It still exists, so it still holds its name.
    pub holds_name: bool,
}

/// Decides what a call does with its task's workspace.
pub fn decide(target: &Target, ask: Ask<'_>) -> Action {
    let requested = || ask.name.map(str::to_owned);
    match target {
        Target::Nothing => Action::Create {
            name: requested().map_or(NewName::Generated, NewName::Exactly),
            replaces: None,
        },
        Target::Intent { name } => Action::Create {
            name: NewName::Exactly(name.clone()),
            replaces: None,
        },
        Target::Gone { name } => Action::Create {
            name: NewName::Exactly(requested().unwrap_or_else(|| name.clone())),
            replaces: Some(Replacing {
                id: None,
                name: name.clone(),
                why: "it was deleted".into(),
                holds_name: false,
            }),
        },
        Target::Found { workspace: ws, via } => {
            if *via == Via::Name && ws.template_id != ask.template_id {
                return Action::Refuse(other_template(ws, ask));
            }
            if let Some(why) = unusable(ws, ask.now, ask.agent_timeout) {
                let build = &ws.latest_build;
                let holds_name = !(build.transition == WorkspaceTransition::Delete
                    && build.job.status == ProvisionerJobStatus::Succeeded);
                let name = match ask.name {
                    // Found by the conversation's key: nothing has the requested name.
                    Some(name) if *via == Via::Key => NewName::Exactly(name.to_owned()),
                    Some(name) if same_name(&ws.name, name) && !holds_name => {
                        NewName::Exactly(name.to_owned())
                    }
                    Some(name) => NewName::Exactly(super::names::replacement_name(name, ws.id)),
                    None => NewName::Generated,
                };
                return Action::Create {
                    name,
                    replaces: Some(Replacing {
                        id: Some(ws.id),
                        name: ws.name.clone(),
                        why,
                        holds_name,
                    }),
                };
            }
            let state = found_state(ws);
            let note = match via {
                Via::Key if ws.template_id != ask.template_id => Some(ResumeNote::OtherTemplate),
                Via::Key if ask.name.is_some() => Some(ResumeNote::NameIsFree),
                _ => None,
            };
            Action::Resume { state, note }
        }
    }
}

/// How a usable workspace stands.
pub fn found_state(ws: &Workspace) -> Found {
    let build = &ws.latest_build;
    match build.transition {
        WorkspaceTransition::Stop => Found::Stopped,
        _ if !build.job.status.is_terminal() => Found::Building,
        _ => Found::Running,
    }
}

/// Why a workspace cannot be used (a new one replaces it), or `None` when it can.
pub fn unusable(
    ws: &Workspace,
    now: DateTime<Utc>,
    agent_timeout: std::time::Duration,
) -> Option<String> {
    let build = &ws.latest_build;
    if build.transition == WorkspaceTransition::Delete {
        return Some(match build.job.status {
            ProvisionerJobStatus::Succeeded => "it was deleted".into(),
            ProvisionerJobStatus::Failed | ProvisionerJobStatus::Canceled => {
                format!("its deletion did not finish: {}", job_error(ws))
            }
            _ => "it is being deleted".into(),
        });
    }
    if ws.dormant_at.is_some() {
        return Some(
            "it is dormant (Coder stopped it after a long time unused; it can be activated again in the Coder dashboard)"
                .into(),
        );
    }
    // A failed stop leaves a workspace that still exists and can be started again.
    if build.transition == WorkspaceTransition::Start {
        match build.job.status {
            ProvisionerJobStatus::Failed => {
                return Some(format!("its last build failed: {}", job_error(ws)));
            }
            ProvisionerJobStatus::Canceled => {
                return Some("its last build was canceled".into());
            }
            _ => {}
        }
    }
    // An agent that is away for a moment (a restart, a network blip) comes back, and a
    // wait goes on through it: only one gone for longer than the agent timeout counts.
    if build.transition == WorkspaceTransition::Start
        && build.job.status == ProvisionerJobStatus::Succeeded
        && let Some(agent) = build.first_agent()
        && agent.status == WorkspaceAgentStatus::Disconnected
    {
        let gone_since = agent.last_connected_at.or(agent.disconnected_at);
        let away = gone_since.map(|at| (now - at).to_std().unwrap_or_default());
        if away.is_none_or(|away| away > agent_timeout) {
            return Some(format!("its agent is {}", agent.status));
        }
    }
    None
}

/// Which workspace the requested name stands for: the store says `recorded`, which was
/// made for the name in place of `replaced` (the key's history); Coder has `live` under
/// the name itself. The replacement stands while the name is held by the workspace it
/// replaced; a different workspace that now has the name (made in the dashboard, say)
/// is what the name means.
pub fn stands_for<'a>(
    name: &str,
    recorded: &'a Workspace,
    replaced: Option<Uuid>,
    live: Option<&'a Workspace>,
) -> &'a Workspace {
    match live {
        Some(live) if same_name(&recorded.name, name) => {
            // The record is the workspace of that name (unless Coder's differs).
            if live.id == recorded.id {
                recorded
            } else {
                live
            }
        }
        Some(live) if Some(live.id) != replaced && live.id != recorded.id => live,
        _ => recorded,
    }
}

/// Coder's workspace names are unique regardless of case (`LOWER(name)`).
pub fn same_name(a: &str, b: &str) -> bool {
    a.eq_ignore_ascii_case(b)
}

/// Coder's job error, or a generic one when Coder gave none.
pub fn job_error(ws: &Workspace) -> String {
    let error = ws.latest_build.job.error.trim();
    if error.is_empty() {
        "build failed".into()
    } else {
        error.to_owned()
    }
}

/// The refusal when a requested name belongs to a workspace of another template.
fn other_template(ws: &Workspace, ask: Ask<'_>) -> String {
    let template = if ws.template_display_name.is_empty() {
        &ws.template_name
    } else {
        &ws.template_display_name
    };
    let name = ask.name.unwrap_or(&ws.name);
    format!(
        "workspace {:?} already exists and was made from template {template:?} ({}), not from template {:?} ({}). \
To use it, call create_workspace with template_id {:?} and name {:?}; for a new workspace from template {:?}, pass another name, e.g. {:?}.",
        ws.name,
        ws.template_id,
        ask.template_name,
        ask.template_id,
        ws.template_id.to_string(),
        ws.name,
        ask.template_name,
        suggest_other_name(name),
    )
}

/// `dev-1` → `dev-1-2` (a valid name, within Coder's 32 characters).
fn suggest_other_name(name: &str) -> String {
    let mut base = name.to_owned();
    base.truncate(super::names::MAX_NAME_LEN - 2);
    format!("{}-2", base.trim_end_matches('-'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const DOCKER: &str = "6f2f2b5e-9c3a-4c7e-8a53-0d8f6c1c2d3e";
    const K8S: &str = "0b1c2d3e-4f50-4a6b-8c7d-9e0f1a2b3c4d";
    const WS: &str = "11111111-2222-4333-8444-555555555555";
    const NOW: &str = "2026-12-02T12:00:00Z";

    /// A workspace called `name` from `template` whose latest build is
    /// `transition`/`job`, with an agent in `agent` (or none) last connected `away`
    /// seconds before [`NOW`].
    fn ws_away(
        name: &str,
        template: &str,
        transition: &str,
        job: &str,
        agent: Option<&str>,
        away: i64,
    ) -> Workspace {
        let last = NOW.parse::<DateTime<Utc>>().unwrap() - chrono::Duration::seconds(away);
        let resources = match agent {
            Some(status) => json!([{ "id": Uuid::new_v4(), "agents": [{
                "id": Uuid::new_v4(), "name": "main", "status": status, "lifecycle_state": "ready",
                "last_connected_at": last
            }]}]),
            None => json!([]),
        };
        serde_json::from_value(json!({
            "id": WS, "name": name, "owner_id": Uuid::nil(), "organization_id": Uuid::nil(),
            "template_id": template, "template_name": "kubernetes",
            "latest_build": {
                "id": Uuid::new_v4(), "workspace_id": WS, "transition": transition,
                "status": "running", "resources": resources,
                "job": { "id": Uuid::new_v4(), "status": job, "error": "terraform apply failed" }
            }
        }))
        .unwrap()
    }

    fn ws(
        name: &str,
        template: &str,
        transition: &str,
        job: &str,
        agent: Option<&str>,
    ) -> Workspace {
        // Gone for 10 minutes: longer than the 2-minute agent timeout.
        ws_away(name, template, transition, job, agent, 600)
    }

    fn dormant(mut ws: Workspace) -> Workspace {
        ws.dormant_at = Some(NOW.parse().unwrap());
        ws
    }

    fn found(ws: Workspace, via: Via) -> Target {
        Target::Found {
            workspace: Box::new(ws),
            via,
        }
    }

    fn ask(name: Option<&str>) -> Ask<'_> {
        Ask {
            template_id: DOCKER.parse().unwrap(),
            template_name: "docker",
            name,
            now: NOW.parse().unwrap(),
            agent_timeout: std::time::Duration::from_secs(120),
        }
    }

    fn create(name: NewName) -> Action {
        Action::Create {
            name,
            replaces: None,
        }
    }

    fn exactly(name: &str) -> NewName {
        NewName::Exactly(name.into())
    }

    fn resume(state: Found, note: Option<ResumeNote>) -> Action {
        Action::Resume { state, note }
    }

    fn replace(name: NewName, old: &str, why: &str, holds_name: bool) -> Action {
        Action::Create {
            name,
            replaces: Some(Replacing {
                id: Some(WS.parse().unwrap()),
                name: old.into(),
                why: why.into(),
                holds_name,
            }),
        }
    }

    /// The module's table, row by row.
    #[test]
    fn the_decision_table() {
        use Found::{Building, Running, Stopped};
        let derived = super::super::names::replacement_name("dev-1", WS.parse().unwrap());
        let failed = "its last build failed: terraform apply failed";
        let gone = |name: &str| Action::Create {
            name: exactly(name),
            replaces: Some(Replacing {
                id: None,
                name: "docker-3f2a".into(),
                why: "it was deleted".into(),
                holds_name: false,
            }),
        };
        #[rustfmt::skip]
        let rows: Vec<(&str, Target, Option<&str>, Action)> = vec![
            ("nothing, no name", Target::Nothing, None, create(NewName::Generated)),
            ("nothing, a name", Target::Nothing, Some("dev-1"), create(exactly("dev-1"))),
            ("an intent whose create never went through",
                Target::Intent { name: "docker-3f2a".into() }, None, create(exactly("docker-3f2a"))),
            ("an intent wins over a generated name",
                Target::Intent { name: "dev-1-3f2a".into() }, Some("dev-1"), create(exactly("dev-1-3f2a"))),
            ("deleted, no name: its freed name is reused",
                Target::Gone { name: "docker-3f2a".into() }, None, gone("docker-3f2a")),
            ("deleted, a name: the requested name",
                Target::Gone { name: "docker-3f2a".into() }, Some("dev-2"), gone("dev-2")),
            ("found by name, another template",
                found(ws("dev-1", K8S, "start", "succeeded", Some("connected")), Via::Name), Some("dev-1"),
                Action::Refuse(String::new())),
            ("found by name, another template, unusable: still refused",
                found(ws("dev-1", K8S, "start", "failed", None), Via::Name), Some("dev-1"),
                Action::Refuse(String::new())),
            ("found by key, another template: returned with a note",
                found(ws("dev-1", K8S, "start", "succeeded", Some("connected")), Via::Key), None,
                resume(Running, Some(ResumeNote::OtherTemplate))),
            ("found by key, another template, unusable: replaced",
                found(ws("dev-1", K8S, "start", "failed", None), Via::Key), None,
                replace(NewName::Generated, "dev-1", failed, true)),
            ("found by key while the requested name is free: the conversation's, with a note",
                found(ws("dev-1", DOCKER, "start", "succeeded", Some("connected")), Via::Key), Some("dev-9"),
                resume(Running, Some(ResumeNote::NameIsFree))),
            ("start build pending", found(ws("dev-1", DOCKER, "start", "pending", None), Via::Key), None,
                resume(Building, None)),
            ("start build running", found(ws("dev-1", DOCKER, "start", "running", None), Via::Name), Some("dev-1"),
                resume(Building, None)),
            ("start build canceling", found(ws("dev-1", DOCKER, "start", "canceling", None), Via::Name), Some("dev-1"),
                resume(Building, None)),
            ("start build in an unknown state", found(ws("dev-1", DOCKER, "start", "unknown", None), Via::Name), Some("dev-1"),
                resume(Building, None)),
            ("stop build pending", found(ws("dev-1", DOCKER, "stop", "pending", None), Via::Key), None,
                resume(Stopped, None)),
            ("stop build running", found(ws("dev-1", DOCKER, "stop", "running", None), Via::Key), None,
                resume(Stopped, None)),
            ("stopped", found(ws("dev-1", DOCKER, "stop", "succeeded", None), Via::Name), Some("dev-1"),
                resume(Stopped, None)),
            ("stop failed: started again, not replaced",
                found(ws("dev-1", DOCKER, "stop", "failed", None), Via::Name), Some("dev-1"), resume(Stopped, None)),
            ("stop canceled: started again", found(ws("dev-1", DOCKER, "stop", "canceled", None), Via::Key), None,
                resume(Stopped, None)),
            ("running, agent connecting", found(ws("dev-1", DOCKER, "start", "succeeded", Some("connecting")), Via::Key), None,
                resume(Running, None)),
            ("running, agent timed out connecting (it may still connect)",
                found(ws("dev-1", DOCKER, "start", "succeeded", Some("timeout")), Via::Key), None, resume(Running, None)),
            ("running, agent connected", found(ws("dev-1", DOCKER, "start", "succeeded", Some("connected")), Via::Name), Some("dev-1"),
                resume(Running, None)),
            ("running, no agent", found(ws("dev-1", DOCKER, "start", "succeeded", None), Via::Key), None,
                resume(Running, None)),
            ("agent disconnected a moment ago: waited for",
                found(ws_away("dev-1", DOCKER, "start", "succeeded", Some("disconnected"), 30), Via::Name), Some("dev-1"),
                resume(Running, None)),
            ("agent gone for longer than the agent timeout: replaced",
                found(ws("dev-1", DOCKER, "start", "succeeded", Some("disconnected")), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "dev-1", "its agent is disconnected", true)),
            ("failed, found by key, no name: a generated name",
                found(ws("dev-1", DOCKER, "start", "failed", None), Via::Key), None,
                replace(NewName::Generated, "dev-1", failed, true)),
            ("failed, found by key, a free requested name: that name",
                found(ws("dev-1", DOCKER, "start", "failed", None), Via::Key), Some("dev-9"),
                replace(exactly("dev-9"), "dev-1", failed, true)),
            ("failed, found by name, still holding it: a derived name",
                found(ws("dev-1", DOCKER, "start", "failed", None), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "dev-1", failed, true)),
            ("failed, the name asked in another case: the same workspace, a derived name",
                found(ws("Dev-1", DOCKER, "start", "failed", None), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "Dev-1", failed, true)),
            ("canceled", found(ws("dev-1", DOCKER, "start", "canceled", None), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "dev-1", "its last build was canceled", true)),
            ("dormant", found(dormant(ws("dev-1", DOCKER, "stop", "succeeded", None)), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "dev-1",
                    "it is dormant (Coder stopped it after a long time unused; it can be activated again in the Coder dashboard)", true)),
            ("being deleted: still holds its name",
                found(ws("dev-1", DOCKER, "delete", "running", None), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "dev-1", "it is being deleted", true)),
            ("deletion failed: still holds its name",
                found(ws("dev-1", DOCKER, "delete", "failed", None), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "dev-1", "its deletion did not finish: terraform apply failed", true)),
            ("deleted (delete build succeeded): the name is free",
                found(ws("dev-1", DOCKER, "delete", "succeeded", None), Via::Name), Some("dev-1"),
                replace(exactly("dev-1"), "dev-1", "it was deleted", false)),
            ("a replacement found through the name's record, unusable: derived from it",
                found(ws("dev-1-77aa", DOCKER, "start", "failed", None), Via::Name), Some("dev-1"),
                replace(exactly(&derived), "dev-1-77aa", failed, true)),
        ];
        for (row, target, name, expected) in rows {
            let action = decide(&target, ask(name));
            match (&action, &expected) {
                (Action::Refuse(_), Action::Refuse(_)) => {}
                _ => assert_eq!(action, expected, "row: {row}"),
            }
        }
    }

    #[test]
    fn a_refusal_names_the_template_and_suggests_another_name() {
        let target = found(ws("dev-1", K8S, "start", "succeeded", None), Via::Name);
        let Action::Refuse(text) = decide(&target, ask(Some("dev-1"))) else {
            panic!("expected a refusal");
        };
        assert!(text.contains("\"kubernetes\""), "{text}");
        assert!(text.contains(K8S) && text.contains(DOCKER), "{text}");
        assert!(text.contains("\"dev-1-2\""), "{text}");
    }

    /// What a name stands for when the store says a replacement and Coder has a
    /// workspace of that name.
    #[test]
    fn what_a_name_stands_for() {
        let with_id = |name: &str, id: &str| {
            let mut w = ws(name, DOCKER, "start", "succeeded", None);
            w.id = id.parse().unwrap();
            w
        };
        let original = with_id("dev-1", "00000000-0000-4000-8000-000000000001");
        let replacement = with_id("dev-1-3f2a", "00000000-0000-4000-8000-000000000002");
        let made_anew = with_id("dev-1", "00000000-0000-4000-8000-000000000003");
        #[rustfmt::skip]
        let rows = [
            ("nothing else has the name", &replacement, Some(original.id), None, &replacement),
            ("the replaced workspace still holds the name", &replacement, Some(original.id), Some(&original), &replacement),
            ("a new workspace of that name was made since", &replacement, Some(original.id), Some(&made_anew), &made_anew),
            ("the record is the workspace of that name", &original, None, Some(&original), &original),
            ("the record's workspace of that name, Coder's differs", &original, None, Some(&made_anew), &made_anew),
        ];
        for (row, recorded, replaced, live, expected) in rows {
            assert_eq!(
                stands_for("dev-1", recorded, replaced, live).id,
                expected.id,
                "{row}"
            );
        }
    }
}
