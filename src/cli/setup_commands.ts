/**
 * `sandflare install` and `init`: install sites' dependencies into the
 * caches a server reads them from, and start a new site.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { log } from "../log.ts";
import { escapeControl } from "../shared/escape.ts";
import { readSiteDependencies } from "../supervisor/dependencies.ts";
import { DependencyError, folderUrl } from "../supervisor/import_map.ts";
import {
  CLI_INSTALL_TIMEOUT_MS,
  installedText,
  type InstallResult,
  installSite,
} from "../supervisor/install.ts";
import { ManifestError } from "../supervisor/manifest.ts";
import {
  readAutorun,
  readManifest,
  ROOT_SITE,
  siteFolderNames,
} from "../supervisor/sites.ts";
import { installCommand, PROJECT_DIR } from "./listen.ts";
import type { ListenOptions } from "./options.ts";
import { UsageError } from "./options.ts";

const NAME_REGEXP = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
const NAME_RULE =
  'letters, digits, ".", "_" or "-", starting with a letter or digit, at most 64, not "root"';
const MIB = 1024 * 1024;

function print(text: string): void {
  Deno.stdout.writeSync(new TextEncoder().encode(escapeControl(text) + "\n"));
}

/**
 * `install [SITE…]`: installs the dependencies of the sites named (every
 * site of --sites-dir when none is) into their caches under --data-dir,
 * one line per site.
 * @returns 0 when every site installed (or had nothing to), 1 otherwise
 */
export async function installSitesCommand(
  names: string[],
  options: ListenOptions,
): Promise<number> {
  const sites = names.length > 0
    ? names
    : await siteFolderNames(options.sitesDir);
  if (sites.length === 0) {
    print(`No site folder in ${options.sitesDir}: nothing to install`);
    return 0;
  }
  let failed = false;
  for (const name of sites) {
    const result = await installOne(name, options);
    if (result.kind === "failed") failed = true;
    print(`${name}: ${describeResult(result)}`);
  }
  return failed ? 1 : 0;
}

function describeResult(result: InstallResult): string {
  switch (result.kind) {
    case "installed":
      return `installed ${installedText(result)}; its cache holds ${
        Math.ceil(result.bytes / MIB)
      } MiB`;
    case "nothing":
      return "nothing to install";
    case "failed":
      return `failed: ${result.reason}`;
    default:
      return result satisfies never;
  }
}

async function installOne(
  name: string,
  options: ListenOptions,
): Promise<InstallResult> {
  if (!NAME_REGEXP.test(name) || name === ROOT_SITE) {
    return {
      kind: "failed",
      reason: `${JSON.stringify(name)} is not a site name (${NAME_RULE})`,
    };
  }
  const folder = join(options.sitesDir, name);
  let dir: string;
  try {
    dir = await Deno.realPath(folder);
    if (!(await Deno.stat(dir)).isDirectory) throw new Error("not a folder");
  } catch {
    return { kind: "failed", reason: `there is no site folder ${folder}` };
  }
  try {
    const request = await readManifest(join(dir, "site.json"), dir);
    const dataDir = resolve(options.dataDir);
    return await installSite({
      site: name,
      siteDir: dir,
      scripts: (await readAutorun(join(dir, "autorun"))).scripts,
      deps: await readSiteDependencies(dir),
      projectDir: PROJECT_DIR,
      // As the server has them (src/cli/listen.ts).
      cacheDir: join(dataDir, "site-cache", name),
      configDir: join(dataDir, "site-config"),
      quotaMiB: request.disk,
      // A running server sees the lockfile change and loads the site.
      touchLock: true,
      timeoutMs: CLI_INSTALL_TIMEOUT_MS,
    });
  } catch (err) {
    if (err instanceof ManifestError || err instanceof DependencyError) {
      return { kind: "failed", reason: err.message };
    }
    throw err;
  }
}

/**
 * `init NAME`: makes a working site in --sites-dir: its request
 * (`site.json`), a page (`autorun/ar_NAME.ts`) and a `deno.json` that maps
 * `"sandflare"` to this server's script API, so that `deno check`, `deno
 * test` and editors work from the site's folder wherever it is copied.
 * @returns 0 once made; 1 when NAME is not a site name or is taken
 */
