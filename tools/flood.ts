/**
 * `deno task flood`: a HandshakeRequest flood against the real program, with a legitimate client talking
 * to it at the same time.
 *
 * It starts `main.ts` as a subprocess (its metrics endpoint on, and the V8 inspector on a loopback port to
 * read the heap after a GC), binds many UDP sockets on 127.0.0.1 port 0 (spoofing is impossible on loopback,
 * so "many sources" means many ports), and sends pre-encoded HandshakeRequests from them at a fixed rate
 * (20,000 a second by default), in small batches every few milliseconds, for a bounded time and count. The
 * flood sockets never answer anything; they only drain and count what comes back. Meanwhile a `P2PClient`
 * bound to another loopback address (127.0.0.2, so per-IP limits on the flood's address do not touch it)
 * connects and sends reliable Data, each of which must be acked and echoed. Two scenarios:
 *
 * - `rate-limit`: `rate_limit_exempt_loopback` false, so the per-IP limits apply to the flood's 127.0.0.1:
 *   most of what reaches the server must be dropped unanswered (`drops.rate_limited`).
 * - `cookies`: the default loopback exemption (no per-IP limit) and a `cookie_threshold` below the number of
 *   flood sockets: once that many handshakes are half-open, every new source gets a stateless cookie
 *   challenge and never registers, so the peer table stays bounded; the legitimate client still gets in by
 *   repeating its request with the cookie.
 *
 * Measured and printed: the flood's achieved rate and its process's CPU; the server's CPU, its counters
 * (which must add up: received = processed + duplicates + dropped, and received + the kernel's drops at its
 * socket = what was sent), its RSS and JS heap before, at the peak of and after the flood (sampled from
 * `/api/stats`; the kernel's RSS high-water mark; the heap after a GC); the bytes each flood source got back
 * per byte it sent (at most 3: the anti-amplification limit), counted until the server's last retransmission
 * to it; and the legitimate client's handshake and deliveries.
 *
 * ```sh
 * deno task flood                                    # both scenarios, 20,000/s for 5 s each
 * deno task flood --scenario cookies --rate 40000    # one scenario, another rate
 * ```
 *
 * Exit status: 0 when every check passed, 1 when one failed, 2 for a bad flag. A flood slower than asked
 * (a slow or busy machine) is reported, not failed. `tests/flood_test.ts` runs a shorter version in the test
 * suite.
 *
 * @module
 */
import { cpuUsage } from "node:process";
import { type Json, P2PClient } from "../mod.ts";
import { DEFAULT_CONFIG } from "../src/config.ts";
import type { StatsSnapshot } from "../src/core/stats.ts";
import { type Addr, addrText } from "../tests/helpers/raw_peer.ts";
import { waitUntil } from "../tests/helpers/server_process.ts";
import {
  type ApiStats,
  CountingSocket,
  getApiStats,
  getJson,
  Inspector,
  intFlag,
  type Mix,
  processCpuMs,
  rssHighWater,
  startProbedServer,
  tally,
  toolFlags,
  udpDrops,
} from "./server_probe.ts";

// ------------------------------------------------------------------ options and report

/** The two server configurations a flood runs against. */
export const SCENARIOS = ["rate-limit", "cookies"] as const;

/** One of {@linkcode SCENARIOS}. */
export type FloodScenario = typeof SCENARIOS[number];

/**
 * What {@linkcode runFlood} checks; every failure names one.
 *
 * - `run`: the run itself (the server started, answered, exited 0 on SIGTERM, the memory was read).
 * - `legit`: the legitimate client handshook, and every Data was acked and echoed.
 * - `counters`: received = processed + duplicates + dropped, in every sample and at the end.
 * - `accounting`: received + the kernel's drops at the server's socket = datagrams sent to it.
 * - `rate-limit`: (rate-limit) no more got past the per-IP datagram bucket than its burst and rate allow,
 *   and `rate_limited` drops are most of the flood the server received (when the flood exceeded the bucket
 *   by far).
 * - `handshake-limit`: (rate-limit) no more registrations from the flood's IP were answered than the per-IP
 *   handshake bucket allows.
 * - `cookie-challenges`: (cookies) challenges were sent.
 * - `cookie-wall`: (cookies) no more flood sources registered than `cookie_threshold`, the peer table stayed
 *   within it (plus the legitimate client), and the legitimate client came in with a cookie.
 * - `peer-bound`: (rate-limit) the peer table stayed within the flood's sources plus the client.
 * - `amplification`: no flood source got more than 3x the bytes it sent.
 * - `memory`: the server's RSS, heap in use, and heap after a GC stayed within their bounds.
 */
export type FloodCheck =
  | "run"
  | "legit"
  | "counters"
  | "accounting"
  | "rate-limit"
  | "handshake-limit"
  | "cookie-challenges"
  | "cookie-wall"
  | "peer-bound"
  | "amplification"
  | "memory";

/** A check that did not hold. */
export interface FloodFailure {
  /** Which check. */
  check: FloodCheck;
  /** What was seen. */
  message: string;
}

/** Options of {@linkcode runFlood}. */
export interface FloodOptions {
  /** Which server configuration (see the module doc). */
  scenario: FloodScenario;
  /** HandshakeRequests a second. @default {20_000} */
  rate?: number;
  /** How long the flood lasts; it also stops after `rate * seconds` datagrams. @default {5} */
  seconds?: number;
  /** Flood source sockets (ports on 127.0.0.1). @default {64} */
  sockets?: number;
  /** Pause between two batches of the flood (each batch catches up with the rate). @default {2} */
  batchIntervalMs?: number;
  /** Reliable Data messages the legitimate client sends. @default {100} */
  legitMessages?: number;
  /** Loopback address the legitimate client binds (not the flood's 127.0.0.1). @default {"127.0.0.2"} */
  legitHost?: string;
  /**
   * The server's `cookie_threshold` in the `cookies` scenario; below `sockets`, so that most flood sources
   * meet the cookie challenge. The `rate-limit` scenario keeps the server's default (64). @default {16}
   */
  cookieThreshold?: number;
  /**
   * The server's `handshake_timeout` (seconds): how long it retransmits a HandshakeResponse nobody confirms,
   * hence how long the flood sockets are drained after the flood. @default {10 (the server's default)}
   */
  handshakeTimeout?: number;
  /** Pause between two reads of `/api/stats`. @default {100} */
  sampleIntervalMs?: number;
  /** How far the server's RSS may rise above its pre-flood baseline. @default {256 MiB} */
  rssSlackBytes?: number;
  /** How far the server's JS heap in use may rise above its pre-flood baseline. @default {96 MiB} */
  heapSlackBytes?: number;
  /** How far the server's heap after a GC may stay above its pre-flood value after a GC. @default {16 MiB} */
  heapAfterGcSlackBytes?: number;
  /** Progress lines. @default {() => {}} */
  log?: (line: string) => void;
}

