/**
 * Malformed and hostile requests. Each must get a 4xx or a closed
 * connection — never a 5xx, never a crash — and the server must go on
 * serving everyone else. `ok` lists what is acceptable.
 *
 * @module
 */

/** One entry of the corpus. */
export interface HostileRequest {
  name: string;
  /** Sent as is. */
  bytes: string;
  /**
   * "reject": a 4xx or a closed connection; "tolerate": any answer below
   * 500 (a request some servers accept); "404": it reaches routing.
   */
  ok: "reject" | "tolerate" | "404";
}

const H = "Host: x.test\r\n";

/** The corpus. */
export const CORPUS: HostileRequest[] = [
  { name: "garbage line", bytes: "GARBAGE\r\n\r\n", ok: "reject" },
  {
    name: "request line without version",
    bytes: "GET /\r\n\r\n",
    ok: "reject",
  },
  { name: "HTTP/x", bytes: `GET / HTTP/x\r\n${H}\r\n`, ok: "reject" },
  { name: "HTTP/9.9", bytes: `GET / HTTP/9.9\r\n${H}\r\n`, ok: "reject" },
  { name: "double space", bytes: `GET  / HTTP/1.1\r\n${H}\r\n`, ok: "reject" },
  {
    name: "leading blank line",
    bytes: `\r\nGET /nowhere HTTP/1.1\r\n${H}\r\n`,
    ok: "tolerate",
  },
  {
    name: "folded header",
    bytes: `GET / HTTP/1.1\r\n${H}X-Folded: a\r\n b\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "colon-less header",
    bytes: `GET / HTTP/1.1\r\n${H}Broken header\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "space before colon",
    bytes: `GET / HTTP/1.1\r\n${H}X-Space : a\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "NUL in a header value",
    bytes: `GET / HTTP/1.1\r\n${H}X-Nul: a\0b\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "oversized request line",
    bytes: `GET /${"a".repeat(100_000)} HTTP/1.1\r\n${H}\r\n`,
    ok: "reject",
  },
  {
    name: "oversized header",
    bytes: `GET / HTTP/1.1\r\n${H}X-Big: ${"b".repeat(200_000)}\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "too many headers",
    bytes: `GET / HTTP/1.1\r\n${H}${
      Array.from({ length: 2000 }, (_, i) => `X-H${i}: v\r\n`).join("")
    }\r\n`,
    ok: "reject",
  },
  {
    name: "conflicting Content-Length",
    bytes:
      `POST /nowhere HTTP/1.1\r\n${H}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello`,
    ok: "reject",
  },
  {
    name: "Content-Length list",
    bytes: `POST /nowhere HTTP/1.1\r\n${H}Content-Length: 5, 6\r\n\r\nhello`,
    ok: "reject",
  },
  {
    name: "negative Content-Length",
    bytes: `POST /nowhere HTTP/1.1\r\n${H}Content-Length: -1\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "Transfer-Encoding with Content-Length (smuggling)",
    bytes:
      `POST /nowhere HTTP/1.1\r\n${H}Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\n${H}\r\n`,
    ok: "reject",
  },
  {
    name: "unknown Transfer-Encoding",
    bytes:
      `POST /nowhere HTTP/1.1\r\n${H}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "bad chunk size",
    bytes:
      `POST /nowhere HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "NUL in the path (encoded)",
    bytes: `GET /a%00b HTTP/1.1\r\n${H}\r\n`,
    ok: "reject",
  },
  {
    name: "raw NUL in the path",
    bytes: `GET /a\0b HTTP/1.1\r\n${H}\r\n`,
    ok: "reject",
  },
  {
    name: "invalid percent-encoding",
    bytes: `GET /%zz HTTP/1.1\r\n${H}\r\n`,
    ok: "reject",
  },
  {
    name: "truncated percent-encoding",
    bytes: `GET /%e2%82 HTTP/1.1\r\n${H}\r\n`,
    ok: "reject",
  },
  {
    name: "absolute-form target",
    bytes: `GET http://x.test/nowhere HTTP/1.1\r\n${H}\r\n`,
    ok: "404",
  },
  {
    // RFC 9112 allows it, but neither of Deno's engines tells the handler
    // the HTTP version, so it cannot be told from HTTP/1.1 without Host.
    name: "HTTP/1.0 without Host",
    bytes: "GET /nowhere HTTP/1.0\r\n\r\n",
    ok: "reject",
  },
  {
    name: "HTTP/1.1 without Host",
    bytes: "GET /nowhere HTTP/1.1\r\n\r\n",
    ok: "reject",
  },
  {
    name: "two Host headers",
    bytes: `GET / HTTP/1.1\r\n${H}Host: y.test\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "garbage Host",
    bytes: "GET /nowhere HTTP/1.1\r\nHost: ../../etc/passwd\r\n\r\n",
    ok: "tolerate",
  },
  {
    // Deno builds the URL from Host: this one would make the path "/".
    name: "Host with a path",
    bytes: "GET /nowhere HTTP/1.1\r\nHost: x.test/?\r\n\r\n",
    ok: "reject",
  },
  {
    name: "Host with user information",
    bytes: "GET /nowhere HTTP/1.1\r\nHost: a.test@x.test\r\n\r\n",
    ok: "reject",
  },
  {
    name: "Host with a fragment",
    bytes: "GET /nowhere HTTP/1.1\r\nHost: x.test#/\r\n\r\n",
    ok: "reject",
  },
  {
    name: "lower-case method",
    bytes: `get /nowhere HTTP/1.1\r\n${H}\r\n`,
    ok: "tolerate",
  },
  {
    name: "method with a slash",
    bytes: `GE/T / HTTP/1.1\r\n${H}\r\n`,
    ok: "reject",
  },
  {
    name: "garbage If-Modified-Since",
    bytes: `GET / HTTP/1.1\r\n${H}If-Modified-Since: \x7f\x7f\r\n\r\n`,
    ok: "tolerate",
  },
  {
    name: "garbage Range",
    bytes:
      `GET / HTTP/1.1\r\n${H}Range: bytes=--,,,-9999999999999999999999\r\n\r\n`,
    ok: "tolerate",
  },
  {
    name: "garbage Cookie",
    bytes: `GET / HTTP/1.1\r\n${H}Cookie: ;;;=;%%%;__proto__=1\r\n\r\n`,
    ok: "tolerate",
  },
  {
    name: "Upgrade without Connection",
    bytes: `GET / HTTP/1.1\r\n${H}Upgrade: websocket\r\n\r\n`,
    ok: "tolerate",
  },
  {
    name: "websocket upgrade without a key",
    bytes:
      `GET /ws HTTP/1.1\r\n${H}Connection: Upgrade\r\nUpgrade: websocket\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "huge Content-Length and no body",
    bytes: `POST /echo HTTP/1.1\r\n${H}Content-Length: 99999999999\r\n\r\n`,
    ok: "reject",
  },
  {
    name: "bare LF line endings",
    bytes: `GET /nowhere HTTP/1.1\n${H.replace("\r\n", "\n")}\n`,
    ok: "tolerate",
  },
];
