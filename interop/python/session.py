"""A scripted MCP session with the official Python SDK (`mcp`) against `coder-workspace-mcp`
backed by the simulated Coder: over stdio and the legacy HTTP+SSE transport (protocol
2025-11-25, `initialize`), over Streamable HTTP at protocol 2026-07-28 (stateless), and a
session that declares the MCP Tasks extension (`io.modelcontextprotocol/tasks`, SEP-2663).

env: INTEROP_BIN (the binary), INTEROP_CODER_URL + INTEROP_TOKEN (the simulated Coder),
     INTEROP_SSE_URL (a `serve` instance's /sse), INTEROP_MCP_URL (its /mcp),
     INTEROP_TRANSPORTS (default "stdio,sse,http,tasks").
Runs, per transport, the session of interop/ts/session.mjs (docs/conformance.md): a main
session (handshake, tools/list, list_templates with and without `query`, read_template, tool
errors as isError results, create_workspace with progress, again) and, alongside it, a second
session whose create_workspace is cancelled after two progress notifications and then resumed.
`http` is the SDK's own choice against this server: `Client` (mode "auto") probes
`server/discover` and speaks 2026-07-28, stateless; with no session, the `name` argument is
what ties the calls of a task together. `tasks` runs over that too, with the Tasks extension
built on the SDK's extension API (2.3.0 ships no Tasks client): create_workspace answered with a
task, polled with tasks/get at the server's pollIntervalMs; tasks/cancel, then resumed.
Prints one line; exits non-zero if any session fails.
"""

import json
import os
import re
import secrets
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import anyio
import httpx2
from mcp import Client, ClientSession, StdioServerParameters
from mcp.client import ClaimContext, ClientExtension, ResultClaim
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from mcp_types import CallToolResult, Request, RequestParams, Result
from mcp_types.version import MODERN_PROTOCOL_VERSIONS


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


BIN = env("INTEROP_BIN")
CODER_URL = env("INTEROP_CODER_URL")
TOKEN = env("INTEROP_TOKEN")
TRANSPORTS = os.environ.get("INTEROP_TRANSPORTS", "stdio,sse,http,tasks").split(",")
SCHEMAS = Path(__file__).resolve().parent.parent.parent / "schemas"
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"
MODERN = "2026-07-28"
TASKS = "io.modelcontextprotocol/tasks"
# Workspace names (the key of a stateless task) unique to this run: `serve` keeps name → workspace
# records in its store, which outlives the simulated Coder of one run.
RUN = secrets.token_hex(3)


def structured(result, what: str) -> dict:
    assert not result.is_error, f"{what}: isError: {result.content}"
    assert result.structured_content, f"{what}: no structuredContent"
    texts = [c for c in result.content if c.type == "text"]
    assert texts, f"{what}: no text content"
    assert json.loads(texts[0].text) == result.structured_content, f"{what}: text != structuredContent"
    return result.structured_content


def error_text(result, what: str) -> str:
    assert result.is_error is True, f"{what}: expected isError, got {result}"
    texts = [c.text for c in result.content if c.type == "text"]
    assert texts and texts[0], f"{what}: isError without a message"
    return texts[0]


Conn = ClientSession | Client  # stdio and SSE: a ClientSession; 2026-07-28: the high-level Client


async def handshake(conn: Conn) -> tuple[ClientSession, bool]:
    """`initialize` on the handshake-era transports; the `Client` has already run
    `server/discover` on entry. Returns the session and whether it speaks 2026-07-28."""
    session = conn.session if isinstance(conn, Client) else conn
    if session.protocol_version is None:
        await session.initialize()
    modern = session.protocol_version in MODERN_PROTOCOL_VERSIONS
    if isinstance(conn, Client):
        assert session.protocol_version == MODERN, f"Client negotiated {session.protocol_version}"
        assert session.discover_result and not session.initialize_result, "server/discover, not initialize"
    return session, modern


async def still_serving(session: ClientSession, modern: bool) -> None:
    if modern:  # 2026-07-28 has no ping; any request will do
        await session.list_tools()
    else:
        await session.send_ping()


