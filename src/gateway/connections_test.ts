import assert from "node:assert/strict";
import {
  ConnectionServer,
  type ConnectionServerOptions,
  MAX_HEAD_BYTES,
  refuse,
} from "./connections.ts";

Deno.test("refuse: what the owned connections answer before any site", async (t) => {
  const request = (headers: Record<string, string>, method = "POST") =>
    new Request("http://x.test/a", { method, headers });

  await t.step("an ordinary request goes on", () => {
    assert.equal(refuse(request({ "content-length": "4" })), null);
    assert.equal(refuse(request({ "transfer-encoding": "chunked" })), null);
  });

  await t.step("Transfer-Encoding with Content-Length: 400, then close", () => {
    const refused = refuse(
      request({ "content-length": "4", "transfer-encoding": "chunked" }),
    );
    assert.equal(refused?.response.status, 400);
    assert.equal(refused?.response.headers.get("connection"), "close");
  });

  await t.step("a head just under the limit goes on; over it is 431", () => {
    const base = "GET".length + "http://x.test/a".length + 12 + "x-big".length +
      4;
    const under = request(
      { "x-big": "b".repeat(MAX_HEAD_BYTES - base) },
      "GET",
    );
    assert.equal(refuse(under), null);
    const over = request(
      { "x-big": "b".repeat(MAX_HEAD_BYTES - base + 1) },
      "GET",
    );
    const refused = refuse(over);
    assert.equal(refused?.response.status, 431);
    assert.equal(refused?.response.headers.get("connection"), "close");
  });
});

/** Sends `bytes` on a new connection; the whole answer, until it closes. */
async function exchange(
  port: number,
  bytes: string,
  timeoutMs = 5000,
): Promise<{ text: string; closed: boolean }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(new TextEncoder().encode(bytes));
  const chunks: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  const deadline = Date.now() + timeoutMs;
  let closed = false;
  while (Date.now() < deadline) {
    const timer = new Promise<"wait">((r) => setTimeout(() => r("wait"), 200));
    const n = await Promise.race([conn.read(buf).catch(() => null), timer]);
    if (n === "wait") continue;
    if (n === null) {
      closed = true;
      break;
    }
    chunks.push(buf.slice(0, n));
  }
  try {
    conn.close();
  } catch {
    // Closed.
  }
  const text = new TextDecoder().decode(
    new Uint8Array(chunks.flatMap((c) => [...c])),
  );
  return { text, closed };
}

/** A connection that has sent one GET. */
async function get(port: number): Promise<Deno.Conn> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
  );
  return conn;
}

function serve(
  options: Partial<ConnectionServerOptions>,
  body: (path: string) => string = () => "ok",
): ConnectionServer {
  return new ConnectionServer({
    hostname: "127.0.0.1",
    port: 0,
    keepaliveMs: 1000,
    maxConnections: 100,
    ...options,
  }, (request) => {
    const text = body(new URL(request.url).pathname);
    return Promise.resolve({
      response: new Response(text),
      bytes: text.length,
    });
  });
}

