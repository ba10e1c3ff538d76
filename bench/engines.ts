/**
 * `deno task bench:engines`: the measurement behind the gateway's choice of
 * HTTP engine (issue 6; see src/cli/listen.ts and the README).
 *
 * For each way this Deno offers to serve HTTP, it drives a raw hello world
 * and a 64 KiB body with `wrk -t1 -c50`, and checks whether the engine lets
 * the server own each connection (close an idle one) and whether a
 * websocket upgraded on it still works a second later:
 *
 * - `Deno.serve`: the fastest, but gives no handle on connections;
 * - `Deno.serveHttp` per accepted connection (what the gateway uses);
 * - Deno's internal per-connection entry point of `Deno.serve`
 *   (`serveHttpOnConnection`, not a public API): measured only.
 *
 * @module
 */

// deno-lint-ignore-file no-console -- a command-line report

import { parseArgs } from "node:util";
import { freePort } from "../tests/helpers/nginx.ts";
import { serveHttpEach } from "./serve_http.ts";
import { ensureWrk, wrk } from "./wrk.ts";

type Handler = (request: Request) => Response;

interface Engine {
  name: string;
  /** Serves `handler` on `port`; the returned function stops it. */
  start(port: number, handler: Handler): () => void;
  /** Whether the server can close one of its connections itself. */
  ownsConnections: boolean;
}

type ServeOnConnection = (
  conn: Deno.Conn,
  signal: AbortSignal,
  handler: Handler,
  onError: (error: unknown) => Response,
  onListen: () => void,
) => { finished: Promise<void> };

/** Deno's internal per-connection server, when this Deno has it. */
function serveOnConnection(): ServeOnConnection | null {
  const deno = Deno as unknown as Record<symbol | string, unknown>;
  const key = deno.internal;
  if (typeof key !== "symbol" && typeof key !== "string") return null;
  const internal = deno[key];
  if (typeof internal !== "object" || internal === null) return null;
  const fn = (internal as Record<string, unknown>).serveHttpOnConnection;
  return typeof fn === "function" ? fn as ServeOnConnection : null;
}

function acceptEach(port: number, serve: (conn: Deno.Conn) => void) {
  const listener = Deno.listen({ hostname: "127.0.0.1", port });
  (async () => {
    for await (const conn of listener) serve(conn);
  })().catch(() => {});
  return () => listener.close();
}

const ENGINES: Engine[] = [
  {
    name: "Deno.serve",
    ownsConnections: false,
    start(port, handler) {
      const server = Deno.serve(
        { hostname: "127.0.0.1", port, onListen() {} },
        handler,
      );
      return () => void server.shutdown();
    },
  },
  {
    name: "Deno.serveHttp per connection",
    ownsConnections: true,
    start(port, handler) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port });
      serveHttpEach(listener, handler);
      return () => listener.close();
    },
  },
];

const internal = serveOnConnection();
if (internal !== null) {
  ENGINES.push({
    name: "internal serveHttpOnConnection",
    ownsConnections: true,
    start(port, handler) {
      return acceptEach(port, (conn) => {
        internal(
          conn,
          new AbortController().signal,
          handler,
          () => new Response("error", { status: 500 }),
          () => {},
        ).finished.catch(() => {}); // a client resetting its connection
      });
    },
  });
}

/** Whether a websocket opened on `port` still echoes after a second. */
async function websocketSurvives(port: number): Promise<boolean> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/ws`);
  try {
    await new Promise((resolve, reject) => {
      ws.onopen = resolve;
      ws.onerror = reject;
    });
    await new Promise((r) => setTimeout(r, 1000));
    if (ws.readyState !== WebSocket.OPEN) return false;
    const echo = new Promise<boolean>((resolve) => {
      ws.onmessage = (e) => resolve(e.data === "ping");
      ws.onclose = () => resolve(false);
      setTimeout(() => resolve(false), 1000);
    });
    ws.send("ping");
    return await echo;
  } catch {
    return false;
  } finally {
    ws.close();
  }
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: { seconds: { type: "string", default: "4" } },
  });
  const seconds = Number(values.seconds);
  await ensureWrk();
  const small = "hello world";
  const big = "x".repeat(64 * 1024);
  const rows = [["engine", "hello req/s", "64 KiB req/s", "owns", "websocket"]];
  for (const engine of ENGINES) {
    const port = await freePort();
    const stop = engine.start(port, (request) => {
      const path = new URL(request.url).pathname;
      if (path === "/ws") {
        const { socket, response } = Deno.upgradeWebSocket(request);
        socket.onmessage = (e) => socket.send(e.data);
        return response;
      }
      return new Response(path === "/big" ? big : small);
    });
    try {
      const base = `http://127.0.0.1:${port}`;
      await wrk(`${base}/`, 1); // warm up
      const hello = (await wrk(`${base}/`, seconds)).rps;
      const large = (await wrk(`${base}/big`, seconds)).rps;
      const ws = await websocketSurvives(port);
      rows.push([
        engine.name,
        hello.toFixed(0),
        large.toFixed(0),
        engine.ownsConnections ? "yes" : "no",
        ws ? "works" : "closed",
      ]);
    } finally {
      stop();
    }
  }
  const widths = rows[0]!.map((_, i) =>
    Math.max(...rows.map((r) => r[i]!.length))
  );
  for (const r of rows) {
    console.log(r.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd());
  }
  console.log(
    `\n${Deno.build.os}/${Deno.build.arch}, ${navigator.hardwareConcurrency} cores, Deno ${Deno.version.deno}; wrk -t1 -c50 -d${seconds}s`,
  );
  Deno.exit(0);
}
