/**
 * Hostile clients against ordinary sites: each attack runs while a
 * neighbour site is measured (p99 within 50 ms of its baseline, no failed
 * request) and the gateway's memory is sampled.
 */

import assert from "node:assert/strict";
import { startServer, writeSites } from "../../helpers/server.ts";
import {
  assertUnharmed,
  NEIGHBOUR,
  NEIGHBOUR_SITE,
  runClient,
  underAttack,
} from "./harness.ts";

const SITES = {
  nb: NEIGHBOUR_SITE,
  chat: {
    // An ordinary site: a websocket whose messages it ignores, and a page
    // that never answers.
    "site.json": JSON.stringify({ hosts: ["*"], requestTimeout: 60 }),
    "autorun/ar_chat.ts": `
import { hosts, websocket } from "sandflare";
const ws = websocket.register("/ws");
ws.onMessage = () => {};
hosts.any.add("/wait", () => new Promise(() => {}));
const blob = new Uint8Array(1024 * 1024).fill(98);
hosts.any.add("/blast", () => { for (let i = 0; i < 8; i++) ws.send(blob); return "sent"; });
hosts.any.add("/ok", () => "ok");
hosts.any.add("/upload", () => "uploaded", "POST");
// A chat room: every message goes to everyone.
const room = websocket.register("/room");
room.onMessage = (_client, message) => room.send(message);
`,
  },
};

const FLOOD = `
const [port, seconds] = Deno.args;
const ws = new WebSocket("ws://127.0.0.1:" + port + "/ws");
await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
let code = -1;
ws.onclose = (e) => code = e.code;
const end = Date.now() + Number(seconds) * 1000;
let sent = 0;
while (Date.now() < end && code === -1) {
  for (let i = 0; i < 1000; i++) {
    try { ws.send("hello world"); sent++; } catch { break; }
  }
  await new Promise((r) => setTimeout(r, 0));
}
console.log(JSON.stringify({ sent, code }));
Deno.exit(0);
`;

Deno.test("a websocket client flooding messages is closed; the gateway keeps serving", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    let result = "";
    const report = await underAttack(server, NEIGHBOUR, 1500, async () => {
      result = await runClient(FLOOD, [String(server.port), "1.5"]);
    });
    assertUnharmed("websocket flood", report);
    await server.waitForLog(
      /\[chat\] Closed websocket client\(s\): Too many messages \(over 1000 a second\)/,
    );
    assert.match(result, /"sent":\d+/);
    // Still answering signals: SIGTERM stops it in time.
  } finally {
    const started = Date.now();
    const status = await server.stop();
    assert.equal(status.code, 0);
    assert.ok(Date.now() - started < 15_000, "SIGTERM took too long");
    await Deno.remove(sitesDir, { recursive: true });
  }
});

for (const mode of ["", "--fast-connections"]) {
  Deno.test(`requests whose clients went away stop counting against the site's queue${mode === "" ? "" : ` (${mode})`}`, async () => {
    const sitesDir = await writeSites(SITES);
    const server = await startServer({
      sitesDir,
      args: ["--site-queue=5", ...(mode === "" ? [] : [mode])],
    });
    try {
      // 20 clients ask for a page that never answers, then leave.
      for (let i = 0; i < 20; i++) {
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        await conn.write(
          new TextEncoder().encode(
            "GET /wait HTTP/1.1\r\nHost: x.test\r\n\r\n",
          ),
        );
        await new Promise((r) => setTimeout(r, 20));
        conn.close();
      }
      await new Promise((r) => setTimeout(r, 500));
      // Before, the 20 left behind filled the queue of 5 until their timeout.
      const res = await server.raw(
        "GET /ok HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
      );
      assert.equal(res.status, 200);
      assert.equal(res.body, "ok");
      // Logged as nginx does: 499, the client closed the connection first.
      await server.waitForLog(/"GET \/wait HTTP\/1.1" 499 /);
    } finally {
      await server.stop();
      await Deno.remove(sitesDir, { recursive: true });
    }
  });
}

