/**
 * The runtime files a worker may always read: a nested worker starts from
 * them. A module of its own, with no imports, so the sandbox's host thread
 * can name them without loading ./confine.ts and Node's compatibility layer
 * (measured: 25-30 ms of every sandbox start).
 *
 * @module
 */

/** The module a site's own `new Worker()` starts from (see ./confine.ts). */
export const NESTED_URL: string = new URL("./nested.ts", import.meta.url).href;

/** The runtime files a nested worker starts from: it may always read them. */
export const RUNTIME_FILES: readonly string[] = [
  NESTED_URL,
  new URL("./confine.ts", import.meta.url).href,
  new URL("./runtime_files.ts", import.meta.url).href,
  new URL("./no_worker_threads.ts", import.meta.url).href,
  new URL("../protocol/messages.ts", import.meta.url).href,
].map((href) => decodeURIComponent(new URL(href).pathname));
