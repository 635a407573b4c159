/**
 * `deno task bench`: the load benchmarks, measured as the server's CPU time per operation with the rate
 * beside it. On a machine with two or more cores each server is pinned to core 0 (`taskset -c 0`) and each
 * load generator to core 1 (`taskset -c 1`), so the generator is neither measured nor in the server's way.
 * The server's CPU (user + system, all threads, from `/proc/<pid>/stat`) is read by the generator when each
 * measured window opens and closes. Servers: the floor (`bench/echo_server.ts`, a bare Deno UDP echo),
 * p2p_server (`bench/server_proc.ts`) and, when `../shared/upstream/p2p_server` exists (or `--upstream PATH`
 * names it), the upstream Rust server on the rows it supports. Every row runs `--rounds` times, servers
 * alternating within a round; the table shows medians. The STUN rows (Binding requests, 64 in flight) run
 * the floor, p2p_server and, when Debian's coturn is installed (`turnserver` on the PATH), coturn's STUN
 * service (`turnserver --stun-only` on a loopback port) in the same pinned rounds; they have a table of
 * their own. Prints the markdown tables and writes `bench/results.json` (or `--out`).
 *
 * Options: `--quick` (tiny counts, one round: a smoke test, its figures mean nothing), `--rounds N`,
 * `--upstream PATH|none`, `--out FILE`, `--no-pin`, `--only stun` (the STUN rows alone), `--only memory` (the memory rows alone), `--only handshakes` (the
 * handshake and keyed handshake rows alone). `BENCH_QUICK=1` in
 * the environment is `--quick`.
 *
 * Every step is bounded: operations by count and by time, every process stopped at the end.
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import { processRssBytes } from "./proc_stat.ts";
import { mmsgUnavailable } from "../src/udp_mmsg.ts";
import { V8_FLAGS } from "../tools/compile.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    rounds: { type: "string" },
    upstream: { type: "string" },
    out: { type: "string" },
    "no-pin": { type: "boolean", default: false },
    only: { type: "string" },
  },
});
const ONLY = ["stun", "memory", "handshakes"];
if (values.only !== undefined && !ONLY.includes(values.only)) {
  console.error(
    `error: Invalid "--only": ${JSON.stringify(values.only)}: expected one of ${
      ONLY.map((o) => `"${o}"`).join(", ")
    }`,
  );
  Deno.exit(2);
}
const onlyStun = values.only === "stun";
const onlyMemory = values.only === "memory";
const onlyHandshakes = values.only === "handshakes";
const quick = values.quick || Deno.env.get("BENCH_QUICK") === "1";
const ROUNDS = Number(values.rounds ?? (quick ? 1 : 3));
if (!Number.isInteger(ROUNDS) || ROUNDS < 1 || ROUNDS > 20) {
  console.error(
    `error: Invalid "--rounds": ${JSON.stringify(values.rounds)}: expected an integer from 1 to 20`,
  );
  Deno.exit(2);
}
/** Operations per measured window, and the time bound of each (s). */
const PING_COUNT = quick ? 500 : 60_000;
const PING1_COUNT = quick ? 200 : 20_000;
const DATA_COUNT = quick ? 500 : 40_000;
const DISCOVERY_COUNT = quick ? 100 : 10_000;
const HANDSHAKE_PEERS = quick ? 200 : 20_000;
const KEYED_PEERS = quick ? 100 : 4_000;
const MEMORY_PEERS = quick ? 500 : 100_000;
// Operations run before each measured window, not measured: p2p_server is measured warm (V8 compiles the hot
// code on background threads during the first thousands of operations), as it runs for most of its life.
const WARMUP_OPS = quick ? 50 : 5_000;
const HANDSHAKE_WARMUP = quick ? 50 : 10_000;
const KEYED_WARMUP = quick ? 20 : 1_000;
const STUN_COUNT = quick ? 500 : 60_000;
const PACED_SECONDS = quick ? 0.5 : 3;
const WINDOW_SECONDS = quick ? 5 : 10;

const here = new URL(".", import.meta.url).pathname;
const deno = Deno.execPath();
const upstreamPath = values.upstream === "none"
  ? null
  : values.upstream ?? new URL("../../shared/upstream/p2p_server", import.meta.url).pathname;
