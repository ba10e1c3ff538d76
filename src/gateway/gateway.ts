/**
 * The gateway: owns every socket and file, routes each request to the site
 * that registered its page, runs it in that site's sandbox, and answers.
 * It never runs site code.
 *
 * @module
 */

import { join, relative, sep as SEP } from "node:path";
import type { ListenOptions } from "../cli/options.ts";
import { log, siteOutput } from "../log.ts";
import type {
  ToSandbox,
  WireReply,
  WireRequest,
  WireRoutes,
  WireSocket,
} from "../protocol/messages.ts";
import {
  buildRouter,
  findConflicts,
  type PageSpec,
  type Router,
  RouteTableError,
  type SiteRoutes,
} from "../router/router.ts";
import { checkHostClaims } from "../supervisor/claims.ts";
import { normalizeHost } from "../router/host_pattern.ts";
import {
  LoadError,
  SandboxProcess,
  type SandboxReply,
  type SiteMessage,
} from "../supervisor/sandbox_process.ts";
import { SiteRunner } from "../supervisor/site_runner.ts";
import {
  defineRootSite,
  defineSite,
  discoverSites,
  isInside,
  ROOT_SITE,
  type SiteDefinition,
  SiteError,
  siteFolderNames,
} from "../supervisor/sites.ts";
import { type Watch, watchFolder } from "../supervisor/watcher.ts";
import { accessLine } from "./access_log.ts";
import { WebSocketHub } from "./websockets.ts";
import {
  isLocalPeer,
  LatencyTracker,
  renderStatsPage,
  type SiteStats,
  type Stats,
} from "./stats.ts";
import denoJson from "../../deno.json" with { type: "json" };
import {
  isSessionId,
  newSessionId,
  openSqliteSessionStore,
  SessionLimitError,
  type SessionStore,
} from "../supervisor/session_store.ts";
import { clientAddress, type IpMatcher } from "./proxy.ts";
import { fileAnswer, FileCache } from "./file_cache.ts";
import { type ListingEntry, renderListing } from "./listing.ts";
import {
  emptyStaticIndex,
  scanStatic,
  type StaticIndex,
} from "./static_index.ts";
import { errorPage, wantsJson } from "./error_page.ts";
import { lookupSiteFile } from "./files.ts";
import { contentTypeFor, loadMimeTable, type MimeTable } from "./mime.ts";
import { parseTarget, requestTarget, TargetError } from "./request_target.ts";

/** What the gateway needs to run. */
export interface GatewayOptions {
  listen: ListenOptions;
  /** Who may set X-Real-IP / X-Forwarded-For (with `--reverse-proxy`). */
  trusted?: IpMatcher;
  /** The folder holding `autorun/` (the root site). */
  projectDir: string;
}

/** A site as `sandflare sites` shows it. */
export interface SiteDescription {
  name: string;
  root: boolean;
  dir: string;
  loaded: boolean;
  problem: string | null;
  hosts: string[];
  pages: { method: string; host: string; route: string }[];
  staticFiles: number;
  websockets: { host: string; path: string; protocol: string | null }[];
  permissions: {
    read: string[];
    write: string[];
    net: string[];
    env: boolean | string[];
  } | null;
  workers: number | null;
  memory: number | null;
}

/** A site that could not be loaded. */
export interface SiteProblem {
  site: string;
  message: string;
}

/**
 * Headers a site may not set: the connection's, which the gateway owns, and
 * the file-handover ones a front proxy obeys (only the gateway may send
 * those, for files it has checked).
 */
const HOP_BY_HOP = new Set([
  "x-accel-redirect",
  "x-sendfile",
  "x-lighttpd-send-file",
  "x-accel-buffering",
  "x-accel-charset",
  "x-accel-expires",
  "x-accel-limit-rate",
  "connection",
  "content-length",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
  "server",
  "date",
]);

const EMPTY = new Uint8Array(0);
const TOKEN_REGEXP = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
const BAD_VALUE_REGEXP = /[\0\r\n]/;
const SERVER_HEADER: [string, string] = ["server", "sandflare"];

/** Response headers as the Response constructor takes them, cheaply. */
type HeaderList = [string, string][];

/** Upgraders by lower-cased `Upgrade` token (the seed's `hosts.upgrades`). */
type Upgrader = (request: Request, ctx: RequestContext) => Promise<Answer>;

interface RequestContext {
  wire: WireRequest;
  headers: Headers;
  accept: string | null;
  /** Set once the site's Error hook has rendered for this request. */
  errorRendered?: boolean;
}

interface Answer {
  response: Response;
  site: string;
  bytes: number;
}

/** The gateway of one server. */
export class Gateway {
  readonly options: GatewayOptions;
  #runners = new Map<string, SiteRunner>();
  #router: Router = buildRouter([]);
  #wsRouter: Router = buildRouter([]);
  #sockets: WebSocketHub;
  #sessions: SessionStore | null = null;
  #latency = new LatencyTracker();
  #startedAt = Date.now();
  /** Sites whose last load failed, with why (for /stats). */
  #notLoaded = new Map<string, string>();
  #purge: ReturnType<typeof setInterval> | null = null;
  #mime: MimeTable = new Map();
  #upgrades = new Map<string, Upgrader>();
  #watches = new Map<string, Watch>();
  #static = new Map<string, StaticIndex>();
  #files = new FileCache({ mime: new Map(), maxEtagSize: 0 });
  /** Conflicts already reported, so each is logged once. */
  #conflicts = new Set<string>();
  #sitesWatch: Watch | null = null;
  #stopping = false;

