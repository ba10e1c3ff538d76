/**
 * The benchmark harness runs and prints valid JSON (no timing assertions:
 * speed is measured by `deno task bench`, not by tests).
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { PROJECT_DIR } from "./helpers/server.ts";

Deno.test("deno task bench --json --quick prints results as JSON", async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-all",
      "--v8-flags=--enable-experimental-regexp-engine",
      join(PROJECT_DIR, "bench", "bench.ts"),
      "--json",
      "--quick",
    ],
    cwd: PROJECT_DIR,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(output.stdout);
  assert.equal(output.code, 0, new TextDecoder().decode(output.stderr));
  const parsed = JSON.parse(stdout);
  assert.ok(
    Array.isArray(parsed.load) && parsed.load.length >= 5,
    "every load scenario ran",
  );
  for (const r of parsed.load) {
    assert.equal(typeof r.scenario, "string");
    assert.ok(r.rps > 0, `${r.scenario}: ${r.rps} req/s`);
    assert.ok(r.baselineRps > 0 && r.ratio > 0, `${r.scenario} has a baseline`);
  }
  assert.ok(Array.isArray(parsed.measures) && parsed.measures.length >= 3);
  for (const m of parsed.measures) {
    assert.ok(
      Number.isFinite(m.value) && m.value > 0,
      `${m.scenario}: ${m.value}`,
    );
  }
});