def task_args(template_id: str, name: str | None, **more: Any) -> dict[str, Any]:
    args: dict[str, Any] = {"template_id": template_id, **more}
    if name:
        args["name"] = name
    return args


async def main_session(conn: Conn, name: str | None) -> dict:
    # The handshake: who we are, what we offer, how to use it (initialize, or server/discover).
    session, modern = await handshake(conn)
    info = session.server_info
    assert info and info.name == "coder-workspace-mcp", info
    assert re.match(r"^\d+\.\d+\.\d+", info.version or ""), info
    caps = session.server_capabilities
    assert caps and caps.tools is not None, "tools capability"
    instructions = session.instructions
    assert instructions and all(
        t in instructions for t in ("list_templates", "read_template", "create_workspace")
    ), "instructions mention the three tools"
    await still_serving(session, modern)

    # tools/list: names, titles, schemas (exactly as committed in schemas/), annotations.
    tools = {t.name: t for t in (await conn.list_tools()).tools}
    assert sorted(tools) == ["create_workspace", "list_templates", "read_template"], sorted(tools)
    for tool in tools.values():
        assert tool.title or (tool.annotations and tool.annotations.title), f"{tool.name}: title"
        assert tool.description, f"{tool.name}: description"
        assert tool.input_schema.get("type") == "object", f"{tool.name}: inputSchema"
        assert tool.output_schema and tool.output_schema.get("type") == "object", f"{tool.name}: outputSchema"
        for kind, schema in (("input", tool.input_schema), ("output", tool.output_schema)):
            committed = json.loads((SCHEMAS / f"{tool.name}.{kind}.json").read_text())
            assert schema == committed, f"{tool.name}: {kind}Schema differs from schemas/{tool.name}.{kind}.json"
    for tool_name in ("list_templates", "read_template"):
        ann = tools[tool_name].annotations
        assert ann.read_only_hint is True and ann.idempotent_hint is True, f"{tool_name}: {ann}"
    ann = tools["create_workspace"].annotations
    assert ann.read_only_hint is False and ann.idempotent_hint is True and ann.open_world_hint is True, ann
    assert tools["create_workspace"].input_schema.get("required") == ["template_id"], tools["create_workspace"].input_schema

    # list_templates (all, then with `query`) → read_template.
    listing = structured(await conn.call_tool("list_templates", {}), "list_templates")
    assert len(listing["templates"]) >= 2, listing
    docker = next(t for t in listing["templates"] if t["name"] == "docker")
    filtered = structured(await conn.call_tool("list_templates", {"query": "kube"}), "list_templates query")
    assert [t["name"] for t in filtered["templates"]] == ["kubernetes"], filtered

    read = structured(await conn.call_tool("read_template", {"template_id": docker["id"]}), "read_template")
    assert read["template"]["id"] == docker["id"]
    params = {p["name"]: p for p in read["parameters"]}
    assert {"cpu", "region", "dotfiles_uri"} <= set(params), sorted(params)
    region = params["region"]
    choice = next((o["value"] for o in region["options"] if o["value"] != region["default_value"]), region["default_value"])

    # Tool errors come back as results with isError and a message a model can act on.
    error_text(await conn.call_tool("read_template", {"template_id": UNKNOWN_ID}), "unknown template")
    text = error_text(
        await conn.call_tool("create_workspace", task_args(docker["id"], name, parameters={"region": "mars"})),
        "invalid parameter value",
    )
    assert choice in text, f"the error lists the valid choices: {text}"

    # create_workspace with progress.
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    started = time.monotonic()
    created = structured(
        await conn.call_tool(
            "create_workspace",
            task_args(docker["id"], name, parameters={"region": choice}),
            read_timeout_seconds=60,
            progress_callback=on_progress,
        ),
        "create_workspace",
    )
    took = time.monotonic() - started
    assert len(progress) >= 3, f"expected >= 3 progress notifications, got {progress}"
    values = [p[0] for p in progress]
    assert all(b > a for a, b in zip(values, values[1:])), f"progress not strictly increasing: {values}"
    assert all(total == 100 for _, total, _ in progress), progress
    assert all(message and len(message) <= 200 for _, _, message in progress), progress
    assert values[-1] == 100 and "ready" in progress[-1][2], progress[-1]
    assert created["created"] is True and created["template_name"] == "docker", created
    assert created["template_id"] == docker["id"], created
    assert created["workspace_status"] == "running", created
    assert all(created.get(k) for k in ("workspace_id", "workspace_name", "agent_name", "owner")), created
    assert name is None or created["workspace_name"] == name, created
    assert re.match(r"^http", created["url"]), created

    # Idempotent per task (the session, or without one the name): the same workspace again,
    # without a new build.
    again = structured(
        await conn.call_tool("create_workspace", task_args(docker["id"], name, parameters={"region": choice})),
        "create_workspace again",
    )
    assert again["created"] is False and again["status"] == "already_exists", again
    assert again["workspace_id"] == created["workspace_id"], again
    return {"progress": len(progress), "took": took}


