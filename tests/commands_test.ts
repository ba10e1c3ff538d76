/**
 * `sites`, `mount` and `unmount`: output and exit codes.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import { cliCommand, writeSites } from "./helpers/server.ts";

async function run(args: string[]) {
  const out = await cliCommand(args).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("sites prints hosts, routes, websockets, permissions and problems", async (t) => {
  const sitesDir = await writeSites({
    good: {
      "site.json": JSON.stringify({
        hosts: ["*", "good.test"],
        permissions: { read: ["data"] },
        workers: 2,
      }),
      "data/x.txt": "x",
      "static/*/a.css": "a{}",
      "autorun/ar_good.ts": `
import { hosts, websocket } from "sandflare";
hosts.any.add("/good", () => "good");
hosts.get("good.test").addPattern("/item/(\\\\d+)", () => "item", "POST");
hosts.get("good.test").mount("/api", () => new Response("api"));
websocket.register("/live", "v1");
export default { fetch: () => new Response("app") };
`,
    },
    bad: {
      "site.json": JSON.stringify({ hosts: ["bad.test"] }),
      "autorun/ar_bad.ts":
        `import { hosts } from "sandflare";\nhosts.get("other.test").add("/", () => "");\n`,
    },
  });
  try {
    await t.step("text", async () => {
      const { code, stdout } = await run([
        "sites",
        "--grant-requests",
        `--sites-dir=${sitesDir}`,
      ]);
      assert.equal(code, 1, "a site failed to load");
      assert.match(stdout, /^good {2}.*\/good$/m);
      assert.match(stdout, /hosts: +\*, good\.test/);
      assert.match(stdout, /GET +\/good/);
      assert.match(stdout, /POST ~ \/item\/\(\\d\+\) {2}\(host good\.test\)/);
      assert.match(stdout, /\/live \(protocol v1\)/);
      assert.match(
        stdout,
        /\* +\/api\/… \(fetch handler\) {2}\(host good\.test\)/,
      );
      assert.match(stdout, /\* +\/… \(fetch handler\)$/m);
      assert.match(stdout, /static: +1 file/);
      assert.match(
        stdout,
        /asks for: {4}read .*\/good, .*\/good\/data; write none; net none; env none/,
      );
      assert.match(
        stdout,
        /sandbox: +2 worker\(s\), 256 MiB of memory, 100 MiB of disk/,
      );
      assert.match(
        stdout,
        /^bad {2}.*\n {2}NOT LOADED: .*other\.test.*site\.json/m,
      );
    });
    await t.step("--json", async () => {
      const { code, stdout } = await run([
        "sites",
        "--grant-requests",
        `--sites-dir=${sitesDir}`,
        "--json",
      ]);
      assert.equal(code, 1);
      const { sites } = JSON.parse(stdout);
      const good = sites.find((s: { name: string }) => s.name === "good");
      assert.equal(good.loaded, true);
      assert.deepEqual(good.websockets, [{
        host: "*",
        path: "/live",
        protocol: "v1",
      }]);
      const bad = sites.find((s: { name: string }) => s.name === "bad");
      assert.equal(bad.loaded, false);
      assert.match(bad.problem, /other\.test/);
      assert.equal(sites[0].name, "root");
    });
    await t.step("exit 0 when every site loads", async () => {
      await Deno.remove(join(sitesDir, "bad"), { recursive: true });
      const { code } = await run([
        "sites",
        "--grant-requests",
        `--sites-dir=${sitesDir}`,
      ]);
      assert.equal(code, 0);
    });
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("mount and unmount link site folders, with clear errors", async (t) => {
  const root = await Deno.makeTempDir();
  const sitesDir = join(root, "sites");
  const site = join(root, "elsewhere", "mysite");
  await Deno.mkdir(join(site, "autorun"), { recursive: true });
  await Deno.mkdir(join(sitesDir, "real-folder"), { recursive: true });
  const sd = `--sites-dir=${sitesDir}`;
  try {
    await t.step("mount links the folder under the name", async () => {
      const { code, stderr } = await run(["mount", site, "blog", sd]);
      assert.equal(code, 0, stderr);
      assert.equal(
        await Deno.realPath(join(sitesDir, "blog")),
        await Deno.realPath(site),
      );
      assert.match(stderr, /Mounted/);
    });
    await t.step("the name defaults to the folder's", async () => {
      assert.equal((await run(["mount", site, sd])).code, 0);
      assert.ok((await Deno.lstat(join(sitesDir, "mysite"))).isSymlink);
    });
    await t.step("errors", async () => {
      const missing = await run(["mount", join(root, "nope"), "x", sd]);
      assert.equal(missing.code, 1);
      assert.match(missing.stderr, /is not a folder/);
      const taken = await run(["mount", site, "blog", sd]);
      assert.equal(taken.code, 1);
      assert.match(taken.stderr, /already exists/);
      const badName = await run(["mount", site, "../evil", sd]);
      assert.equal(badName.code, 2);
      assert.match(badName.stderr, /Invalid site name/);
      const notLink = await run(["unmount", "real-folder", sd]);
      assert.equal(notLink.code, 1);
      assert.match(notLink.stderr, /not a link/);
      assert.ok(
        (await Deno.stat(join(sitesDir, "real-folder"))).isDirectory,
        "the folder is untouched",
      );
      const none = await run(["unmount", "ghost", sd]);
      assert.equal(none.code, 1);
      assert.match(none.stderr, /there is no/);
    });
    await t.step("unmount removes only the link", async () => {
      assert.equal((await run(["unmount", "blog", sd])).code, 0);
      await assert.rejects(
        Deno.lstat(join(sitesDir, "blog")),
        Deno.errors.NotFound,
      );
      assert.ok(
        (await Deno.stat(site)).isDirectory,
        "the site folder itself is kept",
      );
    });
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("sites escapes what a site registered before printing it to a terminal", async () => {
  // OSC 52 (set the clipboard), a forged line, an 8-bit CSI, a bidi override.
  const nasty =
    "/x\\u001b]52;c;ZXZpbA==\\u0007\\nroot  FORGED\\u009b31m\\u202e";
  const sitesDir = await writeSites({
    nasty: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_nasty.ts":
        `import { hosts } from "sandflare";\nhosts.any.add("${nasty}", () => "x");\n`,
    },
  });
  try {
    for (const args of [[], ["--json"]]) {
      const { stdout } = await run([
        "sites",
        "--grant-requests",
        `--sites-dir=${sitesDir}`,
        ...args,
      ]);
      assert.doesNotMatch(
        stdout,
        // deno-lint-ignore no-control-regex -- finding them is the point
        /[\x1b\x07\x9b\u202e]/,
        "raw control characters",
      );
      assert.doesNotMatch(stdout, /^root {2}FORGED/m, "a forged line");
      assert.match(stdout, /\\(x1b|u001b)\]52;c;ZXZpbA==/);
    }
    const json = await run([
      "sites",
      "--grant-requests",
      `--sites-dir=${sitesDir}`,
      "--json",
    ]);
    const parsed = JSON.parse(json.stdout);
    const routes = parsed.sites.flatMap((s: { pages: { route: string }[] }) =>
      s.pages.map((p) => p.route)
    );
    assert.ok(
      routes.includes(JSON.parse(`"${nasty}"`)),
      "JSON keeps the value",
    );
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
  }
});

Deno.test("a script in autorun/ that is not ar_*.ts is warned about at load and shown by sites", async () => {
  const sitesDir = await writeSites({
    helper: {
      "site.json": JSON.stringify({ hosts: ["*"] }),
      "autorun/ar_page.ts": `
import { hosts } from "sandflare";
import { word } from "./words.ts";
hosts.any.add("/helper", () => word);
`,
      "autorun/words.ts": `export const word = "imported, not run";`,
      "autorun/notes.txt": "not code: nothing to say",
    },
  });
  try {
    const { code, stdout, stderr } = await run([
      "sites",
      "--grant-requests",
      `--sites-dir=${sitesDir}`,
    ]);
    assert.equal(code, 0, stderr);
    const rule =
      "only autorun/ar_*.ts files run at load; a module they import belongs outside autorun/";
    assert.match(
      stderr,
      new RegExp(
        `warn \\[helper\\] autorun/words\\.ts is not run: ${
          RegExp.escape(rule)
        }\n`,
      ),
    );
    assert.doesNotMatch(stderr, /notes\.txt/);
    assert.ok(
      stdout.includes(`  not run:     autorun/words.ts (${rule})`),
      stdout,
    );
    const json = JSON.parse(
      (await run([
        "sites",
        "--grant-requests",
        `--sites-dir=${sitesDir}`,
        "--json",
      ])).stdout,
    );
    const helper = json.sites.find((s: { name: string }) =>
      s.name === "helper"
    );
    assert.deepEqual(helper.notRun, ["autorun/words.ts"]);
  } finally {
    await Deno.remove(sitesDir, { recursive: true });
  }
});
