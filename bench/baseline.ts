/**
 * The raw `Deno.serve` baseline the benchmarks compare against: hello world
 * on every GET, the body echoed back on POST.
 *
 * @module
 */

const port = Number(Deno.args[0] ?? "0");
Deno.serve({
  hostname: "127.0.0.1",
  port,
  onListen: ({ port }) => {
    Deno.stdout.writeSync(new TextEncoder().encode(`listening ${port}\n`));
  },
}, async (req) => {
  if (req.method === "POST") return new Response(await req.arrayBuffer());
  return new Response("hello world");
});
