/**
 * Answers made of files: a site's static files (routed like pages), the file
 * a page asked for with `setFile` (checked to stay in the site folder, or
 * handed to a front proxy by `X-Sendfile` / `X-Accel-Redirect`), and the
 * default listing of a folder.
 *
 * @module
 */

import type { WireReply } from "../protocol/messages.ts";
import type { ServedSite } from "../supervisor/snapshot.ts";
import {
  type Answer,
  EMPTY,
  type ErrorAnswer,
  hasHeader,
  type HeaderList,
  replyHeaders,
  type RequestContext,
  send,
  SERVER_HEADER,
} from "./answer.ts";
import {
  fileAnswer,
  FileCache,
  siteChoseEncoding,
  wholeFileAnswer,
} from "./file_cache.ts";
import { accelPath, lookupSiteFile } from "./files.ts";
import { readListing, renderListing } from "./listing.ts";
import { log } from "../log.ts";
import { contentTypeFor, type MimeTable } from "./mime.ts";

/** Options of {@linkcode FileAnswers}. */
export interface FileAnswersOptions {
  mime: MimeTable;
  /** Files larger than this get no ETag. */
  maxEtagSize: number;
  /** Answer `setFile` with `X-Sendfile` (a front proxy sends the file). */
  xSendfile: boolean;
  /** Answer `setFile` with `X-Accel-Redirect` under this prefix, or null. */
  xAccelRedirect: string | null;
  /** The error answer, through the site's `Error` hook. */
  error: ErrorAnswer;
  /** The answer for a reply whose headers cannot be sent. */
  refused: (site: string, why: string, ctx: RequestContext) => Answer;
}

/** File answers of one gateway, with the cache they share. */
export class FileAnswers {
  readonly #options: FileAnswersOptions;
  readonly #files: FileCache;

  constructor(options: FileAnswersOptions) {
    this.#options = options;
    this.#files = new FileCache({
      mime: options.mime,
      maxEtagSize: options.maxEtagSize,
    });
  }

  /** Forgets cached files (a site's new generation took over). */
  clear(): void {
    this.#files.clear();
  }

  /** A static file routed like a page (`id` is its negative page id). */
  staticFile(
    site: ServedSite,
    id: number,
    ctx: RequestContext,
  ): Answer | Promise<Answer> {
    const entry = site.files.entries.get(id);
    const dir = site.runner.def.dir;
    if (entry === undefined) {
      return this.#options.error(
        404,
        `No page at ${JSON.stringify(ctx.wire.path)}`,
        site.name,
        ctx,
      );
    }
    // The common case, answered without a turn of the event loop: a small
    // file checked within the last second, a plain GET.
    const file = this.#files.peek(entry.file, dir);
    if (
      file !== null && ctx.wire.method === "GET" && !isConditional(ctx.headers)
    ) {
      const answer = wholeFileAnswer(
        file,
        this.#files.encoded(file, ctx.headers.get("accept-encoding"), "GET"),
        SERVER_HEADER,
      );
      if (answer !== null) return { ...answer, site: site.name };
    }
    // The real path must stay in the site (a link may have changed since the scan).
    return this.#sendFile(site.name, entry.file, dir, ctx);
  }

  /** The file a page asked for with `setFile`. */
  async siteFile(
    site: ServedSite,
    reply: Extract<WireReply, { kind: "file" }>,
    ctx: RequestContext,
  ): Promise<Answer> {
    const { error } = this.#options;
    const dir = site.runner.def.dir;
    const found = await lookupSiteFile(dir, reply.path);
    if (found.kind === "refused") {
      if (found.status === 403) {
        log.warn(
          site.name,
          `setFile(${JSON.stringify(reply.path)}) refused: ${found.message}`,
        );
      }
      return error(found.status, found.message, site.name, ctx);
    }
    if (found.kind === "directory") {
      if (!reply.listDirectory) {
        return error(
          403,
          "This is a folder, and listing it was not asked for",
          site.name,
          ctx,
        );
      }
      return this.#listDirectory(site.name, found.path, dir, ctx);
    }
    const checked = replyHeaders(reply.headers, {
      name: site.name,
      owns: site.runner.def.manifest.hosts,
    }, ctx);
    if (typeof checked === "string") {
      return this.#options.refused(site.name, checked, ctx);
    }
    const headers = checked;
    const { xSendfile, xAccelRedirect } = this.#options;
    if (!xSendfile && xAccelRedirect === null) {
      return this.#sendFile(site.name, found.path, dir, ctx, headers, reply);
    }
    if (!hasHeader(headers, "content-type")) {
      headers.push([
        "content-type",
        contentTypeFor(this.#options.mime, found.path),
      ]);
    }
    headers.push(
      xSendfile
        ? ["x-sendfile", found.path]
        : ["x-accel-redirect", accelPath(xAccelRedirect!, found.path)],
    );
    return send(reply.status, headers, EMPTY, ctx.wire.method, site.name);
  }

  async #sendFile(
    site: string,
    path: string,
    boundary: string,
    ctx: RequestContext,
    headers: HeaderList = [],
    reply: { status: number } = { status: 200 },
  ): Promise<Answer> {
    const file = await this.#files.get(path, boundary);
    if (file === null) {
      return this.#options.error(
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
      reply.status,
      siteChoseEncoding(headers) ? null : this.#files.encoded(
        file,
        ctx.headers.get("accept-encoding"),
        ctx.wire.method,
      ),
    );
    return { ...answer, site };
  }

  /** The default listing of a folder (the site's ListDirectory hook did not answer). */
  async #listDirectory(
    site: string,
    dir: string,
    boundary: string,
    ctx: RequestContext,
  ): Promise<Answer> {
    const entries = await readListing(dir, boundary);
    const title = ctx.wire.path.endsWith("/")
      ? ctx.wire.path
      : `${ctx.wire.path}/`;
    return send(
      200,
      [["content-type", "text/html; charset=utf-8"]],
      renderListing(title, entries),
      ctx.wire.method,
      site,
    );
  }
}

/** True when the request asks for a conditional or partial answer. */
function isConditional(headers: Headers): boolean {
  return headers.has("if-none-match") || headers.has("if-modified-since") ||
    headers.has("range");
}