const upstream = upstreamPath !== null && (await Deno.stat(upstreamPath).catch(() => null))?.isFile
  ? upstreamPath
  : null;
if (values.upstream && values.upstream !== "none" && upstream === null) {
  console.error(`error: Invalid "--upstream": "${values.upstream}" is not a file`);
  Deno.exit(2);
}
const cores = navigator.hardwareConcurrency;
const hasTaskset = !values["no-pin"] && cores >= 2 &&
  (await new Deno.Command("taskset", { args: ["-c", "0", "true"], stdout: "null", stderr: "null" }).output()
    .then((o) => o.success).catch(() => false));
const turnserver = ["/usr/bin/turnserver", "/usr/local/bin/turnserver"].find((p) => {
  try {
    return Deno.statSync(p).isFile;
  } catch {
    return false;
  }
}) ?? null;
if (turnserver === null) {
  console.log("STUN rows: coturn skipped: turnserver is not installed (apt-get install coturn)");
}
const SERVER_PIN = hasTaskset ? ["taskset", "-c", "0"] : [];
const GENERATOR_PIN = hasTaskset ? ["taskset", "-c", "1"] : [];

/** A child process, optionally pinned, with its stdout read line by line and its stdin writable. */
class Proc {
  readonly child: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(pin: string[], command: string, args: string[]) {
    const [cmd, ...rest] = [...pin, command, ...args];
    this.child = new Deno.Command(cmd!, { args: rest, stdin: "piped", stdout: "piped", stderr: "inherit" })
      .spawn();
    this.#lines = this.child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
      .getReader();
    this.#writer = this.child.stdin.getWriter();
  }

  /** The process id (taskset executes the command in its own process). */
  get pid(): number {
    return this.child.pid;
  }

