/**
 * The session bridge: answers a site's session questions from the store the
 * gateway owns. Sessions are keyed by the site's name, which the gateway
 * knows from the sandbox that asked: a site can never reach another's
 * sessions, whatever id it sends.
 *
 * @module
 */

import { join } from "node:path";
import { log } from "../log.ts";
import { ClusterUnavailable } from "../cluster/errors.ts";
import { Budget } from "../shared/budget.ts";
import type { ToSandbox } from "../protocol/messages.ts";
import type { SiteMessage } from "../supervisor/sandbox_process.ts";
import {
  isSessionId,
  newSessionId,
  openSqliteSessionStore,
  SessionLimitError,
  type SessionStore,
} from "../supervisor/session_store.ts";

/** Options of {@linkcode SessionBridge}. */
export interface SessionBridgeOptions {
  /** The folder of `sessions.sqlite`. */
  dataDir: string;
  /**
   * The store to use instead of `sessions.sqlite` in `dataDir` (such as one
   * shared by several servers). The bridge closes it in `close()`.
   */
  store?: SessionStore;
  /** Seconds a session lives after it was last saved. */
  maxAge: number;
  /** Whether session cookies are `Secure` (the server speaks HTTPS). */
  secure: boolean;
}

type SessionQuestion = Extract<
  SiteMessage,
  { t: "sessionGet" | "sessionSave" }
>;
type SessionResult = Extract<ToSandbox, { t: "sessionResult" }>;

const PURGE_MS = 60_000;
/** Expired sessions removed in one go (a few ms of work). */
const PURGE_BATCH = 500;
/** Session gets and saves a site may make per second (a burst of twice that). */
export const SESSION_OPERATIONS_PER_SECOND = 1000;
/** Bytes of session data a site may read and save per second. */
export const SESSION_BYTES_PER_SECOND = 2 * 1024 * 1024;
/** Bytes of session data a site may read and save at once. */
export const SESSION_BYTES_BURST = 512 * 1024;
const TOO_MANY =
  "Too many session operations for this site; try again in a moment";
/** Questions of one site that may wait for their turn (see `answer`). */
const MAX_WAITING = 1000;
/**
 * Questions of one site the store answers at once. What a read costs is
 * known only once it is answered: at most this many reads can be under way
 * before the first is charged (a large session's bytes overshoot the budget
 * by at most this many). More than one lets a store across the network
 * (Redis) answer a busy site without a round trip per question in turn.
 */
const MAX_IN_FLIGHT = 4;
/** Bytes of a site's questions that may wait for their turn. */
const MAX_WAITING_BYTES = 2 * SESSION_BYTES_BURST;

interface SiteBudgets {
  operations: Budget;
  bytes: Budget;
  /** Settles once every question of the site asked so far is answered. */
  /** Questions being answered now. */
  inFlight: number;
  /** Questions waiting for one of those to end, in order. */
  queue: (() => void)[];
  /** Questions asked and not yet answered, and what reading them cost. */
  waiting: number;
  waitingBytes: number;
}

/** Sessions of every site, in one store. */
export class SessionBridge {
  readonly #options: SessionBridgeOptions;
  #store: SessionStore | null = null;
  #purge: ReturnType<typeof setInterval> | null = null;
  #budgets = new Map<string, SiteBudgets>();
  #purging = false;

  constructor(options: SessionBridgeOptions) {
    this.#options = options;
  }

  /**
   * Opens the store (or takes the one given in the options) and purges
   * expired sessions now and every minute.
   */
  open(): void {
    if (this.#options.store !== undefined) {
      this.#store = this.#options.store;
    } else {
      const file = join(this.#options.dataDir, "sessions.sqlite");
      try {
        this.#store = openSqliteSessionStore(file);
      } catch (err) {
        log.error(
          null,
          `Sessions are off: cannot open ${file} (--data-dir): ${
            (err as Error).message
          }`,
        );
        return;
      }
    }
    this.#purgeExpired();
    this.#purge = setInterval(() => this.#purgeExpired(), PURGE_MS);
  }

  /**
   * Removes expired sessions a batch at a time, a turn of the event loop
   * between batches: thousands expiring at once stall no request.
   */
  async #purgeExpired(): Promise<void> {
    if (this.#purging) return;
    this.#purging = true;
    let total = 0;
    const store = this.#store;
    try {
      const now = Date.now();
      // Stops once the bridge is closed (a batch may be under way then).
      while (store !== null && this.#store === store) {
        const n = await store.purge(now, PURGE_BATCH);
        total += n;
        if (n < PURGE_BATCH) break;
        await new Promise((r) => setTimeout(r, 0));
      }
      if (total > 0) log.info(null, `Purged ${total} expired session(s)`);
    } catch (err) {
      // A store closed during a batch is no failure.
      if (this.#store === store && !(err instanceof ClusterUnavailable)) {
        log.error(null, `Session purge failed: ${(err as Error).message}`);
      }
    } finally {
      this.#purging = false;
    }
  }

  /** The budgets of `site`, made on its first question. */
  #budgetsOf(site: string): SiteBudgets {
    let budgets = this.#budgets.get(site);
    if (budgets === undefined) {
      budgets = {
        operations: new Budget({ perSecond: SESSION_OPERATIONS_PER_SECOND }),
        // A small burst: one large session costs ~2 ms to pass on.
        bytes: new Budget({
          perSecond: SESSION_BYTES_PER_SECOND,
          burst: SESSION_BYTES_BURST,
        }),
        inFlight: 0,
        queue: [],
        waiting: 0,
        waitingBytes: 0,
      };
      this.#budgets.set(site, budgets);
    }
    return budgets;
  }

