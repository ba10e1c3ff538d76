/**
 * Testing a site's pages in-process, for a site's own `deno test`:
 * `import { testSite } from "sandflare/testing"`.
 *
 * `testSite(folder)` loads the site's autorun scripts in a Worker of the
 * test's own process (an isolate of their own, as in the server), routes
 * each request as the server does (its hosts, pages, mounted and default
 * fetch handlers, 404/405/409 through the site's `Error` hook), and returns
 * what the site answered as a standard `Response`, the way Hono's
 * `app.request()` does.
 *
 * What it leaves out: the sandbox's permissions (the scripts run with the
 * test's), the operator's grants, static files under `static/` and MIME
 * types (`res.setFile` answers with the file's bytes), websockets and
 * scheduler tasks. Sessions live in memory, per `testSite`.
 *
 * @example
 * ```ts ignore
 * import { testSite } from "sandflare/testing";
 * import assert from "node:assert/strict";
 *
 * Deno.test("the shop page", async () => {
 *   await using site = await testSite("sites/shop");
 *   const res = await site.request("/shop");
 *   assert.equal(res.status, 200);
 *   assert.match(await res.text(), /Shop/);
 * });
 * ```
 *
 * @module
 */

import { join, resolve } from "node:path";
import { listScripts, readManifest } from "../supervisor/sites.ts";
import { buildRouter, type Router } from "../router/router.ts";
import { parseTarget } from "../gateway/request_target.ts";
import { LINEAR_ENGINE } from "../shared/route_limits.ts";
import type { WireRequest } from "../protocol/messages.ts";
import type { FromTestWorker, ToTestWorker } from "./site_worker.ts";

/** A site loaded for tests. */
export interface TestSite {
  /** The site folder (absolute). */
  readonly dir: string;
  /**
   * Sends a request to the site. A path is asked of `http://localhost`;
   * give a full URL (or a Request) for another host.
   */
  request(input: string | URL | Request, init?: RequestInit): Promise<Response>;
  /** Stops the site's worker. */
  close(): void;
  [Symbol.asyncDispose](): Promise<void>;
}

/** Options of {@linkcode testSite}. */
export interface TestSiteOptions {
  /** The client's address the pages see. @default {"127.0.0.1"} */
  peer?: string;
}

/**
 * Loads the site in `folder` (relative to the working directory) for tests.
 *
 * @param folder the site folder, with its site.json and autorun/
 * @returns the loaded site; `close()` it (or `await using` it)
 * @throws {Error} when site.json is invalid or a script fails to load
 */
export async function testSite(
  folder: string,
  options: TestSiteOptions = {},
): Promise<TestSite> {
  const dir = await Deno.realPath(resolve(folder));
  const manifest = await readManifest(join(dir, "site.json"), dir);
  const scripts = await listScripts(join(dir, "autorun"));
  const worker = new Worker(new URL("./site_worker.ts", import.meta.url), {
    type: "module",
  });
  const waiting = new Map<number, (msg: FromTestWorker) => void>();
  let loaded: (msg: FromTestWorker) => void = () => {};
  const first = new Promise<FromTestWorker>((r) => loaded = r);
  worker.addEventListener("message", (event: MessageEvent<FromTestWorker>) => {
    const msg = event.data;
    if (msg.t === "loaded" || msg.t === "loadFailed") loaded(msg);
    else {
      waiting.get(msg.id)?.(msg);
      waiting.delete(msg.id);
    }
  });
  const send = (msg: ToTestWorker, transfer: Transferable[] = []) =>
    worker.postMessage(msg, transfer);
  send({ t: "load", siteDir: dir, scripts, hosts: manifest.hosts });
  const result = await first;
  if (result.t !== "loaded") {
    worker.terminate();
    throw new Error(
      `${dir}: the site did not load: ${
        result.t === "loadFailed" ? result.message : result.t
      }`,
    );
  }
  let router: Router;
  try {
    router = buildRouter([{
      site: "site",
      root: false,
      hosts: result.routes.hosts,
      pages: result.routes.pages,
      owns: manifest.hosts.filter((h) => h !== "*").map((pattern) => ({
        pattern,
        fallback: manifest.fallback.includes(pattern),
      })),
    }], { linear: LINEAR_ENGINE });
  } catch (err) {
    worker.terminate();
    throw err;
  }
  let nextId = 0;
  const ask = (msg: ToTestWorker, transfer: Transferable[] = []) =>
    new Promise<FromTestWorker>((resolveAnswer) => {
      waiting.set((msg as { id: number }).id, resolveAnswer);
      send(msg, transfer);
    });

  async function request(
    input: string | URL | Request,
    init?: RequestInit,
  ): Promise<Response> {
    const req = typeof input === "string" && input.startsWith("/")
      ? new Request(`http://localhost${input}`, init)
      : new Request(input, init);
    const url = new URL(req.url);
    const target = parseTarget(req.url);
    const body = new Uint8Array(await req.arrayBuffer());
    const headers: string[] = [];
    if (!req.headers.has("host")) headers.push("host", url.host);
    req.headers.forEach((value, name) => headers.push(name, value));
    const wire: WireRequest = {
      method: req.method,
      path: target.path,
      fullUrl: target.raw,
      scheme: url.protocol === "https:" ? "https" : "http",
      authority: url.host,
      query: target.query,
      headers,
      host: url.hostname.toLowerCase(),
      peer: options.peer ?? "127.0.0.1",
      startTime: Date.now(),
      upgraded: false,
    };
    const id = ++nextId;
    const route = router.route(url.host, target.path, req.method);
    const answer = route.kind === "page"
      ? await ask({
        t: "request",
        id,
        page: route.pageId,
        captures: route.captures,
        req: wire,
        body,
      }, [body.buffer])
      : await ask({
        t: "error",
        id,
        code: route.status,
        message: route.message,
        req: wire,
      });
    return toResponse(answer, route.kind === "error" ? route.allow : undefined);
  }

  async function toResponse(
    answer: FromTestWorker,
    allow: string[] | undefined,
  ): Promise<Response> {
    switch (answer.t) {
      case "answer": {
        const headers = new Headers();
        for (const [name, value] of answer.headers) headers.append(name, value);
        const bytes = answer.file === null
          ? answer.body
          : await Deno.readFile(join(dir, answer.file));
        return new Response(bytes as BodyInit | null, {
          status: answer.status,
          headers,
        });
      }
      case "default":
        return new Response(answer.message, {
          status: answer.code,
          headers: allow === undefined ? {} : { allow: allow.join(", ") },
        });
      case "failed":
        return new Response(answer.message, { status: 500 });
      default:
        throw new Error(`Unexpected answer ${answer.t}`);
    }
  }

  const close = () => worker.terminate();
  return {
    dir,
    request,
    close,
    [Symbol.asyncDispose]: () => Promise.resolve(close()),
  };
}
