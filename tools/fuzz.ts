/**
 * `deno task fuzz`: a seeded datagram fuzzer run against the real program.
 *
 * It starts `main.ts` as a subprocess (with its metrics endpoint on, and the V8 inspector on a loopback port
 * to read the JS heap), registers a legitimate client, then sends hostile datagrams from the generator in
 * `tests/helpers/fuzz_corpus.ts` from many source ports, paced so that the server's socket buffer never
 * overflows (a small batch, then wait until the server has counted it). Throughout, the legitimate client
 * pings, sends reliable Data and asks for discovery, and every answer it misses is recorded. At the end it
 * checks that the server still runs and answers, that its counters add up
 * (`received = processed + dropped + duplicates`), that it counted every datagram sent to it, and that its
 * heap returns near its baseline after a GC; it also measures how many bytes each fuzz source address got
 * back per byte it sent (amplification: at most 3 for every source that does not complete a handshake).
 *
 * ```sh
 * deno task fuzz                            # 100,000 datagrams, a random seed (printed)
 * deno task fuzz --seed 42 --count 20000    # replay a run
 * ```
 *
 * Exit status: 0 when every check passed, 1 when one failed (the seed and the failures are printed), 2 for a
 * bad flag. `tests/fuzz_test.ts` runs a bounded version of the same in the test suite.
 *
 * @module
 */
import { P2PClient } from "../mod.ts";
import type { StatsSnapshot } from "../src/core/stats.ts";
import { CATEGORIES, type Category, type FuzzCase, FuzzCorpus } from "../tests/helpers/fuzz_corpus.ts";
import { type Addr, addrText, RawPeer } from "../tests/helpers/raw_peer.ts";
import { type ServerProcess, TEST_CONFIG, waitUntil } from "../tests/helpers/server_process.ts";
import { parseExposition, sampleValue } from "../tests/helpers/prom_parser.ts";
import {
  CountingSocket,
  getApiStats,
  getJson,
  getText,
  Inspector,
  intFlag,
  type Mix,
  type ProbedServer,
  rcvbufErrors,
  rssBytes,
  startProbedServer,
  tally,
  toolFlags,
  udpDropsByPort,
} from "./server_probe.ts";

// ------------------------------------------------------------------ options and report

/** Options of {@linkcode runFuzz}. */
export interface FuzzOptions {
  /** Seed of the generator; the same seed sends the same datagrams. */
  seed: number;
  /** Fuzz datagrams to generate (those the OS refuses to send, being over 65,507 bytes, included). */
  count: number;
  /** Categories left out (see {@linkcode FuzzCorpus}). @default {[]} */
  exclude?: Category[];
  /** Stop generating after this long (the checks still run). @default {600_000} */
  timeLimitMs?: number;
  /** Pause between two operations of the legitimate client. @default {100} */
  legitIntervalMs?: number;
  /**
   * After the last datagram, wait until no fuzz socket has received anything for 2.5 s (the server's
   * retransmissions have ended), but at most this long. @default {40_000}
   */
  tailMaxMs?: number;
  /** How far above its baseline the server's heap may stay after the run and a GC. @default {16 MiB} */
  heapSlackBytes?: number;
  /** Progress lines. @default {() => {}} */
  log?: (line: string) => void;
}

/** Datagrams of one category. */
export interface CategoryCount {
  /** Handed to the OS. */
  sent: number;
  /** Refused by the OS (longer than a UDP datagram can be). */
  refused: number;
  /** Bytes handed to the OS. */
  bytes: number;
}

/** What one fuzz source address sent and got back. */
export interface SourceTraffic {
  /** The generator's name of the socket, `"<category>/<n>"`. */
  source: string;
  /** Its address. */
  addr: string;
  /** Datagrams it sent. */
  sent: number;
  /** Bytes it sent. */
  sentBytes: number;
  /** Datagrams the server sent it. */
  received: number;
  /** Bytes the server sent it. */
  receivedBytes: number;
  /** `receivedBytes / sentBytes`. */
  ratio: number;
  /** What it sent, by message type (`<garbage>` for random bytes). */
  requests: Record<string, { n: number; bytes: number }>;
  /** What it got back, by message type. */
  replies: Record<string, { n: number; bytes: number }>;
  /** Datagrams the kernel dropped at this socket (its receive buffer was full), when readable. */
  kernelDrops: number | null;
}

/** One operation of the legitimate client that failed. */
export interface LegitFailure {
  /** `ping`, `send` or `discover`. */
  op: string;
  /** Milliseconds since the fuzzing began. */
  atMs: number;
  /** What went wrong. */
  error: string;
}

/**
 * The server's counters as its metrics endpoint exposes them (`p2p_datagrams_received_total`,
 * `p2p_datagrams_processed_total`, `p2p_duplicates_total`, `p2p_dropped_total{reason}`, ...).
 */
export interface ServerCounters {
  /** Datagrams received, all included. */
  received: number;
  /** Datagrams decoded and acted on. */
  processed: number;
  /** Reliable messages received again. */
  duplicates: number;
  /** The sum of `drops`. */
  droppedTotal: number;
  /** Datagrams dropped, by reason. */
  drops: Record<string, number>;
  /** Datagrams sent. */
  sent: number;
  /** Bytes received. */
  bytesReceived: number;
  /** Bytes sent. */
  bytesSent: number;
  /** Messages not sent for being larger than a datagram. */
  sendsTooLarge: number;
  /** Reliable messages sent again. */
  retransmissions: number;
  /** Reliable messages given up (all reasons). */
  giveUps: number;
  /** Handshakes accepted. */
  handshakesOk: number;
  /** Handshakes refused, by code. */
  handshakesFailed: Record<string, number>;
  /** Registered peers at the end. */
  peers: { handshaking: number; authenticated: number };
  /** Decoded messages received, by type. */
  messagesReceived: Record<string, number>;
  /** Messages sent, by type. */
  messagesSent: Record<string, number>;
}

/** A crash of the server during the run. */
export interface CrashReport {
  /** The exit code (or signal) of the server. */
  status: string;
  /** The last lines of its stderr (the stack). */
  stderrTail: string;
  /** The last datagrams sent before the crash was noticed, oldest first, written to `replayFile`. */
  lastCases: number;
  /** A JSON file with those datagrams (base64), for replay. */
  replayFile: string | null;
  /** The case that crashed a fresh server on its own, when one did. */
  culprit: { index: number; category: string; source: string; label: string; base64: string } | null;
  /** The culprit's crash, from the fresh server's stderr. */
  culpritStderr: string | null;
  /** Whether the culprit alone, sent to yet another fresh server from a fresh address, kills it too. */
  culpritAloneKills: boolean | null;
}

