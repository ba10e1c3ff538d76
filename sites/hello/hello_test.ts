// A site's own tests: `deno task test` runs them with the server's; in a
// site of your own, `deno test` in its folder (see the README, "Testing a
// site").
import assert from "node:assert/strict";
import { testSite } from "sandflare/testing";

Deno.test("the hello site greets", async () => {
  await using site = await testSite(import.meta.dirname!);
  const res = await site.request("/hello");
  assert.equal(res.status, 200);
  assert.equal(await res.text(), "hello world");
  const named = await site.request("/hello/ada");
  assert.deepEqual(await named.json(), { hello: "ada", peer: "127.0.0.1" });
  const home = await site.request("http://hello.localhost/");
  assert.equal(await home.text(), "<h1>Hello from hello.localhost</h1>");
  assert.equal((await site.request("/nowhere")).status, 404);
});
