/**
 * Standard fetch handlers (issue 16): `export default { fetch }` and
 * `host.mount(prefix, handler)` get a real Request and have their Response
 * sent as it is; they route, conflict and obey host claims like pages.
 * Also: cookies and sessions with returned Responses.
 */

import assert from "node:assert/strict";
import { type SiteFiles, startServer, writeSites } from "./helpers/server.ts";

const SITES: SiteFiles = {
  app: {
    "site.json": JSON.stringify({ hosts: ["*", "app.test"] }),
    // An app written for Deno Deploy / Workers: it knows nothing of sandflare.
    "autorun/ar_app.ts": `
export default {
  async fetch(request: Request, info: { remoteAddr: { hostname: string } }): Promise<Response> {
    const url = new URL(request.url);
    if (url.pathname === "/echo") {
      const chunks: number[] = [];
      let streamed = request.body instanceof ReadableStream;
      const reader = request.body!.getReader();
      let total = 0;
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        total += value.length;
        chunks.push(value.length);
      }
      return Response.json({
        url: request.url,
        method: request.method,
        streamed,
        total,
        type: request.headers.get("content-type"),
        custom: request.headers.get("x-custom"),
        peer: info.remoteAddr.hostname,
      });
    }
    if (url.pathname === "/cookies") {
      const headers = new Headers({ "x-app": "yes" });
      headers.append("set-cookie", "a=1; Path=/");
      headers.append("set-cookie", "b=2; Path=/; HttpOnly");
      return new Response(null, { status: 204, headers });
    }
    if (url.pathname === "/bytes") {
      return new Response(new Uint8Array([1, 2, 3]), { status: 202 });
    }
    return new Response("fetch handler: " + request.method + " " + url.pathname, {
      status: url.pathname === "/missing" ? 404 : 200,
    });
  },
};
`,
    "autorun/ar_pages.ts": `
import { hosts, session } from "sandflare";
hosts.any.add("/page", () => "a page first");
hosts.get("app.test").mount("/api/", async (request) =>
  Response.json({ url: request.url, method: request.method, body: await request.text() })
);
hosts.any.add("/counter", async (req, res) => {
  const s = await session.get(req, res);
  s.data.n = (Number(s.data.n) || 0) + 1;
  await s.save();
  return new Response("count " + s.data.n, { headers: { "set-cookie": "extra=1; Path=/" } });
});
hosts.any.add("/fresh-session", async (req, res) => {
  await session.get(req, res);
  return new Response("no save, a Response");
});
hosts.any.add("/many-cookies", (_req, res) => {
  res.setCookie("one", "1");
  res.setCookie("two", "2");
  res.setHeader("Set-Cookie", "three=3; Path=/");
  res.setHeader("Set-Cookie", "two=22; Path=/");
  res.append("cookies");
});
`,
  },
};

function setCookies(raw: string): string[] {
  return raw.split("\r\n").filter((l) => /^set-cookie:/i.test(l)).map((l) =>
    l.slice(l.indexOf(":") + 1).trim()
  );
}

Deno.test("export default { fetch } answers every path and method the site's pages do not, with a real Request", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    // Every method and path; the site's own page first.
    let res = await server.fetch("/anything/here?q=1");
    assert.equal(res.status, 200);
    assert.equal(res.text, "fetch handler: GET /anything/here");
    // As sent: Deno's own type for a string body, no default text/html.
    assert.equal(res.headers.get("content-type"), "text/plain;charset=UTF-8");
    res = await server.fetch("/page", { method: "DELETE" });
    assert.equal(res.text, "fetch handler: DELETE /page");
    res = await server.fetch("/page");
    assert.equal(res.text, "a page first");
    res = await server.fetch("/missing");
    assert.equal(res.status, 404);
    assert.equal(res.text, "fetch handler: GET /missing");
    res = await server.fetch("/bytes");
    assert.equal(res.status, 202);
    assert.equal(res.text, "\x01\x02\x03");
    assert.equal(res.headers.get("content-type"), null);

    // The URL with the request's own Host (and port) and scheme, every
    // header, the body as a stream.
    const body = "x".repeat(300_000);
    res = await server.fetch("/echo?z=9", {
      method: "POST",
      body,
      headers: { "content-type": "text/plain", "x-custom": "c1" },
    });
    assert.equal(res.status, 200);
    assert.deepEqual(JSON.parse(res.text), {
      url: `http://127.0.0.1:${server.port}/echo?z=9`,
      method: "POST",
      streamed: true,
      total: body.length,
      type: "text/plain",
      custom: "c1",
      peer: "127.0.0.1",
    });
    const named = await server.raw(
      "PUT /echo HTTP/1.1\r\nHost: App.Test:8080\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi",
    );
    assert.equal(JSON.parse(named.body).url, "http://app.test:8080/echo");
    // The host it was routed by: an absolute-form target's, not Host's.
    const absolute = await server.raw(
      "PUT http://app.test/echo HTTP/1.1\r\nHost: other.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert.equal(JSON.parse(absolute.body).url, "http://app.test/echo");

    // Several Set-Cookie headers and the other headers, as sent.
    // (On its own host: on a shared one, the gateway binds a site's
    // cookies to it by prefixing their names.)
    const cookies = await server.raw(
      "GET /cookies HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(cookies.status, 204);
    assert.deepEqual(setCookies(cookies.raw), [
      "a=1; Path=/",
      "b=2; Path=/; HttpOnly",
    ]);
    assert.equal(cookies.headers["x-app"], "yes");
  } finally {
    await server.stop();
  }
});