/** One read of the server's `/api/stats`. */
export interface StatsSample {
  /** Milliseconds since the flood began (negative: before). */
  atMs: number;
  /** Resident set size (bytes). */
  rss: number;
  /** JS heap in use (bytes). */
  heapUsed: number;
  /** JS heap allocated (bytes). */
  heapTotal: number;
  /** Half-open peers. */
  handshaking: number;
  /** Confirmed peers. */
  authenticated: number;
  /** Datagrams received so far. */
  received: number;
  /** Whether received = processed + duplicates + dropped in this snapshot. */
  addsUp: boolean;
}

/** What one flood socket sent and got back. */
export interface SourceTraffic {
  /** `127.0.0.1:<port>`. */
  addr: string;
  /** Datagrams sent. */
  sent: number;
  /** Bytes sent. */
  sentBytes: number;
  /** Datagrams received. */
  received: number;
  /** Bytes received. */
  receivedBytes: number;
  /** `receivedBytes / sentBytes`. */
  ratio: number;
  /** What it got, by message type. */
  replies: Record<string, { n: number; bytes: number }>;
  /** Distinct HandshakeResponses it got (registrations answered; retransmissions reuse an id). */
  registrations: number;
  /** Datagrams the kernel dropped at this socket (receive buffer full), when readable. */
  kernelDrops: number | null;
  /** The ratio if every datagram the kernel dropped there had been as large as its largest reply. */
  ratioBound: number;
}

/** Memory of the server process (bytes). */
export interface MemoryPoint {
  /** Resident set size. */
  rss: number;
  /** JS heap in use. */
  heapUsed: number;
}

/** Everything {@linkcode runFlood} measured. */
export interface FloodReport {
  /** The scenario. */
  scenario: FloodScenario;
  /** The config file the server ran with (over its defaults). */
  serverConfig: Record<string, unknown>;
  /** What was asked for. */
  requested: { rate: number; seconds: number; count: number; sockets: number; batchIntervalMs: number };
  /** The flood generator. */
  flood: {
    /** HandshakeRequests handed to the OS. */
    sent: number;
    /** Their bytes. */
    sentBytes: number;
    /** Sends the OS refused. */
    sendErrors: number;
    /** Smallest and largest request (bytes). */
    requestBytes: [number, number];
    /** From the first to the last send (ms). */
    durationMs: number;
    /** `sent / duration`. */
    achievedRate: number;
    /** Batches sent. */
    batches: number;
    /** The largest batch. */
    largestBatch: number;
    /** The longest pause between two batches (ms): how late the timer ran. */
    longestGapMs: number;
    /** CPU of the flood's process during the flood (it also runs the legitimate client and the sampler). */
    cpu: { userMs: number; systemMs: number; percentOfCore: number };
    /** Whether the flood ran below 90% of the asked rate. */
    slow: boolean;
  };
  /** The server process. */
  server: {
    /** CPU during the flood, in percent of one core (from `/proc/<pid>/stat`); null where unreadable. */
    cpuPercentDuringFlood: number | null;
    /** The final `/api/stats` counters. */
    stats: StatsSnapshot | null;
    /** Datagrams the kernel dropped at the server's socket; null where unreadable. */
    kernelDrops: number | null;
    /** Datagrams sent to it in all: flood + legitimate client. */
    sentToServer: number;
    /** From the flood's start until the server had counted every datagram (ms). */
    busyMs: number;
    /** Whether every sample and the final snapshot added up. */
    countersAddUp: boolean;
    /** Exit code after SIGTERM. */
    exitCode: number | null;
    /** Lines it wrote to stderr. */
    stderrLines: number;
  };
  /** The server's memory (bytes). */
  memory: {
    /** The last read before the flood. */
    baseline: MemoryPoint | null;
    /** The highest sampled values, and the kernel's RSS high-water mark (`VmHWM`) at the end. */
    peak: MemoryPoint & { rssHighWater: number | null };
    /** The last read, after the tail (no forced GC). */
    after: MemoryPoint | null;
    /** The heap in use after two full GCs (through the inspector), before the flood and after the tail. */
    heapAfterGc: { before: number; after: number } | null;
    /** The allowed rises above the baseline. */
    rssSlack: number;
    heapSlack: number;
    heapAfterGcSlack: number;
    /** Samples taken during and after the flood. */
    samples: number;
  };
  /** Every read of `/api/stats`, from the baseline on. */
  timeline: StatsSample[];
  /** The peer table. */
  peers: {
    /** Most half-open peers in any sample. */
    maxHandshaking: number;
    /** Most peers (both states) in any sample. */
    maxTotal: number;
    /** Peers from flood addresses (127.0.0.1) listed by `/peers` right after the flood. */
    floodPeersAfterFlood: number;
    /** Flood sources that ever got a HandshakeResponse (that registered). */
    registeredSources: number;
    /** Registrations answered to the flood (distinct HandshakeResponses at the flood sockets). */
    registrations: number;
    /** The server's `cookie_threshold` in this run. */
    cookieThreshold: number;
  };
  /** Bytes the flood sockets received per byte they sent. */
  amplification: {
    /** Every flood socket. */
    sources: SourceTraffic[];
    /** The highest ratio, and where. */
    maxRatio: number;
    maxAddr: string;
    /** The highest {@linkcode SourceTraffic.ratioBound}. */
    maxRatioBound: number;
    /** All flood sockets together. */
    overall: number;
    /** Datagrams the kernel dropped at the flood sockets (their bytes are not counted); null: unreadable. */
    kernelDrops: number | null;
    /** How long the flood sockets were drained after the server had counted everything (ms). */
    tailMs: number;
    /** Whether the tail lasted past the server's last possible retransmission to them. */
    tailComplete: boolean;
  };
  /** The legitimate client. */
  legit: {
    /** Its address. */
    addr: string;
    /** When it began to connect (ms since the flood began). */
    startedAtMs: number;
    /** When it had every Ack and echo, or gave up (ms since the flood began). */
    doneAtMs: number;
    /** Whether everything (handshake, acks, echoes) happened before the flood ended. */
    duringFlood: boolean;
    /** Handshake time (ms), null when it failed. */
    handshakeMs: number | null;
    /** Reliable Data sent. */
    messages: number;
    /** Of which acked. */
    acked: number;
    /** Of which echoed. */
    echoed: number;
    /** Errors (handshake, sends). */
    errors: string[];
    /** Datagrams it sent (all of them reach the server's count or the kernel's drops). */
    datagramsSent: number;
    /** Its retransmissions (the kernel drops its datagrams at the server's socket like the flood's). */
    retransmissions: number;
    /** Error messages it got (a cookie challenge is one). */
    errorsReceived: number;
  };
  /** Wall time of the run (ms). */
  wallMs: number;
  /** Every check that did not hold; empty when the run passed. */
  failures: FloodFailure[];
  /** Observations that are not failures. */
  notes: string[];
}

const MiB = 1024 * 1024;

