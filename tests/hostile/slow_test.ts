/**
 * Slow clients: a stalled body times out, and slowloris, slow-body and
 * slow-read attacks (slowhttptest, from Debian) do not keep a normal client
 * from being served. The normal client's success rate and p99 are reported.
 */

import assert from "node:assert/strict";
import {
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "../helpers/server.ts";

const SITES = {
  normal: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "static/*/big.txt": "x".repeat(512 * 1024),
    "autorun/ar_normal.ts": `
import { hosts } from "sandflare";
hosts.any.add("/ok", () => "ok");
hosts.any.add("/echo", async (req) => "got " + (await req.bytes()).length, "POST");
`,
  },
};

/** A normal client asking for /ok in a loop while `during` runs. */
async function normalClient(server: TestServer, during: Promise<unknown>) {
  let done = false;
  void during.finally(() => done = true);
  const latencies: number[] = [];
  let failures = 0;
  while (!done) {
    const t0 = performance.now();
    try {
      const res = await fetch(`${server.origin}/ok`, {
        signal: AbortSignal.timeout(5000),
      });
      if ((await res.text()) === "ok") latencies.push(performance.now() - t0);
      else failures++;
    } catch {
      failures++;
    }
    await delay(20);
  }
  latencies.sort((a, b) => a - b);
  const total = latencies.length + failures;
  return {
    total,
    successRate: total === 0 ? 0 : latencies.length / total,
    p99: latencies[
      Math.min(latencies.length - 1, Math.floor(latencies.length * 0.99))
    ] ?? Infinity,
  };
}

function slowhttptest(args: string[]): Promise<Deno.CommandOutput> {
  return new Deno.Command("slowhttptest", {
    args,
    stdout: "piped",
    stderr: "piped",
  }).output().catch((err) => {
    throw new Error(
      `slowhttptest is needed for this test (apt-get install slowhttptest): ${err}`,
    );
  });
}

Deno.test("a request body that stalls gets 408 after --keepalive-time", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir, args: ["--keepalive-time=1"] });
  try {
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    const t0 = Date.now();
    await conn.write(
      new TextEncoder().encode(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nonly part",
      ),
    );
    const buf = new Uint8Array(4096);
    const n = await conn.read(buf);
    conn.close();
    const text = new TextDecoder().decode(buf.subarray(0, n ?? 0));
    assert.match(text, /^HTTP\/1\.1 408/);
    assert.ok(Date.now() - t0 < 4000, "answered soon after the keepalive time");
    assert.equal((await server.fetch("/ok")).text, "ok");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a request body trickled in under the stall time still gets 408", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir, args: ["--keepalive-time=1"] });
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    const t0 = Date.now();
    await conn.write(
      new TextEncoder().encode(
        "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n",
      ),
    );
    // One byte every 0.5 s: never a 1 s pause, but far under 500 bytes a
    // second. Bounded: 30 bytes at most.
    const answer = (async () => {
      const buf = new Uint8Array(4096);
      const n = await conn.read(buf);
      return new TextDecoder().decode(buf.subarray(0, n ?? 0));
    })();
    let text: string | null = null;
    void answer.then((t) => text = t);
    for (let i = 0; i < 30 && text === null; i++) {
      await conn.write(new TextEncoder().encode("x")).catch(() => {});
      await delay(500);
    }
    const got = await answer;
    const ms = Date.now() - t0;
    assert.match(got, /^HTTP\/1\.1 408/);
    assert.match(got, /under 500 bytes a second/);
    assert.ok(ms >= 3500 && ms < 8000, `answered after ${ms} ms`);
    assert.equal((await server.fetch("/ok")).text, "ok");
  } finally {
    conn.close();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

const SLOW_READ = ["-k", "2", "-w", "10", "-y", "20", "-n", "5", "-z", "32"];

for (
  const [mode, flag, extra, fast] of [
    ["slowloris (slow headers)", "-H", [], false],
    ["slow body (R-U-Dead-Yet)", "-B", ["-s", "8192"], false],
    ["slow read", "-X", SLOW_READ, false],
    ["slowloris with --fast-connections", "-H", [], true],
  ] as const
) {
  Deno.test(`${mode}: a normal client keeps being served`, async () => {
    const sitesDir = await writeSites(SITES);
    const server = await startServer({
      sitesDir,
      args: ["--keepalive-time=2", ...(fast ? ["--fast-connections"] : [])],
    });
    try {
      const path = flag === "-X" ? "/big.txt" : flag === "-B" ? "/echo" : "/ok";
      const attack = slowhttptest([
        flag,
        "-c",
        "400",
        "-r",
        "200",
        "-i",
        "1",
        "-l",
        "8",
        "-p",
        "3",
        "-u",
        `${server.origin}${path}`,
        ...extra,
      ]);
      const normal = await normalClient(server, attack);
      const out = await attack;
      const report =
        `${mode}: normal client ${normal.total} requests, success ${
          (normal.successRate * 100).toFixed(1)
        } %, p99 ${normal.p99.toFixed(1)} ms`;
      // deno-lint-ignore no-console -- the issue asks for these figures in the test output
      console.log(report);
      assert.ok(
        out.code === 0 || out.code === 1,
        new TextDecoder().decode(out.stderr),
      );
      // Served all along: on a quiet machine some 300 requests, on a busy
      // one (seen: 13, each slow, while other suites ran) far fewer; what
      // counts is that they are answered.
      assert.ok(normal.total >= 10, report);
      assert.ok(normal.successRate >= 0.99, report);
      assert.equal((await server.fetch("/ok")).text, "ok");
    } finally {
      await server.stop();
      await Deno.remove(sitesDir, { recursive: true });
    }
  });
}
