/**
 * The measure of an attack: a neighbour site's latency before and during it
 * (from a probe in a process of its own) and the gateway's memory, sampled
 * all along. Every attack test asserts the same: no failed request, p99
 * within 50 ms of the baseline, the gateway's memory bounded.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { delay, type TestServer } from "../../helpers/server.ts";

/** A page of a site that is not under attack. */
export interface Neighbour {
  host: string;
  path: string;
}

/** Latencies of one probe run. */
export interface ProbeStats {
  requests: number;
  p50: number;
  p99: number;
  max: number;
  failures: string[];
}

/** What an attack cost the neighbour and the gateway. */
export interface AttackReport {
  baseline: ProbeStats;
  during: ProbeStats;
  rssBeforeMiB: number;
  rssPeakMiB: number;
  /** The gateway's CPU time over the attack's wall time (1 = a whole core). */
  cpuShare: number;
  /** The gateway's CPU time during the attack, in seconds. */
  cpuSeconds: number;
}

const PROBE = join(import.meta.dirname!, "probe.ts");

/** The site every attack test measures: one page on its own host. */
export const NEIGHBOUR_SITE = {
  "site.json": JSON.stringify({ hosts: ["nb.test"] }),
  "autorun/ar_nb.ts":
    `import { hosts } from "sandflare";\nhosts.get("nb.test").add("/", () => "neighbour");\n`,
};

/** The neighbour's page. */
export const NEIGHBOUR: Neighbour = { host: "nb.test", path: "/" };

/**
 * Site code (JavaScript) defining `frame(message)`: the bytes of a frame as
 * the gateway reads them, for sites that forge their own.
 */
export const FRAME_JS = `function frame(message) {
  const json = new TextEncoder().encode(JSON.stringify(message));
  const out = new Uint8Array(8 + json.length);
  new DataView(out.buffer).setUint32(0, json.length);
  out.set(json, 8);
  return out;
}`;

/** Resident memory of a process, in MiB. */
export function rssMiB(pid: number): number {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? "0") / 1024;
}

/** CPU time of a process so far (user and system), in seconds. */
export function cpuSeconds(pid: number): number {
  const stat = Deno.readTextFileSync(`/proc/${pid}/stat`);
  // Fields after the command (which may hold spaces) end with ")".
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Runs the neighbour probe (a process of its own) on `port` for `ms`. */
export async function probe(
  port: number,
  neighbour: Neighbour,
  ms: number,
): Promise<ProbeStats> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      PROBE,
      String(port),
      neighbour.host,
      neighbour.path,
      String(ms),
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  if (!out.success) {
    throw new Error(
      `The probe failed: ${new TextDecoder().decode(out.stderr)}`,
    );
  }
  const { latencies, failures } = JSON.parse(text) as {
    latencies: number[];
    failures: string[];
  };
  const sorted = latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] ?? 0;
  return {
    requests: sorted.length,
    p50: at(0.5),
    p99: at(0.99),
    max: sorted.at(-1) ?? 0,
    failures,
  };
}

/**
 * Measures the neighbour for `baselineMs`, then again while `attack` runs
 * (for `attackMs` plus a second, to see the gateway recover), sampling the
 * gateway's memory meanwhile.
 */
export async function underAttack(
  server: TestServer,
  neighbour: Neighbour,
  attackMs: number,
  attack: () => Promise<void>,
  baselineMs = 1500,
): Promise<AttackReport> {
  const baseline = await probe(server.port, neighbour, baselineMs);
  const pid = server.child.pid;
  const rssBeforeMiB = rssMiB(pid);
  let rssPeakMiB = rssBeforeMiB;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      try {
        rssPeakMiB = Math.max(rssPeakMiB, rssMiB(pid));
      } catch {
        return; // the server is gone (the test failed and stopped it)
      }
      await delay(50);
    }
  })();
  const during = probe(server.port, neighbour, attackMs + 1000);
  await delay(100); // the probe is running before the attack starts
  const cpuBefore = cpuSeconds(pid);
  const started = performance.now();
  try {
    await attack();
  } catch (err) {
    sampling = false;
    await during.catch(() => {});
    throw err;
  }
  const cpuSpent = cpuSeconds(pid) - cpuBefore;
  const cpuShare = cpuSpent / ((performance.now() - started) / 1000);
  const report = {
    baseline,
    during: await during,
    rssBeforeMiB,
    rssPeakMiB,
    cpuShare,
    cpuSeconds: cpuSpent,
  };
  sampling = false;
  await sampler;
  report.rssPeakMiB = rssPeakMiB;
  return report;
}

/** One line for the test's output (and the closing note). */
export function describe(name: string, r: AttackReport): string {
  const f = (n: number) => n.toFixed(1);
  return `${name}: neighbour p50/p99/max ${f(r.baseline.p50)}/${
    f(r.baseline.p99)
  }/${f(r.baseline.max)} ms before, ${f(r.during.p50)}/${f(r.during.p99)}/${
    f(r.during.max)
  } ms during (${r.during.requests} requests, ${r.during.failures.length} failed); gateway RSS ${
    f(r.rssBeforeMiB)
  } → peak ${f(r.rssPeakMiB)} MiB, CPU ${(r.cpuShare * 100).toFixed(0)} %`;
}

/**
 * No failed request, p99 within 50 ms of the baseline (unless said
 * otherwise), memory bounded and, for floods, the gateway's CPU share
 * bounded.
 */
export function assertUnharmed(
  name: string,
  r: AttackReport,
  maxGrowthMiB = 100,
  maxCpuShare = 1,
  maxP99RiseMs = 50,
): void {
  // deno-lint-ignore no-console -- the figures are the point of the test
  console.log(describe(name, r));
  assert.deepEqual(r.during.failures, [], `${name}: failed requests`);
  assert.ok(r.during.requests > 10, `${name}: the neighbour was not served`);
  assert.ok(
    r.during.p99 <= r.baseline.p99 + maxP99RiseMs,
    `${name}: the neighbour's p99 went from ${r.baseline.p99.toFixed(1)} to ${
      r.during.p99.toFixed(1)
    } ms`,
  );
  assert.ok(
    r.cpuShare <= maxCpuShare,
    `${name}: the gateway spent ${(r.cpuShare * 100).toFixed(0)} % of a core`,
  );
  assert.ok(
    r.rssPeakMiB - r.rssBeforeMiB < maxGrowthMiB,
    `${name}: the gateway grew from ${r.rssBeforeMiB.toFixed(0)} to ${
      r.rssPeakMiB.toFixed(0)
    } MiB`,
  );
}

/** Runs a script (a flood client) in a process of its own until it ends. */
export async function runClient(
  code: string,
  args: string[],
): Promise<string> {
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, code);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-net", file, ...args],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    if (!out.success) throw new Error(`The attack client failed: ${text}`);
    return text;
  } finally {
    await Deno.remove(file);
  }
}
