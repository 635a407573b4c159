/**
 * Watching a running p2p_server from outside, for `tools/fuzz.ts` and `tools/flood.ts`: starting `main.ts` as
 * a subprocess with its metrics endpoint (and optionally the V8 inspector) on free loopback ports, reading its
 * JS heap after a GC through the inspector, reading its `/api/stats` and other HTTP endpoints, and reading what
 * the kernel knows of it from `/proc` (CPU time, RSS and its high-water mark, the drop counters of UDP sockets),
 * and the loopback UDP sockets the tools send from, which count what they send and receive.
 *
 * Every `/proc` reader returns null where the file cannot be read (not Linux, or no permission to run `cat`).
 *
 * @module
 */
import type { StatsSnapshot } from "../src/core/stats.ts";
import { parseArgs } from "../src/deps/flags.ts";
import {
  childEnv,
  PROCESS_DEADLINE_MS,
  PROJECT_ROOT,
  RUN_FLAGS,
  ServerProcess,
  TEST_CONFIG,
  waitUntil,
  writeTempConfig,
} from "../tests/helpers/server_process.ts";

// ------------------------------------------------------------------ the V8 inspector

/**
 * A minimal client of the V8 inspector protocol (the server runs with `--inspect`), to read the server's heap
 * after a GC.
 */
export class Inspector {
  readonly #ws: WebSocket;
  readonly #closed: Promise<void>;
  readonly #pending = new Map<number, PromiseWithResolvers<Record<string, unknown>>>();
  #nextId = 1;

