/**
 * The gateway's own connections (the default; `--fast-connections` turns
 * it off): it accepts each connection itself, caps their number at
 * `--max-connections`, and closes those that sit idle — between requests,
 * or before a whole request arrived (slowloris) — after `--keepalive-time`.
 *
 * `Deno.serve` gives no handle on connections. This uses `Deno.serveHttp`
 * per connection, the one API of Deno 2.9.6 that hands over each connection
 * and still upgrades websockets. It is slower than `Deno.serve` (measured
 * raw: 66k vs 118k hello-world req/s), which is why `--fast-connections`
 * exists for a server behind nginx or haproxy, which do this job in front.
 *
 * @module
 */

/** A handled request: the response and the bytes of its body. */
export interface Handled {
  response: Response;
  /** Body bytes, or null for a stream of unknown length. */
  bytes: number | null;
}

/**
 * What a handler learns of a request's connection. `Deno.serveHttp` does
 * not abort `request.signal` when the client goes away; `clientGone` does:
 * it aborts once the connection has ended with requests still in flight.
 */
export interface ConnectionInfo extends Deno.ServeHandlerInfo {
  clientGone?: AbortSignal;
}

/** Handles one request. */
export type ConnectionHandler = (
  request: Request,
  info: ConnectionInfo,
) => Promise<Handled>;

/** Options of {@linkcode ConnectionServer}. */
export interface ConnectionServerOptions {
  hostname: string;
  port: number;
  /** Close a connection idle (or without a whole request) this long. */
  keepaliveMs: number;
  /** Close new connections beyond this many at once. */
  maxConnections: number;
  /** PEM certificate and key: serve HTTPS (HTTP/2 by ALPN). */
  tls?: { cert: string; key: string };
  /** Bind with SO_REUSEPORT: other processes may listen on the port too. */
  reusePort?: boolean;
  /** Called once the socket is bound. */
  onListen?: (addr: Deno.NetAddr) => void;
  /** Called for each connection refused for being over the cap. */
  onRefused?: () => void;
  /**
   * Websockets open now: an upgraded connection leaves this server's hands
   * but still counts towards `maxConnections`.
   */
  openWebsockets?: () => number;
  /**
   * How long an answer being sent may make no progress (the client does not
   * read) before its connection is closed (default
   * {@linkcode SEND_TIMEOUT_MS}).
   */
  sendTimeoutMs?: number;
}

interface RequestEvent {
  readonly request: Request;
  respondWith(response: Response | Promise<Response>): Promise<void>;
}

interface HttpConn extends AsyncIterable<RequestEvent> {
  close(): void;
}

type ServeHttp = (conn: Deno.Conn) => HttpConn;

/** Deno.serveHttp, which Deno 2 still has but no longer types. */
function serveHttp(): ServeHttp {
  const fn = (Deno as unknown as { serveHttp?: unknown }).serveHttp;
  if (typeof fn !== "function") {
    throw new Error(
      "Owning connections needs Deno.serveHttp, which this Deno does not " +
        "have; run with --fast-connections",
    );
  }
  return fn as ServeHttp;
}

interface Connection {
  conn: Deno.Conn;
  /** Null until a TLS connection has finished its handshake. */
  http: HttpConn | null;
  /** HTTP/2 (by ALPN): no connection-level headers in its answers. */
  http2: boolean;
  inflight: number;
  /** Answers handed to the engine whose writing has not finished. */
  sending: number;
  /** When an answer being sent last moved (a chunk was taken). */
  progressAt: number;
  /** Answers whose engine asked for more and that wait for their source. */
  awaitingSite: number;
  /**
   * The engine takes a small body whole and writes it later: the connection
   * does not count as idle before it has had time to leave.
   */
  bufferedUntil: number;
  upgraded: boolean;
  /** When it last fell idle (nothing in flight), in ms since the epoch. */
  idleSince: number;
  closed: boolean;
  /** No more requests will come on it (the client closed, or it upgraded). */
  ended: boolean;
  /** Aborted when it ends with requests in flight (their client is gone). */
  gone: AbortController;
}

/** A listening server that owns its connections. */
export class ConnectionServer {
  /** The bound address. */
  readonly addr: Deno.NetAddr;
  #listener: Deno.Listener;
  #options: ConnectionServerOptions;
  #handler: ConnectionHandler;
  #serveHttp: ServeHttp;
  #connections = new Set<Connection>();
  #closing = false;
  #accepting: Promise<void>;
  #sweeper: ReturnType<typeof setInterval>;

  /**
   * Binds and starts accepting.
   * @throws when the address cannot be bound or Deno.serveHttp is missing
   */
  constructor(options: ConnectionServerOptions, handler: ConnectionHandler) {
    this.#serveHttp = serveHttp();
    this.#options = options;
    this.#handler = handler;
    const { hostname, port, tls } = options;
    const reusePort = options.reusePort ?? false;
    this.#listener = tls === undefined
      ? Deno.listen({ hostname, port, reusePort })
      : Deno.listenTls({
        hostname,
        port,
        reusePort,
        cert: tls.cert,
        key: tls.key,
        alpnProtocols: ["h2", "http/1.1"],
      });
    this.addr = this.#listener.addr as Deno.NetAddr;
    options.onListen?.(this.addr);
    this.#accepting = this.#accept();
    const tick = Math.max(50, Math.min(250, options.keepaliveMs / 4));
    this.#sweeper = setInterval(() => this.#sweep(), tick);
  }

