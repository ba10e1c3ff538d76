/**
 * The command line of `main.ts` (SPEC §1): help, version, and usage errors
 * with exit code 2. None of these runs starts a server.
 */

import assert from "node:assert/strict";
import denoJson from "../deno.json" with { type: "json" };
import { LISTEN_OPTIONS } from "../src/cli/options.ts";
import { formatSize } from "../src/cli/sizes.ts";
import { cliCommand } from "./helpers/server.ts";

/** A run that takes longer than this is taken for a server that started. */
const TIMEOUT_MS = 30_000;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion, killing it (and failing) if it hangs. */
async function run(args: string[]): Promise<Run> {
  const child = cliCommand(args).spawn();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill("SIGKILL");
  }, TIMEOUT_MS);
  const output = await child.output();
  clearTimeout(timer);
  assert.ok(!timedOut, `main.ts ${args.join(" ")} did not exit: it serves`);
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

/** Asserts a usage error: exit 2, nothing on stdout, one line on stderr. */
function assertUsageError(result: Run, ...names: string[]): string {
  assert.equal(result.code, 2, `exit code; stderr: ${result.stderr}`);
  assert.equal(result.stdout, "");
  assert.ok(result.stderr.endsWith("\n"), JSON.stringify(result.stderr));
  const lines = result.stderr.slice(0, -1).split("\n");
  assert.equal(lines.length, 1, `one line on stderr, got:\n${result.stderr}`);
  const line = lines[0]!;
  for (const name of names) {
    assert.ok(line.includes(name), `${JSON.stringify(line)} names ${name}`);
  }
  assert.ok(!/\bat .*:\d+:\d+/.test(line), "no stack trace");
  return line;
}

/** The option names of SPEC §1, each with the default it documents. */
const SPEC_OPTIONS: [string, string | null][] = [
  ["--port=N", "8080"],
  ["--host=ADDR", "*"],
  ["-l, --local", null],
  ["--sites-dir=PATH", "./sites"],
  ["--threads=N", "1"],
  ["--no-reload", null],
  ["--out-pid=PATH", null],
  ["--systemd", null],
  ["--reverse-proxy", null],
  ["--trusted-reverse-proxies=LIST", "localhost"],
  ["--x-accel-redirect[=PREFIX]", null],
  ["--x-sendfile", null],
  ["--max-post-length=SIZE", "10MiB"],
  ["--max-etag-size=SIZE", "64MiB"],
  ["--keepalive-time=S", "2"],
  ["--max-connections=N", "10000"],
  ["--request-timeout=S", "30"],
  ["--tls-cert=PATH", null],
  ["--tls-key=PATH", null],
  ["-h, --help", null],
  ["-v, --version", null],
];

/**
 * The help split into one entry per option: the label and its text with
 * the wrapped lines joined.
 */
function helpEntries(help: string): Map<string, string> {
  const entries = new Map<string, string>();
  let current: string | null = null;
  for (const line of help.split("\n")) {
    const start = /^ {2}(-\w, |\s{4})(--[\w-]+(?:=[A-Z]+|\[=[A-Z]+\])?) +(.*)$/
      .exec(line);
    if (start !== null) {
      const short = start[1]!.trim();
      current = short === "" ? start[2]! : `${short} ${start[2]!}`;
      entries.set(current, start[3]!);
    } else if (current !== null && /^ {8,}\S/.test(line)) {
      entries.set(current, `${entries.get(current)!} ${line.trim()}`);
    } else {
      current = null;
    }
  }
  return entries;
}

function shownDefault(option: (typeof LISTEN_OPTIONS)[number]): string | null {
  const value = option.default;
  if (option.kind === "flag" || value === undefined || value === null) {
    return null;
  }
  if (option.kind === "size" && typeof value === "number") {
    return formatSize(value);
  }
  return Array.isArray(value) ? value.join(",") : String(value);
}

Deno.test("main.ts listen --help lists every option with its default", async (t) => {
  const result = await run(["listen", "--help"]);
  await t.step("exits 0 with the help on stdout only", () => {
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stderr, "");
    assert.match(result.stdout, /^Usage: sandflare listen \[OPTIONS\]\n/);
  });
  const entries = helpEntries(result.stdout);

  await t.step("-h is the same help", async () => {
    const short = await run(["listen", "-h"]);
    assert.equal(short.code, 0);
    assert.equal(short.stdout, result.stdout);
  });

  for (const option of LISTEN_OPTIONS) {
    await t.step(`--${option.name}`, () => {
      const label = [...entries.keys()].find((l) =>
        new RegExp(`(^| )--${option.name}(=|\\[|$)`).test(l)
      );
      assert.ok(label !== undefined, `--${option.name} is in the help`);
      if (option.short !== undefined) {
        assert.ok(label.startsWith(`-${option.short}, `), label);
      }
      const text = entries.get(label)!;
      assert.ok(text.length > 10, `--${option.name} is explained`);
      const shown = shownDefault(option);
      if (shown !== null) {
        assert.ok(
          text.endsWith(`(default: ${shown})`),
          `--${option.name} shows its default ${shown}: ${text}`,
        );
      } else {
        assert.ok(!text.includes("(default:"), text);
      }
      if (option.bare !== undefined) {
        assert.ok(text.includes(option.bare), `bare value in: ${text}`);
      }
    });
  }

  await t.step("every option of SPEC §1, with the SPEC's default", () => {
    for (const [label, value] of SPEC_OPTIONS) {
      const text = entries.get(label);
      assert.ok(text !== undefined, `${label} is in the help`);
      if (value !== null) {
        assert.ok(text.endsWith(`(default: ${value})`), `${label}: ${text}`);
      }
    }
  });

  await t.step("the size and seconds syntaxes are explained", () => {
    assert.match(result.stdout, /SIZE is .*KiB/);
    assert.match(result.stdout, /KB 1000/);
    assert.match(result.stdout, /S is a number of seconds/);
  });
});

