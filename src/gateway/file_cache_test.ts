import assert from "node:assert/strict";
import { join } from "node:path";
import { FileCache } from "./file_cache.ts";

const decoder = new TextDecoder();

async function folder(): Promise<string> {
  return await Deno.realPath(await Deno.makeTempDir());
}

Deno.test("FileCache: requests racing to revalidate a changed file count its bytes once", async () => {
  const dir = await folder();
  const file = join(dir, "app.js");
  const cache = new FileCache({
    mime: new Map([["js", "text/javascript"]]),
    maxEtagSize: 1 << 20,
    revalidateMs: 0,
  });
  try {
    for (let round = 0; round < 10; round++) {
      const text = `// ${round}\n` + "x".repeat(4000 + round);
      await Deno.writeTextFile(file, text);
      // Twenty requests at once find the old version (and its stored
      // encoding) changed.
      const got = await Promise.all(
        Array.from({ length: 20 }, () => cache.get(file, dir)),
      );
      for (const g of got) assert.equal(g?.text, text);
      assert.equal(cache.bytesHeld, text.length, `round ${round}`);
      // Its stored encoding, once made, is held too.
      const cached = got[0]!;
      // The compression thread shares its time (a site waits ten times as
      // long as its last file took): seconds on a busy machine.
      let stored = null;
      for (let i = 0; i < 6000 && stored === null; i++) {
        stored = cache.encoded(cached, "gzip", "GET");
        if (stored === null) await new Promise((r) => setTimeout(r, 10));
      }
      assert.ok(stored !== null, "stored");
      assert.equal(cache.bytesHeld, text.length + stored.bytes.length);
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FileCache: a link that now leads to another file serves that file", async () => {
  const dir = await folder();
  const link = join(dir, "current.js");
  await Deno.writeTextFile(join(dir, "v1.js"), "one");
  await Deno.writeTextFile(join(dir, "v2.js"), "two");
  await Deno.symlink("v1.js", link);
  const cache = new FileCache({
    mime: new Map(),
    maxEtagSize: 1 << 20,
    revalidateMs: 0,
  });
  try {
    assert.equal((await cache.get(link, dir))?.text, "one");
    // Replaced at once, as `ln -sfn` does.
    await Deno.symlink("v2.js", join(dir, "next.js"));
    await Deno.rename(join(dir, "next.js"), link);
    const now = await cache.get(link, dir);
    assert.equal(now?.text, "two");
    assert.equal(now?.real, join(dir, "v2.js"));
    assert.equal(
      decoder.decode(new TextEncoder().encode(now?.text ?? "")),
      "two",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("FileCache: a file rewritten while it loads is held with the size of the bytes held", async () => {
  const dir = await folder();
  const file = join(dir, "page.txt");
  await Deno.writeTextFile(file, "start");
  const cache = new FileCache({
    mime: new Map(),
    maxEtagSize: 1 << 20,
    revalidateMs: 0,
  });
  let writing = true;
  // Rewritten in place (truncated, then written) again and again.
  const writer = (async () => {
    for (let i = 0; writing && i < 20_000; i++) {
      await Deno.writeTextFile(file, "y".repeat(1 + (i * 7919) % 20_000));
    }
  })();
  try {
    for (let i = 0; i < 500; i++) {
      const got = await cache.get(file, dir);
      if (got === null) continue;
      const held = got.text !== null
        ? new TextEncoder().encode(got.text).length
        : got.body?.length;
      assert.equal(held, got.size, `load ${i}`);
    }
  } finally {
    writing = false;
    await writer;
    await Deno.remove(dir, { recursive: true });
  }
});
