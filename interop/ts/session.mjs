// A scripted MCP session with the official TypeScript SDK client, over stdio and over
// Streamable HTTP, against `coder-workspace-mcp` backed by the simulated Coder.
//
// env: INTEROP_BIN (the binary), INTEROP_CODER_URL + INTEROP_TOKEN (the simulated Coder),
//      INTEROP_MCP_URL (a `serve` instance's /mcp), INTEROP_TRANSPORTS (default "stdio,http").
// Prints one line per transport; exits non-zero on the first failed assertion.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport, getDefaultEnvironment } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { CallToolResultSchema } from "@modelcontextprotocol/sdk/types.js";

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const BIN = env("INTEROP_BIN");
const CODER_URL = env("INTEROP_CODER_URL");
const TOKEN = env("INTEROP_TOKEN");
const transports = (process.env.INTEROP_TRANSPORTS || "stdio,http").split(",");

// The SDK validates structured results against the tools' outputSchema with ajv, which warns
// (console.warn) about formats it does not know. Collected and reported, not fatal.
const warnings = new Set();
console.warn = (...args) => warnings.add(args.join(" ").replace(/ at path .*/, ""));

// The create in the simulator takes ~8 s. A per-request timeout well below that only holds
// because every progress notification resets it (resetTimeoutOnProgress).
const CREATE_TIMEOUT_MS = 4000;
const CREATE_MAX_TOTAL_MS = 60000;

function connectors(name) {
  if (name === "stdio") {
    return () =>
      new StdioClientTransport({
        command: BIN,
        args: ["stdio", "--max-call-wait", "0"],
        env: { ...getDefaultEnvironment(), CODER_URL, CODER_SESSION_TOKEN: TOKEN },
        stderr: "pipe",
      });
  }
  if (name === "http") {
    const url = new URL(env("INTEROP_MCP_URL"));
    return () =>
      new StreamableHTTPClientTransport(url, {
        requestInit: { headers: { Authorization: `Bearer ${TOKEN}` } },
      });
  }
  throw new Error(`unknown transport ${name}`);
}

async function open(makeTransport, label) {
  const client = new Client({ name: `interop-ts-${label}`, version: "1.0.0" });
  // SDK 1.x dispatches notifications a microtask after the message is read, but responses at
  // once: when the final progress notification and the result arrive in one read, the result
  // retires the progress handler first and the SDK reports the progress to onerror as having an
  // "unknown token" (typescript-sdk#2580). Those are kept as `late`: sent in order by the server,
  // dropped by the client.
  const late = [];
  const errors = [];
  client.onerror = (err) => {
    const m = /progress notification for an unknown token: (\{.*\})$/s.exec(err?.message ?? "");
    if (m) late.push(JSON.parse(m[1]).params);
    else errors.push(err);
  };
  const transport = makeTransport();
  let stderr = "";
  transport.stderr?.on("data", (chunk) => (stderr += chunk));
  await client.connect(transport);
  return {
    client,
    transport,
    stderr: () => stderr,
    late,
    errors,
    async close() {
      if (transport instanceof StreamableHTTPClientTransport) await transport.terminateSession();
      await client.close();
    },
  };
}

function structured(result, what) {
  assert.equal(result.isError ?? false, false, `${what}: isError: ${JSON.stringify(result.content)}`);
  assert.ok(result.structuredContent, `${what}: no structuredContent`);
  // The text content mirrors the structured result for clients that ignore it.
  const text = result.content.find((c) => c.type === "text");
  assert.ok(text, `${what}: no text content`);
  assert.deepEqual(JSON.parse(text.text), result.structuredContent, `${what}: text != structuredContent`);
  return result.structuredContent;
}

function checkProgress(events, what) {
  assert.ok(events.length >= 3, `${what}: expected >= 3 progress notifications, got ${events.length}`);
  for (let i = 0; i < events.length; i++) {
    const e = events[i];
    assert.equal(e.total, 100, `${what}: progress total`);
    assert.ok(typeof e.message === "string" && e.message.length > 0, `${what}: progress without message`);
    assert.ok(e.message.length <= 200, `${what}: progress message too long: ${e.message}`);
    if (i > 0) assert.ok(e.progress > events[i - 1].progress, `${what}: progress not strictly increasing: ${JSON.stringify(events)}`);
  }
  const last = events.at(-1);
  assert.equal(last.progress, 100, `${what}: last progress`);
  assert.match(last.message, /ready/, `${what}: last progress message`);
}

