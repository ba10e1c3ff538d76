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
  WS_PAGE_BASE,
} from "../supervisor/snapshot.ts";
import {
  type Answer,
  defaultError,
  type ErrorAnswer,
  type RequestContext,
} from "./answer.ts";
import type { WebSocketHub } from "./websockets.ts";
import type { WireSocket } from "../protocol/messages.ts";

/** Upgrades `request` to a websocket of the site that registered its path. */
export function upgradeWebSocket(
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
  const generation = runner?.generation ?? null;
  const routes = runner?.routes ?? null;
  const first = routes?.websockets[route.pageId - WS_PAGE_BASE];
  if (
    runner === undefined || generation === null || routes === null ||
    first === undefined
  ) {
    return error(503, "The site is not available right now", route.site, ctx);
  }
  const candidates = routes.websockets.filter((w) =>
    w.host === first.host && w.path === first.path
  );
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
  hub.accept(upgraded.socket, {
    site: runner.name,
    key: socketKey(chosen),
    channel: chosen.id,
    generation,
    peer: ctx.wire.peer,
  });
  return Promise.resolve({
    response: upgraded.response,
    site: runner.name,
    bytes: 0,
  });
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
