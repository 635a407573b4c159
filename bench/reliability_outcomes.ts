/**
 * Reliability outcomes measured in virtual time: the real protocol core at both ends of the seeded simulated
 * network of `tests/sim.ts`, each scenario over many seeds (more than the tests run), counted rather than
 * asserted. Prints a markdown table and writes `bench/reliability_results.json`.
 *
 * ```sh
 * deno run -A bench/reliability_outcomes.ts           # the full run (about a minute on 2 vCPU)
 * deno run -A bench/reliability_outcomes.ts --quick   # fewer seeds, a smoke test (a few seconds)
 * deno run -A bench/reliability_outcomes.ts --only ae # only the scenarios with these letters
 * ```
 *
 * Scenarios (all times are virtual; `seeds x trials` says how many independent runs and how many counted
 * outcomes each has):
 * - a: 50 handshakes at 30 % loss each way, the spec's count-based schedule versus the adaptive policy;
 * - b: 50 handshakes at 30 % corruption each way: corrupt copies dropped (by reason) or acted on, and any peer
 *   registered with wrong data;
 * - c: 1,000 reliable Data at 2 % loss, 5 % duplication and jitter reordering, unordered and ordered, and a
 *   baseline with the reordering alone;
 * - d: the same 1,000 over Gilbert-Elliott burst loss;
 * - e: one 1 MiB message routed between two clients at 5 % loss;
 * - f: a 5 s blackhole inside a transfer (after a burst of sends, and under a steady sender), and a permanent
 *   blackhole (give-up time against the deadline, both policies);
 * - g: RTO convergence on a 200 ms RTT path and on a jittery one, and the backoff waits under total loss.
 *
 * A seed whose run throws (a livelock, a bug) is counted as a failure and printed with its seed on stderr, so
 * it can be replayed with `withSeeds([seed], ...)`; the run goes on.
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import type { Config } from "../src/config.ts";
import type { EndpointEvent } from "../src/core/endpoint.ts";
import { DROP_REASONS, type DropReason } from "../src/core/stats.ts";
import type { Json } from "../src/wire/mod.ts";
import { type LinkProfile, mulberry32, seeds, Sim, type SimEndpoint, sock, withSeeds } from "../tests/sim.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    quick: { type: "boolean", default: false },
    only: { type: "string", default: "abcdefg" },
  },
});
const QUICK = values.quick;
/** Scenario letters to run (`--only ce`), for working on one of them. */
const ONLY = new Set(values.only.toLowerCase());

/** Seeds per scenario, for the full run or `--quick`. */
const SEEDS = {
  handshakes: QUICK ? 20 : 200,
  corruption: QUICK ? 20 : 200,
  transfer: QUICK ? 5 : 100,
  burst: QUICK ? 5 : 100,
  big: QUICK ? 2 : 20,
  blackhole: QUICK ? 10 : 100,
  permanent: QUICK ? 10 : 100,
  rto: QUICK ? 10 : 100,
};

const SERVER = "192.0.2.1:8080";
const utf8 = new TextDecoder();
const NOWHERE = "203.0.113.50:9";
const HANDSHAKES = 50;
const MESSAGES = 1_000;

// ------------------------------------------------------------------ helpers

/** Nearest-rank percentile of `values` (`p` in [0, 1]); NaN when empty. */
function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.max(0, Math.ceil(p * sorted.length) - 1)]!;
}

function summary(
  values: readonly number[],
): { n: number; min: number; p50: number; p99: number; max: number } {
  return {
    n: values.length,
    min: values.length ? Math.min(...values) : NaN,
    p50: percentile(values, 0.5),
    p99: percentile(values, 0.99),
    max: values.length ? values.reduce((a, b) => Math.max(a, b), -Infinity) : NaN,
  };
}

/** A virtual duration for the table: ms below 10 s, else seconds. */
function ms(value: number): string {
  if (Number.isNaN(value)) return "-";
  // Virtual times near 1.7e12 ms carry about 1e-4 ms of floating-point error: round it away.
  if (Math.abs(value) < 10_000) return `${Math.round(value)} ms`;
  return `${(value / 1000).toFixed(2)} s`;
}

function int(n: number): string {
  return n.toLocaleString("en-US");
}

function pct(part: number, whole: number): string {
  if (whole === 0) return "-";
  const p = (100 * part) / whole;
  return `${p < 1 && p > 0 ? p.toFixed(2) : p.toFixed(1)} %`;
}

/** Calls `on(now, event)` for every event `host` produces from now on, with the virtual time it happened. */
function watch(sim: Sim, host: SimEndpoint, on: (now: number, event: EndpointEvent) => void): void {
  const endpoint = host.endpoint;
  const take = endpoint.takeEvents.bind(endpoint);
  endpoint.takeEvents = () => {
    const out = take();
    for (const event of out) on(sim.now, event);
    return out;
  };
}

/** Sets both directions between `host` and the server. */
function impair(sim: Sim, host: SimEndpoint, profile: Partial<LinkProfile>): void {
  sim.link(host.addr, SERVER, profile);
  sim.link(SERVER, host.addr, profile);
}

function clientAddr(i: number): string {
  return `198.51.100.${1 + i}:5000`;
}

interface Pair {
  sim: Sim;
  server: SimEndpoint;
  clients: SimEndpoint[];
}

/** A server and `count` clients, each connected over a clean network first (as the tests do). */
function connected(seed: number, count: number, config: Partial<Config> = {}, latencyMs = 10): Pair {
  const sim = new Sim({ seed, link: { latencyMs } });
  const server = sim.addEndpoint(SERVER, {
    config: { enableDiscovery: false, maxConnections: 1_000, ...config },
  });
  const clients: SimEndpoint[] = [];
  for (let i = 0; i < count; i++) {
    const c = sim.addEndpoint(clientAddr(i), { role: "client", config });
    sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
    clients.push(c);
  }
  sim.runFor(1_000);
  for (const c of clients) {
    if (c.eventsOf("connected").length !== 1) throw new Error(`${c.addr} did not connect on a clean network`);
  }
  return { sim, server, clients };
}

