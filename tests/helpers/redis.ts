/**
 * A real redis-server on a free port of 127.0.0.1, without persistence, for
 * the cluster tests. It can be stopped and started again on the same port
 * (a Redis outage and its recovery).
 *
 * @module
 */

import { freePort } from "./nginx.ts";
import { delay } from "./server.ts";

/** The path of redis-server; fails loudly when it is not installed. */
export function redisServerPath(): string {
  for (const path of ["/usr/bin/redis-server", "/usr/sbin/redis-server"]) {
    try {
      Deno.statSync(path);
      return path;
    } catch {
      // Try the next.
    }
  }
  throw new Error(
    "redis-server is not installed: run `apt-get install redis-server` " +
      "(.ci/run and tools/test-tools.sh do)",
  );
}

/** A running redis-server. */
export class TestRedis {
  readonly port: number;
  #child: Deno.ChildProcess | null = null;
  #pid = 0;

  private constructor(port: number) {
    this.port = port;
  }

  /** Starts one on a free port and waits until it answers. */
  static async start(): Promise<TestRedis> {
    const redis = new TestRedis(freePort());
    await redis.restart();
    return redis;
  }

  /** The process id of the running server. */
  get pid(): number {
    return this.#pid;
  }

  /** `redis://127.0.0.1:PORT` */
  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  /** Starts it (again) on its port; waits until it answers PING. */
  async restart(): Promise<void> {
    if (this.#child !== null) throw new Error("redis-server is running");
    this.#child = new Deno.Command(redisServerPath(), {
      args: [
        "--port",
        String(this.port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--daemonize",
        "no",
      ],
      stdout: "null",
      stderr: "null",
    }).spawn();
    this.#pid = this.#child.pid;
    const deadline = Date.now() + 10_000;
    while (Date.now() < deadline) {
      if (await this.#answers()) return;
      await delay(50);
    }
    await this.stop();
    throw new Error(`redis-server did not answer on port ${this.port}`);
  }

  /** Pauses it (SIGSTOP): it keeps its connections but answers nothing. */
  freeze(): void {
    Deno.kill(this.#pid, "SIGSTOP");
  }

  /** Resumes it after `freeze`. */
  thaw(): void {
    Deno.kill(this.#pid, "SIGCONT");
  }

  /** Stops it (SIGKILL: no chance to save) and waits for the exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (child === null) return;
    this.#child = null;
    try {
      Deno.kill(this.#pid, "SIGCONT");
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await child.status;
  }

  /** Sends one command (RESP) and returns the raw reply text. */
  async command(...words: string[]): Promise<string> {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: this.port });
    try {
      const encoder = new TextEncoder();
      const parts = words.map((w) =>
        `$${encoder.encode(w).length}\r\n${w}\r\n`
      );
      await conn.write(encoder.encode(`*${words.length}\r\n${parts.join("")}`));
      const buffer = new Uint8Array(64 * 1024);
      const n = await conn.read(buffer);
      return new TextDecoder().decode(buffer.subarray(0, n ?? 0));
    } finally {
      conn.close();
    }
  }

  async #answers(): Promise<boolean> {
    try {
      return (await this.command("PING")).startsWith("+PONG");
    } catch {
      return false;
    }
  }
}
