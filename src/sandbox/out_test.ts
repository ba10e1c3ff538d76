import assert from "node:assert/strict";
import { FrameDecoder } from "../protocol/frames.ts";

const OUT = new URL("./out.ts", import.meta.url).href;
const FRAMES = new URL("../protocol/frames.ts", import.meta.url).href;

/**
 * A process whose 4 workers each write 6 frames of 1 MiB (one letter
 * repeated) to stdout at once, with or without the shared lock. (Without
 * it they do not interleave either on this Deno, which takes a process-wide
 * lock around each stdout write; the lock also covers a short write.)
 */
function writerScript(locked: boolean): string {
  const worker = `
import { SharedOut } from "${OUT}";
import { encodeFrame } from "${FRAMES}";
self.onmessage = (e) => {
  const { buffer, index } = e.data;
  const out = new SharedOut(buffer);
  const letter = String.fromCharCode(97 + index);
  for (let i = 0; i < 6; i++) {
    const frame = encodeFrame({ index, i }, new TextEncoder().encode(letter.repeat(1 << 20)));
    if (${locked}) out.write(frame);
    else {
      let offset = 0;
      while (offset < frame.length) offset += Deno.stdout.writeSync(frame.subarray(offset));
    }
  }
  self.postMessage("done");
};`;
  return `
import { SharedOut } from "${OUT}";
const url = URL.createObjectURL(new Blob([${
    JSON.stringify(worker)
  }], { type: "text/javascript" }));
const shared = new SharedOut(4);
const done = [];
for (let index = 0; index < 4; index++) {
  const w = new Worker(url, { type: "module" });
  done.push(new Promise((r) => w.onmessage = () => { w.terminate(); r(); }));
  w.postMessage({ buffer: shared.buffer, index });
}
await Promise.all(done);
`;
}

/** Runs the script, reading its stdout slowly so the pipe fills up. */
async function framesOf(script: string): Promise<string[]> {
  const file = await Deno.makeTempFile({ suffix: ".ts" });
  await Deno.writeTextFile(file, script);
  try {
    const child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--allow-read", file],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const decoder = new FrameDecoder({ maxBodyBytes: 8 << 20 });
    const problems: string[] = [];
    const reader = child.stdout.getReader();
    while (true) {
      const { value, done } = await reader.read();
      if (done) break;
      try {
        for (const frame of decoder.push(value)) {
          const { index } = frame.header as { index: number };
          const letter = 97 + index;
          if (
            frame.body.length !== 1 << 20 ||
            frame.body.some((b) => b !== letter)
          ) {
            problems.push(`frame of worker ${index} is mixed`);
          }
        }
      } catch (err) {
        problems.push((err as Error).message);
        await reader.cancel();
        break;
      }
      await new Promise((r) => setTimeout(r, 1));
    }
    await child.status;
    return problems;
  } finally {
    await Deno.remove(file);
  }
}

Deno.test("SharedOut: frames from 4 workers at once arrive whole", async () => {
  assert.deepEqual(await framesOf(writerScript(true)), []);
});
