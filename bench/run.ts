/**
 * `deno task bench`: the load benchmarks, side by side with the runtime's own limit (a bare Deno UDP echo
 * server under the same load generator). Everything runs on 127.0.0.1, each server and each generator in its
 * own process; every step is bounded in time. Prints a table and writes `bench/results.json`.
 *
 * Options: `--quick` (shorter runs and fewer peers, for a smoke test).
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";

const { values } = parseArgs({ args: Deno.args, options: { quick: { type: "boolean", default: false } } });
const quick = values.quick;
const SECONDS = quick ? 1 : 4;
const HANDSHAKE_PEERS = quick ? 2_000 : 50_000;
const KEYED_HANDSHAKE_PEERS = quick ? 2_000 : 20_000;
const MEMORY_STEPS = quick ? [1_000, 2_000] : [10_000, 100_000];

const here = new URL(".", import.meta.url).pathname;
const deno = Deno.execPath();

interface GenResult {
  mode: string;
  ops: number;
  seconds: number;
  rate: number;
  p50Ms: number;
  p99Ms: number;
  cpuMs: number;
  [key: string]: unknown;
}

interface Row {
  name: string;
  rate: number | null;
  p50Ms: number | null;
  p99Ms: number | null;
  ratio: number | null;
  generatorCpu: number | null;
  note: string;
}

class Proc {
  readonly child: Deno.ChildProcess;
  readonly #lines: ReadableStreamDefaultReader<string>;
  #writer: WritableStreamDefaultWriter<Uint8Array>;

  constructor(args: string[]) {
    this.child = new Deno.Command(deno, { args, stdin: "piped", stdout: "piped", stderr: "inherit" }).spawn();
    this.#lines = this.child.stdout.pipeThrough(new TextDecoderStream()).pipeThrough(lineSplitter())
      .getReader();
    this.#writer = this.child.stdin.getWriter();
  }

  async line(): Promise<string> {
    const { value, done } = await this.#lines.read();
    if (done) throw new Error("process ended");
    return value;
  }

  async ask(command: string): Promise<string> {
    await this.#writer.write(new TextEncoder().encode(`${command}\n`));
    return await this.line();
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

async function startServer(config: Record<string, unknown>, v8Flags: string[] = []): Promise<[Proc, number]> {
  const flags = v8Flags.length ? [`--v8-flags=${v8Flags.join(",")}`] : [];
  const proc = new Proc(["run", "-A", ...flags, `${here}server_proc.ts`, JSON.stringify(config)]);
  return [proc, Number(await proc.line())];
}

async function startEcho(): Promise<[Proc, number]> {
  const proc = new Proc(["run", "-A", `${here}echo_server.ts`]);
  return [proc, Number(await proc.line())];
}

async function generate(args: string[]): Promise<GenResult> {
  const out = await new Deno.Command(deno, {
    args: ["run", "-A", `${here}loadgen.ts`, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim().split("\n").pop() ?? "";
  return JSON.parse(text) as GenResult;
}

// `identityFile: null`: the server makes a new key each run and writes no key file (the program's default,
// p2p_server_identity.pem, would land in the working directory). `auth` stays at its default, "optional".
// The rate limits are a policy against abuse, not part of what is measured: the load generator is one
// registered peer sending far above the per-node default (1,000 datagrams/s), so they are set out of reach.
// (The per-IP limits do not apply: loopback is exempt by default.)
const UNLIMITED: [number, number] = [100_000_000, 100_000_000];
const SERVER_CONFIG = {
  maxConnections: 500_000,
  connectionTimeout: 3600,
  heartbeatInterval: 3600,
  identityFile: null,
  rateLimitDatagramsPerNode: UNLIMITED,
  rateLimitDatagramsGlobal: UNLIMITED,
};
const rows: Row[] = [];
const raw: Record<string, unknown> = {};
const cpu = (r: GenResult) => r.cpuMs / (r.seconds * 1000);

function row(name: string, r: GenResult, baseline: GenResult | null, note = "") {
  rows.push({
    name,
    rate: r.rate,
    p50Ms: r.p50Ms,
    p99Ms: r.p99Ms,
    ratio: baseline ? r.rate / baseline.rate : null,
    generatorCpu: cpu(r),
    note,
  });
  raw[name] = r;
}

// 1-3. Baseline and p2p_server side by side. Both servers run at once and the generator alternates between
// them (ROUNDS times each, the median kept), so a noisy neighbour on a shared machine hits both alike.
const ROUNDS = quick ? 1 : 3;
const median = (runs: GenResult[]) => [...runs].sort((a, b) => a.rate - b.rate)[Math.floor(runs.length / 2)]!;
const ping = (port: number, inflight: number) =>
  generate(["ping", "--port", `${port}`, "--inflight", `${inflight}`, "--seconds", `${SECONDS}`]);
{
  const [echo, echoPort] = await startEcho();
  const [server, port] = await startServer(SERVER_CONFIG);
  const runs: Record<string, GenResult[]> = { base1: [], base64: [], p1: [], p64: [] };
  for (let round = 0; round < ROUNDS; round++) {
    runs.base1!.push(await ping(echoPort, 1));
    runs.p1!.push(await ping(port, 1));
    runs.base64!.push(await ping(echoPort, 64));
    runs.p64!.push(await ping(port, 64));
  }
  const base1 = median(runs.base1!);
  const base64 = median(runs.base64!);
  const p1 = median(runs.p1!);
  const p64 = median(runs.p64!);
  raw.rounds = runs;
  row("baseline echo, 1 in flight", base1, null);
  row("baseline echo, 64 in flight", base64, null);
  const half = Math.floor(p64.rate / 2);
  // The bare echo server paced at the same rate: what the generator and the machine add to the latency.
  const pacedBase = await generate([
    "ping",
    "--port",
    `${echoPort}`,
    "--rate",
    `${half}`,
    "--seconds",
    `${SECONDS}`,
  ]);
  await echo.stop();
  const paced = await generate(["ping", "--port", `${port}`, "--rate", `${half}`, "--seconds", `${SECONDS}`]);
  const data = await generate(["data", "--port", `${port}`, "--inflight", "64", "--seconds", `${SECONDS}`]);
  await server.stop();
  row("ping/pong, 1 in flight", p1, base1);
  row("ping/pong, 64 in flight", p64, base64, "target >= 0.85x baseline");
  row(`baseline echo paced at ${half}/s`, pacedBase, null, `${pacedBase.lost} unanswered`);
  row(
    `ping/pong paced at ${half}/s (half of peak)`,
    paced,
    null,
    `target p99 < 2 ms; ${paced.lost} unanswered`,
  );
  row("reliable Data (Ack + echo), 64 in flight", data, base64);
}

// 4. Handshakes: distinct peers, each from its own source port.
{
  const [server, port] = await startServer(SERVER_CONFIG);
  const hs = await generate([
    "handshake",
    "--port",
    `${port}`,
    "--peers",
    `${HANDSHAKE_PEERS}`,
    "--concurrency",
    "32",
    "--seconds",
    quick ? "10" : "40",
  ]);
  await server.stop();
  row(`handshakes (${hs.ops} distinct peers)`, hs, null, "target >= 10,000/s");
}

// 4b. Keyed handshakes: distinct peers, each with its own key; signed request, signed response, X25519
// session keys, and the Ack of the response MAC'd in the session (the server counts the peer authenticated
// only then). Identities, X25519 keys and signed requests are made with the sockets, before the clock. A
// server of its own, so no address of an earlier row's peer is reused for a new peer.
{
  const [server, port] = await startServer(SERVER_CONFIG);
  const hs = await generate([
    "handshake",
    "--keyed",
    "--port",
    `${port}`,
    "--peers",
    `${KEYED_HANDSHAKE_PEERS}`,
    "--concurrency",
    "32",
    "--seconds",
    quick ? "10" : "30",
  ]);
  const stats = JSON.parse(await server.ask("stats"));
  await server.stop();
  const authenticated = stats.peers.authenticated as number;
  const refused = Object.values(stats.handshakesFailed as Record<string, number>).reduce((a, b) => a + b, 0);
  const setupUs = Math.round(hs.setupUsPerPeer as number);
  row(
    `keyed handshakes/s (${hs.ops} distinct keyed peers)`,
    hs,
    null,
    `target >= 3,000/s; ${authenticated} authenticated on the server, ${refused} refused, ` +
      `${stats.drops.bad_mac} bad_mac; requests pre-signed (${setupUs} µs/peer before the clock); ` +
      `server signature checked on the ${hs.verify}`,
  );
  raw.keyedServerStats = { peers: stats.peers, handshakesFailed: stats.handshakesFailed, drops: stats.drops };
}

// 5. Memory per registered idle peer, and after peers leave.
const memory: Record<string, unknown>[] = [];
{
  const [server, port] = await startServer(SERVER_CONFIG, ["--expose-gc"]);
  const before = JSON.parse(await server.ask("mem"));
  memory.push({ peers: 0, ...before });
  let registered = 0;
  for (const target of MEMORY_STEPS) {
    const hs = await generate([
      "handshake",
      "--port",
      `${port}`,
      "--peers",
      `${target - registered}`,
      "--concurrency",
      "32",
      "--seconds",
      "60",
    ]);
    registered += hs.ops;
    const m = JSON.parse(await server.ask("mem"));
    memory.push(m);
    rows.push({
      name: `memory with ${m.peers} idle peers`,
      rate: null,
      p50Ms: null,
      p99Ms: null,
      ratio: null,
      generatorCpu: null,
      note: `heap ${perPeer(m.heapUsed - before.heapUsed, m.peers)} B/peer, ` +
        `RSS ${perPeer(m.rss - before.rss, m.peers)} B/peer (target heap <= 1,500 B/peer)`,
    });
  }
  await server.stop();
}
{
  // Churn: peers that register and then Disconnect leave nothing behind.
  const [server, port] = await startServer(SERVER_CONFIG, ["--expose-gc"]);
  const before = JSON.parse(await server.ask("mem"));
  await generate([
    "handshake",
    "--port",
    `${port}`,
    "--peers",
    quick ? "2000" : "20000",
    "--concurrency",
    "32",
    "--disconnect",
    "--seconds",
    "60",
  ]);
  const after = JSON.parse(await server.ask("mem"));
  memory.push({ churn: true, before, after });
  rows.push({
    name: "memory after peers left (churn)",
    rate: null,
    p50Ms: null,
    p99Ms: null,
    ratio: null,
    generatorCpu: null,
    note: `${after.peers} peers left, heap ${signed(after.heapUsed - before.heapUsed)} B vs before`,
  });
  await server.stop();
}

function perPeer(bytes: number, peers: number): string {
  return peers > 0 ? Math.round(bytes / peers).toLocaleString("en-US") : "n/a";
}

function signed(n: number): string {
  return `${n >= 0 ? "+" : ""}${n.toLocaleString("en-US")}`;
}

const fmt = (n: number | null, digits = 0) =>
  n === null || Number.isNaN(n) ? "" : n.toLocaleString("en-US", { maximumFractionDigits: digits });
const table = [
  ["benchmark", "ops/s", "p50 ms", "p99 ms", "x baseline", "gen CPU", "note"],
  ...rows.map((r) => [
    r.name,
    fmt(r.rate),
    fmt(r.p50Ms, 3),
    fmt(r.p99Ms, 3),
    r.ratio === null ? "" : r.ratio.toFixed(2),
    r.generatorCpu === null ? "" : `${Math.round(r.generatorCpu * 100)}%`,
    r.note,
  ]),
];
const widths = table[0]!.map((_, i) => Math.max(...table.map((line) => line[i]!.length)));
for (const line of table) console.log(line.map((cell, i) => cell.padEnd(widths[i]!)).join("  ").trimEnd());

const results = {
  date: new Date().toISOString(),
  quick,
  deno: Deno.version,
  machine: { os: Deno.build.os, arch: Deno.build.arch, cpus: navigator.hardwareConcurrency },
  rows,
  memory,
  raw,
};
await Deno.writeTextFile(`${here}results.json`, JSON.stringify(results, null, 2) + "\n");
console.log(`\nwrote ${here}results.json`);
