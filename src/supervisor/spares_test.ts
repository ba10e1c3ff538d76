import assert from "node:assert/strict";
import { SpareAsks } from "./spares.ts";

Deno.test("SpareAsks: of sites asking together, only the latest few start a spare", () => {
  const asks = new SpareAsks();
  const numbers = Array.from({ length: 30 }, (_, i) => asks.ask(`s${i}`));
  const started = numbers.filter((n, i) => asks.settle(`s${i}`, n, 2));
  assert.deepEqual(started, [numbers[28], numbers[29]]);
});

Deno.test("SpareAsks: asks apart in time each start; a site's newer ask supersedes its older one", () => {
  const asks = new SpareAsks();
  const a = asks.ask("a");
  assert.equal(asks.settle("a", a, 2), true);
  const b = asks.ask("b");
  assert.equal(asks.settle("b", b, 2), true);
  // a asks again before its first ask settles: the first counts one newer.
  const a1 = asks.ask("a");
  const a2 = asks.ask("a");
  assert.equal(asks.settle("a", a1, 1), false);
  assert.equal(asks.settle("a", a2, 1), true);
  // Nothing is left waiting.
  const c = asks.ask("c");
  assert.equal(asks.settle("c", c, 1), true);
});
