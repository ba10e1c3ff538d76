import assert from "node:assert/strict";
import { setImmediate } from "node:timers";
import {
  concat,
  encodeFrame,
  type Frame,
  FrameDecoder,
  FrameError,
  FrameWriter,
} from "./frames.ts";

const encoder = new TextEncoder();

function bytes(...values: number[]): Uint8Array {
  return new Uint8Array(values);
}

/** An 8-byte frame prefix with the given lengths, big endian. */
function prefix(headerLength: number, bodyLength: number): Uint8Array {
  const out = new Uint8Array(8);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerLength);
  view.setUint32(4, bodyLength);
  return out;
}

/** A frame with raw header bytes (not necessarily JSON). */
function rawFrame(header: Uint8Array, body = new Uint8Array(0)): Uint8Array {
  return concat([prefix(header.length, body.length), header, body]);
}

/** Headers and bodies as plain values, for deepEqual. */
function plain(frames: Frame[]): { header: unknown; body: number[] }[] {
  return frames.map((f) => ({ header: f.header, body: [...f.body] }));
}

const SAMPLES: { name: string; header: unknown; body?: Uint8Array }[] = [
  { name: "no body", header: { t: "shutdown" } },
  { name: "empty body", header: { t: "x" }, body: new Uint8Array(0) },
  {
    name: "text body",
    header: { t: "reply", id: 7 },
    body: encoder.encode("hi"),
  },
  {
    name: "binary body with every byte value",
    header: { t: "bin", n: 256 },
    body: Uint8Array.from({ length: 256 }, (_, i) => i),
  },
  {
    name: "non-ASCII header",
    header: { message: "héllo € 😀", list: [1, null, true] },
    body: bytes(0, 0, 0, 0, 0, 0, 0, 0),
  },
  { name: "header that is a string", header: "just a string" },
  { name: "header that is null", header: null },
  {
    name: "large body",
    header: { t: "big" },
    body: Uint8Array.from({ length: 100_000 }, (_, i) => (i * 31) % 251),
  },
];

Deno.test("encodeFrame() writes big-endian lengths, header, then body", async (t) => {
  const cases: {
    name: string;
    header: unknown;
    body?: Uint8Array;
    want: number[];
  }[] = [
    {
      name: "no body",
      header: 1,
      want: [0, 0, 0, 1, 0, 0, 0, 0, 0x31],
    },
    {
      name: "with body",
      header: "a",
      body: bytes(9, 8),
      want: [0, 0, 0, 3, 0, 0, 0, 2, 0x22, 0x61, 0x22, 9, 8],
    },
    {
      name: "UTF-8 length in bytes, not characters",
      header: "€",
      want: [0, 0, 0, 5, 0, 0, 0, 0, 0x22, 0xe2, 0x82, 0xac, 0x22],
    },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      assert.deepEqual([...encodeFrame(c.header, c.body)], c.want);
    });
  }
});

Deno.test("FrameDecoder round-trips single frames", async (t) => {
  for (const sample of SAMPLES) {
    await t.step(sample.name, () => {
      const decoder = new FrameDecoder();
      const frames = decoder.push(encodeFrame(sample.header, sample.body));
      assert.deepEqual(plain(frames), [{
        header: sample.header,
        body: [...(sample.body ?? [])],
      }]);
      assert.equal(decoder.buffered, 0);
      decoder.end();
    });
  }
});

Deno.test("FrameDecoder decodes many frames in one chunk, in order", () => {
  const all = concat(SAMPLES.map((s) => encodeFrame(s.header, s.body)));
  const decoder = new FrameDecoder();
  const frames = decoder.push(all);
  assert.deepEqual(
    plain(frames),
    SAMPLES.map((s) => ({ header: s.header, body: [...(s.body ?? [])] })),
  );
  assert.equal(decoder.buffered, 0);
  decoder.end();
});

