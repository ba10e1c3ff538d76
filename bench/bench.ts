/**
 * `deno task bench`: the benchmark harness (SPEC §10).
 *
 * It starts Sandflare with fixture sites and a raw `Deno.serve` baseline
 * (nginx for static files) in the same run, drives both with the same load
 * generator (`wrk -t1 -c50`), alternating them, and prints requests/s,
 * p50/p99 latency and the ratio to the baseline, so a figure means the same
 * on any machine. It also measures reload latency (save → served), memory per
 * idle site and start time for 1, 10 and 100 sites. Two rows repeat the 404
 * and static scenarios with `--fast-connections`, to show what owning each
 * connection (the default) costs.
 *
 * `--json` prints the results as JSON; `--quick` runs short rounds and fewer
 * sites (the smoke test uses it). `--only=NAME` runs the scenarios whose
 * name contains NAME.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import {
  childrenOf,
  delay,
  PROJECT_DIR,
  rawHttp,
  type SiteFiles,
  startListening,
  startServer,
  type TestServer,
  writeSites,
} from "../tests/helpers/server.ts";
import { freePort, nginxPath, startNginx } from "../tests/helpers/nginx.ts";
import { TestRedis } from "../tests/helpers/redis.ts";
import {
  BROWSER_HEADERS,
  ensureWrk,
  pacedLoad,
  wrk,
  type WrkResult,
} from "./wrk.ts";
import { type CpuPerRequest, measureCpu, type Measured } from "./cpu.ts";

/** One throughput scenario's figures. */
interface LoadResult {
  scenario: string;
  rps: number;
  p50Ms: number;
  p99Ms: number;
  /** CPU µs per request by process role (medians of the rounds). */
  cpu: Record<string, number>;
  /** CPU µs per request of the busiest threads, "role/thread". */
  threads: Record<string, number>;
  baseline: string;
  baselineRps: number | null;
  baselineCpu: Record<string, number> | null;
  ratio: number | null;
}

/** What a scenario loads: a wrk run, and the processes whose CPU counts. */
interface Target {
  name: string;
  run: () => Promise<WrkResult>;
  processes: () => Measured[];
}

/** One measured quantity (latency, memory, time). */
interface Measure {
  scenario: string;
  value: number;
  unit: string;
  detail: string;
}

