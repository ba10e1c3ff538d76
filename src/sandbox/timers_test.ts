import assert from "node:assert/strict";
import { after, every } from "./timers.ts";

function waitFor(ms: number): Promise<void> {
  return new Promise((resolve) => after(ms, resolve));
}

Deno.test("after calls once, and not when cancelled", async () => {
  const calls: string[] = [];
  after(5, () => calls.push("kept"));
  const cancel = after(5, () => calls.push("cancelled"));
  cancel();
  await waitFor(60);
  assert.deepEqual(calls, ["kept"]);
});

Deno.test("every repeats until stopped", async () => {
  let calls = 0;
  const stop = every(5, () => calls++);
  await waitFor(100);
  stop();
  const seen = calls;
  assert.ok(seen >= 2, `${seen} calls in 100 ms of a 5 ms interval`);
  await waitFor(40);
  assert.equal(calls, seen, "a call after stop");
});

/**
 * The sandbox's host thread loads no part of Deno's Node layer, which costs
 * every sandbox start 12-16 ms and 3 MiB (see ./timers.ts): its modules
 * import nothing from `node:` statically, and call no global timer (in
 * Deno 2.9 a global timer is Node's).
 */
Deno.test("the sandbox host's modules stay out of Node's layer", async () => {
  const info = await new Deno.Command(Deno.execPath(), {
    args: [
      "info",
      "--json",
      "--no-config",
      "--no-lock",
      new URL("./host.ts", import.meta.url).pathname,
    ],
    stdout: "piped",
  }).output();
  assert.ok(info.success, "deno info failed");
  const graph: unknown = JSON.parse(new TextDecoder().decode(info.stdout));
  const modules = (graph as {
    modules: {
      specifier: string;
      local?: string;
      dependencies?: { specifier: string; isDynamic?: boolean }[];
    }[];
  }).modules;
  const files = modules.filter((m) => m.specifier.startsWith("file:"));
  assert.ok(files.length >= 4, "the graph lists host.ts's modules");
  for (const m of files) {
    for (const dep of m.dependencies ?? []) {
      assert.ok(
        !dep.specifier.startsWith("node:") || dep.isDynamic === true,
        `${m.specifier} imports ${dep.specifier}`,
      );
    }
    const code = (await Deno.readTextFile(new URL(m.specifier)))
      .split("\n").filter((line) => !/^\s*(\*|\/\/|\/\*)/.test(line))
      .join("\n");
    assert.doesNotMatch(
      code,
      /\b(setTimeout|setInterval|setImmediate)\s*\(/,
      `${m.specifier} calls a global timer`,
    );
  }
});
