import assert from "node:assert/strict";
import { MAX_HEAD_BYTES, refuse } from "./connections.ts";

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
