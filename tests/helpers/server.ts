/**
 * Test helpers: write fixture sites to a temporary folder, start the real
 * server on a free port of 127.0.0.1, talk raw HTTP to it, stop it.
 *
 * @module
 */

import { concat } from "../../src/protocol/frames.ts";
import { cp } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** The project folder (holds main.ts and deno.json). */
export const PROJECT_DIR: string = fileURLToPath(
  new URL("../../", import.meta.url),
);

/** Files of fixture sites: site name → relative path → content. */
export type SiteFiles = Record<string, Record<string, string>>;

/**
 * Writes fixture sites into a new temporary sites folder.
 * @returns the sites folder
 */
export async function writeSites(sites: SiteFiles): Promise<string> {
  const dir = await Deno.makeTempDir({ prefix: "sandflare-test-" });
  for (const [site, files] of Object.entries(sites)) {
    for (const [path, content] of Object.entries(files)) {
      const file = join(dir, site, path);
      await Deno.mkdir(dirname(file), { recursive: true });
      await Deno.writeTextFile(file, content);
    }
  }
  return dir;
}

/** Options of {@linkcode startServer}. */
export interface StartOptions {
  sitesDir: string;
  /** More `listen` options. */
  args?: string[];
  env?: Record<string, string>;
  /**
   * The operator's grants file, written beside the sites as `.grants.json`
   * and passed as --grants. Without it every site gets what it asks for
   * (--grant-requests), as on a developer's machine.
   */
  grants?: unknown;
  /** How long to wait for "Ready". @default {20000} */
  timeoutMs?: number;
  /** Send the access log (stdout) to /dev/null, as a benchmark does. */
  discardStdout?: boolean;
}

/** A running server. */
export class TestServer {
  readonly port: number;
  readonly child: Deno.ChildProcess;
  readonly out: string[];
  readonly err: string[];
  readonly #done: Promise<Deno.CommandStatus>;
  readonly #readers: Promise<void>;

  constructor(
    port: number,
    child: Deno.ChildProcess,
    out: string[],
    err: string[],
    readers: Promise<void>,
  ) {
    this.port = port;
    this.child = child;
    this.out = out;
    this.err = err;
    this.#done = child.status;
    this.#readers = readers;
  }

  /** `http://127.0.0.1:PORT` */
  get origin(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /** Everything logged so far, stdout then stderr. */
  logs(): string {
    return [...this.out, ...this.err].join("\n");
  }

  /** Waits until a log line matches `pattern`; returns that line. */
  async waitForLog(pattern: RegExp, timeoutMs = 10_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const line = [...this.out, ...this.err].find((l) => pattern.test(l));
      if (line !== undefined) return line;
      await delay(25);
    }
    throw new Error(
      `No log line matched ${pattern} within ${timeoutMs} ms. Logs:\n${this.logs()}`,
    );
  }

  /**
   * Sends a signal and waits for the exit; returns the exit status. A server
   * still running after `killAfterMs` is killed (the status then says
   * SIGKILL), so that no test leaves a process behind.
   */
  async stop(
    signal: Deno.Signal = "SIGTERM",
    killAfterMs = 20_000,
  ): Promise<Deno.CommandStatus> {
    try {
      this.child.kill(signal);
    } catch {
      // Already gone.
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const exited = await Promise.race([
      this.#done,
      new Promise<null>((r) => timer = setTimeout(() => r(null), killAfterMs)),
    ]);
    clearTimeout(timer);
    if (exited === null) {
      try {
        this.child.kill("SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
    const status = await this.#done;
    await this.#readers;
    return status;
  }

  /** Waits for the process to exit by itself. */
  async exited(): Promise<Deno.CommandStatus> {
    const status = await this.#done;
    await this.#readers;
    return status;
  }

  /** A GET (or other) request with fetch; the body is read. */
  async fetch(
    path: string,
    init: RequestInit = {},
  ): Promise<{ status: number; headers: Headers; text: string }> {
    const res = await fetch(`${this.origin}${path}`, init);
    return { status: res.status, headers: res.headers, text: await res.text() };
  }

  /** One raw HTTP/1.1 exchange on a new connection (see {@linkcode rawHttp}). */
  raw(request: string, options: RawOptions = {}): Promise<RawResponse> {
    return rawHttp(this.port, request, options);
  }
}

async function collect(
  stream: ReadableStream<Uint8Array>,
  lines: string[],
): Promise<void> {
  let buffer = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buffer += text;
    let nl: number;
    while ((nl = buffer.indexOf("\n")) >= 0) {
      lines.push(buffer.slice(0, nl));
      buffer = buffer.slice(nl + 1);
    }
  }
  if (buffer !== "") lines.push(buffer);
}

/** The command that runs `main.ts` as `deno task cli` does. */
export function cliCommand(
  args: string[],
  env: Record<string, string> = {},
  stdout: "piped" | "null" = "piped",
  stdin: "piped" | "null" = "null",
): Deno.Command {
  return new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--unstable-net",
      // As `deno task cli` (deno.json): --allow-all lets the server read
      // /proc/self/cgroup, which Deno 2.9.6 asks --allow-all for.
      "--allow-all",
      "--v8-flags=--enable-experimental-regexp-engine",
      join(PROJECT_DIR, "main.ts"),
      ...args,
    ],
    cwd: PROJECT_DIR,
    env: { NO_COLOR: "1", ...env },
    stdin,
    stdout,
    stderr: "piped",
  });
}

