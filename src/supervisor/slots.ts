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
  #queue: { go: () => void; key: string | null }[] = [];
  /** Keys hurried before their task came: it goes first when it does. */
  #hurried = new Set<string>();

  constructor(size: number) {
    this.size = size;
  }

  /**
   * Runs `task` once a slot is free. With `holdMs`, a task that takes
   * longer gives its slot up then and goes on outside it: a few slow tasks
   * do not hold all the others back. `key` names the task for `hurry`.
   */
  async run<T>(
    task: () => Promise<T>,
    holdMs = Infinity,
    key: string | null = null,
  ): Promise<T> {
    // A slot freed goes straight to the next waiting, never to a newcomer.
    const first = key !== null && this.#hurried.delete(key);
    if (this.#running >= this.size) {
      await new Promise<void>((go) =>
        first ? this.#queue.unshift({ go, key }) : this.#queue.push({ go, key })
      );
    } else this.#running++;
    let freed = false;
    const free = () => {
      if (freed) return;
      freed = true;
      const next = this.#queue.shift();
      if (next !== undefined) next.go();
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

  /**
   * Moves the waiting task named `key` to the front of the queue (someone
   * waits for it); it still waits for a slot. If none waits yet, the next
   * task run with that key goes to the front. The caller bounds the keys.
   * @returns whether a waiting task was moved
   */
  hurry(key: string): boolean {
    const at = this.#queue.findIndex((q) => q.key === key);
    if (at === -1) {
      this.#hurried.add(key);
      return false;
    }
    this.#queue.unshift(...this.#queue.splice(at, 1));
    return true;
  }

  /** Forgets the keys hurried whose task never came. */
  forgetHurried(): void {
    this.#hurried.clear();
  }
}
