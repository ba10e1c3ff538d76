/**
 * The path without Deno: every `deno task X` the READMEs name is an npm
 * script, and `npm run cli -- sites` works in a fresh copy of the project,
 * as on a machine with Node.js only. The copy takes this project's
 * installed Deno and npm runs offline: tests talk to loopback only.
 */

import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { PROJECT_DIR } from "./helpers/server.ts";

Deno.test("every deno task the READMEs name is an npm script that installs Deno first", async () => {
  const { scripts } = JSON.parse(
    await Deno.readTextFile(join(PROJECT_DIR, "package.json")),
  ) as { scripts: Record<string, string> };
  const named = new Set<string>();
  for (const file of ["README.md", "deploy/README.md"]) {
    const text = await Deno.readTextFile(join(PROJECT_DIR, file));
    for (const [, task] of text.matchAll(/deno task ([a-z][a-z:-]*)/g)) {
      named.add(task!);
    }
  }
  assert.ok(named.has("cli") && named.has("bench"), [...named].join(" "));
  for (const task of named) {
    assert.match(
      scripts[task] ?? "",
      new RegExp(`^tools/deno/node_modules/\\.bin/deno task ${task}\\b`),
      `npm run ${task}`,
    );
    assert.match(scripts[`pre${task}`] ?? "", /npm run --silent deno:install/);
  }
});

Deno.test("npm run cli -- sites works in a fresh copy of the project", async () => {
  const copy = await Deno.makeTempDir({ prefix: "sandflare-npm-" });
  try {
    // The files git tracks, as a clone has them (with this tree's changes).
    const listed = await new Deno.Command("git", {
      args: ["ls-files", "-z"],
      cwd: PROJECT_DIR,
      stdout: "piped",
    }).output();
    assert.ok(listed.success, "git ls-files");
    const files = new TextDecoder().decode(listed.stdout).split("\0")
      .filter((f) => f !== "");
    for (const file of files) {
      await Deno.mkdir(dirname(join(copy, file)), { recursive: true });
      await Deno.copyFile(join(PROJECT_DIR, file), join(copy, file));
    }
    await Deno.symlink(
      join(PROJECT_DIR, "tools", "deno", "node_modules"),
      join(copy, "tools", "deno", "node_modules"),
    );
    const out = await new Deno.Command("npm", {
      args: ["run", "--silent", "cli", "--", "sites"],
      cwd: copy,
      env: { NO_COLOR: "1", npm_config_offline: "true" },
      stdout: "piped",
      stderr: "piped",
    }).output();
    const text = new TextDecoder().decode(out.stdout) +
      new TextDecoder().decode(out.stderr);
    assert.doesNotMatch(text, /Missing script/);
    assert.match(text, /^hello\b/m);
    assert.match(text, /^blog\b/m);
    // A fresh copy has not installed the examples' packages yet (npm start
    // does): those two sites say how, and the command says it with exit 1.
    assert.match(
      text,
      /\[markdown\] Site not loaded: .* is not installed; run: /,
    );
    assert.match(text, /\[hono\] Site not loaded: .* is not installed; run: /);
    assert.equal(out.code, 1, text);
  } finally {
    await Deno.remove(copy, { recursive: true });
  }
});