async def cancel_session(conn: Conn, name: str | None) -> None:
    """Cancelling the call after two progress notifications ends it at once (the SDK sends
    notifications/cancelled; at 2026-07-28 over HTTP it closes the request's stream instead,
    which is that revision's cancellation); the server keeps serving, and the next
    create_workspace of the task returns the workspace the cancelled call started."""
    session, modern = await handshake(conn)
    listing = structured(await conn.call_tool("list_templates", {}), "list_templates")
    kube = next(t for t in listing["templates"] if t["name"] == "kubernetes")
    progress: list[float] = []
    with anyio.CancelScope() as scope:

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)
            if len(progress) == 2:
                scope.cancel()

        with anyio.fail_after(30):
            await conn.call_tool("create_workspace", task_args(kube["id"], name), progress_callback=on_progress)
    assert scope.cancelled_caught, f"the call was not cancelled (progress {progress})"
    assert len(progress) >= 2, f"progress before cancel: {progress}"
    await still_serving(session, modern)
    resumed = structured(
        await conn.call_tool("create_workspace", task_args(kube["id"], name), read_timeout_seconds=60),
        "create_workspace after cancel",
    )
    assert resumed["created"] is False and resumed["status"] == "already_exists", f"after cancel: {resumed}"
    assert resumed["template_name"] == "kubernetes", resumed


# --- The Tasks extension (SEP-2663), on the SDK's extension API --------------------------------
# mcp 2.3.0 has the pieces (ClientExtension: the capability in each request's `_meta`;
# ResultClaim: a `resultType` the SDK hands to our resolver; Request.name_param: the
# `Mcp-Name` header SEP-2663 requires on tasks/*) but no Tasks client, so the wire shapes are
# declared here, as the extension's spec (2026-07-28) defines them.

TaskStatus = Literal["working", "input_required", "completed", "cancelled", "failed"]


class CreateTaskResult(Result):
    """What tools/call answers instead of a CallToolResult: `resultType: "task"` and a Task."""

    result_type: Literal["task"]
    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None


class DetailedTask(Result):
    """tasks/get's result: the Task, with `result` once completed (`error` once failed)."""

    result_type: Literal["complete"]
    task_id: str
    status: TaskStatus
    status_message: str | None = None
    created_at: str
    last_updated_at: str
    ttl_ms: int | None
    poll_interval_ms: int | None = None
    result: dict[str, Any] | None = None
    error: dict[str, Any] | None = None


class TaskIdParams(RequestParams):
    task_id: str


class GetTaskRequest(Request[TaskIdParams, Literal["tasks/get"]]):
    method: Literal["tasks/get"] = "tasks/get"
    name_param = "taskId"


class CancelTaskRequest(Request[TaskIdParams, Literal["tasks/cancel"]]):
    method: Literal["tasks/cancel"] = "tasks/cancel"
    name_param = "taskId"


class CancelTaskResult(Result):
    """An empty acknowledgement (`resultType: "complete"`)."""

    result_type: Literal["complete"]