/** Everything {@linkcode runFuzz} measured. */
export interface FuzzReport {
  /** The generator's seed. */
  seed: number;
  /** The `count` asked for. */
  countRequested: number;
  /** Categories left out. */
  excluded: Category[];
  /** Cases generated (sent or refused); below `countRequested` only when the time limit cut the run. */
  generated: number;
  /** Whether `timeLimitMs` ended the generation early. */
  stoppedByTimeLimit: boolean;
  /** Type-confusion combinations (message type, field, value) generated, of all there are. */
  coverage: { envelope: [number, number]; payload: [number, number] };
  /** Fuzz datagrams by category. */
  byCategory: Record<Category, CategoryCount>;
  /** Fuzz datagrams handed to the OS. */
  fuzzSent: number;
  /** Their bytes. */
  fuzzBytes: number;
  /** Fuzz datagrams the OS refused to send, by error message. */
  refusedByOs: Record<string, number>;
  /** Fuzz source sockets used. */
  sourceCount: number;
  /** The legitimate client: its operations (ping, Data with echo, discovery) and its traffic. */
  legit: {
    handshakeOk: boolean;
    ops: number;
    ok: number;
    failures: LegitFailure[];
    pingMs: { median: number; max: number } | null;
    sent: number;
    sentBytes: number;
    received: number;
    receivedBytes: number;
  };
  /** Datagrams sent to the server by the final liveness check. */
  checkSent: number;
  /** Their bytes. */
  checkBytes: number;
  /** Whether the server ran to the end and answered a fresh Ping and `/health` then. */
  alive: boolean;
  /** The server's exit code after SIGTERM at the end (0 expected). */
  exitCode: number | null;
  /** The server's counters at the end, from `/metrics`; null when it did not get that far. */
  server: ServerCounters | null;
  /** Datagrams the fuzzer sent in all: fuzz + legit client + check. */
  expectedReceived: number;
  /** Drops counted by the kernel during the run, when readable (see `kernelDropsSource`). */
  serverSocketDrops: number | null;
  /** `socket`: the server socket's own counter; `machine`: every UDP socket of the machine (an upper bound). */
  kernelDropsSource: "socket" | "machine" | null;
  /** Pacing waits that ran past their first deadline. */
  slowDrains: number;
  /** Traffic of every fuzz source address. */
  sources: SourceTraffic[];
  /** The same, of the probes only (one minimal datagram each from a fresh address). */
  probes: SourceTraffic[];
  /** Bytes the server counted as sent, against what the fuzzer's sockets received. */
  bytesAccounted: { serverSent: number; fuzzReceived: number; legitReceived: number; checkReceived: number };
  /** The same in datagrams. */
  datagramsAccounted: {
    serverSent: number;
    fuzzReceived: number;
    legitReceived: number;
    checkReceived: number;
  };
  /** The server's V8 heap in use after GC (through the inspector) before and after the run, and its RSS. */
  heap: {
    baseline: number;
    after: number;
    slack: number;
    rssBaseline: number | null;
    rssAfter: number | null;
  } | null;
  /** Why `heap` is missing. */
  heapNote: string;
  /** Bytes the server wrote to stderr during the run. */
  stderrBytes: number;
  /** Lines the server wrote to stderr during the run. */
  stderrLines: number;
  /** The longest line the server wrote to stderr during the run, in characters. */
  stderrLongestLine: number;
  /** Wall time of the whole run. */
  wallMs: number;
  /** Wall time of the sending. */
  sendPhaseMs: number;
  /** How long the wait for the server's last retransmissions took. */
  tailMs: number;
  /** The server's crash, if it crashed. */
  crash: CrashReport | null;
  /** Every failed check; empty when the run passed. */
  failures: string[];
  /** Observations that are not failures. */
  notes: string[];
}

const DEFAULTS = {
  timeLimitMs: 600_000,
  legitIntervalMs: 100,
  tailMaxMs: 40_000,
  heapSlackBytes: 16 * 1024 * 1024,
};

/** Pacing: at most this many datagrams or bytes go out before the fuzzer waits for the server to count them. */
const BATCH_COUNT = 32;
const BATCH_BYTES = 48_000;
/** A pacing wait longer than this reads the kernel's drop counter; longer than the second, the run fails. */
const DRAIN_SOFT_MS = 2_000;
const DRAIN_HARD_MS = 20_000;
/** How many of the most recent datagrams are kept for a crash replay. */
const RING = 512;

/** The server's configuration: the test defaults, plus a size limit below the UDP maximum so `oversize` is hit. */
export const FUZZ_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  ...TEST_CONFIG,
  max_message_size: 60_000,
  stats_interval: 0,
});

// ------------------------------------------------------------------ the server, with an inspector

/** Starts `main.ts` with {@linkcode FUZZ_CONFIG}, optionally with the inspector (see {@linkcode startProbedServer}). */
function startFuzzServer(inspect: boolean): Promise<ProbedServer> {
  return startProbedServer({ config: FUZZ_CONFIG, inspect });
}

/** The server's counters, read from `/metrics` (Prometheus text, parsed strictly). */
async function metricsCounters(base: string): Promise<ServerCounters> {
  const families = parseExposition(await getText(`${base}/metrics`));
  const v = (name: string, labels: Record<string, string> = {}) => sampleValue(families, name, labels) ?? NaN;
  // The sum of a family's samples, whether or not it is split by a label.
  const total = (name: string) => families.get(name)?.samples.reduce((a, x) => a + x.value, 0) ?? NaN;
  const labelled = (name: string, label: string): Record<string, number> => {
    const out: Record<string, number> = {};
    for (const s of families.get(name)?.samples ?? []) {
      const key = s.labels[label];
      if (key !== undefined) out[key] = s.value;
    }
    return out;
  };
  const drops = labelled("p2p_dropped_total", "reason");
  const failed: Record<string, number> = {};
  for (const s of families.get("p2p_handshakes_total")?.samples ?? []) {
    if (s.labels.result === "failed" && s.labels.code !== undefined) failed[s.labels.code] = s.value;
  }
  return {
    received: v("p2p_datagrams_received_total"),
    processed: v("p2p_datagrams_processed_total"),
    duplicates: v("p2p_duplicates_total"),
    droppedTotal: Object.values(drops).reduce((a, b) => a + b, 0),
    drops,
    sent: v("p2p_datagrams_sent_total"),
    bytesReceived: v("p2p_bytes_received_total"),
    bytesSent: v("p2p_bytes_sent_total"),
    sendsTooLarge: v("p2p_sends_too_large_total"),
    retransmissions: total("p2p_retransmissions_total"),
    giveUps: total("p2p_give_ups_total"),
    handshakesOk: v("p2p_handshakes_total", { result: "ok" }),
    handshakesFailed: failed,
    peers: {
      handshaking: v("p2p_peers", { state: "handshaking" }),
      authenticated: v("p2p_peers", { state: "authenticated" }),
    },
    messagesReceived: labelled("p2p_messages_received_total", "type"),
    messagesSent: labelled("p2p_messages_sent_total", "type"),
  };
}

