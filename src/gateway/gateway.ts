/**
 * The gateway: the HTTP pipeline every request goes through. It reads top to
 * bottom as the stages of a request — request target, client address,
 * upgrade, route, answer (static file, page or error), access log — each a
 * small function. The sites themselves belong to the supervisor
 * (`src/supervisor/`); per request the gateway reads one immutable snapshot
 * of them. It never runs site code.
 *
 * @module
 */

import { log, RepeatedWarning } from "../log.ts";
import { normalizeHost } from "../router/host_pattern.ts";
import type { RouteResult } from "../router/router.ts";
import type { SandboxReply } from "../supervisor/sandbox_process.ts";
import { ROOT_SITE } from "../supervisor/sites.ts";
import type { ServedSite } from "../supervisor/snapshot.ts";
import { type SiteProblem, Supervisor } from "../supervisor/supervisor.ts";
import { accessLine } from "./access_log.ts";
import {
  type Answer,
  clientGone,
  defaultError,
  internalError,
  refusedReply,
  type RequestContext,
  withHeaders,
} from "./answer.ts";
import type { ConnectionInfo } from "./connections.ts";
import { FileAnswers } from "./file_answers.ts";
import { loadMimeTable } from "./mime.ts";
import { requestPeer } from "./proxy.ts";
import type { GatewayOptions } from "./options.ts";
import { type BodyBytes, bodyBytesMax, pageBody } from "./request_body.ts";
import { readTarget, requestHost, requestTarget } from "./request_target.ts";
import { SessionBridge } from "./session_bridge.ts";
import { replyAnswer } from "./site_reply.ts";
import { LatencyTracker } from "./stats.ts";
import { clusterParts, NodeStatus } from "./cluster_node.ts";
import { upgradeToken, upgradeWebSocket } from "./websocket_upgrade.ts";
import { WebSocketHub } from "./websockets.ts";

/** Requests whose answer a site computes may wait on top of this much input. */
const INPUT_BACKLOG = 64 * 1024 * 1024;

