/**
 * `deno task bench`: the benchmark harness (SPEC §10).
 *
 * Scenarios so far:
 * - reload: save a site's script, poll until the new version is served;
 *   the time from the save to the first new answer (median, p90, max).
 *
 * `--json` prints the results as JSON; `--quick` runs fewer rounds (the
 * smoke test uses it).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { delay, startServer, writeSites } from "../tests/helpers/server.ts";

interface Result {
  scenario: string;
  unit: string;
  samples: number;
  median: number;
  p90: number;
  max: number;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(
    sorted.length - 1,
    Math.ceil((p / 100) * sorted.length) - 1,
  );
  return sorted[Math.max(0, i)]!;
}

function summarize(scenario: string, unit: string, samples: number[]): Result {
  const sorted = [...samples].sort((a, b) => a - b);
  return {
    scenario,
    unit,
    samples: samples.length,
    median: percentile(sorted, 50),
    p90: percentile(sorted, 90),
    max: sorted.at(-1) ?? NaN,
  };
}

const page = (version: number) => `
import { hosts } from "sandflare";
hosts.any.add("/bench-reload", () => "version ${version}");
`;

/** Save → served latency of a hot reload, in milliseconds. */
async function reloadLatency(rounds: number): Promise<Result> {
  const sitesDir = await writeSites({
    bench: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_bench.ts": page(0),
    },
  });
  const server = await startServer({ sitesDir });
  const samples: number[] = [];
  try {
    const script = join(sitesDir, "bench", "autorun", "ar_bench.ts");
    for (let version = 1; version <= rounds; version++) {
      const saved = performance.now();
      await Deno.writeTextFile(script, page(version));
      const want = `version ${version}`;
      while (true) {
        const res = await fetch(`${server.origin}/bench-reload`);
        if ((await res.text()) === want) break;
        if (performance.now() - saved > 10_000) {
          throw new Error(`reload ${version} not served in 10 s`);
        }
        await delay(2);
      }
      samples.push(performance.now() - saved);
      await delay(100); // let the old generation drain and exit
    }
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
  return summarize("reload (save → served)", "ms", samples);
}

function table(results: Result[]): string {
  const rows = [["scenario", "samples", "median", "p90", "max"]];
  for (const r of results) {
    rows.push([
      r.scenario,
      String(r.samples),
      `${r.median.toFixed(0)} ${r.unit}`,
      `${r.p90.toFixed(0)} ${r.unit}`,
      `${r.max.toFixed(0)} ${r.unit}`,
    ]);
  }
  const widths = rows[0]!.map((_, i) =>
    Math.max(...rows.map((r) => r[i]!.length))
  );
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join("  ")).join(
    "\n",
  );
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { json: { type: "boolean" }, quick: { type: "boolean" } },
  });
  const results = [await reloadLatency(values.quick ? 3 : 20)];
  const out = values.json
    ? JSON.stringify({ results }, null, 2)
    : table(results);
  Deno.stdout.writeSync(new TextEncoder().encode(out + "\n"));
}
