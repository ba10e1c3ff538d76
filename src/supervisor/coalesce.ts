/**
 * One run at a time per key: a run asked for while one is under way is
 * folded into one more run after it. The supervisor runs loads, static
 * scans and folder scans this way, so no burst of changes can start them
 * side by side.
 *
 * @module
 */

/** Options of {@linkcode Coalescer}. */
export interface CoalescerOptions {
  /** The least time from the start of one run to the start of the next. @default {0} */
  minIntervalMs?: number;
  /** No more runs once this says so (the server is stopping). */
  stopped?: () => boolean;
}

/**
 * Runs `fn(key)` one at a time per key, coalescing what is asked meanwhile.
 *
 * @example
 * ```ts
 * import { Coalescer } from "./coalesce.ts";
 * let runs = 0;
 * const scans = new Coalescer<string>(async () => { runs++; });
 * await Promise.all([scans.run("a"), scans.run("a"), scans.run("a")]);
 * // runs === 2: the first, and one more for the two asked meanwhile
 * ```
 */
export class Coalescer<K> {
  readonly #fn: (key: K) => Promise<void>;
  readonly #options: CoalescerOptions;
  readonly #busy = new Map<K, { again: boolean; done: Promise<void> }>();

  constructor(fn: (key: K) => Promise<void>, options: CoalescerOptions = {}) {
    this.#fn = fn;
    this.#options = options;
  }

  /** Runs for `key`, or asks for one more run after the one under way. */
  run(key: K): Promise<void> {
    const busy = this.#busy.get(key);
    if (busy !== undefined) {
      busy.again = true;
      return busy.done;
    }
    const { minIntervalMs = 0, stopped = () => false } = this.#options;
    const state = { again: false, done: Promise.resolve() };
    state.done = (async () => {
      try {
        do {
          state.again = false;
          const started = Date.now();
          await this.#fn(key);
          const wait = minIntervalMs - (Date.now() - started);
          if (wait > 0 && state.again) {
            await new Promise((r) => setTimeout(r, wait));
          }
        } while (state.again && !stopped());
      } finally {
        this.#busy.delete(key);
      }
    })();
    this.#busy.set(key, state);
    return state.done;
  }
}