interface Options {
  seconds: number;
  rounds: number;
  siteCounts: number[];
  reloads: number;
  /** Websocket round trips measured. */
  roundTrips: number;
  /** Clients of the broadcast scenario. */
  fanout: number;
  /** Requests to a sleeping site (--idle-stop) measured. */
  wakes: number;
  /** Sites in the --idle-stop start scenarios. */
  sleepingCounts: number[];
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[mid]!
    : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Medians of each role's figure over rounds. */
function medianBy(rounds: Record<string, number>[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const key of new Set(rounds.flatMap((r) => Object.keys(r)))) {
    out[key] = median(rounds.map((r) => r[key] ?? 0));
  }
  return out;
}

async function measured(
  target: Pick<Target, "run" | "processes">,
): Promise<{ result: WrkResult; cpu: CpuPerRequest }> {
  return await measureCpu(target.processes(), target.run, (r) => r.requests);
}

/** Alternates baseline and subject `rounds` times; medians of each. */
async function compare(
  scenario: string,
  subject: Pick<Target, "run" | "processes">,
  baseline: Target | null,
  options: Options,
  expect2xx = true,
): Promise<LoadResult> {
  const ours: { result: WrkResult; cpu: CpuPerRequest }[] = [];
  const theirs: { result: WrkResult; cpu: CpuPerRequest }[] = [];
  for (let i = 0; i < options.rounds; i++) {
    if (baseline !== null) theirs.push(await measured(baseline));
    ours.push(await measured(subject));
  }
  const errors = ours.reduce(
    (n, { result: r }) => n + r.socketErrors + (expect2xx ? r.non2xx : 0),
    0,
  );
  if (errors > 0) throw new Error(`${scenario}: ${errors} failed requests`);
  const rps = median(ours.map((r) => r.result.rps));
  const baselineRps = baseline === null
    ? null
    : median(theirs.map((r) => r.result.rps));
  return {
    scenario,
    rps,
    p50Ms: median(ours.map((r) => r.result.p50Ms)),
    p99Ms: median(ours.map((r) => r.result.p99Ms)),
    cpu: medianBy(ours.map((r) => r.cpu.processes)),
    threads: medianBy(ours.map((r) => r.cpu.threads)),
    baseline: baseline?.name ?? "none",
    baselineRps,
    baselineCpu: baseline === null
      ? null
      : medianBy(theirs.map((r) => r.cpu.processes)),
    ratio: baselineRps === null ? null : rps / baselineRps,
  };
}

// ---------------------------------------------------------------- fixtures

const STATIC_64K = "x".repeat(64 * 1024);

/** 64 KiB of HTML made of words, the same every run. */
const PAGE_64K = (() => {
  const words = ["site", "page", "hello", "world", "sandbox", "gateway", "of"];
  let seed = 1;
  let text = "<!DOCTYPE html><title>page</title><p>";
  while (text.length < 64 * 1024) {
    seed = (seed * 1103515245 + 12345) % 2 ** 31;
    text += words[seed % words.length] + (seed % 11 === 0 ? "</p>\n<p>" : " ");
  }
  return text.slice(0, 64 * 1024);
})();

function benchSites(): SiteFiles {
  const pages = Array.from(
    { length: 199 },
    (_, i) =>
      `hosts.any.addPattern("/p${i}/([a-z]+)/(\\\\d+)", (_req, _res, a, b) => a + b);`,
  ).join("\n");
  return {
    bench: {
      // One worker, the default (--threads=1).
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "static/*/64k.txt": STATIC_64K,
      "static/*/page.html": PAGE_64K,
      "autorun/ar_bench.ts": `
import { hosts, websocket } from "sandflare";
hosts.any.add("/hello", () => "hello world");
// A standard fetch handler: a Request in, a Response out.
hosts.any.mount("/fetch", () => new Response("hello world"));
hosts.any.add("/echo", async (req) => new Uint8Array(await req.bytes()), "POST");
${pages}
hosts.any.addPattern("/user/([a-z]+)/(\\\\d+)", (_req, _res, name, id) => name + id);
const echo = websocket.register("/ws");
echo.onMessage = (client, message) => client.send(message);
const fanout = websocket.register("/fanout");
fanout.onMessage = (_client, message) => fanout.send(message);
`,
    },
    // A pool: the sandbox host hands each request to the least busy worker.
    pool: {
      "site.json": JSON.stringify({ hosts: ["*"], workers: 2 }),
      "autorun/ar_pool.ts": `
import { hosts } from "sandflare";
hosts.any.add("/pool/hello", () => "hello world");
`,
    },
  };
}

/** The Hono example (sites/hono) as fixture files: its app, deno.json and lock. */
async function honoSite(): Promise<SiteFiles[string]> {
  const dir = join(PROJECT_DIR, "sites", "hono");
  const files: SiteFiles[string] = {};
  for (
    const name of ["site.json", "deno.json", "deno.lock", "autorun/ar_app.ts"]
  ) {
    files[name] = await Deno.readTextFile(join(dir, name));
  }
  return files;
}

/** A baseline server running in processes of its own. */
interface Baseline {
  origin: string;
  processes: Measured[];
  stop: () => Promise<void>;
}

/**
 * Starts `bench/NAME.ts` with `args` (the port first) and waits for its
 * `listening` line; `child PID` on that line is a second process to measure.
 */
async function startBaselineScript(
  name: "baseline" | "ceiling",
  args: string[],
): Promise<Baseline> {
  const port = freePort();
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-net",
      "--allow-run",
      "--allow-read",
      join(PROJECT_DIR, "bench", `${name}.ts`),
      ...(name === "ceiling"
        ? [args[0]!, String(port)]
        : [String(port), ...args]),
    ],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`${name} exited`);
    text += value;
  }
  void (async () => {
    while (!(await reader.read()).done) { /* drain */ }
  })();
  const processes: Measured[] = [{ role: "gateway", pid: child.pid }];
  const inner = /child (\d+)/.exec(text);
  if (inner !== null) processes.push({ role: "child", pid: Number(inner[1]) });
  return {
    origin: `http://127.0.0.1:${port}`,
    processes,
    async stop() {
      child.kill("SIGTERM");
      await child.status;
    },
  };
}

/** Raw `Deno.serve` (or `Deno.serveHttp` per connection). */
function startBaseline(engine: "serve" | "serveHttp" = "serve") {
  return startBaselineScript("baseline", [engine]);
}

/** The bare two-process design on an engine (bench/ceiling.ts). */
function startCeiling(engine: "serve" | "serveHttp") {
  return startBaselineScript("ceiling", [engine]);
}

/** A baseline as a target to load: `path` on it, with wrk's options. */
function targetOf(
  name: string,
  base: Baseline,
  seconds: number,
  path = "/",
  options: Parameters<typeof wrk>[2] = {},
): Target {
  return {
    name,
    run: () => wrk(`${base.origin}${path}`, seconds, options),
    processes: () => base.processes,
  };
}

/** Sandflare as a target: the gateway and the sandbox of `site`. */
function sandflare(
  server: TestServer,
  sitesDir: string,
  site: string | null,
  run: () => Promise<WrkResult>,
): Pick<Target, "run" | "processes"> {
  return {
    run,
    processes: () => {
      const gateway = { role: "gateway", pid: server.child.pid };
      if (site === null) return [gateway];
      const dir = Deno.realPathSync(join(sitesDir, site));
      const sandboxes = childrenOf(
        server.child.pid,
        (_pid, command) =>
          command.includes("__sandbox") &&
          command.includes(`--allow-read=${dir},`),
      );
      return [
        gateway,
        ...sandboxes.map((pid) => ({ role: "sandbox", pid })),
      ];
    },
  };
}

