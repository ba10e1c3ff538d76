/**
 * One coarse timer for many deadlines: request timeouts are seconds long,
 * and a `setTimeout` per request costs more than the request's own work.
 *
 * @module
 */

/** A registered deadline; pass it to `cancel`. */
export interface Deadline {
  readonly at: number;
  readonly fire: () => void;
}

/** Deadlines checked every `tickMs`; they fire up to one tick late. */
export class Deadlines {
  #entries = new Set<Deadline>();
  #timer: ReturnType<typeof setInterval> | null = null;
  #tickMs: number;

  constructor(tickMs = 50) {
    this.#tickMs = tickMs;
  }

  /** Runs `fire` once, at `at` (ms since the epoch) or up to one tick later. */
  add(at: number, fire: () => void): Deadline {
    const entry = { at, fire };
    this.#entries.add(entry);
    if (this.#timer === null) {
      this.#timer = setInterval(() => this.#tick(), this.#tickMs);
    }
    return entry;
  }

  /** Forgets a deadline that is no longer needed. */
  cancel(entry: Deadline): void {
    this.#entries.delete(entry);
    if (this.#entries.size === 0 && this.#timer !== null) {
      clearInterval(this.#timer);
      this.#timer = null;
    }
  }

  #tick(): void {
    const now = Date.now();
    for (const entry of this.#entries) {
      if (entry.at > now) continue;
      this.cancel(entry);
      entry.fire();
    }
  }
}
