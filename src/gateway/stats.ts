/**
 * `/stats`: per-site requests, errors, latency, restarts, reloads, memory
 * and open websockets — for local peers only, with nothing secret on it.
 *
 * @module
 */

import { escapeHtml } from "../shared/escape.ts";
import { type Answer, type RequestContext, send } from "./answer.ts";
import { wantsJson } from "./error_page.ts";
import { ROOT_SITE } from "../supervisor/sites.ts";
import type { Snapshot } from "../supervisor/snapshot.ts";
import type { SiteState } from "../supervisor/site_states.ts";

const WINDOW = 1024;

/** The latest request durations of each site. */
export class LatencyTracker {
  #samples = new Map<
    string,
    {
      values: Float64Array;
      next: number;
      count: number;
      status4xx: number;
      status5xx: number;
    }
  >();

  /** Records one request of `site` that took `ms` and was answered `status`. */
  record(site: string, ms: number, status = 200): void {
    let s = this.#samples.get(site);
    if (s === undefined) {
      this.#samples.set(
        site,
        s = {
          values: new Float64Array(WINDOW),
          next: 0,
          count: 0,
          status4xx: 0,
          status5xx: 0,
        },
      );
    }
    s.values[s.next] = ms;
    s.next = (s.next + 1) % WINDOW;
    s.count = Math.min(WINDOW, s.count + 1);
    if (status >= 500) s.status5xx++;
    else if (status >= 400) s.status4xx++;
  }

  /**
   * Answers of `site` with a 4xx and a 5xx status since the server started,
   * whoever made them: its pages, its Error hook, or the gateway for it.
   */
  statuses(site: string): { status4xx: number; status5xx: number } {
    const s = this.#samples.get(site);
    return { status4xx: s?.status4xx ?? 0, status5xx: s?.status5xx ?? 0 };
  }

  /** p50 and p99 of the latest requests (null when none). */
  percentiles(site: string): { p50: number; p99: number } | null {
    const s = this.#samples.get(site);
    if (s === undefined || s.count === 0) return null;
    const sorted = Array.from(s.values.subarray(0, s.count)).sort((a, b) =>
      a - b
    );
    const at = (p: number) =>
      sorted[Math.min(sorted.length - 1, Math.floor(p * sorted.length))]!;
    return { p50: at(0.5), p99: at(0.99) };
  }

  /** The latest durations, oldest first (for the chart). */
  recent(site: string, n: number): number[] {
    const s = this.#samples.get(site);
    if (s === undefined) return [];
    const out: number[] = [];
    for (let i = Math.max(0, s.count - n); i < s.count; i++) {
      out.push(s.values[(s.next - s.count + i + WINDOW) % WINDOW]!);
    }
    return out;
  }
}

/** One site's line on /stats. */
export interface SiteStats {
  name: string;
  state: SiteState;
  requests: number;
  /** Answers with a 4xx status, whoever made them. */
  status4xx: number;
  /** Answers with a 5xx status, its pages' own included. */
  status5xx: number;
  /**
   * Of the 5xx, those the gateway answered because the site failed,
   * crashed or ran too long (502, 503).
   */
  errors: number;
  overloaded: number;
  restarts: number;
  reloads: number;
  p50Ms: number | null;
  p99Ms: number | null;
  memoryMiB: number | null;
  /** The site's `memory`: the most its sandbox may hold. */
  memoryLimitMiB: number | null;
  /** What its writable folders hold, as its quota counts it (null: none measured). */
  diskMiB: number | null;
  /** Its `disk` quota. */
  diskQuotaMiB: number | null;
  /** Its write access is taken away: it is over its quota. */
  overDiskQuota: boolean;
  websockets: number;
  lastProblem: string | null;
  recentMs: number[];
}

/** This node's cluster, as /stats shows it. */
export interface ClusterStats {
  /** This node's id. */
  node: string;
  /** The cluster's Redis (without its password). */
  store: string;
  /** Whether the store answers. */
  storeUp: boolean;
  /** Nodes seen in the last minute, and how long ago (null: store away). */
  nodes: { id: string; lastSeenMs: number }[] | null;
  /** Sites whose scheduler tasks run on this node. */
  tasksHere: string[];
}

