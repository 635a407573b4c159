/**
 * A seeded, in-memory network for running the protocol core in virtual time: no sockets, no sleeps, no real
 * timers. Hosts are {@linkcode Endpoint}s (server or client role) and {@linkcode RawPeer}s (scripted peers
 * that send hand-crafted JSON and record what they receive), each at a TEST-NET address string such as
 * `"192.0.2.1:8080"`. `step()` jumps the virtual clock to the earliest event (a datagram delivery or an
 * endpoint's `nextDeadline()`) and runs it. Latency, jitter, loss and duplication are per direction and drawn
 * from a seeded PRNG, so a failing seed replays exactly.
 *
 * @module
 */
import { formatSocketAddr, parseSocketAddr, type SocketAddr } from "../src/address.ts";
import { type Config, resolveConfig } from "../src/config.ts";
import { Endpoint, type EndpointEvent } from "../src/endpoint.ts";
import type { Json, Message, MessageType, NodeInfo } from "../src/protocol.ts";

/** A virtual start time (ms) well inside the Unix era, so seconds and milliseconds cannot be confused. */
export const EPOCH_MS = 1_700_000_000_000;

/** mulberry32: a tiny, fast, seeded PRNG returning numbers in [0, 1). */
export function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A source of valid, lowercase, hyphenated UUID v4 strings drawn from `rand`. */
export function uuidSource(rand: () => number): () => string {
  return () => {
    const b = new Uint8Array(16);
    for (let i = 0; i < 16; i++) b[i] = Math.floor(rand() * 256);
    b[6] = (b[6]! & 0x0f) | 0x40; // version 4
    b[8] = (b[8]! & 0x3f) | 0x80; // RFC 4122 variant
    const hex = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    const parts = [hex.slice(0, 8), hex.slice(8, 12), hex.slice(12, 16), hex.slice(16, 20), hex.slice(20)];
    return parts.join("-");
  };
}