  /**
   * Answers one session question of `site`; `questionBytes` is what reading
   * it cost (a save's data is charged before it is checked). Never rejects.
   *
   * A site's questions are answered at most {@linkcode MAX_IN_FLIGHT} at a
   * time, in order: each is checked against the budgets once all but a few
   * before it have been charged for what they read, however late the store
   * answers. Those waiting their turn
   * are bounded; over the bound, a question is refused at once.
   */
  async answer(
    site: string,
    msg: SessionQuestion,
    questionBytes = 0,
  ): Promise<SessionResult> {
    const budgets = this.#budgetsOf(site);
    if (
      budgets.waiting >= MAX_WAITING ||
      budgets.waitingBytes + questionBytes > MAX_WAITING_BYTES
    ) {
      return sessionResult(msg, null, TOO_MANY);
    }
    budgets.waiting++;
    budgets.waitingBytes += questionBytes;
    // A place among those answered at once: free, or handed over by one
    // that ends.
    if (budgets.inFlight < MAX_IN_FLIGHT) budgets.inFlight++;
    else await new Promise<void>((resolve) => budgets.queue.push(resolve));
    try {
      return await this.#answerNow(site, budgets, msg, questionBytes);
    } finally {
      budgets.waiting--;
      budgets.waitingBytes -= questionBytes;
      const next = budgets.queue.shift();
      if (next !== undefined) next();
      else budgets.inFlight--;
    }
  }

  /** Answers a question of `site` whose turn it is. Never rejects. */
  async #answerNow(
    site: string,
    budgets: SiteBudgets,
    msg: SessionQuestion,
    questionBytes: number,
  ): Promise<SessionResult> {
    const { maxAge, secure } = this.#options;
    const cookie = { secure, maxAge };
    const result = (
      session: SessionResult["session"],
      error: string | null = null,
    ): SessionResult => sessionResult(msg, session, error);
    const store = this.#store;
    // Refused before the store is touched: the cost of saying no is tiny.
    // Bytes read and written are charged: a site in debt waits.
    if (!budgets.bytes.take(0) || !budgets.operations.take()) {
      return result(null, TOO_MANY);
    }
    if (msg.t === "sessionSave") budgets.bytes.spend(questionBytes);
    try {
      if (store === null) throw new Error("Sessions are not available");
      if (msg.t === "sessionGet") {
        if (msg.id !== null && isSessionId(msg.id)) {
          // Passed on, not handled: a plain parse (its "__proto__" keys are
          // own, ordinary keys) costs a tenth of the store's null-prototype
          // copy, and what it reads is charged.
          const found = await store.getJson(site, msg.name, msg.id);
          if (found !== null) {
            budgets.bytes.spend(found.json.length);
            return result({
              id: msg.id,
              data: JSON.parse(found.json) as Record<string, unknown>,
              fresh: false,
              ...cookie,
            });
          }
        }
        return result({ id: newSessionId(), data: {}, fresh: true, ...cookie });
      }
      if (!isSessionId(msg.id)) throw new TypeError("Not a session id");
      await store.set(site, msg.name, msg.id, {
        data: msg.data,
        expires: Date.now() + maxAge * 1000,
      });
      return result({ id: msg.id, data: msg.data, fresh: false, ...cookie });
    } catch (err) {
      const expected = err instanceof SessionLimitError ||
        err instanceof TypeError;
      // The cluster's store away is logged once by its link, not per call.
      const away = err instanceof ClusterUnavailable;
      // A store closed while it answered (the server is stopping) is no
      // failure to log.
      if (!expected && !away && this.#store === store) {
        log.error(site, `Session store: ${(err as Error).message}`);
      }
      return result(
        null,
        expected
          ? err.message
          : away
          ? "The session store is unavailable; try again later"
          : "The session store failed",
      );
    }
  }

  /**
   * Stops purging and closes the store; questions asked from now on are
   * answered with an error. Resolves once the store is closed; a store that
   * fails to close is logged, not rejected.
   */
  async close(): Promise<void> {
    if (this.#purge !== null) clearInterval(this.#purge);
    this.#purge = null;
    const store = this.#store;
    this.#store = null;
    try {
      await store?.close();
    } catch (err) {
      log.error(null, `Session store did not close: ${(err as Error).message}`);
    }
  }
}

/** The answer to `msg`: a session, or why there is none. */
function sessionResult(
  msg: SessionQuestion,
  session: SessionResult["session"],
  error: string | null = null,
): SessionResult {
  return { t: "sessionResult", call: msg.call, session, error };
}
