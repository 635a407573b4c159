/**
 * Load generator for `deno task bench`, run in its own process so it is not measured as part of the server.
 * Everything it sends is encoded before the clock starts where the protocol allows it. It prints one JSON
 * line with the operations completed, the rate, latency percentiles and its own CPU time.
 *
 *     loadgen.ts ping --port P [--host H] [--inflight K] [--seconds S] [--rate R]
 *     loadgen.ts data --port P [--inflight K] [--seconds S]
 *     loadgen.ts handshake --port P --peers N [--concurrency C] [--seconds S] [--disconnect]
 *
 * `ping` sends Ping datagrams (the baseline echo server answers them too). `data` registers once and then
 * sends reliable Data, counting a round trip when the echo arrives. `handshake` registers N distinct peers,
 * each from its own socket (its own source port), with the full handshake (request, Ack, response, Ack).
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import process from "node:process";

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    port: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    inflight: { type: "string", default: "1" },
    seconds: { type: "string", default: "3" },
    rate: { type: "string", default: "0" },
    peers: { type: "string", default: "1000" },
    concurrency: { type: "string", default: "256" },
    disconnect: { type: "boolean", default: false },
  },
});

const mode = positionals[0];
const target = { transport: "udp" as const, hostname: values.host, port: Number(values.port) };
const seconds = Number(values.seconds);
const encoder = new TextEncoder();
const decoder = new TextDecoder();

function envelope(
  type: string,
  payload: unknown,
  seq: number | null,
  requiresAck: boolean,
  ackFor: string | null,
) {
  return {
    id: crypto.randomUUID(),
    message_type: type,
    timestamp: Math.floor(Date.now() / 1000),
    payload,
    sender_addr: null,
    sequence_number: seq,
    requires_ack: requiresAck,
    ack_for: ackFor,
  };
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))]!;
}

function report(ops: number, elapsedMs: number, latencies: number[], extra: Record<string, unknown> = {}) {
  const sorted = Float64Array.from(latencies).sort();
  const cpu = process.cpuUsage();
  console.log(JSON.stringify({
    mode,
    ops,
    seconds: elapsedMs / 1000,
    rate: ops / (elapsedMs / 1000),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    cpuMs: (cpu.user + cpu.system) / 1000,
    ...extra,
  }));
}

/** Round trips with K in flight (or paced at `rate` per second) until the time runs out. */
async function roundTrips(
  sock: Deno.DatagramConn,
  nextDatagram: () => Uint8Array,
  inflight: number,
  isReply: (b: Uint8Array) => boolean,
) {
  const rate = Number(values.rate);
  const latencies: number[] = [];
  const sentAt: number[] = [];
  const start = performance.now();
  const end = start + seconds * 1000;
  let done = 0;
  let outstanding = 0;
  const send = () => {
    sentAt.push(performance.now());
    outstanding++;
    return sock.send(nextDatagram(), target);
  };
  if (rate > 0) {
    // Paced: one send every 1/rate s, latency per reply; replies come back in order on loopback.
    const interval = 1000 / rate;
    let next = start;
    const receiver = (async () => {
      const buf = new Uint8Array(65_536);
      while (performance.now() < end + 1000) {
        const [bytes] = await sock.receive(buf);
        if (!isReply(bytes)) continue;
        const t = sentAt.shift();
        outstanding--;
        if (t !== undefined) latencies.push(performance.now() - t);
        done++;
      }
    })();
    while (performance.now() < end) {
      const now = performance.now();
      if (now >= next) {
        await send();
        next += interval;
      } else if (next - now > 2) {
        await new Promise((r) => setTimeout(r, Math.floor(next - now) - 1));
      } else {
        await Promise.resolve();
      }
    }
    const waitUntil = performance.now() + 500;
    while (outstanding > 0 && performance.now() < waitUntil) await new Promise((r) => setTimeout(r, 5));
    sock.close();
    await receiver.catch(() => {});
    report(done, performance.now() - start, latencies, { inflight: 0, targetRate: rate });
    return;
  }
  for (let i = 0; i < inflight; i++) send();
  const buf = new Uint8Array(65_536);
  let lost = 0;
  while (performance.now() < end) {
    const timeout = new Promise<null>((r) => {
      const id = setTimeout(() => r(null), 200);
      Deno.unrefTimer(id);
    });
    const got = await Promise.race([sock.receive(buf), timeout]);
    if (got === null) {
      // A datagram was lost (socket buffer overflow): put one back in flight.
      lost++;
      sentAt.shift();
      outstanding--;
      await send();
      continue;
    }
    if (!isReply(got[0])) continue;
    const t = sentAt.shift();
    outstanding--;
    if (t !== undefined) latencies.push(performance.now() - t);
    done++;
    await send();
  }
  const elapsed = performance.now() - start;
  sock.close();
  report(done, elapsed, latencies, { inflight, lost });
}

