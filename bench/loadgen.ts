/**
 * Load generator for `deno task bench`, run in its own process so it is not measured as part of the server.
 * Everything it sends is encoded before the clock starts where the protocol allows it. It prints one JSON
 * line with the operations completed, the rate, latency percentiles and its own CPU time.
 *
 *     loadgen.ts ping --port P [--host H] [--inflight K] [--seconds S] [--rate R]
 *     loadgen.ts data --port P [--inflight K] [--seconds S]
 *     loadgen.ts handshake --port P --peers N [--concurrency C] [--seconds S] [--disconnect]
 *       [--keyed [--verify]]
 *
 * `ping` sends Ping datagrams (the baseline echo server answers them too). `data` registers once and then
 * sends reliable Data, counting a round trip when the echo arrives. `handshake` registers N distinct peers,
 * each from its own socket (its own source port), with the full handshake (request, Ack, response, Ack).
 *
 * With `--keyed` every peer has its own Ed25519 identity and signs its request (a fresh X25519 key each),
 * and the handshake completes as a keyed client's does: the X25519 secret with the server's key from the
 * signed response, the session keys, and the Ack of the response sent in the session (`sid` and `mac`; the
 * server drops it otherwise and the peer would stay handshaking). What does not depend on the server's answer
 * is done with the sockets, before the clock runs, batch by batch: identities, X25519 keys, request ids and
 * timestamps, signatures, encoded requests (each batch's timestamps are seconds old when sent, well inside
 * the server's 60 s window). `--verify` also checks the server's signature on every response (an Ed25519
 * verification); without it the first response of each batch is checked, so a server that signs wrongly
 * still fails the run.
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import process from "node:process";
import {
  fromBase64Url,
  generateIdentity,
  nodeIdForKey,
  requestSignedBytes,
  responseSignedBytes,
  toBase64Url,
} from "../src/core/auth.ts";
import {
  generateX25519,
  hkdf,
  hmac,
  type KeyPair,
  signEd25519,
  verifyEd25519,
  x25519,
} from "../src/deps/crypto.ts";
import { encodeMessage, type Message } from "../src/wire/mod.ts";

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
    keyed: { type: "boolean", default: false },
    verify: { type: "boolean", default: false },
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

let cpuStart = process.cpuUsage();
let cpuExcludedMs = 0;

function report(ops: number, elapsedMs: number, latencies: number[], extra: Record<string, unknown> = {}) {
  const sorted = Float64Array.from(latencies).sort();
  const cpu = process.cpuUsage(cpuStart);
  console.log(JSON.stringify({
    mode,
    ops,
    seconds: elapsedMs / 1000,
    rate: ops / (elapsedMs / 1000),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    // CPU the generator spent while measuring (set-up such as opening sockets excluded).
    cpuMs: (cpu.user + cpu.system) / 1000 - cpuExcludedMs,
    ...extra,
  }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Round trips until the time runs out: K in flight (each reply sends the next), or paced at `--rate` per
 * second. In flight, replies are matched first-in first-out (loopback keeps order) and a watchdog refills the
 * window when the server dropped datagrams (no progress for 200 ms). Paced, every datagram carries its own
 * number (`stamped`) and replies are matched by it: the pacer sends in bursts, a burst can overflow a socket
 * buffer, and first-in first-out matching would then charge every later reply with the time since an
 * earlier, lost datagram was sent. No timer per datagram, sends are not awaited.
 */