async function mainSession(makeTransport, label) {
  const s = await open(makeTransport, label);
  const { client } = s;
  try {
    // initialize: who we are, what we offer, how to use it.
    const info = client.getServerVersion();
    assert.equal(info.name, "coder-workspace-mcp");
    assert.match(info.version, /^\d+\.\d+\.\d+/);
    const caps = client.getServerCapabilities();
    assert.ok(caps.tools, "tools capability");
    const instructions = client.getInstructions();
    assert.ok(instructions, "instructions");
    for (const tool of ["list_templates", "read_template", "create_workspace"]) assert.ok(instructions.includes(tool), `instructions mention ${tool}`);
    await client.ping();

    // tools/list: names, titles, schemas, annotations.
    const { tools } = await client.listTools();
    const byName = Object.fromEntries(tools.map((t) => [t.name, t]));
    assert.deepEqual(Object.keys(byName).sort(), ["create_workspace", "list_templates", "read_template"]);
    for (const t of tools) {
      assert.ok(t.title || t.annotations?.title, `${t.name}: title`);
      assert.ok(t.description, `${t.name}: description`);
      assert.equal(t.inputSchema.type, "object", `${t.name}: inputSchema`);
      assert.equal(t.outputSchema?.type, "object", `${t.name}: outputSchema`);
    }
    // The schemas reach the client exactly as committed in schemas/ (JSON Schema 2020-12:
    // `$schema`, `$defs` and `$ref` intact; what the suite's json-schema-2020-12 checks).
    for (const t of tools) {
      for (const kind of ["input", "output"]) {
        const committed = JSON.parse(readFileSync(new URL(`../../schemas/${t.name}.${kind}.json`, import.meta.url), "utf8"));
        assert.deepEqual(t[`${kind}Schema`], committed, `${t.name}: ${kind}Schema differs from schemas/${t.name}.${kind}.json`);
      }
    }
    assert.match(byName.read_template.outputSchema.$schema, /2020-12/);
    assert.ok(byName.read_template.outputSchema.$defs, "read_template outputSchema $defs");
    for (const name of ["list_templates", "read_template"]) {
      assert.equal(byName[name].annotations?.readOnlyHint, true, `${name}: readOnlyHint`);
      assert.equal(byName[name].annotations?.idempotentHint, true, `${name}: idempotentHint`);
    }
    const createAnn = byName.create_workspace.annotations ?? {};
    assert.equal(createAnn.readOnlyHint, false, "create_workspace: readOnlyHint");
    assert.equal(createAnn.idempotentHint, true, "create_workspace: idempotentHint");
    assert.equal(createAnn.openWorldHint, true, "create_workspace: openWorldHint");
    assert.deepEqual(byName.create_workspace.inputSchema.required, ["template_id"]);

    // list_templates → read_template.
    const list = structured(await client.callTool({ name: "list_templates", arguments: {} }), "list_templates");
    assert.ok(list.templates.length >= 2, "templates listed");
    const docker = list.templates.find((t) => t.name === "docker");
    assert.ok(docker, "docker template listed");
    const filtered = structured(await client.callTool({ name: "list_templates", arguments: { query: "kube" } }), "list_templates query");
    assert.deepEqual(filtered.templates.map((t) => t.name), ["kubernetes"]);

    const read = structured(await client.callTool({ name: "read_template", arguments: { template_id: docker.id } }), "read_template");
    assert.equal(read.template.id, docker.id);
    const params = Object.fromEntries(read.parameters.map((p) => [p.name, p]));
    for (const p of ["cpu", "region", "dotfiles_uri"]) assert.ok(params[p], `parameter ${p}`);
    const region = params.region.options.map((o) => o.value).find((v) => v !== params.region.default_value) ?? params.region.default_value;

    // A tool error comes back as a result with isError, with a message a model can act on.
    const bad = await client.callTool({ name: "read_template", arguments: { template_id: "00000000-0000-0000-0000-000000000000" } });
    assert.equal(bad.isError, true, "unknown template → isError");
    assert.ok(bad.content?.[0]?.text?.length > 0, "error text");
    const badParam = await client.callTool({ name: "create_workspace", arguments: { template_id: docker.id, parameters: { region: "mars" } } });
    assert.equal(badParam.isError, true, "invalid parameter value → isError");
    assert.ok(badParam.content[0].text.includes(region), `error lists valid choices: ${badParam.content[0].text}`);

    // create_workspace with progress; the short timeout only holds thanks to progress.
    const progress = [];
    const arrivals = [];
    const lateBefore = s.late.length;
    const started = Date.now();
    const created = structured(
      await client.callTool(
        { name: "create_workspace", arguments: { template_id: docker.id, parameters: { region } } },
        CallToolResultSchema,
        { onprogress: (p) => (progress.push(p), arrivals.push(Date.now())), resetTimeoutOnProgress: true, timeout: CREATE_TIMEOUT_MS, maxTotalTimeout: CREATE_MAX_TOTAL_MS },
      ),
      "create_workspace",
    );
    const took = Date.now() - started;
    const dropped = s.late.slice(lateBefore);
    checkProgress([...progress, ...dropped], "create_workspace");
    assert.equal(created.created, true);
    assert.equal(created.template_id, docker.id);
    assert.equal(created.template_name, "docker");
    assert.equal(created.workspace_status, "running");
    assert.ok(created.workspace_id && created.workspace_name && created.agent_name && created.owner, "workspace identity");
    assert.match(created.url, /^http/);

    // Idempotent per session: the same workspace again, without a new build.
    const again = structured(await client.callTool({ name: "create_workspace", arguments: { template_id: docker.id, parameters: { region } } }), "create_workspace again");
    assert.equal(again.created, false);
    assert.equal(again.status, "already_exists");
    assert.equal(again.workspace_id, created.workspace_id);

    const maxGap = Math.max(...arrivals.map((t, i) => t - (i ? arrivals[i - 1] : started)));
    assert.ok(took > CREATE_TIMEOUT_MS, `the create (${took} ms) should outlast the per-request timeout`);
    assert.deepEqual(s.errors, [], "client errors");
    return { progress: progress.length, dropped: dropped.length, took, maxGap };
  } catch (err) {
    if (s.stderr()) err.message += `\n--- server stderr ---\n${s.stderr().slice(-4000)}`;
    throw err;
  } finally {
    await s.close().catch(() => {});
  }
}