async function postScript(bytes: number): Promise<string> {
  const file = await Deno.makeTempFile({ suffix: ".lua" });
  await Deno.writeTextFile(
    file,
    `wrk.method = "POST"\nwrk.body = string.rep("a", ${bytes})\nwrk.headers["Content-Type"] = "application/octet-stream"\n`,
  );
  return file;
}

// ---------------------------------------------------------------- scenarios

async function throughput(
  options: Options,
  only: string | null,
  measures: Measure[],
): Promise<LoadResult[]> {
  const sitesDir = await writeSites({
    ...benchSites(),
    hono: await honoSite(),
  });
  const server = await startServer({
    sitesDir,
    // The round trip sends one message after another as fast as they come
    // back (about 4,000 a second): over the default per-client rate.
    // --install: the Hono app's package, into a cache of this run.
    args: [
      "--no-reload",
      "--websocket-max-rate=100000",
      "--install",
      `--data-dir=${join(sitesDir, ".data")}`,
    ],
    discardStdout: true,
    timeoutMs: 60_000,
  });
  const base = await startBaseline();
  const baseHttp = await startBaseline("serveHttp");
  const bareServe = await startCeiling("serve");
  const bareHttp = await startCeiling("serveHttp");
  const post = await postScript(4096);
  const results: LoadResult[] = [];
  const want = (name: string) => only === null || name.includes(only);
  const s = options.seconds;
  const ours = (site: string | null, path: string, o = {}) =>
    sandflare(
      server,
      sitesDir,
      site,
      () => wrk(`${server.origin}${path}`, s, o),
    );
  try {
    const hello = targetOf("Deno.serve", base, s);
    const helloHttp = targetOf("Deno.serveHttp", baseHttp, s);
    // The ceiling: what a sandboxed page can cost in this design, on the
    // engine the gateway uses by default (it owns its connections).
    const bare = targetOf("bare design, Deno.serveHttp", bareHttp, s);
    const browser = { headers: BROWSER_HEADERS };
    if (want("ceiling")) {
      for (
        const [name, target] of [
          ["raw Deno.serve", hello],
          ["raw Deno.serveHttp", helloHttp],
          ["bare design, Deno.serve", targetOf("", bareServe, s)],
          ["bare design, Deno.serveHttp", bare],
        ] as const
      ) {
        results.push(await compare(name, target, null, options));
      }
      results.push(
        await compare(
          "bare design, Deno.serveHttp, browser-like request",
          targetOf("", bareHttp, s, "/", browser),
          null,
          options,
        ),
      );
    }
    if (want("hello")) {
      results.push(
        await compare(
          "hello (a sandboxed page, 1 worker)",
          ours("bench", "/hello"),
          bare,
          options,
        ),
        await compare(
          "hello (a sandboxed page, 1 worker), browser-like request",
          ours("bench", "/hello", browser),
          targetOf(
            "bare design, Deno.serveHttp, browser-like",
            bareHttp,
            s,
            "/",
            browser,
          ),
          options,
        ),
      );
    }
    if (want("hello") || want("fetch")) {
      results.push(
        await compare(
          "hello from a fetch handler (host.mount, 1 worker)",
          ours("bench", "/fetch/hello"),
          bare,
          options,
        ),
      );
    }
    if (want("hello") || want("hono")) {
      results.push(
        await compare(
          "hello from an unmodified Hono app (npm:hono, 1 worker)",
          ours("hono", "/hello", { host: "hono.localhost" }),
          bare,
          options,
        ),
      );
    }
    if (want("hello")) {
      results.push(
        await compare(
          "hello, a site of 2 workers",
          ours("pool", "/pool/hello"),
          bare,
          options,
        ),
      );
    }
    if (want("404")) {
      results.push(
        await compare(
          "404 (no site code)",
          ours(null, "/missing"),
          hello,
          options,
          false,
        ),
        await compare(
          "404 (no site code), browser-like request",
          ours(null, "/missing", browser),
          targetOf("Deno.serve, browser-like", base, s, "/", browser),
          options,
          false,
        ),
      );
    }
    if (want("regex")) {
      results.push(
        await compare(
          "2 captures among 200 patterns",
          ours("bench", "/user/ann/42"),
          bare,
          options,
        ),
      );
    }
    if (want("post")) {
      results.push(
        await compare(
          "POST 4 KiB echo",
          ours("bench", "/echo", { script: post }),
          targetOf("Deno.serve echo", base, s, "/", { script: post }),
          options,
        ),
      );
    }
    if (want("static")) {
      results.push(
        await staticScenario(server, sitesDir, options),
        await compare(
          "static 64 KiB, against the same string from Deno.serveHttp",
          ours(null, "/64k.txt"),
          targetOf("Deno.serveHttp 64 KiB", baseHttp, s, "/64k"),
          options,
        ),
        // A page of words: a browser gets it stored as Brotli (a quarter
        // of its size), wrk as it is.
        await compare(
          "static 64 KiB HTML page",
          ours(null, "/page.html"),
          targetOf("Deno.serveHttp 64 KiB", baseHttp, s, "/64k"),
          options,
        ),
        await compare(
          "static 64 KiB HTML page, browser-like request (stored Brotli)",
          ours(null, "/page.html", browser),
          targetOf("Deno.serveHttp 64 KiB", baseHttp, s, "/64k"),
          options,
        ),
      );
    }
    if (want("fast")) {
      // The same gateway with connections left to Deno.serve (for a server
      // behind nginx or haproxy): what owning them costs.
      const fast = await startServer({
        sitesDir,
        args: ["--no-reload", "--fast-connections"],
        discardStdout: true,
      });
      try {
        results.push(
          await compare(
            "hello (1 worker), --fast-connections",
            sandflare(
              fast,
              sitesDir,
              "bench",
              () => wrk(`${fast.origin}/hello`, s),
            ),
            targetOf("bare design, Deno.serve", bareServe, s),
            options,
          ),
          await compare(
            "404, --fast-connections",
            sandflare(
              fast,
              sitesDir,
              null,
              () => wrk(`${fast.origin}/missing`, s),
            ),
            hello,
            options,
            false,
          ),
          await staticScenario(
            fast,
            sitesDir,
            options,
            "static 64 KiB, --fast-connections",
          ),
        );
      } finally {
        await fast.stop();
      }
    }
    if (want("websocket")) {
      const wsOrigin = (origin: string) => origin.replace("http:", "ws:");
      measures.push(
        await wsRoundTrip(
          "websocket round trip",
          `${wsOrigin(server.origin)}/ws`,
          `${wsOrigin(base.origin)}/ws`,
          options,
        ),
        await wsFanout(
          `websocket broadcast to ${options.fanout} clients`,
          `${wsOrigin(server.origin)}/fanout`,
          `${wsOrigin(base.origin)}/fanout`,
          options,
        ),
      );
    }
  } finally {
    await Deno.remove(post);
    for (const b of [base, baseHttp, bareServe, bareHttp]) await b.stop();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
  return results;
}

async function staticScenario(
  server: TestServer,
  sitesDir: string,
  options: Options,
  scenario = "static 64 KiB",
): Promise<LoadResult> {
  const root = join(sitesDir, "bench", "static", "*");
  let nginx: Awaited<ReturnType<typeof startNginx>> | null = null;
  try {
    nginxPath();
    nginx = await startNginx(`location / { root "${root}"; }`);
  } catch (err) {
    Deno.stderr.writeSync(
      new TextEncoder().encode(
        `static baseline skipped: ${(err as Error).message}\n`,
      ),
    );
  }
  try {
    const base = nginx === null ? null : {
      name: "nginx",
      run: () =>
        wrk(`http://127.0.0.1:${nginx!.port}/64k.txt`, options.seconds),
      processes: () => [],
    };
    return await compare(
      scenario,
      sandflare(
        server,
        sitesDir,
        null,
        () => wrk(`${server.origin}/64k.txt`, options.seconds),
      ),
      base,
      options,
    );
  } finally {
    await nginx?.stop();
  }
}

function openSocket(url: string): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url);
    ws.onopen = () => resolve(ws);
    ws.onerror = () => reject(new Error(`cannot open ${url}`));
  });
}

