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
 * Runs wrk once (`-t1 -c50`); loopback only, bounded by `seconds`. Call
 * {@linkcode ensureWrk} first.
 */
export async function wrk(
  url: string,
  seconds: number,
  options: { host?: string; script?: string } = {},
): Promise<WrkResult> {
  const args = ["-t1", "-c50", `-d${seconds}s`, "--latency", "--timeout", "5s"];
  if (options.host !== undefined) args.push("-H", `Host: ${options.host}`);
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
  return {
    rps,
    p50Ms: latency("50"),
    p99Ms: latency("99"),
    non2xx,
    socketErrors: socket,
  };
}