class TasksExtension(ClientExtension):
    """Declares the extension; a `resultType: "task"` answer to tools/call is followed by
    polling tasks/get at the server's pollIntervalMs until the task ends, and its result is
    what `Client.call_tool` returns."""

    identifier = TASKS

    def __init__(self) -> None:
        self.created: list[CreateTaskResult] = []
        self.polls: list[tuple[float, DetailedTask]] = []  # (monotonic time, tasks/get answer)

    def claims(self):
        return [ResultClaim(result_type="task", model=CreateTaskResult, resolve=self._follow)]

    async def get(self, session: ClientSession, task_id: str) -> DetailedTask:
        task = await session.send_request(GetTaskRequest(params=TaskIdParams(task_id=task_id)), DetailedTask)
        assert task.task_id == task_id, task
        self.polls.append((time.monotonic(), task))
        return task

    async def poll(
        self, session: ClientSession, task: CreateTaskResult | DetailedTask, until: Callable[[DetailedTask], bool]
    ) -> DetailedTask:
        """tasks/get every pollIntervalMs (as the task last said) until `until` holds."""
        with anyio.fail_after(60):
            while True:
                assert task.poll_interval_ms and task.poll_interval_ms > 0, f"pollIntervalMs: {task}"
                await anyio.sleep(task.poll_interval_ms / 1000)
                task = await self.get(session, task.task_id)
                if until(task):
                    return task

    async def _follow(self, created: CreateTaskResult, ctx: ClaimContext) -> CallToolResult:
        self.created.append(created)
        assert created.status == "working" and created.ttl_ms, created
        done = await self.poll(ctx.session, created, lambda t: t.status not in ("working", "input_required"))
        assert done.status == "completed", f"task ended {done.status}: {done}"
        assert done.result is not None, f"completed without result: {done}"
        return CallToolResult.model_validate(done.result)


async def tasks_session(client: Client, ext: TasksExtension, name: str) -> dict:
    """create_workspace as a task: answered at once with the task, polled to its end; the
    result is exactly the synchronous one."""
    session, modern = await handshake(client)
    assert modern and TASKS in (session.server_capabilities.extensions or {}), session.server_capabilities
    listing = structured(await client.call_tool("list_templates", {}), "list_templates")
    docker = next(t for t in listing["templates"] if t["name"] == "docker")
    # Bad arguments are answered at once with isError, as without the extension: no task.
    error_text(
        await client.call_tool("create_workspace", task_args(docker["id"], name, parameters={"region": "mars"})),
        "invalid parameter value (tasks)",
    )
    assert not ext.created, f"a task for bad arguments: {ext.created}"

    started = time.monotonic()
    created = structured(await client.call_tool("create_workspace", task_args(docker["id"], name)), "create_workspace (task)")
    took = time.monotonic() - started
    assert len(ext.created) == 1, ext.created
    task_id = ext.created[0].task_id
    polls = [(at, t) for at, t in ext.polls if t.task_id == task_id]
    statuses = [t.status for _, t in polls]
    # At least one poll (a claimed prebuilt workspace can be ready before the second one).
    assert polls and statuses[-1] == "completed" and set(statuses[:-1]) <= {"working"}, statuses
    # Polled no faster than asked (the poller sleeps pollIntervalMs before each tasks/get).
    interval = ext.created[0].poll_interval_ms
    gaps = [b - a for (a, _), (b, _) in zip(polls, polls[1:])]
    assert all(gap >= interval / 1000 * 0.95 for gap in gaps), (interval, gaps)
    phases = list(dict.fromkeys(t.status_message for _, t in polls if t.status == "working"))
    # Every working poll names its phase; how many phases a 1 s poll sees depends on the
    # machine's load, so at least one.
    assert phases and all(phases), f"statusMessage phases: {phases}"
    print(f"tasks: {len(polls)} tasks/get, statusMessage: {' | '.join(phases)} | {polls[-1][1].status_message}", file=sys.stderr)
    assert created["created"] is True and created["workspace_name"] == name, created
    assert created["template_name"] == "docker" and created["workspace_status"] == "running", created
    assert all(created.get(k) for k in ("workspace_id", "agent_name", "owner", "url")), created

    # An unknown task id is -32602 (Invalid params).
    try:
        await ext.get(session, UNKNOWN_ID)
        raise AssertionError("tasks/get of an unknown task succeeded")
    except MCPError as err:
        assert err.code == -32602, err
    return {"polls": len(polls), "interval": interval, "phases": len(phases), "took": took}