/** A small string hash (FNV-1a), used to derive per-host PRNG seeds from addresses. */
function hash(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** How one direction of the network behaves. */
export interface LinkProfile {
  /** One-way delay (ms). */
  latencyMs: number;
  /** Extra uniform random delay in [0, jitterMs) (ms); reorders datagrams. */
  jitterMs: number;
  /** Probability that a datagram is lost. */
  loss: number;
  /** Probability that a delivered datagram arrives twice. */
  duplicate: number;
}

/** One datagram as the network saw it. */
export interface TraceEntry {
  /** Virtual time it was sent (ms). */
  at: number;
  /** Sender address. */
  from: string;
  /** Destination address. */
  to: string;
  /** The bytes. */
  bytes: Uint8Array;
  /** How many copies were scheduled for delivery (0 = lost or no such host). */
  copies: number;
}

/** A datagram a host received. */
export interface Received {
  /** Virtual time of arrival (ms). */
  at: number;
  /** Source address. */
  from: string;
  /** The bytes. */
  bytes: Uint8Array;
  /** The decoded envelope (the sender is assumed to send valid JSON objects). */
  msg: Message;
}

interface InFlight {
  at: number;
  order: number;
  from: string;
  to: string;
  bytes: Uint8Array;
}

interface Host {
  readonly addr: string;
  deliver(now: number, from: string, bytes: Uint8Array): void;
}

/** More events than this at one virtual instant means the simulation no longer makes progress. */
const MAX_STEPS_AT_ONE_INSTANT = 100_000;

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** Decodes a datagram as JSON (throws on anything else). */
export function decode(bytes: Uint8Array): Message {
  return JSON.parse(fromUtf8.decode(bytes)) as Message;
}

/** Parses a TEST-NET `"ip:port"` string, throwing on a typo in a test. */
export function sock(addr: string): SocketAddr {
  const parsed = parseSocketAddr(addr);
  if (typeof parsed === "string") throw new TypeError(`Bad test address "${addr}": ${parsed}`);
  return parsed;
}

/** A NodeInfo for tests. */
export function nodeInfo(id: string, overrides: Partial<NodeInfo> = {}): NodeInfo {
  return {
    id,
    name: "node",
    version: "1.0.0",
    listen_addr: "192.0.2.200:9000",
    capabilities: [],
    metadata: {},
    ...overrides,
  };
}

/** Options of {@linkcode Sim}. */
export interface SimOptions {
  /** PRNG seed. @default {1} */
  seed?: number;
  /** Virtual start time (ms). @default {EPOCH_MS} */
  start?: number;
  /** The profile of every direction not set with {@linkcode Sim.link}. @default {latency 5 ms, no loss} */
  link?: Partial<LinkProfile>;
}

/** Options of {@linkcode Sim.addEndpoint}. */
export interface SimEndpointOptions {
  /** @default {"server"} */
  role?: "server" | "client";
  /** Config overrides (defaults otherwise). */
  config?: Partial<Config>;
  /** NodeInfo overrides; the id is seeded and `listen_addr` is the host address unless given. */
  node?: Partial<NodeInfo>;
}

/** An {@linkcode Endpoint} attached to the simulated network. */
export class SimEndpoint implements Host {
  /** Its address, `"ip:port"`. */
  readonly addr: string;
  /** The core under test. */
  readonly endpoint: Endpoint;
  /** Every event it produced, in order. */
  readonly events: EndpointEvent[] = [];
  /** Every datagram it received, in order (decoded when possible; undecodable ones are skipped here). */
  readonly inbox: Received[] = [];
  readonly #sim: Sim;

  constructor(sim: Sim, addr: string, endpoint: Endpoint) {
    this.#sim = sim;
    this.addr = addr;
    this.endpoint = endpoint;
  }

  /** The endpoint's node id. */
  get id(): string {
    return this.endpoint.node.id;
  }

  /** Events of one type. */
  eventsOf<K extends EndpointEvent["type"]>(type: K): Extract<EndpointEvent, { type: K }>[] {
    return this.events.filter((e): e is Extract<EndpointEvent, { type: K }> => e.type === type);
  }

  /** @internal */
  deliver(now: number, from: string, bytes: Uint8Array): void {
    try {
      this.inbox.push({ at: now, from, bytes, msg: decode(bytes) });
    } catch {
      // Malformed on purpose; the endpoint's own stats count it.
    }
    this.endpoint.handleDatagram(now, sock(from), bytes);
    this.drain();
  }

  /** Moves the endpoint's transmits onto the network and its events into {@linkcode events}. */
  drain(): void {
    for (const t of this.endpoint.takeTransmits()) {
      this.#sim.transmit(this.addr, formatSocketAddr(t.to), t.bytes);
    }
    for (const e of this.endpoint.takeEvents()) this.events.push(e);
  }
}

/** Options of {@linkcode RawPeer.send}. */
export interface RawSendOptions {
  /** Sequence number; `undefined` takes the next of the peer's counter, `null` sends none. */
  seq?: number | null;
  /** @default {false} */
  requiresAck?: boolean;
  /** @default {null} */
  ackFor?: string | number | null;
  /** Message id; seeded by default. */
  id?: string;
  /** Timestamp; the current time in seconds by default. */
  timestamp?: number;
}

/** Options of {@linkcode Sim.addRaw}. */
export interface RawPeerOptions {
  /** Ack every received message that asks for it (ack_for = id, sequence_number = its seq). @default {false} */
  autoAck?: boolean;
  /** Answer every received Ping with a Pong. @default {false} */
  autoPong?: boolean;
}

/** A scripted peer: sends what the test tells it to and records everything it receives. */
export class RawPeer implements Host {
  /** Its address, `"ip:port"`. */
  readonly addr: string;
  /** Every datagram it received, in order. */
  readonly inbox: Received[] = [];
  /** Answers Acks automatically when set. */
  autoAck: boolean;
  /** Answers Pings automatically when set. */
  autoPong: boolean;
  /** The next sequence number {@linkcode send} uses. */
  nextSeq = 1;
  readonly #sim: Sim;
  readonly #newId: () => string;

  constructor(sim: Sim, addr: string, newId: () => string, options: RawPeerOptions) {
    this.#sim = sim;
    this.addr = addr;
    this.#newId = newId;
    this.autoAck = options.autoAck ?? false;
    this.autoPong = options.autoPong ?? false;
  }

  /** A fresh seeded UUID v4 (for node ids). */
  newId(): string {
    return this.#newId();
  }

  /** @internal */
  deliver(now: number, from: string, bytes: Uint8Array): void {
    const msg = decode(bytes);
    this.inbox.push({ at: now, from, bytes, msg });
    if (this.autoAck && msg.requires_ack && msg.message_type !== "Ack") this.ack(from, msg);
    if (this.autoPong && msg.message_type === "Ping") this.send(from, "Pong", null);
  }

  /** Sends a full eight-key envelope and returns it. */
  send(to: string, type: MessageType, payload: Json, options: RawSendOptions = {}): Message {
    let seq: number | null;
    if (options.seq === undefined) seq = this.nextSeq++;
    else seq = options.seq;
    const msg: Message = {
      id: options.id ?? this.#newId(),
      message_type: type,
      timestamp: options.timestamp ?? Math.floor(this.#sim.now / 1000),
      payload,
      sender_addr: this.addr,
      sequence_number: seq,
      requires_ack: options.requiresAck ?? false,
      ack_for: options.ackFor ?? null,
    };
    this.#sim.transmit(this.addr, to, utf8.encode(JSON.stringify(msg)));
    return msg;
  }

  /** Sends arbitrary bytes (or text, UTF-8 encoded). */
  sendBytes(to: string, data: Uint8Array | string): void {
    this.#sim.transmit(this.addr, to, typeof data === "string" ? utf8.encode(data) : data);
  }

  /** Sends a HandshakeRequest (requires_ack true) carrying `info`. */
  handshake(to: string, info: NodeInfo, options: RawSendOptions = {}): Message {
    return this.send(to, "HandshakeRequest", info as unknown as Json, { requiresAck: true, ...options });
  }

  /** Acks `msg` the way this project does: ack_for = its id, sequence_number = its sequence number. */
  ack(to: string, msg: Message): Message {
    return this.send(to, "Ack", null, { seq: msg.sequence_number, ackFor: msg.id });
  }

  /** Received messages, optionally of one type. */
  messages(type?: MessageType): Message[] {
    return this.inbox.filter((r) => type === undefined || r.msg.message_type === type).map((r) => r.msg);
  }

  /** Received datagrams, optionally of one type. */
  received(type?: MessageType): Received[] {
    return this.inbox.filter((r) => type === undefined || r.msg.message_type === type);
  }

  /** The last received message of a type; throws when there is none. */
  last(type: MessageType): Message {
    const all = this.messages(type);
    const msg = all[all.length - 1];
    if (!msg) throw new Error(`${this.addr} received no ${type}`);
    return msg;
  }

  /** Forgets everything received so far. */
  clear(): void {
    this.inbox.length = 0;
  }
}

/** The simulated network and its virtual clock. */
export class Sim {
  /** The PRNG seed; printed when a {@linkcode withSeeds} body fails. */
  readonly seed: number;
  /** The virtual time (ms). */
  now: number;
  /** Every datagram sent, in order. */
  readonly trace: TraceEntry[] = [];
  /** Steps taken so far. */
  steps = 0;
  readonly #rand: () => number;
  readonly #defaultLink: LinkProfile;
  readonly #links = new Map<string, LinkProfile>();
  readonly #hosts = new Map<string, Host>();
  readonly #endpoints: SimEndpoint[] = [];
  #queue: InFlight[] = [];
  #order = 0;
  #instant = -Infinity;
  #stepsAtInstant = 0;

  /** @param options See {@linkcode SimOptions}. */
  constructor(options: SimOptions = {}) {
    this.seed = options.seed ?? 1;
    this.now = options.start ?? EPOCH_MS;
    this.#rand = mulberry32(this.seed);
    this.#defaultLink = { latencyMs: 5, jitterMs: 0, loss: 0, duplicate: 0, ...options.link };
  }

  /** Attaches an Endpoint at `addr` with a seeded node id and message ids. */
  addEndpoint(addr: string, options: SimEndpointOptions = {}): SimEndpoint {
    this.#checkFree(addr);
    const newId = uuidSource(mulberry32(this.seed ^ hash(addr)));
    const node = nodeInfo(newId(), { name: `ep-${addr}`, listen_addr: addr, ...options.node });
    const endpoint = new Endpoint({
      role: options.role ?? "server",
      config: resolveConfig(options.config ?? {}),
      node,
      newId,
      now: this.now,
    });
    const host = new SimEndpoint(this, addr, endpoint);
    this.#hosts.set(addr, host);
    this.#endpoints.push(host);
    return host;
  }

  /** Attaches a scripted peer at `addr`. */
  addRaw(addr: string, options: RawPeerOptions = {}): RawPeer {
    this.#checkFree(addr);
    const peer = new RawPeer(this, addr, uuidSource(mulberry32(this.seed ^ hash(addr))), options);
    this.#hosts.set(addr, peer);
    return peer;
  }

  /** Detaches the host at `addr`: datagrams to it are lost from now on (a crash or a blackhole). */
  remove(addr: string): void {
    const host = this.#hosts.get(addr);
    this.#hosts.delete(addr);
    const i = this.#endpoints.findIndex((e) => e === host);
    if (i >= 0) this.#endpoints.splice(i, 1);
  }

  /** Sets the profile of the direction `from` -> `to`. */
  link(from: string, to: string, profile: Partial<LinkProfile>): void {
    this.#links.set(`${from}>${to}`, { ...this.#profile(from, to), ...profile });
  }

  /** Runs a command on an endpoint at the current time, then drains what it produced. */
  act<T>(host: SimEndpoint, command: (endpoint: Endpoint, now: number) => T): T {
    const result = command(host.endpoint, this.now);
    host.drain();
    return result;
  }

  /** @internal Puts a datagram on the wire. */
  transmit(from: string, to: string, bytes: Uint8Array): void {
    const entry: TraceEntry = { at: this.now, from, to, bytes, copies: 0 };
    this.trace.push(entry);
    if (!this.#hosts.has(to)) return;
    const p = this.#profile(from, to);
    if (p.loss > 0 && this.#rand() < p.loss) return;
    const copies = p.duplicate > 0 && this.#rand() < p.duplicate ? 2 : 1;
    for (let i = 0; i < copies; i++) {
      const jitter = p.jitterMs > 0 ? Math.floor(this.#rand() * p.jitterMs) : 0;
      this.#push({ at: this.now + p.latencyMs + jitter + i, order: this.#order++, from, to, bytes });
    }
    entry.copies = copies;
  }

  /** When the next event happens, or `Infinity`. */
  nextEventAt(): number {
    let at = this.#queue[0]?.at ?? Infinity;
    for (const e of this.#endpoints) at = Math.min(at, e.endpoint.nextDeadline());
    return at;
  }

  /** Runs the earliest event (deliveries before timers at the same instant). Returns false when idle. */
  step(): boolean {
    const datagramAt = this.#queue[0]?.at ?? Infinity;
    let timerAt = Infinity;
    let due: SimEndpoint | undefined;
    for (const e of this.#endpoints) {
      const d = e.endpoint.nextDeadline();
      if (d < timerAt) {
        timerAt = d;
        due = e;
      }
    }
    if (datagramAt === Infinity && due === undefined) return false;
    this.steps++;
    const at = Math.min(datagramAt, timerAt);
    if (at > this.#instant) {
      this.#instant = at;
      this.#stepsAtInstant = 0;
    } else if (++this.#stepsAtInstant > MAX_STEPS_AT_ONE_INSTANT) {
      // A deadline that stays due after handleTimeout (or a message storm) would spin here forever.
      throw new Error(`Simulation livelock: ${this.#stepsAtInstant} steps at t=${at} (seed ${this.seed})`);
    }
    if (datagramAt <= timerAt) {
      const d = this.#pop()!;
      this.now = Math.max(this.now, d.at);
      this.#hosts.get(d.to)?.deliver(this.now, d.from, d.bytes);
    } else {
      this.now = Math.max(this.now, timerAt);
      due!.endpoint.handleTimeout(this.now);
      due!.drain();
    }
    return true;
  }

  /** Runs every event due at or before `t`, then sets the clock to `t`. */
  runUntil(t: number): void {
    while (this.nextEventAt() <= t) this.step();
    this.now = Math.max(this.now, t);
  }

  /** Runs `ms` of virtual time. */
  runFor(ms: number): void {
    this.runUntil(this.now + ms);
  }

  /** The trace entries sent by `from`, decoded. */
  sentBy(from: string): { at: number; to: string; msg: Message; bytes: Uint8Array }[] {
    return this.trace.filter((t) => t.from === from).map((t) => ({
      at: t.at,
      to: t.to,
      msg: decode(t.bytes),
      bytes: t.bytes,
    }));
  }

  #profile(from: string, to: string): LinkProfile {
    return this.#links.get(`${from}>${to}`) ?? this.#defaultLink;
  }

  #checkFree(addr: string): void {
    sock(addr);
    if (this.#hosts.has(addr)) throw new Error(`Address "${addr}" is taken in the simulation`);
  }

  // A binary min-heap on (at, order): equal times keep send order, so runs are reproducible.
  #push(d: InFlight): void {
    const q = this.#queue;
    q.push(d);
    let i = q.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(d, q[p]!)) break;
      q[i] = q[p]!;
      i = p;
    }
    q[i] = d;
  }

  #pop(): InFlight | undefined {
    const q = this.#queue;
    const top = q[0];
    const last = q.pop();
    if (q.length === 0 || last === undefined) return top;
    let i = 0;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= q.length) break;
      const r = l + 1;
      const c = r < q.length && before(q[r]!, q[l]!) ? r : l;
      if (!before(q[c]!, last)) break;
      q[i] = q[c]!;
      i = c;
    }
    q[i] = last;
    return top;
  }
}

function before(a: InFlight, b: InFlight): boolean {
  return a.at < b.at || (a.at === b.at && a.order < b.order);
}

/**
 * Runs `body` once per seed. When it fails, the seed is printed and put in front of the error message, so
 * the run can be replayed exactly with that one seed.
 */
export function withSeeds(seeds: readonly number[], body: (seed: number) => void): void {
  for (const seed of seeds) {
    try {
      body(seed);
    } catch (error) {
      console.error(`Simulation failed with seed ${seed}; replay with withSeeds([${seed}], ...)`);
      if (error instanceof Error) error.message = `[sim seed ${seed}] ${error.message}`;
      throw error;
    }
  }
}
