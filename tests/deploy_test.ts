/**
 * deploy/: the systemd unit passes `systemd-analyze verify` and its
 * ExecStart, run as systemd would run it (with a notify socket), serves with
 * exactly its permissions; nginx.conf passes `nginx -t` and haproxy.cfg
 * `haproxy -c`, and both carry real traffic to that server; the cluster
 * configs pass the same checks and spread traffic over two stand-in nodes,
 * leaving out one that fails; the Containerfile runs the same flags; nothing
 * uses -A. And `deno task compile` either builds dist/sandflare or says in
 * one line why it cannot.
 *
 * Needs systemd-analyze (package systemd), nginx and haproxy; `.ci/run`
 * installs them. A missing tool fails the test, naming the package.
 */

import assert from "node:assert/strict";
import { join } from "node:path";
import {
  curl,
  freePort,
  nginxConfig as nginxMain,
  nginxPath,
} from "./helpers/nginx.ts";
import { delay, PROJECT_DIR, writeSites } from "./helpers/server.ts";
import { localHaproxyConfig, replaceOnce } from "./helpers/haproxy.ts";

const DEPLOY = join(PROJECT_DIR, "deploy");
const UNIT = join(DEPLOY, "sandflare.service");
const VERSION = JSON.parse(
  Deno.readTextFileSync(join(PROJECT_DIR, "deno.json")),
).version as string;

/** The absolute path of a tool from a Debian package; fails loudly if absent. */
function tool(name: string, debianPackage: string): string {
  for (const dir of ["/usr/sbin", "/usr/bin", "/sbin", "/bin"]) {
    try {
      Deno.statSync(join(dir, name));
      return join(dir, name);
    } catch {
      // Try the next.
    }
  }
  throw new Error(
    `${name} is not installed: run \`apt-get install ${debianPackage}\` (.ci/run does)`,
  );
}

async function run(
  cmd: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> } = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command(cmd, {
    args,
    cwd: options.cwd ?? PROJECT_DIR,
    env: { NO_COLOR: "1", ...options.env },
    stdin: "null",
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}

// ---------------------------------------------------------------------------
// The unit file, parsed.

/** A unit file: section → key → every value given (in order). */
type Unit = Map<string, Map<string, string[]>>;

function parseUnit(text: string): Unit {
  const unit: Unit = new Map();
  let section: Map<string, string[]> | undefined;
  const lines = text.replace(/\\\n/g, " ").split("\n");
  for (const raw of lines) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#") || line.startsWith(";")) continue;
    const header = /^\[(.+)\]$/.exec(line);
    if (header !== null) {
      section = new Map();
      unit.set(header[1]!, section);
      continue;
    }
    const eq = line.indexOf("=");
    assert.ok(eq > 0 && section !== undefined, `bad unit line: ${line}`);
    const key = line.slice(0, eq).trim();
    const value = line.slice(eq + 1).trim().replace(/\s+/g, " ");
    section.set(key, [...(section.get(key) ?? []), value]);
  }
  return unit;
}

function one(unit: Unit, section: string, key: string): string {
  const values = unit.get(section)?.get(key);
  assert.ok(values !== undefined, `[${section}] ${key}= is missing`);
  return values[values.length - 1]!;
}

/** Environment= of the unit (NAME=value, no quoting used). */
function unitEnvironment(unit: Unit): Record<string, string> {
  const env: Record<string, string> = {};
  for (const entry of unit.get("Service")?.get("Environment") ?? []) {
    const eq = entry.indexOf("=");
    env[entry.slice(0, eq)] = entry.slice(eq + 1);
  }
  return env;
}