async def tasks_cancel_session(client: Client, ext: TasksExtension, name: str) -> None:
    """tasks/cancel ends the task `cancelled` (the workspace keeps building in Coder, and the
    status message says how to follow it again); create_workspace with the name then follows it
    to the end."""
    session, _ = await handshake(client)
    listing = structured(await client.call_tool("list_templates", {}), "list_templates")
    kube = next(t for t in listing["templates"] if t["name"] == "kubernetes")
    # The task itself, not resolved by the extension.
    task = await session.call_tool("create_workspace", task_args(kube["id"], name), allow_claimed=True)
    assert isinstance(task, CreateTaskResult), f"expected a task, got {task}"
    # Polled until the build is under way (its phase messages name the workspace), then cancelled.
    working = await ext.poll(session, task, lambda t: t.status != "working" or name in (t.status_message or ""))
    assert working.status == "working", working
    ack = await session.send_request(CancelTaskRequest(params=TaskIdParams(task_id=task.task_id)), CancelTaskResult)
    assert ack.result_type == "complete", ack
    cancelled = await ext.poll(session, working, lambda t: t.status != "working")
    assert cancelled.status == "cancelled", f"after tasks/cancel: {cancelled}"
    assert name in (cancelled.status_message or ""), f"the status message names the workspace: {cancelled}"

    resumed = structured(await client.call_tool("create_workspace", task_args(kube["id"], name)), "create_workspace after tasks/cancel")
    assert ext.created and ext.created[-1].task_id != task.task_id, "a new task after the cancelled one"
    assert resumed["created"] is False and resumed["status"] == "already_exists", f"after tasks/cancel: {resumed}"
    assert resumed["workspace_name"] == name and resumed["template_name"] == "kubernetes", resumed


# --- Connections --------------------------------------------------------------------------------


@asynccontextmanager
async def over_stdio():
    server = StdioServerParameters(
        command=BIN,
        args=["stdio", "--max-call-wait", "0"],
        env={"CODER_URL": CODER_URL, "CODER_SESSION_TOKEN": TOKEN},
    )
    with tempfile.TemporaryFile("w+") as errlog:
        try:
            async with stdio_client(server, errlog=errlog) as (read, write):
                async with ClientSession(read, write) as session:
                    yield session
        except BaseException:
            errlog.seek(0)
            sys.stderr.write("--- server stderr ---\n" + errlog.read()[-4000:])
            raise


@asynccontextmanager
async def over_sse():
    url = env("INTEROP_SSE_URL")
    async with sse_client(url, headers={"Authorization": f"Bearer {TOKEN}"}) as (read, write):
        async with ClientSession(read, write) as session:
            yield session


