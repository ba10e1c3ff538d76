/**
 * `sandflare sites`, `mount` and `unmount`: look at the sites without
 * serving them, and link site folders into `--sites-dir`.
 *
 * @module
 */

import { Containment } from "../supervisor/containment.ts";
import { basename, join, resolve } from "node:path";
import { Gateway } from "../gateway/gateway.ts";
import type { SiteDescription } from "../supervisor/describe.ts";
import { gatewayOptions, grantsFileOf } from "./listen.ts";
import { escapeControl, safeJson } from "../shared/escape.ts";
import { log } from "../log.ts";
import {
  grantJson,
  GrantsError,
  netReachesServer,
  readGrants,
  resolveNetHosts,
  writeGrant,
} from "../supervisor/grants.ts";
import { ManifestError } from "../supervisor/manifest.ts";
import { readStates, type RunningStates } from "../supervisor/site_states.ts";
import { AUTORUN_RULE, readManifest } from "../supervisor/sites.ts";
import type { ListenOptions } from "./options.ts";
import { UsageError } from "./options.ts";

const NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

function print(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(text + "\n"));
}

/**
 * Renders `sites` as text for people; `running`: what the server running on
 * the same --data-dir says of them, if one does.
 */
export function formatSites(
  sites: SiteDescription[],
  running: RunningStates | null = null,
): string {
  const lines: string[] = [];
  for (const s of sites) {
    const where = s.root ? "(built-in root site)" : s.dir;
    const now = running?.sites[s.name];
    const nowLine = now === undefined ? [] : [
      `  running:     ${now.state} since ${now.since} (server pid ${
        running!.pid
      })`,
    ];
    if (!s.loaded) {
      lines.push(`${s.name}  ${where}`, `  NOT LOADED: ${s.problem}`);
      if (s.granted !== null) lines.push(grantedLine(s));
      lines.push(...notRunLines(s), ...nowLine, "");
      continue;
    }
    lines.push(`${s.name}  ${where}`);
    lines.push(
      `  hosts:       ${s.hosts.length === 0 ? "none" : s.hosts.join(", ")}`,
    );
    if (s.pages.length === 0) lines.push("  pages:       none");
    else {
      lines.push("  pages:");
      const width = Math.max(...s.pages.map((p) => p.method.length));
      for (const p of s.pages) {
        lines.push(
          `    ${p.method.padEnd(width)} ${p.route}${
            p.host === "*" ? "" : `  (host ${p.host})`
          }`,
        );
      }
    }
    if (s.staticFiles > 0) {
      lines.push(`  static:      ${s.staticFiles} file(s)`);
    }
    if (s.websockets.length > 0) {
      lines.push("  websockets:");
      for (const w of s.websockets) {
        lines.push(
          `    ${w.path}${
            w.protocol === null ? "" : ` (protocol ${w.protocol})`
          }${w.host === "*" ? "" : `  (host ${w.host})`}`,
        );
      }
    }
    const p = s.permissions!;
    const env = p.env === true
      ? "all"
      : p.env === false
      ? "none"
      : p.env.join(", ");
    lines.push(
      `  asks for:    read ${p.read.join(", ")}; write ${
        p.write.join(", ") || "none"
      }; net ${p.net.join(", ") || "none"}; env ${env}`,
    );
    lines.push(
      `  sandbox:     ${s.workers} worker(s), ${s.memory} MiB of memory, ${s.disk} MiB of disk`,
    );
    if (s.kv !== null) lines.push(`  kv:          ${s.kv} (Deno KV)`);
    if (s.granted !== null) lines.push(grantedLine(s));
    lines.push(...notRunLines(s), ...nowLine, "");
  }
  // Every field but the labels came from a site: escape what a terminal acts on.
  return lines.map(escapeControl).join("\n").trimEnd();
}

/** The files of a site's autorun/ that are not run, and why. */
function notRunLines(s: SiteDescription): string[] {
  if (s.notRun.length === 0) return [];
  return [`  not run:     ${s.notRun.join(", ")} (${AUTORUN_RULE})`];
}