/** Everything /stats shows. */
export interface Stats {
  version: string;
  uptimeSeconds: number;
  /** What holds each sandbox to its memory and CPU (cgroups or not). */
  limits: string;
  /** The cluster, or null for a node on its own. */
  cluster: ClusterStats | null;
  sites: SiteStats[];
  /** Spare sandboxes waiting for their site's next start (--warm-spares). */
  spares: { site: string; pid: number; memoryMiB: number | null }[];
}

function clusterSection(cluster: ClusterStats | null): string {
  if (cluster === null) return "";
  const nodes = cluster.nodes === null
    ? "unknown while the store is away"
    : cluster.nodes.map((n) =>
      `${escapeHtml(n.id)} (${(n.lastSeenMs / 1000).toFixed(1)} s ago)`
    ).join(", ");
  return `<p class="${cluster.storeUp ? "" : "bad"}">Node ${
    escapeHtml(cluster.node)
  } of the cluster on ${escapeHtml(cluster.store)}: the store ${
    cluster.storeUp ? "answers" : "<b>does not answer</b>"
  }. Nodes seen: ${nodes}. Scheduler tasks here: ${
    cluster.tasksHere.length === 0
      ? "none"
      : escapeHtml(cluster.tasksHere.join(", "))
  }.</p>`;
}

function sparkline(values: number[]): string {
  if (values.length < 2) return "";
  const max = Math.max(...values, 1);
  const w = 160;
  const h = 28;
  const points = values.map((v, i) =>
    `${((i / (values.length - 1)) * w).toFixed(1)},${
      (h - (v / max) * h).toFixed(1)
    }`
  );
  return `<svg width="${w}" height="${h}" viewBox="0 0 ${w} ${h}" role="img" aria-label="latest latencies, max ${
    max.toFixed(1)
  } ms"><polyline fill="none" stroke="#36c" stroke-width="1.5" points="${
    points.join(" ")
  }"/></svg>`;
}

function ms(value: number | null): string {
  return value === null ? "—" : `${value.toFixed(1)} ms`;
}

