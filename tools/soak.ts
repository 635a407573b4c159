/**
 * `deno task soak`: the real program under legitimate load and every kind of attack at once, for a bounded
 * time (10 minutes by default), reporting memory, drops and the legitimate clients' experience over time.
 *
 * Legitimate clients (`P2PClient`, on 127.0.0.2 to 127.0.0.5, two of them keyed): each loops over ping, a
 * reliable Data and its echo, discovery, and routed Data to another client; every 30 s two keyed clients ask
 * to be introduced and talk directly; every 60 s one reconnects (a new handshake). Attackers at modest rates,
 * from their own loopback addresses (loopback cannot be spoofed, so "spoofed" means sockets that never read):
 *
 * - reflection: 20 ports of 127.0.0.50 register without the extensions, confirm with a Ping, and ask for
 *   discovery every 2 s (the per-IP 3x budget must hold);
 * - one-key flood: 20 clients sharing one key reconnect every 200 ms (takeovers rate limited per id);
 * - a datagram flood from 127.0.0.60 at 2,000 a second (per-IP limits);
 * - malformed datagrams from 127.0.0.70: truncated, bit-flipped and invalid JSON, 200 a second;
 * - fragment declarations that promise huge messages, from a registered raw peer on 127.0.0.80.
 *
 * Every `--sample` seconds it prints the server's RSS (`/proc/<pid>/status`) and JS heap (`/api/stats`), the
 * drops by reason, and the legitimate clients' operations, failures and ping p99. At the end: "flat" when the
 * RSS of the last third stays within 20 % (plus 16 MiB) of the highest RSS in the middle third (after the
 * warm-up), and "ok" when no legitimate operation failed. Exit status 0 when both hold, 1 otherwise, 2 for a
 * bad flag.
 *
 * ```sh
 * deno task soak                  # 10 minutes
 * deno task soak --seconds 60     # one minute
 * ```
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import { generateIdentity, P2PClient } from "../mod.ts";
import { getApiStats, readProc, startProbedServer } from "./server_probe.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: {
    minutes: { type: "string" },
    seconds: { type: "string" },
    sample: { type: "string" },
  },
});
const durationS = values.seconds !== undefined ? Number(values.seconds) : Number(values.minutes ?? 10) * 60;
const sampleS = Number(values.sample ?? 10);
for (const [key, v] of [["--seconds/--minutes", durationS], ["--sample", sampleS]] as const) {
  if (!Number.isFinite(v) || v <= 0 || v > 24 * 3600) {
    console.error(`error: Invalid "${key}": ${v}: expected a positive number of seconds up to a day`);
    Deno.exit(2);
  }
}

const server = await startProbedServer({
  config: { rate_limit_exempt_loopback: false, ban_seconds: 30, cookie_mode: "auto" },
});
const target = server.process.addrText;
const [host, portText] = [
  target.slice(0, target.lastIndexOf(":")),
  target.slice(target.lastIndexOf(":") + 1),
];
const serverAddr = { transport: "udp" as const, hostname: host, port: Number(portText) };
const stopAt = performance.now() + durationS * 1000;
const running = () => performance.now() < stopAt;
/** Waits `ms`, or until the run's end if that comes first. */
const pause = (ms: number) =>
  new Promise((r) => setTimeout(r, Math.max(0, Math.min(ms, stopAt - performance.now()))));
const encoder = new TextEncoder();

// ------------------------------------------------------------------ legitimate clients

const ops = { ok: 0, failed: 0, expected: 0, failures: [] as string[] };
/** When each legitimate client last reconnected (a new node id): Data routed to it meanwhile may be lost. */
const reconnectedAt: number[] = [];
const rtts: number[] = [];
const clients = await Promise.all([2, 3, 4, 5].map(async (n, i) => {
  const c = new P2PClient({
    server: target,
    bind: `127.0.0.${n}:0`,
    name: `soak-${n}`,
    ...(i < 2 ? { identity: "generate" as const } : {}),
  });
  await c.connect();
  return c;
}));

async function op<T>(what: string, run: () => Promise<T>): Promise<T | undefined> {
  try {
    const value = await run();
    ops.ok++;
    return value;
  } catch (error) {
    ops.failed++;
    if (ops.failures.length < 20) ops.failures.push(`${what}: ${(error as Error).message}`);
    return undefined;
  }
}

