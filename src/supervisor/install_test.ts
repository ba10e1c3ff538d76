import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { DependencyError } from "./import_map.ts";
import { readSiteDependencies } from "./dependencies.ts";
import { installSite, type InstallSpec } from "./install.ts";

const PROJECT_DIR = fileURLToPath(new URL("../../", import.meta.url));

/** A site folder with one autorun script, and where its install goes. */
async function site(
  script: string,
  files: Record<string, string> = {},
): Promise<InstallSpec & { root: string }> {
  const root = await Deno.makeTempDir({ prefix: "sandflare-install-" });
  const siteDir = join(root, "site");
  await Deno.mkdir(join(siteDir, "autorun"), { recursive: true });
  const file = join(siteDir, "autorun", "ar_x.ts");
  await Deno.writeTextFile(file, script);
  for (const [name, text] of Object.entries(files)) {
    await Deno.writeTextFile(join(siteDir, name), text);
  }
  return {
    root,
    site: "site",
    siteDir,
    scripts: [new URL(`file://${file}`).href],
    deps: await readSiteDependencies(siteDir),
    projectDir: PROJECT_DIR,
    cacheDir: join(root, "cache"),
    configDir: join(root, "config"),
    quotaMiB: 100,
    touchLock: false,
    timeoutMs: 60_000,
  };
}

Deno.test("an install makes no request to the operator's own network (loopback here)", async () => {
  let requests = 0;
  const internal = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen() {},
  }, () => {
    requests++;
    return new Response("export default 1;", {
      headers: { "content-type": "application/javascript" },
    });
  });
  const spec = await site(
    `import x from "http://127.0.0.1:${internal.addr.port}/secret.ts";\nconsole.log(x);\n`,
  );
  try {
    const result = await installSite(spec);
    assert.equal(result.kind, "failed");
    assert.match(
      result.kind === "failed" ? result.reason : "",
      /import access to "127\.0\.0\.1:\d+"/,
    );
    assert.equal(requests, 0, "the install fetched from loopback");
  } finally {
    await internal.shutdown();
    await Deno.remove(spec.root, { recursive: true });
  }
});

Deno.test("an install that takes longer than its time is stopped, and fails saying so", async () => {
  const spec = await site(`import "npm:marked@15.0.12";\n`);
  try {
    const started = performance.now();
    const result = await installSite({ ...spec, timeoutMs: 1 });
    assert.deepEqual(result, {
      kind: "failed",
      reason: "the install did not finish within 0 s and was stopped",
    });
    assert.ok(performance.now() - started < 30_000);
    const stop = new AbortController();
    stop.abort();
    assert.deepEqual(await installSite({ ...spec, signal: stop.signal }), {
      kind: "failed",
      reason: "the install was stopped",
    });
  } finally {
    await Deno.remove(spec.root, { recursive: true });
  }
});

Deno.test("a deno.json over 1 MiB is refused before it is read", async () => {
  const root = await Deno.makeTempDir({ prefix: "sandflare-install-" });
  try {
    await Deno.writeTextFile(
      join(root, "deno.json"),
      `{"imports": {}, "pad": "${"x".repeat(1024 * 1024)}"}`,
    );
    await assert.rejects(
      readSiteDependencies(root),
      (err: Error) =>
        err instanceof DependencyError &&
        /deno\.json is \d+ bytes; a site's deno\.json and deno\.lock may be at most 1048576 bytes/
          .test(err.message),
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("an install that fails on the site's own code says where, relative to the site", async () => {
  const spec = await site(`export const = ;\n`);
  try {
    const result = await installSite(spec);
    assert.equal(result.kind, "failed");
    assert.equal(
      result.kind === "failed" ? result.reason : "",
      "SyntaxError: Unexpected token `=`. Expected yield, an identifier, [ or { at autorun/ar_x.ts:1:14",
    );
  } finally {
    await Deno.remove(spec.root, { recursive: true });
  }
});
