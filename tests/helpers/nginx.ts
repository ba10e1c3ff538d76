/**
 * Starts a real nginx (Debian's package; `.ci/run` installs it) on a free
 * loopback port, in front of a Sandflare server.
 *
 * @module
 */

import { join } from "node:path";

/** A running nginx. */
export interface Nginx {
  port: number;
  stop(): Promise<void>;
  log(): string;
}

/**
 * A whole nginx configuration that keeps every file in `dir` (pid, logs,
 * temp folders) and runs in the foreground; `http` is the body of its http
 * block (server blocks or an include).
 */
export function nginxConfig(dir: string, http: string): string {
  return `
${Deno.uid() === 0 ? "user root;" : ""}
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  types { text/plain txt; }
${http}
}
`;
}

/** A free TCP port on 127.0.0.1 (closed again before it is returned). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** The path of nginx; fails loudly when it is not installed. */
export function nginxPath(): string {
  for (const path of ["/usr/sbin/nginx", "/usr/bin/nginx"]) {
    try {
      Deno.statSync(path);
      return path;
    } catch {
      // Try the next.
    }
  }
  throw new Error(
    "nginx is not installed: run `apt-get install nginx` (.ci/run does)",
  );
}

/**
 * Starts nginx with `locations` (the body of its one `server` block, after
 * `listen`); waits until it accepts connections.
 */
export async function startNginx(locations: string): Promise<Nginx> {
  const dir = await Deno.makeTempDir({ prefix: "sandflare-nginx-" });
  const port = freePort();
  const conf = nginxConfig(
    dir,
    `
  server {
    listen 127.0.0.1:${port};
    ${locations}
  }`,
  );
  await Deno.writeTextFile(join(dir, "nginx.conf"), conf);
  const child = new Deno.Command(nginxPath(), {
    args: ["-p", dir, "-c", join(dir, "nginx.conf")],
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let errText = "";
  void (async () => {
    while (true) {
      const { value, done } = await stderr.read();
      if (done) break;
      errText += value;
    }
  })();
  const deadline = Date.now() + 5000;
  while (true) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
      break;
    } catch {
      if (Date.now() > deadline) {
        child.kill("SIGKILL");
        await child.status;
        throw new Error(`nginx did not start: ${errText}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }
  return {
    port,
    log: () => errText + (Deno.readTextFileSync(join(dir, "error.log")) ?? ""),
    async stop() {
      child.kill("SIGQUIT");
      await child.status;
      await Deno.remove(dir, { recursive: true }).catch(() => {});
    },
  };
}

/** Runs curl (for what fetch cannot do, such as choosing the source address). */
export async function curl(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("curl", {
    args: ["-sS", "--max-time", "10", ...args],
  }).output();
  return {
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  };
}
