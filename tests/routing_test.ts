/**
 * Routing over real HTTP (SPEC §4): hosts, pages, fallback, 404/405/409,
 * HEAD, captures, upgrades, error pages and the access log.
 */

import assert from "node:assert/strict";
import { type SiteFiles, startServer, writeSites } from "./helpers/server.ts";

const SITES: SiteFiles = {
  alpha: {
    "site.json": JSON.stringify({
      hosts: [
        "*",
        "alpha.test",
        "*.shared.test",
        "strict.test",
        "list-a.test",
        "list-b.test",
      ],
    }),
    "autorun/ar_01_pages.ts": `
import { hosts } from "sandflare";
(globalThis as { order?: string[] }).order = ["01"];
hosts.any.add("/alpha", (_req, res) => res.append("alpha on any"));
hosts.any.add("/both", () => "alpha both");
hosts.any.add("/multi", () => "multi get");
hosts.any.add("/multi", () => "multi put", "PUT");
hosts.any.addPattern("/user/(\\\\d+)/(\\\\w+)", (_req, res, id, tab) => res.json({ id, tab }));
hosts.any.addPattern("/files/.*", () => "files pattern");
hosts.any.add("/files/exact", () => "files exact");
hosts.any.addPattern("/twice/[a-z]+", () => "twice one");
hosts.any.addPattern("/twice/[a-m]+", () => "twice two");
hosts.get("alpha.test").add("/", (req) => "alpha home for " + req.host);
hosts.get("alpha.test").add("/echo", async (req) => "echo:" + await req.text(), "POST");
hosts.get("*.shared.test").add("/", (req) => "shared by alpha for " + req.host);
hosts.get("strict.test", { noFallback: true }).add("/here", () => "strict here");
hosts.get("list-a.test,list-b.test").add("/", (req) => "list for " + req.host);
`,
    "autorun/ar_02_req.ts": `
import { hosts } from "sandflare";
const order = (globalThis as { order?: string[] }).order ?? [];
order.push("02");
hosts.any.add("/order", () => order.join(","));
hosts.any.add("/req", (req, res) => {
  res.setCookie("seen", "yes please", { httpOnly: true, sameSite: "Lax", path: "/" });
  res.setHeader("X-Custom", "1");
  res.json({
    method: req.method, path: req.path, fullUrl: req.fullUrl, params: req.params,
    host: req.host, peer: req.peer, cookies: req.cookies, ua: req.headers.get("user-agent"),
    upgraded: req.isUpgraded(), fresh: req.totalTime() < 5,
  });
});
hosts.any.add("/form", async (req) => JSON.stringify(await req.postParams()), "POST");
hosts.any.add("/response", () => new Response("from a Response", { status: 201, headers: { "x-r": "yes" } }));
hosts.any.add("/halt", (_req, res) => res.halt(418, "<script>alert(1)</script> is not tea"));
hosts.any.add("/throw", () => { throw new Error("secret detail /home/site/internal.ts"); });
hosts.any.add("/status", (_req, res) => { res.status = 202; res.append("accepted"); });
hosts.any.add("/bad-status", (_req, res) => { res.status = 99; });
hosts.any.add("/bad-header", (_req, res) => res.setHeader("X-Evil", "a\\r\\nSet-Cookie: x=1"));
`,
  },
  beta: {
    "site.json": JSON.stringify({
      hosts: ["*", "beta.test", "~.shared.test", "+.one.test"],
    }),
    "autorun/ar_beta.ts": `
import { hook, hosts } from "sandflare";
hosts.any.add("/", () => "beta claims the root page");
hosts.any.add("/both", () => "beta both");
hosts.get("beta.test").add("/", () => "beta home");
hosts.get("beta.test").add("/halt", (_req, res) => res.halt(403, "go away"));
hosts.get("+.one.test").add("/", (req) => "one label: " + req.host);
hosts.get("~.shared.test").add("/", (req) => "shared by beta for " + req.host);
hook.add("Error", "beta-errors", (err, _req, res) => {
  if (err.code === 404) { res.append("beta custom 404: " + err.message); return true; }
});
`,
  },
};

