/**
 * CPU time per request, the bench's primary measure (issue 17): it moves
 * less than requests per second on a shared machine. Read from /proc: each
 * process's user and system time, and each of its threads' by name.
 *
 * @module
 */

/** Clock ticks a second in /proc (USER_HZ, 100 on Linux). */
const TICKS_PER_SECOND = 100;

/** A process measured during a run, by what it is in the design. */
export interface Measured {
  /** "gateway", "sandbox", "child", … */
  role: string;
  pid: number;
}

/** CPU seconds of a process, or of each of its threads by name. */
export interface CpuSnapshot {
  total: number;
  threads: Map<string, number>;
}

/** utime + stime of a /proc stat line, in seconds. */
function statSeconds(text: string): { name: string; seconds: number } {
  const close = text.lastIndexOf(")");
  const name = text.slice(text.indexOf("(") + 1, close);
  const fields = text.slice(close + 2).split(" ");
  // After the name: state is field 3, utime 14 and stime 15.
  const ticks = Number(fields[11]) + Number(fields[12]);
  return { name, seconds: ticks / TICKS_PER_SECOND };
}

/** The CPU a process has used so far, in all and per thread name. */
export function cpuOf(pid: number): CpuSnapshot {
  const total = statSeconds(Deno.readTextFileSync(`/proc/${pid}/stat`));
  const threads = new Map<string, number>();
  for (const entry of Deno.readDirSync(`/proc/${pid}/task`)) {
    try {
      const thread = statSeconds(
        Deno.readTextFileSync(`/proc/${pid}/task/${entry.name}/stat`),
      );
      threads.set(
        thread.name,
        (threads.get(thread.name) ?? 0) + thread.seconds,
      );
    } catch {
      // The thread ended meanwhile.
    }
  }
  return { total: total.seconds, threads };
}

/** CPU µs per request of each process, and of its busiest threads. */
export interface CpuPerRequest {
  /** role → µs per request. */
  processes: Record<string, number>;
  /** "role/thread" → µs per request, for threads over 1 µs. */
  threads: Record<string, number>;
}

/**
 * Runs `work`, which serves `requests()` requests, and divides the CPU each
 * process used by them.
 */
export async function measureCpu<T>(
  processes: Measured[],
  work: () => Promise<T>,
  requests: (result: T) => number,
): Promise<{ result: T; cpu: CpuPerRequest }> {
  const before = processes.map((p) => cpuOf(p.pid));
  const result = await work();
  const count = Math.max(1, requests(result));
  const cpu: CpuPerRequest = { processes: {}, threads: {} };
  processes.forEach((p, i) => {
    const after = cpuOf(p.pid);
    const was = before[i]!;
    cpu.processes[p.role] = ((after.total - was.total) * 1e6) / count;
    for (const [name, seconds] of after.threads) {
      const us = ((seconds - (was.threads.get(name) ?? 0)) * 1e6) / count;
      if (us >= 1) cpu.threads[`${p.role}/${name}`] = us;
    }
  });
  return { result, cpu };
}
