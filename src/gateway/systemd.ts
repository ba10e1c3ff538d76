/**
 * `--systemd`: sd_notify over the datagram socket systemd names in
 * `NOTIFY_SOCKET` — `READY=1` once every site has loaded, `WATCHDOG=1` at
 * half of `WATCHDOG_USEC`, `RELOADING=1`/`READY=1` around a reload,
 * `STOPPING=1` at shutdown.
 *
 * @module
 */

import { join } from "node:path";

/** Microseconds since boot (/proc/uptime), as MONOTONIC_USEC wants. */
function monotonicUsec(): string {
  try {
    const seconds = Deno.readTextFileSync("/proc/uptime").split(" ")[0] ?? "0";
    return String(Math.round(Number(seconds) * 1_000_000));
  } catch {
    return "0";
  }
}

/** What the notifier reports back (for the log). */
export interface NotifierLog {
  warn(message: string): void;
}

/** A connection to systemd's notification socket. */
export class Notifier {
  #target: string;
  #socket: Deno.DatagramConn;
  #ownPath: string;
  #watchdog: ReturnType<typeof setInterval> | null = null;
  #log: NotifierLog;

  private constructor(
    target: string,
    socket: Deno.DatagramConn,
    ownPath: string,
    log: NotifierLog,
  ) {
    this.#target = target;
    this.#socket = socket;
    this.#ownPath = ownPath;
    this.#log = log;
  }

  /**
   * The notifier for this environment, or null when systemd gave no
   * usable socket (the reason is logged).
   */
  static open(
    env: { get(name: string): string | undefined },
    log: NotifierLog,
  ): Notifier | null {
    const target = env.get("NOTIFY_SOCKET");
    if (target === undefined || target === "") {
      log.warn(
        "--systemd: NOTIFY_SOCKET is not set (not started by systemd with Type=notify?); not notifying",
      );
      return null;
    }
    if (target.startsWith("@")) {
      log.warn(
        `--systemd: NOTIFY_SOCKET ${
          JSON.stringify(target)
        } is an abstract socket, which this Deno cannot address; not notifying`,
      );
      return null;
    }
    if (!target.startsWith("/")) {
      log.warn(
        `--systemd: NOTIFY_SOCKET ${
          JSON.stringify(target)
        } is not an absolute path; not notifying`,
      );
      return null;
    }
    const dir = env.get("RUNTIME_DIRECTORY") ?? env.get("XDG_RUNTIME_DIR") ??
      Deno.env.get("TMPDIR") ?? "/tmp";
    const ownPath = join(dir, `sandflare-notify-${Deno.pid}.sock`);
    try {
      Deno.removeSync(ownPath);
    } catch {
      // Not there.
    }
    let socket: Deno.DatagramConn;
    try {
      socket = Deno.listenDatagram({ path: ownPath, transport: "unixpacket" });
    } catch (err) {
      log.warn(
        `--systemd: cannot open a datagram socket at ${ownPath}: ${
          (err as Error).message
        }; not notifying`,
      );
      return null;
    }
    const notifier = new Notifier(target, socket, ownPath, log);
    const usec = Number(env.get("WATCHDOG_USEC"));
    const pid = env.get("WATCHDOG_PID");
    if (
      Number.isFinite(usec) && usec > 0 &&
      (pid === undefined || Number(pid) === Deno.pid)
    ) {
      const every = Math.max(10, Math.floor(usec / 2 / 1000));
      notifier.#watchdog = setInterval(
        () => void notifier.send("WATCHDOG=1"),
        every,
      );
    }
    return notifier;
  }

  /** Sends one notification, e.g. `READY=1`. */
  async send(state: string): Promise<void> {
    try {
      await this.#socket.send(new TextEncoder().encode(state), {
        transport: "unixpacket",
        path: this.#target,
      });
    } catch (err) {
      this.#log.warn(
        `--systemd: could not send ${state.split("\n")[0]}: ${
          (err as Error).message
        }`,
      );
    }
  }

  /** `RELOADING=1` with the monotonic time systemd asks for. */
  reloading(): Promise<void> {
    return this.send(`RELOADING=1\nMONOTONIC_USEC=${monotonicUsec()}`);
  }

  /** Stops the watchdog and closes the socket. */
  close(): void {
    if (this.#watchdog !== null) clearInterval(this.#watchdog);
    try {
      this.#socket.close();
    } catch {
      // Already closed.
    }
    try {
      Deno.removeSync(this.#ownPath);
    } catch {
      // Already gone.
    }
  }
}