/** The HTML page of /stats. */
export function renderStatsPage(stats: Stats): string {
  const rows = stats.sites.map((s) =>
    `<tr class="${s.state === "serving" ? "" : "bad"}"><td>${
      escapeHtml(s.name)
    }</td><td>${s.state}</td><td>${s.requests}</td><td>${s.status4xx}</td><td>${s.status5xx}</td><td>${
      ms(s.p50Ms)
    }</td><td>${ms(s.p99Ms)}</td><td>${
      sparkline(s.recentMs)
    }</td><td>${s.restarts}</td><td>${s.reloads}</td><td>${
      s.memoryMiB === null ? "—" : `${s.memoryMiB} MiB`
    }${s.memoryLimitMiB === null ? "" : ` of ${s.memoryLimitMiB}`}</td><td>${
      s.diskMiB === null ? "—" : `${s.diskMiB} of ${s.diskQuotaMiB} MiB`
    }${
      s.overDiskQuota ? " (over: no writes)" : ""
    }</td><td>${s.websockets}</td><td>${
      s.lastProblem === null ? "" : escapeHtml(s.lastProblem)
    }</td></tr>`
  );
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width">
<title>Sandflare stats</title>
<style>body{font:14px/1.5 system-ui,sans-serif;margin:2rem}table{border-collapse:collapse}td,th{padding:.3rem .6rem;border-bottom:1px solid #eee;text-align:left;vertical-align:middle}tr.bad td,p.bad{background:#fff3f3}</style>
</head><body>
<h1>Sandflare ${escapeHtml(stats.version)}</h1>
<p>Up ${Math.floor(stats.uptimeSeconds)} s · <a href="?format=json">JSON</a></p>
<p>${escapeHtml(stats.limits)}</p>
${clusterSection(stats.cluster)}
<table>
<tr><th>site</th><th>state</th><th>requests</th><th>4xx</th><th>5xx</th><th>p50</th><th>p99</th><th>latest</th><th>restarts</th><th>reloads</th><th>memory</th><th>disk</th><th>websockets</th><th>last problem</th></tr>
${rows.join("\n")}
</table>
<p>Spare sandboxes (<code>--warm-spares</code>): ${
    stats.spares.length === 0
      ? "none"
      : stats.spares.map((s) =>
        `${escapeHtml(s.site)} (pid ${s.pid}${
          s.memoryMiB === null ? "" : `, ${s.memoryMiB} MiB`
        })`
      ).join(", ")
  }</p>
</body></html>
`;
}

/** What {@linkcode collectStats} reads. */
export interface StatsSources {
  snapshot: Snapshot;
  /** Sites whose last load failed, with why. */
  notLoaded: ReadonlyMap<string, string>;
  latency: LatencyTracker;
  /** Open websocket clients of a site. */
  websockets: (site: string) => number;
  version: string;
  /** When the server started, in ms since the epoch. */
  startedAt: number;
  /** What holds each sandbox to its memory and CPU. */
  limits: string;
  /** The cluster, or null for a node on its own. */
  cluster: ClusterStats | null;
  /** The spare sandboxes kept. */
  spares: readonly { site: string; pid: number; memoryBytes: number | null }[];
}

function stateOf(runner: { ready: boolean; asleep: boolean }): SiteState {
  return runner.ready ? "serving" : runner.asleep ? "asleep" : "restarting";
}

/** Each site's state as /stats shows it (for `cli sites`, see StateFile). */
export function siteStates(
  from: Pick<StatsSources, "snapshot" | "notLoaded">,
): Map<string, SiteState> {
  const states = new Map<string, SiteState>();
  for (const { runner } of from.snapshot.sites.values()) {
    states.set(runner.name, stateOf(runner));
  }
  for (const name of from.notLoaded.keys()) {
    if (!states.has(name)) states.set(name, "not loaded");
  }
  return states;
}

/** Everything /stats shows, as it is now. */
export function collectStats(from: StatsSources): Stats {
  const sites: SiteStats[] = [];
  for (const { runner } of from.snapshot.sites.values()) {
    const latency = from.latency.percentiles(runner.name);
    const rss = runner.generation?.memoryBytes() ?? null;
    sites.push({
      name: runner.name,
      state: stateOf(runner),
      ...runner.counters,
      ...from.latency.statuses(runner.name),
      p50Ms: latency?.p50 ?? null,
      p99Ms: latency?.p99 ?? null,
      memoryMiB: rss === null ? null : mebibytes(rss),
      memoryLimitMiB: runner.def.manifest.memory,
      diskMiB: runner.disk.bytes === null ? null : mebibytes(runner.disk.bytes),
      diskQuotaMiB: runner.def.manifest.disk,
      overDiskQuota: runner.disk.revoked,
      websockets: from.websockets(runner.name),
      lastProblem: runner.lastProblem,
      recentMs: from.latency.recent(runner.name, 60),
    });
  }
  for (const [name, problem] of from.notLoaded) {
    if (from.snapshot.sites.has(name)) continue;
    sites.push({
      name,
      state: "not loaded",
      requests: 0,
      ...from.latency.statuses(name),
      errors: 0,
      overloaded: 0,
      restarts: 0,
      reloads: 0,
      p50Ms: null,
      p99Ms: null,
      memoryMiB: null,
      memoryLimitMiB: null,
      diskMiB: null,
      diskQuotaMiB: null,
      overDiskQuota: false,
      websockets: 0,
      lastProblem: problem,
      recentMs: [],
    });
  }
  return {
    version: from.version,
    uptimeSeconds: (Date.now() - from.startedAt) / 1000,
    limits: from.limits,
    cluster: from.cluster,
    sites,
    spares: from.spares.map((s) => ({
      site: s.site,
      pid: s.pid,
      memoryMiB: s.memoryBytes === null ? null : mebibytes(s.memoryBytes),
    })),
  };
}

/** Bytes in MiB, to one decimal. */
function mebibytes(bytes: number): number {
  return Math.round(bytes / 1024 / 102.4) / 10;
}

/** The /stats answer: JSON for `?format=json` or an `Accept` asking for it, else HTML. */
export function statsAnswer(
  ctx: RequestContext,
  query: string,
  from: StatsSources,
): Answer {
  const stats = collectStats(from);
  const json = new URLSearchParams(query).get("format") === "json" ||
    wantsJson(ctx.accept);
  return send(
    200,
    [
      [
        "content-type",
        json ? "application/json; charset=utf-8" : "text/html; charset=utf-8",
      ],
      ["cache-control", "no-store"],
    ],
    json ? JSON.stringify(stats) : renderStatsPage(stats),
    ctx.wire.method,
    ROOT_SITE,
  );
}
