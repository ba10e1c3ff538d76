/**
 * The raw `Deno.serve` baseline the benchmarks compare against: hello world
 * on every GET, the body echoed back on POST, a websocket echo on /ws and a
 * websocket broadcast to every client of /fanout.
 *
 * @module
 */

const port = Number(Deno.args[0] ?? "0");
const fanout = new Set<WebSocket>();

Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen: ({ port }) => {
    Deno.stdout.writeSync(new TextEncoder().encode(`listening ${port}\n`));
  },
}, async (req) => {
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
  return new Response("hello world");
});