  get #watching(): boolean {
    return this.#sitesWatch !== null;
  }

  constructor(options: GatewayOptions) {
    this.options = options;
    this.#sockets = new WebSocketHub({
      maxMessage: options.listen.websocketMaxMessage,
      maxBuffer: options.listen.websocketMaxBuffer,
      keyOf: (generation, channel) => {
        const reg = generation.routes?.websockets[channel];
        return reg === undefined ? null : socketKey(reg);
      },
    });
    this.#upgrades.set(
      "websocket",
      (request, ctx) => this.#upgradeWebSocket(request, ctx),
    );
  }

  /** The running sites. */
  get runners(): ReadonlyMap<string, SiteRunner> {
    return this.#runners;
  }

  /** Loads the root site and every site folder; returns those that failed. */
  async loadSites(): Promise<SiteProblem[]> {
    this.#mime = await loadMimeTable();
    this.#openSessions();
    this.#files = new FileCache({
      mime: this.#mime,
      maxEtagSize: this.options.listen.maxEtagSize,
    });
    const problems: SiteProblem[] = [];
    const defs: SiteDefinition[] = [];
    try {
      defs.push(await defineRootSite(this.options.projectDir));
    } catch (err) {
      problems.push({ site: ROOT_SITE, message: messageOf(err) });
    }
    const { sites, errors, names } = await discoverSites(
      this.options.listen.sitesDir,
    );
    this.#folderNames = new Set(names);
    defs.push(...sites);
    for (const e of errors) problems.push({ site: e.site, message: e.message });
    const results = await Promise.all(defs.map((def) => this.#startSite(def)));
    for (const problem of results) if (problem !== null) problems.push(problem);
    this.#rebuild();
    for (const p of problems) {
      log.error(p.site, `Site not loaded: ${p.message}`);
      this.#notLoaded.set(p.site, p.message);
    }
    return problems;
  }

  async #startSite(def: SiteDefinition): Promise<SiteProblem | null> {
    const runner: SiteRunner = new SiteRunner(def, {
      check: (d, routes) =>
        this.#checkRoutes(
          d,
          routes,
          this.#static.get(d.name) ?? emptyStaticIndex(),
        ),
      threads: this.options.listen.threads,
      requestTimeout: this.options.listen.requestTimeout,
      queue: this.options.listen.siteQueue,
      spawn: (d): SandboxProcess => this.#spawn(d, runner),
    });
    try {
      const files = await this.#scanStatic(def);
      const { sandbox, routes } = await runner.load();
      const problem = this.#checkRoutes(def, routes, files);
      if (problem !== null) {
        sandbox.kill("its routes were refused");
        return { site: def.name, message: problem };
      }
      if (this.#stopping) {
        sandbox.kill("the server is stopping");
        return null;
      }
      runner.adopt(sandbox, routes);
      this.#static.set(def.name, files);
      this.#runners.set(def.name, runner);
      log.info(def.name, describeLoad(def, routes, sandbox.pid));
      return null;
    } catch (err) {
      return { site: def.name, message: messageOf(err) };
    }
  }

  #define(name: string): Promise<SiteDefinition> {
    return name === ROOT_SITE
      ? defineRootSite(this.options.projectDir)
      : defineSite(name, join(this.options.listen.sitesDir, name));
  }

  /**
   * Loads a new generation of one site (or starts a site that was not
   * running); the old generation serves until the new one has loaded.
   */
  async reloadSite(name: string): Promise<void> {
    if (this.#stopping) return;
    let def: SiteDefinition;
    try {
      def = await this.#define(name);
    } catch (err) {
      if (err instanceof Deno.errors.NotFound && name !== ROOT_SITE) {
        await this.rescan(); // the folder went away: that stops the site
        return;
      }
      const running = this.#runners.has(name);
      log.error(
        name,
        running
          ? `Reload failed, the previous version keeps serving: ${
            messageOf(err)
          }`
          : `Site not loaded: ${messageOf(err)}`,
      );
      return;
    }
    const runner = this.#runners.get(name);
    if (runner === undefined) {
      const problem = await this.#startSite(def);
      if (problem !== null) {
        log.error(name, `Site not loaded: ${problem.message}`);
        this.#notLoaded.set(name, problem.message);
      } else {
        this.#notLoaded.delete(name);
        this.#rebuild();
      }
      return;
    }
    let files: StaticIndex;
    try {
      files = await this.#scanStatic(def);
    } catch (err) {
      log.error(
        name,
        `Reload failed, the previous version keeps serving: ${messageOf(err)}`,
      );
      return;
    }
    await runner.reload(
      def,
      (d, routes) => this.#checkRoutes(d, routes, files),
      () => {
        this.#static.set(name, files);
        this.#files.clear();
        this.#files.clear();
        this.#rebuild();
      },
    );
  }

  /** Reloads every site and picks up sites added or removed (SIGHUP). */
  async reloadAll(): Promise<void> {
    await this.rescan();
    await Promise.all([...this.#runners.keys()].map((n) => this.reloadSite(n)));
  }

  /** Starts watching every site folder, the root site and the sites folder. */
  watch(): void {
    const autorun = join(this.options.projectDir, "autorun");
    this.#watches.set(
      ROOT_SITE,
      watchFolder(autorun, {
        site: ROOT_SITE,
        ignore: (path) => !isCodeFile(path),
        onChange: () => void this.reloadSite(ROOT_SITE),
      }),
    );
    this.#sitesWatch = watchFolder(this.options.listen.sitesDir, {
      site: null,
      recursive: false,
      onChange: () => void this.rescan(),
    });
    for (const name of this.#folderNames) this.#watchSite(name);
  }

  /** Site folder names seen by the last scan. */
  #folderNames = new Set<string>();

  #watchSite(name: string): void {
    const folder = join(this.options.listen.sitesDir, name);
    let dir: string;
    try {
      dir = Deno.realPathSync(folder);
    } catch {
      return;
    }
    this.#watches.get(name)?.close();
    this.#watches.set(
      name,
      watchFolder(dir, {
        site: name,
        ignore: (path) => this.#changeKind(name, dir, path) === null,
        onChange: (paths) => {
          const kinds = paths.map((p) => this.#changeKind(name, dir, p));
          if (kinds.includes("code")) void this.reloadSite(name);
          else if (kinds.includes("static")) void this.rescanStatic(name);
        },
      }),
    );
  }

  /**
   * What a changed path means: code and site.json reload the site, files
   * under static/ re-index them, the site's writable folders and anything
   * else count for nothing.
   */
  #changeKind(
    name: string,
    dir: string,
    path: string,
  ): "code" | "static" | null {
    const rel = relative(dir, path);
    if (rel === "" || !isInside(dir, path)) return null;
    if (rel === "static" || rel.startsWith(`static${SEP}`)) return "static";
    const writable = this.#runners.get(name)?.def.manifest.permissions.write ??
      [];
    if (writable.some((w) => isInside(w, path))) return null;
    return rel === "site.json" || isCodeFile(path) ? "code" : null;
  }

  #scanStatic(def: SiteDefinition): Promise<StaticIndex> {
    return scanStatic(join(def.dir, "static"));
  }

  /** Re-indexes a site's static files (they changed; its code did not). */
  async rescanStatic(name: string): Promise<void> {
    const runner = this.#runners.get(name);
    if (runner === undefined || runner.routes === null || this.#stopping) {
      return;
    }
    try {
      const files = await this.#scanStatic(runner.def);
      const problem = this.#checkRoutes(runner.def, runner.routes, files);
      if (problem !== null) {
        log.error(name, `Static files not updated: ${problem}`);
        return;
      }
      this.#static.set(name, files);
      this.#rebuild();
    } catch (err) {
      log.error(name, `Static files not updated: ${messageOf(err)}`);
    }
  }

  /** Starts sites whose folders appeared and stops those whose folders went. */
  async rescan(): Promise<void> {
    if (this.#stopping) return;
    const names = new Set(await siteFolderNames(this.options.listen.sitesDir));
    const added = [...names].filter((n) => !this.#folderNames.has(n));
    const removed = [...this.#folderNames].filter((n) => !names.has(n));
    this.#folderNames = names;
    for (const name of removed) {
      this.#watches.get(name)?.close();
      this.#watches.delete(name);
      const runner = this.#runners.get(name);
      if (runner === undefined) continue;
      this.#runners.delete(name);
      this.#static.delete(name);
      this.#rebuild();
      log.info(name, "Site folder removed: the site is stopped");
      await runner.stop(10_000);
    }
    await Promise.all(added.map(async (name) => {
      if (this.#watching) this.#watchSite(name);
      log.info(name, "Site folder added");
      await this.reloadSite(name);
    }));
  }

  #spawn(def: SiteDefinition, runner: SiteRunner): SandboxProcess {
    const { read, write, net, env } = def.manifest.permissions;
    const names = Array.isArray(env)
      ? env
      : env
      ? Object.keys(Deno.env.toObject())
      : [];
    const passed: Record<string, string> = {};
    for (const name of names) {
      const value = Deno.env.get(name);
      if (value !== undefined) passed[name] = value;
    }
    const sandbox = new SandboxProcess({
      site: def.name,
      siteDir: def.dir,
      scripts: def.scripts,
      workers: runner.workersOf(def),
      permissions: { read: [...def.baseRead, ...read], write, net, env },
      memory: def.manifest.memory,
      env: passed,
      // Room for two of the largest request bodies on top of the default.
      maxInputBacklog: 64 * 1024 * 1024 +
        2 * this.options.listen.maxPostLength,
    }, {
      onStderr: siteOutput(def.name),
      onSiteMessage: (from, msg, body) => {
        if (msg.t === "wsSend" || msg.t === "wsClose") {
          this.#sockets.fromSite(def.name, from, msg, body);
        } else {
          from.post(this.#sessionAnswer(def.name, msg));
        }
      },
    });
    void sandbox.exited.then(() =>
      this.#sockets.closeGeneration(
        sandbox,
        sandbox.retired ? 1012 : 1011,
        sandbox.retired
          ? "The site was reloaded"
          : "The site's sandbox stopped",
      )
    );
    return sandbox;
  }

  /**
   * Answers a site's session question. Sessions are keyed by the site's
   * name, which the gateway knows from the sandbox that asked: a site can
   * never reach another's sessions, whatever id it sends.
   */
  #sessionAnswer(
    site: string,
    msg: Extract<SiteMessage, { t: "sessionGet" | "sessionSave" }>,
  ): Extract<ToSandbox, { t: "sessionResult" }> {
    const { sessionMaxAge, tlsCert } = this.options.listen;
    const cookie = { secure: tlsCert !== null, maxAge: sessionMaxAge };
    const store = this.#sessions;
    try {
      if (store === null) throw new Error("Sessions are not available");
      if (msg.t === "sessionGet") {
        if (msg.id !== null && isSessionId(msg.id)) {
          const found = store.get(site, msg.name, msg.id);
          if (found !== null) {
            return {
              t: "sessionResult",
              call: msg.call,
              session: {
                id: msg.id,
                data: found.data,
                fresh: false,
                ...cookie,
              },
              error: null,
            };
          }
        }
        return {
          t: "sessionResult",
          call: msg.call,
          session: { id: newSessionId(), data: {}, fresh: true, ...cookie },
          error: null,
        };
      }
      if (!isSessionId(msg.id)) throw new TypeError("Not a session id");
      store.set(site, msg.name, msg.id, {
        data: msg.data,
        expires: Date.now() + sessionMaxAge * 1000,
      });
      return {
        t: "sessionResult",
        call: msg.call,
        session: { id: msg.id, data: msg.data, fresh: false, ...cookie },
        error: null,
      };
    } catch (err) {
      const message =
        err instanceof SessionLimitError || err instanceof TypeError
          ? err.message
          : "The session store failed";
      if (!(err instanceof SessionLimitError || err instanceof TypeError)) {
        log.error(site, `Session store: ${(err as Error).message}`);
      }
      return {
        t: "sessionResult",
        call: msg.call,
        session: null,
        error: message,
      };
    }
  }

  /** A site's routes with its static files, as the router takes them. */
  #table(
    name: string,
    root: boolean,
    routes: WireRoutes,
    files: StaticIndex,
  ): SiteRoutes {
    const hosts = [...routes.hosts];
    for (const h of files.hosts) {
      if (!hosts.some((x) => x.pattern === h.pattern)) hosts.push(h);
    }
    return {
      site: name,
      root,
      hosts,
      pages: [...routes.pages, ...files.pages],
    };
  }

  /** Checks a site's registrations; a message when they are refused. */
  #checkRoutes(
    def: SiteDefinition,
    routes: WireRoutes,
    files: StaticIndex,
  ): string | null {
    const table = this.#table(def.name, def.root, routes, files);
    // Every host the site touches counts: declared hosts, the host of each
    // page and of each websocket (a forged table could name others).
    const touched = [
      ...table.hosts,
      ...table.pages.map((p) => ({ pattern: p.host, noFallback: false })),
      ...routes.websockets.map((w) => ({ pattern: w.host, noFallback: false })),
    ];
    const claim = checkHostClaims(
      { hosts: touched },
      def.manifest.hosts,
      { root: def.root, file: join(def.dir, "site.json") },
    );
    if (claim !== null) return claim;
    try {
      buildRouter([table]);
      buildRouter([{ ...table, pages: socketPages(routes) }]);
    } catch (err) {
      if (err instanceof RouteTableError) return err.message;
      throw err;
    }
    return null;
  }

  #rebuild(): void {
    const tables: SiteRoutes[] = [];
    const socketTables: SiteRoutes[] = [];
    for (const runner of this.#runners.values()) {
      if (runner.routes === null) continue;
      const files = this.#static.get(runner.name) ?? emptyStaticIndex();
      const table = this.#table(
        runner.name,
        runner.def.root,
        runner.routes,
        files,
      );
      const sockets = { ...table, pages: socketPages(runner.routes) };
      // Checked at load; checked again here so one bad table can never
      // take the router (and every other site) down with it.
      try {
        buildRouter([table]);
        buildRouter([sockets]);
      } catch (err) {
        log.error(runner.name, `Routes left out: ${messageOf(err)}`);
        continue;
      }
      tables.push(table);
      socketTables.push(sockets);
    }
    this.#router = buildRouter(tables, { rootSite: ROOT_SITE });
    // Websocket endpoints get a router of their own (over the same hosts),
    // so a plain GET never meets them and an upgrade never meets a page.
    this.#wsRouter = buildRouter(socketTables, { rootSite: ROOT_SITE });
    const conflicts = new Set(findConflicts(tables));
    for (const c of conflicts) if (!this.#conflicts.has(c)) log.warn(null, c);
    this.#conflicts = conflicts;
  }

  /** Stops watching and stops every site; in-flight requests get up to `graceMs`. */
  async stop(graceMs: number): Promise<void> {
    this.#stopping = true;
    if (this.#purge !== null) clearInterval(this.#purge);
    this.#sitesWatch?.close();
    for (const w of this.#watches.values()) w.close();
    this.#watches.clear();
    this.#sockets.closeAll(1001, "The server is shutting down");
    await Promise.all([...this.#runners.values()].map((r) => r.stop(graceMs)));
    this.#sessions?.close();
    this.#sessions = null;
  }

  /** Handles one request; also says how many body bytes the answer sends. */
  handle = async (
    request: Request,
    info: Deno.ServeHandlerInfo,
  ): Promise<{ response: Response; bytes: number }> => {
    const time = new Date();
    const started = performance.now();
    // Read before answering: an upgraded request can no longer be read.
    const { method, url } = request;
    const peer = (info.remoteAddr as Deno.NetAddr).hostname;
    let answer: Answer;
    try {
      answer = await this.#process(request, info, time.getTime());
    } catch (err) {
      const ref = crypto.randomUUID().slice(0, 8);
      log.error(
        null,
        `[ref ${ref}] Request failed in the gateway: ${stackOf(err)}`,
      );
      answer = this.#defaultError(
        500,
        `Internal Server Error (ref ${ref})`,
        null,
        method,
        ROOT_SITE,
      );
    }
    log.access(accessLine({
      peer,
      time,
      method,
      target: requestTarget(url),
      status: answer.response.status,
      bytes: answer.bytes,
      ms: performance.now() - started,
      site: answer.site,
    }));
    this.#latency.record(answer.site, performance.now() - started);
    return answer;
  };

  async #process(
    request: Request,
    info: Deno.ServeHandlerInfo,
    startTime: number,
  ): Promise<Answer> {
    const method = request.method;
    const accept = request.headers.get("accept");
    let target;
    try {
      target = parseTarget(request.url);
    } catch (err) {
      if (err instanceof TargetError) {
        return this.#defaultError(400, err.message, accept, method, ROOT_SITE);
      }
      throw err;
    }
    let peer = (info.remoteAddr as Deno.NetAddr).hostname;
    if (this.options.listen.reverseProxy) {
      const client = clientAddress(peer, {
        realIp: request.headers.get("x-real-ip"),
        forwardedFor: request.headers.get("x-forwarded-for"),
      }, this.options.trusted ?? (() => false));
      if (client.kind === "untrusted") {
        return this.#defaultError(
          403,
          "Only trusted reverse proxies may connect to this server",
          accept,
          method,
          ROOT_SITE,
        );
      }
      if (client.kind === "malformed") {
        return this.#defaultError(
          400,
          `The ${client.header} header is not a valid address`,
          accept,
          method,
          ROOT_SITE,
        );
      }
      peer = client.peer;
    }
    const hostHeader = request.headers.get("host") ?? "";
    const wire: WireRequest = {
      method,
      path: target.path,
      fullUrl: target.raw,
      query: target.query,
      // Filled only when a site sees the request (static files and
      // gateway errors never need it): see withHeaders().
      headers: [],
      host: normalizeHost(hostHeader),
      peer,
      startTime,
      upgraded: false,
    };
    const ctx: RequestContext = { wire, accept, headers: request.headers };

    const upgrade = upgradeToken(request.headers);
    if (upgrade !== null) {
      const upgrader = this.#upgrades.get(upgrade);
      if (upgrader === undefined) {
        return this.#error(
          404,
          `Upgrade not found: ${upgrade}`,
          ROOT_SITE,
          ctx,
        );
      }
      return upgrader(request, ctx);
    }

    const route = this.#router.route(hostHeader, target.path, method);
    if (
      route.kind === "error" && route.status === 404 && target.path === "/stats"
    ) {
      return this.#stats(ctx, target.query);
    }
    if (route.kind === "error") {
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
    const runner = this.#runners.get(route.site);
    if (runner === undefined) {
      return this.#error(
        404,
        `No page at ${JSON.stringify(target.path)}`,
        ROOT_SITE,
        ctx,
      );
    }
    if (route.pageId < 0) return this.#sendStatic(runner, route.pageId, ctx);
    // Page ids belong to the generation routed against: keep it until dispatched.
    const generation = runner.generation;
    generation?.hold();
    let outcome;
    try {
      const body = await readBody(
        request,
        this.options.listen.maxPostLength,
        this.options.listen.keepaliveTime * 1000,
      );
      if (body === "too large") {
        return this.#error(
          413,
          `The request body is larger than ${this.options.listen.maxPostLength} bytes`,
          route.site,
          ctx,
        );
      }
      if (body === "stalled") {
        const answer = this.#defaultError(
          408,
          `The request body paused for ${this.options.listen.keepaliveTime} s, or arrived at under ${MIN_BODY_BYTES_PER_SECOND} bytes a second`,
          accept,
          method,
          route.site,
        );
        answer.response.headers.set("connection", "close");
        return answer;
      }
      withHeaders(ctx);
      outcome = await runner.dispatch(
        route.pageId,
        route.captures,
        wire,
        body,
        generation,
      );
    } finally {
      generation?.release();
    }
    if (outcome.kind === "failed") {
      return this.#defaultError(
        outcome.status,
        outcome.message,
        accept,
        method,
        runner.name,
      );
    }
    return this.#fromReply(runner, outcome.reply, ctx);
  }

  #fromReply(
    runner: SiteRunner,
    { reply, body }: SandboxReply,
    ctx: RequestContext,
  ): Answer | Promise<Answer> {
    switch (reply.kind) {
      case "body": {
        const headers = siteHeaders(reply.headers);
        if (headers === null) {
          log.error(
            runner.name,
            `A page set an invalid response header; answered 502 instead`,
          );
          return this.#defaultError(
            502,
            "The site sent an invalid response",
            ctx.accept,
            ctx.wire.method,
            runner.name,
          );
        }
        return this.#send(
          reply.status,
          headers,
          body,
          ctx.wire.method,
          runner.name,
        );
      }
      case "file":
        return this.#sendSiteFile(runner, reply, ctx);
      case "error":
        return this.#defaultError(
          reply.code,
          reply.message,
          ctx.accept,
          ctx.wire.method,
          runner.name,
        );
      default:
        return reply satisfies never;
    }
  }

  async #sendSiteFile(
    runner: SiteRunner,
    reply: Extract<WireReply, { kind: "file" }>,
    ctx: RequestContext,
  ): Promise<Answer> {
    const found = await lookupSiteFile(runner.def.dir, reply.path);
    if (found.kind === "refused") {
      if (found.status === 403) {
        log.warn(
          runner.name,
          `setFile(${JSON.stringify(reply.path)}) refused: ${found.message}`,
        );
      }
      return this.#error(found.status, found.message, runner.name, ctx);
    }
    if (found.kind === "directory") {
      if (!reply.listDirectory) {
        return this.#error(
          403,
          "This is a folder, and listing it was not asked for",
          runner.name,
          ctx,
        );
      }
      return this.#listDirectory(runner, found.path, ctx);
    }
    const headers = siteHeaders(reply.headers) ?? [];
    const { xSendfile, xAccelRedirect } = this.options.listen;
    if (xSendfile || xAccelRedirect !== null) {
      if (!hasHeader(headers, "content-type")) {
        headers.push(["content-type", contentTypeFor(this.#mime, found.path)]);
      }
      if (xSendfile) headers.push(["x-sendfile", found.path]);
      else {headers.push([
          "x-accel-redirect",
          accelPath(xAccelRedirect!, found.path),
        ]);}
      return this.#send(
        reply.status,
        headers,
        EMPTY,
        ctx.wire.method,
        runner.name,
      );
    }
    return this.#sendFile(
      runner.name,
      found.path,
      runner.def.dir,
      ctx,
      headers,
      reply.status,
    );
  }

  async #sendFile(
    site: string,
    path: string,
    boundary: string,
    ctx: RequestContext,
    headers: HeaderList = [],
    status = 200,
  ): Promise<Answer> {
    const file = await this.#files.get(path, boundary);
    if (file === null) {
      return this.#error(
        404,
        `No page at ${JSON.stringify(ctx.wire.path)}`,
        site,
        ctx,
      );
    }
    headers.push(SERVER_HEADER);
    const answer = await fileAnswer(
      { method: ctx.wire.method, headers: ctx.headers },
      file,
      headers,
      status,
    );
    return { ...answer, site };
  }

  /** A static file routed like a page. */
  #sendStatic(
    runner: SiteRunner,
    id: number,
    ctx: RequestContext,
  ): Answer | Promise<Answer> {
    const entry = this.#static.get(runner.name)?.entries.get(id);
    if (entry === undefined) {
      return this.#error(
        404,
        `No page at ${JSON.stringify(ctx.wire.path)}`,
        runner.name,
        ctx,
      );
    }
    // The common case, answered without a turn of the event loop: a small
    // file checked within the last second, a plain GET.
    const file = this.#files.peek(entry.file, runner.def.dir);
    if (
      file !== null && file.text !== null && ctx.wire.method === "GET" &&
      !isConditional(ctx.headers)
    ) {
      const headers: HeaderList = [...file.baseHeaders, [
        "content-length",
        String(file.size),
      ], SERVER_HEADER];
      return {
        response: new Response(file.text, { status: 200, headers }),
        site: runner.name,
        bytes: file.size,
      };
    }
    // The real path must stay in the site (a link may have changed since the scan).
    return this.#sendFile(runner.name, entry.file, runner.def.dir, ctx);
  }

  /** The default listing of a folder (the site's ListDirectory hook did not answer). */
  async #listDirectory(
    runner: SiteRunner,
    dir: string,
    ctx: RequestContext,
  ): Promise<Answer> {
    const entries: ListingEntry[] = [];
    for await (const e of Deno.readDir(dir)) {
      const info = await Deno.stat(join(dir, e.name)).catch(() => null);
      if (info === null) continue;
      const real = await Deno.realPath(join(dir, e.name)).catch(() => "");
      if (!isInside(runner.def.dir, real)) continue;
      entries.push({
        name: e.name,
        directory: info.isDirectory,
        size: info.size,
        modified: info.mtime?.getTime() ?? null,
      });
    }
    const title = ctx.wire.path.endsWith("/")
      ? ctx.wire.path
      : `${ctx.wire.path}/`;
    const headers: HeaderList = [["content-type", "text/html; charset=utf-8"]];
    return this.#send(
      200,
      headers,
      renderListing(title, entries),
      ctx.wire.method,
      runner.name,
    );
  }

  #send(
    status: number,
    headers: HeaderList,
    body: Uint8Array | string,
    method: string,
    site: string,
  ): Answer {
    headers.push(SERVER_HEADER);
    const bytes = typeof body === "string" ? utf8Length(body) : body.length;
    if (method === "HEAD" || status === 204 || status === 304) {
      if (method === "HEAD") headers.push(["content-length", String(bytes)]);
      return {
        response: new Response(null, { status, headers }),
        site,
        bytes: 0,
      };
    }
    return {
      response: new Response(body as BodyInit, { status, headers }),
      site,
      bytes,
    };
  }

  /** An error page, through the owning site's `Error` hook when it has one. */
  async #error(
    code: number,
    message: string,
    owner: string,
    ctx: RequestContext,
  ): Promise<Answer> {
    const runner = this.#runners.get(owner);
    // The Error hook renders at most once per request: an error page that
    // itself fails (a missing setFile, say) gets the default page.
    if (
      runner !== undefined && runner.routes?.hooks.includes("Error") &&
      !ctx.errorRendered
    ) {
      ctx.errorRendered = true;
      const rendered = await runner.renderError(
        code,
        message,
        withHeaders(ctx).wire,
      );
      if (rendered !== null) return this.#fromReply(runner, rendered, ctx);
    }
    return this.#defaultError(
      code,
      message,
      ctx.accept,
      ctx.wire.method,
      owner,
    );
  }

  #defaultError(
    code: number,
    message: string,
    accept: string | null,
    method: string,
    site: string,
  ): Answer {
    const page = errorPage(code, message, accept);
    const headers: HeaderList = [["content-type", page.contentType]];
    return this.#send(
      code,
      headers,
      page.body,
      method,
      site,
    );
  }

  #upgradeWebSocket(
    request: Request,
    ctx: RequestContext,
  ): Promise<Answer> {
    const route = this.#wsRouter.route(
      request.headers.get("host") ?? "",
      ctx.wire.path,
      "GET",
    );
    if (route.kind === "error") {
      const message = route.status === 404
        ? `No websocket is registered at ${JSON.stringify(ctx.wire.path)}`
        : route.message;
      return this.#error(
        route.status === 405 ? 404 : route.status,
        message,
        route.owner,
        ctx,
      );
    }
    const runner = this.#runners.get(route.site);
    const generation = runner?.generation ?? null;
    const routes = runner?.routes ?? null;
    const first = routes?.websockets[route.pageId - WS_PAGE_BASE];
    if (
      runner === undefined || generation === null || routes === null ||
      first === undefined
    ) {
      return this.#error(
        503,
        "The site is not available right now",
        route.site,
        ctx,
      );
    }
    const candidates = routes.websockets.filter((w) =>
      w.host === first.host && w.path === first.path
    );
    const offered = (request.headers.get("sec-websocket-protocol") ?? "")
      .split(",").map((p) => p.trim()).filter((p) => p !== "");
    const chosen = offered.length > 0
      ? offered.map((p) => candidates.find((c) => c.protocol === p)).find((c) =>
        c !== undefined
      ) ??
        candidates.find((c) => c.protocol === null)
      : candidates.find((c) => c.protocol === null) ?? candidates[0];
    if (chosen === undefined) {
      return this.#error(
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
      return Promise.resolve(this.#defaultError(
        400,
        `Bad websocket upgrade: ${(err as Error).message}`,
        ctx.accept,
        ctx.wire.method,
        runner.name,
      ));
    }
    this.#sockets.accept(upgraded.socket, {
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

  #openSessions(): void {
    const file = join(this.options.listen.dataDir, "sessions.sqlite");
    try {
      this.#sessions = openSqliteSessionStore(file);
    } catch (err) {
      log.error(
        null,
        `Sessions are off: cannot open ${file} (--data-dir): ${
          (err as Error).message
        }`,
      );
      return;
    }
    const purge = () => {
      try {
        const n = this.#sessions?.purge() ?? 0;
        if (n > 0) log.info(null, `Purged ${n} expired session(s)`);
      } catch (err) {
        log.error(null, `Session purge failed: ${(err as Error).message}`);
      }
    };
    purge();
    this.#purge = setInterval(purge, 60_000);
  }

  /** /stats, built in, for local peers only (a site may claim the path). */
  #stats(ctx: RequestContext, query: string): Promise<Answer> | Answer {
    if (!isLocalPeer(ctx.wire.peer)) {
      return this.#error(403, "/stats is only for local peers", ROOT_SITE, ctx);
    }
    const sites: SiteStats[] = [];
    for (const runner of this.#runners.values()) {
      const latency = this.#latency.percentiles(runner.name);
      const rss = runner.generation?.rssBytes ?? null;
      sites.push({
        name: runner.name,
        state: runner.ready ? "serving" : "restarting",
        ...runner.counters,
        p50Ms: latency?.p50 ?? null,
        p99Ms: latency?.p99 ?? null,
        memoryMiB: rss === null ? null : Math.round(rss / 1024 / 102.4) / 10,
        websockets: this.#sockets.count(runner.name),
        lastProblem: runner.lastProblem,
        recentMs: this.#latency.recent(runner.name, 60),
      });
    }
    for (const [name, problem] of this.#notLoaded) {
      if (this.#runners.has(name)) continue;
      sites.push({
        name,
        state: "not loaded",
        requests: 0,
        errors: 0,
        overloaded: 0,
        restarts: 0,
        reloads: 0,
        p50Ms: null,
        p99Ms: null,
        memoryMiB: null,
        websockets: 0,
        lastProblem: problem,
        recentMs: [],
      });
    }
    const stats: Stats = {
      version: VERSION,
      uptimeSeconds: (Date.now() - this.#startedAt) / 1000,
      sites,
    };
    const json = new URLSearchParams(query).get("format") === "json" ||
      wantsJson(ctx.accept);
    return json
      ? this.#send(
        200,
        [["content-type", "application/json; charset=utf-8"], [
          "cache-control",
          "no-store",
        ]],
        JSON.stringify(stats),
        ctx.wire.method,
        ROOT_SITE,
      )
      : this.#send(
        200,
        [["content-type", "text/html; charset=utf-8"], [
          "cache-control",
          "no-store",
        ]],
        renderStatsPage(stats),
        ctx.wire.method,
        ROOT_SITE,
      );
  }

  /** What every site registered and may do, for `sandflare sites`. */
  describe(): SiteDescription[] {
    const out: SiteDescription[] = [];
    for (const runner of this.#runners.values()) {
      const routes = runner.routes;
      const files = this.#static.get(runner.name) ?? emptyStaticIndex();
      const { permissions } = runner.def.manifest;
      out.push({
        name: runner.name,
        root: runner.def.root,
        dir: runner.def.dir,
        loaded: true,
        problem: null,
        hosts: [
          ...new Set(
            [...(routes?.hosts ?? []), ...files.hosts].map((h) => h.pattern),
          ),
        ],
        pages: (routes?.pages ?? []).map((p) => ({
          method: p.method,
          host: p.host,
          route: p.path ??
            `~ ${p.regex!.source}${
              p.regex!.flags === "" ? "" : ` (flags ${p.regex!.flags})`
            }`,
        })),
        staticFiles: files.entries.size,
        websockets: (routes?.websockets ?? []).map((w) => ({
          host: w.host,
          path: w.path,
          protocol: w.protocol,
        })),
        permissions: {
          read: [...runner.def.baseRead, ...permissions.read],
          write: permissions.write,
          net: permissions.net,
          env: permissions.env,
        },
        workers: runner.workersOf(runner.def),
        memory: runner.def.manifest.memory,
      });
    }
    for (const [name, problem] of this.#notLoaded) {
      if (this.#runners.has(name)) continue;
      out.push({
        name,
        root: name === ROOT_SITE,
        dir: name === ROOT_SITE
          ? this.options.projectDir
          : join(this.options.listen.sitesDir, name),
        loaded: false,
        problem,
        hosts: [],
        pages: [],
        staticFiles: 0,
        websockets: [],
        permissions: null,
        workers: null,
        memory: null,
      });
    }
    return out.sort((
      a,
      b,
    ) => (a.root
      ? -1
      : b.root
      ? 1
      : a.name < b.name
      ? -1
      : a.name > b.name
      ? 1
      : 0)
    );
  }

  /** Closes every websocket (the server is stopping). */
  closeSockets(): void {
    this.#sockets.closeAll(1001, "The server is shutting down");
  }

  /** Open websocket clients of a site. */
  socketCount(site: string): number {
    return this.#sockets.count(site);
  }

  /** Open websocket clients of every site. */
  openSockets(): number {
    return this.#sockets.size;
  }
}