const DEFAULTS = {
  rate: 20_000,
  seconds: 5,
  sockets: 64,
  batchIntervalMs: 2,
  legitMessages: 100,
  legitHost: "127.0.0.2",
  cookieThreshold: 16,
  handshakeTimeout: DEFAULT_CONFIG.handshakeTimeout,
  sampleIntervalMs: 100,
  // The bounds, from measurements of 4- and 5-second floods at 20,000/s on a shared 2-core machine (baseline
  // RSS about 55-60 MiB, heap in use about 7 MiB, heap after a GC about 6 MiB):
  // - RSS rose by 31-44 MiB (rate-limit) and 56-122 MiB (cookies). It grows most when the server is
  //   overloaded (the kernel dropping half its datagrams or more) and levels off rather than growing with
  //   the flood: a 10,000/s cookies flood the server keeps up with rose by 46 MiB in 8 s, 15-second floods at
  //   20,000/s by 105-171 MiB. It is V8 growing its heap under allocation pressure (heap allocated up to
  //   about 95 MiB) plus native buffers of datagrams in flight, which the allocator keeps; a bare Deno socket
  //   that only receives the same flood grows by about 23 MiB. 256 MiB is twice the worst short run; it only
  //   catches gross growth, which is why the heap after a GC is checked too.
  // - Heap in use (garbage included: no GC is forced) peaked 12-41 MiB above its baseline (57 MiB in 15 s):
  //   96 MiB is over twice the worst short run.
  // - Heap after a GC, what the server really holds after the flood (peers, buckets, queues): +1.0 to +1.3
  //   MiB in every run. 16 MiB (the fuzzer's slack for the same reading) is the leak detector: it fails a
  //   server that keeps a few hundred bytes per datagram it handled.
  rssSlackBytes: 256 * MiB,
  heapSlackBytes: 96 * MiB,
  heapAfterGcSlackBytes: 16 * MiB,
};

/** Reliable sends of the legitimate client awaiting their Ack at once. */
const LEGIT_IN_FLIGHT = 16;
/** Distinct pre-encoded HandshakeRequests per flood socket (cycled). */
const REQUESTS_PER_SOCKET = 16;
/** The most one batch sends: 50 ms worth at 20,000/s. A stalled timer is not caught up in one burst. */
const MAX_BATCH = 1_000;
/** The flood's network id (the legitimate client stays in the default network). */
const FLOOD_NETWORK = "flood";

// ------------------------------------------------------------------ sampling the server

function addsUp(s: StatsSnapshot): boolean {
  return s.datagramsReceived === s.processed + s.duplicates + s.droppedTotal;
}

/** Reads `/api/stats` every `intervalMs` until stopped, one read at a time. */
class Sampler {
  readonly samples: StatsSample[] = [];
  latest: ApiStats | null = null;
  errors = 0;
  readonly #base: string;
  readonly #intervalMs: number;
  #origin = performance.now();
  #stop = false;
  #loop: Promise<void> | null = null;

  constructor(base: string, intervalMs: number) {
    this.#base = base;
    this.#intervalMs = intervalMs;
  }

  /** Sample times count from `at` (the flood's start) from now on. */
  set origin(at: number) {
    this.#origin = at;
  }

  start(): void {
    this.#loop = this.#run();
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#loop;
  }

