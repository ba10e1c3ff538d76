/**
 * A websocket upgrade: route it to the site that registered the path, pick
 * the subprotocol, upgrade, and hand the socket to the hub, which relays it
 * to the site's generation from then on.
 *
 * @module
 */

import {
  type Snapshot,
  socketKey,
  socketPlace,
  WS_PAGE_BASE,
} from "../supervisor/snapshot.ts";
import {
  type Answer,
  defaultError,
  type ErrorAnswer,
  type RequestContext,
  withHeaders,
} from "./answer.ts";
import type { WebSocketHub } from "./websockets.ts";
import type { WireRequest, WireSocket } from "../protocol/messages.ts";

/** Upgrades `request` to a websocket of the site that registered its path. */
export async function upgradeWebSocket(
  request: Request,
  ctx: RequestContext,
  deps: { snapshot: Snapshot; hub: WebSocketHub; error: ErrorAnswer },
): Promise<Answer> {
  const { snapshot, hub, error } = deps;
  const route = snapshot.sockets.route(ctx.wire.host, ctx.wire.path, "GET");
  ctx.hostOwner = route.hostOwner;
  if (route.kind === "error") {
    const message = route.status === 404
      ? `No websocket is registered at ${JSON.stringify(ctx.wire.path)}`
      : route.message;
    return error(
      route.status === 405 ? 404 : route.status,
      message,
      route.owner,
      ctx,
    );
  }
  const runner = snapshot.sites.get(route.site)?.runner;
  // What the path was routed against: a site woken for its client may
  // number its websockets otherwise (they are matched again by place).
  const routedAgainst = runner?.routes ?? null;
  // A sleeping site (--idle-stop) is started for its client.
  let generation = runner?.generation ?? null;
  if (runner?.asleep === true) {
    generation = await runner.serving(
      ctx.wire.startTime + runner.timeoutSeconds * 1000,
    );
  }
  const routes = runner?.routes ?? null;
  const first = routedAgainst?.websockets[route.pageId - WS_PAGE_BASE];
  const candidates = first === undefined
    ? []
    : (routes?.websockets ?? []).filter((w) =>
      socketPlace(w) === socketPlace(first)
    );
  if (
    runner === undefined || generation === null || routes === null ||
    candidates.length === 0
  ) {
    return error(503, "The site is not available right now", route.site, ctx);
  }
  const offered = (request.headers.get("sec-websocket-protocol") ?? "")
    .split(",").map((p) => p.trim()).filter((p) => p !== "");
  const chosen = chooseProtocol(candidates, offered);
  if (chosen === undefined) {
    return error(
      404,
      `No websocket at ${JSON.stringify(ctx.wire.path)} speaks ${
        offered.map((p) => JSON.stringify(p)).join(", ")
      }`,
      runner.name,
      ctx,
    );
  }
  const origin = request.headers.get("origin");
  if (origin !== null && !originAllowed(origin, ctx.wire, chosen)) {
    return error(
      403,
      `A websocket from a page of ${
        JSON.stringify(origin)
      } is refused: the site allows only its own host here`,
      runner.name,
      ctx,
    );
  }
  // What a page of the site would see: its own cookies only, where it does
  // not own the host. Read before upgrading: the request is closed after.
  const req = { ...withHeaders(ctx, runner.name).wire, upgraded: true };
  const bytes = requestBytes(req);
  if (bytes > WEBSOCKET_REQUEST_BYTES) {
    return error(
      431,
      `A websocket's request may carry at most ${
        WEBSOCKET_REQUEST_BYTES / 1024
      } KiB of headers and path (the site keeps it while the client is connected)`,
      runner.name,
      ctx,
    );
  }
  if (!hub.admits(generation, bytes)) {
    return error(
      503,
      "The site is not keeping up with new websocket clients; try again in a moment",
      runner.name,
      ctx,
    );
  }
  let upgraded: { socket: WebSocket; response: Response };
  try {
    upgraded = Deno.upgradeWebSocket(
      request,
      chosen.protocol === null || offered.length === 0
        ? {}
        : { protocol: chosen.protocol },
    );
  } catch (err) {
    return Promise.resolve(defaultError(
      400,
      `Bad websocket upgrade: ${(err as Error).message}`,
      { accept: ctx.accept, method: ctx.wire.method },
      runner.name,
    ));
  }
  // Nothing may throw from here on: Deno ends the process when an upgraded
  // request is answered with anything but its upgrade response.
  hub.accept(upgraded.socket, {
    site: runner.name,
    key: socketKey(chosen),
    channel: chosen.id,
    generation,
    req,
    captures: route.captures,
  });
  return Promise.resolve({
    response: upgraded.response,
    site: runner.name,
    bytes: 0,
  });
}

/**
 * The most a websocket's request may carry (headers, path and query, in
 * bytes): the site keeps it for as long as the client is connected, where a
 * page's request lives only while it is answered, so it is held to less
 * than a page's 64 KiB. A browser's handshake carries a few KiB.
 */
export const WEBSOCKET_REQUEST_BYTES = 16 * 1024;

/** What a request costs to hand over and keep, roughly: its strings' lengths. */
function requestBytes(req: WireRequest): number {
  let n = req.fullUrl.length + req.path.length + req.query.length;
  for (const part of req.headers) n += part.length;
  return n;
}

/**
 * Whether a browser page of `origin` may connect (the check gorilla/websocket
 * makes by default): its host is the one the request was sent to, or the
 * registration lists it. Now that a client carries the request's cookies
 * and session, a page of another site must not open one in its visitor's
 * name. Clients that are not browsers send no Origin and are let through.
 */
export function originAllowed(
  origin: string,
  request: { authority: string; scheme: "http" | "https" },
  reg: WireSocket,
): boolean {
  if (reg.origins.includes("*")) return true;
  const lower = origin.toLowerCase();
  if (reg.origins.includes(lower)) return true;
  let url: URL;
  try {
    url = new URL(lower);
  } catch {
    return false; // "null" (a sandboxed frame, a file) or malformed
  }
  // A page over plain http (which anyone on the network may have written)
  // must not reach a socket over TLS, where Secure cookies go.
  const schemes = request.scheme === "https" ? ["https:"] : ["http:", "https:"];
  return schemes.includes(url.protocol) && url.username === "" &&
    url.password === "" && url.host === request.authority.toLowerCase();
}

/**
 * The registration that answers: the first protocol offered that one
 * speaks, else the one without a protocol (or the first, when none was
 * offered).
 */
function chooseProtocol(
  candidates: WireSocket[],
  offered: string[],
): WireSocket | undefined {
  const plain = candidates.find((c) => c.protocol === null);
  if (offered.length === 0) return plain ?? candidates[0];
  for (const p of offered) {
    const found = candidates.find((c) => c.protocol === p);
    if (found !== undefined) return found;
  }
  return plain;
}

/** The `Upgrade` token when `Connection` asks for an upgrade, lower-cased. */
export function upgradeToken(headers: Headers): string | null {
  const connection = headers.get("connection");
  const upgrade = headers.get("upgrade");
  if (connection === null || upgrade === null) return null;
  const asks = connection.split(",").some((t) =>
    t.trim().toLowerCase() === "upgrade"
  );
  if (!asks) return null;
  return (upgrade.split(",")[0] ?? "").trim().toLowerCase();
}