/**
 * Evidence of datagrams the kernel dropped: the drop counter of the server's socket (`/proc/net/udp`) when
 * the kernel lists sockets there, else the machine-wide `RcvbufErrors` of `/proc/net/snmp` (which also counts
 * drops at the fuzz sockets and at any other process), else nothing.
 */
class KernelDrops {
  readonly #port: number;
  readonly #socketAtStart: number | null;
  readonly #globalAtStart: number | null;

  constructor(port: number) {
    this.#port = port;
    this.#socketAtStart = udpDropsByPort()?.get(port) ?? null;
    this.#globalAtStart = rcvbufErrors();
  }

  /** Why the last {@linkcode read} found nothing. */
  why = "";

  /** Drops since the start, and where the number comes from. */
  read(): { drops: number; source: "socket" | "machine" } | null {
    if (this.#socketAtStart !== null) {
      const now = udpDropsByPort()?.get(this.#port);
      if (now !== undefined) return { drops: now - this.#socketAtStart, source: "socket" };
    }
    const now = rcvbufErrors();
    if (now !== null && this.#globalAtStart !== null) {
      return { drops: now - this.#globalAtStart, source: "machine" };
    }
    this.why = `/proc/net/udp ${this.#socketAtStart === null ? "did not list" : "no longer lists"} port ` +
      `${this.#port}; /proc/net/snmp RcvbufErrors ${now === null ? "unreadable" : "unreadable at the start"}`;
    return null;
  }
}

// ------------------------------------------------------------------ fuzz sockets

const utf8Decoder = new TextDecoder();
const PREFIX = /^\{"id":"([0-9a-fA-F-]{36})","message_type":"(\w+)"/;

/** One fuzz source address: a socket on loopback that sends what the generator names it for. */
class FuzzSocket extends CountingSocket {
  readonly source: string;
  readonly category: string;
  readonly requests: Mix = {};
  readonly replies: Mix = {};
  readonly #onMessage: (source: string, id: string, seq: number | null) => void;

  constructor(source: string, onMessage: (source: string, id: string, seq: number | null) => void) {
    super();
    this.source = source;
    this.category = source.split("/")[0]!;
    this.#onMessage = onMessage;
  }

  async send(to: Addr, c: FuzzCase): Promise<void> {
    await this.sendDatagram(c.bytes, { transport: "udp", hostname: to.hostname, port: to.port });
    tally(this.requests, c.messageType ?? "<garbage>", c.bytes.length);
  }

  protected override onDatagram(bytes: Uint8Array): void {
    const head = utf8Decoder.decode(bytes.subarray(0, 120));
    const m = PREFIX.exec(head);
    const type = m?.[2] ?? "<not an envelope>";
    tally(this.replies, type, bytes.length);
    if (m) {
      let seq: number | null = null;
      if (bytes.length < 4096) {
        try {
          const s = JSON.parse(utf8Decoder.decode(bytes)).sequence_number;
          if (typeof s === "number") seq = s;
        } catch {
          // not JSON after all
        }
      }
      this.#onMessage(this.source, m[1]!, seq);
    }
  }
}

// ------------------------------------------------------------------ the legitimate client

class LegitClient {
  readonly client: P2PClient;
  ops = 0;
  ok = 0;
  readonly failures: LegitFailure[] = [];
  readonly pings: number[] = [];
  readonly #echoes = new Map<number, () => void>();
  #stop = false;
  #loop: Promise<void> | null = null;
  #started = 0;

  constructor(server: Addr) {
    this.client = new P2PClient({ server: addrText(server), bind: "127.0.0.1:0", name: "fuzz-legit" });
    this.client.on("data", ({ payload }) => {
      const echo = (payload as { echo?: { legit?: unknown } } | null)?.echo;
      if (echo && typeof echo.legit === "number") this.#echoes.get(echo.legit)?.();
    });
  }

  start(startedAt: number, intervalMs: number): void {
    this.#started = startedAt;
    this.#loop = this.#run(intervalMs);
  }

  async stop(): Promise<void> {
    this.#stop = true;
    await this.#loop;
  }

  async #run(intervalMs: number): Promise<void> {
    const ops = ["ping", "send", "ping", "discover"] as const;
    for (let n = 0; !this.#stop; n++) {
      const op = ops[n % ops.length]!;
      this.ops++;
      try {
        await this.#op(op, n);
        this.ok++;
      } catch (error) {
        this.failures.push({
          op,
          atMs: Math.round(performance.now() - this.#started),
          error: (error as Error).message,
        });
      }
      await new Promise((resolve) => setTimeout(resolve, intervalMs));
    }
  }

  async #op(op: "ping" | "send" | "discover", n: number): Promise<void> {
    if (op === "ping") {
      this.pings.push(await this.client.ping());
    } else if (op === "send") {
      const echoed = Promise.withResolvers<void>();
      this.#echoes.set(n, echoed.resolve);
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await this.client.send({ legit: n });
        const late = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no echo of Data ${n} within 3.5 s`)), 3_500);
        });
        await Promise.race([echoed.promise, late]);
      } finally {
        clearTimeout(timer);
        this.#echoes.delete(n);
      }
    } else {
      const peers = await this.client.discover();
      if (!peers.some((p) => p.id === this.client.node.id)) {
        throw new Error("discovery answer does not list the client itself");
      }
    }
  }
}

// ------------------------------------------------------------------ the run

class ServerGone extends Error {}

/**
 * Runs the fuzzer against a fresh server subprocess and returns what it measured; `failures` lists every
 * check that did not hold. Everything it starts is stopped before it returns.
 */
export async function runFuzz(options: FuzzOptions): Promise<FuzzReport> {
  const opts = { ...DEFAULTS, ...options };
  const log = options.log ?? (() => {});
  const started = performance.now();
  const corpus = new FuzzCorpus(opts.seed, { exclude: opts.exclude ?? [] });
  const failures: string[] = [];
  const notes: string[] = [];
  const byCategory = Object.fromEntries(
    CATEGORIES.map((c) => [c, { sent: 0, refused: 0, bytes: 0 }]),
  ) as Record<Category, CategoryCount>;
  const refusedByOs: Record<string, number> = {};
  const ring: FuzzCase[] = [];
  const sockets = new Map<string, FuzzSocket>();
  const learn = (source: string, id: string, seq: number | null) => corpus.learn(source, id, seq);

  const report: FuzzReport = {
    seed: corpus.seed,
    countRequested: opts.count,
    excluded: [...(opts.exclude ?? [])],
    generated: 0,
    stoppedByTimeLimit: false,
    coverage: { envelope: [0, 0], payload: [0, 0] },
    byCategory,
    fuzzSent: 0,
    fuzzBytes: 0,
    refusedByOs,
    sourceCount: 0,
    legit: {
      handshakeOk: false,
      ops: 0,
      ok: 0,
      failures: [],
      pingMs: null,
      sent: 0,
      sentBytes: 0,
      received: 0,
      receivedBytes: 0,
    },
    checkSent: 0,
    checkBytes: 0,
    alive: false,
    exitCode: null,
    server: null,
    expectedReceived: 0,
    serverSocketDrops: null,
    kernelDropsSource: null,
    slowDrains: 0,
    sources: [],
    probes: [],
    bytesAccounted: { serverSent: 0, fuzzReceived: 0, legitReceived: 0, checkReceived: 0 },
    datagramsAccounted: { serverSent: 0, fuzzReceived: 0, legitReceived: 0, checkReceived: 0 },
    heap: null,
    heapNote: "the server exposes no heap figure (not in /metrics or /api/stats)",
    stderrBytes: 0,
    stderrLines: 0,
    stderrLongestLine: 0,
    wallMs: 0,
    sendPhaseMs: 0,
    tailMs: 0,
    crash: null,
    failures,
    notes,
  };

  const srv = await startFuzzServer(true);
  const server = srv.process;
  let inspector: Inspector | null = null;
  let legit: LegitClient | null = null;
  let checkReceivedBytes = 0;
  let checkReceivedDatagrams = 0;
  const stderrAtStart = server.stderr.length;
  try {
    try {
      inspector = await Inspector.connect(srv.inspectorUrl!);
    } catch (error) {
      report.heapNote = `the inspector could not be reached: ${(error as Error).message}`;
    }
    const kernelDrops = new KernelDrops(server.addr.port);

    legit = new LegitClient(server.addr);
    try {
      await legit.client.connect();
      report.legit.handshakeOk = true;
    } catch (error) {
      failures.push(`the legitimate client could not handshake: ${(error as Error).message}`);
    }

    let heapBaseline = 0;
    let rssBaseline: number | null = null;
    if (inspector) {
      heapBaseline = await inspector.heapAfterGc();
      rssBaseline = rssBytes(srv.pid);
    }

    const legitSent = () => legit!.client.getStats().datagramsSent;
    let kernelLost = 0;
    const expected = () => report.fuzzSent + legitSent() + report.checkSent;

    /** Waits until the server has counted every datagram sent to it (less those the kernel dropped). */
    const drain = async (): Promise<StatsSnapshot> => {
      const t0 = performance.now();
      let slow = false;
      let nextDropCheck = t0 + DRAIN_SOFT_MS;
      for (;;) {
        if (server.exited) throw new ServerGone();
        let s: StatsSnapshot;
        try {
          s = (await getApiStats(srv.base)).stats;
        } catch (error) {
          // A refused connection usually means the process is going away. A process run with --inspect
          // that dies of an uncaught error waits for its debugger session to end: end ours, then give it a
          // moment to be reaped.
          await inspector?.close();
          inspector = null;
          report.heapNote = "the run ended before the heap could be read again";
          await waitUntil(() => server.exited ?? undefined, "the server's exit", 5_000).catch(() => {});
          if (server.exited) throw new ServerGone();
          throw error;
        }
        if (s.datagramsReceived >= expected() - kernelLost) return s;
        const now = performance.now();
        if (now >= nextDropCheck) {
          if (!slow) report.slowDrains++;
          slow = true;
          // Whatever the kernel dropped will never arrive: expect that much less (at most the deficit).
          const drops = kernelDrops.read();
          if (drops) kernelLost = Math.min(drops.drops, Math.max(0, expected() - s.datagramsReceived));
          nextDropCheck = now + 1_000;
        }
        if (now - t0 > DRAIN_HARD_MS) {
          throw new Error(
            `the server counted ${s.datagramsReceived} datagrams, ${expected()} were sent (kernel drops ` +
              `${kernelLost}), and it did not catch up within ${DRAIN_HARD_MS} ms`,
          );
        }
        await new Promise((resolve) => setTimeout(resolve, slow ? 20 : 1));
      }
    };

    const fuzzStart = performance.now();
    legit.start(fuzzStart, opts.legitIntervalMs);
    let lastSendAt = fuzzStart;
    let crashed = false;
    let progressAt = 10_000;
    try {
      let batch: FuzzCase[] = [];
      let batchBytes = 0;
      const flush = async () => {
        for (const c of batch) {
          let socket = sockets.get(c.source);
          if (!socket) sockets.set(c.source, socket = new FuzzSocket(c.source, learn));
          ring.push(c);
          if (ring.length > RING) ring.shift();
          const count = byCategory[c.category];
          try {
            await socket.send(server.addr, c);
            count.sent++;
            count.bytes += c.bytes.length;
            report.fuzzSent++;
            report.fuzzBytes += c.bytes.length;
          } catch (error) {
            count.refused++;
            const reason = (error as Error).message.replace(/\s*\(os error \d+\)/, "");
            refusedByOs[reason] = (refusedByOs[reason] ?? 0) + 1;
          }
        }
        batch = [];
        batchBytes = 0;
        lastSendAt = performance.now();
        await drain();
      };
      while (report.generated < opts.count) {
        if (performance.now() - started > opts.timeLimitMs) {
          report.stoppedByTimeLimit = true;
          break;
        }
        const c = corpus.next();
        report.generated++;
        if (batch.length > 0 && (batch.length >= BATCH_COUNT || batchBytes + c.bytes.length > BATCH_BYTES)) {
          await flush();
        }
        batch.push(c);
        batchBytes += c.bytes.length;
        if (report.generated >= progressAt) {
          const s = (performance.now() - fuzzStart) / 1000;
          log(`${report.generated} datagrams generated in ${s.toFixed(1)} s`);
          progressAt += 10_000;
        }
      }
      await flush();
    } catch (error) {
      if (!(error instanceof ServerGone)) throw error;
      crashed = true;
    }
    report.sendPhaseMs = performance.now() - fuzzStart;
    log(
      `sent ${report.fuzzSent} datagrams in ${(report.sendPhaseMs / 1000).toFixed(1)} s; stopping the client`,
    );

    await legit.stop();
    if (crashed || server.exited) {
      log(
        "the server exited: replaying the last datagrams against a fresh server to find the one that kills it",
      );
      report.crash = await investigateCrash(server, ring, corpus.seed);
      failures.push(
        `the server exited during the run (${report.crash.status}) after ${report.fuzzSent} fuzz datagrams`,
      );
    } else {
      // The server's retransmissions (and probes back to "sibling servers") go on for a while: wait until
      // every fuzz socket has been quiet for 2.5 s (longer than the longest wait between two tries).
      log("waiting for the server's last retransmissions");
      const tailStart = performance.now();
      await waitUntil(
        () => {
          const now = performance.now();
          return [...sockets.values()].every((s) => now - Math.max(s.lastReceivedAt, lastSendAt) > 2_500);
        },
        "the server's retransmissions to end",
        opts.tailMaxMs,
        100,
      ).catch(() => {
        notes.push(
          `fuzz sockets were still receiving ${(opts.tailMaxMs / 1000).toFixed(0)} s after the last datagram`,
        );
      });
      report.tailMs = performance.now() - tailStart;

      // The server must still answer a stranger's Ping and /health.
      await using check = new RawPeer();
      const nonce = crypto.randomUUID();
      const ping = await check.sendMessage(server.addr, "Ping", { nonce });
      report.checkSent++;
      report.checkBytes += new TextEncoder().encode(JSON.stringify(ping)).length;
      try {
        const pong = await check.expect("Pong", 5_000);
        checkReceivedBytes += pong.size;
        checkReceivedDatagrams++;
        const health = await getJson<{ status?: string }>(`${srv.base}/health`);
        report.alive = health.status === "ok" &&
          (pong.message.payload as { nonce?: string } | null)?.nonce === nonce;
        if (!report.alive) {
          failures.push(`the server answered oddly at the end: /health ${JSON.stringify(health)}`);
        }
      } catch (error) {
        failures.push(`the server did not answer at the end: ${(error as Error).message}`);
      }
      for (const s of check.skipped) {
        checkReceivedBytes += s.size;
        checkReceivedDatagrams++;
      }

      if (report.legit.handshakeOk) await legit.client.disconnect();
      try {
        await drain();
      } catch (error) {
        failures.push(`final count: ${(error as Error).message}`);
      }
      const kd = kernelDrops.read();
      report.serverSocketDrops = kd?.drops ?? null;
      report.kernelDropsSource = kd?.source ?? null;
      if (!kd) notes.push(`kernel drops unknown: ${kernelDrops.why}`);
      const drops = udpDropsByPort();
      for (const s of sockets.values()) {
        const t = traffic(s, drops);
        if (s.category === "probe") report.probes.push(t);
        report.sources.push(t);
      }
      report.server = await metricsCounters(srv.base);
      if (inspector) {
        const after = await inspector.heapAfterGc();
        report.heap = {
          baseline: heapBaseline,
          after,
          slack: opts.heapSlackBytes,
          rssBaseline,
          rssAfter: rssBytes(srv.pid),
        };
      }
    }

    report.legit.ops = legit.ops;
    report.legit.ok = legit.ok;
    report.legit.failures = legit.failures;
    const pings = [...legit.pings].sort((a, b) => a - b);
    if (pings.length > 0) {
      report.legit.pingMs = { median: pings[Math.floor(pings.length / 2)]!, max: pings.at(-1)! };
    }
    const legitStats = legit.client.getStats();
    report.legit.sent = legitStats.datagramsSent;
    report.legit.sentBytes = legitStats.bytesSent;
    report.legit.received = legitStats.datagramsReceived;
    report.legit.receivedBytes = legitStats.bytesReceived;
    report.expectedReceived = expected();
  } catch (error) {
    failures.push(`the run stopped: ${(error as Error).stack ?? error}`);
    notes.push(`server stderr (last lines):\n${tail(server.stderr, 30)}`);
  } finally {
    await legit?.client.close();
    await inspector?.close();
    await Promise.all([...sockets.values()].map((s) => s.close()));
    const status = await server.stop();
    report.exitCode = status.code;
    report.stderrBytes = server.stderr.length - stderrAtStart;
    const lines = server.stderr.slice(stderrAtStart).split("\n");
    report.stderrLines = lines.length - 1;
    report.stderrLongestLine = lines.reduce((m, l) => Math.max(m, l.length), 0);
  }

  report.sourceCount = sockets.size;
  const { combinations, covered } = corpus;
  report.coverage = {
    envelope: [covered.envelope, combinations.envelope],
    payload: [covered.payload, combinations.payload],
  };
  report.wallMs = performance.now() - started;
  report.bytesAccounted = {
    serverSent: report.server?.bytesSent ?? 0,
    fuzzReceived: report.sources.reduce((n, s) => n + s.receivedBytes, 0),
    legitReceived: report.legit.receivedBytes,
    checkReceived: checkReceivedBytes,
  };
  report.datagramsAccounted = {
    serverSent: report.server?.sent ?? 0,
    fuzzReceived: report.sources.reduce((n, s) => n + s.received, 0),
    legitReceived: report.legit.received,
    checkReceived: checkReceivedDatagrams,
  };
  check(report);
  return report;
}

function traffic(s: FuzzSocket, drops: Map<number, number> | null): SourceTraffic {
  return {
    source: s.source,
    addr: s.addr,
    sent: s.sent,
    sentBytes: s.sentBytes,
    received: s.received,
    receivedBytes: s.receivedBytes,
    ratio: s.sentBytes > 0 ? s.receivedBytes / s.sentBytes : 0,
    requests: { ...s.requests },
    replies: { ...s.replies },
    kernelDrops: drops?.get(s.port) ?? null,
  };
}

/** Most bytes the server may send to a source per byte it received from it. */
export const AMPLIFICATION_LIMIT = 3;

/** The checks that make a run pass or fail. */
function check(r: FuzzReport): void {
  const f = r.failures;
  // The limit is the server's for addresses that have not proved they receive. The valid_flow sockets complete
  // real handshakes (validated) and are sent routed Data by other flows, so they are reported, not held to it.
  const over = r.sources.filter((t) => !t.source.startsWith("valid_flow/") && t.ratio > AMPLIFICATION_LIMIT);
  if (over.length > 0) {
    const worst = over.reduce((a, b) => (b.ratio > a.ratio ? b : a));
    f.push(
      `${over.length} fuzz source(s) got more than ${AMPLIFICATION_LIMIT}x the bytes they sent; the worst, ` +
        `${worst.source} (${worst.addr}), ${worst.ratio.toFixed(2)}x: ${JSON.stringify(worst.replies)}`,
    );
  }
  if (r.exitCode !== 0 && !r.crash) {
    f.push(`the server exited with code ${r.exitCode} on SIGTERM (expected 0)`);
  }
  if (r.legit.failures.length > 0) {
    f.push(`the legitimate client missed ${r.legit.failures.length} of ${r.legit.ops} answers`);
  }
  const s = r.server;
  if (!s) return;
  const sum = s.processed + s.droppedTotal + s.duplicates;
  if (s.received !== sum) {
    f.push(
      `counters do not add up: received ${s.received} != processed ${s.processed} + dropped ${s.droppedTotal} ` +
        `+ duplicates ${s.duplicates} = ${sum} (off by ${s.received - sum})`,
    );
  }
  const kernel = r.serverSocketDrops ?? 0;
  const deficit = r.expectedReceived - s.received;
  const where = r.kernelDropsSource === "socket" ? "at the server's socket" : "on the whole machine";
  if (
    deficit < 0 || (deficit > 0 && r.kernelDropsSource === "socket" && deficit !== kernel) || deficit > kernel
  ) {
    f.push(
      `the server counted ${s.received} datagrams received; the fuzzer sent ${r.expectedReceived} ` +
        `(fuzz ${r.fuzzSent} + legit ${r.legit.sent} + check ${r.checkSent}) and the kernel dropped ` +
        `${r.serverSocketDrops ?? "an unknown number"} ${r.serverSocketDrops === null ? "" : where}`,
    );
  } else if (deficit > 0) {
    r.notes.push(
      `the server counted ${deficit} datagrams fewer than were sent; the kernel dropped ${kernel} ${where}`,
    );
  }
  const bytesExpected = r.fuzzBytes + r.legit.sentBytes + r.checkBytes;
  if (deficit === 0 && s.bytesReceived !== bytesExpected) {
    f.push(
      `the server counted ${s.bytesReceived} bytes received; the fuzzer sent ${bytesExpected} ` +
        `(fuzz ${r.fuzzBytes} + legit ${r.legit.sentBytes} + check ${r.checkBytes})`,
    );
  }
  if (r.heap) {
    const growth = r.heap.after - r.heap.baseline;
    if (growth > r.heap.slack) {
      f.push(
        `the server's heap stayed ${mib(growth)} above its baseline after a GC (${mib(r.heap.baseline)} -> ` +
          `${mib(r.heap.after)}; allowed ${mib(r.heap.slack)})`,
      );
    }
  }
}

function mib(n: number): string {
  return `${(n / 1024 / 1024).toFixed(1)} MiB`;
}

// ------------------------------------------------------------------ a crash

function base64(bytes: Uint8Array): string {
  let text = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(text);
}

function tail(text: string, lines: number): string {
  return text.split("\n").slice(-lines).join("\n");
}

/**
 * Saves the last datagrams sent before the server died, then replays them in order against a fresh server,
 * checking after each one that it still answers a Ping, to name the datagram that kills it on its own.
 */
async function investigateCrash(server: ServerProcess, ring: FuzzCase[], seed: number): Promise<CrashReport> {
  await waitUntil(() => server.exited ?? undefined, "the crashed server's exit status", 5_000).catch(
    () => {},
  );
  const st = server.exited;
  const crash: CrashReport = {
    status: st ? (st.signal ? `signal ${st.signal}` : `exit code ${st.code}`) : "not answering",
    stderrTail: tail(server.stderr, 40),
    lastCases: ring.length,
    replayFile: null,
    culprit: null,
    culpritStderr: null,
    culpritAloneKills: null,
  };
  try {
    const path = await Deno.makeTempFile({ prefix: "p2p_fuzz_crash_", suffix: ".json" });
    const cases = ring.map((c) => ({ ...c, bytes: undefined, base64: base64(c.bytes) }));
    await Deno.writeTextFile(path, JSON.stringify({ seed, cases }, null, 1));
    crash.replayFile = path;
  } catch {
    // no place to write it: the culprit search below still runs
  }
  const fresh = await startFuzzServer(false);
  const sockets = new Map<string, FuzzSocket>();
  try {
    await using check = new RawPeer();
    for (const c of ring) {
      let socket = sockets.get(c.source);
      if (!socket) sockets.set(c.source, socket = new FuzzSocket(c.source, () => {}));
      try {
        await socket.send(fresh.process.addr, c);
      } catch {
        continue; // refused by the OS, as in the run
      }
      const nonce = crypto.randomUUID();
      await check.sendMessage(fresh.process.addr, "Ping", { nonce });
      const answered = await check.expect("Pong", 2_000).then(() => true, () => false);
      if (!answered || fresh.process.exited) {
        await waitUntil(() => fresh.process.exited ?? undefined, "the fresh server's exit", 3_000).catch(
          () => {},
        );
        crash.culprit = {
          index: c.index,
          category: c.category,
          source: c.source,
          label: c.label,
          base64: base64(c.bytes),
        };
        crash.culpritStderr = tail(fresh.process.stderr, 40);
        break;
      }
    }
  } finally {
    await Promise.all([...sockets.values()].map((s) => s.close()));
    await fresh.process.stop("SIGKILL");
  }
  const culprit = crash.culprit === null ? undefined : ring.find((c) => c.index === crash.culprit!.index);
  if (culprit) crash.culpritAloneKills = await killsAlone(culprit);
  return crash;
}

/** Sends one case to a fresh server from a fresh address; true when the server then dies or stops answering. */
async function killsAlone(c: FuzzCase): Promise<boolean> {
  const fresh = await startFuzzServer(false);
  const socket = new FuzzSocket(c.source, () => {});
  try {
    await using check = new RawPeer();
    await socket.send(fresh.process.addr, c);
    await check.sendMessage(fresh.process.addr, "Ping", { nonce: crypto.randomUUID() });
    const answered = await check.expect("Pong", 2_000).then(() => true, () => false);
    return !answered || fresh.process.exited !== null;
  } finally {
    await socket.close();
    await fresh.process.stop("SIGKILL");
  }
}

// ------------------------------------------------------------------ the summary

function n(x: number): string {
  return Number.isFinite(x) ? Math.round(x).toLocaleString("en-US") : String(x);
}

function table(rows: string[][], align: ("l" | "r")[]): string[] {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? "").length)));
  return rows.map((r) =>
    "  " +
    r.map((cell, i) => align[i] === "r" ? cell.padStart(widths[i]!) : cell.padEnd(widths[i]!)).join("  ")
      .trimEnd()
  );
}