/** Median and p99 of sequential echo round trips, against the baseline's. */
async function wsRoundTrip(
  scenario: string,
  url: string,
  baseUrl: string,
  options: Options,
): Promise<Measure> {
  const run = async (target: string) => {
    const ws = await openSocket(target);
    const samples: number[] = [];
    let resolve: () => void = () => {};
    let reject: (err: Error) => void = () => {};
    ws.onmessage = () => resolve();
    // A socket the server closes ends the run instead of hanging it.
    ws.onclose = (e) => reject(new Error(`closed with ${e.code} ${e.reason}`));
    for (let i = 0; i < options.roundTrips; i++) {
      const t0 = performance.now();
      const answered = new Promise<void>((r, j) => {
        resolve = r;
        reject = j;
      });
      ws.send("ping");
      await answered;
      samples.push(performance.now() - t0);
    }
    ws.onclose = null;
    ws.close();
    samples.sort((a, b) => a - b);
    return {
      p50: samples[Math.floor(samples.length / 2)]!,
      p99: samples[Math.floor(samples.length * 0.99)]!,
    };
  };
  const base = await run(baseUrl);
  const ours = await run(url);
  return {
    scenario,
    value: ours.p50 * 1000,
    unit: "µs",
    detail: `p50; p99 ${(ours.p99 * 1000).toFixed(0)} µs; Deno.serve p50 ${
      (base.p50 * 1000).toFixed(0)
    } µs, p99 ${(base.p99 * 1000).toFixed(0)} µs`,
  };
}