Deno.test("FrameDecoder handles frames split at any byte", async (t) => {
  const small = SAMPLES.filter((s) => (s.body?.length ?? 0) < 1000);
  const stream = concat(small.map((s) => encodeFrame(s.header, s.body)));
  const want = small.map((s) => ({
    header: s.header,
    body: [...(s.body ?? [])],
  }));

  await t.step("one byte at a time", () => {
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    for (let i = 0; i < stream.length; i++) {
      frames.push(...decoder.push(stream.subarray(i, i + 1)));
    }
    assert.deepEqual(plain(frames), want);
    assert.equal(decoder.buffered, 0);
    decoder.end();
  });

  await t.step("in two chunks, cut at every offset", () => {
    for (let cut = 0; cut <= stream.length; cut++) {
      const decoder = new FrameDecoder();
      const frames = [
        ...decoder.push(stream.subarray(0, cut)),
        ...decoder.push(stream.subarray(cut)),
      ];
      assert.deepEqual(plain(frames), want, `cut at ${cut}`);
      decoder.end();
    }
  });

  await t.step("in chunks of 3 bytes copied from a reused buffer", () => {
    // Each chunk is a fresh copy, as a reader that copies out would give.
    const decoder = new FrameDecoder();
    const frames: Frame[] = [];
    for (let i = 0; i < stream.length; i += 3) {
      frames.push(...decoder.push(stream.slice(i, i + 3)));
    }
    assert.deepEqual(plain(frames), want);
  });

  await t.step("no frame before its last byte arrives", () => {
    const frame = encodeFrame({ t: "x" }, bytes(1, 2, 3));
    const decoder = new FrameDecoder();
    for (let i = 0; i < frame.length - 1; i++) {
      assert.deepEqual(decoder.push(frame.subarray(i, i + 1)), []);
      assert.equal(decoder.buffered, i + 1);
    }
    assert.equal(decoder.push(frame.subarray(frame.length - 1)).length, 1);
    assert.equal(decoder.buffered, 0);
  });

  await t.step("empty chunks change nothing", () => {
    const decoder = new FrameDecoder();
    assert.deepEqual(decoder.push(new Uint8Array(0)), []);
    assert.equal(decoder.buffered, 0);
    decoder.end();
  });
});

Deno.test("FrameDecoder rejects lengths over the limits from the prefix alone", async (t) => {
  const limits = { maxHeaderBytes: 100, maxBodyBytes: 1000 };
  const cases: {
    name: string;
    header: number;
    body: number;
    error: RegExp | null;
  }[] = [
    { name: "header at the limit", header: 100, body: 0, error: null },
    { name: "body at the limit", header: 2, body: 1000, error: null },
    { name: "header one over", header: 101, body: 0, error: /header.*101/ },
    { name: "body one over", header: 2, body: 1001, error: /body.*1001/ },
    {
      name: "header of 4 GiB",
      header: 0xffff_ffff,
      body: 0,
      error: /header/,
    },
    { name: "body of 4 GiB", header: 2, body: 0xffff_ffff, error: /body/ },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const decoder = new FrameDecoder(limits);
      const push = () => decoder.push(prefix(c.header, c.body));
      if (c.error === null) {
        assert.deepEqual(push(), []);
        assert.equal(decoder.buffered, 8);
      } else {
        assert.throws(push, (err: unknown) => {
          assert.ok(err instanceof FrameError);
          assert.match(err.message, c.error!);
          return true;
        });
      }
    });
  }

  await t.step("the default limits are 1 MiB header, 128 MiB body", () => {
    assert.deepEqual(new FrameDecoder().push(prefix(1024 * 1024, 0)), []);
    assert.throws(
      () => new FrameDecoder().push(prefix(1024 * 1024 + 1, 0)),
      FrameError,
    );
    assert.deepEqual(new FrameDecoder().push(prefix(2, 128 * 1024 * 1024)), []);
    assert.throws(
      () => new FrameDecoder().push(prefix(2, 128 * 1024 * 1024 + 1)),
      FrameError,
    );
  });

  await t.step("an oversized frame after a good one in the same chunk", () => {
    const decoder = new FrameDecoder(limits);
    const chunk = concat([encodeFrame({ ok: 1 }), prefix(101, 0)]);
    assert.throws(() => decoder.push(chunk), FrameError);
  });
});