export async function initCommand(
  args: string[],
  options: ListenOptions,
): Promise<number> {
  const [name] = args;
  if (name === undefined || args.length > 1) {
    throw new UsageError("Usage: init NAME [--sites-dir=PATH]");
  }
  if (!NAME_REGEXP.test(name) || name === ROOT_SITE) {
    log.error(
      null,
      `Cannot create the site ${
        JSON.stringify(name)
      }: a site name is ${NAME_RULE}`,
    );
    return 1;
  }
  const dir = join(options.sitesDir, name);
  try {
    await Deno.mkdir(options.sitesDir, { recursive: true });
    // Not recursive: it fails if the folder is there, even made meanwhile.
    await Deno.mkdir(dir);
  } catch (err) {
    if (!(err instanceof Deno.errors.AlreadyExists)) throw err;
    log.error(
      null,
      `Cannot create the site ${
        JSON.stringify(name)
      }: ${dir} already exists; pick another name, or remove it first`,
    );
    return 1;
  }
  await Deno.mkdir(join(dir, "autorun"));
  const files = siteFiles(name);
  for (const [path, text] of Object.entries(files)) {
    await Deno.writeTextFile(join(dir, path), text);
  }
  print(`Created ${dir}: ${Object.keys(files).join(", ")}`);
  for (const line of nextSteps(name, dir, options)) print(line);
  return 0;
}

/** The files of a new site, by path in its folder. */
export function siteFiles(name: string): Record<string, string> {
  const api = new URL("src/sandbox/api.ts", folderUrl(PROJECT_DIR)).href;
  const testing = new URL("src/testing/mod.ts", folderUrl(PROJECT_DIR)).href;
  const denoJson = {
    // For deno check, deno test and editors: the server maps "sandflare"
    // itself, whatever a site's deno.json says.
    imports: { "sandflare": api, "sandflare/testing": testing },
    // The site's deno.lock is written by `deno task cli install`, from what
    // its sandbox loads; deno check and deno test leave it alone.
    lock: false,
  };
  return {
    "site.json": JSON.stringify({ hosts: ["*"] }, null, 2) + "\n",
    "deno.json": JSON.stringify(denoJson, null, 2) + "\n",
    [`autorun/ar_${name}.ts`]: `import { hosts, html } from "sandflare";

// A page for every host no site owns (site.json asks for "*").
hosts.any.add(${JSON.stringify(`/${name}`)}, (req) =>
  html\`<!doctype html>
<title>${name}</title>
<h1>${name}</h1>
<p>Hello \${req.peer}, from the site ${name}.</p>\`);
`,
    [`${name}_test.ts`]:
      `// The site's own tests, run in its folder with: deno test -A
import assert from "node:assert/strict";
import { testSite } from "sandflare/testing";

Deno.test(${JSON.stringify(`the ${name} page`)}, async () => {
  await using site = await testSite(import.meta.dirname!);
  const res = await site.request(${JSON.stringify(`/${name}`)});
  assert.equal(res.status, 200);
  assert.ok((await res.text()).includes(${
        JSON.stringify(`from the site ${name}.`)
      }));
});
`,
  };
}

function nextSteps(
  name: string,
  dir: string,
  options: ListenOptions,
): string[] {
  const flags = options.sitesDir === "./sites"
    ? ""
    : ` --sites-dir=${options.sitesDir}`;
  const steps = [
    "Next:",
    ...(options.grantRequests ? [] : [
      `  grant it what its site.json asks for: deno task cli grant ${name}${flags}`,
    ]),
    `  its page, once the server runs (deno task start${flags}): http://localhost:${options.port}/${name}`,
    `  a dependency: add it to the "imports" of ${
      join(dir, "deno.json")
    }, such as "marked": "npm:marked@15.0.12", then run: ${
      installCommand(name, options)
    }`,
    `  type-check it, from its folder: deno check autorun/`,
    `  its tests (${name}_test.ts and other *_test.ts files, with testSite from "sandflare/testing"), from its folder: deno test -A`,
  ];
  return steps;
}