/** Time from one client's message until every client has the broadcast. */
async function wsFanout(
  scenario: string,
  url: string,
  baseUrl: string,
  options: Options,
): Promise<Measure> {
  const run = (target: string) => broadcastTime(options.fanout, () => target);
  const base = await run(baseUrl);
  const ours = await run(url);
  return {
    scenario,
    value: ours,
    unit: "ms",
    detail: `median of 5 (all clients received); Deno.serve ${
      base.toFixed(1)
    } ms; ratio ${(base / ours).toFixed(2)}`,
  };
}

// ---------------------------------------------------------------- cluster

/** Session pages a second: two operations each, under a site's budget. */
const SESSION_RATE = 400;

const CLUSTER_SITE = `
import { hosts, session, websocket } from "sandflare";
hosts.any.add("/session", async (req, res) => {
  const s = await session.get(req, res);
  s.data.n = (typeof s.data.n === "number" ? s.data.n : 0) + 1;
  await s.save();
  return String(s.data.n);
});
const fanout = websocket.register("/fanout");
fanout.onMessage = (_client, message) => fanout.send(message);
`;

/**
 * A cluster on Redis: a session page with SQLite (a node on its own) and
 * with Redis (a node of a cluster) in the same run, and a broadcast to
 * clients split over two nodes against the same clients on one node.
 */
async function clusterScenario(
  options: Options,
  results: LoadResult[],
  measures: Measure[],
): Promise<void> {
  const sitesDir = await writeSites({
    sess: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_sess.ts": CLUSTER_SITE,
    },
  });
  const redis = await TestRedis.start();
  const servers: TestServer[] = [];
  const start = async (args: string[], data: string) => {
    const server = await startServer({
      sitesDir,
      args: ["--no-reload", `--data-dir=${sitesDir}.${data}`, ...args],
      discardStdout: true,
      timeoutMs: 60_000,
    });
    servers.push(server);
    return server;
  };
  try {
    const alone = await start([], "alone");
    const cluster = [`--cluster=${redis.url}`];
    const nodeA = await start([...cluster, "--node-id=a"], "a");
    const nodeB = await start([...cluster, "--node-id=b"], "b");
    // One session per server, read and written by every request.
    const cookieOf = async (server: TestServer) => {
      const res = await fetch(`${server.origin}/session`);
      await res.body?.cancel();
      return res.headers.get("set-cookie")!.split(";")[0]!;
    };
    const sessionTarget = (server: TestServer, cookie: string) =>
      sandflare(
        server,
        sitesDir,
        "sess",
        // Under the site's session budget (1,000 operations a second).
        () =>
          pacedLoad(`${server.origin}/session`, options.seconds, SESSION_RATE, {
            cookie,
          }),
      );
    const sqlite = sessionTarget(alone, await cookieOf(alone));
    const viaRedis = sessionTarget(nodeA, await cookieOf(nodeA));
    const withRedis = {
      run: viaRedis.run,
      processes: () => [
        ...viaRedis.processes(),
        { role: "redis", pid: redis.pid },
      ],
    };
    // The SQLite page is the baseline: both alternate in the same rounds.
    results.push(
      await compare(
        `session page (get + save) at ${SESSION_RATE}/s, Redis, a node of a cluster`,
        withRedis,
        { name: "the same page with SQLite, one node", ...sqlite },
        options,
      ),
    );
    const ws = (server: TestServer) =>
      `${server.origin.replace("http", "ws")}/fanout`;
    const split = await broadcastTime(
      options.fanout,
      (i) => ws(i % 2 === 0 ? nodeA : nodeB),
    );
    const one = await broadcastTime(options.fanout, () => ws(nodeA));
    measures.push({
      scenario:
        `websocket broadcast to ${options.fanout} clients split over two nodes`,
      value: split,
      unit: "ms",
      detail:
        `median of 5 (all clients received); all on one node of the cluster: ${
          one.toFixed(1)
        } ms`,
    });
  } finally {
    await Promise.all(servers.map((server) => server.stop()));
    await redis.stop();
    for (
      const dir of [
        sitesDir,
        ...["alone", "a", "b"].map((d) => `${sitesDir}.${d}`),
      ]
    ) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    }
  }
}

/**
 * Opens `count` clients (the i-th to `urlOf(i)`); the median of 5 times
 * from the first client's message until every client has it.
 */
async function broadcastTime(
  count: number,
  urlOf: (i: number) => string,
): Promise<number> {
  const sockets: WebSocket[] = [];
  for (let i = 0; i < count; i += 50) {
    sockets.push(
      ...await Promise.all(
        Array.from(
          { length: Math.min(50, count - i) },
          (_, j) => openSocket(urlOf(i + j)),
        ),
      ),
    );
  }
  await delay(200);
  const times: number[] = [];
  for (let round = 0; round < 5; round++) {
    let left = sockets.length;
    const all = new Promise<void>((resolve) => {
      for (const s of sockets) {
        s.onmessage = () => {
          if (--left === 0) resolve();
        };
      }
    });
    const t0 = performance.now();
    sockets[0]!.send(`round ${round}`);
    await all;
    times.push(performance.now() - t0);
  }
  for (const s of sockets) s.close();
  await delay(200);
  return median(times);
}

