/**
 * The bare two-process design, the ceiling a sandboxed page is measured
 * against (issue 17; after ../shared/perf/ceiling/, written here so the
 * bench needs nothing outside the project): a gateway answers HTTP and
 * relays each request as a length-prefixed JSON frame to one child process
 * on its stdin; the child answers "hello world" on its stdout. Frames are
 * coalesced per microtask on both sides. No routing, logging, workers or
 * limits.
 *
 *     deno run -A bench/ceiling.ts serve PORT       # Deno.serve
 *     deno run -A bench/ceiling.ts serveHttp PORT   # Deno.serveHttp per connection
 *
 * It prints `listening PORT child PID` once it serves.
 *
 * @module
 */

import { serveHttpEach } from "./serve_http.ts";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Frames waiting for the end of the microtask, and how to write them. */
function coalescing(write: (bytes: Uint8Array) => void) {
  let queued: Uint8Array[] = [];
  let size = 0;
  return (message: unknown) => {
    const json = encoder.encode(JSON.stringify(message));
    const frame = new Uint8Array(4 + json.length);
    new DataView(frame.buffer).setUint32(0, json.length);
    frame.set(json, 4);
    if (queued.length === 0) {
      queueMicrotask(() => {
        const all = new Uint8Array(size);
        let offset = 0;
        for (const part of queued) {
          all.set(part, offset);
          offset += part.length;
        }
        queued = [];
        size = 0;
        write(all);
      });
    }
    queued.push(frame);
    size += frame.length;
  };
}

/** Calls `onMessage` for each whole frame read from `stream`. */
async function readFrames(
  stream: ReadableStream<Uint8Array>,
  onMessage: (message: Record<string, unknown>) => void,
): Promise<void> {
  let buffer = new Uint8Array(0);
  for await (const chunk of stream) {
    const joined = new Uint8Array(buffer.length + chunk.length);
    joined.set(buffer);
    joined.set(chunk, buffer.length);
    let offset = 0;
    while (joined.length - offset >= 4) {
      const length = new DataView(joined.buffer, offset).getUint32(0);
      if (joined.length - offset - 4 < length) break;
      onMessage(
        JSON.parse(
          decoder.decode(joined.subarray(offset + 4, offset + 4 + length)),
        ),
      );
      offset += 4 + length;
    }
    buffer = joined.slice(offset);
  }
}

function child(): void {
  const send = coalescing((bytes) => {
    for (let n = 0; n < bytes.length;) {
      n += Deno.stdout.writeSync(bytes.subarray(n));
    }
  });
  void readFrames(
    Deno.stdin.readable,
    (message) => send({ id: message.id, status: 200, body: "hello world" }),
  );
}

function gateway(engine: string, port: number): void {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", new URL(import.meta.url).pathname, "child"],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const writer = process.stdin.getWriter();
  const send = coalescing((bytes) => void writer.write(bytes));
  const waiting = new Map<number, (response: Response) => void>();
  let nextId = 0;
  void readFrames(process.stdout, (message) => {
    const id = Number(message.id);
    waiting.get(id)?.(
      new Response(String(message.body), {
        status: Number(message.status),
        headers: { "content-type": "text/plain" },
      }),
    );
    waiting.delete(id);
  });
  const handler = (request: Request): Promise<Response> => {
    const id = nextId++;
    const url = new URL(request.url);
    send({
      id,
      method: request.method,
      path: url.pathname,
      host: request.headers.get("host"),
    });
    return new Promise((resolve) => waiting.set(id, resolve));
  };
  const ready = (at: number) =>
    Deno.stdout.writeSync(
      encoder.encode(`listening ${at} child ${process.pid}\n`),
    );
  if (engine === "serve") {
    Deno.serve({
      hostname: "127.0.0.1",
      port,
      onListen: ({ port }) => ready(port),
    }, handler);
    return;
  }
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  ready((listener.addr as Deno.NetAddr).port);
  serveHttpEach(listener, handler);
}

if (import.meta.main) {
  const [mode = "serve", port = "0"] = Deno.args;
  if (mode === "child") child();
  else gateway(mode, Number(port));
}
