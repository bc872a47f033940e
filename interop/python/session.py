"""A scripted MCP session with the official Python SDK (`mcp`), over stdio and over the
legacy HTTP+SSE transport, against `coder-workspace-mcp` backed by the simulated Coder.

env: INTEROP_BIN (the binary), INTEROP_CODER_URL + INTEROP_TOKEN (the simulated Coder),
     INTEROP_SSE_URL (a `serve` instance's /sse), INTEROP_TRANSPORTS (default "stdio,sse").
Runs, per transport, the session of interop/ts/session.mjs (docs/conformance.md): a main
session (initialize, tools/list, list_templates with and without `query`, read_template, tool
errors as isError results, create_workspace with progress, again) and, alongside it, a second
session whose create_workspace is cancelled after two progress notifications and then resumed.
Prints one line; exits non-zero if any session fails.
"""

import json
import os
import re
import sys
import tempfile
import time
import traceback
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from mcp import ClientSession, StdioServerParameters
from mcp.client.sse import sse_client
from mcp.client.stdio import stdio_client


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise SystemExit(f"{name} is not set")
    return value


BIN = env("INTEROP_BIN")
CODER_URL = env("INTEROP_CODER_URL")
TOKEN = env("INTEROP_TOKEN")
TRANSPORTS = os.environ.get("INTEROP_TRANSPORTS", "stdio,sse").split(",")
SCHEMAS = Path(__file__).resolve().parent.parent.parent / "schemas"
UNKNOWN_ID = "00000000-0000-0000-0000-000000000000"


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