Deno.test("broadcasting large messages to clients that never read holds the gateway's memory bounded", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const clients: Deno.Conn[] = [];
  try {
    // 80 clients upgrade, then never read again.
    for (let i = 0; i < 80; i++) {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: server.port,
      });
      await conn.write(new TextEncoder().encode(
        "GET /ws HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      ));
      await conn.read(new Uint8Array(1024));
      clients.push(conn);
    }
    const report = await underAttack(server, NEIGHBOUR, 2000, async () => {
      // 8 MiB to each of 80 clients: the site waits for its frame budget
      // (each send reaching 80 clients costs it about a second).
      await server.raw(
        "GET /blast HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
        { timeoutMs: 20_000 },
      );
    });
    // Per client 4 MiB would still be 320 MiB; the site's total is 32 MiB.
    // Each broadcast is 80 MiB for the gateway to hand to sockets. On this
    // machine on 2026-12-01 the neighbour's p99 rose by 95-185 ms (none
    // failed), on the same code that stayed within 50 ms the day before; see
    // the README's "Websockets" limits.
    assertUnharmed(
      "1 MiB broadcasts to 80 clients that never read",
      report,
      160,
      1,
      250,
    );
    await server.waitForLog(/\[chat\] Closed slow websocket client\(s\)/);
  } finally {
    for (const c of clients) c.close();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("slow uploads of large bodies hold the gateway's memory bounded", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const conns: Deno.Conn[] = [];
  try {
    const statuses: string[] = [];
    const report = await underAttack(server, NEIGHBOUR, 3000, async () => {
      // 30 clients send all but the last 20 kB of a 10 MiB body, then
      // trickle: 300 MiB held whole, before the bound.
      const body = new Uint8Array(10 * 1048576 - 20_000).fill(97);
      for (let i = 0; i < 30; i++) {
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        conns.push(conn);
        await conn.write(
          new TextEncoder().encode(
            `POST /upload HTTP/1.1\r\nHost: x.test\r\nContent-Length: ${
              10 * 1048576
            }\r\n\r\n`,
          ),
        );
        const written = conn.write(body).catch(() => 0);
        const answer = new Uint8Array(512);
        // A refused upload is answered at once; a held one is not.
        const n = await Promise.race([
          conn.read(answer).catch(() => null),
          new Promise<null>((r) => setTimeout(() => r(null), 100)),
        ]);
        if (n !== null) {
          statuses.push(new TextDecoder().decode(answer.subarray(9, 12)));
        }
        await written;
      }
      for (let s = 0; s < 2; s++) {
        for (const c of conns) {
          await c.write(new Uint8Array([97])).catch(() => 0);
        }
        await new Promise((r) => setTimeout(r, 1000));
      }
    });
    assertUnharmed("30 slow 10 MiB uploads", report, 150);
    assert.ok(statuses.includes("503"), `answers: ${statuses}`);
  } finally {
    for (const c of conns) c.close();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

const SENDER = `
const [port, seconds] = Deno.args;
const ws = new WebSocket("ws://127.0.0.1:" + port + "/room");
await new Promise((resolve, reject) => { ws.onopen = resolve; ws.onerror = reject; });
ws.onmessage = () => {};
const text = JSON.stringify({ nick: "n", text: "x".repeat(400) });
const end = Date.now() + Number(seconds) * 1000;
let sent = 0;
while (Date.now() < end && ws.readyState === WebSocket.OPEN) {
  for (let i = 0; i < 80; i++) { ws.send(text); sent++; }
  await new Promise((r) => setTimeout(r, 100)); // 800 a second, under the rate
}
console.log(sent);
Deno.exit(0);
`;

Deno.test("a chat room with clients that never read, and senders under the rate, holds the gateway's memory bounded", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const clients: Deno.Conn[] = [];
  try {
    for (let i = 0; i < 100; i++) {
      const conn = await Deno.connect({
        hostname: "127.0.0.1",
        port: server.port,
      });
      await conn.write(new TextEncoder().encode(
        "GET /room HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
      ));
      await conn.read(new Uint8Array(1024));
      clients.push(conn);
    }
    const report = await underAttack(server, NEIGHBOUR, 4000, async () => {
      await Promise.all(
        [0, 1, 2].map(() => runClient(SENDER, [String(server.port), "4"])),
      );
    });
    // Before the bounds: 2.4 GB in 15 s, growing.
    assertUnharmed(
      "a chat room flooded for clients that never read",
      report,
      200,
    );
  } finally {
    for (const c of clients) c.close();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

/**
 * Handshakes as fast as 16 connections go, each carrying `pad` bytes of
 * headers (the site is handed the request when its client opens), then
 * closed at once; `hold` of them are kept open to the end.
 */
const HANDSHAKES = `
const [port, seconds, pad, hold] = Deno.args.map(Number);
const request = new TextEncoder().encode(
  "GET /ws HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nConnection: Upgrade\\r\\nUpgrade: websocket\\r\\n" +
  "Sec-WebSocket-Version: 13\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\n" +
  "X-Pad: " + "p".repeat(pad) + "\\r\\n\\r\\n");
const end = Date.now() + seconds * 1000;
const counts: Record<string, number> = {};
const held: Deno.Conn[] = [];
const buffer = new Uint8Array(4096);
await Promise.all(Array.from({ length: 16 }, async () => {
  while (Date.now() < end) {
    let conn: Deno.Conn | null = null;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(request);
      const n = await conn.read(buffer);
      const status = n === null ? "closed" : new TextDecoder().decode(buffer.subarray(9, 12));
      counts[status] = (counts[status] ?? 0) + 1;
      if (status === "101" && held.length < hold) { held.push(conn); conn = null; }
    } catch {
      counts.error = (counts.error ?? 0) + 1;
    }
    try { conn?.close(); } catch { /* closed */ }
  }
}));
for (const conn of held) conn.close();
console.log(JSON.stringify(counts));
`;

Deno.test("a flood of websocket handshakes with large headers: the site lives, the gateway's memory stays bounded", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    let counts: Record<string, number> = {};
    const report = await underAttack(server, NEIGHBOUR, 4000, async () => {
      counts = JSON.parse(
        await runClient(HANDSHAKES, [String(server.port), "4", "15000", "500"]),
      );
    });
    // deno-lint-ignore no-console -- the figures are the point of the test
    console.log(`  handshakes by answer: ${JSON.stringify(counts)}`);
    // Before: each open queued its whole request for the site without a
    // bound; the site was killed within 2 s for not reading 84 MiB of them
    // and the gateway grew by 0.5-1.1 GB (review of 2026-12-01). Opening and
    // closing ~3,500 websockets a second costs Deno's HTTP layer ~160 MiB
    // whatever they carry (100-byte headers: +161 MiB at 8186da7, before
    // clients carried their request, and +165 after); 15 KB headers came to
    // +255 on both.
    const handshakes = Object.values(counts).reduce((a, b) => a + b, 0);
    const cpuMicros = report.cpuSeconds * 1e6 / handshakes;
    // deno-lint-ignore no-console -- the figures are the point of the test
    console.log(`  gateway CPU per handshake: ${cpuMicros.toFixed(0)} µs`);
    // The flood is a closed loop: the gateway answers as fast as it can, so
    // it spends its JavaScript thread whole, plus its helpers (101 % in a CI
    // run, 96-102 % here with 100-byte or 15 KB headers). What a handshake
    // costs is the bound: 290 µs with 100-byte headers, 400 with 15 KB.
    assertUnharmed("websocket handshake flood", report, 320, 1.5, 100);
    assert.ok(cpuMicros < 1000, `${cpuMicros.toFixed(0)} µs per handshake`);
    assert.ok((counts["101"] ?? 0) > 100, JSON.stringify(counts));
    assert.doesNotMatch(server.logs(), /\[chat\] Sandbox stopped/);
    // Over 16 KiB of request, refused before anything reaches the site.
    const big = await runClient(HANDSHAKES, [
      String(server.port),
      "0.2",
      "17000",
      "0",
    ]);
    assert.match(big, /"431":\d+/);
    assert.doesNotMatch(big, /"101"/);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