/** One gateway: the HTTP pipeline over the sites its supervisor runs. */
export class Gateway {
  /** The sites, owned by the supervisor. */
  readonly sites: Supervisor;
  readonly #options: GatewayOptions;
  readonly #hub: WebSocketHub;
  readonly #sessions: SessionBridge;
  readonly #latency = new LatencyTracker();
  #files: FileAnswers | null = null;
  /** Request bodies being read, over all requests. */
  readonly #bodies: BodyBytes;
  readonly #badReplies = new RepeatedWarning("A page's reply was refused");
  readonly #conflicts = new RepeatedWarning("Answered 409");
  readonly #costlyRoutes = new RepeatedWarning(
    "Route patterns skipped, over the work allowed per request",
  );
  readonly #node: NodeStatus;

  constructor(options: GatewayOptions) {
    this.#options = options;
    const parts = clusterParts(
      options.cluster,
      (site, run) => this.sites.runTasks(site, run),
    );
    this.#node = new NodeStatus({
      ...parts,
      options,
      sites: () => this.sites,
      latency: this.#latency,
      websockets: (site) => this.#hub.count(site),
      error: this.#error,
    });
    this.#bodies = { held: 0, max: bodyBytesMax(options.maxPostLength) };
    this.#hub = new WebSocketHub({
      maxMessage: options.websocketMaxMessage,
      maxBuffer: options.websocketMaxBuffer,
      maxRate: options.websocketMaxRate,
      ...parts.hub,
    });
    parts.cluster?.onRelayed((msg, body) => this.#hub.fromCluster(msg, body));
    this.#sessions = new SessionBridge({
      dataDir: options.dataDir,
      maxAge: options.sessionMaxAge,
      secure: options.secureCookies,
      ...parts.sessions,
    });
    this.sites = new Supervisor({
      ...options.sites,
      // Room for two of the largest request bodies on top of the default.
      maxInputBacklog: INPUT_BACKLOG + 2 * options.maxPostLength,
      // What each costs the site's frame budget: a session question 5 (it
      // is answered), a websocket send one per 5 clients it reaches and one
      // per 8 KiB it delivers in all.
      onSiteMessage: (site, from, msg, body, headerBytes) => {
        if (msg.t === "wsSend" || msg.t === "wsClose") {
          const reached = this.#hub.fromSite(site, from, msg, body);
          return reached / 5 + (reached * body.length) / 8192;
        }
        const answered = this.#sessions.answer(site, msg, headerBytes);
        void answered.then((result) => from.post(result));
        return 5;
      },
      onSandboxExit: (sandbox) => this.#hub.sandboxExited(sandbox),
      onReload: () => this.#files?.clear(),
      ...parts.supervisor,
    });
  }

  /** Opens the stores and loads every site; returns those that failed. */
  async start(): Promise<SiteProblem[]> {
    this.#files = new FileAnswers({
      mime: await loadMimeTable(),
      maxEtagSize: this.#options.maxEtagSize,
      xSendfile: this.#options.xSendfile,
      xAccelRedirect: this.#options.xAccelRedirect,
      error: this.#error,
      refused: this.#refusedReply,
    });
    this.#sessions.open();
    return await this.sites.start();
  }

  /** Handles one request; also says how many body bytes the answer sends. */
  handle = async (
    request: Request,
    info: ConnectionInfo,
  ): Promise<{ response: Response; bytes: number | null }> => {
    const time = new Date();
    const started = performance.now();
    // Read before answering: an upgraded request can no longer be read.
    const { method, url } = request;
    const peer = (info.remoteAddr as Deno.NetAddr).hostname;
    let answer: Answer;
    try {
      const owned = info.clientGone;
      const gone = owned === undefined ? () => request.signal : () => owned;
      answer = await this.#process(request, peer, gone, time.getTime());
    } catch (err) {
      answer = internalError(err, method, ROOT_SITE);
    }
    const ms = performance.now() - started;
    log.access(accessLine({
      peer,
      time,
      method,
      target: requestTarget(url),
      status: answer.response.status,
      bytes: answer.bytes,
      ms,
      site: answer.site,
    }));
    this.#latency.record(answer.site, ms, answer.response.status);
    return answer;
  };

  /** The stages of a request, in order. */
  #process(
    request: Request,
    connectedPeer: string,
    clientGone: () => AbortSignal,
    startTime: number,
  ): Answer | Promise<Answer> {
    const target = readTarget(request.url);
    if ("status" in target) {
      return refuse(request, target.status, target.message);
    }
    const peer = requestPeer(
      request.headers,
      connectedPeer,
      this.#options.trustedProxies,
    );
    if (typeof peer !== "string") {
      return refuse(request, peer.status, peer.message);
    }

    const host = requestHost(request);
    if (typeof host !== "string") {
      return refuse(request, host.status, host.message);
    }
    const ctx: RequestContext = {
      wire: {
        method: request.method,
        path: target.path,
        fullUrl: target.raw,
        scheme: target.scheme,
        authority: host,
        query: target.query,
        // Filled only once a site sees the request: see withHeaders().
        headers: [],
        host: normalizeHost(host),
        peer,
        startTime,
        upgraded: false,
      },
      accept: request.headers.get("accept"),
      headers: request.headers,
      clientGone,
    };
    const snapshot = this.sites.snapshot;

    const upgrade = upgradeToken(request.headers);
    if (upgrade !== null) return this.#upgrade(upgrade, request, ctx);

    // The operator's paths are the gateway's on every host: no site can
    // shadow them.
    const operator = this.#node.answer(target.path, ctx, target.query);
    if (operator !== null) return operator;
    const route = snapshot.router.route(host, target.path, request.method);
    for (const site of route.overBudget ?? []) {
      this.#costlyRoutes.note(
        site,
        `a path of ${target.path.length} characters`,
      );
    }
    ctx.hostOwner = route.hostOwner;
    if (route.kind === "error") return this.#routeError(route, ctx);
    const site = snapshot.sites.get(route.site);
    if (site === undefined) {
      return this.#error(
        404,
        `No page at ${JSON.stringify(target.path)}`,
        ROOT_SITE,
        ctx,
      );
    }
    if (route.pageId < 0) {
      return this.#files!.staticFile(site, route.pageId, ctx);
    }
    return this.#page(site, route, request, ctx);
  }

  /** Upgrades (the seed's `hosts.upgrades`): websockets only. */
  #upgrade(
    token: string,
    request: Request,
    ctx: RequestContext,
  ): Promise<Answer> {
    if (token !== "websocket") {
      return this.#error(404, `Upgrade not found: ${token}`, ROOT_SITE, ctx);
    }
    return upgradeWebSocket(request, ctx, {
      snapshot: this.sites.snapshot,
      hub: this.#hub,
      error: this.#error,
    });
  }

  async #routeError(
    route: Extract<RouteResult, { kind: "error" }>,
    ctx: RequestContext,
  ): Promise<Answer> {
    // The page names no site; the log says which (host and page
    // conflicts counted apart, never one entry per path).
    if (route.detail !== undefined) {
      const kind = route.detail.startsWith("Host") ? "host" : "page";
      this.#conflicts.note(route.owner, route.detail, `${route.owner} ${kind}`);
    }
    const answer = await this.#error(
      route.status,
      route.message,
      route.owner,
      ctx,
    );
    if (route.allow !== undefined) {
      answer.response.headers.set("allow", route.allow.join(", "));
    }
    return answer;
  }

  /** A page: read the body, run it in the site's sandbox, answer its reply. */
  async #page(
    site: ServedSite,
    route: Extract<RouteResult, { kind: "page" }>,
    request: Request,
    ctx: RequestContext,
  ): Promise<Answer> {
    const runner = site.runner;
    // Page ids belong to the generation routed against: keep it until dispatched.
    const routed = runner.routedNow();
    const generation = routed.generation;
    generation?.hold();
    let outcome;
    try {
      const body = await pageBody(request, site.name, ctx, {
        maxPostLength: this.#options.maxPostLength,
        stallSeconds: this.#options.bodyStallSeconds,
        bodies: this.#bodies,
        error: this.#error,
      });
      if (!(body instanceof Uint8Array)) return body;
      outcome = await runner.dispatch(
        route.pageId,
        route.captures,
        withHeaders(ctx, site.name).wire,
        body,
        routed,
        ctx.clientGone,
      );
    } finally {
      generation?.release();
    }
    if (outcome.kind === "gone") return clientGone(site.name);
    if (outcome.kind === "failed") {
      return defaultError(
        outcome.status,
        outcome.message,
        toErrorRequest(request),
        site.name,
      );
    }
    return this.#fromReply(site, outcome.reply, ctx);
  }

  /** What a site replied, as an answer. */
  #fromReply(
    site: ServedSite,
    reply: SandboxReply,
    ctx: RequestContext,
  ): Answer | Promise<Answer> {
    return replyAnswer(site, reply, ctx, {
      files: this.#files!,
      refused: this.#refusedReply,
    });
  }

  /** A reply that cannot be sent: 502, and one log line (repeats summed up). */
  #refusedReply = (site: string, why: string, ctx: RequestContext): Answer =>
    refusedReply(site, why, ctx, this.#badReplies);

  /** An error page, through the owning site's `Error` hook when it has one. */
  #error = async (
    code: number,
    message: string,
    owner: string,
    ctx: RequestContext,
  ): Promise<Answer> => {
    const site = this.sites.snapshot.sites.get(owner);
    // The Error hook renders at most once per request: an error page that
    // itself fails (a missing setFile, say) gets the default page.
    if (
      site !== undefined && site.runner.routes?.hooks.includes("Error") &&
      !ctx.errorRendered
    ) {
      ctx.errorRendered = true;
      const rendered = await site.runner.renderError(
        code,
        message,
        withHeaders(ctx, owner).wire,
      );
      if (rendered !== null) return this.#fromReply(site, rendered, ctx);
    }
    return defaultError(
      code,
      message,
      { accept: ctx.accept, method: ctx.wire.method },
      owner,
    );
  };

  /** Stopping: the health check says 503, so balancers send no more. */
  drain(): void {
    this.#node.draining = true;
  }

  /** Closes every websocket (the server is stopping). */
  closeSockets(): void {
    this.#hub.closeAll(1001, "The server is shutting down");
  }

  /** Open websocket clients of every site. */
  openSockets(): number {
    return this.#hub.size;
  }

  /** Stops every site; in-flight requests get up to `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    this.closeSockets();
    await this.sites.stop(graceMs);
    await this.#sessions.close();
    await this.#node.leave(); // leases handed back once tasks stopped
  }
}

/** The gateway's refusal of a request before any site is involved. */
function refuse(request: Request, code: number, message: string): Answer {
  return defaultError(code, message, toErrorRequest(request), ROOT_SITE);
}

function toErrorRequest(
  request: Request,
): { accept: string | null; method: string } {
  return { accept: request.headers.get("accept"), method: request.method };
}
