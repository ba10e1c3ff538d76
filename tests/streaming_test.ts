/**
 * Streamed replies (issue 16): a ReadableStream body reaches the client
 * chunk by chunk as the site writes it (server-sent events), pulled only as
 * fast as the client reads, cut off when the site goes quiet too long, and
 * cancelled in the site when the client goes away.
 */

import assert from "node:assert/strict";
import { delay, startServer, writeSites } from "./helpers/server.ts";

const LIVE = `
import { hosts } from "sandflare";

// One worker: this state is the site's.
let release: (() => void) | null = null;
let produced = 0;
let cancelled = "no";
const encoder = new TextEncoder();

// Server-sent events; each waits until the client says it has the one before.
hosts.any.add("/events", () => {
  const body = new ReadableStream<Uint8Array>({
    async start(controller) {
      controller.enqueue(encoder.encode("data: one\\n\\n"));
      await new Promise<void>((resolve) => release = resolve);
      controller.enqueue(encoder.encode("data: two\\n\\n"));
      await new Promise<void>((resolve) => release = resolve);
      controller.enqueue(encoder.encode("data: three\\n\\n"));
      controller.close();
    },
  });
  return new Response(body, { headers: { "content-type": "text/event-stream" } });
});
hosts.any.add("/release", () => {
  const had = release !== null;
  release?.();
  release = null;
  return String(had);
});

// As much as the client will take, 64 KiB at a time.
hosts.any.add("/endless", (_req, res) => {
  produced = 0;
  res.stream(new ReadableStream<Uint8Array>({
    pull(controller) {
      produced += 65536;
      controller.enqueue(new Uint8Array(65536).fill(97));
    },
    cancel() {
      cancelled = "yes";
    },
  }, { highWaterMark: 0 }));
});
hosts.any.add("/produced", () => String(produced));
hosts.any.add("/cancelled", () => cancelled);

// A default fetch handler that streams too.
export default {
  fetch(request: Request) {
    let n = 0;
    return new Response(new ReadableStream({
      async pull(controller) {
        n++;
        controller.enqueue(encoder.encode(new URL(request.url).pathname + " " + n + "\\n"));
        if (n === 3) controller.close();
        else await new Promise((resolve) => setTimeout(resolve, 50));
      },
    }));
  },
};
`;

const QUIET = `
import { hosts } from "sandflare";
hosts.any.add("/quiet", () =>
  new Response(new ReadableStream({
    start(controller) {
      controller.enqueue(new TextEncoder().encode("first\\n"));
      // ...and never another.
    },
  })));
`;

async function sites(): Promise<string> {
  return await writeSites({
    live: {
      "site.json": JSON.stringify({ hosts: ["*"], workers: 1 }),
      "autorun/ar_live.ts": LIVE,
    },
    quiet: {
      "site.json": JSON.stringify({ hosts: ["*"], requestTimeout: 1 }),
      "autorun/ar_quiet.ts": QUIET,
    },
  });
}

/** How long any one read may wait: a regression fails, it does not hang. */
const READ_MS = 30_000;

/** `promise`, or an error after READ_MS (then `onTimeout` runs). */
async function bounded<T>(
  promise: Promise<T>,
  what: string,
  onTimeout: () => void,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) =>
        timer = setTimeout(() => {
          onTimeout();
          reject(new Error(`${what}: nothing within ${READ_MS} ms`));
        }, READ_MS)
      ),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/** Reads text from a stream until `marker` has arrived; returns all read. */
async function readUntil(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  marker: string,
  sofar = "",
): Promise<string> {
  const decoder = new TextDecoder();
  let text = sofar;
  while (!text.includes(marker)) {
    const { done, value } = await bounded(
      reader.read(),
      `waiting for "${marker}"`,
      () => void reader.cancel().catch(() => {}),
    );
    if (done) throw new Error(`The stream ended before "${marker}": ${text}`);
    text += decoder.decode(value, { stream: true });
  }
  return text;
}

