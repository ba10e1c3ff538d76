/**
 * `sandflare listen`: load every site, serve until SIGINT/SIGTERM, drain.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { dirname, join, resolve } from "node:path";
import { Gateway } from "../gateway/gateway.ts";
import type { GatewayOptions } from "../gateway/options.ts";
import type { IpMatcher } from "../gateway/proxy.ts";
import { flushLog, log } from "../log.ts";
import { Notifier } from "../gateway/systemd.ts";
import { ConnectionServer } from "../gateway/connections.ts";
import {
  resolveTrustedProxies,
  type TrustedProxies,
  TrustError,
} from "../gateway/trust.ts";
import { defaultListenOptions, type ListenOptions } from "./options.ts";
import { Containment } from "../supervisor/containment.ts";
import { StateFile } from "../supervisor/site_states.ts";
import { requestHost } from "../gateway/request_target.ts";
import { siteStates } from "../gateway/stats.ts";
import type { Cluster } from "../cluster/cluster.ts";
import {
  CLUSTER_PASSWORD_ENV,
  withClusterPassword,
} from "../cluster/cluster_url.ts";
import {
  GRANTS_FILE_NAME,
  GrantsError,
  type ServerAddress,
} from "../supervisor/grants.ts";

/** How long in-flight requests may take to finish at shutdown. */
const DRAIN_MS = 10_000;
/** Signals closer together than this are one signal delivered twice. */
const DUPLICATE_SIGNAL_MS = 250;

/** The folder holding `autorun/` (the root site). */
export const PROJECT_DIR = fileURLToPath(new URL("../../", import.meta.url));

/** The grants file `listen` reads, or null with --grant-requests. */
export function grantsFileOf(options: ListenOptions): string | null {
  if (options.grantRequests) return null;
  return options.grantsFile ??
    join(dirname(resolve(options.sitesDir)), GRANTS_FILE_NAME);
}

/** What the addresses of the server are, for a site's net request. */
export interface Listening {
  address: ServerAddress | null;
}

/** The gateway's options from the flags of `listen`. */
export function gatewayOptions(
  options: ListenOptions,
  resolved: {
    trustedProxies: IpMatcher | null;
    operators: IpMatcher;
    containment: Containment;
  },
  listening: Listening,
  cluster: Cluster | null = null,
): GatewayOptions {
  const { trustedProxies, operators, containment } = resolved;
  return {
    operators,
    sites: {
      projectDir: PROJECT_DIR,
      sitesDir: options.sitesDir,
      grantsFile: grantsFileOf(options),
      serverAddress: () => listening.address,
      threads: options.threads,
      requestTimeout: options.requestTimeout,
      siteQueue: options.siteQueue,
      idleStopMs: options.idleStop === null ? null : options.idleStop * 1000,
      warmSpares: options.warmSpares,
      containment,
      siteCpu: options.siteCpu,
      isolate: options.isolate,
      // Each site's own Deno cache, beside the server's other data.
      cacheDir: join(options.dataDir, "site-cache"),
      // With --idle-stop, what each site registered, for the next start.
      routesDir: join(options.dataDir, "site-routes"),
      // The import maps of sites with dependencies: out of every site's reach.
      configDir: join(options.dataDir, "site-config"),
      install: options.install,
      installCommand: (site) => installCommand(site, options),
    },
    maxPostLength: options.maxPostLength,
    bodyStallSeconds: options.keepaliveTime,
    trustedProxies: options.reverseProxy
      ? trustedProxies ?? (() => false)
      : null,
    maxEtagSize: options.maxEtagSize,
    xSendfile: options.xSendfile,
    xAccelRedirect: options.xAccelRedirect,
    dataDir: options.dataDir,
    sessionMaxAge: options.sessionMaxAge,
    secureCookies: options.tlsCert !== null,
    websocketMaxMessage: options.websocketMaxMessage,
    websocketMaxBuffer: options.websocketMaxBuffer,
    websocketMaxRate: options.websocketMaxRate,
    cluster,
  };
}

/**
 * This node's id: `--node-id`, or host name and port (and pid with
 * --reuse-port).
 * @throws {Error} naming --node-id when the host name cannot be read
 */
