/**
 * The load generator of the benchmarks: wrk from Debian, installed with
 * apt-get when it is missing and the bench runs as root.
 *
 * @module
 */

/** wrk's path, once {@linkcode ensureWrk} has found it. */
let WRK = "";

/** What one wrk run measured. */
export interface WrkResult {
  rps: number;
  /** Requests completed in the run. */
  requests: number;
  p50Ms: number;
  p99Ms: number;
  /** Non-2xx/3xx answers. */
  non2xx: number;
  /** Connect, read, write errors and timeouts. */
  socketErrors: number;
}

function findWrk(): string | null {
  for (const path of ["/usr/bin/wrk", "/usr/local/bin/wrk"]) {
    try {
      Deno.statSync(path);
      return path;
    } catch {
      // Try the next.
    }
  }
  return null;
}

/** wrk's path, installing Debian's package first when it is missing (as root). */
export async function ensureWrk(): Promise<string> {
  const found = findWrk();
  if (found !== null) return WRK = found;
  Deno.stderr.writeSync(
    new TextEncoder().encode("wrk is missing: installing it with apt-get\n"),
  );
  const install = await new Deno.Command("sh", {
    args: [
      "-c",
      "apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk",
    ],
    stdout: "null",
    stderr: "inherit",
  }).output().catch(() => null);
  const path = findWrk();
  if (install === null || path === null) {
    throw new Error(
      "wrk is not installed and apt-get could not install it: run `apt-get install wrk` as root",
    );
  }
  return WRK = path;
}

function toMs(value: string, unit: string): number {
  const n = Number(value);
  return unit === "us"
    ? n / 1000
    : unit === "s"
    ? n * 1000
    : unit === "m"
    ? n * 60_000
    : n;
}

/**
 * What a browser sends with a page request, besides Host: a dozen headers,
 * compression among them (wrk sends none of them by itself).
 */
export const BROWSER_HEADERS: readonly string[] = [
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
  "Accept-Encoding: gzip, deflate, br, zstd",
  "Accept-Language: en-US,en;q=0.9",
  "Cache-Control: max-age=0",
  'Sec-Ch-Ua: "Chromium";v="131", "Not_A Brand";v="24"',
  "Sec-Ch-Ua-Mobile: ?0",
  'Sec-Ch-Ua-Platform: "Linux"',
  "Sec-Fetch-Dest: document",
  "Sec-Fetch-Mode: navigate",
  "Sec-Fetch-Site: none",
  "Sec-Fetch-User: ?1",
  "Upgrade-Insecure-Requests: 1",
  "Cookie: theme=dark; _ga=GA1.1.1234567890.1700000000",
];

/**
 * Runs wrk once (`-t1 -c50`); loopback only, bounded by `seconds`. Call
 * {@linkcode ensureWrk} first.
 */
export async function wrk(
  url: string,
  seconds: number,
  options: { host?: string; script?: string; headers?: readonly string[] } = {},
): Promise<WrkResult> {
  const args = ["-t1", "-c50", `-d${seconds}s`, "--latency", "--timeout", "5s"];
  if (options.host !== undefined) args.push("-H", `Host: ${options.host}`);
  for (const header of options.headers ?? []) args.push("-H", header);
  if (options.script !== undefined) args.push("-s", options.script);
  args.push(url);
  const out = await new Deno.Command(WRK === "" ? "wrk" : WRK, {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1] ?? NaN);
  const latency = (p: string) => {
    const m = new RegExp(`^\\s+${p}%\\s+([\\d.]+)(us|ms|s|m)`, "m").exec(text);
    return m === null ? NaN : toMs(m[1]!, m[2]!);
  };
  const non2xx = Number(/Non-2xx or 3xx responses: (\d+)/.exec(text)?.[1] ?? 0);
  const socketErrors =
    /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
      text,
    );
  const socket = socketErrors === null
    ? 0
    : socketErrors.slice(1).reduce((n, x) => n + Number(x), 0);
  if (!Number.isFinite(rps)) {
    throw new Error(
      `wrk printed no result for ${url}:\n${text}\n${
        new TextDecoder().decode(out.stderr)
      }`,
    );
  }
  const requests = Number(/(\d+) requests in/.exec(text)?.[1] ?? NaN);
  return {
    rps,
    requests: Number.isFinite(requests) ? requests : rps * seconds,
    p50Ms: latency("50"),
    p99Ms: latency("99"),
    non2xx,
    socketErrors: socket,
  };
}

/**
 * A load at a fixed rate, for pages whose site has a budget (session pages:
 * 1,000 session operations a second per site) that wrk's closed loop would
 * overrun. `rate` requests a second for `seconds`, from up to 32 requests
 * at once; latency counts from when each request was due, so a stall
 * shows.
 */
export async function pacedLoad(
  url: string,
  seconds: number,
  rate: number,
  headers: Record<string, string> = {},
): Promise<WrkResult> {
  const total = Math.round(seconds * rate);
  const latencies: number[] = [];
  let non2xx = 0;
  let socketErrors = 0;
  let next = 0;
  const started = performance.now();
  const worker = async () => {
    while (next < total) {
      const due = started + (next++ * 1000) / rate;
      const wait = due - performance.now();
      if (wait > 0) await new Promise((r) => setTimeout(r, wait));
      try {
        const res = await fetch(url, { headers });
        await res.arrayBuffer();
        if (res.status >= 400) non2xx++;
      } catch {
        socketErrors++;
      }
      latencies.push(performance.now() - due);
    }
  };
  await Promise.all(Array.from({ length: 32 }, worker));
  const elapsed = (performance.now() - started) / 1000;
  latencies.sort((a, b) => a - b);
  const at = (q: number) =>
    latencies[
      Math.min(latencies.length - 1, Math.floor(q * latencies.length))
    ] ?? 0;
  return {
    rps: latencies.length / elapsed,
    requests: latencies.length,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    non2xx,
    socketErrors,
  };
}
