/** TLS material for tests. */

import assert from "node:assert/strict";
import { join } from "node:path";

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