/** The port a server's log says it listens on, or 0 before it says so. */
function listeningPort(lines: readonly string[]): number {
  for (const line of lines) {
    const listening = / Listening on https?:\/\/[^ ]+:(\d+)$/.exec(line);
    if (listening !== null) return Number(listening[1]);
  }
  return 0;
}

/** A server that listens, whose sites may still be starting. */
export interface ListeningServer {
  port: number;
  /** Its log lines so far (stderr). */
  lines: string[];
  /** True once it has said `Ready:` (every site has started). */
  ready(): boolean;
  /** SIGTERM, then waits for it to end. */
  stop(): Promise<void>;
}

/**
 * Starts `main.ts listen` on a free port of 127.0.0.1 with `args` and
 * returns as soon as it listens, before its sites have started (the first
 * start, issue 20). Its stdout (the access log) is discarded.
 */
export async function startListening(
  args: string[],
): Promise<ListeningServer> {
  const child = cliCommand(
    ["listen", "--port=0", "--host=127.0.0.1", ...args],
    {},
    "null",
  ).spawn();
  const lines: string[] = [];
  const reading = collect(child.stderr, lines);
  const stop = async () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // It has ended already.
    }
    await child.status;
    await reading;
  };
  for (let i = 0; i < 1200; i++) {
    const port = listeningPort(lines);
    if (port !== 0) {
      return {
        port,
        lines,
        ready: () => lines.some((l) => / Ready: /.test(l)),
        stop,
      };
    }
    await delay(25);
  }
  await stop();
  throw new Error(`Server not listening in time:\n${lines.join("\n")}`);
}

/**
 * Starts `main.ts listen` on a free port of 127.0.0.1 and waits until it
 * says it is ready. The caller must `stop()` it.
 */
export async function startServer(options: StartOptions): Promise<TestServer> {
  const child = cliCommand(
    [
      "listen",
      "--port=0",
      "--host=127.0.0.1",
      `--sites-dir=${options.sitesDir}`,
      await grantsArg(options.sitesDir, options.grants),
      ...(options.args ?? []),
      ...isolation(options.args ?? []),
    ],
    options.env,
    options.discardStdout ? "null" : "piped",
  ).spawn();
  const out: string[] = [];
  const err: string[] = [];
  const readers = Promise.all([
    options.discardStdout ? Promise.resolve() : collect(child.stdout, out),
    collect(child.stderr, err),
  ])
    .then(() => {});
  const deadline = Date.now() + (options.timeoutMs ?? 20_000);
  let port = 0;
  while (Date.now() < deadline) {
    if (port === 0) port = listeningPort(err);
    if (port !== 0 && err.some((l) => / Ready: /.test(l))) {
      return new TestServer(port, child, out, err, readers);
    }
    const exited = await Promise.race([
      child.status,
      delay(25).then(() => null),
    ]);
    if (exited !== null) {
      await readers;
      throw new Error(
        `Server exited with ${exited.code} before it was ready:\n${
          [...out, ...err].join("\n")
        }`,
      );
    }
  }
  child.kill("SIGKILL");
  await child.status;
  await readers;
  throw new Error(`Server not ready in time:\n${[...out, ...err].join("\n")}`);
}

/**
 * `--isolate=HOW` when SANDFLARE_TEST_ISOLATE says so (`deno task
 * test:isolated` runs the sandbox tests under bubblewrap), unless the test
 * chose itself.
 */
function isolation(args: string[]): string[] {
  const how = Deno.env.get("SANDFLARE_TEST_ISOLATE");
  if (how === undefined || args.some((a) => a.startsWith("--isolate"))) {
    return [];
  }
  return [`--isolate=${how}`];
}

/**
 * `--grants=FILE` with `grants` written to FILE beside the sites, or
 * `--grant-requests` when there are none.
 */