async function roundTrips(
  sock: Deno.DatagramConn,
  nextDatagram: () => Uint8Array,
  inflight: number,
  isReply: (b: Uint8Array) => boolean,
  stamped?: Stamped,
) {
  const rate = Number(values.rate);
  const byNumber = rate > 0 && stamped !== undefined;
  const latencies: number[] = [];
  let sentAt: number[] = [];
  let head = 0;
  let done = 0;
  let lost = 0;
  let stopped = false;
  // Paced and stamped: send times by datagram number (a ring far larger than anything in flight).
  const stampedAt = new Float64Array(1 << 20);
  let number = 0;
  const send = () => {
    if (byNumber) {
      number++;
      stampedAt[number & 0xfffff] = performance.now();
      sock.send(stamped.datagram(number), target).catch(() => {});
      return;
    }
    sentAt.push(performance.now());
    sock.send(nextDatagram(), target).catch(() => {});
  };
  cpuStart = process.cpuUsage();
  const start = performance.now();
  const end = start + seconds * 1000;
  const receiver = (async () => {
    const buf = new Uint8Array(65_536);
    while (!stopped) {
      let got;
      try {
        got = await sock.receive(buf);
      } catch {
        return;
      }
      if (byNumber) {
        const n = stamped.numberOf(got[0]);
        const t = n > 0 ? stampedAt[n & 0xfffff]! : 0;
        if (t === 0) continue; // not a reply, or one already counted
        stampedAt[n & 0xfffff] = 0;
        latencies.push(performance.now() - t);
        done++;
        continue;
      }
      if (!isReply(got[0])) continue;
      const t = sentAt[head++];
      if (t !== undefined) latencies.push(performance.now() - t);
      done++;
      if (rate === 0 && !stopped) send();
    }
  })();
  if (rate > 0) {
    // Paced: every millisecond, send what is due so far.
    let sent = 0;
    while (performance.now() < end) {
      const due = Math.floor((performance.now() - start) * rate / 1000);
      while (sent < due) {
        send();
        sent++;
      }
      await sleep(1);
    }
    lost = sent; // settled below, once the last replies had their time
  } else {
    for (let i = 0; i < inflight; i++) send();
    let lastDone = -1;
    while (performance.now() < end) {
      await sleep(200);
      if (done === lastDone) {
        // Nothing came back for 200 ms: the window was lost. Start a new one.
        lost++;
        sentAt = [];
        head = 0;
        for (let i = 0; i < inflight; i++) send();
      }
      lastDone = done;
    }
  }
  const elapsed = performance.now() - start;
  stopped = true;
  if (rate > 0) await sleep(200); // let the last paced replies arrive
  // Paced: datagrams sent and never answered (the counter counts lost windows when in flight).
  if (rate > 0) lost -= done;
  sock.close();
  await receiver;
  report(done, elapsed, latencies, { inflight: rate > 0 ? null : inflight, targetRate: rate || null, lost });
}

/** Datagrams numbered for matching replies (paced mode): the n-th datagram, and the number in a reply. */
interface Stamped {
  datagram(n: number): Uint8Array;
  numberOf(reply: Uint8Array): number;
}

// Numbered datagrams are encoded into shared slabs: a typed array of its own per datagram costs the
// generator about 2 µs, a view of a slab a tenth of that.
let slab = new Uint8Array(65_536);
let slabAt = 0;

function slabEncode(text: string): Uint8Array {
  if (slabAt + 3 * text.length > slab.length) {
    slab = new Uint8Array(65_536);
    slabAt = 0;
  }
  const n = encoder.encodeInto(text, slab.subarray(slabAt)).written;
  const out = slab.subarray(slabAt, slabAt + n);
  slabAt += n;
  return out;
}

/** The `nonce` number in a reply (a Pong names its Ping's nonce; the echo server returns the Ping), or -1. */
function nonceOf(reply: Uint8Array): number {
  const text = decoder.decode(reply);
  const at = text.indexOf('"nonce":');
  return at < 0 ? -1 : parseInt(text.slice(at + 8, at + 24), 10) || -1;
}

function handshakeRequest(local: Deno.NetAddr): Uint8Array {
  const node = {
    id: crypto.randomUUID(),
    name: "bench",
    version: "1",
    listen_addr: `${local.hostname}:${local.port}`,
    capabilities: [],
    metadata: { network_id: "bench" },
  };
  return encoder.encode(JSON.stringify(envelope("HandshakeRequest", node, 1, true, null)));
}

/** What a keyed handshake needs once the server has answered: its X25519 key and the request's id. */
interface KeyedState {
  eph: KeyPair;
  requestId: string;
  nodeId: string;
}

/**
 * A signed HandshakeRequest from a new identity, with its id and timestamp fixed now (sent within seconds).
 * Built as the core's client builds it: the auth fields after the eight envelope keys, `to` "*" (the
 * generator does not pin the server's key).
 */