const reloadPage = (version: number) => `
import { hosts } from "sandflare";
hosts.any.add("/bench-reload", () => "version ${version}");
`;

/**
 * Save → served latency of a hot reload, in milliseconds (median), with a
 * spare sandbox waiting (the default) or without (`--warm-spares=0`). Saves
 * come a second apart, as a person saves: time for the spare to boot.
 */
async function reloadLatency(
  rounds: number,
  spares: boolean,
): Promise<Measure> {
  const sitesDir = await writeSites({
    bench: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_bench.ts": reloadPage(0),
    },
  });
  const server = await startServer({
    sitesDir,
    args: spares ? [] : ["--warm-spares=0"],
  });
  const samples: number[] = [];
  try {
    const script = join(sitesDir, "bench", "autorun", "ar_bench.ts");
    for (let version = 1; version <= rounds; version++) {
      const saved = performance.now();
      await Deno.writeTextFile(script, reloadPage(version));
      const want = `version ${version}`;
      while (true) {
        const res = await fetch(`${server.origin}/bench-reload`);
        const text = await res.text();
        if (text === want) break;
        if (performance.now() - saved > 10_000) {
          throw new Error(
            `reload ${version} not served in 10 s (still ${res.status} ${
              JSON.stringify(text.slice(0, 80))
            }); server log:\n${
              server.logs().split("\n").slice(-15).join("\n")
            }`,
          );
        }
        await delay(2);
      }
      samples.push(performance.now() - saved);
      await delay(1000); // the next save; the old generation drains and exits
    }
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
  // The first reload has no spare yet: it is shown apart.
  const [first, ...rest] = samples;
  const sorted = [...rest].sort((a, b) => a - b);
  return {
    scenario: spares
      ? "reload (save → served), warm"
      : "reload (save → served), --warm-spares=0",
    value: median(rest),
    unit: "ms",
    detail: `median of ${rest.length} after the first (${
      first!.toFixed(0)
    } ms); max ${sorted.at(-1)!.toFixed(0)} ms`,
  };
}

/**
 * A request to a site asleep (`--idle-stop=1`) until it is answered: its
 * sandbox started and its script loaded first. Each round waits for the
 * site to fall asleep again. `warm`: it waits 4.5 s more, for the spare
 * started 3 s after the site fell asleep, whose wake only loads the
 * script; else `--warm-spares=0`, and every wake starts a process.
 */
async function wakeLatency(rounds: number, warm: boolean): Promise<Measure> {
  const sitesDir = await writeSites({
    bench: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_bench.ts":
        `import { hosts } from "sandflare";\nhosts.any.add("/", () => "hello");\n`,
    },
  });
  const server = await startServer({
    sitesDir,
    args: ["--no-reload", "--idle-stop=1", ...warm ? [] : ["--warm-spares=0"]],
  });
  const asleep = () =>
    server.logs().split("\n").filter((l) => /\[bench\] Asleep /.test(l))
      .length;
  const samples: number[] = [];
  try {
    for (let i = 1; i <= rounds; i++) {
      while (asleep() < i) await delay(20);
      if (warm) await delay(4500);
      const started = performance.now();
      const res = await fetch(`${server.origin}/`);
      if (await res.text() !== "hello") throw new Error("wake: wrong answer");
      samples.push(performance.now() - started);
    }
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
  const sorted = [...samples].sort((a, b) => a - b);
  const p99 =
    sorted[Math.min(sorted.length - 1, Math.ceil(sorted.length * 0.99) - 1)]!;
  return {
    scenario: warm
      ? "request to a sleeping site (--idle-stop), its spare ready"
      : "request to a sleeping site (--idle-stop), --warm-spares=0",
    value: median(samples),
    unit: "ms",
    detail: `median of ${samples.length}; p99 ${p99.toFixed(0)}, min ${
      sorted[0]!.toFixed(0)
    } ms; ${warm ? "" : "sandbox start + "}load + answer`,
  };
}

/** Resident memory of a process, in KiB. */
/** A process's memory in KiB, from /proc/PID/smaps_rollup. */
interface Memory {
  /** Resident pages, shared ones counted whole in every process. */
  rss: number;
  /** Proportional: each shared page divided among the processes sharing it. */
  pss: number;
  /** Pages no other process shares. */
  private: number;
}