  /** The next line of output, or an error after `seconds`. */
  async line(seconds = 120): Promise<string> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no output within ${seconds} s`)), seconds * 1000);
    });
    try {
      const { value, done } = await Promise.race([this.#lines.read(), late]);
      if (done) throw new Error("process ended");
      return value;
    } finally {
      clearTimeout(timer);
    }
  }

  async ask(command: string, seconds = 120): Promise<string> {
    await this.#writer.write(new TextEncoder().encode(`${command}\n`));
    return await this.line(seconds);
  }

  async stop(): Promise<void> {
    try {
      await this.#writer.close();
    } catch { /* closed */ }
    try {
      this.child.kill("SIGTERM");
    } catch { /* exited */ }
    await this.#lines.cancel().catch(() => {});
    await this.child.status;
  }
}

function lineSplitter(): TransformStream<string, string> {
  let buffer = "";
  return new TransformStream({
    transform(chunk, controller) {
      buffer += chunk;
      let nl;
      while ((nl = buffer.indexOf("\n")) >= 0) {
        controller.enqueue(buffer.slice(0, nl));
        buffer = buffer.slice(nl + 1);
      }
    },
    flush(controller) {
      if (buffer) controller.enqueue(buffer);
    },
  });
}

/** `p2p_server mmsg` is p2p_server with `io_backend: "mmsg"` (src/udp_mmsg.ts), run where it can run. */
type Kind = "floor" | "p2p_server" | "p2p_server mmsg" | "upstream" | "coturn";
const MMSG: Kind[] = mmsgUnavailable() === null ? ["p2p_server mmsg"] : [];

interface Server {
  kind: Kind;
  proc: Proc;
  port: number;
}

// `identityFile: null`: the server makes a new key each run and writes no key file. `auth` stays at its
// default, "optional". The rate limits and the relay quota are a policy against abuse, not part of what is
// measured: the generator is one peer sending far above the per-node default, so they are set out of reach.
// (The per-IP limits do not apply: loopback is exempt by default.) Logging at the error level, as the
// upstream server runs here (`--ERROR`).
const UNLIMITED: [number, number] = [100_000_000, 100_000_000];
const SERVER_CONFIG = {
  maxConnections: 500_000,
  connectionTimeout: 3600,
  heartbeatInterval: 3600,
  identityFile: null,
  rateLimitDatagramsPerNode: UNLIMITED,
  rateLimitDatagramsGlobal: UNLIMITED,
  relayQuota: [1_000_000_000, 1_000_000_000],
};

function freePort(): number {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (s.addr as Deno.NetAddr).port;
  s.close();
  return port;
}

/** Waits until the server at `port` answers a Ping (the upstream server prints nothing when ready). */
async function answersPing(port: number, seconds: number): Promise<boolean> {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const ping = new TextEncoder().encode(JSON.stringify({
    id: crypto.randomUUID(),
    message_type: "Ping",
    timestamp: Math.floor(Date.now() / 1000),
    payload: null,
    sender_addr: null,
    sequence_number: null,
    requires_ack: false,
    ack_for: null,
  }));
  const deadline = Date.now() + seconds * 1000;
  let ok = false;
  const rx = s.receive().then(() => ok = true, () => {});
  while (!ok && Date.now() < deadline) {
    await s.send(ping, { transport: "udp", hostname: "127.0.0.1", port }).catch(() => {});
    await new Promise((r) => setTimeout(r, 50));
  }
  s.close();
  await rx;
  return ok;
}

/** Waits until a STUN server at `port` answers a Binding request (coturn prints nothing useful when ready). */
async function answersStun(port: number, seconds: number): Promise<boolean> {
  const s = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const request = Uint8Array.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(7)]);
  const deadline = Date.now() + seconds * 1000;
  let ok = false;
  const rx = s.receive().then(() => ok = true, () => {});
  while (!ok && Date.now() < deadline) {
    await s.send(request, { transport: "udp", hostname: "127.0.0.1", port }).catch(() => {});
    await new Promise((r) => setTimeout(r, 50));
  }
  s.close();
  await rx;
  return ok;
}

const coturnDir = turnserver ? await Deno.makeTempDir({ prefix: "p2p_bench_coturn_" }) : null;

async function start(kind: Kind, v8Flags: string[] = []): Promise<Server> {
  if (kind === "coturn") {
    // A plain STUN server: no TURN, no TCP/TLS/DTLS listeners, no CLI, no log; its defaults otherwise (a UDP
    // thread per core, SOFTWARE in its answers).
    const port = freePort();
    const proc = new Proc(SERVER_PIN, turnserver!, [
      "-n",
      "--stun-only",
      "-L",
      "127.0.0.1",
      "-p",
      `${port}`,
      "--no-cli",
      "--no-tcp",
      "--no-tls",
      "--no-dtls",
      "--no-stdout-log",
      "--simple-log",
      "--log-file",
      "/dev/null",
      "--pidfile",
      `${coturnDir}/turnserver.pid`,
    ]);
    if (!await answersStun(port, 10)) throw new Error(`turnserver did not answer STUN on port ${port}`);
    return { kind, proc, port };
  }
  if (kind === "upstream") {
    const port = freePort();
    const proc = new Proc(SERVER_PIN, upstream!, [
      "--address",
      `127.0.0.1:${port}`,
      "-m",
      "200000",
      "--ERROR",
    ]);
    if (!await answersPing(port, 10)) throw new Error(`The upstream server did not answer on port ${port}`);
    return { kind, proc, port };
  }
  // p2p_server runs with the V8 flags it is launched with everywhere (tools/compile.ts), plus the row's own.
  const flags = [`--v8-flags=${[...V8_FLAGS, ...v8Flags].join(",")}`];
  const args = kind === "floor" ? ["run", "-A", `${here}echo_server.ts`] : [
    "run",
    "-A",
    ...flags,
    `${here}server_proc.ts`,
    JSON.stringify(kind === "p2p_server mmsg" ? { ...SERVER_CONFIG, ioBackend: "mmsg" } : SERVER_CONFIG),
  ];
  const proc = new Proc(SERVER_PIN, deno, args);
  return { kind, proc, port: Number(await proc.line(60)) };
}

interface GenResult {
  mode: string;
  ops: number;
  seconds: number;
  rate: number;
  p50Ms: number | null;
  p99Ms: number | null;
  generatorCpu: number;
  serverCpuMs: number | null;
  serverUsPerOp: number | null;
  [key: string]: unknown;
}

/** Runs the generator (pinned) against `server` and returns its result line (and any further lines). */
async function generate(server: Server, args: string[]): Promise<GenResult> {
  const proc = new Proc(GENERATOR_PIN, deno, [
    "run",
    "-A",
    `${here}loadgen.ts`,
    ...args,
    "--port",
    `${server.port}`,
    "--server-pid",
    `${server.proc.pid}`,
  ]);
  try {
    const result = JSON.parse(await proc.line(300)) as GenResult;
    if (args[0] === "discovery" || args[0] === "stun") Object.assign(result, JSON.parse(await proc.line(30)));
    return result;
  } finally {
    await proc.stop();
  }
}

/** One table row: a measurement of one server, its rounds and their medians. */
interface Row {
  row: string;
  server: Kind;
  rounds: GenResult[];
  rate: number | null;
  usPerOp: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  generatorCpu: number | null;
  xFloor: number | null;
  xUpstream: number | null;
  /** STUN rows: server CPU per op against coturn's on the same row. */
  xCoturn: number | null;
  note: string;
}

const rows: Row[] = [];

function median(xs: (number | null)[]): number | null {
  const v = xs.filter((x): x is number => x !== null && Number.isFinite(x)).sort((a, b) => a - b);
  return v.length === 0 ? null : v[Math.floor(v.length / 2)]!;
}

function record(row: string, server: Kind, result: GenResult, note = ""): void {
  let r = rows.find((x) => x.row === row && x.server === server);
  if (!r) {
    r = {
      row,
      server,
      rounds: [],
      rate: null,
      usPerOp: null,
      p50Ms: null,
      p99Ms: null,
      generatorCpu: null,
      xFloor: null,
      xUpstream: null,
      xCoturn: null,
      note,
    };
    rows.push(r);
  }
  r.rounds.push(result);
  r.rate = median(r.rounds.map((x) => x.rate));
  r.usPerOp = median(r.rounds.map((x) => x.serverUsPerOp));
  r.p50Ms = median(r.rounds.map((x) => x.p50Ms));
  r.p99Ms = median(r.rounds.map((x) => x.p99Ms));
  r.generatorCpu = median(r.rounds.map((x) => x.generatorCpu));
  if (note) r.note = note;
}

const kinds: Kind[] = ["floor", "p2p_server", ...MMSG, ...(upstream ? ["upstream" as const] : [])];
const p2pAndUpstream: Kind[] = ["p2p_server", ...MMSG, ...(upstream ? ["upstream" as const] : [])];
const started: Server[] = [];
const window = (count: number) => [
  "--count",
  `${count}`,
  "--seconds",
  `${WINDOW_SECONDS}`,
  "--warmup",
  `${WARMUP_OPS}`,
];

async function withServer<T>(kind: Kind, f: (s: Server) => Promise<T>, v8Flags: string[] = []): Promise<T> {
  const s = await start(kind, v8Flags);
  started.push(s);
  try {
    return await f(s);
  } finally {
    await s.proc.stop();
    started.splice(started.indexOf(s), 1);
  }
}

try {
  if (onlyHandshakes) {
    for (let round = 0; round < ROUNDS; round++) await handshakeRows();
  } else if (!onlyStun && !onlyMemory) await mainRows();
  if (!onlyMemory && !onlyHandshakes) await stunRows();
} finally {
  for (const s of started) await s.proc.stop();
  if (coturnDir) await Deno.remove(coturnDir, { recursive: true }).catch(() => {});
}

/** The STUN rows: every STUN server long-lived, alternating within each round. */
async function stunRows(): Promise<void> {
  const stunKinds: Kind[] = ["floor", "p2p_server", ...MMSG, ...(turnserver ? ["coturn" as const] : [])];
  const servers = new Map<Kind, Server>();
  for (const kind of stunKinds) {
    const s = await start(kind);
    started.push(s);
    servers.set(kind, s);
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (
      const [request, row] of [
        ["bare", "STUN Binding request (20 B, no attributes), 64 in flight"],
        ["full", "STUN Binding request (52 B, SOFTWARE + FINGERPRINT), 64 in flight"],
      ] as const
    ) {
      for (const kind of stunKinds) {
        const result = await generate(servers.get(kind)!, [
          "stun",
          "--stun-request",
          request,
          "--inflight",
          "64",
          ...window(STUN_COUNT),
        ]);
        const note = kind === "floor"
          ? "echo of the request"
          : `${result.requestBytes} B in, ${result.answerBytes} B out`;
        record(row, kind, result, note);
      }
    }
  }
  for (const s of servers.values()) {
    await s.proc.stop();
    started.splice(started.indexOf(s), 1);
  }
}

async function mainRows(): Promise<void> {
  // Long-lived servers for the round-trip rows (idle between windows: their timers are an hour away).
  const servers = new Map<Kind, Server>();
  for (const kind of kinds) {
    const s = await start(kind);
    started.push(s);
    servers.set(kind, s);
  }
  for (let round = 0; round < ROUNDS; round++) {
    for (const kind of kinds) {
      const s = servers.get(kind)!;
      record(
        "Ping -> Pong, 1 in flight",
        kind,
        await generate(s, ["ping", "--inflight", "1", ...window(PING1_COUNT)]),
      );
      record(
        "Ping -> Pong, 64 in flight",
        kind,
        await generate(s, ["ping", "--inflight", "64", ...window(PING_COUNT)]),
      );
    }
    for (const kind of p2pAndUpstream) {
      const s = servers.get(kind)!;
      record(
        "reliable Data round trip (requires_ack, echo), 64 in flight",
        kind,
        await generate(s, ["data", "--inflight", "64", ...window(DATA_COUNT)]),
        kind === "upstream" ? "upstream echoes but sends no Ack" : "Ack + echo: two datagrams out per op",
      );
    }
    for (const kind of ["p2p_server", ...MMSG] as const) {
      record(
        "routed Data A -> B (B acks), 64 in flight",
        kind,
        await generate(servers.get(kind)!, ["route", "--inflight", "64", ...window(DATA_COUNT)]),
        "per op: A's Data in, Ack to A, copy to B, B's Ack in",
      );
    }
    // p99 at half of the pinned peak: paced at half of p2p_server's 64-in-flight median so far.
    const peak = rows.find((r) => r.row === "Ping -> Pong, 64 in flight" && r.server === "p2p_server")!.rate!;
    const half = Math.max(100, Math.floor(peak / 2));
    for (const kind of kinds) {
      const result = await generate(servers.get(kind)!, [
        "ping",
        "--rate",
        `${half}`,
        "--seconds",
        `${PACED_SECONDS}`,
      ]);
      record("Ping -> Pong paced at half of p2p_server's peak", kind, result);
    }
    // Fresh servers: discovery needs exactly 64 registered peers.
    for (const kind of p2pAndUpstream) {
      await withServer(kind, async (s) => {
        record(
          "discovery, 64 registered peers, 8 in flight",
          kind,
          await generate(s, ["discovery", "--peers", "64", "--inflight", "8", ...window(DISCOVERY_COUNT)]),
        );
      });
    }
    await handshakeRows();
  }
  for (const s of servers.values()) {
    await s.proc.stop();
    started.splice(started.indexOf(s), 1);
  }
}

/** One round of the handshake rows, each on a fresh server (every handshake adds peers). */
async function handshakeRows(): Promise<void> {
  for (const kind of p2pAndUpstream) {
    await withServer(kind, async (s) => {
      record(
        "handshakes (distinct peers, 64 concurrent)",
        kind,
        await generate(s, [
          "handshake",
          "--warmup",
          `${HANDSHAKE_WARMUP}`,
          "--peers",
          `${HANDSHAKE_PEERS}`,
          "--concurrency",
          "64",
          "--seconds",
          "60",
        ]),
        "request (requires_ack) -> Ack + response -> Ack",
      );
    });
  }
  for (const kind of ["p2p_server", ...MMSG] as const) {
    await withServer(kind, async (s) => {
      const result = await generate(s, [
        "handshake",
        "--keyed",
        "--warmup",
        `${KEYED_WARMUP}`,
        "--peers",
        `${KEYED_PEERS}`,
        "--concurrency",
        "64",
        "--seconds",
        "60",
      ]);
      const stats = JSON.parse(await s.proc.ask("stats"));
      result.authenticated = stats.peers.authenticated;
      record(
        "keyed handshakes (distinct keyed peers, 64 concurrent)",
        kind,
        result,
        "signed request, signed response, X25519 session keys, MAC'd Ack",
      );
    });
  }
}

// Memory per idle peer at MEMORY_PEERS peers, and after they leave (each sends a Disconnect).
interface Memory {
  server: Kind;
  peers: number;
  rssBefore: number | null;
  rssAt: number | null;
  rssAfterLeave: number | null;
  heapBefore: number | null;
  heapAt: number | null;
  heapAfterLeave: number | null;
  peersAfterLeave: number | null;
  left: number;
}
const memory: Memory[] = [];
for (const kind of onlyStun || onlyHandshakes ? [] : p2pAndUpstream.filter((k) => k !== "p2p_server mmsg")) {
  await withServer(kind, async (s) => {
    const mem = async () => {
      if (kind !== "p2p_server") {
        await new Promise((r) => setTimeout(r, 500));
        return { rss: processRssBytes(s.proc.pid), heapUsed: null, peers: null };
      }
      const m = JSON.parse(await s.proc.ask("mem")) as {
        rss: number;
        heapUsed: number;
        external: number;
        peers: number;
      };
      // Typed arrays keep their contents outside the V8 heap ("external"): counted with the heap.
      return { rss: m.rss, heapUsed: m.heapUsed + m.external, peers: m.peers };
    };
    const before = await mem();
    const gen = new Proc(GENERATOR_PIN, deno, [
      "run",
      "-A",
      `${here}loadgen.ts`,
      "handshake",
      "--hold",
      "--peers",
      `${MEMORY_PEERS}`,
      "--concurrency",
      "64",
      "--seconds",
      "120",
      "--port",
      `${s.port}`,
    ]);
    try {
      const hs = JSON.parse(await gen.line(300)) as GenResult;
      const at = await mem();
      const left = JSON.parse(await gen.ask("leave", 300)).left as number;
      // Until the server has seen every Disconnect (bounded).
      let after = await mem();
      for (let i = 0; i < 20 && after.peers !== null && after.peers > 0; i++) {
        await new Promise((r) => setTimeout(r, 250));
        after = await mem();
      }
      memory.push({
        server: kind,
        peers: at.peers ?? hs.ops,
        rssBefore: before.rss,
        rssAt: at.rss,
        rssAfterLeave: after.rss,
        heapBefore: before.heapUsed,
        heapAt: at.heapUsed,
        heapAfterLeave: after.heapUsed,
        peersAfterLeave: after.peers,
        left,
      });
    } finally {
      await gen.stop();
    }
  }, ["--expose-gc"]);
}

// Ratios: server CPU per operation against the floor's per round trip (1 in flight against 1 in flight,
// every other row against 64 in flight) and against the upstream server's on the same row.
const floor1 = rows.find((r) => r.server === "floor" && r.row.includes("1 in flight"))?.usPerOp ?? null;
const floor64 = rows.find((r) => r.server === "floor" && r.row.includes("64 in flight"))?.usPerOp ?? null;
const floorPaced = rows.find((r) => r.server === "floor" && r.row.includes("paced"))?.usPerOp ?? null;
for (const r of rows) {
  if (r.row.startsWith("STUN")) {
    // Against the floor's and coturn's figures on the same row.
    const same = (k: Kind) => rows.find((x) => x.row === r.row && x.server === k)?.usPerOp ?? null;
    const floor = same("floor");
    const coturn = same("coturn");
    r.xFloor = r.usPerOp !== null && floor ? r.usPerOp / floor : null;
    r.xCoturn = r.usPerOp !== null && coturn ? r.usPerOp / coturn : null;
    continue;
  }
  const floor = r.row.includes("1 in flight") ? floor1 : r.row.includes("paced") ? floorPaced : floor64;
  const up = rows.find((x) => x.row === r.row && x.server === "upstream")?.usPerOp ?? null;
  r.xFloor = r.usPerOp !== null && floor ? r.usPerOp / floor : null;
  r.xUpstream = r.usPerOp !== null && up ? r.usPerOp / up : null;
}

const fmt = (n: number | null, digits = 0) =>
  n === null || !Number.isFinite(n)
    ? ""
    : n.toLocaleString("en-US", { maximumFractionDigits: digits, minimumFractionDigits: digits });
const kb = (bytes: number | null, peers: number) => bytes === null || peers <= 0 ? "" : fmt(bytes / peers, 0);

const lines: string[] = [];
lines.push(
  "| benchmark | server | server CPU µs/op | x floor | x upstream | ops/s | p50 ms | p99 ms | gen CPU | note |",
  "|---|---|---|---|---|---|---|---|---|---|",
);
for (const r of rows.filter((x) => !x.row.startsWith("STUN"))) {
  lines.push(
    `| ${r.row} | ${r.server} | ${fmt(r.usPerOp, 1)} | ${fmt(r.xFloor, 2)} | ${fmt(r.xUpstream, 2)} | ` +
      `${fmt(r.rate)} | ${fmt(r.p50Ms, 3)} | ${fmt(r.p99Ms, 3)} | ` +
      `${r.generatorCpu === null ? "" : `${Math.round(r.generatorCpu * 100)}%`} | ${r.note} |`,
  );
}
lines.push(
  "",
  "| STUN | server | server CPU µs/op | x floor | x coturn | ops/s | p50 ms | p99 ms | gen CPU | note |",
  "|---|---|---|---|---|---|---|---|---|---|",
);
for (const r of rows.filter((x) => x.row.startsWith("STUN"))) {
  lines.push(
    `| ${r.row} | ${r.server} | ${fmt(r.usPerOp, 1)} | ${fmt(r.xFloor, 2)} | ${fmt(r.xCoturn, 2)} | ` +
      `${fmt(r.rate)} | ${fmt(r.p50Ms, 3)} | ${fmt(r.p99Ms, 3)} | ` +
      `${r.generatorCpu === null ? "" : `${Math.round(r.generatorCpu * 100)}%`} | ${r.note} |`,
  );
}
lines.push(
  "",
  "| memory | server | peers | RSS B/peer | heap B/peer (V8 heap + external) | after leaving: peers, RSS, heap vs before |",
);
lines.push("|---|---|---|---|---|---|");
for (const m of memory) {
  const d = (a: number | null, b: number | null) =>
    a === null || b === null ? "n/a" : `${a - b >= 0 ? "+" : ""}${fmt(a - b)} B`;
  lines.push(
    `| idle peers | ${m.server} | ${fmt(m.peers)} | ${kb(m.rssAt! - m.rssBefore!, m.peers)} | ` +
      `${m.heapAt === null ? "n/a" : kb(m.heapAt - m.heapBefore!, m.peers)} | ` +
      `${m.peersAfterLeave ?? "n/a"} left of ${fmt(m.left)} disconnected, RSS ${
        d(m.rssAfterLeave, m.rssBefore)
      }, ` +
      `heap ${d(m.heapAfterLeave, m.heapBefore)} |`,
  );
}
const load = await Deno.readTextFile("/proc/loadavg").catch(() => "n/a");
const setup =
  `${cores} cores, ${
    hasTaskset ? "servers pinned to core 0, generators to core 1" : "not pinned"
  }; ${ROUNDS} round(s), medians; Deno ${Deno.version.deno}; load average at the end: ${
    load.split(" ").slice(0, 3).join(" ")
  }` +
  (quick ? "; QUICK MODE (a smoke test: the figures mean nothing)" : "");
console.log(`${setup}\n\n${lines.join("\n")}`);

const results = {
  date: new Date().toISOString(),
  quick,
  rounds: ROUNDS,
  pinned: hasTaskset,
  deno: Deno.version,
  machine: {
    os: Deno.build.os,
    arch: Deno.build.arch,
    cpus: cores,
    cpuModel:
      (await Deno.readTextFile("/proc/cpuinfo").catch(() => "")).match(/model name\s*:\s*(.*)/)?.[1] ??
        null,
    loadAverageAtEnd: load.trim(),
  },
  upstream,
  turnserver,
  only: values.only ?? null,
  note:
    "Server CPU per operation is user + system time of the server process (all threads) from /proc over " +
    "the measured windows; it is robust to a busy machine only in part (cache and scheduler effects remain): " +
    "compare figures from one run.",
  rows,
  memory,
};
const out = values.out ?? `${here}results.json`;
await Deno.writeTextFile(out, JSON.stringify(results, null, 2) + "\n");
console.log(`\nwrote ${out}`);
