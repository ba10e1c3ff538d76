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
  const ceiling = /^(raw Deno\.serve|bare design)/;
  for (const r of parsed.load) {
    assert.equal(typeof r.scenario, "string");
    assert.ok(r.rps > 0, `${r.scenario}: ${r.rps} req/s`);
    // The ceiling rows are the baselines themselves.
    if (!ceiling.test(r.scenario)) {
      assert.ok(
        r.baselineRps > 0 && r.ratio > 0,
        `${r.scenario} has a baseline`,
      );
    }
    // CPU per request, of each process: the gateway's at least.
    assert.ok(r.cpu.gateway > 0, `${r.scenario}: CPU ${JSON.stringify(r.cpu)}`);
  }
  const scenarios = parsed.load.map((r: { scenario: string }) => r.scenario);
  for (
    const row of [
      "raw Deno.serve",
      "raw Deno.serveHttp",
      "bare design, Deno.serve",
      "bare design, Deno.serveHttp",
      "hello (a sandboxed page, 1 worker), browser-like request",
    ]
  ) {
    assert.ok(scenarios.includes(row), `no row "${row}"`);
  }
  const session = parsed.load.find((r: { scenario: string }) =>
    r.scenario.startsWith("session page (get + save) at 400/s, Redis")
  );
  assert.ok(session.cpu.redis > 0 && session.baselineCpu.gateway > 0);
  const hello = parsed.load.find((r: { scenario: string }) =>
    r.scenario === "hello (a sandboxed page, 1 worker)"
  );
  assert.equal(hello.baseline, "bare design, Deno.serveHttp");
  assert.ok(hello.cpu.sandbox > 0 && hello.baselineCpu.child > 0);
  assert.ok(Array.isArray(parsed.measures) && parsed.measures.length >= 3);
  for (const m of parsed.measures) {
    assert.ok(
      Number.isFinite(m.value) && m.value > 0,
      `${m.scenario}: ${m.value}`,
    );
  }
  for (
    const wake of [
      "request to a sleeping site (--idle-stop), --warm-spares=0",
      "request to a sleeping site (--idle-stop), its spare ready",
    ]
  ) {
    assert.ok(
      parsed.measures.some((m: { scenario: string }) => m.scenario === wake),
      `no measure "${wake}"`,
    );
  }
});
