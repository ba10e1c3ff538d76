/**
 * `sandflare listen`: load every site, serve until SIGINT/SIGTERM, drain.
 *
 * @module
 */

import { fileURLToPath } from "node:url";
import { Gateway } from "../gateway/gateway.ts";
import { flushLog, log } from "../log.ts";
import {
  resolveTrustedProxies,
  type TrustedProxies,
  TrustError,
} from "../gateway/trust.ts";
import type { ListenOptions } from "./options.ts";

/** How long in-flight requests may take to finish at shutdown. */
const DRAIN_MS = 10_000;
/** Signals closer together than this are one signal delivered twice. */
const DUPLICATE_SIGNAL_MS = 250;

const PROJECT_DIR = fileURLToPath(new URL("../../", import.meta.url));

function bindAddress(host: string): string {
  return host === "*" ? "0.0.0.0" : host;
}

/**
 * Serves until a stop signal.
 * @returns the exit code
 */
export async function listen(options: ListenOptions): Promise<number> {
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
  if (options.reverseProxy) {
    try {
      trusted = await resolveTrustedProxies(options.trustedReverseProxies);
    } catch (err) {
      if (!(err instanceof TrustError)) throw err;
      log.error(null, err.message);
      return 2;
    }
    log.info(null, `Trusting reverse proxies: ${trusted.described.join("; ")}`);
  }
  const gateway = new Gateway({
    listen: options,
    projectDir: PROJECT_DIR,
    ...(trusted !== null ? { trusted: trusted.matches } : {}),
  });
  // Bind first: a port in use fails at once, before any site is started.
  // Requests that arrive while the sites load wait for them.
  const loaded = Promise.withResolvers<void>();
  let server: Deno.HttpServer;
  try {
    server = Deno.serve({
      hostname: bindAddress(options.host),
      port: options.port,
      onListen: ({ hostname, port }) => {
        const shown = hostname.includes(":") ? `[${hostname}]` : hostname;
        log.info(null, `Listening on http://${shown}:${port}`);
      },
    }, async (request, info) => {
      await loaded.promise;
      return gateway.handler(request, info);
    });
  } catch (err) {
    log.error(
      null,
      `Cannot listen on ${options.host}:${options.port} (--host, --port): ${
        (err as Error).message
      }`,
    );
    return 1;
  }
  const problems = await gateway.loadSites();
  loaded.resolve();
  const ready = [...gateway.runners.keys()];
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

  if (options.reload) gateway.watch();
  const onHangup = () => {
    log.info(null, "SIGHUP: reloading every site");
    void gateway.reloadAll();
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
  gateway.closeSockets();
  const drained = await Promise.race([
    server.shutdown().then(() => true),
    new Promise<false>((r) => setTimeout(() => r(false), DRAIN_MS)),
  ]);
  if (!drained) {
    log.warn(null, "Some requests did not finish in time and were cut off");
  }
  await gateway.stop(1000);
  if (options.outPid !== null) {
    await Deno.remove(options.outPid).catch(() => {});
  }
  log.info(null, "Stopped");
  flushLog();
  return 0;
}
