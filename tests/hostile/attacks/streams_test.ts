/**
 * Hostile clients against streamed replies (issue 16 review): clients that
 * open endless streams and never read can neither starve the site's other
 * clients, nor grow the site's sandbox until it dies, nor slow a
 * neighbour. Past MAX_STREAMS open streams, a site's next stream is 503.
 *
 * The clients are a Python script: it can shrink each socket's receive
 * buffer (Deno cannot), so the server's writes stall at once, as with a
 * client that does not read over a slow link.
 */

import assert from "node:assert/strict";
import {
  assertUnharmed,
  NEIGHBOUR,
  NEIGHBOUR_SITE,
  underAttack,
} from "./harness.ts";
import {
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "../../helpers/server.ts";

const LIVE = `
import { hosts } from "sandflare";
const site = hosts.get("live.test");
// As much as a client will take, 64 KiB a pull.
site.add("/endless", () =>
  new Response(new ReadableStream<Uint8Array>({
    pull(controller) {
      controller.enqueue(new Uint8Array(65536).fill(97));
    },
  }, { highWaterMark: 0 })));
// Ten ticks, 50 ms apart.
site.add("/ticks", () => {
  let n = 0;
  return new Response(new ReadableStream<Uint8Array>({
    async pull(controller) {
      await new Promise((resolve) => setTimeout(resolve, 50));
      controller.enqueue(new TextEncoder().encode("tick " + n++ + "\\n"));
      if (n === 10) controller.close();
    },
  }));
});
// A page larger than a reply sent whole: it streams too.
site.add("/big", () => "b".repeat(300_000));
`;

/**
 * Opens N sockets from each of the source addresses given, with a 4 KiB
 * receive buffer, asks for PATH, holds them SECONDS; prints the statuses.
 */
const HOLDER = `
import socket, sys, time, collections
port, n, sources, path, seconds = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3].split(","), sys.argv[4], float(sys.argv[5])
socks, statuses = [], collections.Counter()
for source in sources:
  for _ in range(n):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.bind((source, 0))
    s.connect(("127.0.0.1", port))
    s.sendall(("GET %s HTTP/1.1\\r\\nHost: live.test\\r\\n\\r\\n" % path).encode())
    socks.append(s)
for s in socks:
    s.settimeout(10)
    try:
        head = s.recv(64)
        statuses[head.split(b" ")[1].decode() if head else "closed"] += 1
    except Exception as e:
        statuses[type(e).__name__] += 1
time.sleep(seconds)
for s in socks:
    s.close()
print(dict(statuses))
`;

/** Statuses counted by the holding client, e.g. `{ "200": 32, "503": 268 }`. */
type Statuses = Record<string, number>;

function hold(
  port: number,
  perSource: number,
  sources: string[],
  seconds: number,
): Promise<Statuses> {
  const process = new Deno.Command("python3", {
    args: [
      "-c",
      HOLDER,
      String(port),
      String(perSource),
      sources.join(","),
      "/endless",
      String(seconds),
    ],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  return process.output().then((out) => {
    const text = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    if (!out.success) throw new Error(`the holding client failed: ${text}`);
    return JSON.parse(text.trim().replaceAll("'", '"')) as Statuses;
  });
}

/** The server with the streaming site and the neighbour. */
async function serve() {
  const sitesDir = await writeSites({
    live: {
      "site.json": JSON.stringify({ hosts: ["live.test"], workers: 1 }),
      "autorun/ar_live.ts": LIVE,
    },
    nb: NEIGHBOUR_SITE,
  });
  return { sitesDir, server: await startServer({ sitesDir }) };
}

/** The site still answers, and its sandbox was never replaced. */
async function assertSiteAlive(server: TestServer): Promise<void> {
  const res = await server.raw(
    "GET /big HTTP/1.1\r\nHost: live.test\r\nConnection: close\r\n\r\n",
    { timeoutMs: 20_000 },
  );
  assert.equal(res.body.length, 300_000);
  assert.ok(
    !/\[live\].*(out of memory|stopped|broke the protocol)/.test(
      server.logs(),
    ),
    server.logs(),
  );
}

Deno.test("one address holding 300 endless streams it never reads gets 32; the site's other clients stream and its sandbox lives", async () => {
  const { sitesDir, server } = await serve();
  try {
    let statuses: Statuses = {};
    const report = await underAttack(server, NEIGHBOUR, 6000, async () => {
      const holding = hold(server.port, 300, ["127.0.0.2"], 6);
      await delay(2500);
      // Another client of the site gets its stream, and a large page.
      const ticks = await server.raw(
        "GET /ticks HTTP/1.1\r\nHost: live.test\r\nConnection: close\r\n\r\n",
        { timeoutMs: 20_000 },
      );
      assert.equal(ticks.status, 200, ticks.raw.slice(0, 300));
      assert.match(ticks.body, /tick 0\n[\s\S]*tick 9\n/);
      await assertSiteAlive(server);
      statuses = await holding;
    });
    // 300 connections, 32 of them holding a stream's window in the gateway
    // and the engine's buffer (about 0.7 MB each, as any large answer to a
    // client that does not read), until the 30 s send timeout.
    assertUnharmed("one address holding 300 streams", report, 160);
    assert.deepEqual(statuses, { "200": 32, "503": 268 });
    await server.waitForLog(
      /\[live\] Streamed replies over the limit were answered 503: Your address has 32/,
    );
    await assertSiteAlive(server);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("ten addresses holding 30 endless streams each: the site holds at most 256, and lives", async () => {
  const { sitesDir, server } = await serve();
  try {
    let statuses: Statuses = {};
    const sources = Array.from({ length: 10 }, (_, i) => `127.0.1.${i + 1}`);
    const report = await underAttack(server, NEIGHBOUR, 6000, async () => {
      statuses = await hold(server.port, 30, sources, 5);
    });
    // 256 streams of about 0.7 MB each: bounded by MAX_STREAMS per site.
    assertUnharmed("ten addresses holding 300 streams", report, 256);
    assert.deepEqual(statuses, { "200": 256, "503": 44 });
    await server.waitForLog(/The site has 256 streamed replies open/);
    await assertSiteAlive(server);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