Deno.test("ConnectionServer: refusals reach the client before the connection closes", async (t) => {
  const server = serve({});
  const port = server.addr.port;
  try {
    await t.step(
      "Transfer-Encoding with Content-Length: 400, nothing after",
      async () => {
        const { text, closed } = await exchange(
          port,
          "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        assert.match(text, /^HTTP\/1\.1 400 /);
        assert.equal(text.match(/HTTP\/1\.1/g)?.length, 1, "one answer only");
        assert.ok(closed, "then the connection closes");
      },
    );
    await t.step("a 70 KB header: 431", async () => {
      const { text, closed } = await exchange(
        port,
        `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${"b".repeat(70_000)}\r\n\r\n`,
      );
      assert.match(text, /^HTTP\/1\.1 431 /);
      assert.ok(closed);
    });
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("ConnectionServer: a client that does not read its answer is closed", async () => {
  const big = "x".repeat(32 * 1024 * 1024); // far beyond the socket buffers
  const server = serve({ sendTimeoutMs: 2000 }, () => big);
  try {
    const conn = await get(server.addr.port);
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(server.connections, 1, "held while the answer is written");
    const t0 = Date.now();
    while (server.connections > 0 && Date.now() - t0 < 8000) {
      await new Promise((r) => setTimeout(r, 100));
    }
    const ms = Date.now() - t0;
    conn.close();
    assert.equal(server.connections, 0, "closed for not reading");
    assert.ok(ms > 1000 && ms < 6000, `closed after ${ms} ms`);
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("ConnectionServer: websockets count towards --max-connections", async () => {
  let websockets = 3;
  const server = serve({ maxConnections: 4, openWebsockets: () => websockets });
  try {
    const one = await exchange(
      server.addr.port,
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.match(one.text, /^HTTP\/1\.1 200 /, "3 websockets + 1: served");
    const held = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.addr.port,
    });
    await new Promise((r) => setTimeout(r, 100));
    const refused = await exchange(
      server.addr.port,
      "GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      2000,
    );
    assert.equal(refused.text, "", "3 websockets + 1 held: refused");
    assert.ok(refused.closed);
    websockets = 0;
    const again = await exchange(
      server.addr.port,
      "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert.match(again.text, /^HTTP\/1\.1 200 /, "the websockets closed");
    held.close();
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("ConnectionServer: a slow but steady reader of a large answer is not cut", async () => {
  const big = "y".repeat(8 * 1024 * 1024);
  // Read at about 3 MiB/s, over more than the keepalive time, never stalling
  // for the send timeout.
  const server = serve({ sendTimeoutMs: 1000 }, () => big);
  try {
    const conn = await get(server.addr.port);
    const buf = new Uint8Array(64 * 1024);
    let received = 0;
    const t0 = Date.now();
    while (received < big.length) {
      const n = await conn.read(buf);
      if (n === null) break;
      received += n;
      await new Promise((r) => setTimeout(r, 20)); // ~3 MiB/s at most
    }
    conn.close();
    assert.ok(received > big.length, `received ${received} bytes`);
    assert.ok(Date.now() - t0 > 1500, "longer than the keepalive time");
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("ConnectionServer: a large answer read at once leaves its connection idle", async () => {
  const big = "z".repeat(4 * 1024 * 1024);
  const server = serve({}, () => big);
  try {
    const conn = await get(server.addr.port);
    const buf = new Uint8Array(256 * 1024);
    let received = 0;
    let text = "";
    while (received < big.length) {
      const n = await conn.read(buf);
      if (n === null) break;
      if (text === "") text = new TextDecoder().decode(buf.subarray(0, 200));
      received += n;
    }
    assert.match(text, /content-length: 4194304/i, "the length is kept");
    // Read in full: closed about one keepalive time later, not held.
    const t0 = Date.now();
    const end = await conn.read(buf).catch(() => null);
    const ms = Date.now() - t0;
    conn.close();
    assert.equal(end, null);
    assert.ok(ms < 3000, `closed after ${ms} ms`);
  } finally {
    await server.shutdown(1000);
  }
});

Deno.test("ConnectionServer: an answer waiting for its source (a quiet event stream) is not cut as a slow reader", async () => {
  const server = new ConnectionServer({
    hostname: "127.0.0.1",
    port: 0,
    keepaliveMs: 1000,
    maxConnections: 100,
    sendTimeoutMs: 500,
  }, () => {
    const encoder = new TextEncoder();
    const body = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(encoder.encode("first;"));
        // Quiet for four send timeouts, while the client reads.
        await new Promise((r) => setTimeout(r, 2000));
        controller.enqueue(encoder.encode("second;"));
        controller.close();
      },
    });
    return Promise.resolve({ response: new Response(body), bytes: null });
  });
  try {
    const conn = await get(server.addr.port);
    const buf = new Uint8Array(4096);
    let text = "";
    const decoder = new TextDecoder();
    while (!text.includes("second;")) {
      const n = await conn.read(buf);
      if (n === null) break;
      text += decoder.decode(buf.subarray(0, n));
    }
    conn.close();
    assert.match(text, /first;[\s\S]*second;/);
  } finally {
    await server.shutdown(1000);
  }
});
