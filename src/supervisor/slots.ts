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

  /** Runs `task` once a slot is free. */
  async run<T>(task: () => Promise<T>): Promise<T> {
    // A slot freed goes straight to the next waiting, never to a newcomer.
    if (this.#running >= this.size) {
      await new Promise<void>((resolve) => this.#queue.push(resolve));
    } else this.#running++;
    try {
      return await task();
    } finally {
      const next = this.#queue.shift();
      if (next !== undefined) next();
      else this.#running--;
    }
  }
}
