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
    const now = new Map<string, SiteState>([
      ["blog", "serving"],
      ["shop", "asleep"],
    ]);
    const file = new StateFile(dir, () => now, 20);
    file.start();
    await until(async () => (await readStates(dir))?.sites.shop !== undefined);
    const first = (await readStates(dir))!;
    assert.equal(first.pid, Deno.pid);
    assert.equal(first.sites.blog!.state, "serving");
    assert.equal(first.sites.shop!.state, "asleep");
    assert.match(first.sites.shop!.since, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/);

    now.set("blog", "asleep");
    now.delete("shop");
    now.set("new", "not loaded");
    await until(async () =>
      (await readStates(dir))?.sites.blog?.state === "asleep"
    );
    const second = (await readStates(dir))!;
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
    assert.equal(await readStates(dir), null, "no file");
    const text = JSON.stringify({
      pid: 4242,
      sites: {
        a: { state: "asleep", since: "2026-12-01T00:00:00Z" },
        b: { state: "dancing", since: "x" },
      },
    });
    await Deno.writeTextFile(file, text);
    assert.equal(await readStates(dir, () => false), null, "a dead pid");
    assert.deepEqual(await readStates(dir, (pid) => pid === 4242), {
      pid: 4242,
      sites: { a: { state: "asleep", since: "2026-12-01T00:00:00Z" } },
    });
    for (const bad of ["[", "null", '{"pid":"1","sites":{}}', '{"pid":1}']) {
      await Deno.writeTextFile(file, bad);
      assert.equal(await readStates(dir, () => true), null, bad);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
