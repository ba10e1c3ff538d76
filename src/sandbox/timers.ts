/**
 * Timers for the sandbox's host thread that leave Deno's Node layer
 * unloaded. In Deno 2.9 the global `setTimeout` returns Node's `Timeout`,
 * and its first call in an isolate loads Node's compatibility layer:
 * measured, 12-16 ms before the site's workers could start, and 3 MiB
 * resident in every sandbox. `AbortSignal.timeout` runs on Deno's own timers.
 *
 * @module
 */

/**
 * Calls `fn` once after `ms`.
 * @returns a function that cancels the call
 */
export function after(ms: number, fn: () => void): () => void {
  let cancelled = false;
  AbortSignal.timeout(ms).addEventListener("abort", () => {
    if (!cancelled) fn();
  }, { once: true });
  return () => {
    cancelled = true;
  };
}

/**
 * Calls `fn` every `ms`, the first time after `ms`.
 * @returns a function that stops the calls
 */
export function every(ms: number, fn: () => void): () => void {
  let stopped = false;
  let cancel = () => {};
  const next = () => {
    cancel = after(ms, () => {
      if (stopped) return;
      fn();
      next();
    });
  };
  next();
  return () => {
    stopped = true;
    cancel();
  };
}