function keyedHandshakeRequest(local: Deno.NetAddr): { request: Uint8Array; state: KeyedState } {
  const identity = generateIdentity();
  const eph = generateX25519();
  const node = {
    id: identity.nodeId,
    name: "bench",
    version: "1",
    listen_addr: `${local.hostname}:${local.port}`,
    capabilities: [],
    metadata: { network_id: "bench" },
  };
  const msg = envelope("HandshakeRequest", node, 1, true, null) as Message;
  const dh = toBase64Url(eph.publicKey);
  const claims = requestSignedBytes({
    nodeId: node.id,
    networkId: "bench",
    listenAddr: node.listen_addr,
    to: "*",
    timestamp: msg.timestamp,
    messageId: msg.id,
    dh,
  });
  msg.auth = {
    key: identity.publicKeyText,
    dh,
    sig: toBase64Url(signEd25519(identity.privateKey, claims)),
    to: "*",
  };
  return { request: encodeMessage(msg), state: { eph, requestId: msg.id, nodeId: node.id } };
}

function hex16(bytes: Uint8Array): string {
  let out = "";
  for (let i = 0; i < 16; i++) out += bytes[i]!.toString(16).padStart(2, "0");
  return out;
}

/** Server keys already seen to be the key of their node id (the generator talks to one server). */
const serverKeys = new Set<string>();

/**
 * The Ack of a signed HandshakeResponse, in the session it starts: X25519 with the server's key, HKDF of the
 * session keys (salt `<request id>|<response id>`), then the Ack with `sid` and the MAC under the client's
 * key. With `verify`, the server's signature is checked first. Throws when the response is not keyed or
 * does not verify.
 */
function sessionAck(
  state: KeyedState,
  msg: Message & { payload: { node_info?: Record<string, unknown> } },
  verify: boolean,
): Uint8Array {
  const auth = msg.auth;
  const dh = fromBase64Url(auth?.dh, 32);
  const sid = auth?.sid;
  if (!auth || !dh || typeof sid !== "string") throw new Error("the server's response is not keyed");
  if (verify) {
    const key = fromBase64Url(auth.key, 32);
    const sig = fromBase64Url(auth.sig, 64);
    const info = msg.payload?.node_info;
    if (!key || !sig || !info) throw new Error("malformed server auth");
    if (!serverKeys.has(auth.key)) {
      if (nodeIdForKey(key) !== info.id) throw new Error("the server's id is not its key's");
      serverKeys.add(auth.key);
    }
    const claims = responseSignedBytes({
      serverId: String(info.id),
      networkId: "bench",
      requesterId: state.nodeId,
      requestId: state.requestId,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh: auth.dh,
      sid,
    });
    if (!verifyEd25519(key, claims, sig)) throw new Error("bad server signature");
  }
  const shared = x25519(state.eph.privateKey, dh);
  if (!shared) throw new Error("bad server X25519 key");
  const okm = hkdf(shared, encoder.encode(`${state.requestId}|${msg.id}`), "p2p_server session v1", 64);
  const c2s = okm.subarray(0, 32);
  const ack = envelope("Ack", null, msg.sequence_number, false, msg.id) as Message;
  ack.sid = sid;
  // The MAC covers the datagram without its mac member, which is exactly the encoded body.
  return encodeMessage(ack, false, (body) => hex16(hmac(c2s, body)));
}

/**
 * One full handshake on an open socket: request (resent after 500 ms, 3 tries), Ack + response, our Ack (in
 * the session when `keyed` is given). `buf` is the caller's receive buffer (one per concurrent handshake: a
 * 64 KiB buffer allocated per handshake cost the generator about 60 µs each).
 */
