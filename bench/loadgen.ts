/**
 * Load generator for `deno task bench`, run in its own process (pinned to a core of its own where the machine
 * has two) so it is not measured as part of the server. Everything it sends is encoded before the clock starts
 * where the protocol allows it. It prints one JSON line: the operations completed, the rate, latency
 * percentiles, its own CPU time and, given `--server-pid`, the server process's CPU time over exactly the
 * measured windows (from `/proc/<pid>/stat`, read when a window opens and when it closes).
 *
 *     loadgen.ts ping --port P [--host H] [--inflight K] [--count N] [--seconds S] [--rate R]
 *     loadgen.ts data --port P [--inflight K] [--count N] [--seconds S]
 *     loadgen.ts route --port P [--inflight K] [--count N] [--seconds S]
 *     loadgen.ts discovery --port P [--peers N] [--inflight K] [--count N] [--seconds S]
 *     loadgen.ts stun --port P [--inflight K] [--count N] [--seconds S] [--stun-request bare|full]
 *     loadgen.ts handshake --port P --peers N [--concurrency C] [--seconds S] [--disconnect | --hold]
 *       [--keyed [--verify]]
 *     every mode: [--server-pid PID] [--warmup W]
 *
 * - `ping`: Ping datagrams (the bare echo server answers them too). K in flight, or paced at R per second.
 * - `data`: registers once, then reliable Data (`requires_ack`); a round trip is the echo's arrival (the Ack
 *   before it is read and not counted).
 * - `route`: registers two peers A and B; A sends reliable Data routed to B (`{"to": B, "data": ...}`), B acks
 *   every copy the server delivers; an operation is a copy's arrival at B.
 * - `discovery`: registers N peers (64 by default), then the first sends DiscoveryRequests (payload null); an
 *   operation is a DiscoveryResponse. The entries of the first answer are reported.
 * - `stun`: STUN Binding requests (20 bytes bare, or 52 with `--stun-request full`: SOFTWARE and
 *   FINGERPRINT), K in flight; an operation is a Binding success response (the bare echo server's echo of
 *   the request counts too). The sizes of a request and of an answer are reported on a second line.
 * - `handshake`: N distinct peers, each from its own socket (its own source port), with the full handshake
 *   (request, Ack, response, Ack). `--disconnect` sends a Disconnect after each. `--hold` prints the result
 *   line, then waits for a line on stdin and has every registered peer leave (each address bound again, a
 *   Disconnect sent from it), and prints a second line.
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
 * `--warmup W` runs W operations first, outside the measured windows (handshake mode: W handshakes of other
 * distinct peers, from loopback addresses of their own, which stay registered; in-flight modes: the first W
 * replies). A server that compiles its code as it runs (V8's optimising compiler works on background
 * threads for the first tens of thousands of handshakes) is then measured warm, as it runs for most of its
 * life; a run without it measures the cold start as well.
 *
 * Every run is bounded: by `--count` operations (in-flight modes) and by `--seconds` of measured time.
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
import { encodeStun, STUN_ATTR } from "../src/wire/stun.ts";
import { processCpuMs } from "./proc_stat.ts";
import { MmsgSocket, mmsgUnavailable } from "../src/udp_mmsg.ts";

const { positionals, values } = parseArgs({
  args: Deno.args,
  allowPositionals: true,
  options: {
    port: { type: "string" },
    host: { type: "string", default: "127.0.0.1" },
    inflight: { type: "string", default: "1" },
    count: { type: "string", default: "0" },
    seconds: { type: "string", default: "3" },
    rate: { type: "string", default: "0" },
    peers: { type: "string" },
    concurrency: { type: "string", default: "64" },
    disconnect: { type: "boolean", default: false },
    hold: { type: "boolean", default: false },
    keyed: { type: "boolean", default: false },
    verify: { type: "boolean", default: false },
    "server-pid": { type: "string", default: "0" },
    "stun-request": { type: "string", default: "bare" },
    warmup: { type: "string", default: "0" },
  },
});

const mode = positionals[0];
const target = { transport: "udp" as const, hostname: values.host, port: Number(values.port) };
const seconds = Number(values.seconds);
const maxOps = Number(values.count) > 0 ? Number(values.count) : Infinity;
const serverPid = Number(values["server-pid"]);
const warmup = Number(values.warmup);
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

/**
 * The measured time: one or more windows (a handshake run has one per batch of sockets). For each, the wall
 * time, the generator's CPU and the server's CPU between opening and closing.
 */