async def main_session(session: ClientSession) -> dict:
    # initialize: who we are, what we offer, how to use it.
    init = await session.initialize()
    assert init.server_info.name == "coder-workspace-mcp", init.server_info
    assert re.match(r"^\d+\.\d+\.\d+", init.server_info.version or ""), init.server_info
    assert init.capabilities.tools is not None, "tools capability"
    assert init.instructions and all(
        t in init.instructions for t in ("list_templates", "read_template", "create_workspace")
    ), "instructions mention the three tools"
    await session.send_ping()

    # tools/list: names, titles, schemas (exactly as committed in schemas/), annotations.
    tools = {t.name: t for t in (await session.list_tools()).tools}
    assert sorted(tools) == ["create_workspace", "list_templates", "read_template"], sorted(tools)
    for tool in tools.values():
        assert tool.title or (tool.annotations and tool.annotations.title), f"{tool.name}: title"
        assert tool.description, f"{tool.name}: description"
        assert tool.input_schema.get("type") == "object", f"{tool.name}: inputSchema"
        assert tool.output_schema and tool.output_schema.get("type") == "object", f"{tool.name}: outputSchema"
        for kind, schema in (("input", tool.input_schema), ("output", tool.output_schema)):
            committed = json.loads((SCHEMAS / f"{tool.name}.{kind}.json").read_text())
            assert schema == committed, f"{tool.name}: {kind}Schema differs from schemas/{tool.name}.{kind}.json"
    for name in ("list_templates", "read_template"):
        ann = tools[name].annotations
        assert ann.read_only_hint is True and ann.idempotent_hint is True, f"{name}: {ann}"
    ann = tools["create_workspace"].annotations
    assert ann.read_only_hint is False and ann.idempotent_hint is True and ann.open_world_hint is True, ann
    assert tools["create_workspace"].input_schema.get("required") == ["template_id"], tools["create_workspace"].input_schema

    # list_templates (all, then with `query`) → read_template.
    listing = structured(await session.call_tool("list_templates", {}), "list_templates")
    assert len(listing["templates"]) >= 2, listing
    docker = next(t for t in listing["templates"] if t["name"] == "docker")
    filtered = structured(await session.call_tool("list_templates", {"query": "kube"}), "list_templates query")
    assert [t["name"] for t in filtered["templates"]] == ["kubernetes"], filtered

    read = structured(await session.call_tool("read_template", {"template_id": docker["id"]}), "read_template")
    assert read["template"]["id"] == docker["id"]
    params = {p["name"]: p for p in read["parameters"]}
    assert {"cpu", "region", "dotfiles_uri"} <= set(params), sorted(params)
    region = params["region"]
    choice = next((o["value"] for o in region["options"] if o["value"] != region["default_value"]), region["default_value"])

    # Tool errors come back as results with isError and a message a model can act on.
    error_text(await session.call_tool("read_template", {"template_id": UNKNOWN_ID}), "unknown template")
    text = error_text(
        await session.call_tool("create_workspace", {"template_id": docker["id"], "parameters": {"region": "mars"}}),
        "invalid parameter value",
    )
    assert choice in text, f"the error lists the valid choices: {text}"

    # create_workspace with progress.
    progress: list[tuple[float, float | None, str | None]] = []

    async def on_progress(value: float, total: float | None, message: str | None) -> None:
        progress.append((value, total, message))

    started = time.monotonic()
    created = structured(
        await session.call_tool(
            "create_workspace",
            {"template_id": docker["id"], "parameters": {"region": choice}},
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
    assert re.match(r"^http", created["url"]), created

    # Idempotent per session: the same workspace again, without a new build.
    again = structured(
        await session.call_tool("create_workspace", {"template_id": docker["id"], "parameters": {"region": choice}}),
        "create_workspace again",
    )
    assert again["created"] is False and again["status"] == "already_exists", again
    assert again["workspace_id"] == created["workspace_id"], again
    return {"progress": len(progress), "took": took}


async def cancel_session(session: ClientSession) -> None:
    """Cancelling the call (the SDK sends notifications/cancelled) after two progress
    notifications ends it at once; the session keeps serving, and the next create_workspace
    returns the workspace the cancelled call started."""
    await session.initialize()
    listing = structured(await session.call_tool("list_templates", {}), "list_templates")
    kube = next(t for t in listing["templates"] if t["name"] == "kubernetes")
    progress: list[float] = []
    with anyio.CancelScope() as scope:

        async def on_progress(value: float, total: float | None, message: str | None) -> None:
            progress.append(value)
            if len(progress) == 2:
                scope.cancel()

        with anyio.fail_after(30):
            await session.call_tool("create_workspace", {"template_id": kube["id"]}, progress_callback=on_progress)
    assert scope.cancelled_caught, f"the call was not cancelled (progress {progress})"
    assert len(progress) >= 2, f"progress before cancel: {progress}"
    await session.send_ping()
    resumed = structured(
        await session.call_tool("create_workspace", {"template_id": kube["id"]}, read_timeout_seconds=60),
        "create_workspace after cancel",
    )
    assert resumed["created"] is False and resumed["status"] == "already_exists", f"after cancel: {resumed}"
    assert resumed["template_name"] == "kubernetes", resumed


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


async def both_sessions(connect) -> dict:
    """The main session and the cancel session, side by side, each on its own connection."""
    out: dict = {}

    async def run_main() -> None:
        async with connect() as session:
            out.update(await main_session(session))

    async def run_cancel() -> None:
        async with connect() as session:
            await cancel_session(session)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run_main)
        tg.start_soon(run_cancel)
    return out


async def main() -> int:
    runners = {"stdio": over_stdio, "sse": over_sse}
    results: dict[str, object] = {}

    async def one(name: str) -> None:
        try:
            results[name] = await both_sessions(runners[name])
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
    counts = "/".join(str(results[name]["progress"]) for name in TRANSPORTS)
    took = max(results[name]["took"] for name in TRANSPORTS)
    print(f"python-sdk: ok ({', '.join(TRANSPORTS)}; create with {counts} progress notifications over {took:.1f} s; isError; cancel + resume)")
    return 0

if __name__ == "__main__":
    sys.exit(anyio.run(main))
