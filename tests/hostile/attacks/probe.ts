/**
 * The neighbour: asks one page of a site over and over for a while (a
 * bounded loop), on one kept-alive connection, each request at most 5 s,
 * and prints the latencies and failures as JSON. It runs in a process of its
 * own, so that an attack client in the test's process cannot slow the
 * measurement down.
 *
 * Usage: deno run --allow-net probe.ts PORT HOST PATH MILLISECONDS
 */

const [port, host, path, ms] = Deno.args;
const end = Date.now() + Number(ms);
const latencies: number[] = [];
const failures: string[] = [];
const request = new TextEncoder().encode(
  `GET ${path} HTTP/1.1\r\nHost: ${host}\r\n\r\n`,
);

/** One response on `conn`: its status, or null when the connection ended. */
async function exchange(conn: Deno.Conn): Promise<number | null> {
  await conn.write(request);
  const buffer = new Uint8Array(64 * 1024);
  let text = "";
  let head = -1;
  while (head < 0) {
    const n = await conn.read(buffer);
    if (n === null) return null;
    text += new TextDecoder().decode(buffer.subarray(0, n));
    head = text.indexOf("\r\n\r\n");
  }
  const length = Number(/content-length: *(\d+)/i.exec(text)?.[1] ?? "0");
  let body = text.length - head - 4;
  while (body < length) {
    const n = await conn.read(buffer);
    if (n === null) return null;
    body += n;
  }
  return Number(text.slice(9, 12));
}

let conn: Deno.Conn | null = null;
while (Date.now() < end) {
  const started = performance.now();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    conn ??= await Deno.connect({ hostname: "127.0.0.1", port: Number(port) });
    const current = conn;
    const status = await Promise.race([
      exchange(current).catch(() => null),
      new Promise<"timeout">((r) =>
        timer = setTimeout(() => r("timeout"), 5000)
      ),
    ]);
    if (status === "timeout" || status === null) {
      current.close();
      conn = null;
      failures.push(status === null ? "connection closed" : "timed out");
    } else if (status !== 200) failures.push(`status ${status}`);
    else latencies.push(performance.now() - started);
  } catch (err) {
    conn = null;
    failures.push((err as Error).message);
  } finally {
    clearTimeout(timer);
  }
  await new Promise((r) => setTimeout(r, 5));
}
conn?.close();
// deno-lint-ignore no-console -- the output is the result
console.log(JSON.stringify({ latencies, failures }));
