/**
 * `deno task compile`: builds `dist/sandflare`, one executable holding the
 * server, the sandbox entry and its worker modules, and the root site.
 *
 * `deno compile` does not embed the Deno that runs it: it downloads the
 * matching `denort` runtime from dl.deno.land (or takes the file that the
 * `DENORT_BIN` environment variable names). Where neither works — a machine
 * without access to dl.deno.land — this script says so in one line and exits
 * 1, instead of passing on the compiler's error chain and backtrace.
 *
 * Extra arguments go to `deno compile` (e.g. `--target
 * aarch64-unknown-linux-gnu`).
 *
 * @module
 */

import { fileURLToPath } from "node:url";

const PROJECT_DIR = fileURLToPath(new URL("../", import.meta.url));
/** Where the executable is written, relative to the project folder. */
export const OUTPUT = "dist/sandflare";

/**
 * The `deno compile` arguments. The permissions are those the server needs
 * (no `-A`): a compiled program cannot know at build time where it will be
 * installed, so they are not scoped to paths here; scope them with the
 * systemd unit's hardening (deploy/README.md).
 */
export function compileArgs(extra: readonly string[] = []): string[] {
  return [
    "compile",
    // Datagram sockets for sd_notify (--systemd).
    "--unstable-net",
    // Worker permissions: each site's workers carry the site's permissions.
    "--unstable-worker-options",
    // Route patterns run on V8's linear-time regular-expression engine.
    "--v8-flags=--enable-experimental-regexp-engine",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    "--allow-run",
    "--allow-env",
    // Only the npm packages main.ts reaches (mime-db), not the test tools.
    "--exclude-unused-npm",
    // Loaded at run time, not by a static import: the sandbox entry and
    // the worker modules (new Worker(new URL("./worker.ts", …)), and the
    // gateway's compression thread), the wire protocol, the escaping both
    // layers share, the config with the "sandflare" import map, the root
    // site.
    "--include",
    "src/sandbox",
    "--include",
    "src/protocol",
    "--include",
    "src/shared",
    "--include",
    "src/gateway/compress_worker.ts",
    "--include",
    "deno.json",
    "--include",
    "autorun",
    "--output",
    OUTPUT,
    ...extra,
    "main.ts",
  ];
}

/** What went wrong, in one line, when the failure is the missing runtime. */
export function runtimeProblem(
  stderr: string,
  denortBin: string | undefined,
): string | null {
  // deno compile's error chain, e.g.:
  //   error: Writing deno compile executable to temporary file '…'
  //     0: Setting up base binary.
  //     1: error sending request for url (https://dl.deno.land/release/v2.9.6/denort-x86_64-unknown-linux-gnu.zip): … dns error …
  // or, with DENORT_BIN:
  //     0: Could not find denort at '/path'
  const text = stderr; // uncoloured: the compiler runs with NO_COLOR=1
  const missing = /Could not find (?:lib)?denort at '([^']*)'/.exec(text);
  if (missing !== null) {
    return `compile: failed: DENORT_BIN=${
      denortBin ?? missing[1]
    } is not a denort binary (${
      missing[1]
    } not found); point DENORT_BIN at the denort runtime of this Deno version (${Deno.version.deno}), or unset it to download one from dl.deno.land`;
  }
  if (!/Setting up base binary|dl\.deno\.land|denort/.test(text)) return null;
  const url = /(https:\/\/dl\.deno\.land\/\S*?denort[^\s)]*)/.exec(text)?.[1] ??
    "https://dl.deno.land/";
  const cause =
    /(dns error|Connection refused|timed out|certificate|Network is unreachable|HTTP status[^\n]*|404[^\n]*)/i
      .exec(text)?.[1];
  return `compile: failed: deno compile must download the denort runtime for the target from ${url} (or use DENORT_BIN=/path/to/denort, a local denort ${Deno.version.deno} binary), and this machine cannot reach dl.deno.land${
    cause === undefined ? "" : ` (${cause})`
  }; nothing was written to ${OUTPUT}`;
}

function say(stream: typeof Deno.stdout, text: string): void {
  stream.writeSync(new TextEncoder().encode(`${text}\n`));
}

async function main(): Promise<number> {
  await Deno.mkdir(`${PROJECT_DIR}dist`, { recursive: true });
  const out = await new Deno.Command(Deno.execPath(), {
    args: compileArgs(Deno.args),
    cwd: PROJECT_DIR,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stdout = new TextDecoder().decode(out.stdout);
  const stderr = new TextDecoder().decode(out.stderr);
  if (out.success) {
    if (stdout.trim() !== "") say(Deno.stdout, stdout.trimEnd());
    if (stderr.trim() !== "") say(Deno.stderr, stderr.trimEnd());
    const size = (await Deno.stat(`${PROJECT_DIR}${OUTPUT}`)).size;
    const mib = `${(size / 1048576).toFixed(1)} MiB`;
    if (Deno.args.some((a) => a === "--target" || a.startsWith("--target="))) {
      say(Deno.stdout, `compile: built ${OUTPUT} (cross-compiled, ${mib})`);
      return 0;
    }
    // A DENORT_BIN that is the full `deno` CLI rather than denort builds a
    // file that ignores the embedded program: check that it is Sandflare.
    const version = await new Deno.Command(`${PROJECT_DIR}${OUTPUT}`, {
      args: ["--version"],
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).output();
    const said = new TextDecoder().decode(version.stdout).trim();
    if (!version.success || !said.startsWith("sandflare ")) {
      await Deno.remove(`${PROJECT_DIR}${OUTPUT}`).catch(() => {});
      await Deno.remove(`${PROJECT_DIR}dist`).catch(() => {}); // if empty
      say(
        Deno.stderr,
        `compile: failed: the built executable does not run Sandflare (\`--version\` said ${
          JSON.stringify(said.split("\n")[0] ?? "")
        }); DENORT_BIN must name a denort runtime, not the deno CLI`,
      );
      return 1;
    }
    say(
      Deno.stdout,
      `compile: built ${OUTPUT} (${said}, ${mib})`,
    );
    return 0;
  }
  // Leftovers of an interrupted write (deno compile writes OUTPUT.tmp-*).
  try {
    for await (const entry of Deno.readDir(`${PROJECT_DIR}dist`)) {
      if (entry.name.startsWith("sandflare.tmp-")) {
        await Deno.remove(`${PROJECT_DIR}dist/${entry.name}`).catch(() => {});
      }
    }
  } catch {
    // No dist/ (any more): nothing to tidy.
  }
  // dist/ itself, if this run created it and left it empty.
  await Deno.remove(`${PROJECT_DIR}dist`).catch(() => {});
  const problem = runtimeProblem(stderr, Deno.env.get("DENORT_BIN"));
  if (problem !== null) {
    say(Deno.stderr, problem);
    return 1;
  }
  // Anything else (a type error, a bad flag): the compiler's own message,
  // without its backtrace.
  const message = `${stdout}${stderr}`.replace(
    /\n*Stack backtrace:\n(?:\s+\d+:.*\n?|\s+at .*\n?)*/g,
    "\n",
  ).trimEnd();
  if (message !== "") say(Deno.stderr, message);
  say(Deno.stderr, `compile: failed: deno compile exited with ${out.code}`);
  return 1;
}

if (import.meta.main) Deno.exit(await main());
