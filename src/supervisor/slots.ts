/**
 * At most so many tasks at once; the others wait their turn, in order.
 *
 * @example
 * ```ts
 * import { Slots } from "./slots.ts";
 * const slots = new Slots(2);
 * const results = await Promise.all(
 *   [1, 2, 3].map((n) => slots.run(() => Promise.resolve(n * 2))),
 * );
 * console.assert(results.join() === "2,4,6");
 * ```
 *
 * @module
 */

/** A fixed number of slots for tasks. */
export class Slots {
  readonly size: number;
  #running = 0;
  #queue: (() => void)[] = [];

  constructor(size: number) {
    this.size = size;
  }

  /**
   * Runs `task` once a slot is free. With `holdMs`, a task that takes
   * longer gives its slot up then and goes on outside it: a few slow tasks
   * do not hold all the others back.
   */
  async run<T>(task: () => Promise<T>, holdMs = Infinity): Promise<T> {
    // A slot freed goes straight to the next waiting, never to a newcomer.
    if (this.#running >= this.size) {
      await new Promise<void>((resolve) => this.#queue.push(resolve));
    } else this.#running++;
    let freed = false;
    const free = () => {
      if (freed) return;
      freed = true;
      const next = this.#queue.shift();
      if (next !== undefined) next();
      else this.#running--;
    };
    const timer = holdMs === Infinity ? null : setTimeout(free, holdMs);
    try {
      return await task();
    } finally {
      if (timer !== null) clearTimeout(timer);
      free();
    }
  }
}