/** Websocket endpoints are routed as pages with ids from here on. */
const WS_PAGE_BASE = 1_000_000_000;
const VERSION: string = denoJson.version;

/** What identifies a websocket channel across a site's generations. */
function socketKey(reg: WireSocket): string {
  return `${reg.host}\0${reg.path}\0${reg.protocol ?? ""}`;
}

/** One pseudo-page per websocket host and path, for the websocket router. */
function socketPages(routes: WireRoutes | null): PageSpec[] {
  const pages: PageSpec[] = [];
  const seen = new Set<string>();
  for (const reg of routes?.websockets ?? []) {
    const key = `${reg.host}\0${reg.path}`;
    if (seen.has(key)) continue;
    seen.add(key);
    pages.push({
      id: WS_PAGE_BASE + reg.id,
      host: reg.host,
      method: "GET",
      path: reg.path,
    });
  }
  return pages;
}

const CODE_FILE_REGEXP = /\.(ts|tsx|mts|js|jsx|mjs|json)$/;

function isCodeFile(path: string): boolean {
  return CODE_FILE_REGEXP.test(path);
}

/**
 * `X-Accel-Redirect` for a file: the prefix and the real path joined with
 * one slash, each segment percent-encoded.
 */
export function accelPath(prefix: string, path: string): string {
  const encoded = path.split("/").filter((s) => s !== "").map(
    encodeURIComponent,
  ).join("/");
  return `${prefix.replace(/\/+$/, "")}/${encoded}`;
}