Deno.test("FrameDecoder rejects a header that is not UTF-8 JSON", async (t) => {
  const cases: { name: string; header: Uint8Array }[] = [
    { name: "empty header", header: new Uint8Array(0) },
    { name: "truncated JSON", header: encoder.encode('{"t":') },
    { name: "not JSON", header: encoder.encode("hello") },
    { name: "two JSON values", header: encoder.encode("{} {}") },
    { name: "invalid UTF-8", header: bytes(0x22, 0xff, 0xfe, 0x22) },
    { name: "a lone continuation byte", header: bytes(0x22, 0x80, 0x22) },
    { name: "UTF-8 cut in a character", header: bytes(0x22, 0xe2, 0x82, 0x22) },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const decoder = new FrameDecoder();
      assert.throws(() => decoder.push(rawFrame(c.header)), FrameError);
    });
  }
});

Deno.test("FrameDecoder.end() throws only on a frame cut short", async (t) => {
  const frame = encodeFrame({ t: "reply", id: 1 }, encoder.encode("body!"));
  const headerLength = new DataView(frame.buffer).getUint32(0);
  const cases: { name: string; cut: number }[] = [
    { name: "cut in the prefix", cut: 3 },
    { name: "cut after the prefix", cut: 8 },
    { name: "cut in the header", cut: 8 + Math.floor(headerLength / 2) },
    { name: "cut after the header", cut: 8 + headerLength },
    { name: "cut in the body", cut: frame.length - 1 },
  ];
  for (const c of cases) {
    await t.step(c.name, () => {
      const decoder = new FrameDecoder();
      assert.deepEqual(decoder.push(frame.subarray(0, c.cut)), []);
      assert.throws(() => decoder.end(), FrameError);
    });
  }
  await t.step("a cut after whole frames", () => {
    const decoder = new FrameDecoder();
    const stream = concat([frame, frame.subarray(0, 5)]);
    assert.equal(decoder.push(stream).length, 1);
    assert.throws(() => decoder.end(), FrameError);
  });
  await t.step("a clean end", () => {
    const decoder = new FrameDecoder();
    assert.equal(decoder.push(concat([frame, frame])).length, 2);
    decoder.end();
  });
  await t.step("nothing received", () => {
    new FrameDecoder().end();
  });
});

