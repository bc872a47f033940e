// Smoke test of the MCP Inspector CLI, with the command lines a user pastes:
//
//   npx @modelcontextprotocol/inspector --cli -e CODER_URL=... -e CODER_SESSION_TOKEN=... \
//     coder-workspace-mcp stdio --method tools/list
//   ... coder-workspace-mcp stdio --method tools/call --tool-name list_templates [--tool-arg query=kube]
//   npx @modelcontextprotocol/inspector --cli http://.../mcp --header "Authorization: Bearer ..." \
//     --protocol-era modern --method tools/call --tool-name create_workspace --tool-args-json '{...}'
//
// `coder-workspace-mcp` is found on PATH (a link to $INTEROP_BIN). tools/list runs with
// --strict, which exits 6 on error-severity schema portability problems. The last one speaks
// protocol 2026-07-28 (stateless) to `serve` and declares the Tasks extension
// (io.modelcontextprotocol/tasks, SEP-2663; the Inspector does by default), so
// create_workspace is answered with a task that the Inspector polls with tasks/get; it runs
// through lib/recording-proxy.mjs, which shows what went over the wire.
// env: INTEROP_BIN, INTEROP_CODER_URL, INTEROP_TOKEN, INTEROP_MCP_URL.
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, symlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startRecordingProxy } from "../lib/recording-proxy.mjs";

const BIN = resolve(process.env.INTEROP_BIN);
const CODER_URL = process.env.INTEROP_CODER_URL;
const TOKEN = process.env.INTEROP_TOKEN;
const MCP_URL = process.env.INTEROP_MCP_URL;
const MODERN = "2026-07-28";
const TASKS = "io.modelcontextprotocol/tasks";

const binDir = mkdtempSync(join(tmpdir(), "interop-inspector-"));
symlinkSync(BIN, join(binDir, "coder-workspace-mcp"));
const env = { ...process.env, PATH: `${binDir}:${process.env.PATH}` };

// npx finds the pinned Inspector in interop/node_modules (cwd); --no: never download.
async function inspector(...args) {
  const argv = ["--no", "--", "@modelcontextprotocol/inspector", "--cli", ...args];
  const where = `npx ${argv.join(" ").replaceAll(TOKEN, "<token>")}`;
  const child = spawn("npx", argv, { cwd: new URL("..", import.meta.url), env, stdio: ["ignore", "pipe", "pipe"] });
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (c) => (stdout += c));
  child.stderr.on("data", (c) => (stderr += c));
  const timer = setTimeout(() => child.kill("SIGKILL"), 60000);
  const status = await new Promise((done) => child.on("close", (code) => done(code)));
  clearTimeout(timer);
  assert.equal(status, 0, `${where}: exit ${status}\n${stdout}\n${stderr}`);
  try {
    return { json: JSON.parse(stdout), stderr };
  } catch {
    assert.fail(`${where}: stdout is not JSON:\n${stdout}\n${stderr}`);
  }
}

const overStdio = (...args) =>
  inspector("-e", `CODER_URL=${CODER_URL}`, "-e", `CODER_SESSION_TOKEN=${TOKEN}`, "-e", "RUST_LOG=warn", "coder-workspace-mcp", "stdio", ...args);

async function stdioSteps() {
  const list = await overStdio("--method", "tools/list", "--strict");
  const names = list.json.tools.map((t) => t.name).sort();
  assert.deepEqual(names, ["create_workspace", "list_templates", "read_template"]);
  const warnings = (list.stderr.match(/^Warning: tool /gm) ?? []).length;

  const call = await overStdio("--method", "tools/call", "--tool-name", "list_templates");
  assert.equal(call.json.isError ?? false, false, JSON.stringify(call.json));
  const all = call.json.structuredContent.templates.map((t) => t.name);
  assert.ok(all.includes("docker") && all.includes("kubernetes"), `templates: ${all}`);

  const query = await overStdio("--method", "tools/call", "--tool-name", "list_templates", "--tool-arg", "query=kube");
  assert.deepEqual(query.json.structuredContent.templates.map((t) => t.name), ["kubernetes"]);
  return { warnings };
}

// The docker template's id for the task, without waiting for an Inspector run: one stateless
// 2026-07-28 request (`_meta` carries the protocol version, client info and capabilities).
async function dockerTemplate() {
  const meta = { "io.modelcontextprotocol/protocolVersion": MODERN, "io.modelcontextprotocol/clientInfo": { name: "interop", version: "1.0.0" }, "io.modelcontextprotocol/clientCapabilities": {} };
  const res = await fetch(MCP_URL, {
    method: "POST",
    headers: { authorization: `Bearer ${TOKEN}`, "content-type": "application/json", accept: "application/json, text/event-stream", "mcp-protocol-version": MODERN, "mcp-method": "tools/call", "mcp-name": "list_templates" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 1, method: "tools/call", params: { name: "list_templates", arguments: { query: "docker" }, _meta: meta } }),
  });
  const text = await res.text();
  assert.equal(res.status, 200, text);
  const data = text.split("\n").find((l) => l.startsWith("data:"))?.slice(5) ?? text;
  const docker = JSON.parse(data).result?.structuredContent?.templates?.[0];
  assert.equal(docker?.name, "docker", text);
  return docker;
}

