/**
 * What `deno task bench` reads about a server process from Linux's `/proc`: its CPU time (user + system, all
 * threads, live and exited, from `/proc/<pid>/stat`) and its resident memory (`/proc/<pid>/status`). Off
 * Linux, or when the process is gone, the readers return `null` and the bench reports rates only.
 *
 * @module
 */

let ticksPerSecond: number | null = null;

/** The kernel's clock ticks per second (`getconf CLK_TCK`; 100 on every Linux this bench has met). */
export function clockTicks(): number {
  if (ticksPerSecond !== null) return ticksPerSecond;
  ticksPerSecond = 100;
  try {
    const out = new Deno.Command("getconf", { args: ["CLK_TCK"], stdout: "piped", stderr: "null" })
      .outputSync();
    const n = Number(new TextDecoder().decode(out.stdout).trim());
    if (Number.isInteger(n) && n > 0) ticksPerSecond = n;
  } catch {
    // no getconf: keep 100
  }
  return ticksPerSecond;
}

/**
 * CPU time of process `pid` so far, in milliseconds: utime + stime of `/proc/<pid>/stat`, which cover every
 * thread of the process (exited threads included). Resolution: one clock tick (10 ms at 100 ticks/s), so a
 * measured window should hold at least about a second of the server's CPU for a figure within 1 %.
 */
export function processCpuMs(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // The command name (field 2) is in parentheses and may hold spaces: count fields after the last ")".
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  // Field 3 (state) is fields[0]; utime is field 14, stime field 15.
  const utime = Number(fields[11]);
  const stime = Number(fields[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return null;
  return ((utime + stime) * 1000) / clockTicks();
}

/** Resident set size of process `pid` in bytes (`VmRSS` of `/proc/<pid>/status`), or `null`. */
export function processRssBytes(pid: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return null;
  }
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(text);
  return m ? Number(m[1]) * 1024 : null;
}
