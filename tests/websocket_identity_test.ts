/**
 * A websocket client knows who it is (issue 19, point 2): it carries the
 * upgrade request's headers, cookies, host and query, `session.get(client)`
 * reads the session a page started, registrations may be patterns whose
 * captures the client carries, and a browser page of another site cannot
 * open one in its visitor's name. The chat example takes the nickname from
 * the session, not from what a client sends.
 */

import assert from "node:assert/strict";
import {
  delay,
  startExamples,
  startServer,
  type TestServer,
  writeSites,
} from "./helpers/server.ts";

const SITE = `
import { hosts, session, websocket } from "sandflare";
const site = hosts.any;
site.add("/login", async (req, res) => {
  const s = await session.get(req, res);
  s.data.user = req.params.user;
  await s.save();
  return "logged in";
});
const me = websocket.register("/me", null, site);
me.onConnect = async (client) => {
  const s = await session.get(client);
  client.send(JSON.stringify({
    user: s.data.user ?? null,
    sessionId: s.id,
    host: client.request.host,
    path: client.request.path,
    query: client.request.params,
    agent: client.request.headers.get("x-test"),
    cookie: client.request.cookies.session ?? null,
    peer: client.peer,
    captures: client.captures,
  }));
};
me.onMessage = async (client, message) => {
  const s = await session.get(client);
  if (message === "who") {
    client.send(String(s.data.user ?? null));
    return;
  }
  try {
    await s.save();
    client.send("saved");
  } catch (err) {
    client.send("refused: " + (err as Error).message);
  }
};
const rooms = websocket.registerPattern("/rooms/([a-z]+)/(\\\\d+)", null, site);
rooms.onConnect = (client) => client.send(JSON.stringify(client.captures));
const open = websocket.register("/open", null, site, { origins: ["https://app.example"] });
open.onConnect = (client) => client.send("open");
const anyone = websocket.register("/anyone", null, site, { origins: ["*"] });
anyone.onConnect = (client) => client.send("anyone");
`;

interface Opened {
  ws: WebSocket;
  next(): Promise<string>;
  closed: Promise<{ code: number; reason: string }>;
}

/** Opens a websocket to `path` on `id.test`, sending `headers`. */
async function open(
  server: TestServer,
  path: string,
  headers: Record<string, string> = {},
  protocols: string[] = [],
): Promise<Opened> {
  const ws = new WebSocket(
    `ws://127.0.0.1:${server.port}${path}`,
    // Deno's WebSocket takes headers in its options (not in lib.dom).
    { headers, protocols } as unknown as string[],
  );
  const messages: string[] = [];
  ws.onmessage = (e) => messages.push(String(e.data));
  const closed = new Promise<{ code: number; reason: string }>((resolve) => {
    ws.onclose = (e) => resolve({ code: e.code, reason: e.reason });
  });
  await new Promise<void>((resolve, reject) => {
    ws.onopen = () => resolve();
    ws.onerror = () => reject(new Error(`websocket ${path} did not open`));
  });
  let seen = 0;
  return {
    ws,
    closed,
    async next() {
      const deadline = Date.now() + 10_000;
      while (messages.length <= seen) {
        if (Date.now() > deadline) throw new Error(`no message on ${path}`);
        await delay(5);
      }
      return messages[seen++]!;
    },
  };
}

/** Sends a raw handshake and returns the response's status. */
async function handshake(
  server: TestServer,
  path: string,
  extra: string,
): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.port });
  try {
    await conn.write(new TextEncoder().encode(
      `GET ${path} HTTP/1.1\r\nHost: id.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${extra}\r\n`,
    ));
    // The status line is all this needs; a 101 keeps the connection open.
    const buffer = new Uint8Array(4096);
    let text = "";
    const deadline = Date.now() + 10_000;
    while (!text.includes("\r\n") && Date.now() < deadline) {
      const n = await conn.read(buffer);
      if (n === null) break;
      text += new TextDecoder().decode(buffer.subarray(0, n));
    }
    return Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  } finally {
    conn.close();
  }
}

