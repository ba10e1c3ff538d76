/**
 * The first start (issue 20, point 3): the server listens before its sites
 * have started. A request for a host that one site owns waits only for that
 * site (moved to the front of the start queue) and the root site; one for a
 * host nobody owns waits for every site, as every site on "*" may answer it.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  delay,
  rawHttp,
  startListening,
  writeSites,
} from "./helpers/server.ts";

/** A site whose load waits until the test creates `go` in its folder. */
function held(name: string): Record<string, string> {
  return {
    "site.json": JSON.stringify({ hosts: [`${name}.test`, "*"] }),
    [`autorun/ar_${name}.ts`]: `
import { hosts } from "sandflare";
while (true) {
  try {
    Deno.statSync("go");
    break;
  } catch {
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
hosts.get("${name}.test").add("/", () => "${name}");
hosts.any.add("/any-${name}", () => "any ${name}");
`,
  };
}

Deno.test("first start: a request for an owned host is answered once its site has started, before the others", async () => {
  const held_ = Array.from({ length: 10 }, (_, i) => `held${i}`);
  const sitesDir = await writeSites({
    ...Object.fromEntries(held_.map((name) => [name, held(name)])),
    // Its first pattern has no fallback; the wider one it registers pages on
    // has, so every site's hosts.any pages may answer x.wide.test.
    wide: {
      "site.json": JSON.stringify({
        hosts: ["x.wide.test", { host: "*.wide.test", fallback: true }],
      }),
      "autorun/ar_wide.ts": `
import { hosts } from "sandflare";
hosts.get("*.wide.test").add("/own", () => "wide");
`,
    },
    zfast: {
      "site.json": JSON.stringify({ hosts: ["zfast.test"] }),
      "autorun/ar_zfast.ts": `
import { hosts } from "sandflare";
hosts.get("zfast.test").add("/", () => "fast");
`,
    },
  });
  const server = await startListening([
    `--sites-dir=${sitesDir}`,
    `--data-dir=${join(sitesDir, ".data")}`,
    "--grant-requests",
    "--no-reload",
  ]);
  const { port, lines, ready } = server;
  try {
    const get = (host: string, path = "/") =>
      rawHttp(
        port,
        `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`,
        { timeoutMs: 60_000 },
      );
    // Asked before any site has started: nobody's host, then an owned one.
    const unowned = get("nobody.test", "/any-held0");
    const fallback = get("x.wide.test", "/any-held1");
    let unownedDone = false;
    for (const waiting of [unowned, fallback]) {
      void waiting.then(() => unownedDone = true, () => unownedDone = true);
    }
    const fast = await get("zfast.test");
    assert.equal(fast.status, 200, fast.body);
    assert.equal(fast.body, "fast");
    // The held sites cannot have started: they wait for their "go".
    assert.ok(!ready(), "answered only once every site had started");
    assert.match(lines.join("\n"), /\[zfast\] Loaded 1 script/);
    // Once wide has started too, x.wide.test still waits for the others.
    for (
      let i = 0;
      i < 600 && !lines.some((l) => /\[wide\] Loaded /.test(l));
      i++
    ) {
      await delay(50);
    }
    assert.ok(!ready());
    await delay(300);
    assert.ok(
      !unownedDone,
      "a host nobody owns, or one that falls back, was answered before all",
    );

    for (const name of held_) {
      await Deno.writeTextFile(join(sitesDir, name, "go"), "");
    }
    const any = await unowned;
    assert.ok(ready(), "the host nobody owns was answered before Ready");
    assert.equal(any.status, 200, any.body);
    assert.equal(any.body, "any held0");
    assert.equal((await fallback).body, "any held1");
    assert.equal((await get("held3.test")).body, "held3");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});