  private constructor(ws: WebSocket) {
    this.#ws = ws;
    this.#closed = new Promise((resolve) => ws.addEventListener("close", () => resolve(), { once: true }));
    ws.addEventListener("message", (e) => {
      const m = JSON.parse(String(e.data)) as {
        id?: number;
        result?: Record<string, unknown>;
        error?: unknown;
      };
      if (m.id === undefined) return;
      const waiter = this.#pending.get(m.id);
      this.#pending.delete(m.id);
      if (m.error) waiter?.reject(new Error(`Inspector error: ${JSON.stringify(m.error)}`));
      else waiter?.resolve(m.result ?? {});
    });
    ws.addEventListener("close", () => {
      for (const w of this.#pending.values()) w.reject(new Error("Inspector connection closed"));
      this.#pending.clear();
    });
  }

  /**
   * Connects to the inspector's WebSocket (the `ws://` URL the process prints on stderr).
   *
   * @throws {Error} when the connection cannot be opened.
   */
  static async connect(url: string): Promise<Inspector> {
    const ws = new WebSocket(url);
    await new Promise<void>((resolve, reject) => {
      ws.addEventListener("open", () => resolve(), { once: true });
      ws.addEventListener("error", () => reject(new Error(`Cannot reach the inspector at ${url}`)), {
        once: true,
      });
    });
    return new Inspector(ws);
  }

  /**
   * Calls one method of the protocol and returns its result.
   *
   * @throws {Error} (rejects) when the inspector answers with an error or the connection closes first.
   */
  call(method: string, params: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    const waiter = Promise.withResolvers<Record<string, unknown>>();
    this.#pending.set(id, waiter);
    this.#ws.send(JSON.stringify({ id, method, params }));
    return waiter.promise;
  }

  /** The JS heap in use (bytes) after two full GCs. */
  async heapAfterGc(): Promise<number> {
    await this.call("HeapProfiler.collectGarbage");
    await this.call("HeapProfiler.collectGarbage");
    return Number((await this.call("Runtime.getHeapUsage")).usedSize);
  }

  /** Closes the connection (if still open) and waits until it is closed. */
  async close(): Promise<void> {
    if (this.#ws.readyState === WebSocket.CLOSED) return;
    this.#ws.close();
    await this.#closed;
  }
}

// ------------------------------------------------------------------ the server subprocess

/** A server started by {@linkcode startProbedServer}. */
export interface ProbedServer {
  /** The running process (its bound UDP address, output, and `stop`). */
  process: ServerProcess;
  /** The child's pid, to read its `/proc` files. */
  pid: number;
  /** The metrics endpoint and status page, as `http://ip:port` (no trailing slash). */
  base: string;
  /** The inspector's `ws://` URL, or null when started without `inspect`. */
  inspectorUrl: string | null;
}

/** Options of {@linkcode startProbedServer}. */
export interface ProbedServerOptions {
  /** The config, merged over {@linkcode TEST_CONFIG} (port 0 on loopback, no discovery). @default {{}} */
  config?: Readonly<Record<string, unknown>>;
  /** Run it with `--inspect` on a free loopback port (see {@linkcode Inspector}). @default {false} */
  inspect?: boolean;
}

/**
 * Starts `main.ts` the way `startServer` (`tests/helpers/server_process.ts`) does, with the metrics endpoint
 * on a free loopback port and, when `inspect` is set, the V8 inspector on another; keeps the child's pid.
 * Waits until the server listens and has printed its metrics address (and the inspector its URL).
 *
 * @throws {Error} (after killing the process) when it does not start, listen or print those in time.
 */
export async function startProbedServer(options: ProbedServerOptions = {}): Promise<ProbedServer> {
  const inspect = options.inspect ?? false;
  const configPath = await writeTempConfig({ ...TEST_CONFIG, ...options.config });
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(Deno.execPath(), {
      args: [
        ...RUN_FLAGS,
        ...(inspect ? ["--inspect=127.0.0.1:0"] : []),
        "main.ts",
        "-c",
        configPath,
        "--metrics-address",
        "127.0.0.1:0",
      ],
      cwd: PROJECT_ROOT,
      env: childEnv(),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    await Deno.remove(configPath).catch(() => {});
    throw error;
  }
  const process = new ServerProcess(child, [configPath], configPath);
  await process.ready(PROCESS_DEADLINE_MS);
  try {
    const metrics = await waitUntil(
      () => /^metrics and status page on http:\/\/(\S+)\/$/m.exec(process.stdout)?.[1],
      "the metrics address on stdout",
    );
    const inspectorUrl = inspect ? /(ws:\/\/\S+)/.exec(await process.waitForStderr(/ws:\/\/\S+/))![1]! : null;
    return { process, pid: child.pid, base: `http://${metrics}`, inspectorUrl };
  } catch (error) {
    await process.stop("SIGKILL");
    throw error;
  }
}

// ------------------------------------------------------------------ traffic-counting sockets

/** Datagrams and bytes, by kind (message type, or a placeholder for what is not a message). */
export type Mix = Record<string, { n: number; bytes: number }>;

/** Counts one datagram of `bytes` bytes under `kind` in `mix`. */
export function tally(mix: Mix, kind: string, bytes: number): void {
  const r = mix[kind] ??= { n: 0, bytes: 0 };
  r.n++;
  r.bytes += bytes;
}

/**
 * A UDP socket on 127.0.0.1 (a free port) that counts the datagrams and bytes it sends and receives, and drains
 * whatever reaches it until closed. Subclasses send through {@linkcode sendDatagram} and see each datagram
 * received in {@linkcode onDatagram}, after it is counted. The receive loop starts in the constructor, but its
 * first receive is awaited, so the hook never runs before the subclass's constructor has finished.
 */
export abstract class CountingSocket {
  /** The local port. */
  readonly port: number;
  /** The local address, as `127.0.0.1:port`. */
  readonly addr: string;
  /** Datagrams the OS took from this socket. */
  sent = 0;
  /** Bytes of those datagrams. */
  sentBytes = 0;
  /** Datagrams received. */
  received = 0;
  /** Bytes of those datagrams. */
  receivedBytes = 0;
  /** When the last datagram arrived (`performance.now()`), or 0. */
  lastReceivedAt = 0;
  readonly #conn: Deno.DatagramConn;
  #closed = false;
  readonly #loop: Promise<void>;

  constructor() {
    this.#conn = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    this.port = (this.#conn.addr as Deno.NetAddr).port;
    this.addr = `127.0.0.1:${this.port}`;
    this.#loop = this.#receive();
  }

  /**
   * Sends `bytes` to `to` and counts them once the OS took them.
   *
   * @throws {Error} (rejects, counting nothing) when the OS refuses the send.
   */
  protected async sendDatagram(bytes: Uint8Array, to: Deno.NetAddr): Promise<void> {
    await this.#conn.send(bytes, to);
    this.sent++;
    this.sentBytes += bytes.length;
  }

  /** Called with each datagram received, after it is counted; `bytes` is only valid until it returns. */
  protected abstract onDatagram(bytes: Uint8Array): void;

  async #receive(): Promise<void> {
    const buffer = new Uint8Array(65_536);
    while (!this.#closed) {
      let bytes: Uint8Array;
      try {
        [bytes] = await this.#conn.receive(buffer);
      } catch {
        if (this.#closed) break;
        continue; // an ICMP error surfaced by the OS
      }
      this.received++;
      this.receivedBytes += bytes.length;
      this.lastReceivedAt = performance.now();
      this.onDatagram(bytes);
    }
  }

  /** Closes the socket (if still open) and waits for the receive loop to end. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#conn.close();
      } catch {
        // already closed
      }
    }
    await this.#loop;
  }
}

// ------------------------------------------------------------------ HTTP

/**
 * GETs `url` and returns its body.
 *
 * @throws {Error} on a status other than 2xx (with the status and the start of the body), or a network error.
 */
export async function getText(url: string): Promise<string> {
  const res = await fetch(url);
  const text = await res.text();
  if (!res.ok) throw new Error(`GET ${url}: ${res.status} ${text.slice(0, 200)}`);
  return text;
}

/**
 * GETs `url` and parses its body as JSON (not validated: `T` is taken on trust).
 *
 * @throws {Error} as {@linkcode getText} does, or a `SyntaxError` when the body is not JSON.
 */
export async function getJson<T>(url: string): Promise<T> {
  return JSON.parse(await getText(url)) as T;
}

/** The body of the server's `/api/stats`. */
export interface ApiStats {
  /** The server's counters. */
  stats: StatsSnapshot;
  /** The process's memory (bytes), as `Deno.memoryUsage()` gives it. */
  memory: { rss: number; heapUsed: number; heapTotal: number };
}

/** Reads `/api/stats` of the server whose metrics endpoint is `base` (`http://ip:port`). */
export function getApiStats(base: string): Promise<ApiStats> {
  return getJson<ApiStats>(`${base}/api/stats`);
}

// ------------------------------------------------------------------ /proc

/**
 * Reads a file of `/proc`, or returns null where it cannot be read. Deno asks for `--allow-all` to read some of
 * `/proc` (`/proc/net/*`) directly; without it the file is read through `cat` (`--allow-run`, which starting
 * the server needs anyway).
 */
export function readProc(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotCapable) && !(error instanceof Deno.errors.PermissionDenied)) {
      return null;
    }
  }
  try {
    const out = new Deno.Command("cat", { args: [path], stdout: "piped", stderr: "null" }).outputSync();
    return out.success ? new TextDecoder().decode(out.stdout) : null;
  } catch {
    return null;
  }
}

/**
 * The machine-wide count of UDP datagrams dropped for a full receive buffer (`RcvbufErrors` of
 * `/proc/net/snmp`), or null.
 */
export function rcvbufErrors(): number | null {
  const text = readProc("/proc/net/snmp");
  if (text === null) return null;
  const lines = text.split("\n").filter((l) => l.startsWith("Udp: "));
  const names = lines[0]?.split(/\s+/) ?? [];
  const values = lines[1]?.split(/\s+/) ?? [];
  const i = names.indexOf("RcvbufErrors");
  return i > 0 && values[i] !== undefined ? Number(values[i]) : null;
}

/**
 * Sums the kernel's drop counters of the IPv4 UDP sockets (`/proc/net/udp`) by a key made of each socket's
 * local address and port (both in the file's hex); a null key leaves the socket out.
 */
function tallyUdpDrops<K>(
  key: (hexIp: string, hexPort: string | undefined) => K | null,
): Map<K, number> | null {
  const text = readProc("/proc/net/udp");
  if (text === null) return null;
  const out = new Map<K, number>();
  for (const line of text.split("\n").slice(1)) {
    const f = line.trim().split(/\s+/);
    if (f.length < 13) continue;
    const [hexIp, hexPort] = f[1]!.split(":");
    const k = key(hexIp!, hexPort);
    if (k === null) continue;
    out.set(k, (out.get(k) ?? 0) + Number(f[12]));
  }
  return out;
}

/** Kernel drop counters of the IPv4 UDP sockets by local port (all addresses summed), or null. */
export function udpDropsByPort(): Map<number, number> | null {
  return tallyUdpDrops((_, hexPort) => parseInt(hexPort!, 16));
}

/** Kernel drop counters of the IPv4 UDP sockets by local `ip:port`, or null. */
export function udpDrops(): Map<string, number> | null {
  return tallyUdpDrops((hexIp, hexPort) => {
    if (hexIp.length !== 8 || hexPort === undefined) return null;
    // The address is the kernel's 32-bit value in hex, little-endian on the machines this runs on.
    const ip = [6, 4, 2, 0].map((i) => parseInt(hexIp.slice(i, i + 2), 16)).join(".");
    return `${ip}:${parseInt(hexPort, 16)}`;
  });
}

/** CPU time (ms) a process has used, from `/proc/<pid>/stat` (user + system, at 100 ticks a second), or null. */
export function processCpuMs(pid: number): number | null {
  const text = readProc(`/proc/${pid}/stat`);
  if (text === null) return null;
  // The command name (field 2) may hold spaces: count fields from after its closing parenthesis.
  const f = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const ticks = Number(f[11]) + Number(f[12]); // utime and stime, fields 14 and 15
  return Number.isFinite(ticks) ? ticks * 10 : null;
}

/** A `<field>: <n> kB` line of `/proc/<pid>/status`, in bytes, or null. */
function statusBytes(pid: number, field: string): number | null {
  const m = new RegExp(`${field}:\\s+(\\d+) kB`).exec(readProc(`/proc/${pid}/status`) ?? "");
  return m ? Number(m[1]) * 1024 : null;
}

/** The resident set size of a process (bytes, `VmRSS`), or null. */
export function rssBytes(pid: number): number | null {
  return statusBytes(pid, "VmRSS");
}

/** The kernel's RSS high-water mark of a process (bytes, `VmHWM`), or null. */
export function rssHighWater(pid: number): number | null {
  return statusBytes(pid, "VmHWM");
}

/**
 * Parses a tool's command line: string flags with their defaults (null: none), `-h`/`--help`, strict (an
 * unknown flag is an error). Returns the values, or the exit code after printing the usage (0 for help, 2 with
 * the error for a bad command line).
 */
export function toolFlags<K extends string>(
  args: string[],
  defaults: Record<K, string | null>,
  usage: string,
): Record<K, string | undefined> | number {
  const options: Record<string, { type: "string"; default?: string } | { type: "boolean"; short: string }> = {
    help: { type: "boolean", short: "h" },
  };
  for (const [name, value] of Object.entries<string | null>(defaults)) {
    options[name] = value === null ? { type: "string" } : { type: "string", default: value };
  }
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      options,
      strict: true,
      allowPositionals: false,
    }));
  } catch (error) {
    console.error(`error: ${(error as Error).message}\n\n${usage}`);
    return 2;
  }
  if (values.help) {
    console.log(usage);
    return 0;
  }
  return values as Record<K, string | undefined>;
}

/** The integer value of a flag, from `min` to `max`. @throws {TypeError} naming the flag and the value. */
export function intFlag(text: string | undefined, flag: string, min: number, max: number): number {
  if (text === undefined || !/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new TypeError(`${flag}: "${text ?? ""}" is not an integer from ${min} to ${max}`);
  }
  return Number(text);
}