/** Runs `body` for every seed; a seed that throws is reported (with its seed) and returned in `errors`. */
function forSeeds(list: readonly number[], body: (seed: number) => void): { seed: number; error: string }[] {
  const errors: { seed: number; error: string }[] = [];
  for (const seed of list) {
    try {
      withSeeds([seed], body);
    } catch (error) {
      errors.push({ seed, error: error instanceof Error ? error.message : String(error) });
    }
  }
  return errors;
}

/** A seeded printable string of `length` characters. */
function text(seed: number, length: number): string {
  const rand = mulberry32(seed);
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_";
  let out = "";
  for (let i = 0; i < length; i++) out += alphabet[Math.floor(rand() * alphabet.length)];
  return out;
}

/** One row of the table, with the numbers behind it. */
interface Row {
  scenario: string;
  seeds: number;
  trials: number;
  success: number;
  failure: number;
  time: string;
  notes: string;
  data: Record<string, unknown>;
}

const rows: Row[] = [];
const timings: Record<string, number> = {};

function scenario(letter: string, name: string, run: () => Row[]): void {
  if (!ONLY.has(letter)) return;
  const started = performance.now();
  console.error(`${letter}: ${name} ...`);
  const out = run();
  const seconds = (performance.now() - started) / 1000;
  timings[letter] = Math.round(seconds * 10) / 10;
  console.error(`${letter}: done in ${seconds.toFixed(1)} s`);
  rows.push(...out);
}

// ------------------------------------------------------------------ a, b: handshakes

/** Called with the network and its hosts before the clients connect and after the 40 s. */
interface HandshakeHooks {
  before?: (sim: Sim, server: SimEndpoint, clients: SimEndpoint[]) => void;
  after?: (sim: Sim, server: SimEndpoint, clients: SimEndpoint[]) => void;
}

interface HandshakeRun {
  connectedMs: number[];
  failedMs: number[];
  failCodes: Record<string, number>;
  undecided: number;
  authenticated: number;
  datagrams: number;
  retransmissions: number;
  giveUps: number;
}

/**
 * 50 clients connect at once to one server over a link with `profile` both ways; runs 40 s (the handshake
 * deadline, then a heartbeat so that a server whose HandshakeResponse was never acked still hears from the
 * client).
 */
function handshakes(
  seed: number,
  profile: Partial<LinkProfile>,
  config: Partial<Config>,
  hooks: HandshakeHooks = {},
): HandshakeRun {
  const sim = new Sim({ seed, link: { latencyMs: 20, jitterMs: 10, ...profile } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false, ...config } });
  const run: HandshakeRun = {
    connectedMs: [],
    failedMs: [],
    failCodes: {},
    undecided: 0,
    authenticated: 0,
    datagrams: 0,
    retransmissions: 0,
    giveUps: 0,
  };
  const start = sim.now;
  const clients: SimEndpoint[] = [];
  for (let i = 0; i < HANDSHAKES; i++) {
    const c = sim.addEndpoint(clientAddr(i), { role: "client", config });
    watch(sim, c, (now, e) => {
      if (e.type === "connected") run.connectedMs.push(now - start);
      if (e.type === "connectFailed") {
        run.failedMs.push(now - start);
        run.failCodes[e.code] = (run.failCodes[e.code] ?? 0) + 1;
      }
    });
    clients.push(c);
  }
  hooks.before?.(sim, server, clients);
  for (const c of clients) sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(10_000);
  for (const c of clients) {
    if (c.eventsOf("connected").length === 0 && c.eventsOf("connectFailed").length === 0) run.undecided++;
  }
  sim.runFor(30_000);
  hooks.after?.(sim, server, clients);
  run.authenticated = server.endpoint.peers().filter((p) => p.state === "authenticated").length;
  run.datagrams = sim.counters.sent;
  for (const host of [server, ...clients]) {
    const s = host.endpoint.getStats(sim.now);
    run.retransmissions += s.retransmissions;
    run.giveUps += s.giveUps;
  }
  return run;
}

function handshakeRow(name: string, profile: Partial<LinkProfile>, config: Partial<Config>): Row {
  const list = seeds(SEEDS.handshakes);
  const connectedMs: number[] = [];
  const failedMs: number[] = [];
  const failCodes: Record<string, number> = {};
  let failed = 0;
  let undecided = 0;
  let authenticated = 0;
  let seedsAllOk = 0;
  let datagrams = 0;
  let retransmissions = 0;
  const errors = forSeeds(list, (seed) => {
    const run = handshakes(seed, profile, config);
    connectedMs.push(...run.connectedMs);
    failedMs.push(...run.failedMs);
    for (const [code, n] of Object.entries(run.failCodes)) failCodes[code] = (failCodes[code] ?? 0) + n;
    failed += HANDSHAKES - run.connectedMs.length;
    undecided += run.undecided;
    authenticated += run.authenticated;
    if (run.connectedMs.length === HANDSHAKES) seedsAllOk++;
    datagrams += run.datagrams;
    retransmissions += run.retransmissions;
  });
  const t = summary(connectedMs);
  const f = summary(failedMs);
  const total = list.length * HANDSHAKES;
  return {
    scenario: name,
    seeds: list.length,
    trials: HANDSHAKES,
    success: connectedMs.length,
    failure: total - connectedMs.length,
    time: `connected: median ${ms(t.p50)}, p99 ${ms(t.p99)}, max ${ms(t.max)}`,
    notes: `${pct(total - connectedMs.length, total)} failed` +
      (failedMs.length ? ` (given up at ${ms(f.min)}..${ms(f.max)})` : "") +
      `; all ${HANDSHAKES} ok in ${seedsAllOk}/${list.length} seeds; server authenticated ` +
      `${int(authenticated)}/${int(total)} by 40 s; ${
        (datagrams / total).toFixed(1)
      } datagrams per handshake` +
      (errors.length ? `; ${errors.length} seeds threw` : ""),
    data: {
      connectedMs: t,
      failedMs: f,
      failCodes,
      failed,
      undecidedAt10s: undecided,
      authenticatedBy40s: authenticated,
      seedsAllOk,
      datagrams,
      retransmissions,
      errors,
    },
  };
}

