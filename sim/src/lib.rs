//! A simulated Coder deployment, served in-process over real HTTP.
//!
//! It drives the integration tests and the `demo` subcommand, so it answers the same
//! REST paths, status codes, JSON shapes and streams as `coderd` (see
//! `spec/coder-openapi-subset.json`), and tests can steer it deterministically:
//!
//! * every JSON body is a `coder_api` value, so client and simulator share one
//!   vocabulary (a unit test validates what the simulator sends against the spec);
//! * builds follow a per-template [`BuildPlan`] (queue time, build time, outcome, agent
//!   behaviour); a plan can *hold* a build until [`SimCoder::release_builds`];
//! * [`SimCoder::wait_until`] resolves as soon as a predicate over a [`SimView`] holds.
//!   All state sits behind one mutex and every change bumps a `tokio::sync::watch`
//!   counter, so waiting needs no polling and no sleeps;
//! * faults ([`Fault`]), dropped watch streams and missing watch endpoints can be
//!   injected to exercise the client's recovery paths.
//!
//! Users only see their own workspaces (everyone is a plain member; there is no
//! owner/admin role). Templates are visible to everyone.
//!
//! It is also Coder's OAuth2 provider (metadata at `/.well-known/…`, `/oauth2/authorize`,
//! `/oauth2/tokens`, `/oauth2/revoke`, `/oauth2/register`): apps come from
//! [`SimCoder::register_oauth_app`] or the API, consent is automatic for the user of
//! [`SimCoder::set_oauth_signed_in_user`], and the access tokens are API keys of that
//! user, refused with 403 when their audience (`resource`) is not the deployment URL.
//!
//! The watch streams never coalesce updates: every distinct rendering of a workspace
//! is recorded, and each stream sends all of them in order. `coderd` may coalesce,
//! but a test that asserts "saw `starting`, then `running`" must not depend on
//! scheduling luck.

mod faults;
mod lifecycle;
mod oauth;
mod render;
mod routes;
mod seed;
mod state;
mod streams;
mod validation;
mod view;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Utc;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use coder_api::{Preset, Template, User, Workspace, WorkspaceAgentStatus, WorkspaceTransition};

pub use faults::{Fault, RecordedRequest};
pub use lifecycle::{AgentPlan, BuildOutcome, BuildPlan};
pub use seed::{PresetSpec, TemplateSpec};
pub use state::PREBUILDS_USER_ID;
pub use view::SimView;

use state::State;

/// A running simulated Coder deployment. Cheap to clone; all clones share one server.
#[derive(Clone)]
pub struct SimCoder {
    inner: Arc<Inner>,
}

/// What the server task, the build tasks and the public handle share.
pub(crate) struct Inner {
    state: Mutex<State>,
    /// Bumped on every state change; waiters and streams subscribe to it.
    version: watch::Sender<u64>,
    addr: SocketAddr,
    /// Cancelled by [`SimCoder::shutdown`]; every task of the simulator ends with it.
    shutdown: CancellationToken,
    /// Cancelled (and replaced) by [`SimCoder::drop_watch_streams`].
    watch_kill: Mutex<CancellationToken>,
    server: Mutex<Option<JoinHandle<()>>>,
}

