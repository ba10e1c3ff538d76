/**
 * `Deno.serveHttp` (deprecated, and gone from Deno's types) on each
 * connection of a listener: the engine the gateway owns connections with,
 * for the baselines that measure it raw.
 *
 * @module
 */

const serveHttp = (Deno as unknown as {
  serveHttp: (conn: Deno.Conn) => AsyncIterable<{
    request: Request;
    respondWith(response: Response | Promise<Response>): Promise<void>;
  }>;
}).serveHttp;

/**
 * Serves `handler` on every connection `listener` accepts, until it closes.
 *
 * @param listener a TCP listener
 * @param handler answers each request
 */
export function serveHttpEach(
  listener: Deno.Listener,
  handler: (request: Request) => Response | Promise<Response>,
): void {
  void (async () => {
    for await (const conn of listener) {
      void (async () => {
        for await (const event of serveHttp(conn)) {
          event.respondWith(handler(event.request)).catch(() => {});
        }
      })().catch(() => {});
    }
  })().catch(() => {});
}