function describeLoad(
  def: SiteDefinition,
  routes: WireRoutes,
  pid: number,
): string {
  const hosts = routes.hosts.map((h) => h.pattern).join(", ") || "none";
  return `Loaded ${def.scripts.length} script(s), ${routes.pages.length} page(s), hosts: ${hosts} (sandbox pid ${pid})`;
}

function messageOf(err: unknown): string {
  if (err instanceof LoadError && err.location !== null) {
    return `${err.location}: ${err.message}`;
  }
  if (err instanceof SiteError || err instanceof Error) return err.message;
  return String(err);
}

function stackOf(err: unknown): string {
  return err instanceof Error ? err.stack ?? err.message : String(err);
}

/** The `Upgrade` token when `Connection` asks for an upgrade, lower-cased. */
function upgradeToken(headers: Headers): string | null {
  const connection = headers.get("connection");
  const upgrade = headers.get("upgrade");
  if (connection === null || upgrade === null) return null;
  const asks = connection.split(",").some((t) =>
    t.trim().toLowerCase() === "upgrade"
  );
  if (!asks) return null;
  return (upgrade.split(",")[0] ?? "").trim().toLowerCase();
}

/** True when the request asks for a conditional or partial answer. */
function isConditional(headers: Headers): boolean {
  return headers.has("if-none-match") || headers.has("if-modified-since") ||
    headers.has("range");
}

