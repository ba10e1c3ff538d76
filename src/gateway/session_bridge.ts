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

interface SiteBudgets {
  operations: Budget;
  bytes: Budget;
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

  /** Opens the store and purges expired sessions now and every minute. */
  open(): void {
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
    try {
      const now = Date.now();
      while (this.#store !== null) {
        const n = this.#store.purge(now, PURGE_BATCH);
        total += n;
        if (n < PURGE_BATCH) break;
        await new Promise((r) => setTimeout(r, 0));
      }
      if (total > 0) log.info(null, `Purged ${total} expired session(s)`);
    } catch (err) {
      log.error(null, `Session purge failed: ${(err as Error).message}`);
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
      };
      this.#budgets.set(site, budgets);
    }
    return budgets;
  }

  /**
   * Answers one session question of `site`; `questionBytes` is what reading
   * it cost (a save's data is charged before it is checked).
   */
  answer(site: string, msg: SessionQuestion, questionBytes = 0): SessionResult {
    const { maxAge, secure } = this.#options;
    const cookie = { secure, maxAge };
    const result = (
      session: SessionResult["session"],
      error: string | null = null,
    ): SessionResult => ({
      t: "sessionResult",
      call: msg.call,
      session,
      error,
    });
    const store = this.#store;
    // Refused before the store is touched: the cost of saying no is tiny.
    // Bytes read and written are charged: a site in debt waits.
    const budgets = this.#budgetsOf(site);
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
          const found = store.getJson(site, msg.name, msg.id);
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
      store.set(site, msg.name, msg.id, {
        data: msg.data,
        expires: Date.now() + maxAge * 1000,
      });
      return result({ id: msg.id, data: msg.data, fresh: false, ...cookie });
    } catch (err) {
      const expected = err instanceof SessionLimitError ||
        err instanceof TypeError;
      if (!expected) {
        log.error(site, `Session store: ${(err as Error).message}`);
      }
      return result(
        null,
        expected ? err.message : "The session store failed",
      );
    }
  }

  /** Stops purging and closes the store. */
  close(): void {
    if (this.#purge !== null) clearInterval(this.#purge);
    this.#purge = null;
    this.#store?.close();
    this.#store = null;
  }
}
