import assert from "node:assert/strict";
import { join } from "node:path";
import {
  readStates,
  type SiteState,
  STATE_FILE,
  StateFile,
} from "./site_states.ts";

async function until(check: () => Promise<boolean>): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  throw new Error("timed out");
}

Deno.test("StateFile: each site's state and since when, rewritten on a change, removed at stop", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const sites = join(dir, "sites");
    await Deno.mkdir(sites);
    const now = new Map<string, SiteState>([
      ["blog", "serving"],
      ["shop", "asleep"],
    ]);
    const file = new StateFile(dir, sites, () => now, 20);
    file.start();
    await until(async () =>
      (await readStates(dir, sites))?.sites.shop !== undefined
    );
    const first = (await readStates(dir, sites))!;
    assert.equal(first.pid, Deno.pid);
    assert.equal(first.sitesDir, await Deno.realPath(sites));
    // Another sites folder on the same data folder: not this server's.
    assert.equal(await readStates(dir, dir), null);
    assert.equal(first.sites.blog!.state, "serving");
    assert.equal(first.sites.shop!.state, "asleep");
    assert.match(first.sites.shop!.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    now.set("blog", "asleep");
    now.delete("shop");
    now.set("new", "not loaded");
    await until(async () =>
      (await readStates(dir, sites))?.sites.blog?.state === "asleep"
    );
    const second = (await readStates(dir, sites))!;
    assert.deepEqual(Object.keys(second.sites).sort(), ["blog", "new"]);
    assert.equal(second.sites.new!.state, "not loaded");

    await file.stop();
    await assert.rejects(
      Deno.stat(join(dir, STATE_FILE)),
      Deno.errors.NotFound,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readStates: nothing from a server that has stopped, or from a file that is not one", async () => {
  const dir = await Deno.makeTempDir();
  try {
    const file = join(dir, STATE_FILE);
    const sites = await Deno.realPath(dir);
    assert.equal(await readStates(dir, sites), null, "no file");
    const text = JSON.stringify({
      pid: 4242,
      sitesDir: sites,
      sites: {
        a: { state: "asleep", since: "2026-12-01T00:00:00Z" },
        b: { state: "dancing", since: "x" },
      },
    });
    await Deno.writeTextFile(file, text);
    assert.equal(await readStates(dir, sites, () => false), null, "a dead pid");
    assert.deepEqual(await readStates(dir, sites, (pid) => pid === 4242), {
      pid: 4242,
      sitesDir: sites,
      sites: { a: { state: "asleep", since: "2026-12-01T00:00:00Z" } },
    });
    for (const bad of ["[", "null", '{"pid":"1","sites":{}}', '{"pid":1}']) {
      await Deno.writeTextFile(file, bad);
      assert.equal(await readStates(dir, sites, () => true), null, bad);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
