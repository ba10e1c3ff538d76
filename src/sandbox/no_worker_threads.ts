/**
 * What a site gets for `node:worker_threads` (deno.json maps the specifier
 * here for everything outside src/sandbox/; ./confine.ts hands the same to
 * `process.getBuiltinModule` and `require`): the module as it is, but no
 * `Worker`. Deno starts such a thread with a global scope of its own, out of
 * reach of the Worker limit, the stuck-worker watch and the confinement
 * (measured: 90 spinning threads, and the Cache API shared again).
 *
 * @module
 */

import real from "node:worker_threads";

export * from "node:worker_threads";

/** Refuses: a site starts Workers with `new Worker()`, at most 4. */
export class Worker {
  constructor() {
    throw new Error(
      "node:worker_threads Workers are not available to sites; a site may run up to 4 Workers of its own with new Worker()",
    );
  }
}

/** The module's default export, without its Worker. */
const guarded: typeof real = Object.freeze({
  ...real,
  Worker: Worker as unknown as typeof real.Worker,
});
export default guarded;