function corruptionRow(): Row {
  const list = seeds(SEEDS.corruption, 500);
  const connectedMs: number[] = [];
  let connectedCount = 0;
  let corruptArrivals = 0;
  let corruptActedOn = 0;
  const corruptDrops: Record<string, number> = {};
  let cleanDrops = 0;
  let wrongPeers = 0;
  let wrongLinks = 0;
  let strangers = 0;
  let authenticated = 0;
  let corruptedCopies = 0;
  let seedsAllOk = 0;
  const actedOnSeeds: number[] = [];
  const actedOn: Record<string, number> = {};
  const errors = forSeeds(list, (seed) => {
    let actedOnThisSeed = 0;
    const run = handshakes(seed, { corrupt: 0.3 }, {}, {
      before(sim, server, clients) {
        // Every array an endpoint sends; an arriving array that is not one of them is a corrupted copy.
        const sent = new WeakSet<Uint8Array>();
        const transmit = sim.transmit.bind(sim);
        sim.transmit = (from, to, bytes) => {
          sent.add(bytes);
          transmit(from, to, bytes);
        };
        for (const host of [server, ...clients]) {
          const endpoint = host.endpoint;
          const handle = endpoint.handleDatagram.bind(endpoint);
          endpoint.handleDatagram = (now, from, bytes) => {
            const intact = sent.has(bytes);
            const before = endpoint.getStats(now);
            handle(now, from, bytes);
            const after = endpoint.getStats(now);
            if (intact) {
              cleanDrops += after.droppedTotal - before.droppedTotal;
              return;
            }
            corruptArrivals++;
            const accepted = after.processed + after.duplicates - before.processed - before.duplicates;
            corruptActedOn += accepted;
            actedOnThisSeed += accepted;
            if (accepted > 0) {
              // What got through: the type it decoded as, and whether it carried a sum at all.
              const textOf = new TextDecoder().decode(bytes);
              const type = /"message_type":"([^"]*)"/.exec(textOf)?.[1] ?? "?";
              const key = `${type} ${/,"sum":"/.test(textOf) ? "with" : "without"} sum to ${
                host === server ? "server" : "client"
              }`;
              actedOn[key] = (actedOn[key] ?? 0) + accepted;
            }
            for (const reason of DROP_REASONS) {
              const n = after.drops[reason as DropReason] - before.drops[reason as DropReason];
              if (n > 0) corruptDrops[reason] = (corruptDrops[reason] ?? 0) + n;
            }
          };
        }
      },
      after(sim, server, clients) {
        // Is every registration exactly what its client sent, and every link exactly the server?
        corruptedCopies += sim.counters.corrupted;
        const ids = new Set(clients.map((c) => c.id));
        for (const p of server.endpoint.peers()) if (!ids.has(p.id)) strangers++;
        const serverNode = server.endpoint.node;
        const serverAddr = sock(SERVER);
        for (const c of clients) {
          const p = server.endpoint.peer(c.id);
          const mine = c.endpoint.node;
          if (
            p && (p.addr !== c.addr || p.name !== mine.name || p.version !== mine.version ||
              p.listenAddr !== mine.listen_addr ||
              JSON.stringify(p.capabilities) !== JSON.stringify(mine.capabilities) ||
              JSON.stringify(p.metadata) !== JSON.stringify(mine.metadata) || p.network !== "p2p_default")
          ) wrongPeers++;
          for (const e of c.eventsOf("connected")) {
            const n = e.node;
            if (
              n.id !== serverNode.id || n.name !== serverNode.name || n.version !== serverNode.version ||
              n.listen_addr !== serverNode.listen_addr || n.metadata.network_id !== "p2p_default" ||
              e.addr.hostname !== serverAddr.hostname || e.addr.port !== serverAddr.port
            ) wrongLinks++;
          }
        }
      },
    });
    connectedMs.push(...run.connectedMs);
    connectedCount += run.connectedMs.length;
    authenticated += run.authenticated;
    if (run.connectedMs.length === HANDSHAKES) seedsAllOk++;
    if (actedOnThisSeed > 0) actedOnSeeds.push(seed);
  });
  const t = summary(connectedMs);
  const total = list.length * HANDSHAKES;
  const drops = Object.entries(corruptDrops).sort((a, b) => b[1] - a[1]).map(([r, n]) => `${r} ${int(n)}`)
    .join(", ");
  return {
    scenario: "b. 50 handshakes, 30 % corruption each way (adaptive)",
    seeds: list.length,
    trials: HANDSHAKES,
    success: connectedCount,
    failure: total - connectedCount,
    time: `connected: median ${ms(t.p50)}, p99 ${ms(t.p99)}, max ${ms(t.max)}`,
    notes:
      `${int(corruptArrivals)} corrupt copies arrived, ${int(corruptActedOn)} acted on (${
        Object.entries(actedOn).map(([k, n]) => `${k}: ${n}`).join(", ") || "none"
      }); dropped: ${drops}; ` +
      `peers with wrong data: ${wrongPeers}, wrong links: ${wrongLinks}, unknown peers: ${strangers}; ` +
      `server authenticated ${int(authenticated)}/${int(total)} by 40 s` +
      (errors.length ? `; ${errors.length} seeds threw` : ""),
    data: {
      connectedMs: t,
      seedsAllOk,
      corruptedCopies,
      corruptArrivals,
      corruptActedOn,
      corruptActedOnByKind: actedOn,
      actedOnSeeds,
      corruptDropsByReason: corruptDrops,
      dropsOfIntactCopies: cleanDrops,
      peersWithWrongData: wrongPeers,
      linksWithWrongData: wrongLinks,
      unknownPeers: strangers,
      authenticatedBy40s: authenticated,
      errors,
    },
  };
}

// ------------------------------------------------------------------ c, d: streams of Data

interface TransferTotals {
  seeds: number;
  messages: number;
  exactlyOnce: number;
  missing: number;
  deliveredTwice: number;
  seedsInOrder: number;
  seedsClean: number;
  latencies: number[];
  completionMs: number[];
  retransmissions: number;
  nacksSent: number;
  nackResends: number;
  duplicatesSeen: number;
  giveUps: number;
  datagrams: number;
  lostBurst: number;
  lostRandom: number;
  burstRuns: number;
  burstLost: number;
  resends: number;
  resendsFirstArrived: number;
}