Deno.test("websocket clients carry their request and session", async (t) => {
  const sitesDir = await writeSites({
    id: {
      "site.json": JSON.stringify({ hosts: ["*"], workers: 2 }),
      "autorun/ar_id.ts": SITE,
    },
  });
  // Two workers: the page that logs in and the socket may well run in
  // different ones; the session is the gateway's, so that cannot matter.
  const server = await startServer({ sitesDir });
  try {
    const login = await server.raw(
      "GET /login?user=alice HTTP/1.1\r\nHost: id.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(login.status, 200, login.body);
    // On a host it does not own, the site's cookie names carry its prefix.
    const pair = (login.headers["set-cookie"] ?? "").split(";")[0]!;
    const [cookieName, cookie] = pair.split("=") as [string, string];
    assert.match(cookieName, /session$/, "the page set a session cookie");

    await t.step(
      "the client sees its page's session, cookies, headers, host and query",
      async () => {
        const c = await open(server, "/me?room=lobby", {
          cookie: `${pair}; other=1`,
          "x-test": "identity-test/1",
        });
        const seen = JSON.parse(await c.next());
        assert.deepEqual(seen, {
          user: "alice",
          sessionId: cookie,
          host: "127.0.0.1",
          path: "/me",
          query: { room: "lobby" },
          agent: "identity-test/1",
          cookie,
          peer: "127.0.0.1",
          captures: [],
        });
        c.ws.close();
        await c.closed;
      },
    );

    await t.step(
      "session.get(client) reads the session now, not at connect",
      async () => {
        const c = await open(server, "/me", { cookie: pair });
        assert.equal(JSON.parse(await c.next()).user, "alice");
        const again = await server.raw(
          `GET /login?user=bob HTTP/1.1\r\nHost: id.test\r\nCookie: ${pair}\r\nConnection: close\r\n\r\n`,
        );
        assert.equal(again.status, 200);
        c.ws.send("who");
        assert.equal(await c.next(), "bob");
        // A client with a session may save it (no cookie to set).
        c.ws.send("save");
        assert.equal(await c.next(), "saved");
        c.ws.close();
        await c.closed;
      },
    );

    await t.step(
      "a client without a session gets empty data and cannot save one",
      async () => {
        for (
          const headers of [
            {},
            // An id the store does not know is no session either.
            { cookie: `${cookieName}=${"0".repeat(32)}` },
          ]
        ) {
          const c = await open(server, "/me", headers);
          const seen = JSON.parse(await c.next());
          assert.equal(seen.user, null);
          assert.equal(seen.sessionId, "");
          c.ws.send("save");
          assert.match(await c.next(), /^refused: .*has no session "session"/);
          c.ws.close();
          await c.closed;
        }
      },
    );

    await t.step(
      "a pattern registration hands the client its captures",
      async () => {
        const c = await open(server, "/rooms/kitchen/42");
        assert.deepEqual(JSON.parse(await c.next()), ["kitchen", "42"]);
        c.ws.close();
        await c.closed;
        assert.equal(await handshake(server, "/rooms/Kitchen/42", ""), 404);
        assert.equal(await handshake(server, "/rooms/kitchen/", ""), 404);
      },
    );

    await t.step(
      "a page of another site cannot open one in its visitor's name",
      async () => {
        const cases: [path: string, origin: string | null, status: number][] = [
          // No Origin: not a browser, nothing to borrow.
          ["/me", null, 101],
          ["/me", "http://id.test", 101],
          ["/me", "https://ID.test", 101],
          ["/me", "http://evil.test", 403],
          ["/me", "null", 403],
          ["/me", "http://id.test.evil.test", 403],
          ["/open", "https://app.example", 101],
          ["/open", "http://app.example", 403],
          ["/anyone", "http://evil.test", 101],
        ];
        for (const [path, origin, status] of cases) {
          assert.equal(
            await handshake(
              server,
              path,
              origin === null ? "" : `Origin: ${origin}\r\n`,
            ),
            status,
            `${path} from ${origin}`,
          );
        }
        await server.waitForLog(/"GET \/me HTTP\/1.1" 403 /);
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("websocket registrations with bad patterns or origins fail the load, naming them", async () => {
  const cases: [string, RegExp][] = [
    [
      `websocket.registerPattern("/a(?=b)")`,
      /websocket\.registerPattern\("\/a\(\?=b\)"\): route patterns run on a linear-time engine/,
    ],
    [
      `websocket.register("/o", null, hosts.any, { origins: ["https://a.example/path"] })`,
      /websocket\.register\("\/o"\): "https:\/\/a\.example\/path" is not an origin/,
    ],
  ];
  for (const [code, expected] of cases) {
    const sitesDir = await writeSites({
      bad: {
        "site.json": JSON.stringify({ hosts: ["*"] }),
        "autorun/ar_bad.ts":
          `import { hosts, websocket } from "sandflare";\nvoid hosts;\n${code};\n`,
      },
    });
    const server = await startServer({ sitesDir });
    try {
      await server.waitForLog(/\[bad\] Site not loaded/);
      assert.match(server.logs(), expected);
      assert.match(server.logs(), /ar_bad\.ts:3/);
    } finally {
      await server.stop();
      await Deno.remove(sitesDir, { recursive: true });
    }
  }
});

Deno.test("the chat example takes the nickname from the session, not from the client", async () => {
  const sitesDir = await Deno.makeTempDir({ prefix: "sandflare-test-" });
  const server = await startExamples(sitesDir, ["chat"]);
  try {
    const joined = await server.raw(
      "POST /chat/nick HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 10\r\nConnection: close\r\n\r\nnick=alice",
    );
    assert.equal(joined.status, 303, joined.body);
    const cookie = (joined.headers["set-cookie"] ?? "").split(";")[0]!;
    assert.match(cookie, /session=/);

    const alice = await open(server, "/chat/ws", { cookie }, ["chat"]);
    // What the example's page used to send, claiming another name.
    alice.ws.send(JSON.stringify({ nick: "admin", text: "hi" }));
    const got = JSON.parse(await alice.next());
    assert.equal(got.nick, "alice");
    assert.equal(got.text, JSON.stringify({ nick: "admin", text: "hi" }));

    // Without a session there is no name to speak under.
    const nobody = await open(server, "/chat/ws", {}, ["chat"]);
    nobody.ws.send("hello");
    const closed = await nobody.closed;
    assert.equal(closed.code, 4001);
    assert.match(closed.reason, /Pick a nickname/);
    alice.ws.close();
    await alice.closed;
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