/** What the operator grants a site, on one line. */
function grantedLine(s: SiteDescription): string {
  const g = s.granted!;
  const list = (items: string[]) => items.join(", ") || "none";
  return `  granted:     ${s.listed ? "" : "(not listed) "}hosts ${
    list(g.hosts)
  }; read ${list(g.permissions.read)}; write ${
    list(g.permissions.write)
  }; net ${list(g.permissions.net)}; env ${
    list(g.permissions.env)
  }; up to ${g.workers} worker(s), ${g.memory} MiB of memory, ${g.disk} MiB of disk, ${g.requestTimeout} s`;
}

/**
 * `sites`: loads every site as `listen` would (each in its sandbox), prints
 * what it registered and may do, and stops them.
 * @returns 0 when every site loaded, 1 otherwise
 */
export async function sitesCommand(
  options: ListenOptions,
  json: boolean,
): Promise<number> {
  const operators = () => false;
  const address = {
    hostname: options.host === "*" ? "0.0.0.0" : options.host,
    port: options.port,
  };
  const gateway = new Gateway(
    gatewayOptions(options, {
      trustedProxies: null,
      operators,
      containment: new Containment({ cgroups: options.cgroups }),
    }, { address }),
  );
  let sites: SiteDescription[];
  try {
    await gateway.start();
    sites = gateway.sites.describe();
  } catch (err) {
    if (!(err instanceof GrantsError)) throw err;
    log.error(null, err.message);
    return 2;
  } finally {
    await gateway.stop(1000);
  }
  // Read after loading: a server started meanwhile is shown as it is now.
  const running = await readStates(options.dataDir, options.sitesDir);
  print(
    json
      ? safeJson({
        sites: sites.map((s) => ({
          ...s,
          running: running?.sites[s.name] ?? null,
        })),
        serverPid: running?.pid ?? null,
      }, 2)
      : formatSites(sites, running),
  );
  return sites.every((s) => s.loaded) ? 0 : 1;
}

/**
 * `mount PATH NAME`: links the folder PATH into the sites folder as NAME.
 * @returns the exit code
 */
export async function mountCommand(
  args: string[],
  sitesDir: string,
): Promise<number> {
  const [
    path,
    name = path === undefined ? undefined : basename(resolve(path)),
  ] = args;
  if (path === undefined || args.length > 2) {
    throw new UsageError(
      "Usage: mount PATH [NAME] — link the site folder PATH into --sites-dir as NAME",
    );
  }
  if (name === undefined || !NAME_REGEXP.test(name) || name === "root") {
    throw new UsageError(
      `Invalid site name ${
        JSON.stringify(name)
      }: use letters, digits, ".", "_" or "-" (at most 64, not "root")`,
    );
  }
  let target: string;
  try {
    target = await Deno.realPath(path);
    if (!(await Deno.stat(target)).isDirectory) throw new Error("not a folder");
  } catch {
    log.error(null, `Cannot mount ${JSON.stringify(path)}: it is not a folder`);
    return 1;
  }
  const link = join(sitesDir, name);
  try {
    await Deno.lstat(link);
    log.error(
      null,
      `Cannot mount as ${
        JSON.stringify(name)
      }: ${link} already exists; unmount it or pick another name`,
    );
    return 1;
  } catch (err) {
    if (!(err instanceof Deno.errors.NotFound)) throw err;
  }
  await Deno.mkdir(sitesDir, { recursive: true });
  await Deno.symlink(target, link);
  log.info(name, `Mounted ${target} as ${link}`);
  return 0;
}

/**
 * `unmount NAME`: removes the link NAME from the sites folder (never a real
 * folder).
 * @returns the exit code
 */
export async function unmountCommand(
  args: string[],
  sitesDir: string,
): Promise<number> {
  const [name] = args;
  if (name === undefined || args.length > 1) {
    throw new UsageError("Usage: unmount NAME");
  }
  if (!NAME_REGEXP.test(name)) {
    throw new UsageError(`Invalid site name ${JSON.stringify(name)}`);
  }
  const link = join(sitesDir, name);
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(link);
  } catch {
    log.error(
      null,
      `Cannot unmount ${JSON.stringify(name)}: there is no ${link}`,
    );
    return 1;
  }
  if (!info.isSymlink) {
    log.error(
      null,
      `Cannot unmount ${
        JSON.stringify(name)
      }: ${link} is a folder, not a link made by mount; remove it yourself`,
    );
    return 1;
  }
  await Deno.remove(link);
  log.info(name, `Unmounted ${link}`);
  return 0;
}