/** ExecStart= split into words, `$NAME` expanded as systemd does. */
function execStart(unit: Unit): string[] {
  const line = one(unit, "Service", "ExecStart");
  assert.doesNotMatch(line, /["'\\]/, "ExecStart is parsed without quoting");
  const env = unitEnvironment(unit);
  return line.split(" ").flatMap((word) => {
    const variable = /^\$([A-Z_]+)$/.exec(word);
    if (variable === null) return [word];
    return (env[variable[1]!] ?? "").split(" ").filter((w) => w !== "");
  });
}

/** The runtime flags of a `deno run` command line: between "run" and main.ts. */
function denoFlags(argv: string[]): string[] {
  const start = argv.indexOf("run");
  const main = argv.findIndex((a) => a.endsWith("/main.ts"));
  assert.ok(start >= 0 && main > start, `not a deno run line: ${argv}`);
  return argv.slice(start + 1, main);
}

function flagValue(flags: string[], name: string): string | undefined {
  return flags.find((f) => f === name || f.startsWith(`${name}=`));
}

const ALLOW_ALL = /(^|[\s"'[,=])(-A|--allow-all)(?=$|[\s"',\]])/m;

/** The lines of a file that are not comments (markdown: only code blocks). */
function commandText(name: string, text: string): string {
  if (name.endsWith(".md")) {
    return [...text.matchAll(/```[^\n]*\n([\s\S]*?)```/g)]
      .map((m) => m[1])
      .join("\n");
  }
  return text.split("\n").filter((l) => !/^\s*#/.test(l)).join("\n");
}

Deno.test("deploy/: no -A or --allow-all anywhere, and never SIGUSR1", async () => {
  const names: string[] = [];
  for await (const entry of Deno.readDir(DEPLOY)) {
    if (!entry.isFile) continue;
    names.push(entry.name);
    const text = await Deno.readTextFile(join(DEPLOY, entry.name));
    assert.doesNotMatch(
      commandText(entry.name, text),
      ALLOW_ALL,
      `deploy/${entry.name} grants every permission`,
    );
    assert.doesNotMatch(
      commandText(entry.name, text),
      /(kill|-s|--signal)\s+-?(SIG)?USR1/,
      `deploy/${entry.name} sends SIGUSR1 (opens Deno's inspector)`,
    );
  }
  for (
    const expected of [
      "sandflare.service",
      "nginx.conf",
      "haproxy.cfg",
      "nginx-cluster.conf",
      "haproxy-cluster.cfg",
      "Containerfile",
      "README.md",
    ]
  ) {
    assert.ok(names.includes(expected), `deploy/${expected} is missing`);
  }
  const { compileArgs } = await import("../tools/compile.ts");
  assert.doesNotMatch(compileArgs().join(" "), ALLOW_ALL);
  // The check itself catches both spellings.
  assert.match(commandText("x", "deno run -A main.ts"), ALLOW_ALL);
  assert.match(commandText("x", '["deno", "--allow-all"]'), ALLOW_ALL);
  assert.doesNotMatch(commandText("x", "--allow-env -Av"), ALLOW_ALL);
});

// ---------------------------------------------------------------------------

Deno.test("deploy/sandflare.service", async (t) => {
  const text = await Deno.readTextFile(UNIT);
  const unit = parseUnit(text);

  await t.step("has the service settings the deployment relies on", () => {
    const expected: Record<string, string> = {
      Type: "notify",
      NotifyAccess: "main",
      WatchdogSec: "30",
      Restart: "on-failure",
      User: "sandflare",
      ProtectSystem: "strict",
      ProtectHome: "true",
      PrivateTmp: "true",
      NoNewPrivileges: "true",
      StateDirectory: "sandflare",
      RuntimeDirectory: "sandflare",
      KillSignal: "SIGTERM",
      KillMode: "mixed",
      TimeoutStopSec: "15",
      ExecReload: "/bin/kill -HUP $MAINPID",
      WorkingDirectory: "/opt/sandflare",
    };
    for (const [key, value] of Object.entries(expected)) {
      assert.equal(one(unit, "Service", key), value, `${key}=`);
    }
    assert.match(one(unit, "Service", "RestartSec"), /^\d+/);
    assert.equal(unit.get("Service")?.has("DynamicUser"), false);
    assert.ok(
      one(unit, "Service", "ReadWritePaths").split(" ").includes(
        "/var/lib/sandflare",
      ),
    );
    assert.equal(
      unitEnvironment(unit).DENO_DIR,
      "/var/cache/sandflare/deno",
    );
    assert.equal(one(unit, "Install", "WantedBy"), "multi-user.target");
    assert.doesNotMatch(text, /MemoryDenyWriteExecute=(yes|true)/);
  });

  await t.step(
    "ExecStart spells out every permission, scoped where it can",
    () => {
      const argv = execStart(unit);
      assert.equal(argv[0], "/usr/local/bin/deno");
      const flags = denoFlags(argv);
      for (
        const flag of [
          "--unstable-net",
          "--no-prompt",
          "--cached-only",
          "--config=/opt/sandflare/deno.json",
          "--v8-flags=--enable-experimental-regexp-engine",
          "--allow-net",
          "--allow-write=/var/lib/sandflare,/run/sandflare,/run/systemd/notify",
          "--allow-run=/usr/local/bin/deno",
          "--allow-env",
          "--allow-sys=hostname",
        ]
      ) {
        assert.ok(flags.includes(flag), `ExecStart lacks ${flag}`);
      }
      const read = flagValue(flags, "--allow-read")?.split("=")[1]?.split(",");
      assert.deepEqual(
        read?.toSorted(),
        [
          "/etc/mime.types",
          "/etc/sandflare",
          "/opt/sandflare",
          "/proc/uptime",
          "/run/sandflare",
          "/srv/sandflare/sites",
          "/var/lib/sandflare",
        ],
      );
      // Unscoped only where README.md says why: sites may be granted any
      // variable; the sd_notify socket's own path holds the process ID.
      for (const flag of flags.filter((f) => f.startsWith("--allow-"))) {
        if (flag === "--allow-env" || flag === "--allow-net") continue;
        assert.match(flag, /^--allow-[a-z]+=./, `${flag} is not scoped`);
      }
      // The host name only: a cluster node's default id.
      assert.equal(flagValue(flags, "--allow-sys"), "--allow-sys=hostname");
      assert.equal(flagValue(flags, "--allow-ffi"), undefined);
      const listen = argv.slice(argv.indexOf("listen"));
      for (
        const option of [
          "--systemd",
          "--reverse-proxy",
          "--host=127.0.0.1",
          "--port=8080",
          "--sites-dir=/srv/sandflare/sites",
          "--grants=/etc/sandflare/sandflare.json",
          "--data-dir=/var/lib/sandflare",
          "--x-accel-redirect",
        ]
      ) {
        assert.ok(listen.includes(option), `listen lacks ${option}`);
      }
    },
  );

  await t.step("systemd-analyze verify finds nothing to say", async () => {
    const analyze = tool("systemd-analyze", "systemd");
    const dir = await Deno.makeTempDir({ prefix: "sandflare-unit-" });
    try {
      // verify checks that ExecStart's program exists: point it at this Deno.
      const copy = join(dir, "sandflare.service");
      await Deno.writeTextFile(
        copy,
        text.replaceAll("/usr/local/bin/deno", Deno.execPath()),
      );
      const ok = await run(analyze, ["verify", copy]);
      const complaints = `${ok.stdout}${ok.stderr}`.split("\n")
        .filter((l) => l.includes("sandflare"));
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.deepEqual(complaints, []);

      // The check has teeth: verify names a typo in the unit.
      const bad = join(dir, "bad.service");
      await Deno.writeTextFile(
        bad,
        text.replaceAll("/usr/local/bin/deno", Deno.execPath())
          .replace("ProtectSystem=strict", "ProtectSystem=strictest")
          .replace("WatchdogSec=30", "WatchdogSecs=30"),
      );
      const caught = await run(analyze, ["verify", bad]);
      assert.match(caught.stderr, /bad\.service:\d+: .*strictest/);
      assert.match(caught.stderr, /WatchdogSecs/);

      // And the hardening adds up (systemd's own 0–10 exposure score).
      const security = await run(analyze, [
        "security",
        "--offline=true",
        copy,
      ]);
      const score = /Overall exposure level for sandflare\.service: ([\d.]+)/
        .exec(security.stdout + security.stderr);
      assert.ok(score !== null, security.stdout + security.stderr);
      assert.ok(Number(score[1]) <= 2, `exposure ${score[1]}`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  });
});

// ---------------------------------------------------------------------------
// Real traffic: the unit's own command line, nginx and haproxy in front.

const SITES = {
  front: {
    "site.json": JSON.stringify({ hosts: ["*"] }),
    "files/report.txt": "the report body\n",
    "autorun/ar_front.ts": `
import { hosts, websocket } from "sandflare";
hosts.any.add("/peer", (req) => req.peer);
hosts.any.add("/download", (_req, res) => res.setFile("files/report.txt"));
const echo = websocket.register("/echo");
echo.onMessage = (client, message) => client.send(message);
`,
  },
};

/** Receives sd_notify datagrams, as systemd would. */
class NotifySocket {
  readonly path: string;
  readonly messages: string[] = [];
  #socket: Deno.DatagramConn;
  #loop: Promise<void>;

  constructor(path: string) {
    this.path = path;
    const socket = Deno.listenDatagram({ path, transport: "unixpacket" });
    this.#socket = socket;
    this.#loop = (async () => {
      try {
        for await (const [bytes] of socket) {
          this.messages.push(new TextDecoder().decode(bytes));
        }
      } catch {
        // Closed.
      }
    })();
  }

  /** Waits for a message starting with `prefix` after the first `after`. */
  async next(prefix: string, after = 0, timeoutMs = 20_000): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const i = this.messages.findIndex((m, n) =>
        n >= after && m.startsWith(prefix)
      );
      if (i >= 0) return i;
      await delay(20);
    }
    throw new Error(
      `no ${prefix} from the server; got ${JSON.stringify(this.messages)}`,
    );
  }

  async close(): Promise<void> {
    this.#socket.close();
    await this.#loop;
  }
}

/** The unit's ExecStart with its paths and port moved into `dir`. */
function localExecStart(
  unit: Unit,
  paths: {
    sites: string;
    data: string;
    run: string;
    notify: string;
    etc: string;
  },
  port: number,
): string[] {
  const replacements: [string, string][] = [
    ["/usr/local/bin/deno", Deno.execPath()],
    ["/opt/sandflare", PROJECT_DIR.replace(/\/$/, "")],
    ["/etc/sandflare", paths.etc],
    ["/srv/sandflare/sites", paths.sites],
    ["/var/lib/sandflare", paths.data],
    ["/run/sandflare", paths.run],
    ["/run/systemd/notify", paths.notify],
    ["--port=8080", `--port=${port}`],
  ];
  return execStart(unit).map((word) => {
    for (const [from, to] of replacements) word = word.replaceAll(from, to);
    return word;
  });
}

async function waitForPort(
  port: number,
  what: string,
  log: () => string,
): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (true) {
    try {
      (await Deno.connect({ hostname: "127.0.0.1", port })).close();
      return;
    } catch {
      if (Date.now() > deadline) {
        throw new Error(`${what} did not start: ${log()}`);
      }
      await delay(20);
    }
  }
}

/** Collects a child's stderr (and stdout) as text. */
function collect(
  child: Deno.ChildProcess,
): { text: string; done: Promise<void> } {
  const state = { text: "", done: Promise.resolve() };
  const read = async (stream: ReadableStream<Uint8Array>) => {
    for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
      state.text += chunk;
    }
  };
  state.done = Promise.all([read(child.stdout), read(child.stderr)]).then(
    () => {},
  );
  return state;
}

/** What nginx gets: deploy/nginx.conf (or `file`) in a minimal http {} block. */
async function nginxConfig(
  dir: string,
  rewrite: (conf: string) => string,
  file = "nginx.conf",
): Promise<string> {
  const site = join(dir, "sandflare.conf");
  await Deno.writeTextFile(
    site,
    rewrite(
      (await Deno.readTextFile(join(DEPLOY, file)))
        .replaceAll("/var/log/nginx/", `${dir}/`),
    ),
  );
  const main = join(dir, "nginx.conf");
  await Deno.writeTextFile(main, nginxMain(dir, `  include ${site};`));
  return main;
}

/** `haproxy -c` on a config from deploy/: valid, without a warning. */
async function haproxyCheck(haproxy: string, file: string): Promise<void> {
  const out = await run(haproxy, ["-c", "-f", join(DEPLOY, file)]);
  assert.equal(out.code, 0, out.stdout + out.stderr);
  assert.match(out.stdout, /Configuration file is valid/);
  assert.doesNotMatch(out.stdout + out.stderr, /WARNING|ALERT|Warnings/);
}

/** `nginx -t` on a config from deploy/, in a fresh folder `test`. */
async function nginxTest(
  nginx: string,
  test: string,
  file: string,
): Promise<void> {
  await Deno.mkdir(test);
  const conf = await nginxConfig(test, (c) => c, file);
  const out = await run(nginx, [
    "-t",
    "-p",
    test,
    "-e",
    join(test, "error.log"),
    "-c",
    conf,
  ]);
  assert.equal(out.code, 0, out.stderr);
  assert.match(out.stderr, /test is successful/);
  assert.doesNotMatch(out.stderr, /\[(warn|emerg|alert|crit)\]/);
}

/** Sends a text over a websocket and returns what comes back (within 5 s). */
async function echoOver(url: string, message: string): Promise<string> {
  const ws = new WebSocket(url);
  // Listened for from the start: a socket that fails closes at once.
  const closed = new Promise((r) => ws.onclose = r);
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    // Bounded: a proxy that drops the Upgrade header may leave it hanging.
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no echo from ${url}`)), 5000);
    });
    const opened = new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = () => reject(new Error(`websocket ${url} failed`));
    });
    opened.catch(() => {}); // once the timeout has won
    await Promise.race([opened, timeout]);
    const reply = new Promise<string>((resolve) => {
      ws.onmessage = (e) => resolve(String(e.data));
    });
    ws.send(message);
    return await Promise.race([reply, timeout]);
  } finally {
    clearTimeout(timer);
    ws.close();
    await closed;
  }
}

Deno.test("the unit's ExecStart serves behind deploy/nginx.conf and deploy/haproxy.cfg", async (t) => {
  const nginx = nginxPath();
  const haproxy = tool("haproxy", "haproxy");
  const unit = parseUnit(await Deno.readTextFile(UNIT));
  const sites = await writeSites(SITES);
  const dir = await Deno.makeTempDir({ prefix: "sandflare-deploy-" });
  const paths = {
    sites,
    data: join(dir, "data"),
    run: join(dir, "run"),
    notify: join(dir, "notify.sock"),
    etc: join(dir, "etc"),
  };
  await Deno.mkdir(paths.data);
  await Deno.mkdir(paths.run);
  await Deno.mkdir(paths.etc);
  // The operator's grants, where the unit reads them.
  await Deno.writeTextFile(
    join(paths.etc, "sandflare.json"),
    JSON.stringify({ sites: { front: { hosts: ["*"] } } }),
  );
  const notify = new NotifySocket(paths.notify);
  const port = freePort();
  const argv = localExecStart(unit, paths, port);
  // The environment systemd gives a Type=notify service with WatchdogSec=
  // and RuntimeDirectory= (the watchdog made short to see a heartbeat).
  const env = unitEnvironment(unit);
  delete env.DENO_DIR; // this machine's cache, not /var/cache/sandflare/deno
  delete env.SANDFLARE_OPTIONS;
  const server = new Deno.Command(argv[0]!, {
    args: argv.slice(1),
    cwd: PROJECT_DIR,
    env: {
      ...env,
      NOTIFY_SOCKET: notify.path,
      WATCHDOG_USEC: "1000000",
      RUNTIME_DIRECTORY: paths.run,
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const serverLog = collect(server);
  const children: { child: Deno.ChildProcess; signal: Deno.Signal }[] = [];
  const origin = `http://127.0.0.1:${port}`;
  try {
    await t.step(
      "READY=1 once the sites have loaded; WATCHDOG=1 heartbeats",
      async () => {
        await notify.next("READY=1").catch((err) => {
          throw new Error(`${err.message}\nserver log:\n${serverLog.text}`);
        });
        const res = await fetch(`${origin}/peer`, {
          headers: { "X-Real-IP": "192.0.2.7" },
        });
        assert.equal(await res.text(), "192.0.2.7"); // 127.0.0.1 is trusted
        await notify.next("WATCHDOG=1");
        // --x-accel-redirect came in through $SANDFLARE_OPTIONS.
        const file = await fetch(`${origin}/download`);
        await file.body?.cancel();
        assert.match(file.headers.get("x-accel-redirect") ?? "", /^\/\.\//);
      },
    );

    await t.step("nginx -t accepts deploy/nginx.conf", async () => {
      await nginxTest(nginx, join(dir, "nginx-t"), "nginx.conf");
    });

    await t.step(
      "through nginx: client address, X-Accel-Redirect, websockets",
      async () => {
        const ngDir = join(dir, "nginx");
        await Deno.mkdir(ngDir);
        const ngPort = freePort();
        const conf = await nginxConfig(ngDir, (c) => {
          c = replaceOnce(c, "listen 80;", `listen 127.0.0.1:${ngPort};`);
          c = replaceOnce(c, "listen [::]:80;", "");
          return replaceOnce(
            c,
            "server 127.0.0.1:8080;",
            `server 127.0.0.1:${port};`,
          );
        });
        const child = new Deno.Command(nginx, {
          args: ["-p", ngDir, "-e", join(ngDir, "error.log"), "-c", conf],
          stdin: "null",
          stdout: "piped",
          stderr: "piped",
        }).spawn();
        children.push({ child, signal: "SIGQUIT" });
        const log = collect(child);
        await waitForPort(ngPort, "nginx", () => log.text);
        const via = `http://127.0.0.1:${ngPort}`;

        await checkClientAddress(via);
        const file = await curl([`${via}/download`]);
        assert.equal(file.stdout, "the report body\n", file.stderr);
        // A client cannot reach /./ (nginx resolves dot segments, and the
        // location is internal besides).
        const direct = await curl([
          "--path-as-is",
          "-o",
          "/dev/null",
          "-w",
          "%{http_code}",
          `${via}/./etc/passwd`,
        ]);
        assert.equal(direct.stdout, "404");
        assert.equal(
          await echoOver(`ws://127.0.0.1:${ngPort}/echo`, "through nginx"),
          "through nginx",
        );
      },
    );

    await t.step("haproxy -c accepts deploy/haproxy.cfg", async () => {
      await haproxyCheck(haproxy, "haproxy.cfg");
    });

    await t.step("through haproxy: client address, websockets", async () => {
      const hpPort = freePort();
      let cfg = localHaproxyConfig(
        await Deno.readTextFile(join(DEPLOY, "haproxy.cfg")),
        hpPort,
      );
      cfg = replaceOnce(
        cfg,
        "server sandflare1 127.0.0.1:8080 ",
        `server sandflare1 127.0.0.1:${port} `,
      );
      const file = join(dir, "haproxy.cfg");
      await Deno.writeTextFile(file, cfg);
      const child = new Deno.Command(haproxy, {
        args: ["-db", "-f", file],
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
      }).spawn();
      children.push({ child, signal: "SIGTERM" });
      const log = collect(child);
      await waitForPort(hpPort, "haproxy", () => log.text);
      const via = `http://127.0.0.1:${hpPort}`;

      await checkClientAddress(via, log.text);
      assert.equal(
        await echoOver(`ws://127.0.0.1:${hpPort}/echo`, "through haproxy"),
        "through haproxy",
      );
    });

    await t.step("SIGHUP (ExecReload): RELOADING=1, then READY=1", async () => {
      const before = notify.messages.length;
      server.kill("SIGHUP");
      const reloading = await notify.next("RELOADING=1", before);
      assert.match(notify.messages[reloading]!, /\nMONOTONIC_USEC=\d+/);
      await notify.next("READY=1", reloading);
      assert.equal(await (await fetch(`${origin}/peer`)).text(), "127.0.0.1");
    });

    await t.step(
      "SIGTERM (KillSignal): STOPPING=1, exit 0 within TimeoutStopSec",
      async () => {
        const before = notify.messages.length;
        const started = Date.now();
        server.kill("SIGTERM");
        const status = await server.status;
        await serverLog.done;
        assert.equal(status.code, 0, serverLog.text);
        assert.ok(Date.now() - started < 15_000);
        await notify.next("STOPPING=1", before, 1000);
        // Everything it wrote stayed in the data and runtime directories.
        assert.ok(
          (await Deno.stat(join(paths.data, "sessions.sqlite"))).isFile,
        );
        assert.doesNotMatch(serverLog.text, /NotCapable|Requires \w+ access/);
      },
    );
  } finally {
    try {
      server.kill("SIGKILL");
    } catch {
      // Already stopped.
    }
    await server.status;
    for (const { child, signal } of children) {
      try {
        child.kill(signal);
      } catch {
        // Gone.
      }
      await child.status;
    }
    await notify.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(sites, { recursive: true }).catch(() => {});
  }
});

// ---------------------------------------------------------------------------
// The cluster configs, in front of two stand-ins for Sandflare nodes.

/** A stand-in for one Sandflare node, on 127.0.0.1 (port 0). */
interface StandIn {
  name: string;
  port: number;
  /** What /.well-known/sandflare/health answers. */
  health: number;
  /** What every other path answers when not 200 (a failing node). */
  status: number;
  /** Requests other than health checks. */
  hits: number;
  /** The Host headers of the health checks. */
  checkHosts: Set<string>;
  stop(): Promise<void>;
}

/**
 * Answers the health endpoint with `health`, `/peer` with the X-Real-IP it
 * got, a websocket with each message prefixed by its name, anything else with
 * its name.
 */
function startStandIn(name: string): StandIn {
  const node: StandIn = {
    name,
    port: 0,
    health: 200,
    status: 200,
    hits: 0,
    checkHosts: new Set(),
    stop: () => Promise.resolve(),
  };
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, onListen() {} },
    (req) => {
      const url = new URL(req.url);
      if (url.pathname === "/.well-known/sandflare/health") {
        node.checkHosts.add(req.headers.get("host") ?? "");
        return new Response(null, { status: node.health });
      }
      node.hits++;
      if (node.status !== 200) {
        return new Response("failing", { status: node.status });
      }
      if (req.headers.get("upgrade") === "websocket") {
        const { socket, response } = Deno.upgradeWebSocket(req);
        socket.onmessage = (e) => socket.send(`${name}: ${e.data}`);
        return response;
      }
      if (url.pathname === "/peer") {
        return new Response(req.headers.get("x-real-ip") ?? "none");
      }
      return new Response(name);
    },
  );
  node.port = server.addr.port;
  let stopped: Promise<void> | undefined;
  node.stop = () => stopped ??= server.shutdown();
  return node;
}

