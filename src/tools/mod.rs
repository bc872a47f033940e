//! The MCP tools: thin handlers from arguments to the Coder client and the engine.

pub mod args;
pub mod results;
pub mod tasks;

use std::sync::Arc;

use futures::future::BoxFuture;
use rmcp::handler::server::router::tool::ToolRouter;
use rmcp::handler::server::wrapper::{Json, Parameters};
use rmcp::model::{
    CancelTaskParams, GetTaskParams, GetTaskResult, Implementation, ProgressNotificationParam,
    ProgressToken, ServerCapabilities, ServerConfig,
};
use rmcp::service::RequestContext;
use rmcp::{Peer, RoleServer, ServerHandler, tool, tool_handler, tool_router};

use crate::coder::{CoderError, Identity};
use crate::engine::{Caller, CreateError, CreateRequest, Engine, ProgressSink, TaskKey};
use crate::shutdown::{CallTracker, LinkedCancel};
use args::{CreateWorkspaceArgs, ListTemplatesArgs, ReadTemplateArgs, parse_template_id};
use results::{
    CreateWorkspaceResult, ListTemplatesResult, ParameterInfo, PresetInfo, ReadTemplateResult,
    TemplateSummary,
};
use tasks::Tasks;

/// How long clients of 2026-07-28 may reuse a `tools/list` answer (one hour).
const TOOLS_TTL_MS: u64 = 3_600_000;

/// Templates per `list_templates` page.
pub const PAGE_SIZE: usize = 10;

/// What the server tells a model in `initialize`.
pub const INSTRUCTIONS: &str = "This server creates Coder workspaces: real development environments for you to work in. \
Use the tools in order: 1) list_templates to find a template (pass `query` to search); \
2) read_template with its id to see the parameters the template takes and its presets (tested sets of values); \
3) create_workspace with the template id, a short name that describes your task (e.g. \"fix-login-bug\"), a preset when the template has any (the default one when unsure; presets with prebuilt workspaces are ready in seconds) and parameter values. \
create_workspace waits for the build and the workspace agent and reports progress. \
One workspace per task: the name is the task's handle, so calling create_workspace again with that name returns the same workspace \
(from any session, and after restarts) instead of creating another; without a name, this conversation's workspace is returned. \
When it answers status \"building\" (or \"starting_agent\", \"running_startup_scripts\"), \
call it again with name set to the answer's workspace_name to keep waiting.";

/// Who is calling and in which conversation: fixed for a stdio process, decided per
/// request (from the HTTP headers) over HTTP.
#[derive(Debug, Clone)]
pub struct Scope {
    pub identity: Arc<Identity>,
    /// The conversation's key; `None` for a stateless request without a chat id, where
    /// only a requested workspace name ties calls together.
    pub key: Option<TaskKey>,
}

impl Scope {
    fn caller(&self) -> Caller {
        Caller {
            user: self.identity.user.id,
            key: self.key.clone(),
        }
    }
}

#[derive(Clone)]
enum ScopeSource {
    Fixed(Scope),
    /// Read from the `Scope` the HTTP layer put into the request's extensions.
    PerRequest,
}

/// The server the MCP runtime talks to: one per MCP session.
#[derive(Clone)]
pub struct WorkspaceServer {
    engine: Arc<Engine>,
    scope: ScopeSource,
    calls: Option<CallTracker>,
    tasks: Tasks,
    tool_router: ToolRouter<Self>,
}

#[tool_router]
impl WorkspaceServer {
    /// A server for one fixed user and conversation (stdio).
    pub fn new(engine: Arc<Engine>, tasks: Tasks, identity: Arc<Identity>, key: TaskKey) -> Self {
        Self {
            engine,
            scope: ScopeSource::Fixed(Scope {
                identity,
                key: Some(key),
            }),
            calls: None,
            tasks,
            tool_router: portable_router(),
        }
    }

    /// A server whose caller is decided per request by the HTTP layer.
    pub fn per_request(engine: Arc<Engine>, tasks: Tasks, calls: CallTracker) -> Self {
        Self {
            engine,
            scope: ScopeSource::PerRequest,
            calls: Some(calls),
            tasks,
            tool_router: portable_router(),
        }
    }

