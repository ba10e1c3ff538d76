/**
 * Websockets (SPEC §3 `websocket`, §4 step 1) and sessions (§3 `session`)
 * across the sandbox boundary, with Deno's WebSocket client.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  delay,
  type SiteFiles,
  startServer,
  type TestServer,
  writeSites,
} from "./helpers/server.ts";

const SITES: SiteFiles = {
  chat: {
    "site.json": JSON.stringify({ hosts: ["*"], workers: 2 }),
    "autorun/ar_chat.ts": `
import { hosts, session, websocket } from "sandflare";
const echo = websocket.register("/echo");
echo.onMessage = (client, msg) => {
  if (msg === "who") return client.send(self.name);
  if (msg === "close me") return client.close(4001, "asked to");
  client.send(typeof msg === "string" ? "echo: " + msg : msg);
};
const v1 = websocket.register("/room", "chat.v1");
v1.onMessage = (client) => client.send("spoke v1");
const v2 = websocket.register("/room", "chat.v2");
v2.onConnect = (client) => client.send("hello from v2 to " + client.peer);
v2.onMessage = (client, msg) => {
  if (msg === "who") client.send(self.name);
  else v2.send("all: " + msg);
};
const flood = websocket.register("/flood");
flood.onMessage = () => {
  const chunk = "z".repeat(256 * 1024);
  for (let i = 0; i < 64; i++) flood.send(chunk);
};
hosts.any.add("/count", async (req, res) => {
  const s = await session.get(req, res);
  s.data.n = (Number(s.data.n) || 0) + 1;
  await s.save();
  return s.id + " " + s.data.n;
});
`,
  },
  other: {
    "site.json": JSON.stringify({ hosts: ["other.test"] }),
    "autorun/ar_other.ts": `
import { hosts, session } from "sandflare";
hosts.get("other.test").add("/count", async (req, res) => {
  const s = await session.get(req, res);
  return s.id + " " + JSON.stringify(s.data);
});
`,
  },
};

interface Client {
  ws: WebSocket;
  messages: (string | Uint8Array)[];
  closed: Promise<{ code: number; reason: string }>;
  next(): Promise<string | Uint8Array>;
}

async function connect(
  server: TestServer,
  path: string,
  protocols?: string[],
): Promise<Client> {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}${path}`, protocols);
  ws.binaryType = "arraybuffer";
  const messages: (string | Uint8Array)[] = [];
  let seen = 0;
  ws.onmessage = (e) =>
    messages.push(typeof e.data === "string" ? e.data : new Uint8Array(e.data));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
  });
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`websocket ${path} failed to open`));
  });
  return {
    ws,
    messages,
    closed,
    async next() {
      const deadline = Date.now() + 5000;
      while (messages.length <= seen) {
        if (Date.now() > deadline) throw new Error(`no message on ${path}`);
        await delay(5);
      }
      return messages[seen++]!;
    },
  };
}

Deno.test("websockets", async (t) => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({
    sitesDir,
    args: [
      "--websocket-max-message=1KiB",
      "--websocket-max-buffer=256KiB",
      `--data-dir=${join(sitesDir, ".data")}`,
    ],
  });
  const open: Client[] = [];
  try {
    await t.step("echo, text and binary", async () => {
      const c = await connect(server, "/echo");
      open.push(c);
      c.ws.send("hi");
      assert.equal(await c.next(), "echo: hi");
      c.ws.send(new Uint8Array([0, 1, 2, 255]));
      assert.deepEqual(await c.next(), new Uint8Array([0, 1, 2, 255]));
    });

    await t.step(
      "protocol negotiation picks the registration the client asked for",
      async () => {
        const c = await connect(server, "/room", ["nope", "chat.v2"]);
        open.push(c);
        assert.equal(c.ws.protocol, "chat.v2");
        assert.equal(await c.next(), "hello from v2 to 127.0.0.1");
        const v1 = await connect(server, "/room", ["chat.v1"]);
        open.push(v1);
        v1.ws.send("x");
        assert.equal(await v1.next(), "spoke v1");
        await assert.rejects(connect(server, "/room", ["chat.v9"]));
      },
    );

    await t.step(
      "unregistered paths and unknown upgrades are 404",
      async () => {
        await assert.rejects(connect(server, "/nowhere"));
        const res = await server.raw(
          "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        assert.equal(res.status, 404);
        assert.equal(
          (await server.fetch("/echo")).status,
          404,
          "a plain GET does not reach a websocket",
        );
      },
    );

    await t.step(
      "broadcast reaches clients held by different workers",
      async () => {
        const a = await connect(server, "/room", ["chat.v2"]);
        const b = await connect(server, "/room", ["chat.v2"]);
        open.push(a, b);
        await a.next();
        await b.next();
        a.ws.send("who");
        b.ws.send("who");
        const workers = new Set([await a.next(), await b.next()]);
        assert.equal(
          workers.size,
          2,
          `clients on two workers: ${[...workers]}`,
        );
        a.ws.send("ping");
        assert.equal(await a.next(), "all: ping");
        assert.equal(await b.next(), "all: ping");
      },
    );

    await t.step("the site can close a client with a code", async () => {
      const c = await connect(server, "/echo");
      c.ws.send("close me");
      assert.deepEqual(await c.closed, { code: 4001, reason: "asked to" });
    });

    await t.step(
      "an oversized message closes the client with 1009",
      async () => {
        const c = await connect(server, "/echo");
        c.ws.send("x".repeat(2048));
        assert.equal((await c.closed).code, 1009);
      },
    );

    await t.step(
      "a client that does not read is closed instead of buffered without bound",
      async () => {
        const conn = await Deno.connect({
          hostname: "127.0.0.1",
          port: server.port,
        });
        await conn.write(new TextEncoder().encode(
          "GET /flood HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        ));
        const head = new Uint8Array(1024);
        await conn.read(head); // the 101, then never read again
        // A masked text frame "go" from the slow client triggers 16 MiB of sends.
        await conn.write(
          new Uint8Array([
            0x81,
            0x82,
            1,
            2,
            3,
            4,
            "g".charCodeAt(0) ^ 1,
            "o".charCodeAt(0) ^ 2,
          ]),
        );
        await server.waitForLog(
          /\[chat\] Closed slow websocket client\(s\): .* is not reading/,
        );
        conn.close();
        const c = await connect(server, "/echo");
        c.ws.send("still fine");
        assert.equal(await c.next(), "echo: still fine");
        open.push(c);
      },
    );

    await t.step(
      "a reload keeps existing clients working; new ones get the new code",
      async () => {
        const before = await connect(server, "/echo");
        open.push(before);
        const script = join(sitesDir, "chat", "autorun", "ar_chat.ts");
        const source = await Deno.readTextFile(script);
        await Deno.writeTextFile(
          script,
          source.replace(`"echo: " + msg`, `"echo2: " + msg`),
        );
        await server.waitForLog(/\[chat\] Reloaded/);
        before.ws.send("old");
        assert.equal(await before.next(), "echo: old");
        const after = await connect(server, "/echo");
        open.push(after);
        after.ws.send("new");
        assert.equal(await after.next(), "echo2: new");
      },
    );

    await t.step(
      "a sandbox that dies closes its clients with 1011",
      async () => {
        const c = await connect(server, "/echo");
        const pids = [
          ...server.logs().matchAll(/\[chat\] .*sandbox pid (\d+)/g),
        ].map((m) => Number(m[1]));
        Deno.kill(pids.at(-1)!, "SIGKILL");
        assert.equal((await c.closed).code, 1011);
        await server.waitForLog(/\[chat\] Sandbox restarted/);
      },
    );

    await t.step("shutdown closes clients with 1001", async () => {
      const c = await connect(server, "/echo");
      const status = await server.stop();
      assert.equal(status.code, 0);
      assert.equal((await c.closed).code, 1001);
    });
  } finally {
    for (const c of open) c.ws.close();
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("sessions persist across requests and restarts, and never leak", async () => {
  const sitesDir = await writeSites(SITES);
  const dataDir = join(sitesDir, ".data");
  const args = [`--data-dir=${dataDir}`];
  let server = await startServer({ sitesDir, args });
  try {
    const count = async (cookie: string, host = "x.test") => {
      const res = await server.raw(
        `GET /count HTTP/1.1\r\nHost: ${host}\r\n${
          cookie ? `Cookie: ${cookie}\r\n` : ""
        }Connection: close\r\n\r\n`,
      );
      return { body: res.body, setCookie: res.headers["set-cookie"] ?? "" };
    };
    const first = await count("");
    assert.match(
      first.setCookie,
      // x.test is shared by every site's hosts.any pages: the cookie is
      // bound to its site by name.
      /^sf~chat~session=[0-9a-f]{32}; Path=\/; Max-Age=\d+; HttpOnly; SameSite=Lax$/,
    );
    const cookie = first.setCookie.split(";")[0]!;
    const id = cookie.split("=")[1]!;
    assert.equal(first.body, `${id} 1`);
    assert.equal((await count(cookie)).body, `${id} 2`);

    const stranger = await count("");
    assert.notEqual(
      stranger.body.split(" ")[0],
      id,
      "another client gets another session",
    );
    assert.equal(stranger.body.split(" ")[1], "1");

    const otherSite = await count(cookie, "other.test");
    assert.notEqual(
      otherSite.body.split(" ")[0],
      id,
      "another site never sees this session",
    );
    assert.equal(otherSite.body.split(" ")[1], "{}");

    const forged = await count("sf~chat~session=not-an-id");
    assert.equal(forged.body.split(" ")[1], "1");

    await server.stop();
    server = await startServer({ sitesDir, args });
    assert.equal(
      (await count(cookie)).body,
      `${id} 3`,
      "kept across a restart",
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
