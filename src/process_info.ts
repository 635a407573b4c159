/**
 * Samples the running process for the standard `process_*` metrics: CPU time (`node:process`'s
 * `cpuUsage`, a Deno built-in), memory (`Deno.memoryUsage`), start time (`performance.timeOrigin`), and,
 * on Linux, open and maximum file descriptors from `/proc/self`. Deno lets a program read `/proc/self` only
 * with `--allow-all`; without it the two descriptor gauges are left out (tried once, then not again).
 *
 * @module
 */
import process from "node:process";
import denoJson from "../deno.json" with { type: "json" };
import type { ProcessSample } from "./metrics.ts";

let procReadable: boolean | null = null;

function countFds(): number | null {
  if (procReadable === false || Deno.build.os !== "linux") return null;
  try {
    let n = 0;
    for (const _ of Deno.readDirSync("/proc/self/fd")) n++;
    procReadable = true;
    return n - 1; // the directory's own descriptor, open while it is read
  } catch {
    procReadable = false;
    return null;
  }
}

function maxFds(): number | null {
  if (procReadable === false || Deno.build.os !== "linux") return null;
  try {
    const line = Deno.readTextFileSync("/proc/self/limits").split("\n").find((l) =>
      l.startsWith("Max open files")
    );
    const soft = line?.slice("Max open files".length).trim().split(/\s+/)[0];
    if (soft === undefined) return null;
    return soft === "unlimited" ? Infinity : Number(soft);
  } catch {
    procReadable = false;
    return null;
  }
}

/** A fresh sample of the process (see the module documentation). */
export function sampleProcess(): ProcessSample {
  const m = Deno.memoryUsage();
  const cpu = process.cpuUsage();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    cpuSeconds: (cpu.user + cpu.system) / 1e6,
    startTimeSeconds: Math.round(performance.timeOrigin) / 1000,
    openFds: countFds(),
    maxFds: maxFds(),
  };
}

/** The labels of `p2p_build_info`: p2p_server's version and the Deno that runs it. */
export function buildLabels(): Record<string, string> {
  return { version: denoJson.version, deno: Deno.version.deno };
}