/** GET through a proxy with curl: the status and the body. */
async function get(url: string): Promise<{ status: number; body: string }> {
  const out = await curl(["-w", "\n%{http_code}", url]);
  const cut = out.stdout.lastIndexOf("\n");
  return {
    status: Number(out.stdout.slice(cut + 1)),
    body: out.stdout.slice(0, cut),
  };
}

/** Which stand-in answered each of `n` requests to `/` (its name). */
async function answers(origin: string, n: number): Promise<string[]> {
  const names: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await get(`${origin}/`);
    names.push(res.status === 200 ? res.body : `${res.status}`);
  }
  return names;
}

/** Polls `check` every 100 ms until it holds, for at most `ms`. */
async function until(
  what: string,
  check: () => Promise<boolean> | boolean,
  ms = 10_000,
): Promise<number> {
  const started = Date.now();
  while (!(await check())) {
    if (Date.now() - started > ms) {
      throw new Error(`not within ${ms} ms: ${what}`);
    }
    await delay(100);
  }
  return Date.now() - started;
}

/** Starts nginx or haproxy and waits until it accepts on `port`. */
async function startProxy(
  cmd: string,
  args: string[],
  port: number,
  signal: Deno.Signal,
  children: { child: Deno.ChildProcess; signal: Deno.Signal }[],
): Promise<{ text: string }> {
  const child = new Deno.Command(cmd, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  children.push({ child, signal });
  const log = collect(child);
  await waitForPort(port, cmd, () => log.text);
  return log;
}

/**
 * The client address as the site sees it through a proxy at `via`: the
 * client's own, whatever X-Real-IP or X-Forwarded-For it sends.
 */
async function checkClientAddress(via: string, context = ""): Promise<void> {
  const peer = await curl(["--interface", "127.0.0.2", `${via}/peer`]);
  assert.equal(peer.stdout, "127.0.0.2", peer.stderr + context);
  const spoofed = await curl([
    "--interface",
    "127.0.0.2",
    "-H",
    "X-Real-IP: 203.0.113.9",
    "-H",
    "X-Forwarded-For: 203.0.113.9",
    `${via}/peer`,
  ]);
  assert.equal(spoofed.stdout, "127.0.0.2");
}

/** The client address and websockets, through a proxy on `port`. */
async function checkClientAndWebsocket(port: number): Promise<void> {
  await checkClientAddress(`http://127.0.0.1:${port}`);
  assert.match(
    await echoOver(`ws://127.0.0.1:${port}/echo`, "hello"),
    /^(a|b): hello$/,
  );
}

Deno.test("deploy/haproxy-cluster.cfg and nginx-cluster.conf: two nodes, one failing", async (t) => {
  const nginx = nginxPath();
  const haproxy = tool("haproxy", "haproxy");
  const dir = await Deno.makeTempDir({ prefix: "sandflare-cluster-" });
  const children: { child: Deno.ChildProcess; signal: Deno.Signal }[] = [];
  const nodes: StandIn[] = [];
  // Bounded: nginx's SIGQUIT waits for requests in flight (a test that
  // fails may leave one hanging), so after 5 s it gets SIGTERM (nginx stops
  // its workers at once), after 10 s SIGKILL.
  const stopChildren = async () => {
    for (const { child, signal } of children.splice(0)) {
      const kill = (sig: Deno.Signal) => {
        try {
          child.kill(sig);
        } catch {
          // Gone.
        }
      };
      kill(signal);
      const timers = [
        setTimeout(() => kill("SIGTERM"), 5000),
        setTimeout(() => kill("SIGKILL"), 10_000),
      ];
      await child.status;
      timers.forEach(clearTimeout);
    }
  };
  const stopNodes = async () => {
    for (const node of nodes.splice(0)) await node.stop();
  };
  try {
    await t.step("haproxy -c accepts deploy/haproxy-cluster.cfg", async () => {
      const cfg = await Deno.readTextFile(join(DEPLOY, "haproxy-cluster.cfg"));
      for (
        const line of [
          "balance roundrobin",
          "option httpchk GET /.well-known/sandflare/health",
          "http-check expect status 200",
          "option redispatch",
          "timeout tunnel",
          "http-request set-header X-Real-IP %[src]",
        ]
      ) assert.ok(cfg.includes(line), `haproxy-cluster.cfg lacks ${line}`);
      await haproxyCheck(haproxy, "haproxy-cluster.cfg");
    });

    await t.step("nginx -t accepts deploy/nginx-cluster.conf", async () => {
      await nginxTest(nginx, join(dir, "nginx-t"), "nginx-cluster.conf");
    });

    await t.step(
      "through haproxy: round robin, health checks, a dead node",
      async () => {
        const a = startStandIn("a");
        const b = startStandIn("b");
        nodes.push(a, b);
        const hpPort = freePort();
        const cfg = localHaproxyConfig(
          await Deno.readTextFile(join(DEPLOY, "haproxy-cluster.cfg")),
          hpPort,
          [`127.0.0.1:${a.port}`, `127.0.0.1:${b.port}`],
        );
        const file = join(dir, "haproxy.cfg");
        await Deno.writeTextFile(file, cfg);
        const log = await startProxy(
          haproxy,
          ["-db", "-f", file],
          hpPort,
          "SIGTERM",
          children,
        );
        const via = `http://127.0.0.1:${hpPort}`;
        const context = () => `\nhaproxy log:\n${log.text}`;

        // Both nodes take requests, in turn.
        const both = await answers(via, 6);
        assert.deepEqual(
          both.toSorted(),
          ["a", "a", "a", "b", "b", "b"],
          `${both}${context()}`,
        );
        for (let i = 1; i < both.length; i++) {
          assert.notEqual(both[i], both[i - 1], `not in turn: ${both}`);
        }
        await checkClientAndWebsocket(hpPort);
        await until("a health check", () => a.checkHosts.size > 0);
        assert.deepEqual([...a.checkHosts], ["localhost"]);

        // A node whose health says 503 (its Redis is gone, or it drains)
        // gets no more requests, though it would still answer them.
        b.health = 503;
        await until(
          `haproxy leaves b out${context()}`,
          async () => (await answers(via, 4)).every((n) => n === "a"),
        );
        const hits = b.hits;
        assert.deepEqual(await answers(via, 6), Array(6).fill("a"));
        assert.equal(b.hits, hits);

        // Healthy again: back in turn.
        b.health = 200;
        await until(
          `haproxy takes b back${context()}`,
          async () => (await answers(via, 2)).includes("b"),
        );

        // A node that stops dead: its requests go to the other at once
        // (retries, redispatch), before any health check notices.
        await b.stop();
        assert.deepEqual(
          await answers(via, 6),
          Array(6).fill("a"),
          context(),
        );
      },
    );

    await stopChildren();
    await stopNodes();

    // nginx remembers a failed node (max_fails) for fail_timeout: each case
    // gets fresh nodes and a fresh nginx.
    const nginxInFront = async (name: string) => {
      const a = startStandIn("a");
      const b = startStandIn("b");
      nodes.push(a, b);
      const ngDir = join(dir, name);
      await Deno.mkdir(ngDir);
      const ngPort = freePort();
      const conf = await nginxConfig(ngDir, (c) => {
        c = replaceOnce(c, "listen 80;", `listen 127.0.0.1:${ngPort};`);
        c = replaceOnce(c, "listen [::]:80;", "");
        c = replaceOnce(
          c,
          "server 127.0.0.1:8081 ",
          `server 127.0.0.1:${a.port} `,
        );
        return replaceOnce(
          c,
          "server 127.0.0.1:8082 ",
          `server 127.0.0.1:${b.port} `,
        );
      }, "nginx-cluster.conf");
      const log = await startProxy(
        nginx,
        ["-p", ngDir, "-e", join(ngDir, "error.log"), "-c", conf],
        ngPort,
        "SIGQUIT",
        children,
      );
      const via = `http://127.0.0.1:${ngPort}`;
      const both = await answers(via, 6);
      assert.deepEqual(
        both.toSorted(),
        ["a", "a", "a", "b", "b", "b"],
        `${both}\n${log.text}`,
      );
      return { a, b, via, port: ngPort };
    };

    await t.step(
      "through nginx: round robin; a node answering 503 is passed over",
      async () => {
        const { b, via, port } = await nginxInFront("nginx-503");
        await checkClientAndWebsocket(port);
        // 503 from b: nginx asks a instead (proxy_next_upstream), and after
        // max_fails leaves b out for fail_timeout.
        b.status = 503;
        assert.deepEqual(await answers(via, 6), Array(6).fill("a"));
        const hits = b.hits;
        assert.deepEqual(await answers(via, 6), Array(6).fill("a"));
        assert.equal(b.hits, hits, "b was left out for fail_timeout");
      },
    );

    await t.step(
      "through nginx: a dead node's requests go to the other",
      async () => {
        const { b, via } = await nginxInFront("nginx-dead");
        await b.stop();
        assert.deepEqual(await answers(via, 6), Array(6).fill("a"));
      },
    );
  } finally {
    await stopChildren();
    await stopNodes();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

// ---------------------------------------------------------------------------

Deno.test("deploy/Containerfile runs the unit's flags as a non-root user", async () => {
  const text = await Deno.readTextFile(join(DEPLOY, "Containerfile"));
  const lines = text.replace(/\\\n/g, " ").split("\n")
    .filter((l) => l.trim() !== "" && !l.trim().startsWith("#"));
  const instructions = lines.map((l) => {
    const m = /^\s*([A-Z]+)\s+(.*)$/.exec(l);
    assert.ok(m !== null, `not an instruction: ${l}`);
    return { op: m[1]!, arg: m[2]!.trim() };
  });
  const known = new Set([
    "FROM",
    "RUN",
    "COPY",
    "WORKDIR",
    "ENV",
    "USER",
    "VOLUME",
    "EXPOSE",
    "STOPSIGNAL",
    "ENTRYPOINT",
    "CMD",
    "ARG",
    "LABEL",
    "HEALTHCHECK",
  ]);
  for (const { op } of instructions) assert.ok(known.has(op), op);
  const all = (op: string) =>
    instructions.filter((i) => i.op === op).map((i) => i.arg);
  const last = (op: string) => all(op).at(-1);

  assert.ok(all("FROM").every((f) => /^debian:/.test(f)), "Debian bases");
  assert.ok(all("RUN").some((r) => /deno cache\b.*main\.ts/.test(r)));
  assert.ok(all("RUN").some((r) => /npm install\b/.test(r)));
  assert.ok(
    all("RUN").some((r) => /useradd\b.*\bsandflare\b/.test(r)),
    "creates the sandflare user",
  );
  assert.equal(last("USER"), "sandflare");
  assert.equal(last("EXPOSE"), "8080");
  assert.equal(last("STOPSIGNAL"), "SIGTERM");

  const cmd = JSON.parse(last("CMD")!) as string[];
  assert.ok(Array.isArray(cmd), "CMD is exec (JSON) form");
  const unitArgv = execStart(parseUnit(await Deno.readTextFile(UNIT)));
  assert.equal(cmd[0], unitArgv[0]);
  // Exactly the unit's runtime flags.
  assert.deepEqual(denoFlags(cmd), denoFlags(unitArgv));
  assert.doesNotMatch(cmd.join(" "), ALLOW_ALL);
  for (
    const option of [
      "--host=0.0.0.0",
      "--port=8080",
      "--sites-dir=/srv/sandflare/sites",
      "--grants=/etc/sandflare/sandflare.json",
      "--data-dir=/var/lib/sandflare",
    ]
  ) {
    assert.ok(cmd.includes(option), `CMD lacks ${option}`);
  }
  assert.equal(cmd.at(cmd.indexOf("listen") - 1), "/opt/sandflare/main.ts");
  assert.ok(
    all("ENV").some((e) => e.includes("DENO_DIR=/var/cache/sandflare/deno")),
  );
});

// ---------------------------------------------------------------------------

Deno.test("deno task compile: dist/sandflare, or one clear line why not", async (t) => {
  const output = join(PROJECT_DIR, "dist", "sandflare");
  const problemLines = (stderr: string) =>
    stderr.split("\n").filter((l) =>
      l.trim() !== "" && !/^Task compile /.test(l)
    );

  await t.step("the task", async () => {
    const out = await run(Deno.execPath(), ["task", "compile"]);
    if (out.code === 0) {
      // A machine that has the denort runtime (or reaches dl.deno.land).
      assert.ok((await Deno.stat(output)).isFile, out.stdout + out.stderr);
      const version = await run(output, ["--version"]);
      assert.equal(version.stdout.trim(), `sandflare ${VERSION}`);
      return;
    }
    // This machine: no access to dl.deno.land, no DENORT_BIN.
    assert.equal(out.code, 1);
    const lines = problemLines(out.stderr);
    assert.equal(lines.length, 1, out.stderr);
    assert.match(lines[0]!, /^compile: failed: /);
    assert.match(lines[0]!, /denort/);
    assert.match(lines[0]!, /dl\.deno\.land/);
    assert.match(lines[0]!, /DENORT_BIN/);
    assert.doesNotMatch(out.stderr, /^\s+at /m);
    assert.doesNotMatch(out.stderr, /Stack backtrace|Caused by/);
  });

  await t.step("a DENORT_BIN that does not exist is named", async () => {
    const out = await run(Deno.execPath(), ["task", "compile"], {
      env: { DENORT_BIN: "/nonexistent/denort" },
    });
    assert.equal(out.code, 1);
    const lines = problemLines(out.stderr);
    assert.equal(lines.length, 1, out.stderr);
    assert.match(lines[0]!, /DENORT_BIN=\/nonexistent\/denort/);
    assert.doesNotMatch(out.stderr, /^\s+at |Stack backtrace/m);
  });
});