function newTotals(): TransferTotals {
  return {
    seeds: 0,
    messages: 0,
    exactlyOnce: 0,
    missing: 0,
    deliveredTwice: 0,
    seedsInOrder: 0,
    seedsClean: 0,
    latencies: [],
    completionMs: [],
    retransmissions: 0,
    nacksSent: 0,
    nackResends: 0,
    duplicatesSeen: 0,
    giveUps: 0,
    datagrams: 0,
    lostBurst: 0,
    lostRandom: 0,
    burstRuns: 0,
    burstLost: 0,
    resends: 0,
    resendsFirstArrived: 0,
  };
}

/**
 * 1,000 reliable Data from a connected client to the server over `profile` both ways, sent in bursts of 50
 * every 20 ms (a sender producing over time); runs 60 s. Latency: from `send()` to the server's `data` event
 * (queueing behind the 64-message window included).
 */
function transfer(
  seed: number,
  ordered: boolean,
  profile: Partial<LinkProfile>,
  totals: TransferTotals,
): void {
  const { sim, server, clients } = connected(seed, 1);
  const client = clients[0]!;
  impair(sim, client, profile);
  const sentAt: number[] = [];
  const count = new Array<number>(MESSAGES).fill(0);
  const order: number[] = [];
  watch(sim, server, (now, e) => {
    if (e.type !== "data") return;
    const index = (e.payload as { index: number }).index;
    if (count[index]! === 0) totals.latencies.push(now - sentAt[index]!);
    count[index]!++;
    order.push(index);
  });
  const ids = new Set<string>();
  let lastDelivered = -Infinity;
  watch(sim, client, (now, e) => {
    if (e.type === "delivered" && ids.has(e.id)) lastDelivered = Math.max(lastDelivered, now);
  });
  const before = client.endpoint.getStats(sim.now);
  const serverBefore = server.endpoint.getStats(sim.now);
  const sentBefore = sim.counters.sent;
  const traceStart = sim.trace.length;
  const start = sim.now;
  for (let index = 0; index < MESSAGES; index++) {
    sentAt[index] = sim.now;
    const msg = sim.act(
      client,
      (ep, now) => ep.send(now, sock(SERVER), "Data", { index } as Json, { reliable: true, ordered }),
    );
    ids.add(msg.id);
    if (index % 50 === 49) sim.runFor(20);
  }
  sim.runFor(60_000);
  const after = client.endpoint.getStats(sim.now);
  const serverAfter = server.endpoint.getStats(sim.now);
  totals.seeds++;
  totals.messages += MESSAGES;
  const once = count.filter((n) => n === 1).length;
  totals.exactlyOnce += once;
  totals.missing += count.filter((n) => n === 0).length;
  totals.deliveredTwice += count.filter((n) => n > 1).length;
  const inOrder = order.every((v, i) => v === i) && order.length === MESSAGES;
  if (inOrder) totals.seedsInOrder++;
  const giveUps = after.giveUps - before.giveUps;
  if (once === MESSAGES && giveUps === 0 && (!ordered || inOrder)) totals.seedsClean++;
  if (lastDelivered > -Infinity) totals.completionMs.push(lastDelivered - start);
  totals.retransmissions += after.retransmissions - before.retransmissions;
  totals.nackResends += after.nackResends - before.nackResends;
  totals.nacksSent += serverAfter.nacksSent - serverBefore.nacksSent;
  totals.duplicatesSeen += serverAfter.duplicates - serverBefore.duplicates;
  totals.giveUps += giveUps;
  totals.datagrams += sim.counters.sent - sentBefore;
  totals.lostBurst += sim.counters.lost.burst;
  totals.lostRandom += sim.counters.lost.random;
  // Resends of Data, and how many of them were of a message whose first copy was not lost (spurious: the
  // copy was late, reordered, or its Ack was lost).
  const firstArrived = new Map<string, boolean>();
  for (const entry of sim.trace.slice(traceStart)) {
    if (entry.from !== client.addr) continue;
    const head = utf8.decode(entry.bytes.subarray(0, 80));
    if (!head.includes('"message_type":"Data"')) continue;
    const id = head.slice(7, 43); // the encoder writes `{"id":"<uuid>"` first
    const first = firstArrived.get(id);
    if (first === undefined) {
      firstArrived.set(id, entry.lost === null);
      continue;
    }
    totals.resends++;
    if (first) totals.resendsFirstArrived++;
  }
  // Burst lengths, per direction: runs of consecutive datagrams lost to the bursts.
  const run = new Map<string, number>();
  for (const entry of sim.trace) {
    const key = `${entry.from}>${entry.to}`;
    if (entry.lost === "burst") {
      if ((run.get(key) ?? 0) === 0) totals.burstRuns++;
      run.set(key, (run.get(key) ?? 0) + 1);
      totals.burstLost++;
    } else if (entry.lost === null) run.set(key, 0);
  }
}

function transferRow(name: string, ordered: boolean, profile: Partial<LinkProfile>, base: number): Row {
  const list = seeds(SEEDS.transfer, base);
  const totals = newTotals();
  const errors = forSeeds(list, (seed) => transfer(seed, ordered, profile, totals));
  return streamRow(name, list.length, ordered, totals, errors);
}

