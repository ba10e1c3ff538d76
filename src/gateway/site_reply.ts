/**
 * A site's reply as an answer: a body (small, sent whole), a stream (a
 * larger body, which arrives as the client reads), a file the gateway
 * checks and sends, or an error page. Whatever a site sends is checked
 * first: its headers, and that a body sent whole is small.
 *
 * @module
 */

import type { SandboxReply } from "../supervisor/sandbox_process.ts";
import type { ServedSite } from "../supervisor/snapshot.ts";
import {
  type Answer,
  COMPRESS_MIN_BYTES,
  defaultError,
  notCompressed,
  replyHeaders,
  type RequestContext,
  send,
} from "./answer.ts";
import type { FileAnswers } from "./file_answers.ts";

/** The largest body a sandbox sends whole (larger ones it streams). */
const MAX_WHOLE_REPLY = 64 * 1024;

/** What {@linkcode replyAnswer} needs besides the reply. */
export interface ReplyAnswerDeps {
  files: FileAnswers;
  /** The answer for a reply that cannot be sent (502, logged). */
  refused: (site: string, why: string, ctx: RequestContext) => Answer;
}

/** The answer for what `site` replied. */
export function replyAnswer(
  site: ServedSite,
  { reply, body }: SandboxReply,
  ctx: RequestContext,
  deps: ReplyAnswerDeps,
): Answer | Promise<Answer> {
  const method = ctx.wire.method;
  // An informational status cannot be a final answer (a forged reply).
  const status = reply.kind === "error" ? reply.code : reply.status;
  if (status < 200) {
    if (body instanceof ReadableStream) void body.cancel();
    return deps.refused(site.name, `status ${status}`, ctx);
  }
  switch (reply.kind) {
    case "body": {
      const headers = replyHeaders(reply.headers, {
        name: site.name,
        owns: site.runner.def.manifest.hosts,
      }, ctx);
      if (typeof headers === "string") {
        return deps.refused(site.name, headers, ctx);
      }
      // Larger bodies come as streams: a larger whole one is forged.
      if (!(body instanceof Uint8Array) || body.length > MAX_WHOLE_REPLY) {
        return deps.refused(site.name, "a whole body too large", ctx);
      }
      if (body.length < COMPRESS_MIN_BYTES) notCompressed(headers);
      return send(reply.status, headers, body, method, site.name);
    }
    case "stream": {
      const headers = replyHeaders(reply.headers, {
        name: site.name,
        owns: site.runner.def.manifest.hosts,
      }, ctx);
      if (typeof headers === "string" || body instanceof Uint8Array) {
        if (body instanceof ReadableStream) void body.cancel();
        return deps.refused(site.name, String(headers), ctx);
      }
      if (reply.length !== null) {
        headers.push(["content-length", String(reply.length)]);
      }
      return send(reply.status, headers, body, method, site.name);
    }
    case "file":
      return deps.files.siteFile(site, reply, ctx);
    case "error":
      return defaultError(
        reply.code,
        reply.message,
        { accept: ctx.accept, method },
        site.name,
      );
    default:
      return reply satisfies never;
  }
}
