import assert from "node:assert/strict";
import { join } from "node:path";
import { requestedGrants } from "./grants.ts";
import { keepRoutes, readKeptRoutes, siteKey } from "./routes_cache.ts";
import { defineSite, type SiteDefinition } from "./sites.ts";
import type { WireRoutes } from "../protocol/messages.ts";

const PROJECT = decodeURIComponent(new URL("../../", import.meta.url).pathname);

async function site(dir: string): Promise<SiteDefinition> {
  return await defineSite("kept", dir, {
    grants: requestedGrants(),
    server: null,
  });
}

Deno.test("siteKey() changes with the site's files and settings, not with what it writes", async () => {
  const dir = await Deno.makeTempDir();
  try {
    await Deno.mkdir(join(dir, "autorun"));
    await Deno.mkdir(join(dir, "data"));
    await Deno.writeTextFile(
      join(dir, "site.json"),
      JSON.stringify({ hosts: ["k.test"], permissions: { write: ["data"] } }),
    );
    await Deno.writeTextFile(join(dir, "autorun/ar_k.ts"), "export {};\n");
    const key = await siteKey(await site(dir), PROJECT, { workers: 1 });
    assert.match(key ?? "", /^[0-9a-f]{64}$/);
    assert.equal(await siteKey(await site(dir), PROJECT, { workers: 1 }), key);
    // Its own writable folder is not in the key.
    await Deno.writeTextFile(join(dir, "data/x.json"), "{}");
    assert.equal(await siteKey(await site(dir), PROJECT, { workers: 1 }), key);
    // Its sandbox's settings are.
    assert.notEqual(
      await siteKey(await site(dir), PROJECT, { workers: 2 }),
      key,
    );
    // Any other file is, even one no script names.
    await Deno.writeTextFile(join(dir, "notes.md"), "x");
    const withNotes = await siteKey(await site(dir), PROJECT, { workers: 1 });
    assert.notEqual(withNotes, key);
    // A script changed to the same size, the same second: its time differs.
    await Deno.writeTextFile(join(dir, "autorun/ar_k.ts"), "export {};\n");
    await Deno.utime(join(dir, "autorun/ar_k.ts"), 1, 1);
    assert.notEqual(
      await siteKey(await site(dir), PROJECT, { workers: 1 }),
      withNotes,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readKeptRoutes() gives back what was kept under the same key only", async () => {
  const dir = await Deno.makeTempDir();
  const routes: WireRoutes = {
    hosts: [{ pattern: "k.test", noFallback: false }],
    pages: [{ id: 0, host: "k.test", method: "GET", path: "/" }],
    hooks: [],
    websockets: [],
    tasks: 0,
  };
  try {
    assert.equal(await readKeptRoutes(dir, "kept", "a"), null);
    await keepRoutes(dir, "kept", "a", routes);
    assert.deepEqual(await readKeptRoutes(dir, "kept", "a"), routes);
    assert.equal(await readKeptRoutes(dir, "kept", "b"), null);
    // Not a route table: nothing is kept.
    await Deno.writeTextFile(
      join(dir, "kept.json"),
      JSON.stringify({ key: "a", routes: { pages: "no" } }),
    );
    assert.equal(await readKeptRoutes(dir, "kept", "a"), null);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
