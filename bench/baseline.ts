/**
 * The raw baseline the benchmarks compare against (`Deno.serve`, or
 * `Deno.serveHttp` per connection with `serveHttp`): hello world
 * on every GET (64 KiB on /64k), the body echoed back on POST, a websocket echo on /ws and a
 * websocket broadcast to every client of /fanout.
 *
 * @module
 */

import { serveHttpEach } from "./serve_http.ts";

const port = Number(Deno.args[0] ?? "0");
/** `serveHttp`: the same on `Deno.serveHttp` per connection. */
const engine = Deno.args[1] ?? "serve";
const fanout = new Set<WebSocket>();
/** The body of the static-file comparison. */
const SIXTY_FOUR_K = "x".repeat(64 * 1024);

const ready = (at: number) =>
  Deno.stdout.writeSync(new TextEncoder().encode(`listening ${at}\n`));

if (engine === "serveHttp") {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  ready((listener.addr as Deno.NetAddr).port);
  serveHttpEach(listener, handler);
} else {
  Deno.serve({
    hostname: "127.0.0.1",
    port,
    onListen: ({ port }) => ready(port),
  }, handler);
}

async function handler(req: Request): Promise<Response> {
  if (req.headers.get("upgrade") === "websocket") {
    const { socket, response } = Deno.upgradeWebSocket(req);
    if (new URL(req.url).pathname === "/fanout") {
      socket.onopen = () => fanout.add(socket);
      socket.onclose = () => fanout.delete(socket);
      socket.onmessage = (e) => {
        for (const s of fanout) s.send(e.data);
      };
    } else {
      socket.onmessage = (e) => socket.send(e.data);
    }
    return response;
  }
  if (req.method === "POST") {
    try {
      return new Response(await req.arrayBuffer());
    } catch {
      return new Response(null, { status: 400 }); // wrk closed mid-body at the end of a run
    }
  }
  if (new URL(req.url).pathname === "/64k") return new Response(SIXTY_FOUR_K);
  return new Response("hello world");
}
