import assert from "node:assert/strict";
import { Slots } from "./slots.ts";

function later(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("Slots runs at most its size at once, in the order asked", async () => {
  const slots = new Slots(2);
  let running = 0;
  let most = 0;
  const order: number[] = [];
  await Promise.all(
    Array.from({ length: 6 }, (_, i) =>
      slots.run(async () => {
        order.push(i);
        most = Math.max(most, ++running);
        await later(10);
        running--;
      })),
  );
  assert.equal(most, 2);
  assert.deepEqual(order, [0, 1, 2, 3, 4, 5]);
});

Deno.test("Slots: a task over holdMs gives its slot up and goes on", async () => {
  const slots = new Slots(1);
  let release!: () => void;
  const stuck = slots.run(
    () => new Promise<string>((resolve) => release = () => resolve("stuck")),
    20,
  );
  // Without holdMs, this would wait for the stuck task.
  assert.equal(await slots.run(() => Promise.resolve("next")), "next");
  release();
  assert.equal(await stuck, "stuck");
  // The slot given up is not given back twice: one at a time still.
  let running = 0;
  let most = 0;
  await Promise.all(
    Array.from({ length: 3 }, () =>
      slots.run(async () => {
        most = Math.max(most, ++running);
        await later(5);
        running--;
      })),
  );
  assert.equal(most, 1);
});

/** Runs a task named `key` that notes its turn in `order`. */
function noted(slots: Slots, order: string[], key: string): Promise<void> {
  return slots.run(
    () => {
      order.push(key);
      return Promise.resolve();
    },
    Infinity,
    key,
  );
}

Deno.test("Slots: hurry moves a waiting task to the front; it still waits for a slot", async () => {
  const slots = new Slots(1);
  let release!: () => void;
  const order: string[] = [];
  const first = slots.run(
    () => new Promise<void>((resolve) => release = resolve),
    Infinity,
    "first",
  );
  const queued = ["a", "b", "c"].map((key) => noted(slots, order, key));
  assert.equal(slots.hurry("c"), true);
  assert.equal(slots.hurry("first"), false, "running, not waiting");
  // Hurried before it is asked to run: it goes first when it is.
  assert.equal(slots.hurry("d"), false);
  const d = noted(slots, order, "d");
  const e = noted(slots, order, "e");
  await later(10);
  assert.deepEqual(order, [], "ran before the slot was free");
  release();
  await Promise.all([first, ...queued, d, e]);
  assert.deepEqual(order, ["d", "c", "a", "b", "e"]);
});

Deno.test("Slots: forgetHurried drops a hurry whose task never came", async () => {
  const slots = new Slots(1);
  let release!: () => void;
  const order: string[] = [];
  const first = slots.run(() => new Promise<void>((r) => release = r));
  slots.hurry("late");
  slots.forgetHurried();
  const a = noted(slots, order, "a");
  const late = noted(slots, order, "late");
  release();
  await Promise.all([first, a, late]);
  assert.deepEqual(order, ["a", "late"]);
});
