/**
 * Hostile replies: many headers, huge bodies to clients that never read,
 * control characters. Each runs while a neighbour site is measured and the
 * gateway's memory sampled.
 */

import assert from "node:assert/strict";
import { startServer, writeSites } from "../../helpers/server.ts";
import {
  assertUnharmed,
  FRAME_JS,
  NEIGHBOUR,
  NEIGHBOUR_SITE,
  underAttack,
} from "./harness.ts";

const SITES = {
  nb: NEIGHBOUR_SITE,
  evil: {
    "site.json": JSON.stringify({ hosts: ["evil.test"], memory: 512 }),
    "autorun/ar_evil.ts": `
import { hosts } from "sandflare";
const h = hosts.get("evil.test");
h.add("/headers", (_req, res) => {
  for (let i = 0; i < 5000; i++) res.setHeader("x-h" + i, "v");
  return "many headers";
});
const big = new Uint8Array(60 * 1024 * 1024).fill(120);
h.add("/big", (_req, res) => { res.setHeader("content-type", "application/octet-stream"); res.append(big); });
h.add("/control", () => new Response("control", { headers: { "x-bad": "a\\u0001b" } }));
h.add("/205", (_req, res) => { res.status = 205; return "a body it may not have"; });
// Forged: the head of a streamed reply for this very request, then nothing.
${FRAME_JS}
let count = 0;
h.add("/stall", () => {
  count++;
  Deno.stdout.writeSync(frame({ t: "reply", id: count, reply: { kind: "stream", status: 200, headers: [], length: null } }));
  return new Promise(() => {});
});
h.add("/bigheader", () => {
  const huge = { t: "usage", rss: 1, x: Array.from({ length: 300_000 }, () => ({})) };
  Deno.stdout.writeSync(frame(huge));
  return "sent";
});
`,
  },
};

function raw(port: number, path: string, extra = ""): Promise<Deno.TcpConn> {
  return Deno.connect({ hostname: "127.0.0.1", port }).then(async (conn) => {
    await conn.write(
      new TextEncoder().encode(
        `GET ${path} HTTP/1.1\r\nHost: evil.test\r\n${extra}\r\n`,
      ),
    );
    return conn;
  });
}

async function readAll(conn: Deno.Conn): Promise<string> {
  let text = "";
  const buffer = new Uint8Array(65536);
  while (true) {
    const n = await conn.read(buffer).catch(() => null);
    if (n === null) break;
    text += new TextDecoder().decode(buffer.subarray(0, n));
  }
  conn.close();
  return text;
}

