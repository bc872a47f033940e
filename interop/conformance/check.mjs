// Compares a conformance-suite run (its -o output directory) with baseline.yml, check by
// check, and prints one summary line. Exit 1 on any difference.
//
//   node check.mjs BASELINE.yml OUTPUT_DIR      compare
//   node check.mjs BASELINE.yml --table         print the markdown result table (docs)
import { readFileSync, readdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { parse } from "yaml";

const [baselinePath, outDir] = process.argv.slice(2);
if (!baselinePath || !outDir) {
  console.error("usage: node check.mjs BASELINE.yml (OUTPUT_DIR | --table)");
  process.exit(2);
}
const baseline = parse(readFileSync(baselinePath, "utf8"));
const scenarios = baseline.scenarios ?? {};
const problems = [];

// The suite's --expected-failures list must agree with the per-scenario expectations.
const notPass = Object.keys(scenarios).filter((s) => scenarios[s].expect !== "pass").sort();
const listed = [...(baseline.server ?? [])].sort();
if (JSON.stringify(notPass) !== JSON.stringify(listed)) {
  problems.push(`baseline: \`server:\` list ${JSON.stringify(listed)} != scenarios not expected to pass ${JSON.stringify(notPass)}`);
}
for (const [name, s] of Object.entries(scenarios)) {
  if (!["pass", "partial", "not-applicable"].includes(s.expect)) problems.push(`baseline: ${name}: bad expect ${s.expect}`);
  if (s.expect !== "pass" && (!s.reason || !s.error)) problems.push(`baseline: ${name}: needs reason and error`);
}

if (outDir === "--table") {
  const label = { pass: "pass", partial: "pass in part", "not-applicable": "not applicable" };
  console.log("| scenario | result | checks | what it shows, or why it does not apply |");
  console.log("|---|---|---|---|");
  for (const [name, s] of Object.entries(scenarios)) {
    const checks = Object.entries(s.checks).map(([id, st]) => `${id}: ${st}`).join("<br>");
    console.log(`| \`${name}\` | ${label[s.expect]} | ${checks} | ${(s.reason ?? "").replace(/\s+/g, " ").trim()} |`);
  }
  process.exit(problems.length ? 1 : 0);
}

// One directory per scenario: server-<scenario>-<ISO timestamp>/checks.json
const runs = new Map();
for (const dir of readdirSync(outDir)) {
  const m = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(dir);
  const file = join(outDir, dir, "checks.json");
  if (!m || !existsSync(file)) continue;
  if (runs.has(m[1])) problems.push(`${m[1]}: ran more than once (stale output directory?)`);
  runs.set(m[1], JSON.parse(readFileSync(file, "utf8")));
}

const counts = { pass: 0, partial: 0, "not-applicable": 0 };
for (const [name, checks] of runs) {
  const expected = scenarios[name];
  if (!expected) {
    problems.push(`${name}: new scenario, not in the baseline (add it, with a reason if it does not pass)`);
    continue;
  }
  const graded = checks.filter((c) => c.status !== "INFO");
  const actual = Object.fromEntries(graded.map((c) => [c.id, c.status]));
  if (graded.length !== Object.keys(actual).length) problems.push(`${name}: a check id reported twice`);
  const want = expected.checks ?? {};
  for (const id of new Set([...Object.keys(want), ...Object.keys(actual)])) {
    if (want[id] !== actual[id]) {
      const msg = graded.find((c) => c.id === id)?.errorMessage;
      problems.push(`${name}: check ${id}: expected ${want[id] ?? "(absent)"}, got ${actual[id] ?? "(absent)"}${msg ? ` — ${msg}` : ""}`);
    }
  }
  if (expected.error) {
    const re = new RegExp(expected.error.replace(/[.*+?^${}()|[\]\\]/g, "\\$&"));
    for (const c of graded.filter((c) => c.status !== "SUCCESS")) {
      if (!re.test(c.errorMessage ?? "")) problems.push(`${name}: check ${c.id} failed for another reason than recorded: ${c.errorMessage}`);
    }
  }
  for (const [id, fields] of Object.entries(expected.details ?? {})) {
    const details = graded.find((c) => c.id === id)?.details ?? {};
    for (const [k, v] of Object.entries(fields)) {
      if (details[k] !== v) problems.push(`${name}: check ${id}: details.${k} expected ${JSON.stringify(v)}, got ${JSON.stringify(details[k])}`);
    }
  }
  counts[expected.expect]++;
}
for (const name of Object.keys(scenarios)) if (!runs.has(name)) problems.push(`${name}: in the baseline but not run`);

for (const p of problems) console.log(`conformance: MISMATCH ${p}`);
const summary = `${counts.pass} passed, ${counts.partial} passed in part, ${counts["not-applicable"]} not applicable`;
console.log(problems.length ? `conformance: FAILED (${problems.length} differences from baseline.yml; ${summary})` : `conformance: ${summary} (expected)`);
process.exit(problems.length ? 1 : 0);
