/** TLS material for tests. */

import assert from "node:assert/strict";
import { join } from "node:path";
import { startServer, type TestServer } from "./server.ts";

/** A self-signed certificate for 127.0.0.1 and localhost, made by openssl. */
export async function selfSigned(
  dir: string,
): Promise<{ cert: string; key: string }> {
  const cert = join(dir, "cert.pem");
  const key = join(dir, "key.pem");
  const out = await new Deno.Command("openssl", {
    args: [
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-keyout",
      key,
      "-out",
      cert,
      "-days",
      "2",
      "-subj",
      "/CN=localhost",
      "-addext",
      "subjectAltName=IP:127.0.0.1,DNS:localhost",
    ],
    stdout: "null",
    stderr: "piped",
  }).output().catch((err) => {
    throw new Error(
      `openssl is needed for this test (apt-get install openssl): ${err}`,
    );
  });
  assert.equal(out.code, 0, new TextDecoder().decode(out.stderr));
  return { cert, key };
}

/**
 * A server on HTTPS with a fresh self-signed certificate in `sitesDir`, plus
 * `extra` flags (a connection mode, say). Returns the server and the
 * certificate for curl's --cacert.
 */
export async function startTlsServer(
  sitesDir: string,
  extra: string[] = [],
): Promise<{ server: TestServer; cert: string }> {
  const { cert, key } = await selfSigned(sitesDir);
  const server = await startServer({
    sitesDir,
    args: [`--tls-cert=${cert}`, `--tls-key=${key}`, ...extra],
  });
  return { server, cert };
}