  /** Connections open now. */
  get connections(): number {
    return this.#connections.size;
  }

  async #accept(): Promise<void> {
    while (!this.#closing) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch {
        if (this.#closing) return;
        // Out of descriptors and the like: back off instead of spinning.
        await new Promise((r) => setTimeout(r, 50));
        continue;
      }
      const open = this.#connections.size +
        (this.#options.openWebsockets?.() ?? 0);
      if (open >= this.#options.maxConnections) {
        this.#options.onRefused?.();
        closeQuietly(conn);
        continue;
      }
      this.#serve(conn);
    }
  }

  #serve(conn: Deno.Conn): void {
    const c: Connection = {
      conn,
      http: null,
      http2: false,
      inflight: 0,
      sending: 0,
      progressAt: 0,
      awaitingSite: 0,
      bufferedUntil: 0,
      upgraded: false,
      idleSince: Date.now(),
      closed: false,
      ended: false,
      gone: new AbortController(),
    };
    this.#connections.add(c);
    const info = {
      remoteAddr: conn.remoteAddr as Deno.NetAddr,
      completed: Promise.resolve(),
      clientGone: c.gone.signal,
    } as ConnectionInfo;
    (async () => {
      try {
        if (this.#options.tls !== undefined) {
          // The protocol chosen by ALPN decides how a refusal is answered.
          // (A client that never starts its handshake cannot be closed: on
          // Deno 2.9.6 closing such a connection leaves its socket open
          // until the client goes. The sweep forgets it after the keepalive
          // time, so it does not count towards the cap. See the README.)
          const handshake = await (conn as Deno.TlsConn).handshake();
          if (c.closed) return;
          c.http2 = handshake.alpnProtocol === "h2";
        }
        c.http = this.#serveHttp(conn);
        for await (const event of c.http) {
          c.inflight++;
          void this.#respond(c, event, info);
        }
      } catch {
        // A failed handshake, a malformed request or a reset: it is over.
      } finally {
        c.ended = true;
        // Requests still being answered have lost their client (an upgraded
        // connection's request was answered with its 101).
        if (c.inflight > 0 && !c.upgraded) c.gone.abort();
        this.#settle(c);
      }
    })();
  }

  async #respond(
    c: Connection,
    event: RequestEvent,
    info: Deno.ServeHandlerInfo,
  ): Promise<void> {
    try {
      const { response, bytes } = refuse(event.request, c.http2) ??
        await this.#handler(event.request, info);
      let answer = response;
      if (response.status === 101) c.upgraded = true;
      else if (
        (bytes === null || bytes > STREAM_OVER_BYTES) && response.body !== null
      ) {
        // Streamed in chunks, so each chunk taken shows the client reading
        // and the end of the answer is seen.
        answer = progressing(
          response,
          bytes,
          () => c.progressAt = Date.now(),
          (waiting) => c.awaitingSite += waiting ? 1 : -1,
        );
      } else {
        const leaving = Date.now() +
          ((bytes ?? 0) / MIN_SEND_BYTES_PER_SECOND) * 1000;
        c.bufferedUntil = Math.max(c.bufferedUntil, leaving);
      }
      c.sending++;
      c.progressAt = Date.now();
      try {
        // Resolves once the engine has taken the whole body.
        await event.respondWith(answer);
      } finally {
        c.sending--;
      }
    } catch {
      // The client went away mid-answer.
    } finally {
      c.inflight--;
      if (c.ended) this.#settle(c);
      else if (c.inflight === 0) c.idleSince = Date.now();
    }
  }

  /**
   * A connection whose requests have ended: closed once its answers are
   * out; an upgraded one now belongs to its websocket and is only forgotten.
   */
  #settle(c: Connection): void {
    if (c.inflight > 0) return;
    if (c.upgraded) {
      this.#connections.delete(c);
    } else {
      this.#close(c);
    }
  }

  /**
   * Closes the connections idle (or without a whole request) for the
   * keepalive time. One sweep a tick, rather than a timer set and cleared
   * per request: measured, the timers cost the 404 path a tenth.
   */
  #sweep(): void {
    const now = Date.now();
    const sendTimeout = this.#options.sendTimeoutMs ?? SEND_TIMEOUT_MS;
    for (const c of this.#connections) {
      // Waiting for the site's next chunk (a quiet event stream) is not the
      // client's doing: the site's request timeout bounds that.
      const slowReader = !c.upgraded && c.sending > 0 &&
        c.awaitingSite === 0 && now - c.progressAt > sendTimeout;
      if (idleFor(c, this.#options.keepaliveMs, now) || slowReader) {
        this.#close(c);
      }
    }
  }

  #close(c: Connection): void {
    if (c.closed) return;
    c.closed = true;
    this.#connections.delete(c);
    if (c.http !== null) closeQuietly(c.http);
    closeQuietly(c.conn);
  }

  /**
   * Stops accepting, closes idle connections at once and the others as
   * their requests finish; after `timeoutMs`, closes what is left.
   * @returns whether every request finished in time
   */
  async shutdown(timeoutMs: number): Promise<boolean> {
    this.#closing = true;
    clearInterval(this.#sweeper);
    closeQuietly(this.#listener);
    await this.#accepting;
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const now = Date.now();
      for (const c of [...this.#connections]) {
        // The last answer's bytes may still be on their way out.
        if (idleFor(c, SHUTDOWN_GRACE_MS, now)) this.#close(c);
      }
      if ([...this.#connections].every((c) => c.upgraded)) return true;
      await new Promise((r) => setTimeout(r, 25));
    }
    for (const c of [...this.#connections]) this.#close(c);
    return false;
  }
}

/**
 * Nothing in flight for `ms`, and its last small answer has had time to
 * leave; an upgraded connection belongs to its websocket and never is.
 */
function idleFor(c: Connection, ms: number, now: number): boolean {
  return !c.upgraded && c.inflight === 0 && c.idleSince <= now - ms &&
    now >= c.bufferedUntil;
}

/**
 * How long an answer being sent may stall (nginx's send_timeout is 60 s
 * between two writes).
 */
export const SEND_TIMEOUT_MS = 30_000;

/** Answers larger than this are streamed in chunks of this size. */
const STREAM_OVER_BYTES = 64 * 1024;

/** How fast a small answer handed over whole is assumed to leave, at worst. */
const MIN_SEND_BYTES_PER_SECOND = 16 * 1024;

/**
 * `response` with its body re-streamed in chunks of at most
 * {@linkcode STREAM_OVER_BYTES}; `onProgress` is called as each is taken,
 * and `onWaiting` while the engine waits for the source.
 */
function progressing(
  response: Response,
  bytes: number | null,
  onProgress: () => void,
  onWaiting: (waiting: boolean) => void,
): Response {
  const source = response.body!.getReader();
  let rest = new Uint8Array(0);
  const body = new ReadableStream<Uint8Array>({
    async pull(controller) {
      onProgress();
      if (rest.length === 0) {
        onWaiting(true);
        let read: Awaited<ReturnType<typeof source.read>>;
        try {
          read = await source.read();
        } finally {
          onWaiting(false);
          onProgress();
        }
        const { value, done } = read;
        if (done) {
          controller.close();
          return;
        }
        rest = value;
      }
      const piece = rest.subarray(0, STREAM_OVER_BYTES);
      rest = rest.subarray(piece.length);
      controller.enqueue(piece);
    },
    cancel(reason) {
      return source.cancel(reason);
    },
  }, { highWaterMark: 0 });
  const headers = new Headers(response.headers);
  if (bytes !== null && !headers.has("content-length")) {
    headers.set("content-length", String(bytes));
  }
  return new Response(body, {
    status: response.status,
    statusText: response.statusText,
    headers,
  });
}

/** At shutdown, how long an idle connection's last answer is given to leave. */
const SHUTDOWN_GRACE_MS = 100;

/** The most bytes of request head (line and headers) accepted. */
export const MAX_HEAD_BYTES = 64 * 1024;

/**
 * What `Deno.serve`'s HTTP engine refuses and `Deno.serveHttp`'s older one
 * lets through: a request with both `Transfer-Encoding` and `Content-Length`
 * (the ingredients of request smuggling; RFC 9112 §6.1 says to close the
 * connection after answering it) and an oversized head. Answered here; an
 * HTTP/1.1 connection is closed after the answer.
 * @returns the answer, or null when the request may go on
 */
export function refuse(request: Request, http2 = false): Handled | null {
  const headers = request.headers;
  let status = 0;
  if (headers.has("transfer-encoding") && headers.has("content-length")) {
    status = 400;
  } else {
    let bytes = request.method.length + request.url.length + 12;
    for (const [name, value] of headers) {
      bytes += name.length + value.length + 4;
    }
    if (bytes > MAX_HEAD_BYTES) status = 431;
  }
  if (status === 0) return null;
  const body = status === 400
    ? "Bad Request: both Transfer-Encoding and Content-Length\n"
    : `Request Header Fields Too Large: more than ${MAX_HEAD_BYTES} bytes\n`;
  const answer: [string, string][] = [
    ["content-type", "text/plain; charset=utf-8"],
    ["server", "sandflare"],
  ];
  // HTTP/1.1: the engine closes the connection once this answer is out, so
  // nothing sent after it on the connection is read. HTTP/2 has no such
  // header; there the refusal is of one stream only.
  if (!http2) answer.push(["connection", "close"]);
  return {
    response: new Response(body, { status, headers: answer }),
    bytes: body.length,
  };
}

function closeQuietly(closer: { close(): void }): void {
  try {
    closer.close();
  } catch {
    // Already closed.
  }
}