function mix(m: Record<string, { n: number; bytes: number }>): string {
  return Object.entries(m).sort((a, b) => b[1].bytes - a[1].bytes)
    .map(([type, v]) => `${type} ${v.n}x/${n(v.bytes)} B`).join(", ");
}

/** The summary table `deno task fuzz` prints. */
export function formatReport(r: FuzzReport): string {
  const out: string[] = [];
  const ok = r.failures.length === 0;
  out.push(
    `p2p_server fuzz: seed ${r.seed}, ${n(r.generated)} of ${n(r.countRequested)} datagrams generated`,
  );
  const excluded = r.excluded.length > 0 ? ` --exclude ${r.excluded.join(",")}` : "";
  out.push(`replay: deno task fuzz --seed ${r.seed} --count ${r.countRequested}${excluded}`);
  if (r.stoppedByTimeLimit) out.push("(the time limit stopped the run before the count was reached)");
  out.push("");

  out.push(`Datagrams sent, by category (from ${r.sourceCount} source ports)`);
  const rows = [["category", "sent", "refused by OS", "bytes"]];
  for (const c of CATEGORIES) {
    const x = r.byCategory[c];
    rows.push([c, n(x.sent), n(x.refused), n(x.bytes)]);
  }
  const refused = Object.values(r.byCategory).reduce((a, x) => a + x.refused, 0);
  rows.push(["total", n(r.fuzzSent), n(refused), n(r.fuzzBytes)]);
  out.push(...table(rows, ["l", "r", "r", "r"]));
  for (const [reason, count] of Object.entries(r.refusedByOs)) out.push(`  refused: ${count} x "${reason}"`);
  const cov = r.coverage;
  out.push(
    `  type confusion: ${n(cov.envelope[0])} of ${n(cov.envelope[1])} (type, envelope key, value) and ` +
      `${n(cov.payload[0])} of ${n(cov.payload[1])} (type, payload field, value) combinations`,
  );
  out.push("");

  const s = r.server;
  if (s) {
    out.push("Server counters (/metrics)");
    const sum = s.processed + s.droppedTotal + s.duplicates;
    out.push(...table([
      ["datagrams received", n(s.received)],
      ["  processed", n(s.processed)],
      ["  dropped (all reasons)", n(s.droppedTotal)],
      ["  duplicates", n(s.duplicates)],
      [
        "  processed + dropped + duplicates",
        `${n(sum)} ${sum === s.received ? "(adds up)" : "(DOES NOT ADD UP)"}`,
      ],
      [
        "sent by the fuzzer",
        `${n(r.expectedReceived)} (fuzz ${n(r.fuzzSent)} + legit ${n(r.legit.sent)} + check ${r.checkSent})`,
      ],
      [
        "kernel receive-buffer drops",
        r.serverSocketDrops === null
          ? "unknown"
          : `${n(r.serverSocketDrops)} (${
            r.kernelDropsSource === "socket" ? "server socket" : "whole machine"
          })`,
      ],
      [
        "bytes received",
        `${n(s.bytesReceived)} (sent: ${n(r.fuzzBytes + r.legit.sentBytes + r.checkBytes)})`,
      ],
      ["datagrams sent", n(s.sent)],
      ["bytes sent", n(s.bytesSent)],
      ["sends too large", n(s.sendsTooLarge)],
      ["retransmissions / give-ups", `${n(s.retransmissions)} / ${n(s.giveUps)}`],
      ["handshakes ok", n(s.handshakesOk)],
      [
        "handshakes failed",
        Object.entries(s.handshakesFailed).map(([k, v]) => `${k} ${v}`).join(", ") || "0",
      ],
      ["peers at the end", `${s.peers.authenticated} authenticated, ${s.peers.handshaking} handshaking`],
      ["pacing waits past 2 s", n(r.slowDrains)],
    ], ["l", "r"]));
    out.push("");
    out.push("Drops by reason");
    out.push(...table(Object.entries(s.drops).map(([k, v]) => [k, n(v)]), ["l", "r"]));
    out.push("");
    out.push("Messages received by the server, by type (decoded)");
    out.push("  " + Object.entries(s.messagesReceived).map(([k, v]) => `${k} ${n(v)}`).join(", "));
    out.push("Messages sent by the server, by type");
    out.push("  " + Object.entries(s.messagesSent).map(([k, v]) => `${k} ${n(v)}`).join(", "));
    out.push("");
  }

  if (r.sources.length > 0) {
    out.push("Amplification: bytes the server sent to a fuzz source address / bytes it received from it");
    const sorted = [...r.sources].sort((a, b) => b.ratio - a.ratio);
    const top = sorted[0]!;
    out.push(
      `  max ratio ${top.ratio.toFixed(2)} at ${top.source} (${top.addr}): sent ${top.sent} datagrams ` +
        `(${n(top.sentBytes)} B), got ${top.received} (${n(top.receivedBytes)} B)`,
    );
    out.push(`    it sent: ${mix(top.requests)}`);
    out.push(`    it got:  ${mix(top.replies)}`);
    const over = sorted.filter((x) => x.ratio > 3);
    out.push(`  addresses above 3: ${over.length} of ${r.sources.length}`);
    for (const x of over.slice(0, 12)) {
      out.push(
        `    ${x.ratio.toFixed(2).padStart(8)}  ${x.source}: sent ${mix(x.requests)}; got ${mix(x.replies)}`,
      );
    }
    const perCat = new Map<string, SourceTraffic[]>();
    for (const x of r.sources) {
      const c = x.source.split("/")[0]!;
      perCat.set(c, [...(perCat.get(c) ?? []), x]);
    }
    const catRows = [["category", "max ratio", "all sockets", "bytes in", "bytes out"]];
    for (const c of CATEGORIES) {
      const list = perCat.get(c);
      if (!list) continue;
      const inB = list.reduce((a, x) => a + x.sentBytes, 0);
      const outB = list.reduce((a, x) => a + x.receivedBytes, 0);
      catRows.push([
        c,
        Math.max(...list.map((x) => x.ratio)).toFixed(2),
        (outB / Math.max(1, inB)).toFixed(2),
        n(inB),
        n(outB),
      ]);
    }
    out.push(...table(catRows, ["l", "r", "r", "r", "r"]));
    out.push("  single minimal datagrams from a fresh address (probes):");
    const probeRows = [["probe", "bytes in", "bytes out", "ratio", "replies"]];
    for (const p of r.probes) {
      probeRows.push([
        p.source.slice("probe/".length),
        n(p.sentBytes),
        n(p.receivedBytes),
        p.ratio.toFixed(2),
        mix(p.replies),
      ]);
    }
    out.push(...table(probeRows, ["l", "r", "r", "r", "l"]).map((l) => "  " + l));
    const known = r.sources.filter((x) => x.kernelDrops !== null);
    const dropsAtFuzz = known.length > 0 ? n(known.reduce((a, x) => a + x.kernelDrops!, 0)) : "unknown";
    const account = (what: string, a: FuzzReport["bytesAccounted"]) => {
      const rest = a.serverSent - a.fuzzReceived - a.legitReceived - a.checkReceived;
      return `  server ${what} sent ${n(a.serverSent)} = received by fuzz sockets ${
        n(a.fuzzReceived)
      } + legit ` +
        `${n(a.legitReceived)} + check ${n(a.checkReceived)} + not received ${n(rest)}`;
    };
    out.push(account("datagrams", r.datagramsAccounted));
    out.push(account("bytes", r.bytesAccounted));
    out.push(`  (kernel drops at the fuzz sockets: ${dropsAtFuzz})`);
    out.push(
      "  (counted until every fuzz socket had been quiet for 2.5 s or the tail limit passed; heartbeat Pings " +
        "sent later, every 30 s until the 60 s idle timeout, are not in it)",
    );
    out.push("");
  }

  out.push("Server heap (V8, read through --inspect; the server does not expose it)");
  if (r.heap) {
    const h = r.heap;
    out.push(
      `  after GC: baseline ${mib(h.baseline)}, after the run ${mib(h.after)} (${
        h.after >= h.baseline ? "+" : ""
      }` +
        `${mib(h.after - h.baseline)}; allowed +${mib(h.slack)})`,
    );
    if (h.rssBaseline !== null && h.rssAfter !== null) {
      out.push(`  RSS: ${mib(h.rssBaseline)} -> ${mib(h.rssAfter)}`);
    }
  } else {
    out.push(`  not measured${r.heapNote ? `: ${r.heapNote}` : ""}`);
  }
  out.push(
    `  server stderr during the run: ${n(r.stderrBytes)} bytes, ${n(r.stderrLines)} lines, the longest ` +
      `${n(r.stderrLongestLine)} characters`,
  );
  out.push("");

  const l = r.legit;
  out.push("Legitimate client (P2PClient: ping, reliable Data + echo, discovery, every 100 ms)");
  out.push(
    `  handshake ${l.handshakeOk ? "ok" : "FAILED"}; ${l.ok}/${l.ops} answered` +
      ` (${l.ops > 0 ? ((100 * l.ok) / l.ops).toFixed(1) : "0"}%)` +
      (l.pingMs ? `; ping median ${l.pingMs.median.toFixed(1)} ms, max ${l.pingMs.max.toFixed(1)} ms` : ""),
  );
  for (const x of l.failures.slice(0, 10)) out.push(`  missed at ${x.atMs} ms: ${x.op}: ${x.error}`);
  out.push("");

  if (r.crash) {
    const c = r.crash;
    out.push(`SERVER CRASH: ${c.status}`);
    out.push("  stderr (last lines):");
    out.push(...c.stderrTail.split("\n").map((x) => `    ${x}`));
    out.push(`  the last ${c.lastCases} datagrams are in ${c.replayFile ?? "(could not be written)"}`);
    if (c.culprit) {
      out.push(
        `  replayed in order against a fresh server, case ${c.culprit.index} kills it ` +
          `(${c.culprit.category}, from ${c.culprit.source}: ${c.culprit.label}); sent alone to another fresh ` +
          `server it ${
            c.culpritAloneKills ? "kills it too" : "does not (the crash needs the state before it)"
          }`,
      );
      out.push(
        `  bytes (base64): ${
          c.culprit.base64.length > 400 ? c.culprit.base64.slice(0, 400) + "..." : c.culprit.base64
        }`,
      );
      out.push(...(c.culpritStderr ?? "").split("\n").map((x) => `    ${x}`));
    } else {
      out.push("  replayed in order against a fresh server, none of them killed it");
    }
    out.push("");
  }

  out.push(
    `Wall time: ${(r.wallMs / 1000).toFixed(1)} s (sending ${(r.sendPhaseMs / 1000).toFixed(1)} s, waiting ` +
      `for the last retransmissions ${(r.tailMs / 1000).toFixed(1)} s)`,
  );
  for (const note of r.notes) out.push(`Note: ${note}`);
  out.push(ok ? "Result: PASS" : `Result: FAIL (seed ${r.seed})`);
  for (const f of r.failures) out.push(`  - ${f}`);
  return out.join("\n");
}