function streamRow(
  name: string,
  seedCount: number,
  ordered: boolean,
  t: TransferTotals,
  errors: { seed: number; error: string }[],
): Row {
  const lat = summary(t.latencies);
  const done = summary(t.completionMs);
  const total = seedCount * MESSAGES;
  const per1000 = (n: number) => (t.seeds ? (n / t.seeds).toFixed(1) : "-");
  return {
    scenario: name,
    seeds: seedCount,
    trials: MESSAGES,
    success: t.exactlyOnce,
    failure: total - t.exactlyOnce,
    time: `latency: median ${ms(lat.p50)}, p99 ${ms(lat.p99)}; all acked: median ${ms(done.p50)}, p99 ` +
      `${ms(done.p99)}`,
    notes: `delivered exactly once: ${int(t.exactlyOnce)}, twice: ${t.deliveredTwice}, never: ${t.missing}` +
      (ordered ? `; in order in ${t.seedsInOrder}/${seedCount} seeds` : "") +
      `; per 1,000 messages: ${per1000(t.retransmissions)} timed resends, ${per1000(t.nacksSent)} NACKs, ` +
      `${per1000(t.nackResends)} NACK resends (${
        pct(t.resendsFirstArrived, t.resends)
      } of all resends were ` +
      `of a message whose first copy was not lost), ${per1000(t.duplicatesSeen)} duplicates suppressed; ` +
      `give-ups ${t.giveUps}` + (errors.length ? `; ${errors.length} seeds threw` : ""),
    data: {
      ...t,
      latencies: undefined,
      completionMs: done,
      latencyMs: lat,
      burstMeanLength: t.burstRuns ? t.burstLost / t.burstRuns : null,
      errors,
    },
  };
}

// ------------------------------------------------------------------ e: 1 MiB

function bigRow(): Row {
  const list = seeds(SEEDS.big);
  const size = 1_048_576 - 400;
  const deliveredMs: number[] = [];
  const ackedMs: number[] = [];
  const datagrams: number[] = [];
  const fragmentDatagrams: number[] = [];
  let largest = 0;
  let intact = 0;
  let retransmissions = 0;
  let nackResends = 0;
  let fragments = 0;
  const errors = forSeeds(list, (seed) => {
    const { sim, server, clients } = connected(seed, 2);
    const [a, b] = clients as [SimEndpoint, SimEndpoint];
    impair(sim, a, { latencyMs: 10, jitterMs: 5, loss: 0.05 });
    impair(sim, b, { latencyMs: 10, jitterMs: 5, loss: 0.05 });
    const data = text(seed, size);
    const start = sim.now;
    const first = sim.trace.length;
    let got = -1;
    let gotData: string | null = null;
    let gotCount = 0;
    watch(sim, b, (now, e) => {
      if (e.type !== "data") return;
      gotCount++;
      if (got < 0) got = now - start;
      gotData = (e.payload as { data: string }).data;
    });
    let acked = -1;
    const msg = sim.act(
      a,
      (ep, now) => ep.send(now, sock(SERVER), "Data", { to: b.id, data }, { reliable: true }),
    );
    watch(sim, a, (now, e) => {
      if (e.type === "delivered" && e.id === msg.id && acked < 0) acked = now - start;
    });
    sim.runFor(60_000);
    if (got >= 0) deliveredMs.push(got);
    if (acked >= 0) ackedMs.push(acked);
    if (gotCount === 1 && gotData === data) intact++;
    const trace = sim.trace.slice(first);
    datagrams.push(trace.length);
    let frags = 0;
    for (const entry of trace) {
      largest = Math.max(largest, entry.bytes.length);
      if (entry.bytes.length > 1_000) frags++;
    }
    fragmentDatagrams.push(frags);
    for (const host of [a, b, server]) {
      const s = host.endpoint.getStats(sim.now);
      retransmissions += s.retransmissions;
      nackResends += s.nackResends;
      fragments += s.fragmentsSent;
    }
  });
  const d = summary(deliveredMs);
  const k = summary(ackedMs);
  const n = summary(datagrams);
  return {
    scenario: "e. 1 MiB Data routed client -> server -> client, 5 % loss each way",
    seeds: list.length,
    trials: 1,
    success: intact,
    failure: list.length - intact,
    time: `delivered: median ${ms(d.p50)}, max ${ms(d.max)}; sender's Ack: median ${ms(k.p50)}, max ${
      ms(k.max)
    }`,
    notes:
      `${int(Math.round(fragments / list.length))} fragments per run (two hops), ${int(n.p50)} datagrams ` +
      `(median, all kinds), largest datagram ${int(largest)} bytes; per run ${
        int(Math.round(retransmissions / list.length))
      } timed resends and ${int(Math.round(nackResends / list.length))} NACK resends` +
      (errors.length ? `; ${errors.length} seeds threw` : ""),
    data: {
      bytes: size,
      deliveredMs: d,
      ackedMs: k,
      datagrams: n,
      fragmentSizedDatagrams: summary(fragmentDatagrams),
      largestDatagram: largest,
      fragmentsSent: fragments,
      retransmissions,
      nackResends,
      errors,
    },
  };
}

// ------------------------------------------------------------------ f: blackholes

function blackholeRow(): Row {
  const list = seeds(SEEDS.blackhole, 200);
  const afterMs: number[] = [];
  const firstAfterMs: number[] = [];
  let complete = 0;
  let giveUps = 0;
  const errors = forSeeds(list, (seed) => {
    const { sim, server, clients } = connected(seed, 1);
    const client = clients[0]!;
    impair(sim, client, { latencyMs: 10, loss: 0.02 });
    const count = new Array<number>(500).fill(0);
    let holeEnd = Infinity;
    let lastNew = -Infinity;
    let firstAfter = Infinity;
    watch(sim, server, (now, e) => {
      if (e.type !== "data") return;
      const index = (e.payload as { index: number }).index;
      if (count[index]! === 0) lastNew = now;
      count[index]!++;
      if (now >= holeEnd && firstAfter === Infinity) firstAfter = now;
    });
    for (let index = 0; index < 500; index++) {
      sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", { index }, { reliable: true }));
      if (index === 200) {
        sim.runFor(50);
        sim.blackholeFor(client.addr, SERVER, 5_000);
        sim.blackholeFor(SERVER, client.addr, 5_000);
        holeEnd = sim.now + 5_000;
        sim.runFor(5_000);
      }
    }
    sim.runFor(40_000);
    const ok = count.every((n) => n === 1);
    const g = client.eventsOf("gaveUp").length;
    giveUps += g;
    if (ok && g === 0) {
      complete++;
      afterMs.push(lastNew - holeEnd);
    }
    if (firstAfter < Infinity) firstAfterMs.push(firstAfter - holeEnd);
  });
  const t = summary(afterMs);
  const f = summary(firstAfterMs);
  return {
    scenario: "f. 500 Data, 2 % loss, 5 s blackhole both ways after message 200",
    seeds: list.length,
    trials: 1,
    success: complete,
    failure: list.length - complete,
    time: `done after the blackhole ends: median ${ms(t.p50)}, p99 ${ms(t.p99)}, max ${ms(t.max)}`,
    notes: `first delivery after it ends: median ${ms(f.p50)}, max ${ms(f.max)}; all 500 exactly once ` +
      `in ${complete}/${list.length}; give-ups ${giveUps}` +
      (errors.length ? `; ${errors.length} seeds threw` : ""),
    data: { completeAfterHoleMs: t, firstDeliveryAfterHoleMs: f, giveUps, errors },
  };
}