async function legitLoop(index: number): Promise<void> {
  let c = clients[index]!;
  let reconnectAt = performance.now() + 60_000 + index * 5_000;
  while (running()) {
    const rtt = await op("ping", () => c.ping());
    if (rtt !== undefined) rtts.push(rtt);
    await op("send", () => c.send({ soak: index, at: Date.now() }));
    await op("discover", () => c.discover());
    const other = clients[(index + 1) % clients.length]!;
    const otherIndex = (index + 1) % clients.length;
    try {
      await c.send({ hello: index }, { to: other.node.id });
      ops.ok++;
    } catch (error) {
      // The recipient left for its reconnect while the message was on its way: not the server's failure.
      if (performance.now() - (reconnectedAt[otherIndex] ?? -Infinity) < 15_000) ops.expected++;
      else {
        ops.failed++;
        if (ops.failures.length < 20) ops.failures.push(`route: ${(error as Error).message}`);
      }
    }
    if (performance.now() > reconnectAt && running()) {
      reconnectAt = performance.now() + 60_000;
      reconnectedAt[index] = performance.now();
      await c.disconnect("soak reconnect");
      const fresh = new P2PClient({ server: target, bind: `127.0.0.${2 + index}:0`, name: `soak-${index}b` });
      await op("reconnect", () => fresh.connect());
      clients[index] = c = fresh;
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function introductions(): Promise<void> {
  while (running()) {
    await pause(30_000);
    if (!running()) return;
    const [a, b] = clients;
    if (!a || !b || a.directPeers.some((p) => p.nodeId === b.node.id)) continue;
    await op("introduce", () => a.introduce(b.node.id));
  }
}

// ------------------------------------------------------------------ attackers

/** A socket that sends and drains whatever comes back, counting the bytes. */
function attacker(hostname: string) {
  const sock = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
  const counts = { sent: 0, received: 0 };
  (async () => {
    const buf = new Uint8Array(65_536);
    try {
      for (;;) {
        const [bytes] = await sock.receive(buf);
        counts.received += bytes.length;
      }
    } catch {
      // closed
    }
  })();
  const send = (data: Uint8Array | string) => {
    const bytes = typeof data === "string" ? encoder.encode(data) : data;
    counts.sent += bytes.length;
    return sock.send(bytes, serverAddr).catch(() => 0);
  };
  return { sock, counts, send };
}

function envelope(type: string, payload: unknown, extra: Record<string, unknown> = {}): string {
  return JSON.stringify({
    id: crypto.randomUUID(),
    message_type: type,
    timestamp: Math.floor(Date.now() / 1000),
    payload,
    sender_addr: "127.0.0.1:1",
    sequence_number: 1,
    requires_ack: type === "HandshakeRequest",
    ack_for: null,
    ...extra,
  });
}

const reflectors = Array.from({ length: 20 }, () => attacker("127.0.0.50"));
async function reflection(): Promise<void> {
  for (const r of reflectors) {
    const info = { id: crypto.randomUUID(), name: "r", version: "1", listen_addr: "127.0.0.50:1" };
    await r.send(envelope("HandshakeRequest", info));
    await r.send(envelope("Ping", null, { sequence_number: 2 }));
  }
  while (running()) {
    for (const r of reflectors) await r.send(envelope("DiscoveryRequest", null, { sequence_number: 3 }));
    await pause(2_000);
  }
}

async function oneKeyFlood(): Promise<void> {
  const stolen = generateIdentity();
  const flood = Array.from({ length: 20 }, (_, i) => i);
  while (running()) {
    await Promise.all(flood.map(async () => {
      const c = new P2PClient({
        server: target,
        bind: "127.0.0.90:0",
        identity: stolen,
        reliability: { handshakeTimeout: 1 },
      });
      await c.connect().catch(() => {});
      await c.close();
    }));
    await new Promise((res) => setTimeout(res, 200));
  }
}

const flooder = attacker("127.0.0.60");
async function datagramFlood(): Promise<void> {
  const ping = envelope("Ping", null);
  while (running()) {
    for (let i = 0; i < 20; i++) void flooder.send(ping);
    await new Promise((res) => setTimeout(res, 10));
  }
}

const fuzzer = attacker("127.0.0.70");
async function malformed(): Promise<void> {
  let n = 0;
  while (running()) {
    for (let i = 0; i < 20; i++, n++) {
      const base = encoder.encode(envelope("Data", { n }));
      const kind = n % 3;
      const bytes = kind === 0
        ? base.subarray(0, base.length >> 1)
        : kind === 1
        ? base.map((b, j) => (j === n % base.length ? b ^ 0x20 : b))
        : encoder.encode(`{"id":${n},"message_type":[`);
      await fuzzer.send(bytes);
    }
    await new Promise((res) => setTimeout(res, 100));
  }
}

const fragmenter = attacker("127.0.0.80");
async function fragments(): Promise<void> {
  const id = crypto.randomUUID();
  const info = { id, name: "frag", version: "1", listen_addr: "127.0.0.80:1", capabilities: [] };
  await fragmenter.send(envelope("HandshakeRequest", info));
  let seq = 2;
  while (running()) {
    for (let i = 0; i < 10; i++) {
      const frag = { id: crypto.randomUUID(), i: 0, n: 65_535 };
      await fragmenter.send(envelope("Data", "x", { sequence_number: seq++, requires_ack: true, frag }));
    }
    await new Promise((res) => setTimeout(res, 1_000));
  }
}

// ------------------------------------------------------------------ sampling

interface Sample {
  t: number;
  rssMiB: number;
  heapMiB: number;
  ops: number;
  failed: number;
  p99: number | null;
  drops: Record<string, number>;
}
const samples: Sample[] = [];
const started = performance.now();

function rssBytes(): number {
  const status = readProc(`/proc/${server.pid}/status`) ?? "";
  const kb = /^VmRSS:\s+(\d+) kB/m.exec(status)?.[1];
  return kb ? Number(kb) * 1024 : NaN;
}

function p99(values: number[]): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]!;
}

async function sampler(): Promise<void> {
  while (running()) {
    await pause(sampleS * 1000);
    const api = await getApiStats(server.base).catch(() => null);
    const drops = Object.fromEntries(Object.entries(api?.stats.drops ?? {}).filter(([, n]) => n > 0));
    const s: Sample = {
      t: Math.round((performance.now() - started) / 1000),
      rssMiB: rssBytes() / 2 ** 20,
      heapMiB: (api?.memory.heapUsed ?? NaN) / 2 ** 20,
      ops: ops.ok,
      failed: ops.failed,
      p99: p99(rtts.splice(0)),
      drops,
    };
    samples.push(s);
    console.log(
      `t=${s.t}s rss ${s.rssMiB.toFixed(1)} MiB heap ${s.heapMiB.toFixed(1)} MiB; legit ${s.ops} ok, ` +
        `${s.failed} failed, ping p99 ${s.p99?.toFixed(1) ?? "-"} ms; drops ${JSON.stringify(s.drops)}`,
    );
  }
}

console.log(`soak: ${durationS} s against ${target} (samples every ${sampleS} s)`);
await Promise.all([
  ...clients.map((_, i) => legitLoop(i)),
  introductions(),
  reflection(),
  oneKeyFlood(),
  datagramFlood(),
  malformed(),
  fragments(),
  sampler(),
]);

for (const c of clients) await c.close();
for (const a of [...reflectors, flooder, fuzzer, fragmenter]) a.sock.close();
const reflected = reflectors.reduce(
  (acc, r) => ({ in: acc.in + r.counts.sent, out: acc.out + r.counts.received }),
  {
    in: 0,
    out: 0,
  },
);
await server.process.stop();

const third = Math.max(1, Math.floor(samples.length / 3));
const middle = samples.slice(third, 2 * third);
const last = samples.slice(2 * third);
const middleMax = Math.max(...middle.map((s) => s.rssMiB), 0);
const lastMax = Math.max(...last.map((s) => s.rssMiB), 0);
const flat = samples.length < 3 || lastMax <= middleMax * 1.2 + 16;
const ratio = reflected.in > 0 ? reflected.out / reflected.in : 0;
console.log(
  `\nsummary: ${ops.ok} legitimate operations, ${ops.failed} failed (${ops.expected} routed to a peer ` +
    `that was reconnecting, not counted); RSS middle third max ` +
    `${middleMax.toFixed(1)} MiB, last third max ${lastMax.toFixed(1)} MiB (${flat ? "flat" : "GROWING"}); ` +
    `reflection ${reflected.out} B back for ${reflected.in} B sent (${ratio.toFixed(2)}x per IP)`,
);
for (const f of ops.failures) console.log(`  failure: ${f}`);
Deno.exit(flat && ops.failed === 0 && ratio <= 3 ? 0 : 1);
