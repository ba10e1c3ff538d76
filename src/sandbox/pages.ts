/**
 * Running a site's page for a request: the `Request` hook, the page's
 * callback, what it returned, a folder listing and the `Error` hook. Shared
 * by the sandbox's workers and `testSite` (src/testing/), which differ only
 * in how an answer leaves.
 *
 * @module
 */

import { registry } from "./_registry.ts";
import { hook, mountDefault } from "./api.ts";
import type { PageRequest } from "./request.ts";
import { HaltSignal, PageResponse } from "./response.ts";
import { SafeHtml } from "./html.ts";

/** What a page came to: a response to send, or an error page to render by default. */
export type PageAnswer =
  | { kind: "response"; res: PageResponse }
  | { kind: "error"; code: number; message: string };

/** Where a site's errors are written (its log). */
export type LogLine = (line: string) => void;

/** The error's stack without the sandbox's own frames. */
export function stackOf(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const lines = (err.stack ?? err.message).split("\n");
  return lines.filter((l) => !INTERNAL_FRAME_REGEXP.test(l)).join("\n")
    // Deno's advice is for whoever runs deno; a site asks in its site.json.
    .replace(
      /, run again with the --allow-(\w+) flag/g,
      (_, what) =>
        ` (a site gets only what its site.json asks for: add it under "permissions"${
          what === "run" || what === "ffi" || what === "sys"
            ? ", though sites may never have this one"
            : what === "read" || what === "write"
            ? "; paths must be inside the site folder"
            : ""
        })`,
    );
}

const INTERNAL_FRAME_REGEXP = new RegExp(
  `^\\s+at .*(${RegExp.escape(new URL("./", import.meta.url).href)}|ext:)`,
);

/**
 * Runs a site's autorun scripts in order, mounts their default fetch
 * handlers once all have run (the pages they add answer first anyway), then
 * runs the `Loaded` hook.
 *
 * @param scripts file: URLs of the scripts
 * @param declared the site's host patterns (where default handlers answer)
 * @param name how messages name a script, from its URL
 * @throws whatever a script, a mount or the hook throws
 */
export async function loadScripts(
  scripts: string[],
  declared: string[],
  name: (url: string) => string,
): Promise<void> {
  const handlers: { script: string; handler: unknown }[] = [];
  for (const url of scripts) {
    const handler: unknown = (await import(url)).default;
    if (
      (typeof handler === "object" || typeof handler === "function") &&
      handler !== null &&
      typeof (handler as { fetch?: unknown }).fetch === "function"
    ) {
      handlers.push({ script: name(url), handler });
    }
  }
  for (const { script, handler } of handlers) {
    mountDefault(script, handler, declared);
  }
  await hook.call("Loaded");
}

/** Answers made from a Response: sent as they are, with no default type. */
const asIs = new WeakSet<PageResponse>();

/**
 * Whether `res` gets `Content-Type: text/html` when it has none (not when
 * it was made from a Response, which is sent as it is).
 */
export function wantsDefaultType(res: PageResponse): boolean {
  return !asIs.has(res);
}

/** Applies what a page callback returned to `res`. */
export function applyResult(result: unknown, res: PageResponse): void {
  if (typeof result === "string" || result instanceof SafeHtml) {
    res.append(result);
  } else if (result instanceof Response) {
    // Cookies set before (a new session's, say) stay, unless the Response
    // sets the same cookie.
    const kept = res.cookies;
    res.clear();
    asIs.add(res);
    res.status = result.status;
    result.headers.forEach((value, name) => {
      if (name !== "set-cookie") res.setHeader(name, value);
    });
    for (const cookie of kept) res.appendHeader("Set-Cookie", cookie);
    // Joined, several cookies would be one broken one.
    for (const cookie of result.headers.getSetCookie()) {
      res.setHeader("Set-Cookie", cookie);
    }
    if (result.body !== null) res.stream(result.body);
  }
}

/**
 * Runs page `pageId` (its `Request` hook first) for `req`.
 *
 * @param siteDir the site folder (for folder listings)
 * @param log where failures are written, with a reference the client sees
 */
export async function answerPage(
  pageId: number,
  captures: string[],
  req: PageRequest,
  siteDir: string,
  log: LogLine,
): Promise<PageAnswer> {
  const res = new PageResponse();
  const page = registry.pages[pageId];
  try {
    if (page === undefined) throw new Error(`No page with id ${pageId}`);
    const hooked = await hook.call("Request", req, res);
    if (hooked !== undefined) applyResult(hooked, res);
    else applyResult(await page.callback(req, res, ...captures), res);
    const listed = await listDirectory(req, res, siteDir);
    return { kind: "response", res: listed ?? res };
  } catch (err) {
    if (err instanceof HaltSignal) {
      return await answerError(err.code, err.message, req, log);
    }
    const label = page?.label ?? `page ${pageId}`;
    const ref = crypto.randomUUID().slice(0, 8);
    log(
      `[ref ${ref}] ${req.method} ${req.fullUrl} failed in page ${label}: ${
        stackOf(err)
      }`,
    );
    return await answerError(
      500,
      `Internal Server Error (ref ${ref})`,
      req,
      log,
    );
  }
}

/**
 * `setFile(folder, { listDirectory: true })`: the site's `ListDirectory`
 * hook may render the listing; null leaves it to the gateway's default.
 */
async function listDirectory(
  req: PageRequest,
  res: PageResponse,
  siteDir: string,
): Promise<PageResponse | null> {
  const file = res.file;
  if (file === null || !file.listDirectory) return null;
  if ((registry.hooks.get("ListDirectory")?.size ?? 0) === 0) return null;
  const dir = new URL(
    file.path.replace(/^\/+/, ""),
    `file://${siteDir.endsWith("/") ? siteDir : siteDir + "/"}`,
  );
  const info = await Deno.stat(dir).catch(() => null);
  if (info === null || !info.isDirectory) return null;
  const listing = new PageResponse();
  const result = await hook.call("ListDirectory", req, listing, file.path);
  if (result === undefined && !listing.hasContent) return null;
  applyResult(result, listing);
  return listing;
}

/** Renders an error through the site's `Error` hook, else asks for the default page. */
export async function answerError(
  code: number,
  message: string,
  req: PageRequest,
  log: LogLine,
): Promise<PageAnswer> {
  const res = new PageResponse();
  res.status = code;
  try {
    const result = await hook.call("Error", { code, message }, req, res);
    if (result !== undefined || res.hasContent) {
      applyResult(result, res);
      return { kind: "response", res };
    }
  } catch (err) {
    log(`Error hook failed while rendering ${code}: ${stackOf(err)}`);
  }
  return { kind: "error", code, message };
}
