/**
 * `testSite` (sandflare/testing): a site's pages, run in-process for the
 * site's own tests, answer as the server would.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { testSite } from "sandflare/testing";
import { writeSites } from "./helpers/server.ts";

const SITE = {
  "site.json": JSON.stringify({ hosts: ["*", "shop.test"] }),
  "files/note.txt": "a note",
  "autorun/ar_shop.ts": `
import { hook, hosts, session } from "sandflare";
hosts.any.add("/shop", (req) => "Shop for " + req.host);
hosts.any.addPattern("/item/(\\\\d+)", (_req, res, id) => res.json({ id }));
hosts.any.add("/count", async (req, res) => {
  const s = await session.get(req, res);
  s.data.n = (Number(s.data.n) || 0) + 1;
  await s.save();
  return "count " + s.data.n;
});
hosts.any.add("/note", (_req, res) => res.setFile("files/note.txt"));
hosts.any.add("/form", async (req) => JSON.stringify(await req.postParams()), "POST");
hosts.get("shop.test").mount("/api", (request) => Response.json({ url: request.url }));
hook.add("Error", "shop", (err, _req, res) => {
  res.append("shop error " + err.code);
  return true;
});
`,
  "autorun/ar_zapp.ts": `
export default {
  fetch: (request: Request) =>
    new Response(new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode("app " + new URL(request.url).pathname));
        c.close();
      },
    })),
};
`,
};

Deno.test("testSite runs a site's pages in-process and answers standard Responses", async () => {
  const dir = await writeSites({ shop: SITE });
  await using site = await testSite(join(dir, "shop"));
  let res = await site.request("/shop");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/html; charset=utf-8");
  assert.equal(await res.text(), "Shop for localhost");
  assert.deepEqual(await (await site.request("/item/42")).json(), { id: "42" });

  // Sessions, across requests that send the cookie back.
  res = await site.request("/count");
  assert.equal(await res.text(), "count 1");
  const cookie = res.headers.get("set-cookie")!.split(";")[0]!;
  res = await site.request("/count", { headers: { cookie } });
  assert.equal(await res.text(), "count 2");

  // Mounted and default fetch handlers, streams, files, forms.
  res = await site.request("http://shop.test/api/x?y=1");
  assert.deepEqual(await res.json(), { url: "http://shop.test/api/x?y=1" });
  res = await site.request("/anything", { method: "DELETE" });
  assert.equal(await res.text(), "app /anything");
  assert.equal(await (await site.request("/note")).text(), "a note");
  res = await site.request("/form", {
    method: "POST",
    body: new URLSearchParams({ a: "1" }),
  });
  assert.equal(await res.text(), '{"a":"1"}');
});

Deno.test("testSite answers 404 and 405 through the site's Error hook, and names a script that fails", async () => {
  const dir = await writeSites({
    plain: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_p.ts": `
import { hook, hosts } from "sandflare";
hosts.any.add("/only-get", () => "ok");
hook.add("Error", "p", (err, _req, res) => { res.append("plain " + err.code); return true; });
`,
    },
    broken: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_b.ts": `throw new Error("broken on purpose");\n`,
    },
  });
  await using site = await testSite(join(dir, "plain"));
  let res = await site.request("/nothing");
  assert.equal(res.status, 404);
  assert.equal(await res.text(), "plain 404");
  res = await site.request("/only-get", { method: "POST" });
  assert.equal(res.status, 405);
  await res.body?.cancel();
  await assert.rejects(
    testSite(join(dir, "broken")),
    /the site did not load: Error: broken on purpose[\s\S]*ar_b\.ts:1/,
  );
});