/**
 * A steady sender (one Data every 20 ms for 12 s, 600 in all, 2 % loss) with a 5 s blackhole both ways from
 * 3 s to 8 s: messages pile up in flight and in the queue while their timers back off. Measured: from the end
 * of the blackhole until every message sent before it ended was delivered.
 */
function steadyBlackholeRow(): Row {
  const list = seeds(SEEDS.blackhole, 250);
  const backlogMs: number[] = [];
  const firstAfterMs: number[] = [];
  let complete = 0;
  let giveUps = 0;
  const errors = forSeeds(list, (seed) => {
    const { sim, server, clients } = connected(seed, 1);
    const client = clients[0]!;
    impair(sim, client, { latencyMs: 10, loss: 0.02 });
    const start = sim.now;
    const holeEnd = start + 8_000;
    sim.blackhole(client.addr, SERVER, start + 3_000, holeEnd);
    sim.blackhole(SERVER, client.addr, start + 3_000, holeEnd);
    const total = 600;
    const sentAt: number[] = [];
    const firstAt = new Array<number>(total).fill(Infinity);
    const count = new Array<number>(total).fill(0);
    watch(sim, server, (now, e) => {
      if (e.type !== "data") return;
      const index = (e.payload as { index: number }).index;
      if (count[index]! === 0) firstAt[index] = now;
      count[index]!++;
    });
    for (let index = 0; index < total; index++) {
      sim.runUntil(start + index * 20);
      sentAt[index] = sim.now;
      sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", { index }, { reliable: true }));
    }
    sim.runFor(40_000);
    const g = client.eventsOf("gaveUp").length;
    giveUps += g;
    if (count.every((n) => n === 1) && g === 0) complete++;
    let backlog = -Infinity;
    let firstAfter = Infinity;
    for (let i = 0; i < total; i++) {
      if (sentAt[i]! < holeEnd) backlog = Math.max(backlog, firstAt[i]!);
      if (firstAt[i]! >= holeEnd) firstAfter = Math.min(firstAfter, firstAt[i]!);
    }
    if (backlog < Infinity) backlogMs.push(backlog - holeEnd);
    if (firstAfter < Infinity) firstAfterMs.push(firstAfter - holeEnd);
  });
  const t = summary(backlogMs);
  const f = summary(firstAfterMs);
  return {
    scenario: "f. steady sender (600 Data, one per 20 ms), 2 % loss, 5 s blackhole both ways at 3..8 s",
    seeds: list.length,
    trials: 1,
    success: complete,
    failure: list.length - complete,
    time: `backlog delivered after the blackhole ends: median ${ms(t.p50)}, p99 ${ms(t.p99)}, max ${
      ms(t.max)
    }`,
    notes: `first delivery after it ends: median ${ms(f.p50)}, max ${ms(f.max)}; all 600 exactly once in ` +
      `${complete}/${list.length}; give-ups ${giveUps}` +
      (errors.length ? `; ${errors.length} seeds threw` : ""),
    data: { backlogAfterHoleMs: t, firstDeliveryAfterHoleMs: f, giveUps, errors },
  };
}

function permanentRows(): Row[] {
  const list = seeds(SEEDS.permanent, 900);
  const out: Row[] = [];
  for (const policy of ["adaptive", "schedule"] as const) {
    const giveUpMs: number[] = [];
    const tries: number[] = [];
    let onTime = 0;
    const reasons: Record<string, number> = {};
    const handshakeMs: number[] = [];
    const handshakeTries: number[] = [];
    const deadlineMs = policy === "adaptive" ? 30_000 : 3_500;
    const handshakeDeadlineMs = policy === "adaptive" ? 10_000 : 3_500;
    const reason = policy === "adaptive" ? "deadline" : "tries";
    const errors = forSeeds(list, (seed) => {
      const { sim, clients } = connected(seed, 1, { retransmitPolicy: policy });
      const client = clients[0]!;
      impair(sim, client, { loss: 1 });
      const start = sim.now;
      watch(sim, client, (now, e) => {
        if (e.type !== "gaveUp") return;
        giveUpMs.push(now - start);
        tries.push(e.tries);
        reasons[e.reason] = (reasons[e.reason] ?? 0) + 1;
        if (Math.abs(now - start - deadlineMs) < 0.01 && e.reason === reason) onTime++;
      });
      for (let i = 0; i < 5; i++) {
        sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", i, { reliable: true }));
      }
      sim.runFor(31_000);
      // A handshake towards an address where nothing answers.
      const lone = new Sim({ seed });
      const c = lone.addEndpoint("198.51.100.200:5000", {
        role: "client",
        config: { retransmitPolicy: policy },
      });
      const t0 = lone.now;
      watch(lone, c, (now, e) => {
        if (e.type === "connectFailed") handshakeMs.push(now - t0);
      });
      lone.act(c, (ep, now) => ep.connect(now, sock(NOWHERE)));
      lone.runFor(15_000);
      handshakeTries.push(lone.trace.filter((e) => e.from === c.addr).length);
    });
    const g = summary(giveUpMs);
    const tr = summary(tries);
    const h = summary(handshakeMs);
    const ht = summary(handshakeTries);
    const deadline = policy === "adaptive" ? "delivery_timeout 30 s" : "schedule 500+1000+2000 ms";
    const handshakesOnTime = handshakeMs.filter((t) => Math.abs(t - handshakeDeadlineMs) < 0.01).length;
    const total = list.length * 5;
    out.push({
      scenario: `f. permanent blackhole, 5 reliable Data and a handshake (${policy})`,
      seeds: list.length,
      trials: 5,
      success: onTime,
      failure: total - onTime,
      time: `Data given up at ${ms(g.min)}..${ms(g.max)} (${deadline}); handshake failed at ` +
        `${ms(h.min)}..${ms(h.max)}`,
      notes:
        `success: given up exactly at the deadline, with the gaveUp event (${
          Object.entries(reasons).map(([r, n]) => `${r} ${n}`).join(", ")
        }); tries per message ${tr.min}..${tr.max}; handshakes failed on time ${handshakesOnTime}/${list.length}, ` +
        `after ${ht.min}..${ht.max} tries` + (errors.length ? `; ${errors.length} seeds threw` : ""),
      data: {
        giveUpMs: g,
        onTime,
        tries: tr,
        reasons,
        handshakeFailedMs: h,
        handshakesOnTime,
        handshakeTries: ht,
        errors,
      },
    });
  }
  return out;
}

