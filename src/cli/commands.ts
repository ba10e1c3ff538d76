/**
 * The commands of the CLI: dispatch, usage errors (exit 2), help, version.
 *
 * @module
 */

import denoJson from "../../deno.json" with { type: "json" };
import { log } from "../log.ts";
import { listen } from "./listen.ts";
import {
  grantCommand,
  mountCommand,
  sitesCommand,
  unmountCommand,
} from "./site_commands.ts";
import { formatHelp, parseListenOptions, UsageError } from "./options.ts";
import { initCommand, installSitesCommand } from "./setup_commands.ts";

/** The version of this Sandflare. */
export const VERSION: string = denoJson.version;

const COMMANDS = [
  "listen",
  "sites",
  "grant",
  "install",
  "init",
  "mount",
  "unmount",
] as const;

const USAGE = `Usage: sandflare COMMAND [OPTIONS]

Commands:
  listen [OPTIONS]         serve every site until SIGINT or SIGTERM
  sites [OPTIONS] [--json] load every site, print its hosts, routes, permissions
                           and problems; exit 1 if any fails to load
  grant SITE [--yes]       show what SITE's site.json asks for and what it is
                           granted; once confirmed, write the request into the
                           grants file (--grants=PATH, default sandflare.json
                           beside --sites-dir)
  install [SITE...]        install the dependencies of these sites (of every
                           site when none is named) into their caches under
                           --data-dir (default ./data) and write each one's
                           deno.lock; one line per site; exit 1 if one fails
  init NAME                make a new site NAME in --sites-dir: site.json, a
                           page in autorun/ar_NAME.ts and a deno.json
  mount PATH [NAME]        link the site folder PATH into --sites-dir as NAME
  unmount NAME             remove that link
  (sites, grant, install, init, mount and unmount take --sites-dir=PATH,
  default ./sites)

Run "deno task cli listen --help" (or "npm start -- --help") for the options of listen.`;

function print(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text + "\n"));
}

/**
 * Runs the CLI.
 * @param args the command line after the program name
 * @returns the exit code
 */
export async function runCli(args: string[]): Promise<number> {
  const [command, ...rest] = args;
  try {
    if (command === undefined || command === "-h" || command === "--help") {
      print(USAGE);
      return command === undefined ? 2 : 0;
    }
    if (command === "-v" || command === "--version") {
      print(`sandflare ${VERSION}`);
      return 0;
    }
    switch (command) {
      case "listen": {
        const options = parseListenOptions(rest);
        if (options.help) {
          print(formatHelp());
          return 0;
        }
        if (options.version) {
          print(`sandflare ${VERSION}`);
          return 0;
        }
        return await listen(options);
      }
      case "sites": {
        const json = rest.includes("--json");
        const options = parseListenOptions(rest.filter((a) => a !== "--json"));
        if (options.help) {
          print(USAGE);
          return 0;
        }
        return await sitesCommand(options, json);
      }
      case "grant": {
        const yes = rest.includes("--yes") || rest.includes("-y");
        const flags = rest.filter((a) =>
          a.startsWith("-") && a !== "--yes" && a !== "-y"
        );
        const positional = rest.filter((a) => !a.startsWith("-"));
        return await grantCommand(positional, parseListenOptions(flags), yes);
      }
      case "install":
      case "init": {
        const flags = rest.filter((a) => a.startsWith("-"));
        const positional = rest.filter((a) => !a.startsWith("-"));
        const options = parseListenOptions(flags);
        if (options.help) {
          print(USAGE);
          return 0;
        }
        return command === "install"
          ? await installSitesCommand(positional, options)
          : await initCommand(positional, options);
      }
      case "mount":
      case "unmount": {
        const flags = rest.filter((a) => a.startsWith("-"));
        const positional = rest.filter((a) => !a.startsWith("-"));
        const { sitesDir } = parseListenOptions(flags);
        return command === "mount"
          ? await mountCommand(positional, sitesDir)
          : await unmountCommand(positional, sitesDir);
      }
      default:
        throw new UsageError(
          `Unknown command ${JSON.stringify(command)}; valid commands: ${
            COMMANDS.join(", ")
          }`,
        );
    }
  } catch (err) {
    if (err instanceof UsageError) {
      log.error(null, err.message);
      return 2;
    }
    throw err;
  }
}