// create_workspace as a task, over Streamable HTTP at 2026-07-28 through the recording proxy.
async function taskStep(docker) {
  const proxy = await startRecordingProxy(MCP_URL);
  try {
    const name = `insp-${randomBytes(3).toString("hex")}-task`;
    const out = await inspector(proxy.url, "--header", `Authorization: Bearer ${TOKEN}`, "--protocol-era", "modern",
      "--method", "tools/call", "--tool-name", "create_workspace", "--tool-args-json", JSON.stringify({ template_id: docker.id, name }));
    const result = out.json;
    assert.equal(result.isError ?? false, false, JSON.stringify(result));
    assert.equal(result.structuredContent?.created, true, JSON.stringify(result));
    assert.equal(result.structuredContent.workspace_name, name);
    assert.equal(result.structuredContent.workspace_status, "running");

    const xs = proxy.exchanges;
    const answer = (x) => x.messages?.find((m) => m.id !== undefined && m.id === x.body?.id);
    // Stateless: POSTs only (no GET stream, no DELETE), each with the 2026-07-28 headers; no
    // session id either way; server/discover, never initialize.
    for (const x of xs) {
      const what = `${x.method} ${x.headers["mcp-method"]}`;
      assert.equal(x.method, "POST", `${what}: stateless is POST only`);
      assert.equal(x.headers["mcp-protocol-version"], MODERN, `${what}: MCP-Protocol-Version`);
      assert.equal(x.headers["mcp-method"], x.body?.method, `${what}: Mcp-Method`);
      assert.ok(!x.headers["mcp-session-id"] && !x.responseHeaders?.["mcp-session-id"], `${what}: a session id`);
      assert.equal(x.status, 200, `${what}: HTTP ${x.status}`);
    }
    const methods = xs.map((x) => x.body?.method);
    assert.equal(methods[0], "server/discover", `first request: ${methods}`);
    assert.ok(!methods.includes("initialize"), `initialize sent: ${methods}`);

    // tools/call with the extension declared in the request's own capabilities → a task.
    const calls = xs.filter((x) => x.body?.method === "tools/call" && x.body.params?.name === "create_workspace");
    assert.equal(calls.length, 1, `create_workspace calls: ${calls.length}`);
    const [call] = calls;
    assert.equal(call.headers["mcp-name"], "create_workspace", "Mcp-Name of tools/call");
    const caps = call.body.params._meta?.["io.modelcontextprotocol/clientCapabilities"];
    assert.ok(caps?.extensions?.[TASKS], `the tools/call does not declare ${TASKS}: ${JSON.stringify(caps)}`);
    const task = answer(call)?.result;
    assert.equal(task?.resultType, "task", `tools/call answer: ${JSON.stringify(answer(call))}`);
    assert.equal(task.status, "working");
    assert.ok(task.taskId && task.pollIntervalMs > 0 && task.ttlMs > 0, JSON.stringify(task));

    // tasks/get with Mcp-Name = the task id, no faster than pollIntervalMs, until completed.
    const polls = xs.filter((x) => x.body?.method === "tasks/get");
    // At least one (a claimed prebuilt workspace can be ready before the second poll).
    assert.ok(polls.length >= 1, `tasks/get: ${polls.length}`);
    const seen = polls.map((x) => answer(x)?.result);
    polls.forEach((x, i) => {
      assert.equal(x.headers["mcp-name"], task.taskId, "Mcp-Name of tasks/get");
      assert.equal(x.body.params.taskId, task.taskId);
      assert.equal(seen[i]?.resultType, "complete", `tasks/get answer: ${JSON.stringify(answer(x))}`);
    });
    const statuses = seen.map((t) => t.status);
    assert.equal(statuses.at(-1), "completed", `statuses: ${statuses}`);
    assert.ok(statuses.slice(0, -1).every((s) => s === "working"), `statuses: ${statuses}`);
    assert.ok(seen.every((t) => t.statusMessage), "statusMessage on every task");
    const times = [call.at, ...polls.map((x) => x.at)];
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    assert.ok(gaps.every((g) => g >= task.pollIntervalMs * 0.9), `polled faster than ${task.pollIntervalMs} ms: ${gaps}`);
    // The task's result is the normal CallToolResult, and what the Inspector printed.
    assert.deepEqual(seen.at(-1).result.structuredContent, result.structuredContent, "the task's result is what the Inspector printed");
    console.error(`task: ${methods.join(", ")}; statusMessage: ${[...new Set(seen.map((t) => t.statusMessage))].join(" | ")}`);
    return { polls: polls.length, interval: task.pollIntervalMs };
  } finally {
    await proxy.close();
  }
}

try {
  // The task (about as long as a build) alongside the stdio steps, which run one at a time.
  const [stdio, task] = await Promise.all([stdioSteps(), dockerTemplate().then(taskStep)]);
  console.log(
    `inspector-cli: ok (stdio: tools/list --strict, ${stdio.warnings} schema portability warnings, 0 errors; tools/call list_templates with and without --tool-arg; ` +
      `http ${MODERN} stateless (--protocol-era modern): create_workspace as a task (Tasks extension), ${task.polls} tasks/get at pollIntervalMs ${task.interval}, the normal result)`,
  );
} catch (err) {
  console.log(`inspector-cli: FAILED: ${err.message}`);
  process.exitCode = 1;
} finally {
  rmSync(binDir, { recursive: true, force: true });
}