// notifications/cancelled: an aborted create stops at once, the session keeps serving, and
// the next call picks up the workspace the cancelled one started.
async function cancelSession(makeTransport, label) {
  const s = await open(makeTransport, `${label}-cancel`);
  const { client } = s;
  try {
    const list = structured(await client.callTool({ name: "list_templates", arguments: {} }), "list_templates");
    const kube = list.templates.find((t) => t.name === "kubernetes");
    const controller = new AbortController();
    const progress = [];
    const call = client.callTool({ name: "create_workspace", arguments: { template_id: kube.id } }, CallToolResultSchema, {
      signal: controller.signal,
      onprogress: (p) => {
        progress.push(p);
        if (progress.length === 2) controller.abort("interop: cancel");
      },
    });
    await assert.rejects(call, (err) => /cancel|abort/i.test(String(err)), "aborted call rejects");
    assert.ok(progress.length >= 2, "progress before cancel");
    await client.ping();
    const resumed = structured(
      await client.callTool({ name: "create_workspace", arguments: { template_id: kube.id } }, CallToolResultSchema, {
        onprogress: () => {},
        resetTimeoutOnProgress: true,
        timeout: CREATE_TIMEOUT_MS,
        maxTotalTimeout: CREATE_MAX_TOTAL_MS,
      }),
      "create_workspace after cancel",
    );
    assert.equal(resumed.created, false, `after cancel: ${JSON.stringify(resumed)}`);
    assert.equal(resumed.status, "already_exists");
    assert.equal(resumed.template_name, "kubernetes");
  } catch (err) {
    if (s.stderr()) err.message += `\n--- server stderr ---\n${s.stderr().slice(-4000)}`;
    throw err;
  } finally {
    await s.close().catch(() => {});
  }
}

const results = await Promise.allSettled(
  transports.map(async (name) => {
    const make = connectors(name);
    const [main] = await Promise.all([mainSession(make, name), cancelSession(make, name)]);
    return { name, ...main };
  }),
);
const ok = results.filter((r) => r.status === "fulfilled").map((r) => r.value);
const failures = results.flatMap((r, i) => (r.status === "rejected" ? [[transports[i], r.reason]] : []));
for (const v of ok) {
  const drop = v.dropped ? ` + ${v.dropped} dropped by the SDK, typescript-sdk#2580` : "";
  console.error(`${v.name}: ${v.progress} progress notifications${drop} over ${(v.took / 1000).toFixed(1)} s, longest gap ${v.maxGap} ms`);
}
for (const w of warnings) console.error(`SDK warning: ${w}`);
if (failures.length) {
  for (const [name, err] of failures) console.log(`typescript-sdk: FAILED over ${name}: ${err?.stack ?? err}`);
  process.exit(1);
}
// per transport: received[+dropped by the SDK after the result, typescript-sdk#2580]
const progress = ok.map((v) => `${v.progress}${v.dropped ? `+${v.dropped}` : ""}`).join("/");
const secs = Math.max(...ok.map((v) => v.took)) / 1000;
const warned = warnings.size ? `; SDK warnings: ${[...warnings].map((w) => w.replace(/ ignored in schema$/, "")).join(", ")}` : "";
console.log(
  `typescript-sdk: ok (${transports.join(", ")}; create with ${progress} progress notifications over ${secs.toFixed(1)} s, ` +
    `${CREATE_TIMEOUT_MS / 1000} s request timeout reset by progress; isError; cancel + resume${warned})`,
);