const measured = { wallMs: 0, generatorCpuMs: 0, serverCpuMs: 0 as number | null };

interface Window {
  t: number;
  gen: NodeJS.CpuUsage;
  server: number | null;
}

function openWindow(): Window {
  return {
    t: performance.now(),
    gen: process.cpuUsage(),
    server: serverPid > 0 ? processCpuMs(serverPid) : null,
  };
}

function closeWindow(w: Window): void {
  const server = w.server === null ? null : processCpuMs(serverPid);
  const gen = process.cpuUsage(w.gen);
  measured.wallMs += performance.now() - w.t;
  measured.generatorCpuMs += (gen.user + gen.system) / 1000;
  measured.serverCpuMs = server === null || w.server === null || measured.serverCpuMs === null
    ? null
    : measured.serverCpuMs + (server - w.server);
}

function report(ops: number, latencies: number[], extra: Record<string, unknown> = {}, rateMs?: number) {
  const sorted = Float64Array.from(latencies).sort();
  const s = measured.serverCpuMs;
  console.log(JSON.stringify({
    mode,
    ops,
    seconds: measured.wallMs / 1000,
    rate: ops / ((rateMs ?? measured.wallMs) / 1000),
    p50Ms: percentile(sorted, 0.5),
    p99Ms: percentile(sorted, 0.99),
    // CPU the generator spent while measuring (set-up such as opening sockets excluded).
    cpuMs: measured.generatorCpuMs,
    generatorCpu: measured.generatorCpuMs / measured.wallMs,
    // The server process's CPU (user + system, all threads) over the same windows.
    serverCpuMs: s,
    serverUsPerOp: s === null || ops === 0 ? null : (s * 1000) / ops,
    ...extra,
  }));
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Where replies arrive and what counts as one; `onReply` may answer (route mode's Acks). */
interface ReplySide {
  sock: Deno.DatagramConn;
  isReply(bytes: Uint8Array): boolean;
}

/**
 * K round trips in flight until `--count` are done or the time runs out: each reply sends the next (while
 * fewer than `--count` were sent). Replies are matched first in, first out (loopback keeps order) and a
 * watchdog refills the window when the server dropped datagrams (no progress for 200 ms). No timer per
 * datagram; sends are not awaited. The window closes when the last operation arrives.
 */
async function inFlight(
  sock: Deno.DatagramConn,
  nextDatagram: () => Uint8Array,
  inflight: number,
  reply: ReplySide,
) {
  const latencies: number[] = [];
  let sentAt: number[] = [];
  let head = 0;
  let sent = 0;
  let done = 0;
  let lost = 0;
  let stopped = false;
  let wake = null as (() => void) | null;
  const send = () => {
    sent++;
    sentAt.push(performance.now());
    sock.send(nextDatagram(), target).catch(() => {});
  };
  // The first `--warmup` replies are not measured: the window opens at the last of them.
  let warming = warmup;
  let window = openWindow();
  let end = window.t + seconds * 1000;
  const receiver = (async () => {
    const buf = new Uint8Array(65_536);
    while (!stopped) {
      let got;
      try {
        got = await reply.sock.receive(buf);
      } catch {
        return;
      }
      if (stopped || !reply.isReply(got[0])) continue;
      const t = sentAt[head++];
      if (warming > 0) {
        if (--warming === 0) {
          window = openWindow();
          end = window.t + seconds * 1000;
        }
        send();
        continue;
      }
      if (t !== undefined) latencies.push(performance.now() - t);
      done++;
      if (done >= maxOps) {
        stopped = true;
        closeWindow(window);
        wake?.();
        return;
      }
      if (sent - warmup < maxOps) send();
    }
  })();
  // The sender's own socket is drained when replies arrive elsewhere (route mode: A's Acks).
  const drain = reply.sock === sock ? null : (async () => {
    const buf = new Uint8Array(65_536);
    while (!stopped) {
      try {
        await sock.receive(buf);
      } catch {
        return;
      }
    }
  })();
  for (let i = 0; i < Math.min(inflight, maxOps); i++) send();
  let lastDone = -1;
  // The warm-up is bounded too: 60 s at most.
  const warmEnd = window.t + 60_000;
  const deadline = () => warming > 0 ? warmEnd : end;
  while (!stopped && performance.now() < deadline()) {
    let timer: ReturnType<typeof setTimeout> | undefined;
    await new Promise<void>((r) => {
      wake = r;
      timer = setTimeout(r, Math.min(200, Math.max(1, deadline() - performance.now())));
    });
    clearTimeout(timer);
    wake = null;
    if (stopped) break;
    const progress = done + warmup - warming;
    if (progress === lastDone) {
      // Nothing came back for 200 ms: the window was lost. Start a new one.
      lost++;
      sentAt = [];
      head = 0;
      for (let i = 0; i < Math.min(inflight, maxOps - done); i++) send();
    }
    lastDone = progress;
  }
  if (!stopped) {
    stopped = true;
    closeWindow(window);
  }
  sock.close();
  if (reply.sock !== sock) reply.sock.close();
  await receiver;
  await drain;
  report(done, latencies, { inflight, lostWindows: lost });
}

/**
 * Paced round trips: every millisecond, send what is due at `--rate` per second, for `--seconds`. Every
 * datagram carries its own number (a Ping's `nonce`) and replies are matched by it: the pacer sends in
 * bursts, a burst can overflow a socket buffer, and first-in first-out matching would then charge every
 * later reply with the time since an earlier, lost datagram was sent (a reply without the number, as the
 * upstream server's payload-less Pong, is matched to the oldest unanswered). The rate is over the pacing time; the
 * window (and the server's CPU) runs on for 200 ms to let the last replies arrive.
 */
async function paced(sock: Deno.DatagramConn, stamped: Stamped, rate: number) {
  const latencies: number[] = [];
  const stampedAt = new Float64Array(1 << 20); // send times by number, a ring far larger than in flight
  let number = 0;
  let oldest = 1;
  let done = 0;
  let stopped = false;
  const window = openWindow();
  const start = window.t;
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
      let n = stamped.numberOf(got[0]);
      // A reply without the number (the upstream server's Pong carries no payload): the oldest unanswered.
      if (n < 0) {
        while (oldest <= number && stampedAt[oldest & 0xfffff] === 0) oldest++;
        n = oldest <= number ? oldest : -1;
      }
      const t = n > 0 ? stampedAt[n & 0xfffff]! : 0;
      if (t === 0) continue; // not a reply, or one already counted
      stampedAt[n & 0xfffff] = 0;
      latencies.push(performance.now() - t);
      done++;
    }
  })();
  let sent = 0;
  while (performance.now() < end && sent < maxOps) {
    const due = Math.min(maxOps, Math.floor((performance.now() - start) * rate / 1000));
    while (sent < due) {
      number++;
      stampedAt[number & 0xfffff] = performance.now();
      sock.send(stamped.datagram(number), target).catch(() => {});
      sent++;
    }
    await sleep(1);
  }
  const pacedMs = performance.now() - start;
  await sleep(200); // let the last replies arrive
  stopped = true;
  closeWindow(window);
  sock.close();
  await receiver;
  report(done, latencies, { targetRate: rate, sent, lost: sent - done }, pacedMs);
}

