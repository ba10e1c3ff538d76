/**
 * A site's own dependencies: its deno.json import map, packages installed
 * by `cli install` (or `listen --install`) into its own cache with its own
 * deno.lock, and what a site may not do with an import map. The packages
 * are real ones from npm, at pinned versions.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  cliCommand,
  delay,
  PROJECT_DIR,
  type SiteFiles,
  startExamples,
  startServer,
  type TestServer,
  writeSites,
} from "./helpers/server.ts";

const MARKED = "npm:marked@15.0.12";

/** A site rendering markdown with npm:marked, through its import map. */
const MARKDOWN: SiteFiles[string] = {
  "site.json": JSON.stringify({ hosts: ["*"] }),
  "deno.json": JSON.stringify({ imports: { marked: MARKED } }),
  "autorun/ar_markdown.ts": `
import { hosts, html, raw } from "sandflare";
import { marked } from "marked";
hosts.any.add("/markdown", () =>
  html\`\${raw(marked.parse("# Title\\n\\n*rendered* by marked") as string)}\`);
`,
};

async function until(
  what: string,
  check: () => Promise<boolean>,
  timeoutMs = 20_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (await check()) return;
    await delay(50);
  }
  throw new Error(`Timed out waiting for: ${what}`);
}

async function run(args: string[]) {
  const out = await cliCommand(args).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

async function body(server: TestServer, path: string): Promise<string> {
  const res = await server.fetch(path);
  return `${res.status} ${res.text}`;
}

Deno.test("a site using npm:marked is not loaded until cli install installs it, then served without a touch", async (t) => {
  const sitesDir = await writeSites({ markdown: MARKDOWN });
  const dataDir = join(sitesDir, ".data");
  const serverLock = await Deno.readFile(join(PROJECT_DIR, "deno.lock"));
  const folders = [`--sites-dir=${sitesDir}`, `--data-dir=${dataDir}`];
  const command =
    `deno task cli install markdown --sites-dir=${sitesDir} --data-dir=${dataDir}`;
  const server = await startServer({
    sitesDir,
    args: [`--data-dir=${dataDir}`],
  });
  try {
    await t.step("one log line names the package and the command", async () => {
      const line = await server.waitForLog(/\[markdown\] Site not loaded/);
      assert.ok(
        line.endsWith(
          `Site not loaded: "${MARKED}" is not installed; run: ${command}`,
        ),
        line,
      );
      assert.equal((await server.fetch("/markdown")).status, 404);
    });
    await t.step("cli sites says the same", async () => {
      const sites = await run(["sites", "--grant-requests", ...folders]);
      assert.equal(sites.code, 1, sites.stderr);
      assert.ok(
        sites.stdout.includes(
          `NOT LOADED: "${MARKED}" is not installed; run: ${command}`,
        ),
        sites.stdout,
      );
    });
    await t.step("cli install installs it; the server loads it", async () => {
      const install = await run(["install", "markdown", ...folders]);
      assert.equal(install.code, 0, install.stderr);
      assert.match(
        install.stdout,
        /^markdown: installed 1 package\(s\); its cache holds \d+ MiB\n$/,
      );
      await until(
        "the page is served",
        async () => (await body(server, "/markdown")).startsWith("200"),
      );
      assert.equal(
        await body(server, "/markdown"),
        "200 <h1>Title</h1>\n<p><em>rendered</em> by marked</p>\n",
      );
    });
    await t.step(
      "its deno.lock is in its folder; the server's is untouched",
      async () => {
        const lock = JSON.parse(
          await Deno.readTextFile(join(sitesDir, "markdown", "deno.lock")),
        );
        assert.deepEqual(Object.keys(lock.specifiers), [MARKED]);
        assert.deepEqual(
          await Deno.readFile(join(PROJECT_DIR, "deno.lock")),
          serverLock,
        );
      },
    );
    await t.step(
      "installing again changes nothing, and still loads",
      async () => {
        const reloads = server.logs().split("[markdown] Reloaded").length;
        const install = await run(["install", ...folders]);
        assert.equal(install.code, 0, install.stderr);
        assert.match(install.stdout, /^markdown: installed 1 package\(s\)/);
        // Rewritten as it was, so that a server waiting for it reloads.
        await until(
          "a reload",
          () =>
            Promise.resolve(
              server.logs().split("[markdown] Reloaded").length > reloads,
            ),
        );
        assert.match(await body(server, "/markdown"), /^200 <h1>Title/);
      },
    );
    await t.step(
      "a changed import map without an install says what to run",
      async () => {
        await Deno.writeTextFile(
          join(sitesDir, "markdown", "deno.json"),
          JSON.stringify({ imports: { marked: "npm:marked@15.0.11" } }),
        );
        const line = await server.waitForLog(/\[markdown\] Reload failed/);
        assert.match(
          line,
          / is not installed; run: deno task cli install|does not match what the site imports/,
        );
        assert.ok(line.endsWith(`run: ${command}`), line);
        assert.match(await body(server, "/markdown"), /^200 <h1>Title/);
      },
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("listen --install installs a site's dependencies from a clean cache before it starts", async () => {
  const sitesDir = await writeSites({ markdown: MARKDOWN });
  const dataDir = join(sitesDir, ".data");
  const server = await startServer({
    sitesDir,
    args: [`--data-dir=${dataDir}`, "--install"],
    timeoutMs: 60_000,
  });
  try {
    assert.match(
      await server.waitForLog(/\[markdown\] Installed/),
      /Installed 1 package\(s\) \(\d+ MiB in its cache\)$/,
    );
    assert.match(await body(server, "/markdown"), /^200 <h1>Title<\/h1>/);
    assert.ok(
      (await Deno.readTextFile(join(sitesDir, "markdown", "deno.lock")))
        .includes(MARKED),
    );
    // A package added while it runs is installed on reload; the lockfile
    // that install writes is no reason to reload again.
    await Deno.writeTextFile(
      join(sitesDir, "markdown", "deno.json"),
      JSON.stringify({
        imports: { marked: MARKED, "left-pad": "npm:left-pad@1.3.0" },
      }),
    );
    await server.waitForLog(/\[markdown\] Installed 2 package\(s\)/, 30_000);
    await server.waitForLog(/\[markdown\] Reloaded/);
    await delay(2000);
    assert.equal(server.logs().split("[markdown] Reloaded").length, 2);
    assert.match(await body(server, "/markdown"), /^200 <h1>Title<\/h1>/);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("listen --install: a script that does not parse is said to, with its file and line, not as a failed install", async () => {
  const sitesDir = await writeSites({
    broken: {
      "site.json": JSON.stringify({ hosts: ["broken.test"] }),
      "autorun/ar_broken.ts":
        `import { hosts } from "sandflare";\nhosts.get("broken.test").add("/", () => { oops( ;\n`,
    },
  });
  const server = await startServer({
    sitesDir,
    args: [`--data-dir=${join(sitesDir, ".data")}`, "--install"],
    timeoutMs: 60_000,
  });
  try {
    const line = await server.waitForLog(/\[broken\] Site not loaded/);
    assert.match(line, /: SyntaxError: .* at autorun\/ar_broken\.ts:2:\d+$/);
    assert.doesNotMatch(line, /installing its dependencies/);
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a site's own import map maps its modules, and \"sandflare\" stays the server's", async () => {
  const sitesDir = await writeSites({
    mapped: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "deno.jsonc": `{
  // Comments and trailing commas, as Deno reads deno.json.
  "imports": {
    "@lib/": "./lib/",
    "sandflare": "./not_the_api.ts",
  },
  "scopes": { "./autorun/": { "sandflare": "./not_the_api.ts" } },
  "compilerOptions": { "strict": false },
}`,
      "not_the_api.ts": `export const hosts = null;`,
      "lib/greet.ts": `export const greet = (who: string) => "hello " + who;`,
      "autorun/ar_mapped.ts": `
import { hosts } from "sandflare";
import { greet } from "@lib/greet.ts";
hosts.any.add("/mapped", () => greet("from lib"));
`,
    },
  });
  const server = await startServer({ sitesDir });
  try {
    assert.equal(await body(server, "/mapped"), "200 hello from lib");
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a site's import map cannot reach the runtime, and npm packages start no node:worker_threads Workers", async (t) => {
  const src = new URL("src/", `file://${PROJECT_DIR}`).href;
  const page = (path: string, code: string) => `
import { hosts } from "sandflare";
${code}
hosts.any.add("${path}", () => "loaded");
`;
  const FAKE = "sf-fake-threads";
  const sitesDir = await writeSites({
    gateway: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "deno.json": JSON.stringify({
        imports: { "gw": `${src}gateway/gateway.ts` },
      }),
      "autorun/ar_gateway.ts": page("/gateway", `import "gw";`),
    },
    relative: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      // The site folder is a temporary one: "../" many times reaches "/".
      "deno.json": JSON.stringify({
        imports: {
          "rt/": `${"../".repeat(20)}${PROJECT_DIR.slice(1)}src/`,
        },
      }),
      "autorun/ar_relative.ts": page(
        "/relative",
        `import "rt/sandbox/_registry.ts";`,
      ),
    },
    scoped: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "deno.json": JSON.stringify({
        scopes: { [`${src}sandbox/`]: { "./confine.ts": "./mine.ts" } },
      }),
      "autorun/ar_scoped.ts": page("/scoped", ""),
    },
    threads: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "deno.json": JSON.stringify({
        imports: { "wt": "node:worker_threads" },
      }),
      "autorun/ar_threads.ts": page("/threads", `import "wt";`),
    },
    // The sandbox's own modules import node:os and node:module: a
    // top-level entry would apply to them too (review).
    builtins: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "deno.json": JSON.stringify({
        imports: { "node:os": "./evil_os.ts", "node:module": "./evil.ts" },
      }),
      "evil_os.ts":
        `console.error("EVIL_OS ran");\nexport function setPriority() {}\n`,
      "evil.ts": `console.error("EVIL_MODULE ran");\n`,
      "autorun/ar_builtins.ts": page("/builtins", ""),
    },
    byurl: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "deno.json": JSON.stringify({ imports: {} }),
      "autorun/ar_byurl.ts": page(
        "/byurl",
        `import "${src}sandbox/_registry.ts";`,
      ),
    },
    npmworker: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "deno.json": JSON.stringify({ imports: {} }),
      "autorun/ar_npmworker.ts": `
import { hosts } from "sandflare";
import { Worker } from "npm:${FAKE}@1.0.0";
hosts.any.add("/npmworker", () => {
  try {
    const worker = new Worker("for (;;) {}", { eval: true });
    worker.terminate();
    return "started a node:worker_threads Worker";
  } catch (err) {
    return "refused: " + (err as Error).message;
  }
});
`,
    },
  });
  const dataDir = join(sitesDir, ".data");
  // A package in the site's cache, as if installed: it hands out the real
  // node:worker_threads, which an import map cannot reach into.
  const pkg = join(
    dataDir,
    "site-cache/npmworker/npm/registry.npmjs.org",
    FAKE,
  );
  await Deno.mkdir(join(pkg, "1.0.0"), { recursive: true });
  await Deno.writeTextFile(
    join(pkg, "registry.json"),
    JSON.stringify({
      name: FAKE,
      "dist-tags": { latest: "1.0.0" },
      versions: {
        "1.0.0": {
          version: "1.0.0",
          dist: {
            tarball: `https://registry.npmjs.org/${FAKE}/-/${FAKE}-1.0.0.tgz`,
            integrity: "sha512-AAAA",
          },
        },
      },
    }),
  );
  await Deno.writeTextFile(
    join(pkg, "1.0.0/package.json"),
    JSON.stringify({
      name: FAKE,
      version: "1.0.0",
      type: "module",
      main: "index.js",
    }),
  );
  await Deno.writeTextFile(
    join(pkg, "1.0.0/index.js"),
    `export { Worker } from "node:worker_threads";\n`,
  );
  const server = await startServer({
    sitesDir,
    args: [`--data-dir=${dataDir}`],
  });
  try {
    const notLoaded = (site: string) =>
      server.waitForLog(new RegExp(`\\[${site}\\] Site not loaded`));
    await t.step("an entry leading to the runtime's modules", async () => {
      assert.match(
        await notLoaded("gateway"),
        /gateway\/deno\.json: "imports"\."gw" leads to file:\/\/.*\/src\/gateway\/gateway\.ts, outside the site folder; an entry may point at npm:, jsr:, https: or node: specifiers, or a path inside the site folder$/,
      );
      assert.match(
        await notLoaded("relative"),
        /relative\/deno\.json: "imports"\."rt\/" leads to file:\/\/.*\/src\/, outside the site folder/,
      );
    });
    await t.step("a scope over the runtime's modules", async () => {
      assert.match(
        await notLoaded("scoped"),
        /scoped\/deno\.json: "scopes"\."file:\/\/.*\/src\/sandbox\/" leads to file:\/\/.*\/src\/sandbox\/, outside the site folder/,
      );
    });
    await t.step("node:worker_threads as a target", async () => {
      assert.match(
        await notLoaded("threads"),
        /threads\/deno\.json: "imports"\."wt": node:worker_threads is not available to sites/,
      );
    });
    await t.step("node: built-ins the runtime imports", async () => {
      assert.match(
        await notLoaded("builtins"),
        /builtins\/deno\.json: "imports"\."node:(os|module)": a site may map bare names \(such as "marked"\), https: URLs and paths in its folder, not node: specifiers/,
      );
      assert.doesNotMatch(server.logs(), /EVIL_(OS|MODULE) ran/);
    });
    await t.step("a runtime module by URL, with a map of its own", async () => {
      assert.match(
        await notLoaded("byurl"),
        /not_for_sites\/sandbox\/_registry\.ts/,
      );
    });
    await t.step("an npm package's own node:worker_threads", async () => {
      assert.match(
        await body(server, "/npmworker"),
        /^200 refused: node:worker_threads Workers are not available to sites/,
      );
    });
    for (
      const path of [
        "/gateway",
        "/relative",
        "/scoped",
        "/threads",
        "/builtins",
        "/byurl",
      ]
    ) {
      assert.equal((await server.fetch(path)).status, 404, path);
    }
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("the markdown example serves its pages once --install (as npm start runs) installs marked", async () => {
  const sitesDir = await Deno.makeTempDir({ prefix: "sandflare-test-" });
  const server = await startExamples(sitesDir, ["markdown"], ["--install"]);
  try {
    const index = await body(server, "/markdown");
    assert.match(index, /^200 /);
    assert.match(index, /<h1>Markdown, rendered by an npm package<\/h1>/);
    assert.match(index, /<code>pages\/index\.md<\/code>/);
    assert.match(
      await body(server, "/markdown/hello-world"),
      /<h1>hello world<\/h1>/,
    );
    // The lockfile it ships pins what was installed.
    assert.deepEqual(
      await Deno.readFile(join(sitesDir, "markdown", "deno.lock")),
      await Deno.readFile(join(PROJECT_DIR, "sites", "markdown", "deno.lock")),
    );
  } finally {
    await server.stop();
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("cli install: one line per site, nothing to install without packages, exit 1 when one fails", async () => {
  const sitesDir = await writeSites({
    plain: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_plain.ts":
        `import { hosts } from "sandflare";\nhosts.any.add("/plain", () => "plain");\n`,
    },
    broken: {
      "deno.json": `{"imports": {"x": 1}}`,
      "autorun/ar_broken.ts": `export {};\n`,
    },
  });
  const dataDir = join(sitesDir, ".data");
  const folders = [`--sites-dir=${sitesDir}`, `--data-dir=${dataDir}`];
  try {
    const all = await run(["install", ...folders]);
    assert.equal(all.code, 1, all.stderr);
    assert.equal(
      all.stdout,
      `broken: failed: ${
        join(sitesDir, "broken", "deno.json")
      }: "imports"."x" must be a specifier string (npm:, jsr:, https: or node: specifiers, or a path inside the site folder), got 1\n` +
        "plain: nothing to install\n",
    );
    const plain = await run(["install", "plain", ...folders]);
    assert.equal(plain.code, 0, plain.stderr);
    assert.equal(plain.stdout, "plain: nothing to install\n");
    await assert.rejects(Deno.stat(join(sitesDir, "plain", "deno.lock")));
    const missing = await run(["install", "plain", "gone", ...folders]);
    assert.equal(missing.code, 1);
    assert.equal(
      missing.stdout,
      `plain: nothing to install\ngone: failed: there is no site folder ${
        join(sitesDir, "gone")
      }\n`,
    );
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
  }
});