/** Fills the request's header list for a site (once). */
function withHeaders(ctx: RequestContext): RequestContext {
  if (ctx.wire.headers.length === 0) {
    ctx.wire.headers = flattenHeaders(ctx.headers);
  }
  return ctx;
}

function flattenHeaders(headers: Headers): string[] {
  const flat: string[] = [];
  headers.forEach((value, name) => flat.push(name, value));
  return flat;
}

/** A site's response headers, without those the gateway owns; null if invalid. */
function siteHeaders(flat: string[]): HeaderList | null {
  const headers: HeaderList = [];
  for (let i = 0; i + 1 < flat.length; i += 2) {
    const name = flat[i]!;
    const value = flat[i + 1]!;
    if (!TOKEN_REGEXP.test(name) || BAD_VALUE_REGEXP.test(value)) return null;
    if (HOP_BY_HOP.has(name.toLowerCase())) continue;
    headers.push([name, value]);
  }
  return headers;
}

/** Bytes of `text` in UTF-8, without encoding it. */
function utf8Length(text: string): number {
  let n = text.length;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) continue;
    if (c >= 0xd800 && c <= 0xdbff) {
      n += 2; // a surrogate pair: 2 UTF-16 units, 4 bytes
      i++;
    } else n += c < 0x800 ? 1 : 2;
  }
  return n;
}