Deno.test("a reply with 5,000 headers gets 502, logged once, and stalls no one", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    const statuses: string[] = [];
    const report = await underAttack(server, NEIGHBOUR, 2000, async () => {
      const end = Date.now() + 2000;
      while (Date.now() < end) {
        const text = await readAll(
          await raw(server.port, "/headers", "Connection: close\r\n"),
        );
        statuses.push(text.slice(9, 12));
      }
    });
    assertUnharmed("5,000 reply headers", report, 100, 0.3);
    assert.ok(statuses.length > 0 && statuses.every((s) => s === "502"));
    const lines = server.err.filter((l) => /reply was refused/.test(l));
    assert.match(lines[0] ?? "", /\[evil\].*500\d headers \(at most 100\)/);
    assert.ok(lines.length <= 2, `logged ${lines.length} times`);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a 60 MiB reply to 40 clients that never read holds the gateway's memory bounded", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const conns: Deno.Conn[] = [];
  try {
    const report = await underAttack(server, NEIGHBOUR, 3000, async () => {
      for (let i = 0; i < 40; i++) conns.push(await raw(server.port, "/big"));
      await new Promise((r) => setTimeout(r, 3000));
    });
    // Whole, that is 2.4 GB. Streamed, each client holds at most the
    // stream's window (256 KiB) in the gateway plus what Deno's HTTP layer
    // buffers for a socket that is full (about 400 KiB): some 26 MiB for
    // 40. On top comes garbage: about 4 MiB per client passes through
    // before the kernel's socket buffers fill, and V8 collects ArrayBuffers
    // only after tens of MiB have piled up. Measured on 2026-12-01 with
    // 10/40/80/120 clients: +55/+100/+120/+136 MiB, that is ~0.7 MiB a
    // client over a fixed ~50; 150 MiB tells that from holding replies whole.
    assertUnharmed("60 MiB to 40 clients that never read", report, 150);
    // And one that reads gets all of it.
    const reader = await raw(server.port, "/big", "Connection: close\r\n");
    let bytes = 0;
    const buffer = new Uint8Array(65536);
    while (true) {
      const n = await reader.read(buffer);
      if (n === null) break;
      bytes += n;
    }
    reader.close();
    assert.ok(bytes > 60 * 1048576, `${bytes} bytes`);
  } finally {
    for (const c of conns) c.close();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a reply header with a control character is a 502, logged as such", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    const text = await readAll(
      await raw(server.port, "/control", "Connection: close\r\n"),
    );
    assert.match(text, /^HTTP\/1\.1 502/);
    await server.waitForLog(/"GET \/control HTTP\/1.1" 502 /);
    await server.waitForLog(
      /\[evil\].*a control character in the value of header "x-bad"/,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a thousand stalled streams closed at once stall no one", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  const conns: Deno.Conn[] = [];
  try {
    const report = await underAttack(server, NEIGHBOUR, 3000, async () => {
      for (let i = 0; i < 2000; i++) {
        conns.push(await raw(server.port, "/stall"));
      }
      await new Promise((r) => setTimeout(r, 1500));
      for (const c of conns.splice(0)) c.close();
      await new Promise((r) => setTimeout(r, 1000));
    });
    // Before: quadratic regrants when they closed (a 1 s freeze at 8,000).
    // On this machine on 2026-12-01 the neighbour's p99 rose by 44-46 ms
    // alone (290ffd6 and after alike) and by 73 ms within the whole suite:
    // 150 ms still tells that freeze from a machine's load.
    assertUnharmed(
      "1,200 stalled streams closed at once",
      report,
      200,
      1,
      150,
    );
  } finally {
    for (const c of conns) c.close();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a reply with status 205 has no body, and no one is blamed for a crash", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    for (let i = 0; i < 3; i++) {
      const text = await readAll(
        await raw(server.port, "/205", "Connection: close\r\n"),
      );
      assert.match(text, /^HTTP\/1\.1 205/);
      assert.doesNotMatch(text, /a body it may not have/);
    }
    assert.ok(
      !server.err.some((l) => /Request failed in the gateway/.test(l)),
      server.logs(),
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a frame header over 256 KiB after load stops only its sandbox", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    const report = await underAttack(server, NEIGHBOUR, 1500, async () => {
      await readAll(
        await raw(server.port, "/bigheader", "Connection: close\r\n"),
      );
    });
    assertUnharmed("a 1 MiB frame header", report);
    await server.waitForLog(
      /\[evil\] Sandbox stopped: .*broke the protocol.*exceeds the limit/,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("setFile of large files a site wrote itself holds the gateway's memory bounded", async () => {
  // What any site with the default writable data/ can do: 40 sparse 64 MiB
  // files (no disk used), asked for at once, again after each is touched.
  const sitesDir = await writeSites({
    nb: NEIGHBOUR_SITE,
    files: {
      "site.json": JSON.stringify({
        hosts: ["files.test"],
        permissions: { write: ["data"] },
      }),
      "data/.keep": "",
      "autorun/ar_files.ts": `
import { hosts } from "sandflare";
const h = hosts.get("files.test");
h.add("/mk", async () => {
  for (let i = 0; i < 40; i++) {
    const file = await Deno.open("data/f" + i, { write: true, create: true });
    await file.truncate(64 * 1024 * 1024);
    file.close();
  }
  return "made";
});
h.add("/touch", async () => {
  const now = new Date();
  for (let i = 0; i < 40; i++) await Deno.utime("data/f" + i, now, now);
  return "touched";
});
h.add("/f", (req, res) => res.setFile("data/f" + req.params.i));
`,
    },
  });
  const server = await startServer({ sitesDir });
  const ask = (path: string, method = "GET") =>
    server.raw(
      `${method} ${path} HTTP/1.1\r\nHost: files.test\r\nConnection: close\r\n\r\n`,
      { timeoutMs: 20_000 },
    );
  try {
    assert.equal((await ask("/mk")).body, "made");
    const report = await underAttack(server, NEIGHBOUR, 3000, async () => {
      for (let round = 0; round < 3; round++) {
        const heads = await Promise.all(
          Array.from({ length: 40 }, (_, i) => ask(`/f?i=${i}`, "HEAD")),
        );
        for (const head of heads) {
          assert.equal(head.status, 200);
          assert.equal(
            head.headers["content-length"],
            String(64 * 1024 * 1024),
          );
        }
        await new Promise((r) => setTimeout(r, 1100)); // past revalidation
        await ask("/touch");
      }
    });
    assertUnharmed("HEAD of 40 files of 64 MiB, 3 times", report, 100);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
