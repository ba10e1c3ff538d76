/**
 * A token bucket: the cheap rate bound the gateway puts on every input a
 * client or a site can repeat (websocket messages, frames, log bytes,
 * session operations). Taking from it is a subtraction and a comparison, so
 * refusing costs next to nothing.
 *
 * @module
 */

/** Options of {@linkcode Budget}. */
export interface BudgetOptions {
  /** Units refilled per second. */
  perSecond: number;
  /** Most units held at once (the burst). @default {2 × perSecond} */
  burst?: number;
  /** The clock, in ms (a seam for tests). @default {Date.now} */
  now?: () => number;
}

/**
 * A rate bound of `perSecond` units, with bursts up to `burst`.
 *
 * @example
 * ```ts
 * import { Budget } from "./budget.ts";
 * import assert from "node:assert/strict";
 *
 * let now = 0;
 * const budget = new Budget({ perSecond: 10, burst: 10, now: () => now });
 * assert.equal(budget.take(10), true);
 * assert.equal(budget.take(1), false);
 * now = 500; // half a second later, 5 more
 * assert.equal(budget.take(5), true);
 * ```
 */
export class Budget {
  readonly perSecond: number;
  readonly burst: number;
  #tokens: number;
  #last: number;
  #now: () => number;

  constructor(options: BudgetOptions) {
    this.perSecond = options.perSecond;
    this.burst = options.burst ?? 2 * options.perSecond;
    this.#now = options.now ?? Date.now;
    this.#tokens = this.burst;
    this.#last = this.#now();
  }

  #refill(): void {
    const now = this.#now();
    if (now > this.#last) {
      this.#tokens = Math.min(
        this.burst,
        this.#tokens + ((now - this.#last) / 1000) * this.perSecond,
      );
    }
    this.#last = now;
  }

  /** Takes `n` units if there are that many; false (and nothing taken) if not. */
  take(n = 1): boolean {
    this.#refill();
    if (this.#tokens < n) return false;
    this.#tokens -= n;
    return true;
  }

  /**
   * Takes `n` units even into debt, and says how long until the budget is
   * back above zero (0 when it is not in debt): a reader pauses that long.
   */
  spend(n: number): number {
    this.#refill();
    this.#tokens -= n;
    return this.#tokens >= 0 ? 0 : (-this.#tokens / this.perSecond) * 1000;
  }
}
