/**
 * `cli init NAME`: a new site that works, and that `deno check` checks from
 * its own folder wherever it is copied.
 */

import assert from "node:assert/strict";
import { cp } from "node:fs/promises";
import { join } from "node:path";
import { cliCommand, startServer } from "./helpers/server.ts";

async function run(args: string[], cwd?: string) {
  const command = cwd === undefined ? cliCommand(args) : new Deno.Command(
    Deno.execPath(),
    {
      args,
      cwd,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    },
  );
  const out = await command.output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

Deno.test("cli init makes a site that serves its page and passes deno check from a copy outside the project", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "sandflare-init-" });
  const sitesDir = join(root, "sites");
  try {
    await t.step("init prints what to do next", async () => {
      const init = await run(["init", "shop", `--sites-dir=${sitesDir}`]);
      assert.equal(init.code, 0, init.stderr);
      const site = join(sitesDir, "shop");
      assert.ok(
        init.stdout.startsWith(
          `Created ${site}: site.json, deno.json, autorun/ar_shop.ts, shop_test.ts\n`,
        ),
        init.stdout,
      );
      for (
        const next of [
          `deno task cli grant shop --sites-dir=${sitesDir}`,
          "http://localhost:8080/shop",
          `"marked": "npm:marked@15.0.12", then run: deno task cli install shop --sites-dir=${sitesDir}`,
          "from its folder: deno check autorun/",
          "from its folder: deno test -A",
        ]
      ) {
        assert.ok(init.stdout.includes(next), `${next} in:\n${init.stdout}`);
      }
    });
    await t.step("the server serves its page", async () => {
      const server = await startServer({
        sitesDir,
        args: [`--data-dir=${join(root, "data")}`],
      });
      try {
        const res = await server.fetch("/shop");
        assert.equal(res.status, 200);
        assert.match(res.text, /<h1>shop<\/h1>\n<p>Hello 127\.0\.0\.1, from/);
      } finally {
        await server.stop();
      }
    });
    await t.step(
      "deno check passes in a copy of its folder, and finds errors",
      async () => {
        const copy = join(root, "elsewhere", "shop");
        await cp(join(sitesDir, "shop"), copy, { recursive: true });
        const check = await run(["check", "autorun/"], copy);
        assert.equal(check.code, 0, check.stderr);
        // The types are the server's: a wrong call is caught.
        await Deno.writeTextFile(
          join(copy, "autorun", "ar_wrong.ts"),
          `import { hosts } from "sandflare";\nhosts.any.add(42, () => "x");\n`,
        );
        const wrong = await run(["check", "autorun/"], copy);
        assert.equal(wrong.code, 1, wrong.stderr);
        assert.match(wrong.stderr, /TS2345/);
        await Deno.remove(join(copy, "autorun", "ar_wrong.ts"));
      },
    );
    await t.step(
      "its own test, with testSite, passes in that copy (deno test -A)",
      async () => {
        const copy = join(root, "elsewhere", "shop");
        const test = await run(["test", "-A"], copy);
        assert.equal(test.code, 0, test.stdout + test.stderr);
        assert.match(test.stdout, /the shop page \.\.\. ok/);
        assert.match(test.stdout, /ok \| 1 passed/);
      },
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});

Deno.test("cli init refuses a name that is taken or not a site name", async (t) => {
  const root = await Deno.makeTempDir({ prefix: "sandflare-init-" });
  const sitesDir = join(root, "sites");
  try {
    await Deno.mkdir(join(sitesDir, "taken"), { recursive: true });
    await t.step("taken", async () => {
      const init = await run(["init", "taken", `--sites-dir=${sitesDir}`]);
      assert.equal(init.code, 1);
      assert.equal(init.stdout, "");
      assert.match(
        init.stderr,
        new RegExp(
          `Cannot create the site "taken": ${
            RegExp.escape(join(sitesDir, "taken"))
          } already exists; pick another name, or remove it first\n$`,
        ),
      );
      assert.deepEqual(
        await Array.fromAsync(Deno.readDir(join(sitesDir, "taken"))),
        [],
      );
    });
    for (const name of ["root", "a/b", ".hidden", "x".repeat(65)]) {
      await t.step(name, async () => {
        const init = await run(["init", name, `--sites-dir=${sitesDir}`]);
        assert.equal(init.code, 1);
        assert.match(
          init.stderr,
          /Cannot create the site ".*": a site name is letters, digits, "\.", "_" or "-"/,
        );
      });
    }
    assert.deepEqual(
      (await Array.fromAsync(Deno.readDir(sitesDir))).map((e) => e.name),
      ["taken"],
    );
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