function hasHeader(headers: HeaderList, name: string): boolean {
  return headers.some(([n]) => n.toLowerCase() === name);
}

/** The slowest average rate a request body may arrive at, past its start. */
const MIN_BODY_BYTES_PER_SECOND = 500;

/** Reads a body of at most `limit` bytes; null when it is larger. */
async function readBody(
  request: Request,
  limit: number,
  stallMs: number,
): Promise<Uint8Array | "too large" | "stalled"> {
  const declared = request.headers.get("content-length");
  if (declared !== null && Number(declared) > limit) return "too large";
  if (request.body === null) return EMPTY;
  const chunks: Uint8Array[] = [];
  let size = 0;
  const reader = request.body.getReader();
  const started = Date.now();
  while (true) {
    // A client that stops sending its body (slow POST) is not waited for,
    // nor one that trickles it: after 4 stall times it must have sent
    // MIN_BODY_BYTES_PER_SECOND on average (like Apache's mod_reqtimeout).
    const deadline = started + 4 * stallMs +
      (size / MIN_BODY_BYTES_PER_SECOND) * 1000;
    const wait = Math.min(stallMs, deadline - Date.now());
    if (wait <= 0) {
      await reader.cancel().catch(() => {});
      return "stalled";
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const stalled = new Promise<"stalled">((resolve) => {
      timer = setTimeout(() => resolve("stalled"), wait);
    });
    const next = await Promise.race([reader.read(), stalled]);
    clearTimeout(timer);
    if (next === "stalled") {
      await reader.cancel().catch(() => {});
      return "stalled";
    }
    if (next.done) break;
    size += next.value.length;
    if (size > limit) {
      await reader.cancel().catch(() => {});
      return "too large";
    }
    chunks.push(next.value);
  }
  if (chunks.length === 1) return chunks[0]!;
  const body = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    body.set(c, offset);
    offset += c.length;
  }
  return body;
}