export async function grantsArg(
  sitesDir: string,
  grants: unknown,
): Promise<string> {
  if (grants === undefined) return "--grant-requests";
  const file = join(sitesDir, ".grants.json");
  await Deno.writeTextFile(file, JSON.stringify(grants, null, 2));
  return `--grants=${file}`;
}

/** Waits `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Options of {@linkcode rawHttp}. */
export interface RawOptions {
  /** Give up after this long. @default {10000} */
  timeoutMs?: number;
}

/** A raw HTTP response as parsed from the wire. */
export interface RawResponse {
  status: number;
  /** Lower-case names; repeated headers joined with ", ". */
  headers: Record<string, string>;
  body: string;
  /** Everything received. */
  raw: string;
}

/**
 * Sends `request` as is (use `\r\n`) on a new connection and reads until the
 * server closes it or one whole response has arrived.
 */
export async function rawHttp(
  port: number,
  request: string,
  options: RawOptions = {},
): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timeout = setTimeout(() => conn.close(), options.timeoutMs ?? 10_000);
  const chunks: Uint8Array[] = [];
  const head = request.startsWith("HEAD ");
  try {
    await conn.write(new TextEncoder().encode(request));
    const buf = new Uint8Array(65536);
    while (true) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        break;
      }
      if (n === null) break;
      chunks.push(buf.slice(0, n));
      const parsed = parseResponse(concat(chunks), head);
      if (parsed !== null && parsed.complete) break;
    }
  } finally {
    clearTimeout(timeout);
    try {
      conn.close();
    } catch {
      // Closed by the timeout.
    }
  }
  const all = concat(chunks);
  const parsed = parseResponse(all, head);
  if (parsed === null) {
    return {
      status: 0,
      headers: {},
      body: "",
      raw: new TextDecoder().decode(all),
    };
  }
  return parsed.response;
}

function parseResponse(
  bytes: Uint8Array,
  head: boolean,
): { response: RawResponse; complete: boolean } | null {
  const text = new TextDecoder().decode(bytes);
  const end = text.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const [statusLine = "", ...lines] = text.slice(0, end).split("\r\n");
  const status = Number(statusLine.split(" ")[1]);
  const headers: Record<string, string> = {};
  for (const line of lines) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers[name] = headers[name] === undefined
      ? value
      : `${headers[name]}, ${value}`;
  }
  const body = text.slice(end + 4);
  const length = headers["content-length"];
  const complete = head || status === 304 || status === 204
    ? true
    : length !== undefined
    ? new TextEncoder().encode(body).length >= Number(length)
    : headers["transfer-encoding"] === "chunked" && body.endsWith("0\r\n\r\n");
  return { response: { status, headers, body, raw: text }, complete };
}

/**
 * Copies shipped example sites (`sites/NAME`, the examples themselves, not
 * copies of their code) into `sitesDir` and starts the server on them, with
 * its data folder inside `sitesDir` and more `listen` options `args`.
 */
export async function startExamples(
  sitesDir: string,
  names: string[],
  args: string[] = [],
): Promise<TestServer> {
  for (const name of names) {
    await cp(join(PROJECT_DIR, "sites", name), join(sitesDir, name), {
      recursive: true,
    });
  }
  return await startServer({
    sitesDir,
    args: [`--data-dir=${join(sitesDir, ".data")}`, ...args],
    timeoutMs: 60_000,
  });
}

/**
 * Site code registering `/grow` on `host` (a JavaScript expression, such as
 * `hosts.any`): a page that grows the site's Deno cache by importing 200
 * modules of 256 KiB it makes, with no permission at all.
 */
export function cacheGrower(host: string): string {
  return `${host}.add("/grow", async () => {
  const pad = "z".repeat(256 * 1024);
  for (let i = 0; i < 200; i++) {
    const source = "export const pad: string = '" + pad + "'; export const n: number = " + i + ";";
    await import(URL.createObjectURL(new Blob([source], { type: "application/typescript" })));
    await new Promise((r) => setTimeout(r, 10));
  }
  return "grew";
});
`;
}

/**
 * The child processes of `parent` (by /proc) that `match` accepts, given
 * each one's pid and command line (arguments joined by spaces).
 */
export function childrenOf(
  parent: number,
  match: (pid: number, command: string) => boolean,
): number[] {
  const found: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (ppid !== parent) continue;
      const command = Deno.readTextFileSync(`/proc/${entry.name}/cmdline`)
        .replaceAll("\0", " ");
      if (match(Number(entry.name), command)) found.push(Number(entry.name));
    } catch {
      // Gone meanwhile.
    }
  }
  return found;
}