Deno.test("main.ts prints its version", async (t) => {
  const want = `sandflare ${denoJson.version}\n`;
  for (
    const args of [["listen", "-v"], ["listen", "--version"], ["-v"], [
      "--version",
    ]]
  ) {
    await t.step(args.join(" "), async () => {
      const result = await run(args);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(result.stdout, want);
      assert.equal(result.stderr, "");
    });
  }
});

Deno.test("main.ts listen refuses unknown options with exit 2", async (t) => {
  const cases: [string, string][] = [
    ["--bogus", "--bogus"],
    ["--bogus=1", "--bogus"],
    ["--Port=80", "--Port"],
    ["--ports=80", "--ports"],
    ["-x", "-x"],
    ["-port=80", "--port"],
  ];
  for (const [arg, name] of cases) {
    await t.step(arg, async () => {
      assertUsageError(await run(["listen", arg]), name);
    });
  }
  await t.step("after valid options", async () => {
    assertUsageError(
      await run(["listen", "--port=0", "--threads=2", "--nope"]),
      "--nope",
    );
  });
});

Deno.test("main.ts listen refuses bad values with exit 2", async (t) => {
  const cases: [string[], string[]][] = [
    [["--port=70000"], ["--port", "70000"]],
    [["--port=-1"], ["--port"]],
    [["--port=abc"], ["--port", "abc"]],
    [["--port=8080.5"], ["--port"]],
    [["--port="], ["--port"]],
    [["--port"], ["--port"]],
    [["--threads=0"], ["--threads", "0"]],
    [["--threads=65"], ["--threads"]],
    [["--max-post-length=12X"], ["--max-post-length", "12X"]],
    [["--max-etag-size=-1"], ["--max-etag-size"]],
    [["--keepalive-time=-1"], ["--keepalive-time", "-1"]],
    [["--keepalive-time=0"], ["--keepalive-time"]],
    [["--request-timeout=soon"], ["--request-timeout"]],
    [["--max-connections=0"], ["--max-connections"]],
    [["--tls-cert=a"], ["--tls-cert", "--tls-key"]],
    [["--tls-key=b"], ["--tls-key", "--tls-cert"]],
    [["--trusted-reverse-proxies=10.0.0.0/33"], [
      "--trusted-reverse-proxies",
      "10.0.0.0/33",
    ]],
    [["--trusted-reverse-proxies=a,,b"], ["--trusted-reverse-proxies"]],
    [["--host=not a host"], ["--host"]],
    [["--x-accel-redirect=relative/"], ["--x-accel-redirect"]],
    [["--x-accel-redirect", "--x-sendfile"], [
      "--x-accel-redirect",
      "--x-sendfile",
    ]],
    [["--systemd=yes"], ["--systemd"]],
    [["extra"], ["extra"]],
    [["--port=0", "extra"], ["extra"]],
  ];
  for (const [args, names] of cases) {
    await t.step(args.join(" "), async () => {
      assertUsageError(await run(["listen", ...args]), ...names);
    });
  }
});

Deno.test("main.ts refuses an unknown command with exit 2", async (t) => {
  for (const command of ["frob", "Listen", "serve"]) {
    await t.step(command, async () => {
      const line = assertUsageError(await run([command, "--port=0"]), command);
      assert.match(line, /listen/, "the message names the valid commands");
    });
  }
  await t.step("no command prints the usage and exits 2", async () => {
    const result = await run([]);
    assert.equal(result.code, 2);
    assert.match(result.stdout, /Usage: sandflare COMMAND/);
  });
});

Deno.test("the README's configuration reference is the current --help", async () => {
  const readme = await Deno.readTextFile(
    new URL("../README.md", import.meta.url),
  );
  const block = /<!-- help:start -->\s*```\n([\s\S]*?)\n```\s*<!-- help:end -->/
    .exec(readme)?.[1];
  assert.ok(block !== undefined, "README has the help block");
  const out = await cliCommand(["listen", "--help"]).output();
  assert.equal(block.trimEnd(), new TextDecoder().decode(out.stdout).trimEnd());
});
