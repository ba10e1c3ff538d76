/**
 * `--isolate=bwrap`: each sandbox also runs under bubblewrap, a second wall
 * for the day Deno's permissions have a hole. Its mount namespace shows
 * only what a sandbox needs:
 * - read-only: the system's libraries (`/usr`, which Deno links against),
 *   the Deno binary, the server's runtime (`main.ts`, `deno.sandbox.jsonc`, `src/`),
 *   the site's folder (its `deno.lock` with it) and the import map written
 *   for a site with dependencies;
 * - writable: the site's writable folders, its own Deno cache folder, and a
 *   private `/tmp`;
 * - its own `/proc` (a PID namespace: it sees only itself) and a minimal
 *   `/dev`.
 *
 * It has no network namespace of the host's unless the site may use the
 * network (then also `/etc/resolv.conf`, `/etc/hosts` and the TLS
 * certificates), no IPC or UTS of the host, no capabilities, no new
 * privileges (bubblewrap sets `PR_SET_NO_NEW_PRIVS`), a session of its own
 * (no terminal injection), and it dies with the gateway.
 *
 * @module
 */

import { join } from "node:path";
import { exists } from "./containment.ts";

/** How sandboxes are isolated beyond Deno's permissions. */
export type Isolation = "none" | "bwrap";

/** What a sandbox's namespace is made from. */
export interface IsolationSpec {
  /** The Deno binary. */
  exec: string;
  /** The server's folder (holding main.ts, deno.json and src/). */
  projectDir: string;
  /** The site's folder (read-only). */
  siteDir: string;
  /** Folders the site may write (bound writable; made when missing). */
  write: string[];
  /** The site's own Deno cache folder (writable). */
  cacheDir: string;
  /** The import map written for a site with dependencies (read-only), or null. */
  importMap: string | null;
  /** Whether the site may use the network at all. */
  net: boolean;
}

/** The command that runs `exec args` under bwrap, in the sandbox's namespace. */
export function bwrapCommand(
  spec: IsolationSpec,
  args: string[],
): { exec: string; args: string[] } {
  const out = [
    "--die-with-parent",
    "--new-session",
    "--unshare-ipc",
    "--unshare-pid",
    "--unshare-uts",
    "--unshare-cgroup-try",
    "--cap-drop",
    "ALL",
    "--ro-bind",
    "/usr",
    "/usr",
    // First: the binds below may be inside these (a site under /tmp).
    "--proc",
    "/proc",
    "--dev",
    "/dev",
    "--tmpfs",
    "/tmp",
  ];
  // Merged /usr (Debian): /lib, /lib64 and /bin are links into it.
  for (const link of ["lib", "lib64", "bin"]) {
    if (exists(`/usr/${link}`)) {
      out.push("--symlink", `usr/${link}`, `/${link}`);
    }
  }
  const readOnly = [
    spec.exec,
    join(spec.projectDir, "main.ts"),
    join(spec.projectDir, "deno.sandbox.jsonc"),
    join(spec.projectDir, "src"),
    spec.siteDir,
    // Its lockfile is in its folder.
    ...(spec.importMap === null ? [] : [spec.importMap]),
  ];
  const writable = [...spec.write, spec.cacheDir];
  if (spec.net) {
    readOnly.push(
      "/etc/resolv.conf",
      "/etc/hosts",
      "/etc/nsswitch.conf",
      "/etc/ssl",
      "/etc/ca-certificates",
    );
  } else {
    out.push("--unshare-net");
  }
  for (const path of readOnly) {
    if (exists(path)) out.push("--ro-bind", path, path);
  }
  for (const path of writable) {
    // A bind needs its source: the operator granted the folder, so it is
    // made, as the site could have made it itself.
    if (!exists(path)) Deno.mkdirSync(path, { recursive: true });
    out.push("--bind", path, path);
  }
  out.push("--chdir", spec.siteDir);
  // bwrap itself stays in the gateway's process group: a terminal's Ctrl-C
  // must not end it (the gateway decides when a sandbox stops). Ignored
  // signals stay ignored across exec.
  return {
    exec: "/bin/sh",
    args: [
      "-c",
      'trap "" INT TERM HUP && exec "$@"',
      "sandbox",
      "bwrap",
      ...out,
      spec.exec,
      ...args,
    ],
  };
}