impl Inner {
    /// Reads the state. Never call it across an `.await`.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.lock())
    }

    /// Changes the state, records the new rendering of every workspace that changed
    /// (for the watch streams) and wakes every waiter.
    pub(crate) fn update<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let out = {
            let mut st = self.lock();
            let out = f(&mut st);
            st.record_snapshots();
            out
        };
        self.bump();
        out
    }

    /// Like [`Inner::update`] for changes that cannot alter any workspace (request log,
    /// stream counters), so no workspace needs re-rendering.
    pub(crate) fn update_quiet<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let out = f(&mut self.lock());
        self.bump();
        out
    }

    fn bump(&self) {
        // send_modify works without receivers, unlike send.
        self.version.send_modify(|v| *v += 1);
    }

    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }

    pub(crate) fn watch_kill_token(&self) -> CancellationToken {
        self.watch_kill
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(crate) fn shutdown_token(&self) -> &CancellationToken {
        &self.shutdown
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test must not poison the simulator for the tests' own teardown.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl SimCoder {
    /// The session token of the `demo` user created by [`SimCoder::start_demo`]
    /// (shaped like a real Coder token: 10 + 22 characters).
    pub const DEMO_TOKEN: &'static str = "simdemo000-SimCoderDemoToken00000";

    /// Binds `127.0.0.1:0` and serves in a spawned tokio task. The deployment is empty
    /// apart from one organization, `coder`.
    pub async fn start() -> anyhow::Result<SimCoder> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like [`SimCoder::start`] on a given address.
    pub async fn start_on(addr: SocketAddr) -> anyhow::Result<SimCoder> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let inner = Arc::new(Inner {
            state: Mutex::new(State::new()),
            version: watch::channel(0).0,
            addr,
            watch_kill: Mutex::new(shutdown.child_token()),
            shutdown,
            server: Mutex::new(None),
        });
        let app = routes::router(inner.clone());
        let stop = inner.shutdown.clone();
        let handle = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(err) = served {
                tracing::error!(%err, "simulated Coder server failed");
            }
        });
        *inner.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(handle);
        tracing::info!(url = %inner.url(), "simulated Coder deployment listening");
        Ok(SimCoder { inner })
    }

    /// A deployment seeded for the demo: user `demo` (token [`SimCoder::DEMO_TOKEN`]),
    /// templates `docker`, `kubernetes` and the deprecated `aws-linux`, and a
    /// realistic but short build plan (about 1 s queued, 5 s building, agent after
    /// 1 s, startup scripts 1 s).
    pub async fn start_demo() -> anyhow::Result<SimCoder> {
        Self::start_demo_on(SocketAddr::from(([127, 0, 0, 1], 0))).await
    }

    /// Like [`SimCoder::start_demo`] on a given address (the `sim` subcommand).
    pub async fn start_demo_on(addr: SocketAddr) -> anyhow::Result<SimCoder> {
        let sim = Self::start_on(addr).await?;
        seed::seed_demo(&sim);
        Ok(sim)
    }

    /// `http://127.0.0.1:PORT`, the deployment URL to give a client.
    pub fn url(&self) -> String {
        self.inner.url()
    }

    /// Adds a user (a member of the `coder` organization) whose session token is `token`.
    pub fn add_user(&self, username: &str, token: &str) -> User {
        self.inner
            .update_quiet(|st| st.add_user(username, token).clone())
    }

    /// The user named `username` (case-insensitive), if the deployment has one.
    pub fn user(&self, username: &str) -> Option<User> {
        self.inner
            .read(|st| st.resolve_user(username, Uuid::nil()).cloned())
    }

    /// Creates a template with an active version carrying `spec.parameters`. Start
    /// builds of it follow [`BuildPlan::default`] until [`SimCoder::set_build_plan`].
    pub fn add_template(&self, spec: TemplateSpec) -> Template {
        self.inner.update(|st| st.add_template(spec))
    }

    /// Gives the template's active version these presets (replacing any), and fills each
    /// preset's prebuild pool with `prebuilds` ready workspaces owned by Coder's
    /// `prebuilds` user (as the reconciliation loop would, at once). A create with the
    /// preset claims one of them (see [`SimCoder::set_claim_plan`]); a claimed one is not
    /// replaced, so a pool runs dry. Returns the presets as `GET
    /// /templateversions/{id}/presets` sends them.
    pub fn set_presets(&self, template_id: Uuid, presets: Vec<PresetSpec>) -> Vec<Preset> {
        self.inner.update(|st| st.set_presets(template_id, presets))
    }

    /// Adds one ready prebuilt workspace of `preset_id` to its pool (the reconciliation
    /// loop replacing a claimed one). Returns its id.
    pub fn add_prebuild(&self, template_id: Uuid, preset_id: Uuid) -> Option<Uuid> {
        self.inner
            .update(|st| st.add_ready_prebuild(template_id, preset_id))
    }

    /// Sets the plan of the start builds that follow a claim of the template's prebuilt
    /// workspaces ([`BuildPlan::claim`] by default: a few milliseconds).
    pub fn set_claim_plan(&self, template_id: Uuid, plan: BuildPlan) {
        self.inner.update_quiet(|st| {
            match st
                .templates
                .iter_mut()
                .find(|t| t.template.id == template_id)
            {
                Some(t) => t.claim_plan = plan,
                None => tracing::warn!(%template_id, "set_claim_plan: no such template"),
            }
        });
    }

    /// Sets the plan for *future* start builds of a template; running builds keep theirs.
    pub fn set_build_plan(&self, template_id: Uuid, plan: BuildPlan) {
        self.inner.update_quiet(|st| {
            match st
                .templates
                .iter_mut()
                .find(|t| t.template.id == template_id)
            {
                Some(t) => t.plan = plan,
                None => tracing::warn!(%template_id, "set_build_plan: no such template"),
            }
        });
    }

    /// Lets every build that exists now and whose plan holds it finish: builds already
    /// held continue at once; builds still queued or building will not stop at the hold
    /// point. Builds created later hold again.
    pub fn release_builds(&self) {
        self.inner.update(|st| {
            for ws in &mut st.workspaces {
                for b in &mut ws.builds {
                    if b.hold && !b.job.status.is_terminal() {
                        b.release_requested = true;
                    }
                }
            }
        });
    }

    /// Like an autostop: a `stop` build (reason `autostop`, initiated for the owner)
    /// that completes in about 20 ms. Does nothing (and logs a warning) if the workspace
    /// is unknown, deleted, or has a build in progress.
    pub fn stop_workspace(&self, workspace_id: Uuid) {
        self.system_build(workspace_id, WorkspaceTransition::Stop, "autostop");
    }

    /// A `delete` build that completes in about 20 ms; afterwards
    /// `GET /workspaces/{id}` answers 410 Gone unless `?include_deleted=true`.
    /// Same preconditions as [`SimCoder::stop_workspace`].
    pub fn delete_workspace(&self, workspace_id: Uuid) {
        self.system_build(workspace_id, WorkspaceTransition::Delete, "initiator");
    }

    fn system_build(&self, workspace_id: Uuid, transition: WorkspaceTransition, reason: &str) {
        let started = self.inner.update(|st| {
            let owner = st.workspace(workspace_id).map(|w| w.owner_id)?;
            match st.new_build(workspace_id, transition, owner, reason, Vec::new()) {
                Ok(b) => Some(b),
                Err(err) => {
                    tracing::warn!(%workspace_id, message = %err.body.message, "system build refused");
                    None
                }
            }
        });
        match started {
            Some(start) => lifecycle::spawn_build(self.inner.clone(), start),
            None => tracing::warn!(%workspace_id, %transition, "no system build started"),
        }
    }

    /// The latest build's first agent goes `disconnected` (its startup progress stops).
    pub fn disconnect_agent(&self, workspace_id: Uuid) {
        self.set_first_agent_status(workspace_id, WorkspaceAgentStatus::Disconnected);
    }

    /// The latest build's first agent went `disconnected` `ago` (its last heartbeat was
    /// then): an agent that is not coming back, for the tests of replacing its workspace.
    pub fn agent_gone_since(&self, workspace_id: Uuid, ago: Duration) {
        self.disconnect_agent(workspace_id);
        let then = Utc::now() - chrono::Duration::from_std(ago).unwrap_or_default();
        self.inner.update(|st| {
            let agent = st
                .workspace_mut(workspace_id)
                .and_then(|w| w.builds.last_mut())
                .and_then(|b| {
                    b.resources
                        .iter_mut()
                        .flat_map(|r| r.agents.iter_mut())
                        .next()
                });
            if let Some(agent) = agent {
                agent.last_connected_at = Some(then);
                agent.disconnected_at = Some(then);
            }
        });
    }

    /// The latest build's first agent is `connected` again (after
    /// [`SimCoder::disconnect_agent`] or if it never connected). Its lifecycle is unchanged.
    pub fn reconnect_agent(&self, workspace_id: Uuid) {
        self.set_first_agent_status(workspace_id, WorkspaceAgentStatus::Connected);
    }

    fn set_first_agent_status(&self, workspace_id: Uuid, status: WorkspaceAgentStatus) {
        self.inner.update(|st| {
            let Some(build) = st
                .workspace_mut(workspace_id)
                .and_then(|w| w.builds.last_mut())
            else {
                tracing::warn!(%workspace_id, "no such workspace");
                return;
            };
            let now = Utc::now();
            if status == WorkspaceAgentStatus::Disconnected {
                // A disconnected agent reports nothing more, so its scripts stall.
                build.agent_cancel.cancel();
            }
            match build
                .resources
                .iter_mut()
                .flat_map(|r| r.agents.iter_mut())
                .next()
            {
                Some(agent) => {
                    agent.status = status;
                    agent.updated_at = now;
                    match status {
                        WorkspaceAgentStatus::Disconnected => agent.disconnected_at = Some(now),
                        _ => {
                            agent.first_connected_at.get_or_insert(now);
                            agent.last_connected_at = Some(now);
                            agent.disconnected_at = None;
                        }
                    }
                }
                None => tracing::warn!(%workspace_id, "the latest build has no agent"),
            }
        });
    }

    /// The next `fault.times` requests matching `fault.method` and `fault.path_contains`
    /// get `fault.status` with a `codersdk.Response` body. Faults are checked in the
    /// order they were injected, before authentication.
    pub fn inject_fault(&self, fault: Fault) {
        self.inner.update_quiet(|st| st.faults.push(fault));
    }

    /// Forgets every injected fault that has not fired yet: Coder is healthy again.
    pub fn clear_faults(&self) {
        self.inner.update_quiet(|st| st.faults.clear());
    }

    /// Holds every later request matching `method` and `path_contains` before it is
    /// processed (recorded with status 0, see [`SimView::pending_requests`]) until
    /// [`SimCoder::release_requests`]: a Coder that is slow to answer.
    pub fn hold_requests(&self, method: http::Method, path_contains: impl Into<String>) {
        let path = path_contains.into();
        self.inner.update_quiet(|st| st.holds.push((method, path)));
    }

    /// Processes every later request matching `method` and `path_contains` but holds
    /// its answer (recorded with status 0 meanwhile) until [`SimCoder::release_requests`]:
    /// the request has taken effect, and its client is still waiting for the reply.
    pub fn hold_responses(&self, method: http::Method, path_contains: impl Into<String>) {
        let path = path_contains.into();
        self.inner
            .update_quiet(|st| st.response_holds.push((method, path)));
    }

    /// Holds every later create between coderd's check that the name is free and its
    /// insert, until [`SimCoder::release_requests`]: the window in which two creates of
    /// one name both pass the check, and the second insert fails on the unique index
    /// with a 500 (as coderd answers), not a 409. [`SimView::creates_past_name_check`]
    /// counts the creates waiting there.
    pub fn hold_creates_after_name_check(&self) {
        self.inner.update_quiet(|st| st.create_race = true);
    }

    /// Lets every held request and answer through and stops holding.
    pub fn release_requests(&self) {
        self.inner.update_quiet(|st| {
            st.holds.clear();
            st.response_holds.clear();
            st.create_race = false;
        });
    }

    /// Abruptly closes every open `watch-ws` and SSE `watch` connection: the TCP
    /// connection ends without a WebSocket close frame or SSE terminator.
    pub fn drop_watch_streams(&self) {
        let old = {
            let mut kill = self
                .inner
                .watch_kill
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            std::mem::replace(&mut *kill, self.inner.shutdown.child_token())
        };
        old.cancel();
    }

    /// When false, `GET /workspaces/{id}/watch-ws` (or `/watch`) answers
    /// 404 `{"message":"Route not found."}`, like an older Coder or a proxy that
    /// blocks it. Both are supported by default.
    pub fn set_watch_support(&self, websocket: bool, sse: bool) {
        self.inner.update_quiet(|st| {
            st.watch_ws_supported = websocket;
            st.watch_sse_supported = sse;
        });
    }

    // ----- the OAuth2 provider (`oauth` module docs; NOTES §6) -----

    /// Registers an OAuth2 app of Coder's provider (as `POST /oauth2-provider/apps`
    /// then `POST /apps/{id}/secrets` would) whose only redirect URI is `redirect_uri`.
    /// Returns its `(client_id, client_secret)`: the app's UUID and a
    /// `coder_<prefix>_<secret>` secret.
    pub fn register_oauth_app(&self, name: &str, redirect_uri: &str) -> (String, String) {
        self.inner.update_quiet(|st| {
            let app = st.oauth.register_app(name, redirect_uri, "");
            (app.id.to_string(), app.secrets[0].1.clone())
        })
    }

    /// The user whose browser session `/oauth2/authorize` sees: it consents at once for
    /// them and redirects with a code. A session token or `coder_session_token` cookie on
    /// the request takes precedence. Logs a warning if there is no such user.
    pub fn set_oauth_signed_in_user(&self, username: &str) {
        self.inner.update_quiet(|st| {
            let id = st.resolve_user(username, Uuid::nil()).map(|u| u.id);
            if id.is_none() {
                tracing::warn!(username, "set_oauth_signed_in_user: no such user");
            }
            st.oauth.signed_in = id;
        });
    }

    /// Nobody is signed in (the default): `/oauth2/authorize` without a session token
    /// answers 303 to `/login?message=…&redirect=<the authorize URL>`.
    pub fn sign_out_oauth_user(&self) {
        self.inner.update_quiet(|st| st.oauth.signed_in = None);
    }

    /// Turns RFC 7591 dynamic client registration on or off (off by default, as in
    /// Coder): while on, `POST /oauth2/register` registers clients and the
    /// authorization server metadata names its `registration_endpoint`.
    pub fn set_oauth_dcr(&self, enabled: bool) {
        self.inner.update_quiet(|st| st.oauth.dcr_enabled = enabled);
    }

    /// Coder's `oauth2` experiment (on by default here): while off, every OAuth2 route
    /// (the metadata documents, `/oauth2/*`, `/api/v2/oauth2-provider/*`) answers 403
    /// "OAuth2 Provider functionality requires enabling the 'oauth2' experiment.", as
    /// `httpmw.RequireExperiment` does.
    pub fn set_oauth_provider_enabled(&self, enabled: bool) {
        self.inner
            .update_quiet(|st| st.oauth.provider_enabled = enabled);
    }

    /// The lifetime of access tokens issued from now on (24 h by default, Coder's
    /// default session lifetime; refresh tokens live 30 days).
    pub fn set_oauth_token_lifetime(&self, lifetime: Duration) {
        let lifetime = chrono::Duration::from_std(lifetime).unwrap_or(chrono::Duration::MAX);
        self.inner
            .update_quiet(|st| st.oauth.token_lifetime = lifetime);
    }

    /// Every OAuth2 access token issued so far expires now (as if its lifetime had
    /// passed): API calls with it get 401 with the `invalid_token` challenge, and its
    /// refresh token still works.
    pub fn expire_oauth_tokens(&self) {
        let past = Utc::now() - chrono::Duration::seconds(1);
        self.inner.update_quiet(|st| {
            for key in &mut st.oauth.keys {
                key.expires_at = past;
            }
        });
    }

    /// The OAuth2 access tokens that exist now (issued, not revoked, not replaced by a
    /// refresh or a later exchange; expired ones included), oldest first. For tests
    /// that check a Coder token never leaks.
    pub fn oauth_access_tokens(&self) -> Vec<String> {
        self.inner.read(|st| {
            st.oauth
                .keys
                .iter()
                .map(|k| k.access_token.clone())
                .collect()
        })
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.inner.read(State::requests)
    }

    /// Forgets the recorded requests (for tests that count requests of one phase).
    pub fn clear_requests(&self) {
        self.inner.update_quiet(State::clear_requests);
    }

    /// All workspaces, deleted ones included, as the API would render them now.
    pub fn workspaces(&self) -> Vec<Workspace> {
        self.view().workspaces()
    }

    /// The template called `name`, if any.
    pub fn template(&self, name: &str) -> Option<Template> {
        self.inner.read(|st| {
            st.templates
                .iter()
                .find(|t| t.template.name == name)
                .map(|t| t.template.clone())
        })
    }

    /// How many builds wait at their plan's hold point: [`SimView::held_builds`] without
    /// the snapshot, whose cost grows with the deployment (for a bench that holds
    /// thousands of builds).
    pub fn held_build_count(&self) -> usize {
        self.inner.read(State::held_builds)
    }

    /// A snapshot of the deployment now.
    pub fn view(&self) -> SimView {
        self.inner.read(SimView::capture)
    }

    /// Resolves as soon as `pred` holds. It is checked now and again after every state
    /// change (no polling). A test waits for something that must happen: if it has not
    /// happened after [`SimCoder::WAIT_LIMIT`], that is a failure (a panic naming the
    /// limit), not a hang.
    pub async fn wait_until<F: Fn(&SimView) -> bool>(&self, pred: F) {
        let mut rx = self.inner.subscribe();
        let waited = tokio::time::timeout(Self::WAIT_LIMIT, async {
            loop {
                rx.borrow_and_update();
                if pred(&self.view()) {
                    return;
                }
                if rx.changed().await.is_err() {
                    // The sender lives in `inner`, which we hold, so this cannot happen.
                    return;
                }
            }
        })
        .await;
        assert!(
            waited.is_ok(),
            "the simulated Coder did not reach the awaited state within {:?}",
            Self::WAIT_LIMIT
        );
    }

    /// How long [`SimCoder::wait_until`] waits before it fails the test: far longer than
    /// anything a test waits for takes, so it only ends waits that would never end.
    pub const WAIT_LIMIT: Duration = Duration::from_secs(120);

    /// Stops the server, every stream and every build task.
    pub async fn shutdown(self) {
        self.inner.shutdown.cancel();
        let handle = self
            .inner
            .server
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            // Graceful shutdown waits for open connections; clients that keep an idle
            // keep-alive connection must not stall a test's teardown.
            if tokio::time::timeout(Duration::from_secs(5), handle)
                .await
                .is_err()
            {
                tracing::warn!("simulated Coder server did not stop within 5s");
            }
        }
    }
}