async function handshakeOnce(sock: Deno.DatagramConn, seq: number) {
  const node = {
    id: crypto.randomUUID(),
    name: "bench",
    version: "1",
    listen_addr: `127.0.0.1:${(sock.addr as Deno.NetAddr).port}`,
    capabilities: [],
    metadata: { network_id: "bench" },
  };
  await sock.send(
    encoder.encode(JSON.stringify(envelope("HandshakeRequest", node, seq, true, null))),
    target,
  );
  const buf = new Uint8Array(65_536);
  for (;;) {
    const [bytes] = await sock.receive(buf);
    const msg = JSON.parse(decoder.decode(bytes));
    if (msg.message_type === "HandshakeResponse") {
      await sock.send(
        encoder.encode(JSON.stringify(envelope("Ack", null, msg.sequence_number, false, msg.id))),
        target,
      );
      return;
    }
    if (msg.message_type === "Error") throw new Error(msg.payload?.error ?? "handshake refused");
  }
}

async function handshakes() {
  const peers = Number(values.peers);
  const concurrency = Number(values.concurrency);
  const start = performance.now();
  const end = start + seconds * 1000;
  const latencies: number[] = [];
  let next = 0;
  let done = 0;
  let failed = 0;
  const worker = async () => {
    while (next < peers && performance.now() < end) {
      next++;
      const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
      const t = performance.now();
      try {
        const timeout = new Promise<never>((_, reject) => {
          const id = setTimeout(() => reject(new Error("timeout")), 3000);
          Deno.unrefTimer(id);
        });
        await Promise.race([handshakeOnce(sock, 1), timeout]);
        latencies.push(performance.now() - t);
        if (values.disconnect) {
          const bye = envelope("Disconnect", { reason: "bench" }, 2, false, null);
          await sock.send(encoder.encode(JSON.stringify(bye)), target);
        }
        done++;
      } catch {
        failed++;
      } finally {
        sock.close();
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  report(done, performance.now() - start, latencies, { failed, concurrency });
}

if (mode === "ping") {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
  const ping = encoder.encode(JSON.stringify(envelope("Ping", null, null, false, null)));
  await roundTrips(sock, () => ping, Number(values.inflight), () => true);
} else if (mode === "data") {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
  await handshakeOnce(sock, 1);
  // Reliable Data needs a fresh sequence number (and id) per message: everything else is encoded up front.
  const prefix = `{"id":"00000000-0000-4000-8000-`;
  const middle =
    `","message_type":"Data","timestamp":${Math.floor(Date.now() / 1000)},"payload":{"bench":true},` +
    `"sender_addr":null,"sequence_number":`;
  const suffix = `,"requires_ack":true,"ack_for":null}`;
  let seq = 1;
  const next = () => {
    seq++;
    return encoder.encode(prefix + seq.toString(16).padStart(12, "0") + middle + seq + suffix);
  };
  const isEcho = (b: Uint8Array) => decoder.decode(b.subarray(0, 120)).includes('"Data"');
  await roundTrips(sock, next, Number(values.inflight), isEcho);
} else if (mode === "handshake") {
  await handshakes();
} else {
  console.error(`error: Unknown mode "${mode}": expected ping, data or handshake`);
  Deno.exit(2);
}
Deno.exit(0);