// ------------------------------------------------------------------ the program

const USAGE = `Usage: deno task fuzz [--seed N] [--count N] [--time-limit SECONDS] [--exclude CATEGORY,...]

  --seed N             generator seed (default: random, printed)
  --count N            fuzz datagrams to generate (default: 100000)
  --time-limit S       stop generating after S seconds (default: 600)
  --exclude LIST       categories to leave out, comma-separated (default: none); one of
                       ${CATEGORIES.join(", ")}`;

async function main(args: string[]): Promise<number> {
  const values = toolFlags(args, { seed: null, count: "100000", "time-limit": "600", exclude: "" }, USAGE);
  if (typeof values === "number") return values;
  let seed: number;
  let count: number;
  let limit: number;
  let exclude: Category[];
  try {
    seed = values.seed === undefined
      ? crypto.getRandomValues(new Uint32Array(1))[0]!
      : intFlag(values.seed, "--seed", 0, 0xffff_ffff);
    count = intFlag(values.count, "--count", 0, 100_000_000);
    limit = intFlag(values["time-limit"], "--time-limit", 0, 86_400);
    exclude = (values.exclude ?? "").split(",").filter((c) => c.length > 0).map((c) => {
      if (!(CATEGORIES as readonly string[]).includes(c)) {
        throw new TypeError(`--exclude: unknown category "${c}"`);
      }
      return c as Category;
    });
  } catch (error) {
    console.error(`error: ${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  console.log(`fuzzing with seed ${seed}, ${count} datagrams`);
  const report = await runFuzz({
    seed,
    count,
    exclude,
    timeLimitMs: limit * 1000,
    log: (line) => console.log(line),
  });
  console.log("");
  console.log(formatReport(report));
  return report.failures.length === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