function memoryOf(pid: number): Memory {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/smaps_rollup`);
    const kib = (name: string) =>
      Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
    return {
      rss: kib("Rss"),
      pss: kib("Pss"),
      private: kib("Private_Clean") + kib("Private_Dirty"),
    };
  } catch {
    return { rss: 0, pss: 0, private: 0 };
  }
}

/** `count` small sites, `site0.test` … answering "site N" at `/`. */
function manySites(count: number): SiteFiles {
  const sites: SiteFiles = {};
  for (let i = 0; i < count; i++) {
    sites[`site${i}`] = {
      "site.json": JSON.stringify({ hosts: [`site${i}.test`], workers: 1 }),
      "autorun/ar_site.ts":
        `import { hosts } from "sandflare";\nhosts.get("site${i}.test").add("/", () => "site ${i}");\n`,
    };
  }
  return sites;
}

/**
 * A first start with `count` sites and a new data folder (`--idle-stop`):
 * a request for the last site, sent as soon as the server listens, is
 * answered once that site has started (it goes to the front of the queue),
 * long before every site has. Measured from spawn.
 */
async function firstRequestScenario(count: number): Promise<Measure> {
  const sitesDir = await writeSites(manySites(count));
  const dataDir = await Deno.makeTempDir();
  const started = performance.now();
  const server = await startListening([
    `--sites-dir=${sitesDir}`,
    `--data-dir=${dataDir}`,
    "--grant-requests",
    "--no-reload",
    "--idle-stop=600",
  ]);
  try {
    const last = count - 1;
    const res = await rawHttp(
      server.port,
      `GET / HTTP/1.1\r\nHost: site${last}.test\r\nConnection: close\r\n\r\n`,
      { timeoutMs: 600_000 },
    );
    const answeredMs = performance.now() - started;
    if (res.body !== `site ${last}`) {
      throw new Error(`wrong answer: ${res.status} ${res.body}`);
    }
    for (let i = 0; i < 12_000 && !server.ready(); i++) await delay(50);
    const readyMs = performance.now() - started;
    return {
      scenario:
        `--idle-stop: first start with ${count} sites, a request for the last`,
      value: answeredMs,
      unit: "ms",
      detail: `spawn → answered, its Deno cache empty; every site started ${
        (readyMs / 1000).toFixed(1)
      } s after spawn`,
    };
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
    await Deno.remove(dataDir, { recursive: true });
  }
}

/**
 * With `--idle-stop`: how soon a server with `count` sites is ready the
 * first time (every site loaded once, then asleep) and the next (their
 * pages kept: nothing starts), its memory then, and a first request.
 */
async function sleepingSitesScenario(count: number): Promise<Measure[]> {
  const sitesDir = await writeSites(manySites(count));
  const dataDir = await Deno.makeTempDir();
  const args = ["--no-reload", "--idle-stop=600", `--data-dir=${dataDir}`];
  const ready = async () => {
    const started = performance.now();
    const server = await startServer({ sitesDir, args, timeoutMs: 600_000 });
    return { server, ms: performance.now() - started };
  };
  const plural = `${count} site${count === 1 ? "" : "s"}`;
  try {
    const first = await ready();
    await first.server.stop();
    const next = await ready();
    try {
      await delay(500);
      const pids = [
        next.server.child.pid,
        ...childrenOf(next.server.child.pid, () => true),
      ];
      const pss = pids.map((p) => memoryOf(p).pss).reduce((a, b) => a + b, 0);
      const started = performance.now();
      const res = await next.server.raw(
        `GET / HTTP/1.1\r\nHost: site${
          count - 1
        }.test\r\nConnection: close\r\n\r\n`,
        { timeoutMs: 30_000 },
      );
      if (res.body !== `site ${count - 1}`) {
        throw new Error(`wrong answer: ${res.status} ${res.body}`);
      }
      const wakeMs = performance.now() - started;
      return [
        {
          scenario: `--idle-stop: first start with ${plural}`,
          value: first.ms,
          unit: "ms",
          detail: `spawn → ready: each site loaded once (${
            Math.max(4, 4 * navigator.hardwareConcurrency)
          } at a time) with its Deno cache empty, then asleep`,
        },
        {
          scenario: `--idle-stop: next start with ${plural}`,
          value: next.ms,
          unit: "ms",
          detail: "spawn → ready: their pages kept, no sandbox started",
        },
        {
          scenario: `--idle-stop: memory with ${plural} asleep`,
          value: pss / 1024,
          unit: "MiB",
          detail: `PSS of the gateway and every process it started (${
            pids.length - 1
          }); a first request then took ${wakeMs.toFixed(0)} ms`,
        },
      ];
    } finally {
      await next.server.stop();
    }
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
    await Deno.remove(dataDir, { recursive: true });
  }
}

/** Start time and memory of a server with `count` idle sites. */
async function sitesScenario(count: number): Promise<Measure[]> {
  const sitesDir = await writeSites(manySites(count));
  const started = performance.now();
  const server = await startServer({
    sitesDir,
    args: ["--no-reload"],
    timeoutMs: 120_000,
  });
  const startMs = performance.now() - started;
  try {
    await delay(500); // let the sandboxes settle
    const pids = [...server.logs().matchAll(/sandbox pid (\d+)/g)].map((m) =>
      Number(m[1])
    );
    const sandboxes = pids.map(memoryOf);
    const gateway = memoryOf(server.child.pid);
    const mean = (key: keyof Memory) =>
      sandboxes.reduce((sum, m) => sum + m[key], 0) /
      Math.max(1, sandboxes.length) / 1024;
    return [
      {
        scenario: `start with ${count} site${count === 1 ? "" : "s"}`,
        value: startMs,
        unit: "ms",
        detail: "spawn → every site loaded and serving",
      },
      {
        scenario: `memory per idle site (${count} site${
          count === 1 ? "" : "s"
        })`,
        value: mean("pss"),
        unit: "MiB",
        detail: `sandbox PSS, 1 worker (RSS ${mean("rss").toFixed(0)}, ` +
          `private ${mean("private").toFixed(0)}); gateway PSS ${
            (gateway.pss / 1024).toFixed(0)
          } MiB`,
      },
    ];
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
}

// ---------------------------------------------------------------- output

function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) =>
    Math.max(...rows.map((r) => r[i]!.length))
  );
  return rows.map((r) =>
    r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd()
  ).join("\n");
}

function cpuTotal(cpu: Record<string, number>): number {
  return Object.values(cpu).reduce((a, b) => a + b, 0);
}

/** `gateway 30.1 + sandbox 9.2 = 39.3`; one process alone, its figure. */
function cpuText(cpu: Record<string, number>): string {
  const parts = Object.entries(cpu);
  if (parts.length === 0) return "—";
  const each = parts.map(([role, us]) => `${role} ${us.toFixed(1)}`);
  return parts.length === 1
    ? each[0]!
    : `${each.join(" + ")} = ${cpuTotal(cpu).toFixed(1)}`;
}

function render(load: LoadResult[], measures: Measure[]): string {
  const loadRows = [[
    "scenario",
    "req/s",
    "p50",
    "p99",
    "CPU µs/req",
    "baseline",
    "baseline req/s",
    "baseline CPU µs/req",
    "ratio",
    "CPU ×",
  ]];
  for (const r of load) {
    const ours = cpuTotal(r.cpu);
    const theirs = r.baselineCpu === null ? 0 : cpuTotal(r.baselineCpu);
    loadRows.push([
      r.scenario,
      r.rps.toFixed(0),
      `${r.p50Ms.toFixed(2)} ms`,
      `${r.p99Ms.toFixed(2)} ms`,
      cpuText(r.cpu),
      r.baseline,
      r.baselineRps === null ? "—" : r.baselineRps.toFixed(0),
      r.baselineCpu === null ? "—" : cpuText(r.baselineCpu),
      r.ratio === null ? "—" : r.ratio.toFixed(2),
      ours > 0 && theirs > 0 ? (ours / theirs).toFixed(2) : "—",
    ]);
  }
  const measureRows = [["measure", "value", "detail"]];
  for (const m of measures) {
    measureRows.push([
      m.scenario,
      `${m.value.toFixed(m.unit === "MiB" ? 1 : 0)} ${m.unit}`,
      m.detail,
    ]);
  }
  return `${load.length > 0 ? table(loadRows) + "\n\n" : ""}${
    table(measureRows)
  }`;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      json: { type: "boolean" },
      quick: { type: "boolean" },
      only: { type: "string" },
    },
  });
  const options: Options = values.quick
    ? {
      seconds: 1,
      rounds: 1,
      siteCounts: [1, 3],
      reloads: 3,
      roundTrips: 200,
      fanout: 50,
      wakes: 2,
      sleepingCounts: [3],
    }
    : {
      seconds: 5,
      rounds: 3,
      siteCounts: [1, 10, 100],
      reloads: 20,
      roundTrips: 5000,
      fanout: 1000,
      wakes: 20,
      sleepingCounts: [100, 1000],
    };
  const only = values.only ?? null;
  await ensureWrk();
  const measures: Measure[] = [];
  const load = await throughput(options, only, measures);
  if (only === null || "cluster".includes(only)) {
    await clusterScenario(options, load, measures);
  }
  if (only === null || "reload".includes(only)) {
    measures.push(await reloadLatency(options.reloads, true));
    measures.push(await reloadLatency(options.reloads, false));
  }
  if (only === null || "wake".includes(only)) {
    measures.push(await wakeLatency(options.wakes, false));
    measures.push(await wakeLatency(options.wakes, true));
  }
  if (only === null || "sites".includes(only)) {
    for (const count of options.siteCounts) {
      measures.push(...await sitesScenario(count));
    }
  }
  if (only === null || "sleeping".includes(only)) {
    for (const count of options.sleepingCounts) {
      measures.push(...await sleepingSitesScenario(count));
    }
  }
  if (only === null || "first".includes(only)) {
    measures.push(await firstRequestScenario(options.sleepingCounts[0]!));
  }
  const machine =
    `${Deno.build.os}/${Deno.build.arch}, ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}`;
  const out = values.json
    ? JSON.stringify({ machine, load, measures }, null, 2)
    : `${
      render(load, measures)
    }\n\nmachine: ${machine}; load: wrk -t1 -c50, ${options.rounds} alternating round(s) of ${options.seconds} s, medians; CPU: user + system time of each process (from /proc) over the requests served`;
  Deno.stdout.writeSync(new TextEncoder().encode(out + "\n"));
}