/**
 * {@linkcode paced} without the event loop's timers, whose millisecond ticks turn the pace into a burst
 * every millisecond: on a socket of the batched backend (`src/udp_mmsg.ts`), one loop on this thread sends
 * each datagram when it is due (to the microsecond) and reads the replies waiting, without blocking, between
 * sends. It keeps this core busy for the whole run (the generator has a core of its own). Same report.
 */
function pacedSpinning(stamped: Stamped, rate: number) {
  const sock = new MmsgSocket({ hostname: values.host, port: 0 });
  const latencies: number[] = [];
  const stampedAt = new Float64Array(1 << 20);
  let number = 0;
  let oldest = 1;
  let done = 0;
  let sent = 0;
  let refused = 0;
  const receive = () => {
    const n = sock.receiveNow();
    const t = performance.now();
    for (let i = 0; i < n; i++) {
      let k = stamped.numberOf(sock.bytes(i));
      if (k < 0) {
        while (oldest <= number && stampedAt[oldest & 0xfffff] === 0) oldest++;
        k = oldest <= number ? oldest : -1;
      }
      const at = k > 0 ? stampedAt[k & 0xfffff]! : 0;
      if (at === 0) continue;
      stampedAt[k & 0xfffff] = 0;
      latencies.push(t - at);
      done++;
    }
  };
  const window = openWindow();
  const start = window.t;
  const end = start + seconds * 1000;
  for (let now = start; now < end && sent < maxOps; now = performance.now()) {
    const due = Math.min(maxOps, Math.floor((now - start) * rate / 1000));
    while (sent < due) {
      number++;
      stampedAt[number & 0xfffff] = performance.now();
      if (!sock.sendNow(stamped.datagram(number), values.host, Number(values.port))) {
        stampedAt[number & 0xfffff] = 0; // the generator's own send buffer was full: not a loss of the server's
        refused++;
      }
      sent++;
    }
    receive();
  }
  const pacedMs = performance.now() - start;
  const drainUntil = performance.now() + 200; // let the last replies arrive
  while (performance.now() < drainUntil) receive();
  closeWindow(window);
  sock.close();
  report(
    done,
    latencies,
    { targetRate: rate, sent, lost: sent - refused - done, pacer: "spinning", refused },
    pacedMs,
  );
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

/** A message id that is a valid UUID v4 and unique within one run: a counter in the last group. */
function counterId(n: number): string {
  return `00000000-0000-4000-8000-${n.toString(16).padStart(12, "0")}`;
}

/** A HandshakeRequest from a new node id, and that id. */
function handshakeRequest(local: Deno.NetAddr): Uint8Array {
  return plainRequest(local).request;
}

function plainRequest(local: Deno.NetAddr): { request: Uint8Array; nodeId: string } {
  const node = {
    id: crypto.randomUUID(),
    name: "bench",
    version: "1",
    listen_addr: `${local.hostname}:${local.port}`,
    capabilities: [],
    metadata: { network_id: "bench" },
  };
  return {
    request: encoder.encode(JSON.stringify(envelope("HandshakeRequest", node, 1, true, null))),
    nodeId: node.id,
  };
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

/** A registered peer on a socket of its own (data, route and discovery modes; before the clock). */
async function registeredPeer(): Promise<{ sock: Deno.DatagramConn; nodeId: string }> {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
  const { request, nodeId } = plainRequest(sock.addr as Deno.NetAddr);
  const failed = setTimeout(() => {
    console.error("error: The server did not answer a HandshakeRequest within 5 s");
    Deno.exit(1);
  }, 5000);
  await handshakeOnce(sock, request, new Uint8Array(65_536));
  clearTimeout(failed);
  return { sock, nodeId };
}

/**
 * Registers N distinct peers, each from its own socket. Sockets and requests are made before the clock runs
 * (in batches, within the file descriptor limit); only the handshakes are timed, one measured window per
 * batch. With `--hold`, the addresses of the registered peers are kept for their leaving.
 */
async function handshakes() {
  const keyed = values.keyed;
  const concurrency = Number(values.concurrency);
  if (warmup > 0) {
    // Other distinct peers, from loopback addresses no measured batch uses (127.0.101.y on), not measured.
    await handshakeBatches(warmup, 100 * 250, false);
  }
  const run = await handshakeBatches(Number(values.peers ?? 1000), 0, true);
  report(run.done, run.latencies, {
    failed: run.failed,
    concurrency,
    ...(run.firstError !== null ? { firstError: run.firstError } : {}),
    ...(keyed ? { keyed, verify: values.verify ? "every response" : "first response of each batch" } : {}),
    ...(warmup > 0 ? { warmup } : {}),
    // Generator CPU per peer before the clock (sockets; for keyed peers also the identity, the X25519 key
    // and the signature), not counted in cpuMs.
    setupUsPerPeer: (run.setupMs * 1000) / Math.max(1, run.done + run.failed),
  });
  if (values.hold) await leave(run.held);
}

/**
 * `peers` handshakes in batches of 4,000 sockets, `--concurrency` at a time, within `--seconds`. Each batch
 * binds its own loopback source address, numbered from `firstBatch`. With `measure`, every batch is a
 * measured window and its latencies are kept.
 */
async function handshakeBatches(peers: number, firstBatch: number, measure: boolean) {
  const keyed = values.keyed;
  const concurrency = Number(values.concurrency);
  const batchSize = 4000;
  const latencies: number[] = [];
  const held: Deno.NetAddr[] = [];
  let done = 0;
  let failed = 0;
  let setupMs = 0;
  let firstError: string | null = null;
  const deadline = performance.now() + seconds * 1000;
  for (let first = 0; first < peers && performance.now() < deadline; first += batchSize) {
    const setupCpu = process.cpuUsage();
    const n = Math.min(batchSize, peers - first);
    // Each batch binds its own loopback source address: ports freed by a closed batch are reused by the
    // next, and a reused address would replace the earlier peer instead of adding one.
    const batch = firstBatch + first / batchSize;
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
    setupMs += (setupDelta.user + setupDelta.system) / 1000;
    let next = 0;
    const window = measure ? openWindow() : null;
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
          if (measure) latencies.push(performance.now() - t);
          done++;
          if (values.hold && measure) held.push(socks[i]!.addr as Deno.NetAddr);
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
    let timer: ReturnType<typeof setTimeout> | undefined;
    const limit = new Promise((r) => timer = setTimeout(r, Math.max(0, deadline - performance.now()) + 3000));
    await Promise.race([work, limit]);
    clearTimeout(timer);
    if (window) closeWindow(window);
    for (const s of socks) s.close();
    await work.catch(() => {});
  }
  return { done, failed, firstError, latencies, held, setupMs };
}

/**
 * Waits for a line on stdin, then has every held peer leave: its address bound again and a Disconnect sent
 * from it, paced (at most 40 a millisecond) so the server's receive buffer does not overflow. Prints how
 * many left and how many addresses could not be bound again.
 */
async function leave(addrs: Deno.NetAddr[]) {
  const reader = Deno.stdin.readable.getReader();
  await reader.read();
  reader.releaseLock();
  let sent = 0;
  let bindFailed = 0;
  const bye = encoder.encode(JSON.stringify(envelope("Disconnect", { reason: "bench" }, 2, false, null)));
  for (let first = 0; first < addrs.length; first += 4000) {
    const socks: Deno.DatagramConn[] = [];
    for (const a of addrs.slice(first, first + 4000)) {
      try {
        socks.push(Deno.listenDatagram({ transport: "udp", hostname: a.hostname, port: a.port }));
      } catch {
        bindFailed++;
      }
    }
    for (let i = 0; i < socks.length; i++) {
      await socks[i]!.send(bye, target).catch(() => {});
      sent++;
      if (i % 40 === 39) await sleep(1);
    }
    await sleep(20);
    for (const s of socks) s.close();
  }
  console.log(JSON.stringify({ left: sent, bindFailed }));
}

if (mode === "ping") {
  const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
  const rate = Number(values.rate);
  if (rate > 0) {
    // Paced, each Ping carries a nonce (as P2PClient's do); the server's Pong names it.
    const [before, after] = JSON.stringify(envelope("Ping", { nonce: 0 }, null, false, null)).split(
      '"nonce":0',
    );
    if (mmsgUnavailable() === null) {
      sock.close();
      pacedSpinning(
        { datagram: (n) => slabEncode(`${before}"nonce":${n}${after}`), numberOf: nonceOf },
        rate,
      );
    } else {
      await paced(
        sock,
        { datagram: (n) => slabEncode(`${before}"nonce":${n}${after}`), numberOf: nonceOf },
        rate,
      );
    }
  } else {
    const ping = encoder.encode(JSON.stringify(envelope("Ping", null, null, false, null)));
    await inFlight(sock, () => ping, Number(values.inflight), { sock, isReply: () => true });
  }
} else if (mode === "data" || mode === "route") {
  // Reliable Data needs a fresh sequence number (and id) per message: everything else is encoded up front.
  const to = mode === "route" ? await registeredPeer() : null;
  const { sock } = await registeredPeer();
  const payload = to ? `{"to":"${to.nodeId}","data":{"bench":true}}` : `{"bench":true}`;
  const middle =
    `","message_type":"Data","timestamp":${Math.floor(Date.now() / 1000)},"payload":${payload},` +
    `"sender_addr":null,"sequence_number":`;
  const suffix = `,"requires_ack":true,"ack_for":null}`;
  let seq = 1;
  const next = () => {
    seq++;
    return slabEncode(`{"id":"${counterId(seq)}${middle}${seq}${suffix}`);
  };
  const isData = (b: Uint8Array) => decoder.decode(b.subarray(0, 120)).includes('"Data"');
  if (!to) {
    await inFlight(sock, next, Number(values.inflight), { sock, isReply: isData });
  } else {
    // B acks every copy the server routes to it (the server retransmits otherwise).
    const ackMiddle = `","message_type":"Ack","timestamp":${Math.floor(Date.now() / 1000)},"payload":null,` +
      `"sender_addr":null,"sequence_number":`;
    let ackSeq = 1 << 30;
    const isRouted = (b: Uint8Array) => {
      const text = decoder.decode(b);
      if (!text.includes('"Data"')) return false;
      const id = text.slice(7, 43); // {"id":"<36 characters>" as the server writes every envelope
      const m = /"sequence_number":(\d+)/.exec(text);
      const ack = `{"id":"${counterId(ackSeq++)}${ackMiddle}${m ? m[1] : "null"},"requires_ack":false,` +
        `"ack_for":"${id}"}`;
      to.sock.send(slabEncode(ack), target).catch(() => {});
      return true;
    };
    await inFlight(sock, next, Number(values.inflight), { sock: to.sock, isReply: isRouted });
  }
} else if (mode === "discovery") {
  const peers: { sock: Deno.DatagramConn }[] = [];
  for (let i = 0; i < Number(values.peers ?? 64); i++) peers.push(await registeredPeer());
  const asker = peers[0]!.sock;
  const request = (n: number) =>
    slabEncode(JSON.stringify({ ...envelope("DiscoveryRequest", null, n, false, null), id: counterId(n) }));
  let seq = 1;
  let entries: number | null = null;
  const isAnswer = (b: Uint8Array) => {
    const head = decoder.decode(b.subarray(0, 100));
    if (!head.includes('"DiscoveryResponse"')) return false;
    if (entries === null) {
      const payload = JSON.parse(decoder.decode(b)).payload;
      entries = Array.isArray(payload) ? payload.length : (payload?.peers?.length ?? -1);
    }
    return true;
  };
  await inFlight(asker, () => request(++seq), Number(values.inflight), { sock: asker, isReply: isAnswer });
  // Reported after the result line so the orchestrator can check the answer's size.
  console.log(JSON.stringify({ entries }));
  for (const p of peers.slice(1)) p.sock.close();
} else if (mode === "stun") {
  // STUN Binding requests (RFC 8489), K in flight: a ring of requests with distinct transaction ids, encoded
  // before the clock starts (the server keeps no state per transaction). A reply is a Binding success
  // response, or the request itself from the bare echo server.
  const full = values["stun-request"] === "full";
  const ring = Array.from({ length: 4096 }, () =>
    encodeStun({
      method: 1,
      class: "request",
      id: Uint8Array.from([0x21, 0x12, 0xa4, 0x42, ...crypto.getRandomValues(new Uint8Array(12))]),
      attributes: full ? [{ type: STUN_ATTR.SOFTWARE, value: encoder.encode("p2p_server loadgen 1") }] : [],
      fingerprint: full,
    }));
  let next = 0;
  let answerBytes = 0;
  const isAnswer = (b: Uint8Array) => {
    if (b.length < 20 || b[4] !== 0x21 || b[5] !== 0x12 || b[6] !== 0xa4 || b[7] !== 0x42) return false;
    if (!((b[0] === 0x01 && b[1] === 0x01) || (b[0] === 0x00 && b[1] === 0x01))) return false;
    answerBytes = b.length;
    return true;
  };
  const sock = Deno.listenDatagram({ transport: "udp", hostname: values.host, port: 0 });
  await inFlight(sock, () => ring[next++ & 4095]!, Number(values.inflight), { sock, isReply: isAnswer });
  // Reported after the result line: the sizes of one request and of one answer.
  console.log(JSON.stringify({ requestBytes: ring[0]!.length, answerBytes }));
} else if (mode === "handshake") {
  await handshakes();
} else {
  console.error(
    `error: Unknown mode "${mode}": expected ping, data, route, discovery, stun or handshake`,
  );
  Deno.exit(2);
}
Deno.exit(0);
