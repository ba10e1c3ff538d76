/**
 * Sandflare: a multi-site web server for Deno with a sandbox per site.
 *
 * `main.ts COMMAND [OPTIONS]`; see `main.ts --help`. The internal command
 * `__sandbox` is how the gateway starts a site's sandbox process from this
 * same entry, so it works under `deno run` and in a compiled binary alike.
 *
 * @module
 */

if (import.meta.main) {
  if (Deno.args[0] === "__sandbox") {
    const { runSandbox } = await import("./src/sandbox/host.ts");
    Deno.exit(await runSandbox());
  }
  const { runCli } = await import("./src/cli/commands.ts");
  Deno.exit(await runCli(Deno.args));
}