export function nodeIdOf(options: ListenOptions): string {
  if (options.nodeId !== null) return options.nodeId;
  let name: string;
  try {
    name = Deno.hostname();
  } catch (err) {
    throw new Error(
      `Cannot read this machine's host name for the node id ` +
        `(${(err as Error).message}); pass --node-id=ID or allow it with ` +
        "--allow-sys=hostname",
    );
  }
  const host = name.replace(/[^A-Za-z0-9._-]/g, "-").slice(0, 60);
  const id = `${host}:${options.port}`;
  return options.reusePort ? `${id}:${Deno.pid}` : id;
}

/**
 * The command that installs a site's dependencies into the cache this
 * server reads, with the folders it was given when they are not the
 * defaults.
 */
export function installCommand(site: string, options: ListenOptions): string {
  const defaults = defaultListenOptions();
  const words = ["deno", "task", "cli", "install", site];
  if (options.sitesDir !== defaults.sitesDir) {
    words.push(`--sites-dir=${options.sitesDir}`);
  }
  if (options.dataDir !== defaults.dataDir) {
    words.push(`--data-dir=${options.dataDir}`);
  }
  return words.map(shellWord).join(" ");
}

/** A word as a POSIX shell reads it back. */
function shellWord(word: string): string {
  return /^[\w@%+=:,./-]+$/.test(word)
    ? word
    : `'${word.replaceAll("'", "'\\''")}'`;
}

function bindAddress(host: string): string {
  return host === "*" ? "0.0.0.0" : host;
}

/** A running HTTP server, however it was started. */
interface Serving {
  /** Stops accepting and drains; whether everything finished in time. */
  shutdown(timeoutMs: number): Promise<boolean>;
}

type Handle = (
  request: Request,
  info: Deno.ServeHandlerInfo,
) => Promise<{ response: Response; bytes: number | null }>;

function announce(
  addr: { hostname: string; port: number },
  tls: boolean,
): void {
  const shown = addr.hostname.includes(":")
    ? `[${addr.hostname}]`
    : addr.hostname;
  log.info(
    null,
    `Listening on ${tls ? "https" : "http"}://${shown}:${addr.port}`,
  );
}

/**
 * Binds the port. By default the gateway owns each connection
 * ({@linkcode ConnectionServer}): idle and half-sent connections are closed
 * and --max-connections is a cap, which a server facing clients directly
 * needs. `--fast-connections` leaves them to `Deno.serve` instead.
 *
 * Measured on this Deno (2.9.6), wrk -t1 -c50, raw hello world / 64 KiB:
 * Deno.serve 118k / 36k req/s; Deno.serveHttp per connection (what
 * ConnectionServer uses) 66k / 17k; the per-connection internal of
 * Deno.serve 113k / 38k, but a websocket upgraded on it is closed as soon
 * as its HTTP connection ends; node:http 33k; a JS TCP relay 33k. Only
 * Deno.serveHttp both owns the connection and upgrades websockets.
 */
function serve(
  options: ListenOptions,
  tls: { cert: string; key: string } | undefined,
  handle: Handle,
  openWebsockets: () => number,
  listening: Listening,
): Serving {
  const onListen = (addr: { hostname: string; port: number }) => {
    listening.address = { hostname: addr.hostname, port: addr.port };
    announce(addr, tls !== undefined);
  };
  if (!options.fastConnections) {
    const owned = new ConnectionServer({
      hostname: bindAddress(options.host),
      port: options.port,
      keepaliveMs: options.keepaliveTime * 1000,
      maxConnections: options.maxConnections,
      ...(tls !== undefined ? { tls } : {}),
      reusePort: options.reusePort,
      onListen,
      onRefused: refused,
      openWebsockets,
    }, handle);
    return { shutdown: (ms) => owned.shutdown(ms) };
  }
  const server = Deno.serve({
    hostname: bindAddress(options.host),
    port: options.port,
    ...(tls ?? {}),
    reusePort: options.reusePort,
    onListen,
  }, async (request, info) => (await handle(request, info)).response);
  return {
    shutdown: (ms) =>
      Promise.race([
        server.shutdown().then(() => true),
        new Promise<false>((r) => setTimeout(() => r(false), ms)),
      ]),
  };
}