/** A write function that records every call. */
function recorder(options: { delayMs?: (call: number) => number } = {}) {
  const writes: Uint8Array[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  const write = async (bytes: Uint8Array) => {
    const call = writes.length;
    writes.push(bytes.slice());
    inFlight++;
    maxInFlight = Math.max(maxInFlight, inFlight);
    const ms = options.delayMs?.(call) ?? 0;
    if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
    inFlight--;
  };
  return { writes, write, maxInFlight: () => maxInFlight };
}

function decodeAll(chunks: Uint8Array[]): unknown[] {
  const decoder = new FrameDecoder();
  const headers = chunks.flatMap((c) => decoder.push(c)).map((f) => f.header);
  decoder.end();
  return headers;
}

Deno.test("FrameWriter coalesces and orders writes", async (t) => {
  await t.step("frames sent in one tick go out in one write", async () => {
    const out = recorder();
    const writer = new FrameWriter(out.write);
    writer.send({ n: 1 });
    writer.send({ n: 2 }, encoder.encode("two"));
    writer.send({ n: 3 });
    assert.equal(out.writes.length, 0, "nothing is written synchronously");
    await writer.drained();
    assert.equal(out.writes.length, 1);
    const decoder = new FrameDecoder();
    assert.deepEqual(plain(decoder.push(out.writes[0]!)), [
      { header: { n: 1 }, body: [] },
      { header: { n: 2 }, body: [...encoder.encode("two")] },
      { header: { n: 3 }, body: [] },
    ]);
    decoder.end();
  });

  await t.step("a single frame is written as encoded", async () => {
    const out = recorder();
    const writer = new FrameWriter(out.write);
    writer.send({ t: "x" }, bytes(1));
    await writer.drained();
    assert.deepEqual(out.writes, [encodeFrame({ t: "x" }, bytes(1))]);
  });

  await t.step("drained() waits for frames sent in the same tick", async () => {
    let written = false;
    const writer = new FrameWriter(async () => {
      await new Promise((resolve) => setTimeout(resolve, 20));
      written = true;
    });
    writer.send({ t: "last" });
    await writer.drained();
    assert.equal(written, true);
  });

  await t.step(
    "later ticks get later writes, one at a time, in order; frames a few microtasks apart share one",
    async () => {
      // Earlier writes are slower: a writer that did not wait would reorder.
      const out = recorder({ delayMs: (call) => [30, 10, 0, 0][call] ?? 0 });
      const writer = new FrameWriter(out.write);
      writer.send({ n: 1 });
      await Promise.resolve();
      await Promise.resolve();
      writer.send({ n: 2 });
      writer.send({ n: 3 });
      await new Promise((resolve) => setTimeout(resolve, 0));
      writer.send({ n: 4 });
      await new Promise((resolve) => setTimeout(resolve, 5));
      writer.send({ n: 5 });
      await writer.drained();
      // 1 to 3 were sent within a few microtasks: one write.
      assert.equal(out.writes.length, 3);
      assert.equal(out.maxInFlight(), 1);
      assert.deepEqual(
        decodeAll(out.writes),
        [1, 2, 3, 4, 5].map((n) => ({ n })),
      );
    },
  );

  await t.step(
    "frames queued one a turn of the event loop share a write (Deno.serve hands over one request a turn)",
    async () => {
      const out = recorder();
      const writer = new FrameWriter(out.write, () => {}, null, setImmediate);
      // As on a busy server: each turn, the next request is handed over
      // (it was due before the writer looked), and a frame is queued.
      await new Promise<void>((done) => {
        const request = (n: number) => {
          if (n > 5) return done();
          setImmediate(() => request(n + 1));
          writer.send({ n });
        };
        request(1);
      });
      await writer.drained();
      assert.equal(out.writes.length, 1);
      assert.deepEqual(
        decodeAll(out.writes),
        [1, 2, 3, 4, 5].map((n) => ({ n })),
      );
      // Alone, a frame goes at the end of its turn.
      writer.send({ n: 6 });
      await new Promise((resolve) => setTimeout(resolve, 0));
      assert.equal(out.writes.length, 2);
    },
  );

  await t.step(
    "a failed write goes to onError and later writes go on",
    async () => {
      const errors: unknown[] = [];
      const writes: Uint8Array[] = [];
      const boom = new Error("pipe closed");
      let calls = 0;
      const writer = new FrameWriter((b) => {
        calls++;
        if (calls === 1) return Promise.reject(boom);
        writes.push(b);
        return Promise.resolve();
      }, (err) => errors.push(err));
      writer.send({ n: 1 });
      await writer.drained();
      assert.deepEqual(errors, [boom]);
      writer.send({ n: 2 });
      await writer.drained();
      assert.deepEqual(errors, [boom]);
      assert.deepEqual(decodeAll(writes), [{ n: 2 }]);
    },
  );

  await t.step(
    "a write that throws synchronously goes to onError",
    async () => {
      const errors: unknown[] = [];
      const boom = new Error("bad fd");
      const writer = new FrameWriter(() => {
        throw boom;
      }, (err) => errors.push(err));
      writer.send({ n: 1 });
      await writer.drained();
      assert.deepEqual(errors, [boom]);
    },
  );
});

Deno.test("FrameWriter: a backlog over its limit is reported once, nothing dropped", async () => {
  const written: Uint8Array[] = [];
  let release: () => void = () => {};
  const blocked = new Promise<void>((r) => release = r);
  let over = 0;
  const writer = new FrameWriter(
    async (bytes) => {
      await blocked;
      written.push(bytes);
    },
    () => {},
    { bytes: 1000, onOver: () => over++ },
  );
  for (let i = 0; i < 5; i++) {
    writer.send({ i }, new Uint8Array(300));
    await new Promise((r) => setTimeout(r, 0)); // one write a tick
  }
  assert.equal(over, 1, "reported once");
  assert.ok(writer.backlog > 1000);
  release();
  await writer.drained();
  assert.equal(written.length, 5, "every frame written");
  assert.equal(writer.backlog, 0);
});
