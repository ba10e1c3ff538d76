/**
 * Owned connections (the default): idle connections (between requests, or
 * before a whole request) are closed after --keepalive-time,
 * --max-connections is a cap, and none of it delays a normal client;
 * websockets still work.
 */

import assert from "node:assert/strict";
import {
  delay,
  startServer,
  type TestServer,
  writeSites,
} from "../helpers/server.ts";

const SITES = {
  plain: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "static/*/big.txt": "x".repeat(512 * 1024),
    "autorun/ar_plain.ts": `
import { hosts, websocket } from "sandflare";
hosts.any.add("/ok", () => "ok");
const echo = websocket.register("/echo");
echo.onMessage = (client, msg) => client.send("echo: " + msg);
`,
  },
};

/** Opens a connection, sends `bytes`, and says when (ms) the server closed it, or null. */
async function closedAfter(
  port: number,
  bytes: string,
  waitMs: number,
): Promise<number | null> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const t0 = Date.now();
  if (bytes !== "") await conn.write(new TextEncoder().encode(bytes));
  const buf = new Uint8Array(65536);
  const timer = setTimeout(() => conn.close(), waitMs);
  try {
    while (true) {
      const n = await conn.read(buf);
      if (n === null) return Date.now() - t0;
    }
  } catch {
    return null; // closed by us: the server kept it open
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // Closed.
    }
  }
}

async function ok(server: TestServer): Promise<number> {
  const t0 = performance.now();
  const res = await server.raw(
    "GET /ok HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
  );
  assert.equal(res.body, "ok");
  return performance.now() - t0;
}

Deno.test("idle connections are closed and their number capped", async (t) => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({
    sitesDir,
    args: ["--keepalive-time=1", "--max-connections=20"],
  });
  try {
    await t.step(
      "idle, half-sent and kept-alive connections close after --keepalive-time",
      async () => {
        const [idle, partial, kept] = await Promise.all([
          closedAfter(server.port, "", 5000),
          closedAfter(server.port, "GET /ok HTTP/1.1\r\nHost: x\r\n", 5000),
          closedAfter(server.port, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n", 5000),
        ]);
        for (
          const [name, ms] of [["idle", idle], ["partial head", partial], [
            "keep-alive",
            kept,
          ]] as const
        ) {
          assert.ok(
            ms !== null && ms >= 900 && ms < 3000,
            `${name}: closed after ${ms} ms`,
          );
        }
      },
    );

    await t.step("a slow but steady download is not cut", async () => {
      const res = await fetch(`${server.origin}/big.txt`);
      const reader = res.body!.getReader();
      let size = 0;
      while (true) {
        const { value, done } = await reader.read();
        if (done) break;
        size += value.length;
        await delay(20); // reading slowly, past the keepalive time in total
      }
      assert.equal(size, 512 * 1024);
    });

    await t.step(
      "beyond --max-connections new connections are closed at once",
      async () => {
        const held: Deno.Conn[] = [];
        for (let i = 0; i < 20; i++) {
          held.push(
            await Deno.connect({ hostname: "127.0.0.1", port: server.port }),
          );
        }
        await delay(100);
        const refused = await closedAfter(server.port, "", 2000);
        assert.ok(
          refused !== null && refused < 500,
          `closed after ${refused} ms`,
        );
        for (const c of held) c.close();
        await server.waitForLog(
          /Refused \d+ connection\(s\) over --max-connections/,
        );
        await delay(200);
        assert.ok(await ok(server) < 1000, "served again once they closed");
      },
    );

    await t.step(
      "idle connections do not delay a normal client; they expire",
      async () => {
        const idle: Deno.Conn[] = [];
        // Under the cap of 20 at once: open them in waves that expire.
        for (let i = 0; i < 15; i++) {
          idle.push(
            await Deno.connect({ hostname: "127.0.0.1", port: server.port }),
          );
        }
        const latencies: number[] = [];
        for (let i = 0; i < 10; i++) latencies.push(await ok(server));
        assert.ok(
          Math.max(...latencies) < 500,
          `latencies ${latencies.map(Math.round)}`,
        );
        await delay(1600);
        const buf = new Uint8Array(16);
        const closed = await Promise.all(
          idle.map((c) => c.read(buf).catch(() => null)),
        );
        assert.ok(
          closed.every((n) => n === null),
          "every idle connection was closed",
        );
        for (const c of idle) {
          try {
            c.close();
          } catch {
            // Closed.
          }
        }
      },
    );

    await t.step("websockets still work", async () => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/echo`);
      await new Promise((resolve, reject) => {
        ws.onopen = resolve;
        ws.onerror = reject;
      });
      const reply = new Promise((resolve) =>
        ws.onmessage = (e) => resolve(e.data)
      );
      await delay(1500); // longer than the keepalive time: upgraded connections stay
      ws.send("still here");
      assert.equal(await reply, "echo: still here");
      const closed = new Promise((resolve) => ws.onclose = resolve);
      ws.close();
      await closed;
    });
  } finally {
    const status = await server.stop();
    assert.equal(status.code, 0);
    await Deno.remove(sitesDir, { recursive: true });
  }
});