async function handshakeOnce(
  sock: Deno.DatagramConn,
  request: Uint8Array,
  buf: Uint8Array,
  keyed?: KeyedState,
  verify = false,
): Promise<void> {
  let tries = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  const resend = () => {
    if (tries++ >= 3) return;
    sock.send(request, target).catch(() => {});
    timer = setTimeout(resend, 500);
  };
  resend();
  try {
    for (;;) {
      const [bytes] = await sock.receive(buf);
      const msg = JSON.parse(decoder.decode(bytes));
      if (msg.message_type === "HandshakeResponse") {
        if (msg.payload?.success === false) throw new Error(msg.payload.error_message ?? "handshake refused");
        const ack = keyed
          ? sessionAck(keyed, msg, verify)
          : encoder.encode(JSON.stringify(envelope("Ack", null, msg.sequence_number, false, msg.id)));
        await sock.send(ack, target);
        return;
      }
      if (msg.message_type === "Error") throw new Error(msg.payload?.error ?? "handshake refused");
    }
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Registers N distinct peers, each from its own socket. Sockets and requests are made before the clock runs
 * (in batches, within the file descriptor limit); only the handshakes are timed.
 */
async function handshakes() {
  const keyed = values.keyed;
  const peers = Number(values.peers);
  const concurrency = Number(values.concurrency);
  const batchSize = 4000;
  const latencies: number[] = [];
  let done = 0;
  let failed = 0;
  let timedMs = 0;
  let setupMs = 0;
  let firstError: string | null = null;
  const deadline = performance.now() + seconds * 1000;
  cpuStart = process.cpuUsage();
  for (let first = 0; first < peers && performance.now() < deadline; first += batchSize) {
    const setupCpu = process.cpuUsage();
    const n = Math.min(batchSize, peers - first);
    // Each batch binds its own loopback source address: ports freed by a closed batch are reused by the
    // next, and a reused address would replace the earlier peer instead of adding one.
    const batch = first / batchSize;
    const host = values.host === "127.0.0.1"
      ? `127.0.${1 + Math.floor(batch / 250)}.${(batch % 250) + 1}`
      : values.host;
    const socks = Array.from(
      { length: n },
      () => Deno.listenDatagram({ transport: "udp", hostname: host, port: 0 }),
    );
    const keyedRequests = keyed ? socks.map((s) => keyedHandshakeRequest(s.addr as Deno.NetAddr)) : null;
    const requests = keyedRequests
      ? keyedRequests.map((r) => r.request)
      : socks.map((s) => handshakeRequest(s.addr as Deno.NetAddr));
    const setupDelta = process.cpuUsage(setupCpu);
    cpuExcludedMs += (setupDelta.user + setupDelta.system) / 1000;
    setupMs += (setupDelta.user + setupDelta.system) / 1000;
    let next = 0;
    const t0 = performance.now();
    const worker = async () => {
      const buf = new Uint8Array(65_536);
      while (next < n) {
        const i = next++;
        const t = performance.now();
        try {
          // Without --verify, the first handshake of each batch still checks the server's signature.
          await handshakeOnce(
            socks[i]!,
            requests[i]!,
            buf,
            keyedRequests?.[i]?.state,
            values.verify || i === 0,
          );
          latencies.push(performance.now() - t);
          done++;
          if (values.disconnect) {
            const bye = envelope("Disconnect", { reason: "bench" }, 2, false, null);
            await socks[i]!.send(encoder.encode(JSON.stringify(bye)), target);
          }
        } catch (error) {
          failed++;
          firstError ??= (error as Error).message;
        }
      }
    };
    // A handshake that never completes (all tries lost) is abandoned when its socket closes at batch end.
    const work = Promise.all(Array.from({ length: Math.min(concurrency, n) }, worker));
    const limit = new Promise((r) => setTimeout(r, Math.max(0, deadline - performance.now()) + 3000));
    await Promise.race([work, limit]);
    timedMs += performance.now() - t0;
    const closeCpu = process.cpuUsage();
    for (const s of socks) s.close();
    await work.catch(() => {});
    const closeDelta = process.cpuUsage(closeCpu);
    cpuExcludedMs += (closeDelta.user + closeDelta.system) / 1000;
  }
  report(done, timedMs, latencies, {
    failed,
    concurrency,
    ...(firstError !== null ? { firstError } : {}),
    ...(keyed ? { keyed, verify: values.verify ? "every response" : "first response of each batch" } : {}),
    // Generator CPU per peer before the clock (sockets; for keyed peers also the identity, the X25519 key
    // and the signature), not counted in cpuMs.
    setupUsPerPeer: (setupMs * 1000) / Math.max(1, done + failed),
  });
}

if (mode === "ping") {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
  const ping = encoder.encode(JSON.stringify(envelope("Ping", null, null, false, null)));
  // Paced, each Ping carries a nonce (as P2PClient's do); the server's Pong names it.
  const [before, after] = JSON.stringify(envelope("Ping", { nonce: 0 }, null, false, null)).split(
    '"nonce":0',
  );
  const stamped: Stamped = {
    datagram: (n) => slabEncode(`${before}"nonce":${n}${after}`),
    numberOf: nonceOf,
  };
  await roundTrips(sock, () => ping, Number(values.inflight), () => true, stamped);
} else if (mode === "data") {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
  await handshakeOnce(sock, handshakeRequest(sock.addr as Deno.NetAddr), new Uint8Array(65_536));
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