/**
 * `grant SITE [--yes]`: shows what a site's site.json asks for and what it
 * is granted now, and once confirmed (or with --yes) writes the request
 * into the grants file as that site's grant. A running server picks it up.
 * @returns the exit code
 */
export async function grantCommand(
  args: string[],
  options: ListenOptions,
  yes: boolean,
): Promise<number> {
  const [name] = args;
  if (name === undefined || args.length > 1) {
    throw new UsageError("Usage: grant SITE [--yes] [--sites-dir=PATH]");
  }
  if (!NAME_REGEXP.test(name) || name === "root") {
    throw new UsageError(`Invalid site name ${JSON.stringify(name)}`);
  }
  const file = grantsFileOf(options);
  if (file === null) {
    throw new UsageError(
      "grant writes the grants file: leave out --grant-requests",
    );
  }
  let dir: string;
  try {
    dir = await Deno.realPath(join(options.sitesDir, name));
  } catch {
    log.error(null, `No site folder ${join(options.sitesDir, name)}`);
    return 1;
  }
  const manifestFile = join(dir, "site.json");
  let request;
  let grants;
  try {
    request = await readManifest(manifestFile, dir);
    grants = await readGrants(file);
  } catch (err) {
    if (err instanceof ManifestError || err instanceof GrantsError) {
      log.error(name, err.message);
      return 2;
    }
    throw err;
  }
  const previous = grants.sites.get(name) ?? null;
  // What would reach this server is never written for the operator by a
  // yes: it must be written out by hand, knowingly.
  const server = {
    hostname: options.host === "*" ? "0.0.0.0" : options.host,
    port: options.port,
  };
  const resolved = await resolveNetHosts(request.permissions.net);
  const reaching = request.permissions.net.filter((entry) =>
    netReachesServer(entry, server, resolved)
  );
  const grant = grantJson(
    {
      ...request,
      permissions: {
        ...request.permissions,
        net: request.permissions.net.filter((e) => !reaching.includes(e)),
      },
    },
    dir,
    previous,
  );
  const show = (value: unknown) =>
    JSON.stringify(value, null, 2).split("\n").map(escapeControl).join("\n");
  print(escapeControl(`${name}: ${manifestFile} asks for`));
  print(show(grant));
  if (request.permissions.env === true) {
    print(
      '"env": true asks for the names the operator lists: ' +
        (previous === null || previous.permissions.env.length === 0
          ? `none yet; add them to "permissions.env" in ${file}`
          : `kept as granted (${previous.permissions.env.join(", ")})`),
    );
  }
  if (reaching.length > 0) {
    print(escapeControl(
      `Not written: permissions.net ${
        reaching.map((e) => JSON.stringify(e)).join(", ")
      } would reach this server itself (and /stats); if you mean it, write it in ${file} by hand`,
    ));
  }
  print(
    previous === null
      ? `It is not listed in ${file} now, so it gets the grant of unlisted sites.`
      : `It is granted now:\n${
        show({
          hosts: previous.hosts,
          permissions: previous.permissions,
          workers: previous.workers,
          requestTimeout: previous.requestTimeout,
          memory: previous.memory,
          disk: previous.disk,
        })
      }`,
  );
  if (!yes) {
    print(`Write this grant for ${name} into ${file}? [y/N]`);
    const answer = await readLine();
    if (answer === null || !/^y(es)?$/i.test(answer.trim())) {
      print("Nothing written.");
      return 1;
    }
  }
  await writeGrant(file, name, grant);
  log.info(
    name,
    `Granted in ${file}; a running server reloads the site within 2 s`,
  );
  return 0;
}

/** One line from standard input (a terminal or a pipe); null at its end. */
async function readLine(): Promise<string | null> {
  const buffer = new Uint8Array(256);
  let line = "";
  const decoder = new TextDecoder();
  while (line.length < 1024) {
    const n = await Deno.stdin.read(buffer);
    if (n === null) return line === "" ? null : line;
    line += decoder.decode(buffer.subarray(0, n), { stream: true });
    const end = line.indexOf("\n");
    if (end >= 0) return line.slice(0, end);
  }
  return line;
}