Deno.test("a request body over --max-post-length never reaches a fetch handler", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({
    sitesDir,
    args: ["--max-post-length=1000"],
  });
  try {
    const res = await server.fetch("/echo", {
      method: "POST",
      body: "y".repeat(1001),
    });
    assert.equal(res.status, 413);
    const ok = await server.fetch("/echo", {
      method: "POST",
      body: "y".repeat(1000),
    });
    assert.equal(JSON.parse(ok.text).total, 1000);
  } finally {
    await server.stop();
  }
});

Deno.test("host.mount() answers its prefix and below on its host, for every method, with the URL unstripped", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    const put = await server.raw(
      "PUT /api/items/7?x=1 HTTP/1.1\r\nHost: app.test\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbody",
    );
    assert.deepEqual(JSON.parse(put.body), {
      url: "http://app.test/api/items/7?x=1",
      method: "PUT",
      body: "body",
    });
    const top = await server.raw(
      "GET /api HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(JSON.parse(top.body).url, "http://app.test/api");
    // Not under the prefix: the default handler (the site declares app.test).
    const beside = await server.raw(
      "GET /apix HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(beside.body, "fetch handler: GET /apix");
    // Mounted on app.test only.
    const other = await server.fetch("/api/items/7");
    assert.equal(other.text, "fetch handler: GET /api/items/7");
  } finally {
    await server.stop();
  }
});

Deno.test("a session cookie and several Set-Cookie headers survive a returned Response", async () => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({ sitesDir });
  try {
    const first = await server.raw(
      "GET /counter HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert.equal(first.body, "count 1");
    const cookies = setCookies(first.raw);
    assert.equal(cookies.length, 2, first.raw);
    const session = cookies.find((c) => c.startsWith("session="));
    assert.ok(session !== undefined, first.raw);
    assert.ok(cookies.includes("extra=1; Path=/"));
    const id = session.split(";")[0]!;
    const second = await server.raw(
      `GET /counter HTTP/1.1\r\nHost: app.test\r\nCookie: ${id}\r\nConnection: close\r\n\r\n`,
    );
    assert.equal(second.body, "count 2");

    // A new session's cookie, without a save, with a Response.
    const fresh = await server.raw(
      "GET /fresh-session HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert.ok(
      setCookies(fresh.raw).some((c) => c.startsWith("session=")),
      fresh.raw,
    );

    // res.setCookie and res.setHeader("Set-Cookie") add cookies; the same
    // cookie's later value wins.
    const many = await server.raw(
      "GET /many-cookies HTTP/1.1\r\nHost: app.test\r\nConnection: close\r\n\r\n",
    );
    assert.deepEqual(setCookies(many.raw), [
      "one=1",
      "three=3; Path=/",
      "two=22; Path=/",
    ]);
  } finally {
    await server.stop();
  }
});

Deno.test("fetch handlers conflict and obey host claims like pages; Deno.serve in a site says what to do instead", async () => {
  const handler = (name: string) =>
    `export default { fetch: () => new Response("${name}") };\n`;
  const sitesDir = await writeSites({
    one: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_one.ts": handler("one"),
    },
    two: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_two.ts": handler("two"),
    },
    owner: {
      "site.json": JSON.stringify({ hosts: ["owned.test"] }),
      "autorun/ar_owner.ts": handler("owner"),
    },
    serves: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_serve.ts": `Deno.serve(() => new Response("x"));\n`,
    },
    nohosts: {
      "site.json": JSON.stringify({ hosts: [] }),
      "autorun/ar_x.ts": handler("nohosts"),
    },
    // Every mount is rebuilt into the route table at each reload.
    mounts: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_mounts.ts": `import { hosts } from "sandflare";
for (let i = 0; i < 20000; i++) {
  hosts.any.mount("/m" + i, () => new Response("m"));
}
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    const shared = await server.fetch("/x");
    assert.equal(shared.status, 409);
    await server.waitForLog(
      /A handler at "\/" on host "\*" is mounted by sites one and two/,
    );
    const owned = await server.raw(
      "POST /any/path HTTP/1.1\r\nHost: owned.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    );
    assert.equal(owned.body, "owner");
    const line = await server.waitForLog(/\[serves\].*Site not loaded/);
    assert.match(line, /Deno\.serve\(\) cannot run inside a Sandflare site/);
    assert.match(line, /export default \{ fetch/);
    assert.match(line, /autorun\/ar_serve\.ts:1/);
    assert.match(
      await server.waitForLog(/\[nohosts\].*Site not loaded/),
      /declares no hosts; list them under "hosts" in its site.json/,
    );
    assert.match(
      await server.waitForLog(/\[mounts\].*Site not loaded/),
      /ar_mounts\.ts:3.*a site may mount at most 256 handlers/,
    );
  } finally {
    await server.stop();
  }
});
