import assert from "node:assert/strict";
import { join } from "node:path";
import { watchFolderExcept } from "./watcher.ts";

function later(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("watchFolderExcept() reports a change once, and none in a skipped folder", async () => {
  const dir = await Deno.realPath(await Deno.makeTempDir());
  await Deno.mkdir(join(dir, "autorun"));
  await Deno.mkdir(join(dir, "data"));
  const batches: string[][] = [];
  const watch = watchFolderExcept(dir, [join(dir, "data")], {
    site: "w",
    onChange: (paths) => batches.push(paths),
  });
  try {
    await later(100);
    await Deno.writeTextFile(join(dir, "data/x.txt"), "written by the site");
    await later(300);
    assert.equal(batches.length, 0, JSON.stringify(batches));
    // Saved in a folder the deep watch holds, seen by the flat one too
    // (before: two batches, two reloads).
    const aside = `${dir}.ar.tmp`;
    await Deno.writeTextFile(aside, "export {};\n");
    await Deno.rename(aside, join(dir, "autorun/ar_a.ts"));
    await later(300);
    assert.equal(batches.length, 1, JSON.stringify(batches));
    assert.ok(batches[0]!.includes(join(dir, "autorun/ar_a.ts")));
    // A file beside them, in the folder itself: the flat watch's.
    await Deno.writeTextFile(join(dir, "site.json"), "{}");
    await later(300);
    assert.equal(batches.length, 2, JSON.stringify(batches));
    assert.ok(batches[1]!.includes(join(dir, "site.json")));
  } finally {
    watch.close();
    await Deno.remove(dir, { recursive: true });
  }
});