Deno.test("routing over real HTTP", async (t) => {
  const sitesDir = await writeSites(SITES);
  const server = await startServer({
    sitesDir,
    args: ["--max-post-length=1K"],
  });
  const get = (path: string, host: string, extra = "") =>
    server.raw(
      `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n${extra}Connection: close\r\n\r\n`,
    );
  try {
    await t.step("host patterns: exact, *., ~., +., comma lists", async () => {
      const cases: [string, number, string][] = [
        ["alpha.test", 200, "alpha home for alpha.test"],
        ["ALPHA.test:8080", 200, "alpha home for alpha.test"],
        ["alpha.test.", 200, "alpha home for alpha.test"],
        ["shared.test", 200, "shared by alpha for shared.test"],
        ["x.one.test", 200, "one label: x.one.test"],
        ["list-b.test", 200, "list for list-b.test"],
        ["beta.test", 200, "beta home"],
        ["nobody.test", 200, "beta claims the root page"],
      ];
      for (const [host, status, body] of cases) {
        const res = await get("/", host);
        assert.equal(res.status, status, host);
        assert.equal(res.body, body, host);
      }
    });

    await t.step("autorun scripts run in file-name order", async () => {
      assert.equal((await get("/order", "x.test")).body, "01,02");
    });

    await t.step(
      "+. matches one label only; deeper falls to hosts.any",
      async () => {
        const res = await get("/", "a.b.one.test");
        assert.equal(res.body, "beta claims the root page");
      },
    );

    await t.step(
      "two hosts matching is a 409; the log names both",
      async () => {
        const res = await get("/", "www.shared.test");
        assert.equal(res.status, 409);
        assert.match(res.body, /claimed by more than one site/);
        // The public page names no tenant; the operator's log does.
        assert.doesNotMatch(res.body, /shared\.test"|alpha|beta/);
        await server.waitForLog(
          /Answered 409: (?=.*"\*\.shared\.test" \(site \w+\))(?=.*"~\.shared\.test" \(site \w+\))/,
        );
      },
    );

    await t.step("fallback to hosts.any, and noFallback", async () => {
      assert.equal((await get("/alpha", "alpha.test")).body, "alpha on any");
      assert.equal((await get("/here", "strict.test")).body, "strict here");
      const strict = await get("/alpha", "strict.test");
      assert.equal(strict.status, 404);
    });

    await t.step("404 through the owning site's Error hook", async () => {
      const res = await get("/missing", "beta.test");
      assert.equal(res.status, 404);
      assert.match(res.body, /^beta custom 404: /);
      const plain = await get("/missing", "nobody.test");
      assert.equal(plain.status, 404);
      assert.match(plain.headers["content-type"]!, /text\/html/);
      assert.match(plain.body, /404 Not Found/);
    });

    await t.step("405 with Allow", async () => {
      const res = await server.raw(
        "DELETE /multi HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
      );
      assert.equal(res.status, 405);
      assert.equal(res.headers["allow"], "GET, HEAD, PUT");
      const put = await server.raw(
        "PUT /multi HTTP/1.1\r\nHost: x.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
      );
      assert.equal(put.body, "multi put");
    });

    await t.step(
      "409 when two sites register the same page on hosts.any",
      async () => {
        const res = await get("/both", "x.test");
        assert.equal(res.status, 409);
        assert.doesNotMatch(res.body, /alpha|beta/);
        await server.waitForLog(
          /Answered 409: (?=.*GET "\/both" \(site alpha\))(?=.*GET "\/both" \(site beta\))/,
        );
        // The operator is told at load, not only the client at request time.
        await server.waitForLog(
          /warn GET "\/both" on host "\*" is registered by sites alpha and beta/,
        );
      },
    );

    await t.step(
      "409 when two patterns match; exact beats pattern",
      async () => {
        assert.equal((await get("/twice/abc", "x.test")).status, 409);
        assert.equal((await get("/twice/xyz", "x.test")).body, "twice one");
        assert.equal((await get("/files/exact", "x.test")).body, "files exact");
        assert.equal(
          (await get("/files/other", "x.test")).body,
          "files pattern",
        );
      },
    );

    await t.step("captures are passed to the callback", async () => {
      const res = await get("/user/42/posts", "x.test");
      assert.deepEqual(JSON.parse(res.body), { id: "42", tab: "posts" });
      assert.equal((await get("/user/abc/posts", "x.test")).status, 404);
    });

    await t.step("HEAD is served by GET pages without a body", async () => {
      const res = await server.raw(
        "HEAD /alpha HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
      );
      assert.equal(res.status, 200);
      assert.equal(res.body, "");
      assert.equal(
        res.headers["content-length"],
        String("alpha on any".length),
      );
    });

    await t.step("the request object", async () => {
      const res = await server.raw(
        "GET /req?a=1&b=two%20words HTTP/1.1\r\nHost: Alpha.Test:99\r\nUser-Agent: t/1\r\nCookie: k=v; e=%C3%A9\r\nConnection: close\r\n\r\n",
      );
      assert.equal(res.status, 200);
      const body = JSON.parse(res.body);
      assert.deepEqual(body, {
        method: "GET",
        path: "/req",
        fullUrl: "/req?a=1&b=two%20words",
        params: { a: "1", b: "two words" },
        host: "alpha.test",
        peer: "127.0.0.1",
        cookies: { k: "v", e: "é" },
        ua: "t/1",
        upgraded: false,
        fresh: true,
      });
      assert.equal(res.headers["x-custom"], "1");
      assert.equal(
        res.headers["set-cookie"],
        "seen=yes%20please; Path=/; HttpOnly; SameSite=Lax",
      );
    });

    await t.step(
      "POST bodies, forms, and 413 over --max-post-length",
      async () => {
        const echo = await server.raw(
          "POST /echo HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello",
        );
        assert.equal(echo.body, "echo:hello");
        const form = await server.fetch("/form", {
          method: "POST",
          body: new URLSearchParams({ name: "ann", x: "1" }),
        });
        assert.deepEqual(JSON.parse(form.text), { name: "ann", x: "1" });
        const big = await server.raw(
          `POST /echo HTTP/1.1\r\nHost: alpha.test\r\nContent-Length: 2000\r\nConnection: close\r\n\r\n${
            "x".repeat(2000)
          }`,
        );
        assert.equal(big.status, 413);
        const chunked = await server.raw(
          `POST /echo HTTP/1.1\r\nHost: alpha.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n7d0\r\n${
            "y".repeat(2000)
          }\r\n0\r\n\r\n`,
        );
        assert.equal(chunked.status, 413);
      },
    );

    await t.step(
      "callbacks may return a string or a Response; status is kept",
      async () => {
        const res = await server.fetch("/response");
        assert.equal(res.status, 201);
        assert.equal(res.text, "from a Response");
        assert.equal(res.headers.get("x-r"), "yes");
        const status = await server.fetch("/status");
        assert.equal(status.status, 202);
        assert.equal(status.text, "accepted");
      },
    );

    await t.step(
      "halt renders an escaped error page; JSON when asked",
      async () => {
        const res = await server.fetch("/halt");
        assert.equal(res.status, 418);
        assert.match(res.text, /418 I&#39;m a Teapot|418 I&#39;m a teapot/);
        assert.match(
          res.text,
          /&lt;script&gt;alert\(1\)&lt;\/script&gt; is not tea/,
        );
        assert.doesNotMatch(res.text, /<script>/);
        const json = await server.fetch("/halt", {
          headers: { accept: "application/json" },
        });
        assert.equal(json.status, 418);
        assert.equal(JSON.parse(json.text).error.code, 418);
        const beta = await get("/halt", "beta.test");
        assert.equal(beta.status, 403);
        assert.match(beta.body, /go away/);
      },
    );

    await t.step(
      "a throwing page is a 500 that says nothing of the exception",
      async () => {
        const res = await server.fetch("/throw");
        assert.equal(res.status, 500);
        assert.doesNotMatch(res.text, /secret detail|internal\.ts|Error:/);
        const ref = /ref ([0-9a-f]{8})/.exec(res.text)?.[1];
        assert.ok(ref, "the page names a reference");
        const line = await server.waitForLog(
          new RegExp(`\\[alpha\\].*ref ${ref}.*secret detail`),
        );
        assert.match(line, /GET \/throw/);
      },
    );

    await t.step(
      "invalid statuses and headers from a site are 500s, not crashes",
      async () => {
        assert.equal((await server.fetch("/bad-status")).status, 500);
        assert.equal((await server.fetch("/bad-header")).status, 500);
        assert.equal((await server.fetch("/alpha")).status, 200);
      },
    );

    await t.step(
      "upgrades: unknown token and unregistered websocket are 404",
      async () => {
        const res = await server.raw(
          "GET /alpha HTTP/1.1\r\nHost: x.test\r\nConnection: keep-alive, Upgrade\r\nUpgrade: FooProto\r\n\r\n",
        );
        assert.equal(res.status, 404);
        assert.match(res.body, /Upgrade not found: fooproto/);
        const ws = await server.raw(
          "GET /nows HTTP/1.1\r\nHost: x.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n",
        );
        assert.equal(ws.status, 404);
      },
    );

    await t.step(
      "Server and Date on every response; one access-log line each",
      async () => {
        const res = await get("/alpha", "x.test");
        assert.equal(res.headers["server"], "sandflare");
        assert.match(res.headers["date"]!, /GMT$/);
        const missing = await get("/nothing-here-at-all", "x.test");
        assert.equal(missing.headers["server"], "sandflare");
        await server.waitForLog(
          /"GET \/nothing-here-at-all HTTP\/1\.1" 404 \d+ [\d.]+ms root$/,
        );
        const lines = server.out.filter((l) =>
          l.includes("/nothing-here-at-all")
        );
        assert.equal(lines.length, 1);
      },
    );
  } finally {
    const status = await server.stop();
    assert.equal(status.code, 0);
    await Deno.remove(sitesDir, { recursive: true });
  }
});
