/**
 * The worker behind `testSite` (./mod.ts): loads one site's autorun
 * scripts in an isolate of their own, as a sandbox worker does, and answers
 * its requests with what the pages return. Sessions live in this worker's
 * memory; websocket sends go nowhere.
 *
 * @module
 */

/// <reference lib="deno.worker" />

import { registry, routesOf } from "../sandbox/_registry.ts";
import { PageRequest } from "../sandbox/request.ts";
import {
  answerError,
  answerPage,
  loadScripts,
  type PageAnswer,
  stackOf,
  wantsDefaultType,
} from "../sandbox/pages.ts";
import type { ToWorker, WireSession } from "../protocol/messages.ts";

/** testSite → worker: requests and errors as a sandbox's workers get them. */
export type ToTestWorker =
  | { t: "load"; siteDir: string; scripts: string[]; hosts: string[] }
  | Extract<ToWorker, { t: "request" | "error" }>;

/** Worker → testSite. */
export type FromTestWorker =
  | { t: "loaded"; routes: ReturnType<typeof routesOf> }
  | { t: "loadFailed"; message: string }
  | {
    t: "answer";
    id: number;
    status: number;
    headers: [string, string][];
    body: Uint8Array | ReadableStream<Uint8Array> | null;
    file: string | null;
  }
  | { t: "default"; id: number; code: number; message: string }
  | { t: "failed"; id: number; message: string };

const post = (message: FromTestWorker, transfer: Transferable[] = []) =>
  self.postMessage(message, transfer);

let siteDir = "";

const sessions = new Map<string, Record<string, unknown>>();
registry.ask = (question) => {
  if (question.t === "sessionSave") {
    sessions.set(question.id, structuredClone(question.data));
    return Promise.resolve(session(question.id, question.data, false));
  }
  const known = question.id === null ? undefined : sessions.get(question.id);
  if (known !== undefined && question.id !== null) {
    return Promise.resolve(session(question.id, structuredClone(known), false));
  }
  return Promise.resolve(session(crypto.randomUUID(), {}, true));
};
registry.post = () => {};

function session(
  id: string,
  data: Record<string, unknown>,
  fresh: boolean,
): WireSession {
  return { id, data, fresh, secure: false, maxAge: 30 * 24 * 3600 };
}

function log(line: string): void {
  // deno-lint-ignore no-console -- a site's errors go to the test's output
  console.error(line);
}

async function load(msg: Extract<ToTestWorker, { t: "load" }>): Promise<void> {
  siteDir = msg.siteDir;
  try {
    await loadScripts(msg.scripts, msg.hosts, (url) => url);
  } catch (err) {
    post({ t: "loadFailed", message: stackOf(err) });
    return;
  }
  registry.sealed = true;
  post({ t: "loaded", routes: routesOf(registry) });
}

function send(id: number, answer: PageAnswer): void {
  if (answer.kind === "error") {
    post({ t: "default", id, code: answer.code, message: answer.message });
    return;
  }
  const { reply, body } = answer.res.toWire(wantsDefaultType(answer.res));
  if (reply.kind === "error") {
    post({ t: "default", id, code: reply.code, message: reply.message });
    return;
  }
  const headers: [string, string][] = [];
  for (let i = 0; i + 1 < reply.headers.length; i += 2) {
    headers.push([reply.headers[i]!, reply.headers[i + 1]!]);
  }
  const stream = answer.res.streamBody;
  const file = reply.kind === "file" ? reply.path : null;
  post(
    {
      t: "answer",
      id,
      status: reply.status,
      headers,
      body: stream ?? (file === null ? body : null),
      file,
    },
    stream === null ? [] : [stream as unknown as Transferable],
  );
}

self.addEventListener("message", (event: MessageEvent<ToTestWorker>) => {
  const msg = event.data;
  switch (msg.t) {
    case "load":
      void load(msg);
      break;
    case "request": {
      const req = new PageRequest(msg.req, msg.body);
      answerPage(msg.page, msg.captures, req, siteDir, log)
        .then((answer) => send(msg.id, answer))
        .catch((err) =>
          post({ t: "failed", id: msg.id, message: stackOf(err) })
        );
      break;
    }
    case "error": {
      const req = new PageRequest(msg.req, new Uint8Array(0));
      answerError(msg.code, msg.message, req, log)
        .then((answer) => send(msg.id, answer))
        .catch((err) =>
          post({ t: "failed", id: msg.id, message: stackOf(err) })
        );
      break;
    }
  }
});