/** Connections refused over --max-connections, logged at most once a second. */
let refusedCount = 0;
let refusedTimer: ReturnType<typeof setTimeout> | null = null;
function refused(): void {
  refusedCount++;
  refusedTimer ??= setTimeout(() => {
    log.warn(
      null,
      `Refused ${refusedCount} connection(s) over --max-connections`,
    );
    refusedCount = 0;
    refusedTimer = null;
  }, 1000);
}

/** The certificate and key, or a message saying what is wrong with them. */
async function readTls(
  certFile: string,
  keyFile: string,
): Promise<{ cert: string; key: string } | string> {
  const read = async (file: string, option: string, label: RegExp) => {
    let text: string;
    try {
      text = await Deno.readTextFile(file);
    } catch (err) {
      throw `${option}: cannot read ${JSON.stringify(file)}: ${
        (err as Error).message
      }`;
    }
    if (!label.test(text)) {
      throw `${option}: ${JSON.stringify(file)} is not a PEM file with a ${
        label.source.replace(/\\/g, "")
      }`;
    }
    return text;
  };
  try {
    const cert = await read(
      certFile,
      "--tls-cert",
      /-----BEGIN CERTIFICATE-----/,
    );
    const key = await read(
      keyFile,
      "--tls-key",
      /-----BEGIN [A-Z ]*PRIVATE KEY-----/,
    );
    return { cert, key };
  } catch (message) {
    return String(message);
  }
}

/**
 * Serves until a stop signal.
 * @returns the exit code
 */