    fn scope(&self, context: &RequestContext<RoleServer>) -> Result<Scope, String> {
        match &self.scope {
            ScopeSource::Fixed(scope) => Ok(scope.clone()),
            ScopeSource::PerRequest => context
                .extensions
                .get::<http::request::Parts>()
                .and_then(|parts| parts.extensions.get::<Scope>())
                .cloned()
                .ok_or_else(|| "internal error: the request carries no caller identity".to_owned()),
        }
    }

    /// List the Coder templates you can create workspaces from, most used first, 10 per page.
    /// Pass `query` to search names and descriptions. Next: call read_template with a
    /// template's `id` to see its parameters, then create_workspace.
    #[tool(
        title = "List Coder templates",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn list_templates(
        &self,
        Parameters(args): Parameters<ListTemplatesArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ListTemplatesResult>, String> {
        let _call = self.calls.as_ref().map(CallTracker::enter);
        let scope = self.scope(&context)?;
        let client = &scope.identity.client;
        let mut templates = client
            .templates()
            .await
            .map_err(|e| failure("could not list templates", "list_templates", &e))?;
        templates.retain(|t| !t.deprecated);
        if let Some(query) = args
            .query
            .as_deref()
            .map(str::trim)
            .filter(|q| !q.is_empty())
        {
            let needle = query.to_lowercase();
            templates.retain(|t| {
                [&t.name, &t.display_name, &t.description]
                    .iter()
                    .any(|field| field.to_lowercase().contains(&needle))
            });
        }
        templates.sort_by(|a, b| {
            b.active_user_count
                .cmp(&a.active_user_count)
                .then_with(|| a.name.cmp(&b.name))
        });
        let total_count = templates.len();
        let total_pages = total_count.div_ceil(PAGE_SIZE).max(1) as u32;
        let page = args.page.unwrap_or(1).max(1);
        if page > total_pages {
            return Err(format!(
                "page {page} does not exist: there are {total_pages} page(s) of templates"
            ));
        }
        let mut page_items: Vec<TemplateSummary> = templates
            .iter()
            .skip((page as usize - 1) * PAGE_SIZE)
            .take(PAGE_SIZE)
            .map(TemplateSummary::from)
            .collect();
        // How many presets each has (one request per template, all at once). A count
        // Coder cannot give is left out rather than failing the list.
        let counts = futures::future::join_all(
            page_items
                .iter()
                .map(|t| client.presets(t.active_version_id)),
        )
        .await;
        for (item, count) in page_items.iter_mut().zip(counts) {
            match count {
                Ok(presets) => item.preset_count = Some(presets.len()),
                Err(err) => {
                    tracing::warn!(template = %item.name, error = %err, "could not count the template's presets")
                }
            }
        }
        Ok(Json(ListTemplatesResult {
            count: page_items.len(),
            templates: page_items,
            page,
            total_pages,
            total_count,
        }))
    }

    /// Read one template, the parameters of its active version (type, default, options,
    /// validation, required) and its presets: sets of parameter values the template's
    /// authors tested. Prefer a preset, the default one when unsure: pass its `name` as
    /// create_workspace's `preset`; a preset with `prebuilt_workspaces` is usually ready in
    /// seconds instead of minutes. Next: call create_workspace with this template's id, a
    /// preset, and values for the parameters you need (required ones without a default
    /// must be given, unless the preset sets them).
    #[tool(
        title = "Read a Coder template",
        annotations(
            read_only_hint = true,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = false
        )
    )]
    pub async fn read_template(
        &self,
        Parameters(args): Parameters<ReadTemplateArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<ReadTemplateResult>, String> {
        let _call = self.calls.as_ref().map(CallTracker::enter);
        let id = parse_template_id(&args.template_id)?;
        let scope = self.scope(&context)?;
        let client = &scope.identity.client;
        let template = client.template(id).await.map_err(|e| {
            if matches!(e.status(), Some(400 | 403 | 404)) {
                format!("template {id} not found ({e}); use list_templates to find a template id")
            } else {
                failure(
                    &format!("could not read template {id}"),
                    "read_template",
                    &e,
                )
            }
        })?;
        let version = template.active_version_id;
        let (parameters, presets) =
            tokio::join!(client.rich_parameters(version), client.presets(version));
        let parameters = parameters.map_err(|e| {
            failure(
                &format!("could not read the parameters of template {id}"),
                "read_template",
                &e,
            )
        })?;
        let presets = presets.map_err(|e| {
            failure(
                &format!("could not read the presets of template {id}"),
                "read_template",
                &e,
            )
        })?;
        Ok(Json(ReadTemplateResult {
            template: (&template).into(),
            parameters: parameters.iter().map(ParameterInfo::from).collect(),
            presets: presets.iter().map(PresetInfo::from).collect(),
        }))
    }

    /// Create a Coder workspace from a template and wait until it is ready (build, agent,
    /// startup scripts), reporting progress. One workspace per task: pass a short `name` that
    /// describes the task (e.g. "fix-login-bug"); it is the task's handle. Calling again with
    /// that name returns the same workspace from any session, and after restarts
    /// (`status: "already_exists"`), instead of creating another: it waits for one still
    /// building, starts a stopped one, and replaces one that failed. Without a name, this
    /// conversation's workspace is returned. When the template has presets (see
    /// read_template), pass one as `preset` (the default one is used when you pass none and
    /// your parameters agree with it); a preset with prebuilt workspaces is ready in
    /// seconds (`prebuilt: true`). If it answers `status: "building"`,
    /// `"starting_agent"` or `"running_startup_scripts"`, call it again with `name` set to
    /// the answer's `workspace_name` to keep waiting.
    #[tool(
        title = "Create a Coder workspace",
        annotations(
            read_only_hint = false,
            destructive_hint = false,
            idempotent_hint = true,
            open_world_hint = true
        )
    )]
    pub async fn create_workspace(
        &self,
        Parameters(args): Parameters<CreateWorkspaceArgs>,
        context: RequestContext<RoleServer>,
    ) -> Result<Json<CreateWorkspaceResult>, String> {
        let _call = self.calls.as_ref().map(CallTracker::enter);
        let scope = self.scope(&context)?;
        let request = CreateRequest {
            template_id: parse_template_id(&args.template_id)?,
            name: args.name,
            parameters: args.parameters.unwrap_or_default(),
            preset: args.preset,
        };
        let sink = McpProgress {
            peer: context.peer.clone(),
            token: context.meta.get_progress_token(),
        };
        let linked = self.calls.as_ref().map(|calls| calls.link(&context.ct));
        let cancel = linked.as_ref().map_or(&context.ct, LinkedCancel::token);
        let outcome = self
            .engine
            .create_workspace(
                &scope.identity.client,
                &scope.caller(),
                request,
                &sink,
                cancel,
            )
            .await;
        match outcome {
            Ok(answer) => Ok(Json(answer.into())),
            Err(CreateError::Cancelled) if self.calls.as_ref().is_some_and(CallTracker::is_shutting_down) => {
                Err("the server is shutting down, so it stopped waiting; the workspace itself keeps building in Coder (its page in the Coder dashboard shows how it goes).".into())
            }
            Err(err) => {
                tracing::info!(error = %err, "create_workspace failed");
                Err(err.to_string())
            }
        }
    }
}