Deno.test("server-sent events arrive one by one, as the site writes them", async () => {
  const server = await startServer({ sitesDir: await sites() });
  try {
    const start = performance.now();
    const res = await fetch(`${server.origin}/events`, {
      headers: { accept: "text/event-stream", "accept-encoding": "gzip, br" },
    });
    assert.equal(res.status, 200);
    assert.equal(res.headers.get("content-type"), "text/event-stream");
    const reader = res.body!.getReader();
    // The site writes each event only once the one before has arrived
    // here: a reply held back until its end would never finish, and each
    // event's time of arrival is before the next one was written.
    const release = async () => {
      await delay(200);
      const at = performance.now() - start;
      const res = await fetch(`${server.origin}/release`);
      assert.equal(await res.text(), "true");
      return at;
    };
    let text = await readUntil(reader, "data: one\n\n");
    const first = performance.now() - start;
    assert.ok(!text.includes("two"));
    const released = await release();
    text = await readUntil(reader, "data: two\n\n", text);
    const second = performance.now() - start;
    assert.ok(!text.includes("three"));
    const releasedAgain = await release();
    text = await readUntil(reader, "data: three\n\n", text);
    const third = performance.now() - start;
    assert.equal(text, "data: one\n\ndata: two\n\ndata: three\n\n");
    const end = await bounded(reader.read(), "the end", () => {});
    assert.equal(end.done, true);
    assert.ok(first < released && released < second, `${first} ${second}`);
    assert.ok(second < releasedAgain && releasedAgain < third);
    // deno-lint-ignore no-console -- the figures for the record
    console.log(
      `events at ${first.toFixed(0)}, ${second.toFixed(0)}, ${
        third.toFixed(0)
      } ms`,
    );
  } finally {
    await server.stop();
  }
});

Deno.test("a stream is pulled only as fast as its client reads, and cancelled in the site when the client goes away", async () => {
  const server = await startServer({ sitesDir: await sites() });
  try {
    // A raw connection: a client that stops reading (fetch reads ahead).
    const conn = await Deno.connect({
      hostname: "127.0.0.1",
      port: server.port,
    });
    await conn.write(
      new TextEncoder().encode("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n"),
    );
    const buffer = new Uint8Array(65536);
    const read = () =>
      bounded(conn.read(buffer), "reading /endless", () => conn.close());
    const firstRead = await read();
    assert.ok(firstRead !== null && firstRead > 0);
    // The client reads nothing more: the site stops being pulled.
    const produced = async () =>
      Number(await (await fetch(`${server.origin}/produced`)).text());
    let last = -1;
    let now = await produced();
    for (let i = 0; i < 50 && now !== last; i++) {
      await delay(200);
      last = now;
      now = await produced();
    }
    assert.equal(now, last, "the site kept producing for 10 s");
    // What is on its way: the gateway's window per stream, the engine's
    // and the kernel's buffers; not an endless body.
    assert.ok(now < 32 * 1024 * 1024, `produced ${now} bytes`);
    // deno-lint-ignore no-console -- the figures for the record
    console.log(`produced ${now} bytes while the client did not read`);
    // Reading resumes the stream.
    for (let got = 0; got < now + 1024 * 1024;) {
      got += (await read()) ?? 0;
    }
    assert.ok(await produced() > now);
    assert.equal(
      await (await fetch(`${server.origin}/cancelled`)).text(),
      "no",
    );
    conn.close();
    let cancelled = "no";
    for (let i = 0; i < 100 && cancelled === "no"; i++) {
      await delay(100);
      cancelled = await (await fetch(`${server.origin}/cancelled`)).text();
    }
    assert.equal(cancelled, "yes");
  } finally {
    await server.stop();
  }
});

Deno.test("a fetch handler's stream arrives whole; a stream quiet past the request timeout is cut off, with a line in the log", async () => {
  const server = await startServer({ sitesDir: await sites() });
  try {
    const res = await server.fetch("/streamed/path");
    assert.equal(
      res.text,
      "/streamed/path 1\n/streamed/path 2\n/streamed/path 3\n",
    );

    const quiet = await fetch(`${server.origin}/quiet`);
    assert.equal(quiet.status, 200);
    const reader = quiet.body!.getReader();
    const started = performance.now();
    await readUntil(reader, "first\n");
    await assert.rejects(async () => {
      const cancel = () => void reader.cancel().catch(() => {});
      while (!(await bounded(reader.read(), "the cut", cancel)).done) {
        // The body breaks off.
      }
      throw new Error("the quiet stream ended cleanly");
    }, (err: Error) => !/ended cleanly/.test(err.message));
    const waited = performance.now() - started;
    assert.ok(waited >= 900, `cut off after ${waited} ms`);
    await server.waitForLog(
      /\[quiet\].*A streamed reply sent nothing for 1 s while its client waited/,
    );
    // The site and the server go on.
    assert.equal((await server.fetch("/produced")).status, 200);
  } finally {
    await server.stop();
  }
});
