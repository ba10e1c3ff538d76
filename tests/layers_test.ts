/**
 * The layers of shared/ARCHITECTURE.md, checked on the source: which folder
 * may import which, and that the pure modules do no I/O.
 */
import assert from "node:assert/strict";
import { dirname, join, relative, resolve } from "node:path";
import { PROJECT_DIR } from "./helpers/server.ts";

const SRC = join(PROJECT_DIR, "src");

/** The folders of src/ each folder may import from (itself always). */
const ALLOWED: Record<string, string[]> = {
  cli: [
    "gateway",
    "cluster",
    "supervisor",
    "router",
    "protocol",
    "shared",
    "log.ts",
  ],
  gateway: ["cluster", "supervisor", "router", "protocol", "shared", "log.ts"],
  // A node's link to the others (Redis): sessions, sends, task leases.
  cluster: ["supervisor", "shared", "log.ts"],
  supervisor: ["router", "protocol", "shared", "log.ts"],
  router: ["shared"],
  protocol: ["shared"],
  sandbox: ["protocol", "shared"],
  shared: [],
};

/** Folders whose modules take data and return data: no Deno I/O. */
const PURE = ["router", "protocol", "shared"];

const IMPORT_REGEXP =
  /(?:^|\n)\s*(?:import|export)[^"']*?from\s*["']([^"']+)["']/g;

async function sources(): Promise<string[]> {
  const files: string[] = [];
  for (const layer of Object.keys(ALLOWED)) {
    for await (const entry of Deno.readDir(join(SRC, layer))) {
      if (entry.name.endsWith(".ts") && !entry.name.endsWith("_test.ts")) {
        files.push(join(SRC, layer, entry.name));
      }
    }
  }
  return files;
}

/** The src/ folder (or top-level file) a relative import lands in. */
function layerOf(file: string, specifier: string): string | null {
  if (!specifier.startsWith(".")) return null; // node:, npm:, bare
  const target = relative(SRC, resolve(dirname(file), specifier));
  if (target.startsWith("..")) return ".."; // outside src/ (deno.json)
  return target.split("/")[0]!;
}

Deno.test("each layer imports only the layers below it", async () => {
  const wrong: string[] = [];
  for (const file of await sources()) {
    const layer = relative(SRC, file).split("/")[0]!;
    const text = await Deno.readTextFile(file);
    for (const [, specifier] of text.matchAll(IMPORT_REGEXP)) {
      const target = layerOf(file, specifier!);
      if (target === null || target === layer || target === "..") continue;
      if (!ALLOWED[layer]!.includes(target)) {
        wrong.push(`${relative(PROJECT_DIR, file)} imports ${specifier}`);
      }
    }
  }
  assert.deepEqual(wrong, []);
});

Deno.test("the pure modules (router, protocol, shared) do no Deno I/O", async () => {
  const wrong: string[] = [];
  for (const file of await sources()) {
    const layer = relative(SRC, file).split("/")[0]!;
    if (!PURE.includes(layer)) continue;
    // Doc examples may show how a caller wires I/O in.
    const code = (await Deno.readTextFile(file)).replace(
      /\/\*\*[\s\S]*?\*\//g,
      "",
    );
    if (/\bDeno\./.test(code)) wrong.push(relative(PROJECT_DIR, file));
  }
  assert.deepEqual(wrong, []);
});

Deno.test("the gateway's pipeline file stays short enough to read", async () => {
  const lines = (await Deno.readTextFile(join(SRC, "gateway", "gateway.ts")))
    .split("\n").length;
  assert.ok(lines < 400, `src/gateway/gateway.ts has ${lines} lines`);
});