// ------------------------------------------------------------------ g: RTO

function rtoRows(): Row[] {
  const list = seeds(SEEDS.rto, 300);
  const srtt: number[] = [];
  const rttvar: number[] = [];
  const rto: number[] = [];
  const samplesToConverge: number[] = [];
  const waits: number[][] = [];
  const tries: number[] = [];
  const giveUpMs: number[] = [];
  let converged = 0;
  let backoffOk = 0;
  const backoffBad: number[] = [];
  const errors = forSeeds(list, (seed) => {
    const { sim, clients } = connected(seed, 1, {}, 100); // RTT 200 ms
    const client = clients[0]!;
    let first = -1;
    for (let i = 0; i < 40; i++) {
      sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", i, { reliable: true }));
      sim.runFor(250);
      const path = client.endpoint.path(sock(SERVER))!;
      if (first < 0 && path.rtoMs <= 210) first = path.samples;
    }
    const path = client.endpoint.path(sock(SERVER))!;
    srtt.push(path.srttMs!);
    rttvar.push(path.rttvarMs!);
    rto.push(path.rtoMs);
    if (first >= 0) {
      converged++;
      samplesToConverge.push(first);
    }
    impair(sim, client, { loss: 1 });
    const start = sim.now;
    const rtoAtStart = path.rtoMs;
    const msg = sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", "lost", { reliable: true }));
    let gaveUpAt = NaN;
    watch(sim, client, (now, e) => {
      if (e.type === "gaveUp" && e.id === msg.id) {
        gaveUpAt = now - start;
        giveUpMs.push(gaveUpAt);
        tries.push(e.tries);
      }
    });
    sim.runFor(31_000);
    const times = sim.sentBy(client.addr).filter((t) => t.msg.id === msg.id).map((t) => t.at);
    // Expected: the first wait is the RTO; wait i after it is base = min(rto * 2^i, 2,000 ms) with jitter
    // inside the cap: [base, min(1.25 x base, 2,000)] below the cap, [1,750, 2,000] at it.
    let ok = Math.abs(gaveUpAt - 30_000) < 0.01;
    times.forEach((t, i) => {
      if (i === 0) return;
      const wait = t - times[i - 1]!;
      (waits[i - 1] ??= []).push(wait);
      const base = Math.min(rtoAtStart * 2 ** (i - 1), 2_000);
      const [low, high] = i === 1
        ? [base, base]
        : base < 2_000
        ? [base, Math.min(base * 1.25, 2_000)]
        : [1_750, 2_000];
      if (wait < low - 0.01 || wait > high + 0.01) ok = false;
    });
    if (ok) backoffOk++;
    else backoffBad.push(seed);
  });
  const s = summary(srtt);
  const r = summary(rto);
  const v = summary(rttvar);
  const c = summary(samplesToConverge);
  const waitText = waits.map((w) => {
    const lo = Math.round(Math.min(...w));
    const hi = Math.round(Math.max(...w));
    return lo === hi ? `${lo}` : `${lo}-${hi}`;
  });
  const g = summary(giveUpMs);
  const out: Row[] = [{
    scenario: "g. RTO on a 200 ms RTT path: 40 Data, one every 250 ms",
    seeds: list.length,
    trials: 1,
    success: converged,
    failure: list.length - converged,
    time: `final srtt ${s.min.toFixed(1)}..${s.max.toFixed(1)} ms, rto ${r.min.toFixed(1)}..${
      r.max.toFixed(1)
    } ms`,
    notes:
      `rttvar ${v.min.toFixed(2)}..${
        v.max.toFixed(2)
      } ms; rto within 5 % of the RTT after ${c.min}..${c.max} ` +
      `samples (the handshake's included)` + (errors.length ? `; ${errors.length} seeds threw` : ""),
    data: { srttMs: s, rttvarMs: v, rtoMs: r, samplesToConverge: c, errors },
  }, {
    scenario: "g. backoff under total loss after convergence (one Data)",
    seeds: list.length,
    trials: 1,
    success: backoffOk,
    failure: list.length - backoffOk,
    time: `given up at ${ms(g.min)}..${ms(g.max)}`,
    notes:
      `success: every wait within [base, min(1.25 x base, 2,000)] below the cap and [1,750, 2,000] at it, ` +
      `base = min(rto x 2^i, 2,000 ms), and given up at ` +
      `30 s; waits (ms, range over seeds): ${waitText.join(", ")}; ${summary(tries).min}..${
        summary(tries).max
      } ` +
      `tries`,
    data: {
      waitsMs: waits.map((w) => summary(w)),
      giveUpMs: g,
      tries: summary(tries),
      seedsOutOfBounds: backoffBad,
    },
  }];

  // A jittery path (RTT 80..118 ms): how close the RTO sits and how many resends are spurious.
  const jSrtt: number[] = [];
  const jRto: number[] = [];
  const spurious: number[] = [];
  const jErrors = forSeeds(list, (seed) => {
    const { sim, clients } = connected(seed, 1);
    const client = clients[0]!;
    impair(sim, client, { latencyMs: 40, jitterMs: 20 });
    for (let i = 0; i < 10; i++) {
      sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", i, { reliable: true }));
      sim.runFor(200);
    }
    const learned = client.endpoint.getStats(sim.now).retransmissions;
    for (let i = 0; i < 100; i++) {
      sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", i, { reliable: true }));
      sim.runFor(200);
    }
    const path = client.endpoint.path(sock(SERVER))!;
    jSrtt.push(path.srttMs!);
    jRto.push(path.rtoMs);
    spurious.push(client.endpoint.getStats(sim.now).retransmissions - learned);
  });
  const js = summary(jSrtt);
  const jr = summary(jRto);
  const sp = summary(spurious);
  const sum = spurious.reduce((a, b) => a + b, 0);
  out.push({
    scenario: "g. RTO on a jittery path (RTT 80..118 ms): 100 Data, one every 200 ms",
    seeds: list.length,
    trials: 100,
    success: list.length * 100 - sum,
    failure: sum,
    time: `final srtt ${js.min.toFixed(1)}..${js.max.toFixed(1)} ms, rto ${jr.min.toFixed(1)}..${
      jr.max.toFixed(1)
    } ms`,
    notes: `failures are spurious resends (sent again although no copy was lost): ${sp.p50} median, ` +
      `${sp.max} at most per 100 messages` + (jErrors.length ? `; ${jErrors.length} seeds threw` : ""),
    data: { srttMs: js, rtoMs: jr, spuriousPer100: sp, errors: jErrors },
  });
  return out;
}