class HttpLog:
    """Every HTTP exchange of one connection, to show it stateless."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.session_ids: list[str] = []

    async def on_request(self, request: httpx2.Request) -> None:
        self.requests.append((request.method, {k.lower(): v for k, v in request.headers.items()}))

    async def on_response(self, response: httpx2.Response) -> None:
        if sid := response.headers.get("mcp-session-id"):
            self.session_ids.append(sid)

    def check_stateless(self, task_ids: set[str] = frozenset()) -> None:
        assert not self.session_ids, f"the server opened a session: {self.session_ids}"
        assert self.requests, "no requests"
        methods = []
        for verb, headers in self.requests:
            method = headers.get("mcp-method")
            methods.append(method)
            assert verb == "POST", f"{verb} {headers}: stateless is POST only (no GET stream, no DELETE)"
            assert "mcp-session-id" not in headers, headers
            assert headers.get("mcp-protocol-version") == MODERN, headers
            assert method, f"no Mcp-Method header: {headers}"
            if method == "tools/call":
                assert headers.get("mcp-name"), f"tools/call without Mcp-Name: {headers}"
            if method in ("tasks/get", "tasks/cancel"):
                assert headers.get("mcp-name") in task_ids | {UNKNOWN_ID}, f"{method}: Mcp-Name {headers.get('mcp-name')}"
        assert methods.count("server/discover") == 1 and "initialize" not in methods, methods
        counts = {m: methods.count(m) for m in dict.fromkeys(methods)}
        print(f"http: {len(methods)} POSTs, no session ({', '.join(f'{m} {n}' for m, n in counts.items())})", file=sys.stderr)


@asynccontextmanager
async def over_http(log: HttpLog, extensions=None):
    """The SDK's Client on Streamable HTTP with its defaults (mode "auto": it probes
    server/discover and adopts 2026-07-28 when the server speaks it)."""
    http = httpx2.AsyncClient(
        headers={"Authorization": f"Bearer {TOKEN}"},
        timeout=httpx2.Timeout(30, read=300),  # the SDK's own defaults for its transports
        event_hooks={"request": [log.on_request], "response": [log.on_response]},
    )
    async with http:
        async with Client(streamable_http_client(env("INTEROP_MCP_URL"), http_client=http), extensions=extensions) as client:
            yield client


async def side_by_side(main, cancel) -> dict:
    out: dict = {}

    async def run_main() -> None:
        out.update(await main())

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_main)
        tg.start_soon(cancel)
    return out


async def run_transport(name: str) -> dict:
    """The main session and the cancel session, side by side, each on its own connection."""
    if name in ("stdio", "sse"):
        connect = over_stdio if name == "stdio" else over_sse

        async def main() -> dict:
            async with connect() as session:
                return await main_session(session, None)

        async def cancel() -> None:
            async with connect() as session:
                await cancel_session(session, None)

        return await side_by_side(main, cancel)

    if name == "http":
        logs = [HttpLog(), HttpLog()]

        async def main() -> dict:
            async with over_http(logs[0]) as client:
                return await main_session(client, f"py-{RUN}-http")

        async def cancel() -> None:
            async with over_http(logs[1]) as client:
                await cancel_session(client, f"py-{RUN}-http-cancel")

        out = await side_by_side(main, cancel)
        for log in logs:
            log.check_stateless()
        return out

    if name == "tasks":
        runs = [(HttpLog(), TasksExtension()), (HttpLog(), TasksExtension())]

        async def main() -> dict:
            log, ext = runs[0]
            async with over_http(log, [ext]) as client:
                return await tasks_session(client, ext, f"py-{RUN}-task")

        async def cancel() -> None:
            log, ext = runs[1]
            async with over_http(log, [ext]) as client:
                await tasks_cancel_session(client, ext, f"py-{RUN}-task-cancel")

        out = await side_by_side(main, cancel)
        for log, ext in runs:
            log.check_stateless({t.task_id for t in ext.created} | {t.task_id for _, t in ext.polls})
        return out

    raise SystemExit(f"unknown transport {name}")


async def main() -> int:
    results: dict[str, object] = {}

    started = time.monotonic()

    async def one(name: str) -> None:
        try:
            results[name] = await run_transport(name)
            print(f"{name}: done after {time.monotonic() - started:.1f} s", file=sys.stderr)
        except BaseException as err:  # noqa: BLE001 - reported below
            results[name] = err

    async with anyio.create_task_group() as tg:
        for name in TRANSPORTS:
            tg.start_soon(one, name)
    failed = [name for name in TRANSPORTS if not isinstance(results[name], dict)]
    for name in failed:
        err = results[name]
        print(f"python-sdk: FAILED over {name}: {''.join(traceback.format_exception(err))}")
    if failed:
        return 1
    labels = {"http": f"http {MODERN} stateless"}
    plain = [name for name in TRANSPORTS if name != "tasks"]
    parts = []
    if plain:
        counts = "/".join(str(results[name]["progress"]) for name in plain)
        took = max(results[name]["took"] for name in plain)
        parts.append(
            f"{', '.join(labels.get(n, n) for n in plain)}; create with {counts} progress notifications over {took:.1f} s; "
            "isError; cancel + resume"
        )
    if "tasks" in TRANSPORTS:
        t = results["tasks"]
        parts.append(
            f"tasks extension over http {MODERN}: a task, {t['polls']} tasks/get at pollIntervalMs {t['interval']}, "
            f"the normal result after {t['took']:.1f} s; tasks/cancel + resume"
        )
    print(f"python-sdk: ok ({'; '.join(parts)})")
    return 0

if __name__ == "__main__":
    sys.exit(anyio.run(main))
