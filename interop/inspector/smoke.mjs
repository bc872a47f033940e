// Smoke test of the MCP Inspector CLI over stdio, with the command lines a user pastes:
//
//   npx @modelcontextprotocol/inspector --cli -e CODER_URL=... -e CODER_SESSION_TOKEN=... \
//     coder-workspace-mcp stdio --method tools/list
//   ... coder-workspace-mcp stdio --method tools/call --tool-name list_templates [--tool-arg query=kube]
//
// `coder-workspace-mcp` is found on PATH (a link to $INTEROP_BIN). tools/list runs with
// --strict, which exits 6 on error-severity schema portability problems.
// env: INTEROP_BIN, INTEROP_CODER_URL, INTEROP_TOKEN.
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { mkdtempSync, symlinkSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";

const BIN = resolve(process.env.INTEROP_BIN);
const CODER_URL = process.env.INTEROP_CODER_URL;
const TOKEN = process.env.INTEROP_TOKEN;

const binDir = mkdtempSync(join(tmpdir(), "interop-inspector-"));
symlinkSync(BIN, join(binDir, "coder-workspace-mcp"));
const env = { ...process.env, PATH: `${binDir}:${process.env.PATH}` };

function inspector(...args) {
  const argv = ["--no", "--", "@modelcontextprotocol/inspector", "--cli",
    "-e", `CODER_URL=${CODER_URL}`, "-e", `CODER_SESSION_TOKEN=${TOKEN}`, "-e", "RUST_LOG=warn",
    "coder-workspace-mcp", "stdio", ...args];
  // npx finds the pinned Inspector in interop/node_modules (cwd); --no: never download.
  const r = spawnSync("npx", argv, { cwd: new URL("..", import.meta.url), env, encoding: "utf8", timeout: 60000 });
  const where = `npx ${argv.join(" ").replace(TOKEN, "<token>")}`;
  assert.equal(r.status, 0, `${where}: exit ${r.status}\n${r.stdout}\n${r.stderr}`);
  try {
    return { json: JSON.parse(r.stdout), stderr: r.stderr };
  } catch {
    assert.fail(`${where}: stdout is not JSON:\n${r.stdout}\n${r.stderr}`);
  }
}

try {
  const list = inspector("--method", "tools/list", "--strict");
  const names = list.json.tools.map((t) => t.name).sort();
  assert.deepEqual(names, ["create_workspace", "list_templates", "read_template"]);
  const warnings = (list.stderr.match(/^Warning: tool /gm) ?? []).length;

  const call = inspector("--method", "tools/call", "--tool-name", "list_templates");
  assert.equal(call.json.isError ?? false, false, JSON.stringify(call.json));
  const all = call.json.structuredContent.templates.map((t) => t.name);
  assert.ok(all.includes("docker") && all.includes("kubernetes"), `templates: ${all}`);

  const query = inspector("--method", "tools/call", "--tool-name", "list_templates", "--tool-arg", "query=kube");
  assert.deepEqual(query.json.structuredContent.templates.map((t) => t.name), ["kubernetes"]);

  console.log(`inspector-cli: ok (stdio: tools/list --strict, ${warnings} schema portability warnings, 0 errors; tools/call list_templates with and without --tool-arg)`);
} catch (err) {
  console.log(`inspector-cli: FAILED: ${err.message}`);
  process.exitCode = 1;
} finally {
  rmSync(binDir, { recursive: true, force: true });
}