#[tool_handler(router = self.tool_router)]
impl ServerHandler for WorkspaceServer {
    /// The router's call, with every quote in an error shortened: rmcp's message for
    /// arguments that do not deserialize quotes serde's, which quotes the bad value whole
    /// (a 2 MB string would come back as a 2 MB error), and Coder's validation messages
    /// may quote the values sent.
    async fn call_tool(
        &self,
        request: rmcp::model::CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::CallToolResponse, rmcp::ErrorData> {
        if let Some(answer) = self.as_task(&request, &context).await {
            return answer;
        }
        let call = rmcp::handler::server::tool::ToolCallContext::new(self, request, context);
        let mut response = self.tool_router.call(call).await?;
        if let rmcp::model::CallToolResponse::Complete(result) = &mut response
            && result.is_error == Some(true)
        {
            for block in &mut result.content {
                if let rmcp::model::ContentBlock::Text(text) = block {
                    text.text = crate::quote::shorten_quotes(&text.text);
                }
            }
        }
        Ok(response)
    }

    /// The tools, with the cache hints of protocol 2026-07-28: the same for every user
    /// (`public`) and fixed while the server runs (an upgrade may change them, hence an
    /// hour rather than forever).
    async fn list_tools(
        &self,
        _request: Option<rmcp::model::PaginatedRequestParams>,
        context: RequestContext<RoleServer>,
    ) -> Result<rmcp::model::ListToolsResult, rmcp::ErrorData> {
        let hints = context
            .protocol_version()
            .is_some_and(|version| version >= rmcp::model::ProtocolVersion::V_2026_07_28);
        let mut result = rmcp::model::ListToolsResult::with_all_items(self.tool_router.list_all());
        if hints {
            result = result
                .with_ttl_ms(TOOLS_TTL_MS)
                .with_cache_scope(rmcp::model::CacheScope::Public);
        }
        Ok(result)
    }

    async fn get_task(
        &self,
        request: GetTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<GetTaskResult, rmcp::ErrorData> {
        let scope = self.scope(&context).map_err(internal)?;
        self.tasks.get(&scope, &request.task_id).await
    }

    async fn cancel_task(
        &self,
        request: CancelTaskParams,
        context: RequestContext<RoleServer>,
    ) -> Result<(), rmcp::ErrorData> {
        let scope = self.scope(&context).map_err(internal)?;
        self.tasks.cancel(&scope, &request.task_id).await
    }

    fn get_info(&self) -> ServerConfig {
        ServerConfig::new(
            ServerCapabilities::builder()
                .enable_tools()
                .enable_tasks()
                .build(),
        )
        .with_server_info(
            Implementation::new(env!("CARGO_PKG_NAME"), env!("CARGO_PKG_VERSION"))
                .with_title("Coder workspaces")
                .with_description(env!("CARGO_PKG_DESCRIPTION")),
        )
        .with_instructions(INSTRUCTIONS)
    }
}

impl WorkspaceServer {
    /// A `create_workspace` call as a task, when the client declared the Tasks extension
    /// (and its arguments can be read: if not, the synchronous path answers the error,
    /// the same for everyone). `None`: answer it synchronously.
    async fn as_task(
        &self,
        request: &rmcp::model::CallToolRequestParams,
        context: &RequestContext<RoleServer>,
    ) -> Option<Result<rmcp::model::CallToolResponse, rmcp::ErrorData>> {
        if request.name != "create_workspace"
            || !context
                .client_capabilities()
                .is_some_and(|caps| caps.supports_tasks())
        {
            return None;
        }
        let arguments = serde_json::Value::Object(request.arguments.clone().unwrap_or_default());
        let args: CreateWorkspaceArgs = serde_json::from_value(arguments).ok()?;
        let _call = self.calls.as_ref().map(CallTracker::enter);
        let answer = async {
            let scope = self.scope(context)?;
            let request = CreateRequest {
                template_id: parse_template_id(&args.template_id)?,
                name: args.name,
                parameters: args.parameters.unwrap_or_default(),
                preset: args.preset,
            };
            Ok::<_, String>((scope, request))
        }
        .await;
        let (scope, request) = match answer {
            Ok(ready) => ready,
            Err(text) => return Some(Ok(tool_error(&text))),
        };
        Some(match self.tasks.start(&scope, request).await {
            Ok(Ok(task)) => Ok(rmcp::model::CallToolResponse::Task(task)),
            Ok(Err(text)) => Ok(tool_error(&text)),
            Err(err) => Err(err),
        })
    }
}

/// A tool error as the synchronous path answers it (`isError`, quotes shortened).
fn tool_error(text: &str) -> rmcp::model::CallToolResponse {
    error_result(text).into()
}

/// The `isError` result of a tool error, quotes shortened: how every tool error reads,
/// answered at once or as a task's result.
fn error_result(text: &str) -> rmcp::model::CallToolResult {
    rmcp::model::CallToolResult::error(vec![rmcp::model::ContentBlock::text(
        crate::quote::shorten_quotes(text),
    )])
}

fn internal(text: String) -> rmcp::ErrorData {
    rmcp::ErrorData::internal_error(text, None)
}

/// The tool router with schemas every client understands: schemars' Rust-specific
/// integer formats (`uint32`, `int64`, ...) make some validators (the TypeScript SDK's
/// Ajv) warn on every `tools/list`, and `["string", "null"]` unions trip others. Optional
/// fields are simply left out (never sent as null), so nothing is lost.
fn portable_router() -> ToolRouter<WorkspaceServer> {
    // Built once: every HTTP session gets a server, and the schemas are the same for all.
    static ROUTER: std::sync::OnceLock<ToolRouter<WorkspaceServer>> = std::sync::OnceLock::new();
    ROUTER.get_or_init(build_portable_router).clone()
}

fn build_portable_router() -> ToolRouter<WorkspaceServer> {
    let mut router = WorkspaceServer::tool_router();
    for route in router.map.values_mut() {
        let mut input = serde_json::Value::Object((*route.attr.input_schema).clone());
        make_portable(&mut input);
        if let serde_json::Value::Object(input) = input {
            route.attr.input_schema = Arc::new(input);
        }
        if let Some(output) = &route.attr.output_schema {
            let mut output = serde_json::Value::Object((**output).clone());
            make_portable(&mut output);
            if let serde_json::Value::Object(output) = output {
                route.attr.output_schema = Some(Arc::new(output));
            }
        }
    }
    router
}

fn make_portable(schema: &mut serde_json::Value) {
    use serde_json::Value;
    match schema {
        Value::Object(map) => {
            if map.get("format").and_then(Value::as_str).is_some_and(|f| {
                f.starts_with("uint") || f.starts_with("int") || f == "double" || f == "float"
            }) {
                map.remove("format");
            }
            if let Some(Value::Array(types)) = map.get_mut("type") {
                types.retain(|t| t != "null");
                if types.len() == 1 {
                    let only = types[0].clone();
                    map.insert("type".into(), only);
                }
            }
            // `anyOf: [X, {"type": "null"}]` → X.
            if let Some(Value::Array(any)) = map.get("anyOf")
                && any.len() == 2
                && let Some(other) = any
                    .iter()
                    .find(|v| v.get("type") != Some(&Value::String("null".into())))
                && any
                    .iter()
                    .any(|v| v.get("type") == Some(&Value::String("null".into())))
                && let Value::Object(other) = other.clone()
            {
                map.remove("anyOf");
                for (k, v) in other {
                    map.entry(k).or_insert(v);
                }
            }
            if map.get("default") == Some(&Value::Null) {
                map.remove("default");
            }
            map.values_mut().for_each(make_portable);
        }
        Value::Array(items) => items.iter_mut().for_each(make_portable),
        _ => {}
    }
}

/// A Coder failure as a tool error: what failed, Coder's words, and, when it is likely to
/// pass (Coder unreachable, 5xx, 429), that calling again later is safe.
fn failure(context: &str, tool: &str, err: &CoderError) -> String {
    if err.is_transient() {
        format!(
            "{context}: {err} (Coder is unreachable or failing right now; calling {tool} again in a moment is safe: it only reads)"
        )
    } else {
        format!("{context}: {err}")
    }
}

/// Progress to the MCP client, when it asked for it with a `progressToken`.
struct McpProgress {
    peer: Peer<RoleServer>,
    token: Option<ProgressToken>,
}

impl ProgressSink for McpProgress {
    fn send(&self, progress: f64, total: f64, message: String) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            let Some(token) = self.token.clone() else {
                return;
            };
            let param = ProgressNotificationParam::new(token, progress)
                .with_total(total)
                .with_message(message);
            if let Err(err) = self.peer.notify_progress(param).await {
                tracing::debug!(error = %err, "could not send progress");
            }
        })
    }
}