// ------------------------------------------------------------------ run

const started = performance.now();

scenario("a", "handshakes at 30 % loss, schedule versus adaptive", () => [
  handshakeRow(
    'a. 50 handshakes, 30 % loss each way, retransmit_policy "schedule"',
    { loss: 0.3 },
    { retransmitPolicy: "schedule" },
  ),
  handshakeRow('a. 50 handshakes, 30 % loss each way, "adaptive" (default)', { loss: 0.3 }, {}),
]);

scenario("b", "handshakes at 30 % corruption", () => [corruptionRow()]);

const STREAM: Partial<LinkProfile> = { latencyMs: 10, jitterMs: 30, loss: 0.02, duplicate: 0.05 };
scenario("c", "1,000 Data at loss, duplication and reordering", () => [
  transferRow(
    "c. baseline: 1,000 reliable Data, no loss or duplication, 10-40 ms one way (unordered)",
    false,
    { latencyMs: 10, jitterMs: 30 },
    1,
  ),
  transferRow("c. 1,000 reliable Data, 2 % loss, 5 % dup, 10-40 ms one way (unordered)", false, STREAM, 1),
  transferRow("c. 1,000 ordered Data, same network", true, STREAM, 100),
]);

scenario("d", "1,000 Data over Gilbert-Elliott burst loss", () => {
  const list = seeds(SEEDS.burst, 700);
  const totals = newTotals();
  const profile = { latencyMs: 10, jitterMs: 5, burst: { p: 0.02, r: 0.33 } };
  const errors = forSeeds(list, (seed) => transfer(seed, false, profile, totals));
  const row = streamRow(
    "d. 1,000 reliable Data, Gilbert-Elliott bursts (p 0.02, r 0.33), 10-15 ms one way",
    list.length,
    false,
    totals,
    errors,
  );
  const lossRate = totals.lostBurst / Math.max(1, totals.datagrams);
  row.notes += `; network lost ${pct(totals.lostBurst, totals.datagrams)} of datagrams in bursts of ` +
    `${(totals.burstLost / Math.max(1, totals.burstRuns)).toFixed(2)} on average (bursts are counted in ` +
    `datagrams, not time: on a quiet link one burst spans retries seconds apart, hence the tail)`;
  row.data.lossRate = lossRate;
  return [row];
});

scenario("e", "1 MiB at 5 % loss", () => [bigRow()]);
scenario("f", "blackholes", () => [blackholeRow(), steadyBlackholeRow(), ...permanentRows()]);
scenario("g", "RTO convergence and backoff", () => rtoRows());

const wallSeconds = (performance.now() - started) / 1000;

function cell(value: string): string {
  return value.replaceAll("|", "\\|");
}

const header = "| scenario | seeds x trials | success | failure | time (virtual) | notes |";
const lines = [header, "| --- | --- | --- | --- | --- | --- |"];
for (const r of rows) {
  lines.push(
    `| ${cell(r.scenario)} | ${r.seeds} x ${int(r.trials)} | ${int(r.success)} | ${int(r.failure)} | ` +
      `${cell(r.time)} | ${cell(r.notes)} |`,
  );
}
console.log(lines.join("\n"));

let cpuModel: string | null = null;
try {
  cpuModel = /model name\s*:\s*(.*)/.exec(Deno.readTextFileSync("/proc/cpuinfo"))?.[1] ?? null;
} catch {
  // Not Linux, or not readable: leave it out.
}
/** The checked-out commit and whether src/ or tests/ differ from it, when this runs inside a git checkout. */
function gitState(): { commit: string; dirty: boolean } | null {
  try {
    const dir = new URL("..", import.meta.url).pathname;
    const git = (...args: string[]) =>
      new TextDecoder().decode(
        new Deno.Command("git", { args, cwd: dir, stderr: "null" }).outputSync().stdout,
      )
        .trim();
    const commit = git("rev-parse", "HEAD");
    if (!/^[0-9a-f]{40}$/.test(commit)) return null;
    return { commit, dirty: git("status", "--porcelain", "--", "src", "tests") !== "" };
  } catch {
    return null;
  }
}

const results = {
  date: new Date().toISOString(),
  git: gitState(),
  command: `deno run -A bench/reliability_outcomes.ts${QUICK ? " --quick" : ""}`,
  quick: QUICK,
  machine: {
    os: Deno.build.os,
    arch: Deno.build.arch,
    cpus: navigator.hardwareConcurrency,
    cpuModel,
    deno: Deno.version.deno,
  },
  wallSeconds: Math.round(wallSeconds * 10) / 10,
  scenarioWallSeconds: timings,
  seeds: SEEDS,
  rows,
};
const out = new URL("./reliability_results.json", import.meta.url);
await Deno.writeTextFile(out, JSON.stringify(results, null, 2) + "\n");
console.error(`\n${rows.length} rows in ${wallSeconds.toFixed(1)} s; wrote ${out.pathname}`);
