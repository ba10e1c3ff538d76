/**
 * An unmodified Hono app (sites/hono: `export default app`, npm:hono from
 * its deno.json, installed into a clean cache with `listen --install`):
 * routes, params, JSON, several cookies and a 404 of its own, on the host
 * its site.json declares.
 */

import assert from "node:assert/strict";
import { cp } from "node:fs/promises";
import { join } from "node:path";
import { PROJECT_DIR, startServer } from "./helpers/server.ts";

function ask(
  method: string,
  path: string,
  headers = "",
  body = "",
): string {
  return `${method} ${path} HTTP/1.1\r\nHost: hono.localhost\r\n${headers}Content-Length: ${
    new TextEncoder().encode(body).length
  }\r\nConnection: close\r\n\r\n${body}`;
}

Deno.test("an unmodified Hono app runs as a site: routes, params, JSON, cookies and its own 404", async () => {
  const sitesDir = await Deno.makeTempDir({ prefix: "sandflare-test-" });
  await cp(join(PROJECT_DIR, "sites", "hono"), join(sitesDir, "hono"), {
    recursive: true,
  });
  const lock = await Deno.readTextFile(join(sitesDir, "hono", "deno.lock"));
  const server = await startServer({
    sitesDir,
    // A clean data folder: nothing installed until --install does it.
    args: [`--data-dir=${join(sitesDir, ".data")}`, "--install"],
    timeoutMs: 60_000,
  });
  try {
    await server.waitForLog(/\[hono\] Loaded 1 script\(s\)/, 60_000);
    let res = await server.raw(ask("GET", "/"));
    assert.equal(res.status, 200);
    assert.equal(res.body, "<h1>Hello from Hono</h1>");
    assert.match(res.headers["content-type"] ?? "", /^text\/html/);
    res = await server.raw(ask("GET", "/hello"));
    assert.equal(res.body, "Hello Hono!");
    res = await server.raw(ask("GET", "/users/42"));
    assert.deepEqual(JSON.parse(res.body), { id: "42" });
    assert.match(res.headers["content-type"] ?? "", /^application\/json/);
    res = await server.raw(
      ask("POST", "/echo", "Content-Type: application/json\r\n", '{"a":[1,2]}'),
    );
    assert.deepEqual(JSON.parse(res.body), { got: { a: [1, 2] } });

    res = await server.raw(ask("GET", "/login"));
    const cookies = res.raw.split("\r\n\r\n")[0]!.split("\r\n")
      .filter((line) => /^set-cookie:/i.test(line));
    assert.deepEqual(cookies.map((c) => c.slice(12)), [
      "user=ann; Path=/; HttpOnly",
      "theme=dark; Path=/",
    ]);
    res = await server.raw(ask("GET", "/whoami", "Cookie: user=ann\r\n"));
    assert.equal(res.body, "user ann");

    res = await server.raw(ask("DELETE", "/nope"));
    assert.equal(res.status, 404);
    assert.equal(res.body, "Hono has nothing at /nope");
    // Only on its own host: elsewhere, the server's 404.
    const other = await server.fetch("/hello");
    assert.equal(other.status, 404);
    assert.doesNotMatch(other.text, /Hono/);
    // The shipped lockfile pinned what was installed.
    assert.equal(
      await Deno.readTextFile(join(sitesDir, "hono", "deno.lock")),
      lock,
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