export async function listen(options: ListenOptions): Promise<number> {
  // Defence in depth: a failure in a background task (a reload, a watcher)
  // is logged, never the end of the server.
  globalThis.addEventListener("unhandledrejection", (event) => {
    event.preventDefault();
    const reason = event.reason;
    log.error(
      null,
      `Unexpected failure: ${
        reason instanceof Error
          ? reason.stack ?? reason.message
          : String(reason)
      }`,
    );
  });
  try {
    if (!(await Deno.stat(options.sitesDir)).isDirectory) {
      throw new Deno.errors.NotFound();
    }
  } catch {
    log.error(
      null,
      `--sites-dir: ${
        JSON.stringify(options.sitesDir)
      } is not a folder; create it or pass --sites-dir=PATH`,
    );
    return 2;
  }
  let trusted: TrustedProxies | null = null;
  let operators: TrustedProxies;
  try {
    if (options.reverseProxy) {
      trusted = await resolveTrustedProxies(options.trustedReverseProxies);
      log.info(
        null,
        `Trusting reverse proxies: ${trusted.described.join("; ")}`,
      );
    }
    operators = await resolveTrustedProxies(
      options.operatorAddresses,
      "--operator-addresses",
    );
  } catch (err) {
    if (!(err instanceof TrustError)) throw err;
    log.error(null, err.message);
    return 2;
  }
  let tls: { cert: string; key: string } | undefined;
  if (options.tlsCert !== null && options.tlsKey !== null) {
    const loadedTls = await readTls(options.tlsCert, options.tlsKey);
    if (typeof loadedTls === "string") {
      log.error(null, loadedTls);
      return 2;
    }
    tls = loadedTls;
  }
  const listening: Listening = { address: null };
  let cluster: Cluster | null = null;
  if (options.cluster !== null) {
    try {
      // Loaded only for a cluster: a node on its own needs no Redis client.
      const { Cluster } = await import("../cluster/cluster.ts");
      cluster = await Cluster.join({
        url: withClusterPassword(
          options.cluster,
          Deno.env.get(CLUSTER_PASSWORD_ENV),
        ),
        prefix: options.clusterPrefix,
        nodeId: nodeIdOf(options),
      });
    } catch (err) {
      log.error(null, (err as Error).message);
      return 2;
    }
  }
  const containment = new Containment({ cgroups: options.cgroups });
  log.info(null, containment.describe());
  const gateway = new Gateway(
    gatewayOptions(
      options,
      {
        trustedProxies: trusted?.matches ?? null,
        operators: operators.matches,
        containment,
      },
      listening,
      cluster,
    ),
  );
  // Bind first: a port in use fails at once, before any site is started.
  // Requests that arrive while the sites load wait for them: for the one
  // site that owns their host if there is one, else for all (FirstStart).
  const loaded = Promise.withResolvers<void>();
  let started = false;
  let server: Serving;
  try {
    server = serve(
      options,
      tls,
      async (request, info) => {
        // Once every site has started, requests go straight through.
        if (!started) {
          const host = requestHost(request);
          await (typeof host === "string"
            ? Promise.race([loaded.promise, gateway.sites.readyFor(host)])
            : loaded.promise);
        }
        return gateway.handle(request, info);
      },
      () => gateway.openSockets(),
      listening,
    );
  } catch (err) {
    log.error(
      null,
      `Cannot listen on ${options.host}:${options.port} (--host, --port${
        tls ? ", --tls-cert, --tls-key" : ""
      }): ${(err as Error).message}`,
    );
    await cluster?.leave();
    return 1;
  }
  const grantsFile = grantsFileOf(options);
  log.info(
    null,
    grantsFile === null
      ? "--grant-requests: every site gets what its site.json asks for"
      : `Grants: ${grantsFile}`,
  );
  let problems;
  try {
    problems = await gateway.start();
  } catch (err) {
    if (!(err instanceof GrantsError)) throw err;
    log.error(null, err.message);
    await server.shutdown(1000);
    await cluster?.leave();
    return 2;
  }
  loaded.resolve();
  started = true;
  // What `cli sites` shows of this server: which sites sleep.
  const states = new StateFile(
    options.dataDir,
    options.sitesDir,
    () => siteStates(gateway.sites),
  );
  states.start();
  // Watch before saying Ready: a file saved just after Ready is picked up.
  if (options.reload) gateway.sites.watch();
  const ready = gateway.sites.siteNames;
  if (options.outPid !== null) {
    await Deno.writeTextFile(options.outPid, `${Deno.pid}\n`);
  }
  log.info(
    null,
    `Ready: ${ready.length} site(s) serving (${ready.join(", ")})${
      problems.length > 0
        ? `, ${problems.length} not loaded (${
          problems.map((p) => p.site).join(", ")
        })`
        : ""
    }`,
  );

  const notifier = options.systemd
    ? Notifier.open(Deno.env, { warn: (m) => log.warn(null, m) })
    : null;
  await notifier?.send(`READY=1\nSTATUS=Serving ${ready.length} site(s)`);
  const onHangup = async () => {
    log.info(null, "SIGHUP: reloading every site");
    await notifier?.reloading();
    await gateway.sites.reloadAll();
    await notifier?.send(
      `READY=1\nSTATUS=Serving ${gateway.sites.siteNames.length} site(s)`,
    );
  };
  Deno.addSignalListener("SIGHUP", onHangup);

  const stopped = Promise.withResolvers<string>();
  const onSignal = (signal: Deno.Signal) => () => stopped.resolve(signal);
  const signals: [Deno.Signal, () => void][] = [
    ["SIGINT", onSignal("SIGINT")],
    ["SIGTERM", onSignal("SIGTERM")],
  ];
  for (const [signal, handler] of signals) {
    Deno.addSignalListener(signal, handler);
  }
  const signal = await stopped.promise;

  log.info(
    null,
    `${signal}: stopping; in-flight requests have ${
      DRAIN_MS / 1000
    } s to finish`,
  );
  // A second signal ends the process at once.
  // `deno task` forwards the terminal's Ctrl-C, so one key press can arrive
  // twice within a few milliseconds: only a later one counts as a second.
  const firstAt = Date.now();
  const force = () => {
    if (Date.now() - firstAt < DUPLICATE_SIGNAL_MS) return;
    log.error(null, "Second stop signal: exiting now");
    flushLog();
    Deno.exit(1);
  };
  Deno.removeSignalListener("SIGHUP", onHangup);
  for (const [sig, handler] of signals) {
    Deno.removeSignalListener(sig, handler);
    Deno.addSignalListener(sig, force);
  }
  await notifier?.send("STOPPING=1");
  gateway.drain();
  gateway.closeSockets();
  const drained = await server.shutdown(DRAIN_MS);
  if (!drained) {
    log.warn(null, "Some requests did not finish in time and were cut off");
  }
  await gateway.stop(1000);
  await states.stop();
  if (options.outPid !== null) {
    await Deno.remove(options.outPid).catch(() => {});
  }
  notifier?.close();
  log.info(null, "Stopped");
  flushLog();
  return 0;
}
