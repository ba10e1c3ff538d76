import assert from "node:assert/strict";
import { FirstStart } from "./first_start.ts";
import type { SiteDefinition } from "./sites.ts";

function def(
  name: string,
  hosts: string[],
  fallback: string[] = [],
): SiteDefinition {
  return {
    name,
    root: name === "root",
    manifest: { hosts, fallback },
  } as unknown as SiteDefinition;
}

/** Whether `promise` has settled after the pending microtasks and a turn. */
async function settled(promise: Promise<void>): Promise<boolean> {
  let done = false;
  void promise.then(() => done = true);
  await new Promise((resolve) => setTimeout(resolve, 0));
  return done;
}

function setup(failed: string[] = []) {
  const hurried: string[] = [];
  let published = 0;
  const first = new FirstStart(
    (site) => hurried.push(site),
    (site) => !failed.includes(site),
    () => published++,
  );
  first.begin([
    def("root", ["*"]),
    def("blog", ["blog.test", "*"]),
    def("shop", ["*.shop.test"]),
    def("mall", ["x.shop.test"]),
    def("open", ["open.test"], ["open.test"]),
    def("wide", ["x.wide.test", "*.wide.test"], ["*.wide.test"]),
  ]);
  return { first, hurried, published: () => published };
}

Deno.test("FirstStart: an owned host waits for its owner and the root site, and hurries its owner", async () => {
  const { first, hurried, published } = setup();
  const ready = first.readyFor("Blog.Test:8080");
  assert.equal(await settled(ready), false);
  assert.deepEqual(hurried, ["blog"]);
  // Started, it serves the request before it may sleep (--idle-stop).
  assert.equal(first.wanted("blog"), true);
  assert.equal(first.wanted("shop"), false);
  first.started("blog");
  assert.equal(await settled(ready), false, "before the root site");
  first.started("shop");
  first.started("root");
  assert.equal(await settled(ready), true);
  assert.equal(published(), 1, "the router rebuilt with the sites started");
  // Nothing started since: no rebuild.
  await first.readyFor("blog.test");
  assert.equal(published(), 1);
});

Deno.test("FirstStart: a host nobody owns, two sites may claim, or whose owner falls back waits for all", async () => {
  const { first } = setup();
  for (const site of ["root", "blog", "shop", "mall", "open", "wide"]) {
    first.started(site);
  }
  // x.wide.test: its first pattern has no fallback, but the wider one the
  // site may register pages on has (the review's case).
  const waiting = [
    "nobody.test",
    "x.shop.test",
    "open.test",
    "x.wide.test",
  ].map((host) => first.readyFor(host));
  for (const w of waiting) assert.equal(await settled(w), false);
  // One of two claims of *.shop.test, on a name only one has: not waiting.
  assert.equal(await settled(first.readyFor("y.shop.test")), true);
  first.end();
  for (const w of waiting) assert.equal(await settled(w), true);
  assert.equal(await settled(first.readyFor("anything")), true);
});

Deno.test("FirstStart: an owner that failed to load waits for all", async () => {
  const { first } = setup(["blog"]);
  const ready = first.readyFor("blog.test");
  first.started("root");
  first.started("blog");
  assert.equal(await settled(ready), false);
  first.end();
  assert.equal(await settled(ready), true);
});

Deno.test("FirstStart: a request before the sites are found waits for them", async () => {
  const first = new FirstStart(() => {}, () => true, () => {});
  const ready = first.readyFor("blog.test");
  assert.equal(await settled(ready), false);
  first.begin([def("root", ["*"]), def("blog", ["blog.test"])]);
  first.started("root");
  first.started("blog");
  assert.equal(await settled(ready), true);
});