  /** One read, recorded. */
  async sample(): Promise<ApiStats> {
    const api = await getApiStats(this.#base);
    const s = api.stats;
    this.latest = api;
    this.samples.push({
      atMs: Math.round(performance.now() - this.#origin),
      rss: api.memory.rss,
      heapUsed: api.memory.heapUsed,
      heapTotal: api.memory.heapTotal,
      handshaking: s.peers.handshaking,
      authenticated: s.peers.authenticated,
      received: s.datagramsReceived,
      addsUp: addsUp(s),
    });
    return api;
  }

  async #run(): Promise<void> {
    while (!this.#stop) {
      try {
        await this.sample();
      } catch {
        this.errors++;
      }
      if (!this.#stop) await sleep(this.#intervalMs);
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// ------------------------------------------------------------------ the flood sockets

const encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();
/** Every envelope p2p_server sends starts with its id and type. */
const PREFIX = /^\{"id":"([0-9a-f-]{36})","message_type":"(\w+)"/;

/** One flood source: a socket on 127.0.0.1 that sends pre-encoded HandshakeRequests and drains its replies. */
class FloodSocket extends CountingSocket {
  readonly #requests: Uint8Array[];
  #next = 0;
  sendErrors = 0;
  largestReply = 0;
  readonly replies: Mix = {};
  /** Ids of the HandshakeResponses received: one per registration (retransmissions keep the id). */
  readonly responseIds = new Set<string>();

  constructor(index: number) {
    super();
    // Distinct message and node ids, as a real client's would be (each a new registration once the address
    // holds a peer); requires_ack asks for the most the server sends back (an Ack and the response).
    this.#requests = Array.from({ length: REQUESTS_PER_SOCKET }, (_, k) =>
      encoder.encode(JSON.stringify({
        id: crypto.randomUUID(),
        message_type: "HandshakeRequest",
        timestamp: Math.floor(Date.now() / 1000),
        payload: {
          id: crypto.randomUUID(),
          name: `flood-${index}-${k}`,
          version: "0.0.1",
          listen_addr: this.addr,
          capabilities: [],
          metadata: { network_id: FLOOD_NETWORK },
        },
        sender_addr: this.addr,
        sequence_number: 1,
        requires_ack: true,
        ack_for: null,
      })));
  }

  /** Smallest and largest of its requests. */
  get requestBytes(): [number, number] {
    const sizes = this.#requests.map((r) => r.length);
    return [Math.min(...sizes), Math.max(...sizes)];
  }

  /** Sends its next request (never waits for an answer). */
  async send(to: Deno.NetAddr): Promise<void> {
    const bytes = this.#requests[this.#next++ % this.#requests.length]!;
    try {
      await this.sendDatagram(bytes, to);
    } catch {
      this.sendErrors++;
    }
  }

  protected override onDatagram(bytes: Uint8Array): void {
    this.largestReply = Math.max(this.largestReply, bytes.length);
    const m = PREFIX.exec(utf8Decoder.decode(bytes.subarray(0, 80)));
    const type = m?.[2] ?? "<not an envelope>";
    tally(this.replies, type, bytes.length);
    if (type === "HandshakeResponse") this.responseIds.add(m![1]!);
  }
}

/** What the pacing loop did. */
interface FloodRun {
  startedAt: number;
  endedAt: number;
  batches: number;
  largestBatch: number;
  longestGapMs: number;
}

/**
 * Sends at most `count` requests round-robin from `sockets` at `rate` a second for at most `durationMs`:
 * every `intervalMs` one batch brings the count up to where the rate says it should be (at most
 * {@linkcode MAX_BATCH}). Each batch's sends are awaited (the OS took them), answers never.
 */
async function flood(
  sockets: FloodSocket[],
  to: Deno.NetAddr,
  options: { rate: number; count: number; durationMs: number; intervalMs: number; startedAt: number },
): Promise<FloodRun> {
  const { rate, count, durationMs, intervalMs, startedAt } = options;
  const run: FloodRun = { startedAt, endedAt: startedAt, batches: 0, largestBatch: 0, longestGapMs: 0 };
  let attempted = 0;
  let cursor = 0;
  let last = startedAt;
  for (;;) {
    const now = performance.now();
    const elapsed = now - startedAt;
    run.longestGapMs = Math.max(run.longestGapMs, now - last);
    last = now;
    if (elapsed >= durationMs || attempted >= count) break;
    const target = Math.min(Math.floor((rate * elapsed) / 1000) + 1, count);
    // More than a second behind: the machine cannot keep up; let that backlog go rather than burst it.
    if (target - attempted > rate) attempted = target - rate;
    const batch = Math.min(target - attempted, MAX_BATCH);
    if (batch > 0) {
      const sends: Promise<void>[] = [];
      for (let k = 0; k < batch; k++) sends.push(sockets[cursor++ % sockets.length]!.send(to));
      attempted += batch;
      await Promise.all(sends);
      run.batches++;
      run.largestBatch = Math.max(run.largestBatch, batch);
    }
    await sleep(intervalMs);
  }
  run.endedAt = performance.now();
  return run;
}

// ------------------------------------------------------------------ the legitimate client

type JsonObject = { [key: string]: Json };

function isObject(value: Json | undefined): value is JsonObject {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/**
 * Connects a P2PClient from `host`, sends `n` reliable Data ({@linkcode LEGIT_IN_FLIGHT} at a time) and
 * waits for every Ack and echo; fills `report`. Returns the client, still connected (the caller closes it).
 */
async function runLegit(
  server: Addr,
  host: string,
  n: number,
  origin: number,
  report: FloodReport["legit"],
): Promise<P2PClient> {
  const client = new P2PClient({ server: addrText(server), bind: `${host}:0`, name: "flood-legit" });
  const echoed = new Set<number>();
  const tag = crypto.randomUUID();
  client.on("data", ({ payload }) => {
    const echo = isObject(payload) ? payload.echo : undefined;
    if (isObject(echo) && echo.tag === tag && typeof echo.i === "number") echoed.add(echo.i);
  });
  report.startedAtMs = Math.round(performance.now() - origin);
  const t0 = performance.now();
  try {
    await client.connect();
  } catch (error) {
    report.errors.push(`handshake: ${(error as Error).message}`);
    report.doneAtMs = Math.round(performance.now() - origin);
    return client;
  }
  report.handshakeMs = performance.now() - t0;
  report.addr = addrText(client.localAddr);
  let next = 0;
  const worker = async () => {
    while (next < n) {
      const i = next++;
      try {
        await client.send({ tag, i }, { reliable: true });
        report.acked++;
      } catch (error) {
        report.errors.push(`Data ${i}: ${(error as Error).message}`);
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(LEGIT_IN_FLIGHT, n) }, worker));
  // Echoes are unreliable Data, sent once per Data the server processed: all of them come on loopback.
  await waitUntil(() => echoed.size === n, "the echoes", 10_000).catch(() => {});
  report.echoed = echoed.size;
  report.doneAtMs = Math.round(performance.now() - origin);
  return client;
}

// ------------------------------------------------------------------ the run

/**
 * Floods a fresh server subprocess with HandshakeRequests while a legitimate client talks to it, and returns
 * what it measured; `failures` lists every check that did not hold. Everything it starts is stopped before
 * it returns.
 */
export async function runFlood(options: FloodOptions): Promise<FloodReport> {
  const o = { ...DEFAULTS, ...options };
  const log = options.log ?? (() => {});
  const started = performance.now();
  const count = Math.round(o.rate * o.seconds);
  const serverConfig: Record<string, unknown> = {
    stats_interval: 0,
    handshake_timeout: o.handshakeTimeout,
    ...(o.scenario === "rate-limit"
      ? { rate_limit_exempt_loopback: false }
      : { cookie_threshold: o.cookieThreshold }),
  };
  const failures: FloodFailure[] = [];
  const notes: string[] = [];
  const report: FloodReport = {
    scenario: o.scenario,
    serverConfig,
    requested: {
      rate: o.rate,
      seconds: o.seconds,
      count,
      sockets: o.sockets,
      batchIntervalMs: o.batchIntervalMs,
    },
    flood: {
      sent: 0,
      sentBytes: 0,
      sendErrors: 0,
      requestBytes: [0, 0],
      durationMs: 0,
      achievedRate: 0,
      batches: 0,
      largestBatch: 0,
      longestGapMs: 0,
      cpu: { userMs: 0, systemMs: 0, percentOfCore: 0 },
      slow: false,
    },
    server: {
      cpuPercentDuringFlood: null,
      stats: null,
      kernelDrops: null,
      sentToServer: 0,
      busyMs: 0,
      countersAddUp: true,
      exitCode: null,
      stderrLines: 0,
    },
    memory: {
      baseline: null,
      peak: { rss: 0, heapUsed: 0, rssHighWater: null },
      after: null,
      heapAfterGc: null,
      rssSlack: o.rssSlackBytes,
      heapSlack: o.heapSlackBytes,
      heapAfterGcSlack: o.heapAfterGcSlackBytes,
      samples: 0,
    },
    timeline: [],
    peers: {
      maxHandshaking: 0,
      maxTotal: 0,
      floodPeersAfterFlood: 0,
      registeredSources: 0,
      registrations: 0,
      cookieThreshold: o.scenario === "cookies" ? o.cookieThreshold : DEFAULT_CONFIG.cookieThreshold,
    },
    amplification: {
      sources: [],
      maxRatio: 0,
      maxAddr: "",
      maxRatioBound: 0,
      overall: 0,
      kernelDrops: null,
      tailMs: 0,
      tailComplete: false,
    },
    legit: {
      addr: `${o.legitHost}:?`,
      startedAtMs: 0,
      doneAtMs: 0,
      duringFlood: false,
      handshakeMs: null,
      messages: o.legitMessages,
      acked: 0,
      echoed: 0,
      errors: [],
      datagramsSent: 0,
      retransmissions: 0,
      errorsReceived: 0,
    },
    wallMs: 0,
    failures,
    notes,
  };

  log(`${o.scenario}: starting the server (${JSON.stringify(serverConfig)})`);
  const srv = await startProbedServer({ config: serverConfig, inspect: true });
  const server = srv.process;
  const sampler = new Sampler(srv.base, o.sampleIntervalMs);
  const sockets: FloodSocket[] = [];
  let client: P2PClient | null = null;
  let inspector: Inspector | null = null;
  try {
    inspector = await Inspector.connect(srv.inspectorUrl!);
    const to: Deno.NetAddr = { transport: "udp", hostname: server.addr.hostname, port: server.addr.port };
    for (let i = 0; i < o.sockets; i++) sockets.push(new FloodSocket(i));
    const sizes = sockets.map((s) => s.requestBytes);
    report.flood.requestBytes = [Math.min(...sizes.map((s) => s[0])), Math.max(...sizes.map((s) => s[1]))];
    const serverKey = addrText(server.addr);
    const dropsAtStart = udpDrops();
    const serverDrops = () => {
      const at = udpDrops()?.get(serverKey);
      return at === undefined ? null : at - (dropsAtStart?.get(serverKey) ?? 0);
    };

    // The baseline: the last of a few reads, once the server has answered its first requests.
    for (let i = 0; i < 3; i++) {
      await sampler.sample();
      await sleep(50);
    }
    const heapBefore = await inspector.heapAfterGc();
    const base = await sampler.sample();
    report.memory.baseline = { rss: base.memory.rss, heapUsed: base.memory.heapUsed };

    const floodStart = performance.now();
    sampler.origin = floodStart;
    sampler.start();
    const cpuStart = cpuUsage();
    const serverCpuStart = processCpuMs(srv.pid);
    log(`${o.scenario}: flooding ${count} HandshakeRequests at ${o.rate}/s from ${o.sockets} sockets`);
    let floodEnded = false;
    const floodDone = flood(sockets, to, {
      rate: o.rate,
      count,
      durationMs: o.seconds * 1000,
      intervalMs: o.batchIntervalMs,
      startedAt: floodStart,
    }).finally(() => floodEnded = true);

    // The legitimate client comes once the defence is at work: the first over-limit drop, or the first
    // cookie challenge (then the half-open handshakes have reached the threshold).
    const defended = () => {
      const s = sampler.latest?.stats;
      return s !== undefined &&
        (o.scenario === "rate-limit" ? s.drops.rate_limited > 0 : s.cookieChallenges > 0);
    };
    await waitUntil(() => defended() || floodEnded, "the defence to start", 60_000, 10);
    if (!defended()) {
      failures.push({
        check: o.scenario === "rate-limit" ? "rate-limit" : "cookie-challenges",
        message: `the server showed no ${
          o.scenario === "rate-limit" ? "rate_limited drop" : "cookie challenge"
        } during the flood`,
      });
    }
    client = await runLegit(server.addr, o.legitHost, o.legitMessages, floodStart, report.legit);

    const run = await floodDone;
    const cpu = cpuUsage();
    const serverCpuEnd = processCpuMs(srv.pid);
    const f = report.flood;
    f.durationMs = run.endedAt - run.startedAt;
    for (const s of sockets) {
      f.sent += s.sent;
      f.sentBytes += s.sentBytes;
      f.sendErrors += s.sendErrors;
    }
    f.achievedRate = f.sent / Math.max(0.001, f.durationMs / 1000);
    f.batches = run.batches;
    f.largestBatch = run.largestBatch;
    f.longestGapMs = run.longestGapMs;
    const userMs = (cpu.user - cpuStart.user) / 1000;
    const systemMs = (cpu.system - cpuStart.system) / 1000;
    f.cpu = { userMs, systemMs, percentOfCore: (100 * (userMs + systemMs)) / Math.max(1, f.durationMs) };
    f.slow = f.achievedRate < 0.9 * o.rate;
    if (serverCpuStart !== null && serverCpuEnd !== null) {
      report.server.cpuPercentDuringFlood = (100 * (serverCpuEnd - serverCpuStart)) /
        Math.max(1, f.durationMs);
    }
    log(
      `${o.scenario}: sent ${f.sent} in ${(f.durationMs / 1000).toFixed(2)} s (${
        Math.round(f.achievedRate)
      }/s)`,
    );

    // The flood's peers, while they are still registered (half-open for half_open_timeout, 60 s).
    const listed = await getJson<{ peers: { addr: string }[] }>(`${srv.base}/peers?limit=1000`);
    report.peers.floodPeersAfterFlood = listed.peers.filter((p) => p.addr.startsWith("127.0.0.1:")).length;

    // The client leaves; then every datagram sent to the server must be counted by it, or dropped by the
    // kernel at its socket.
    await client.disconnect();
    const legitStats = client.getStats();
    report.legit.datagramsSent = legitStats.datagramsSent;
    report.legit.retransmissions = legitStats.retransmissions;
    report.legit.errorsReceived = legitStats.messagesReceived.Error;
    report.legit.duringFlood = report.legit.doneAtMs <= f.durationMs;
    report.server.sentToServer = f.sent + legitStats.datagramsSent;
    const settled = await waitUntil(
      () => {
        const s = sampler.latest?.stats;
        return s && s.datagramsReceived + (serverDrops() ?? 0) >= report.server.sentToServer ? s : undefined;
      },
      "the server to count every datagram sent to it",
      20_000,
      50,
    ).catch(() => null);
    if (settled === null) {
      failures.push({
        check: "accounting",
        message: `the server counted ${sampler.latest?.stats.datagramsReceived} datagrams and the kernel ` +
          `dropped ${serverDrops()} at its socket; ${report.server.sentToServer} were sent to it`,
      });
    }
    const settledAt = performance.now();
    report.server.busyMs = settledAt - floodStart;

    // The tail: the server retransmits each unconfirmed HandshakeResponse until handshake_timeout after it
    // first sent it, which was before `settledAt`. Drain the flood sockets until then and a quiet moment.
    log(`${o.scenario}: draining the flood sockets until the server's last retransmission`);
    const tailEnd = settledAt + o.handshakeTimeout * 1000 + 300;
    await waitUntil(
      () => {
        const now = performance.now();
        return now >= tailEnd && sockets.every((s) => now - s.lastReceivedAt > 300);
      },
      "the flood sockets to fall quiet",
      o.handshakeTimeout * 1000 + 10_000,
      50,
    ).then(() => report.amplification.tailComplete = true, () => {});
    report.amplification.tailMs = performance.now() - settledAt;
    await sampler.stop();
    const last = await sampler.sample();
    report.server.stats = last.stats;
    report.memory.after = { rss: last.memory.rss, heapUsed: last.memory.heapUsed };
    report.memory.heapAfterGc = { before: heapBefore, after: await inspector.heapAfterGc() };
    report.server.kernelDrops = serverDrops();

    const drops = udpDrops();
    const a = report.amplification;
    a.sources = sockets.map((s) => {
      const kernelDrops = drops?.get(s.addr) ?? null;
      const sentBytes = Math.max(1, s.sentBytes);
      return {
        addr: s.addr,
        sent: s.sent,
        sentBytes: s.sentBytes,
        received: s.received,
        receivedBytes: s.receivedBytes,
        ratio: s.receivedBytes / sentBytes,
        replies: { ...s.replies },
        registrations: s.responseIds.size,
        kernelDrops,
        ratioBound: (s.receivedBytes + (kernelDrops ?? 0) * s.largestReply) / sentBytes,
      };
    });
    const top = [...a.sources].sort((x, y) => y.ratio - x.ratio)[0];
    a.maxRatio = top?.ratio ?? 0;
    a.maxAddr = top?.addr ?? "";
    a.maxRatioBound = Math.max(0, ...a.sources.map((x) => x.ratioBound));
    a.overall = a.sources.reduce((n, s) => n + s.receivedBytes, 0) /
      Math.max(1, a.sources.reduce((n, s) => n + s.sentBytes, 0));
    a.kernelDrops = drops === null ? null : a.sources.reduce((n, s) => n + (s.kernelDrops ?? 0), 0);
    report.peers.registeredSources = a.sources.filter((s) => s.registrations > 0).length;
    report.peers.registrations = a.sources.reduce((n, s) => n + s.registrations, 0);
  } catch (error) {
    failures.push({ check: "run", message: `the run stopped: ${(error as Error).stack ?? error}` });
    notes.push(`server stderr (last lines):\n${server.stderr.split("\n").slice(-20).join("\n")}`);
  } finally {
    await sampler.stop();
    await client?.close();
    await Promise.all(sockets.map((s) => s.close()));
    await inspector?.close();
    report.memory.peak.rssHighWater = rssHighWater(srv.pid);
    const status = await server.stop();
    report.server.exitCode = status.code;
    report.server.stderrLines = server.stderr.split("\n").length - 1;
  }

  report.timeline = sampler.samples;
  report.memory.samples = sampler.samples.filter((s) => s.atMs >= 0).length;
  for (const s of sampler.samples) {
    report.memory.peak.rss = Math.max(report.memory.peak.rss, s.rss);
    report.memory.peak.heapUsed = Math.max(report.memory.peak.heapUsed, s.heapUsed);
    report.peers.maxHandshaking = Math.max(report.peers.maxHandshaking, s.handshaking);
    report.peers.maxTotal = Math.max(report.peers.maxTotal, s.handshaking + s.authenticated);
    if (!s.addsUp) report.server.countersAddUp = false;
  }
  if (report.server.stats && !addsUp(report.server.stats)) report.server.countersAddUp = false;
  if (sampler.errors > 0) notes.push(`${sampler.errors} reads of /api/stats failed`);
  report.wallMs = performance.now() - started;
  check(report);
  return report;
}

/** The checks that make a run pass or fail (see {@linkcode FloodCheck}). */
function check(r: FloodReport): void {
  const fail = (check: FloodCheck, message: string) => r.failures.push({ check, message });
  const notes = r.notes;
  if (r.server.exitCode !== 0) fail("run", `the server exited with code ${r.server.exitCode} on SIGTERM`);
  if (r.flood.slow) {
    notes.push(
      `the flood reached ${
        Math.round(r.flood.achievedRate)
      }/s of the ${r.requested.rate}/s asked (a slow or ` +
        "busy machine); the checks hold at that rate",
    );
  }
  if (r.flood.sendErrors > 0) notes.push(`the OS refused ${r.flood.sendErrors} flood sends`);

  const l = r.legit;
  if (l.handshakeMs === null) {
    fail("legit", `the legitimate client could not handshake: ${l.errors.join("; ")}`);
  }
  if (l.acked !== l.messages) {
    fail(
      "legit",
      `the legitimate client got ${l.acked} of ${l.messages} Acks: ${l.errors.slice(0, 5).join("; ")}`,
    );
  }
  if (l.echoed !== l.messages) fail("legit", `the legitimate client got ${l.echoed} of ${l.messages} echoes`);
  if (!l.duringFlood && l.handshakeMs !== null) {
    notes.push(
      `the legitimate client finished ${l.doneAtMs - Math.round(r.flood.durationMs)} ms after the flood`,
    );
  }

  const s = r.server.stats;
  if (!r.server.countersAddUp) {
    fail("counters", "received != processed + duplicates + dropped in a snapshot of the server's counters");
  }
  const p = r.peers;
  if (s) {
    const lost = r.server.kernelDrops;
    if (lost === null) notes.push("the kernel's drops at the server's socket could not be read");
    else if (s.datagramsReceived + lost !== r.server.sentToServer) {
      fail(
        "accounting",
        `the server counted ${s.datagramsReceived} datagrams and the kernel dropped ${lost} at its socket, ` +
          `but ${r.server.sentToServer} were sent to it`,
      );
    }
    const window = r.server.busyMs / 1000;
    if (r.scenario === "rate-limit") {
      // The per-IP datagram bucket admits at most its burst plus its rate over the time the server was busy
      // with the flood; everything else from the flood's IP is dropped (rate_limited also counts the per-IP
      // handshake and per-node buckets behind it). The legitimate client has its own IP and bucket.
      const [perSecond, burst] = DEFAULT_CONFIG.rateLimitDatagramsPerIp;
      const budget = Math.ceil(burst + perSecond * window);
      const fromFlood = s.datagramsReceived - l.datagramsSent;
      const admitted = fromFlood - s.drops.rate_limited;
      if (admitted > budget) {
        fail("rate-limit", `${admitted} flood datagrams got past the per-IP bucket; it allows ${budget}`);
      }
      if (s.drops.rate_limited * 2 <= fromFlood) {
        const msg = `rate_limited drops (${s.drops.rate_limited}) are not most of the ${fromFlood} flood ` +
          "datagrams the server received";
        if (fromFlood > 2 * budget) fail("rate-limit", msg);
        else notes.push(`${msg}: too few reached it to exceed the per-IP bucket (${budget}) by much`);
      }
      const [hsPerSecond, hsBurst] = DEFAULT_CONFIG.rateLimitHandshakesPerIp;
      const hsBudget = Math.ceil(hsBurst + hsPerSecond * window);
      if (p.registrations > hsBudget) {
        fail(
          "handshake-limit",
          `${p.registrations} registrations from the flood's IP were answered (a HandshakeResponse each); ` +
            `rate_limit_handshakes_per_ip allows ${hsBudget} in ${window.toFixed(1)} s`,
        );
      }
      if (p.maxTotal > r.requested.sockets + 1) {
        fail(
          "peer-bound",
          `the peer table grew to ${p.maxTotal}: more than the ${r.requested.sockets} sources + 1`,
        );
      }
    } else {
      if (s.cookieChallenges === 0) fail("cookie-challenges", "the server sent no cookie challenge");
      // Half-open flood peers stop at the threshold; the legitimate client may be half-open for a moment too.
      if (p.registeredSources > p.cookieThreshold) {
        fail(
          "cookie-wall",
          `${p.registeredSources} flood sources registered; cookie_threshold is ${p.cookieThreshold}`,
        );
      }
      if (p.floodPeersAfterFlood > p.cookieThreshold) {
        fail(
          "cookie-wall",
          `/peers lists ${p.floodPeersAfterFlood} flood peers; cookie_threshold is ${p.cookieThreshold}`,
        );
      }
      if (p.maxTotal > p.cookieThreshold + 1) {
        fail(
          "cookie-wall",
          `the peer table grew to ${p.maxTotal} (${p.maxHandshaking} half-open at most); cookie_threshold is ` +
            `${p.cookieThreshold}, plus the legitimate client`,
        );
      }
      if (s.cookiesAccepted === 0) {
        fail(
          "cookie-wall",
          "no HandshakeRequest came back with a valid cookie (the legitimate client did not need one)",
        );
      }
    }
  }

  const a = r.amplification;
  const over = a.sources.filter((x) => x.ratio > 3);
  if (over.length > 0) {
    fail(
      "amplification",
      `${over.length} flood sources got more than 3x the bytes they sent (${
        a.maxRatio.toFixed(2)
      } at ${a.maxAddr})`,
    );
  }
  if (a.kernelDrops !== null && a.kernelDrops > 0) {
    notes.push(
      `the kernel dropped ${a.kernelDrops} datagrams at the flood sockets; counting each as large as the ` +
        `largest reply there, the highest ratio would be ${a.maxRatioBound.toFixed(2)}`,
    );
  }
  if (!a.tailComplete) notes.push("the flood sockets were still receiving at the end of the tail");

  const m = r.memory;
  if (!m.baseline || !m.heapAfterGc) {
    fail("run", "the server's memory was not read");
    return;
  }
  const rssPeak = Math.max(m.peak.rss, m.peak.rssHighWater ?? 0);
  if (rssPeak > m.baseline.rss + m.rssSlack) {
    fail(
      "memory",
      `the server's RSS peaked at ${mib(rssPeak)}: over ${mib(m.baseline.rss)} + ${mib(m.rssSlack)}`,
    );
  }
  if (m.peak.heapUsed > m.baseline.heapUsed + m.heapSlack) {
    fail(
      "memory",
      `the server's heap in use peaked at ${mib(m.peak.heapUsed)}: over ${mib(m.baseline.heapUsed)} + ` +
        mib(m.heapSlack),
    );
  }
  if (m.heapAfterGc.after > m.heapAfterGc.before + m.heapAfterGcSlack) {
    fail(
      "memory",
      `the server's heap after a GC is ${mib(m.heapAfterGc.after)}: over ${mib(m.heapAfterGc.before)} + ` +
        mib(m.heapAfterGcSlack),
    );
  }
}

// ------------------------------------------------------------------ the summary

function mib(n: number): string {
  return `${(n / MiB).toFixed(1)} MiB`;
}

function n(x: number): string {
  return Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : String(x);
}

function table(rows: string[][]): string[] {
  const width = Math.max(...rows.map((r) => r[0]!.length));
  return rows.map((r) => `  ${r[0]!.padEnd(width)}  ${r[1]}`);
}

function mix(m: Record<string, { n: number; bytes: number }>): string {
  return Object.entries(m).sort((a, b) => b[1].bytes - a[1].bytes)
    .map(([type, v]) => `${type} ${n(v.n)}x/${n(v.bytes)} B`).join(", ") || "nothing";
}

function nonZero(m: Record<string, number>): string {
  return Object.entries(m).filter(([, v]) => v > 0).map(([k, v]) => `${k} ${n(v)}`).join(", ") || "none";
}

/** The summary `deno task flood` prints for one scenario. */
export function formatFloodReport(r: FloodReport): string {
  const out: string[] = [];
  const q = r.requested;
  out.push(
    `p2p_server flood, scenario ${r.scenario}: ${n(q.rate)} HandshakeRequests/s for ${q.seconds} s ` +
      `(at most ${n(q.count)}) from ${q.sockets} sockets, a batch every ${q.batchIntervalMs} ms`,
  );
  out.push(`  server config: ${JSON.stringify(r.serverConfig)}`);
  out.push("");

  const f = r.flood;
  out.push("Flood generator");
  out.push(...table([
    ["sent", `${n(f.sent)} datagrams, ${n(f.sentBytes)} B (requests of ${f.requestBytes.join("-")} B)`],
    [
      "achieved rate",
      `${n(f.achievedRate)}/s over ${(f.durationMs / 1000).toFixed(2)} s` +
      (f.slow ? ` (BELOW the ${n(q.rate)}/s asked)` : ""),
    ],
    ["batches", `${n(f.batches)}, largest ${n(f.largestBatch)}, longest gap ${f.longestGapMs.toFixed(1)} ms`],
    ["send errors", n(f.sendErrors)],
    [
      "CPU of its process",
      `${f.cpu.percentOfCore.toFixed(0)}% of a core (user ${n(f.cpu.userMs)} ms, system ${
        n(f.cpu.systemMs)
      } ` +
      "ms; it also runs the drains, the legitimate client and the sampler)",
    ],
  ]));
  out.push("");

  const s = r.server.stats;
  out.push("Server");
  if (s) {
    const sum = s.processed + s.duplicates + s.droppedTotal;
    const cpu = r.server.cpuPercentDuringFlood;
    out.push(...table([
      ["CPU during the flood", cpu === null ? "unknown" : `${cpu.toFixed(0)}% of a core`],
      ["datagrams received", n(s.datagramsReceived)],
      ["  processed", n(s.processed)],
      ["  duplicates", n(s.duplicates)],
      ["  dropped", n(s.droppedTotal)],
      [
        "  processed + duplicates + dropped",
        `${n(sum)} ${r.server.countersAddUp ? "(adds up, in every sample too)" : "(DOES NOT ADD UP)"}`,
      ],
      [
        "kernel receive-buffer drops",
        r.server.kernelDrops === null
          ? "unknown"
          : `${n(r.server.kernelDrops)} (at its socket, /proc/net/udp)`,
      ],
      [
        "sent to it",
        `${n(r.server.sentToServer)} (flood ${n(f.sent)} + legitimate ${n(r.legit.datagramsSent)}); ` +
        (r.server.kernelDrops === null
          ? "received + kernel drops unknown"
          : `received + kernel drops = ${n(s.datagramsReceived + r.server.kernelDrops)}`),
      ],
      [
        "busy with the flood",
        `${(r.server.busyMs / 1000).toFixed(2)} s (until it had counted every datagram)`,
      ],
      ["drops by reason", nonZero(s.drops)],
      ["cookie challenges / accepted", `${n(s.cookieChallenges)} / ${n(s.cookiesAccepted)}`],
      ["amplification-limited sends", n(s.amplificationLimited)],
      ["handshakes ok / failed", `${n(s.handshakesOk)} / ${nonZero(s.handshakesFailed)}`],
      ["received by type", nonZero(s.messagesReceived)],
      ["sent", `${n(s.datagramsSent)} datagrams, ${n(s.bytesSent)} B: ${nonZero(s.messagesSent)}`],
      ["retransmissions / give-ups", `${n(s.retransmissions)} / ${n(s.giveUps)}`],
      ["stderr lines", n(r.server.stderrLines)],
    ]));
  } else {
    out.push("  no final counters");
  }
  out.push("");

  const p = r.peers;
  out.push("Peer table");
  out.push(...table([
    ["most peers in a sample", `${p.maxTotal} (${p.maxHandshaking} half-open at most)`],
    ["flood peers listed after the flood", String(p.floodPeersAfterFlood)],
    ["flood sources that registered", `${p.registeredSources} of ${q.sockets}`],
    ["registrations answered to the flood", `${n(p.registrations)} (distinct HandshakeResponses)`],
    ["cookie_threshold", String(p.cookieThreshold)],
  ]));
  out.push("");

  const m = r.memory;
  out.push(`Server memory (/api/stats every ~100 ms: ${m.samples} samples during and after the flood)`);
  if (m.baseline) {
    const rise = (x: number, b: number) => `${x >= b ? "+" : ""}${mib(x - b)}`;
    out.push(...table([
      [
        "RSS",
        `baseline ${mib(m.baseline.rss)}, peak ${mib(m.peak.rss)} (${rise(m.peak.rss, m.baseline.rss)}), ` +
        `after ${m.after ? mib(m.after.rss) : "?"}; allowed +${mib(m.rssSlack)}`,
      ],
      [
        "RSS high-water mark (VmHWM)",
        m.peak.rssHighWater === null
          ? "unknown"
          : `${mib(m.peak.rssHighWater)} (${rise(m.peak.rssHighWater, m.baseline.rss)})`,
      ],
      [
        "JS heap in use",
        `baseline ${mib(m.baseline.heapUsed)}, peak ${mib(m.peak.heapUsed)} (` +
        `${rise(m.peak.heapUsed, m.baseline.heapUsed)}), after ${m.after ? mib(m.after.heapUsed) : "?"}; ` +
        `allowed +${mib(m.heapSlack)}`,
      ],
      [
        "JS heap after a GC",
        m.heapAfterGc
          ? `before ${mib(m.heapAfterGc.before)}, after ${mib(m.heapAfterGc.after)} (` +
            `${rise(m.heapAfterGc.after, m.heapAfterGc.before)}); allowed +${mib(m.heapAfterGcSlack)}`
          : "unknown",
      ],
    ]));
    out.push(
      "  timeline (s: RSS MiB / heap in use MiB / heap allocated MiB / datagrams received / half-open):",
    );
    let next = -Infinity;
    const points: string[] = [];
    for (const x of r.timeline) {
      if (x.atMs < next) continue;
      next = Math.max(0, x.atMs) + 1000;
      points.push(
        `${(x.atMs / 1000).toFixed(1)}: ${(x.rss / MiB).toFixed(0)}/${(x.heapUsed / MiB).toFixed(0)}/` +
          `${(x.heapTotal / MiB).toFixed(0)}/${n(x.received)}/${x.handshaking}`,
      );
    }
    for (let i = 0; i < points.length; i += 4) out.push(`    ${points.slice(i, i + 4).join("   ")}`);
  }
  out.push("");

  const a = r.amplification;
  out.push("Amplification: bytes a flood socket received / bytes it sent (limit 3)");
  const top = a.sources.find((x) => x.addr === a.maxAddr);
  out.push(...table([
    ["highest", top ? `${a.maxRatio.toFixed(3)} at ${top.addr}: got ${mix(top.replies)}` : "none"],
    ["all flood sockets together", a.overall.toFixed(3)],
    [
      "kernel drops at the flood sockets",
      a.kernelDrops === null
        ? "unknown"
        : `${n(a.kernelDrops)}${
          a.kernelDrops > 0 ? ` (highest ratio with them: ${a.maxRatioBound.toFixed(3)})` : ""
        }`,
    ],
    [
      "drained after the server settled",
      `${(a.tailMs / 1000).toFixed(1)} s (${a.tailComplete ? "past its last retransmission" : "CUT SHORT"})`,
    ],
  ]));
  const byRatio = [...a.sources].sort((x, y) => y.ratio - x.ratio);
  for (
    const [label, list] of [
      ["registered", byRatio.filter((x) => x.registrations > 0)],
      ["never registered", byRatio.filter((x) => x.registrations === 0)],
    ] as const
  ) {
    if (list.length === 0) continue;
    out.push(
      `  ${list.length} ${label} sources: ratio ${list.at(-1)!.ratio.toFixed(3)} to ${
        list[0]!.ratio.toFixed(3)
      }; ` +
        `the highest got ${mix(list[0]!.replies)} for ${n(list[0]!.sentBytes)} B`,
    );
  }
  out.push("");

  const l = r.legit;
  out.push(`Legitimate client (P2PClient on ${l.addr})`);
  out.push(...table([
    [
      "timing",
      `started ${(l.startedAtMs / 1000).toFixed(2)} s into the flood, done at ${
        (l.doneAtMs / 1000).toFixed(2)
      } ` +
      `s (${l.duringFlood ? "during the flood" : "after the flood ended"})`,
    ],
    ["handshake", l.handshakeMs === null ? "FAILED" : `${l.handshakeMs.toFixed(0)} ms`],
    ["reliable Data acked", `${l.acked} of ${l.messages}`],
    ["echoes received", `${l.echoed} of ${l.messages}`],
    [
      "its datagrams",
      `${l.datagramsSent} sent, ${l.retransmissions} retransmissions, ${l.errorsReceived} Error(s) received ` +
      "(a cookie challenge is one)",
    ],
  ]));
  for (const e of l.errors.slice(0, 5)) out.push(`  error: ${e}`);
  out.push("");

  out.push(`Wall time: ${(r.wallMs / 1000).toFixed(1)} s`);
  for (const note of r.notes) out.push(`Note: ${note}`);
  out.push(r.failures.length === 0 ? "Result: PASS" : "Result: FAIL");
  for (const x of r.failures) out.push(`  - [${x.check}] ${x.message}`);
  return out.join("\n");
}

// ------------------------------------------------------------------ the program

const USAGE =
  `Usage: deno task flood [--scenario both|rate-limit|cookies] [--rate N] [--seconds S] [--sockets N]
                       [--legit N] [--cookie-threshold N]

  --scenario NAME       rate-limit, cookies, or both (default: both)
  --rate N              HandshakeRequests a second (default: ${DEFAULTS.rate})
  --seconds S           how long each flood lasts (default: ${DEFAULTS.seconds})
  --sockets N           flood source sockets on 127.0.0.1 (default: ${DEFAULTS.sockets})
  --legit N             reliable Data messages of the legitimate client (default: ${DEFAULTS.legitMessages})
  --cookie-threshold N  the server's cookie_threshold in the cookies scenario (default: ${DEFAULTS.cookieThreshold})`;

async function main(args: string[]): Promise<number> {
  const values = toolFlags(args, {
    scenario: "both",
    rate: String(DEFAULTS.rate),
    seconds: String(DEFAULTS.seconds),
    sockets: String(DEFAULTS.sockets),
    legit: String(DEFAULTS.legitMessages),
    "cookie-threshold": String(DEFAULTS.cookieThreshold),
  }, USAGE);
  if (typeof values === "number") return values;
  let scenarios: FloodScenario[];
  let opts: Omit<FloodOptions, "scenario">;
  try {
    const scenario = values.scenario ?? "both";
    if (scenario !== "both" && !(SCENARIOS as readonly string[]).includes(scenario)) {
      throw new TypeError(`--scenario: "${scenario}" is not rate-limit, cookies or both`);
    }
    scenarios = scenario === "both" ? [...SCENARIOS] : [scenario as FloodScenario];
    opts = {
      rate: intFlag(values.rate, "--rate", 1, 1_000_000),
      seconds: intFlag(values.seconds, "--seconds", 1, 600),
      sockets: intFlag(values.sockets, "--sockets", 1, 1_000),
      legitMessages: intFlag(values.legit, "--legit", 1, 10_000),
      cookieThreshold: intFlag(values["cookie-threshold"], "--cookie-threshold", 0, 1_000),
    };
  } catch (error) {
    console.error(`error: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  let failed = false;
  for (const scenario of scenarios) {
    const report = await runFlood({ ...opts, scenario, log: (line) => console.log(line) });
    console.log("");
    console.log(formatFloodReport(report));
    console.log("");
    if (report.failures.length > 0) failed = true;
  }
  return failed ? 1 : 0;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
