/**
 * A seeded, in-memory network for running the protocol core in virtual time: no sockets, no sleeps, no real
 * timers. Hosts are {@linkcode Endpoint}s (server or client role) and {@linkcode RawPeer}s (scripted peers
 * that send hand-crafted JSON and record what they receive), each at a TEST-NET address string such as
 * `"192.0.2.1:8080"`. `step()` jumps the virtual clock to the earliest event (a datagram delivery or an
 * endpoint's `nextDeadline()`) and runs it. Latency, jitter, loss and duplication are per direction and drawn
 * from a seeded PRNG, so a failing seed replays exactly.
 *
 * Impairments for reliability tests, all off by default and per direction ({@linkcode LinkProfile}):
 * Gilbert-Elliott burst loss (`burst`), corruption (`corrupt`) and reordering (`reorder`,
 * `reorderDelayMs`). Per address or host, and over time: blackholes ({@linkcode Sim.blackhole},
 * {@linkcode Sim.blackholeFor}, {@linkcode Sim.isolate}) and NAT rebinding ({@linkcode Sim.rebind}).
 * {@linkcode Sim.counters} says what the network did (sent, delivered, lost by cause, duplicated, corrupted,
 * reordered).
 *
 * Determinism: every random choice comes from the one seeded PRNG of the {@linkcode Sim}, and the choices for
 * one datagram are drawn at send time in a fixed order (see {@linkcode Sim.transmit}). A draw is only made
 * when its probability is above 0, so an impairment that is off draws nothing and seeds recorded before the
 * impairments existed replay exactly as they did.
 *
 * @module
 */
import { formatSocketAddr, parseSocketAddr, type SocketAddr } from "../src/wire/address.ts";
import { type Config, resolveConfig } from "../src/config.ts";
import { Endpoint, type EndpointEvent } from "../src/core/endpoint.ts";
import type { Json, Message, MessageType, NodeInfo } from "../src/wire/mod.ts";
import { mulberry32 } from "../src/core/random.ts";
import type { Identity } from "../src/core/auth.ts";
import type { KeyPair } from "../src/deps/crypto.ts";

/** A virtual start time (ms) well inside the Unix era, so seconds and milliseconds cannot be confused. */
export const EPOCH_MS = 1_700_000_000_000;

/** mulberry32, re-exported for tests: a tiny, fast, seeded PRNG returning numbers in [0, 1). */
export { mulberry32 };

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

/**
 * Gilbert-Elliott burst loss: a two-state Markov chain (good, bad) per direction, stepped once for every
 * datagram that reaches the random stages of {@linkcode Sim.transmit} (not for datagrams already lost to a
 * blackhole or sent to an address with no host). For each datagram the chain first moves (good -> bad with
 * probability `p`, bad -> good with probability `r`), then the datagram is lost with the loss probability of
 * the state it is now in. The chain starts good and keeps its state across datagrams and across
 * {@linkcode Sim.link} changes of the same direction.
 *
 * With the defaults (`lossGood` 0, `lossBad` 1, the Gilbert model) bursts have a mean length of `1 / r`
 * datagrams and the long-run loss rate is `p / (p + r)`.
 */
export interface BurstLoss {
  /** Probability, per datagram, of moving from the good state to the bad one. */
  p: number;
  /** Probability, per datagram, of moving from the bad state back to the good one. */
  r: number;
  /** Probability that a datagram is lost in the good state. @default {0} */
  lossGood?: number;
  /** Probability that a datagram is lost in the bad state. @default {1} */
  lossBad?: number;
}

/**
 * How one direction of the network behaves. The four required fields are the original profile; the optional
 * ones are impairments, off when absent or 0. Profiles are keyed by address, so they do not follow a host
 * that {@linkcode Sim.rebind} moves.
 */
export interface LinkProfile {
  /** One-way delay (ms). */
  latencyMs: number;
  /** Extra uniform random delay in [0, jitterMs) (ms); reorders datagrams. */
  jitterMs: number;
  /** Probability that a datagram is lost (independently of every other one: Bernoulli loss). */
  loss: number;
  /** Probability that a delivered datagram arrives twice. */
  duplicate: number;
  /** Burst loss on top of `loss`; `undefined` turns it off. @default {off} */
  burst?: BurstLoss | undefined;
  /**
   * Probability that a delivered copy is corrupted. The kind of damage is drawn too: flip 1 to 8 distinct
   * random bits, overwrite a random byte with a different value, truncate to a random shorter length, or
   * append 1 to 16 random bytes. The damaged copy is a new array that always differs from what was sent; the
   * sender's bytes are never modified (endpoints resend the same array). @default {0}
   */
  corrupt?: number;
  /**
   * Probability that a delivered copy is held back by an extra `reorderDelayMs` on top of latency and jitter,
   * so datagrams sent after it within that time overtake it. @default {0}
   */
  reorder?: number;
  /** The extra delay of a reordered copy (ms); must be above 0 when `reorder` is. @default {0} */
  reorderDelayMs?: number;
}

/** Why the network lost a datagram, as counted in {@linkcode NetCounters.lost}. */
export const LOSS_CAUSES = ["random", "burst", "blackhole", "no_host"] as const;

/**
 * One of {@linkcode LOSS_CAUSES}: `random` is {@linkcode LinkProfile.loss}, `burst` is
 * {@linkcode LinkProfile.burst}, `blackhole` is a {@linkcode Sim.blackhole} window, and `no_host` means no
 * host was at the destination address when the datagram was sent or when it arrived.
 */
export type LossCause = typeof LOSS_CAUSES[number];

/** The kinds of damage {@linkcode LinkProfile.corrupt} does. */
export const CORRUPTION_KINDS = ["flip", "overwrite", "truncate", "append"] as const;

/** One of {@linkcode CORRUPTION_KINDS}. */
export type CorruptionKind = typeof CORRUPTION_KINDS[number];

/**
 * What the network did so far, as returned by {@linkcode Sim.counters}. The unit is the copy: a datagram is
 * one copy and a duplication adds one, so `sent + duplicated === delivered + lostTotal + inFlight`.
 */
export interface NetCounters {
  /** Datagrams handed to the network (the length of {@linkcode Sim.trace}). */
  sent: number;
  /** Copies handed to a host. */
  delivered: number;
  /** Extra copies made by {@linkcode LinkProfile.duplicate}. */
  duplicated: number;
  /** Copies damaged by {@linkcode LinkProfile.corrupt}. */
  corrupted: number;
  /** The same, by kind of damage. */
  corruptions: Record<CorruptionKind, number>;
  /** Copies given the extra {@linkcode LinkProfile.reorderDelayMs} (whether or not anything overtook them). */
  reordered: number;
  /** Copies lost, by cause. */
  lost: Record<LossCause, number>;
  /** Sum of `lost`. */
  lostTotal: number;
  /** Copies scheduled but not yet arrived. */
  inFlight: number;
}

/** In {@linkcode Sim.blackhole}, matches every address. */
export const ANY = "*";

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
  /** Why it was lost at send time; `null` when copies were scheduled. */
  lost: LossCause | null;
  /** How many of the copies were corrupted (the trace keeps the bytes as sent). */
  corrupted: number;
  /** How many of the copies were given the extra reorder delay. */
  reordered: number;
  /**
   * How many copies a host has received so far. Once nothing is in flight, `delivered < copies` means copies
   * were lost on arrival because the destination host had been removed or rebound ({@linkcode Sim.rebind}).
   */
  delivered: number;
}

/** A datagram a host received, decodable or not. */
export interface Arrival {
  /** Virtual time of arrival (ms). */
  at: number;
  /** Source address. */
  from: string;
  /** The bytes (corrupted ones included). */
  bytes: Uint8Array;
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
  entry: TraceEntry;
}

/** The key of the internal method with which the Sim moves a host to a new address. */
const MOVE: unique symbol = Symbol("move");

/** The key of the internal method with which a host tells the Sim's observers about an endpoint event. */
const NOTIFY: unique symbol = Symbol("notify");

/**
 * Told everything that happens on a {@linkcode Sim}, in the order it happens (see {@linkcode Sim.observe}).
 * Used by the golden-trace test to record one ordered log of every transmit and every event.
 */
export interface SimObserver {
  /** A datagram was put on the wire; its fate at send time (copies, loss) is already in `entry`. */
  transmit?(entry: TraceEntry): void;
  /** An endpoint produced `event` (at the Sim's current time), after the transmits of the same step. */
  event?(host: SimEndpoint, event: EndpointEvent): void;
}

interface Host {
  readonly addr: string;
  deliver(now: number, from: string, bytes: Uint8Array): void;
  [MOVE](addr: string): void;
}

interface Blackhole {
  from: string;
  to: string;
  start: number;
  end: number;
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
  /**
   * A key-based identity (`generateIdentity()` from src/core/auth.ts); the node id becomes its key's. The
   * X25519 exchanges use the OS's randomness unless `generateX25519` is given, so traces with keys differ from
   * run to run in their bytes, not in their outcomes. @default {none: an unkeyed endpoint}
   */
  identity?: Identity;
  /** Cluster mode: the instance id (see `Endpoint`'s `instance` option). @default {none} */
  instance?: string;
  /** The endpoint's source of randomness (`Endpoint`'s `random` option). @default {the Endpoint's own} */
  random?: () => number;
  /** The endpoint's cookie secret (`Endpoint`'s `cookieSecret` option). @default {the Endpoint's own} */
  cookieSecret?: Uint8Array;
  /** X25519 key generation (`Endpoint`'s `generateX25519` option). @default {the OS's randomness} */
  generateX25519?: () => KeyPair;
  /** Signed request ids remembered against replays (`Endpoint`'s `replayCacheSize`). @default {65,536} */
  replayCacheSize?: number;
  /**
   * Addresses of the endpoint's alternate sockets (RFC 5780), numbered 1, 2, ... after its main one: what
   * arrives there is fed with that socket's number, and transmits naming it leave from there; the endpoint
   * is told all of them (`Endpoint.setSockets`). @default {none}
   */
  alternates?: string[];
}

/** An {@linkcode Endpoint} attached to the simulated network. */
export class SimEndpoint implements Host {
  /** The core under test. */
  readonly endpoint: Endpoint;
  /** Every event it produced, in order. */
  readonly events: EndpointEvent[] = [];
  /** Every datagram it received, in order (decoded when possible; undecodable ones are skipped here). */
  readonly inbox: Received[] = [];
  /** Every datagram it received, in order, undecodable ones included. */
  readonly arrivals: Arrival[] = [];
  /** The addresses of its alternate sockets (socket 1, 2, ...). */
  readonly alternates: readonly string[];
  readonly #sim: Sim;
  #addr: string;

  constructor(sim: Sim, addr: string, endpoint: Endpoint, alternates: readonly string[] = []) {
    this.#sim = sim;
    this.#addr = addr;
    this.endpoint = endpoint;
    this.alternates = alternates;
  }

  /**
   * Its address on the network, `"ip:port"`: where it receives and what its datagrams come from. After
   * {@linkcode Sim.rebind} this is the new address, while the endpoint keeps its own `listen_addr` and
   * `sender_addr` (a host behind a NAT whose internal address did not change).
   */
  get addr(): string {
    return this.#addr;
  }

  /** @internal */
  [MOVE](addr: string): void {
    this.#addr = addr;
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
  deliver(now: number, from: string, bytes: Uint8Array, socket = 0): void {
    this.arrivals.push({ at: now, from, bytes });
    try {
      this.inbox.push({ at: now, from, bytes, msg: decode(bytes) });
    } catch {
      // Malformed on purpose; the endpoint's own stats count it.
    }
    this.endpoint.handleDatagram(now, sock(from), bytes, socket);
    this.drain();
  }

  /** Moves the endpoint's transmits onto the network and its events into {@linkcode events}. */
  drain(): void {
    for (const t of this.endpoint.takeTransmits()) {
      const from = t.socket ? this.alternates[t.socket - 1] : this.addr;
      if (from === undefined) throw new Error(`Transmit from socket ${t.socket}, which ${this.addr} lacks`);
      this.#sim.transmit(from, formatSocketAddr(t.to), t.bytes);
    }
    for (const e of this.endpoint.takeEvents()) {
      this.events.push(e);
      this.#sim[NOTIFY](this, e);
    }
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
  /**
   * The address it was attached at. Its envelopes always carry this as `sender_addr`, even after
   * {@linkcode Sim.rebind} moved it (a host behind a NAT does not see its public address change).
   */
  readonly localAddr: string;
  /** Every datagram it received that decodes as a JSON object, in order. */
  readonly inbox: Received[] = [];
  /** Every datagram it received, in order, undecodable (corrupted) ones included. */
  readonly arrivals: Arrival[] = [];
  /** Answers Acks automatically when set. */
  autoAck: boolean;
  /** Answers Pings automatically when set. */
  autoPong: boolean;
  /** The next sequence number {@linkcode send} uses. */
  nextSeq = 1;
  readonly #sim: Sim;
  readonly #newId: () => string;
  #addr: string;

  constructor(sim: Sim, addr: string, newId: () => string, options: RawPeerOptions) {
    this.#sim = sim;
    this.localAddr = addr;
    this.#addr = addr;
    this.#newId = newId;
    this.autoAck = options.autoAck ?? false;
    this.autoPong = options.autoPong ?? false;
  }

  /** Its address on the network, `"ip:port"`: where it receives and what its datagrams come from. */
  get addr(): string {
    return this.#addr;
  }

  /** @internal */
  [MOVE](addr: string): void {
    this.#addr = addr;
  }

  /** A fresh seeded UUID v4 (for node ids). */
  newId(): string {
    return this.#newId();
  }

  /** @internal */
  deliver(now: number, from: string, bytes: Uint8Array): void {
    this.arrivals.push({ at: now, from, bytes });
    let msg: Message;
    try {
      msg = decode(bytes);
    } catch {
      return; // Corrupted on the way: only in arrivals.
    }
    if (typeof msg !== "object" || msg === null || Array.isArray(msg)) return;
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
      sender_addr: this.localAddr,
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

/**
 * The simulated network and its virtual clock.
 *
 * @example
 * ```ts
 * import { Sim } from "./sim.ts";
 * const sim = new Sim({ seed: 7, link: { latencyMs: 10, burst: { p: 0.05, r: 0.5 } } });
 * const a = sim.addRaw("192.0.2.1:1000");
 * const b = sim.addRaw("192.0.2.2:2000");
 * for (let i = 0; i < 1_000; i++) a.sendBytes(b.addr, `datagram ${i}`);
 * sim.runFor(100);
 * const c = sim.counters;
 * if (c.delivered + c.lost.burst !== 1_000 || b.arrivals.length !== c.delivered) throw new Error("counts");
 * ```
 */
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
  /** Gilbert-Elliott state per direction (`"from>to"`): true while bad. */
  readonly #burstBad = new Map<string, boolean>();
  readonly #blackholes: Blackhole[] = [];
  readonly #gates: ((from: string, to: string, now: number, bytes: Uint8Array) => boolean)[] = [];
  readonly #counters = {
    sent: 0,
    delivered: 0,
    duplicated: 0,
    corrupted: 0,
    corruptions: zeroes(CORRUPTION_KINDS),
    reordered: 0,
    lost: zeroes(LOSS_CAUSES),
  };
  readonly #observers: SimObserver[] = [];
  #queue: InFlight[] = [];
  #order = 0;
  #instant = -Infinity;
  #stepsAtInstant = 0;

  /** @param options See {@linkcode SimOptions}. */
  constructor(options: SimOptions = {}) {
    this.seed = options.seed ?? 1;
    this.now = options.start ?? EPOCH_MS;
    this.#rand = mulberry32(this.seed);
    this.#defaultLink = checkProfile({ latencyMs: 5, jitterMs: 0, loss: 0, duplicate: 0, ...options.link });
  }

  /** Attaches an Endpoint at `addr` with a seeded node id and message ids. */
  addEndpoint(addr: string, options: SimEndpointOptions = {}): SimEndpoint {
    this.#checkFree(addr);
    const newId = uuidSource(mulberry32(this.seed ^ hash(addr)));
    const seededId = newId();
    const node = nodeInfo(options.identity?.nodeId ?? seededId, {
      name: `ep-${addr}`,
      listen_addr: addr,
      ...options.node,
      ...(options.identity ? { id: options.identity.nodeId } : {}),
    });
    const endpoint = new Endpoint({
      role: options.role ?? "server",
      config: resolveConfig(options.config ?? {}),
      node,
      newId,
      now: this.now,
      ...(options.identity ? { identity: options.identity } : {}),
      ...(options.instance !== undefined ? { instance: options.instance } : {}),
      ...(options.random ? { random: options.random } : {}),
      ...(options.cookieSecret ? { cookieSecret: options.cookieSecret } : {}),
      ...(options.generateX25519 ? { generateX25519: options.generateX25519 } : {}),
      ...(options.replayCacheSize ? { replayCacheSize: options.replayCacheSize } : {}),
    });
    const alternates = options.alternates ?? [];
    const host = new SimEndpoint(this, addr, endpoint, alternates);
    this.#hosts.set(addr, host);
    this.#endpoints.push(host);
    alternates.forEach((alt, i) => {
      this.#checkFree(alt);
      this.#hosts.set(alt, {
        addr: alt,
        deliver: (now, from, bytes) => host.deliver(now, from, bytes, i + 1),
        [MOVE]: () => {
          throw new Error("an alternate socket does not move");
        },
      });
    });
    if (alternates.length > 0) endpoint.setSockets([addr, ...alternates].map(sock));
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

  /**
   * NAT rebinding: the host at `oldAddr` is now at `newAddr`. From now on it sends from `newAddr` and
   * receives at `newAddr`; datagrams to `oldAddr`, those already in flight included, are lost (cause
   * `no_host`) unless another host is attached there later. Datagrams it sent before the move still arrive
   * from `oldAddr`. The host keeps its own idea of its address (an endpoint's `listen_addr`, a raw peer's
   * `sender_addr`). Link profiles, burst state and blackholes are keyed by address and stay with `oldAddr`.
   *
   * @throws {Error} When no host is at `oldAddr` or `newAddr` is taken.
   */
  rebind(oldAddr: string, newAddr: string): void {
    const host = this.#hosts.get(oldAddr);
    if (!host) throw new Error(`Cannot rebind "${oldAddr}": no host at that address in the simulation`);
    this.#checkFree(newAddr);
    this.#hosts.delete(oldAddr);
    this.#hosts.set(newAddr, host);
    host[MOVE](newAddr);
  }

  /** Sets the profile of the direction `from` -> `to` (merged into its current profile). */
  link(from: string, to: string, profile: Partial<LinkProfile>): void {
    this.#links.set(`${from}>${to}`, checkProfile({ ...this.#profile(from, to), ...profile }));
  }

  /**
   * Loses every datagram sent from `from` to `to` while `startMs <= now < endMs` (absolute virtual times).
   * Either address may be {@linkcode ANY}. The decision is made at send time: datagrams already in flight when
   * the window opens still arrive, and those sent just before it closes are lost even if they would arrive
   * after. Windows are keyed by address, so they do not follow a host that {@linkcode rebind} moves.
   *
   * @throws {RangeError} When the window is not a time interval.
   */
  blackhole(from: string, to: string, startMs: number, endMs = Infinity): void {
    if (from !== ANY) sock(from);
    if (to !== ANY) sock(to);
    if (Number.isNaN(startMs) || Number.isNaN(endMs) || endMs < startMs) {
      throw new RangeError(`Bad blackhole window "${startMs}..${endMs}": the end must not precede the start`);
    }
    this.#blackholes.push({ from, to, start: startMs, end: endMs });
  }

  /** {@linkcode blackhole} from now for `durationMs`. */
  blackholeFor(from: string, to: string, durationMs: number): void {
    this.blackhole(from, to, this.now, this.now + durationMs);
  }

  /** Blackholes all traffic to and from `addr` while `startMs <= now < endMs` (see {@linkcode blackhole}). */
  isolate(addr: string, startMs: number, endMs = Infinity): void {
    this.blackhole(addr, ANY, startMs, endMs);
    this.blackhole(ANY, addr, startMs, endMs);
  }

  /**
   * Adds a gate: every datagram is offered to it at send time (after the blackholes, before anything draws)
   * and lost as a `blackhole` when it returns false. A stateful gate models a middlebox such as a NAT that
   * forgets idle bindings (with an observer that tells it what was sent).
   */
  gate(fn: (from: string, to: string, now: number, bytes: Uint8Array) => boolean): void {
    this.#gates.push(fn);
  }

  /** Adds an observer: from now on it is told every transmit and every endpoint event, in order. */
  observe(observer: SimObserver): void {
    this.#observers.push(observer);
  }

  /** @internal */
  [NOTIFY](host: SimEndpoint, event: EndpointEvent): void {
    for (const o of this.#observers) o.event?.(host, event);
  }

  /** Runs a command on an endpoint at the current time, then drains what it produced. */
  act<T>(host: SimEndpoint, command: (endpoint: Endpoint, now: number) => T): T {
    const result = command(host.endpoint, this.now);
    host.drain();
    return result;
  }

  /**
   * @internal Puts a datagram on the wire. Its fate is decided now, in this order: a blackhole window, then no
   * host at `to` (neither draws), then burst loss (a state-change draw, and a loss draw when the state's loss is
   * above 0), random loss, duplication, and for each copy in turn: jitter, reordering, corruption (whether,
   * then the kind and its details). Only probabilities above 0 draw.
   */
  transmit(from: string, to: string, bytes: Uint8Array): void {
    const entry = this.#transmit(from, to, bytes);
    for (const o of this.#observers) o.transmit?.(entry);
  }

  #transmit(from: string, to: string, bytes: Uint8Array): TraceEntry {
    const entry: TraceEntry = {
      at: this.now,
      from,
      to,
      bytes,
      copies: 0,
      lost: null,
      corrupted: 0,
      reordered: 0,
      delivered: 0,
    };
    this.trace.push(entry);
    const counters = this.#counters;
    counters.sent++;
    const lost = this.#lossAtSend(from, to, bytes);
    if (lost !== null) {
      entry.lost = lost;
      counters.lost[lost]++;
      return entry;
    }
    const p = this.#profile(from, to);
    const copies = this.#chance(p.duplicate) ? 2 : 1;
    counters.duplicated += copies - 1;
    for (let i = 0; i < copies; i++) {
      let delay = p.latencyMs + i;
      if (p.jitterMs > 0) delay += Math.floor(this.#rand() * p.jitterMs);
      if (this.#chance(p.reorder ?? 0)) {
        delay += p.reorderDelayMs ?? 0;
        entry.reordered++;
        counters.reordered++;
      }
      let out = bytes;
      if (this.#chance(p.corrupt ?? 0)) {
        const kind = bytes.length === 0 ? "append" : CORRUPTION_KINDS[Math.floor(this.#rand() * 4)]!;
        out = this.#corrupt(bytes, kind);
        entry.corrupted++;
        counters.corrupted++;
        counters.corruptions[kind]++;
      }
      this.#push({ at: this.now + delay, order: this.#order++, from, to, bytes: out, entry });
    }
    entry.copies = copies;
    return entry;
  }

  /** A fresh snapshot of what the network did so far (see {@linkcode NetCounters}). */
  get counters(): NetCounters {
    const c = this.#counters;
    const lost = { ...c.lost };
    return {
      sent: c.sent,
      delivered: c.delivered,
      duplicated: c.duplicated,
      corrupted: c.corrupted,
      corruptions: { ...c.corruptions },
      reordered: c.reordered,
      lost,
      lostTotal: Object.values(lost).reduce((a, b) => a + b, 0),
      inFlight: this.#queue.length,
    };
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
      const host = this.#hosts.get(d.to);
      if (host) {
        this.#counters.delivered++;
        d.entry.delivered++;
        host.deliver(this.now, d.from, d.bytes);
      } else {
        this.#counters.lost.no_host++; // Removed or rebound while the datagram was in flight.
      }
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

  /** One draw when `probability` is above 0 (so a disabled impairment leaves the PRNG untouched). */
  #chance(probability: number): boolean {
    return probability > 0 && this.#rand() < probability;
  }

  /** The send-time loss verdict, or null when the datagram goes on to duplication and delivery. */
  #lossAtSend(from: string, to: string, bytes: Uint8Array): LossCause | null {
    const now = this.now;
    for (const h of this.#blackholes) {
      if (
        now >= h.start && now < h.end && (h.from === ANY || h.from === from) && (h.to === ANY || h.to === to)
      ) return "blackhole";
    }
    for (const gate of this.#gates) if (!gate(from, to, now, bytes)) return "blackhole";
    if (!this.#hosts.has(to)) return "no_host";
    const p = this.#profile(from, to);
    if (p.burst) {
      const key = `${from}>${to}`;
      const wasBad = this.#burstBad.get(key) ?? false;
      const bad = wasBad ? !this.#chance(p.burst.r) : this.#chance(p.burst.p);
      this.#burstBad.set(key, bad);
      if (this.#chance(bad ? (p.burst.lossBad ?? 1) : (p.burst.lossGood ?? 0))) return "burst";
    }
    if (this.#chance(p.loss)) return "random";
    return null;
  }

  /** A damaged copy of `bytes` (never `bytes` itself, never equal to it). */
  #corrupt(bytes: Uint8Array, kind: CorruptionKind): Uint8Array {
    const rand = this.#rand;
    const n = bytes.length;
    switch (kind) {
      case "flip": {
        const out = bytes.slice();
        const bits = Math.min(1 + Math.floor(rand() * 8), n * 8);
        const flipped = new Set<number>();
        while (flipped.size < bits) {
          const bit = Math.floor(rand() * n * 8);
          if (flipped.has(bit)) continue; // Flipping a bit twice would undo it.
          flipped.add(bit);
          out[bit >> 3] = out[bit >> 3]! ^ (1 << (bit & 7));
        }
        return out;
      }
      case "overwrite": {
        const out = bytes.slice();
        const i = Math.floor(rand() * n);
        out[i] = (out[i]! + 1 + Math.floor(rand() * 255)) & 0xff;
        return out;
      }
      case "truncate":
        return bytes.slice(0, Math.floor(rand() * n));
      case "append": {
        const extra = 1 + Math.floor(rand() * 16);
        const out = new Uint8Array(n + extra);
        out.set(bytes);
        for (let i = n; i < out.length; i++) out[i] = Math.floor(rand() * 256);
        return out;
      }
    }
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

/** A record with a 0 for every key. */
function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

/** Throws a RangeError on a profile value no network can have; returns the profile. */
function checkProfile(p: LinkProfile): LinkProfile {
  const probabilities: [string, number | undefined][] = [
    ["loss", p.loss],
    ["duplicate", p.duplicate],
    ["corrupt", p.corrupt],
    ["reorder", p.reorder],
    ["burst.p", p.burst?.p],
    ["burst.r", p.burst?.r],
    ["burst.lossGood", p.burst?.lossGood],
    ["burst.lossBad", p.burst?.lossBad],
  ];
  for (const [name, value] of probabilities) {
    if (value !== undefined && !(value >= 0 && value <= 1)) {
      throw new RangeError(`Bad link profile "${name}" ${value}: a probability must be in [0, 1]`);
    }
  }
  const delays: [string, number | undefined][] = [
    ["latencyMs", p.latencyMs],
    ["jitterMs", p.jitterMs],
    ["reorderDelayMs", p.reorderDelayMs],
  ];
  for (const [name, value] of delays) {
    if (value !== undefined && !(value >= 0 && value < Infinity)) {
      throw new RangeError(`Bad link profile "${name}" ${value}: a delay must be finite and not negative`);
    }
  }
  if ((p.reorder ?? 0) > 0 && !((p.reorderDelayMs ?? 0) > 0)) {
    throw new RangeError(`Bad link profile "reorder" ${p.reorder}: it needs a "reorderDelayMs" above 0`);
  }
  return p;
}

/**
 * `count` consecutive seeds starting at `base`: `[base, base + 1, ..., base + count - 1]`.
 *
 * @example
 * ```ts
 * import { seeds } from "./sim.ts";
 * if (seeds(3, 10).join() !== "10,11,12") throw new Error("seeds");
 * ```
 */
export function seeds(count: number, base = 1): number[] {
  if (!Number.isInteger(count) || count < 0) {
    throw new RangeError(`Bad seed count "${count}": expected an integer of at least 0`);
  }
  return Array.from({ length: count }, (_, i) => base + i);
}

/**
 * The seeds named by the environment variable `envVar` when it is set and readable, else `fallback` (a list,
 * or a count for {@linkcode seeds}). The variable holds comma-separated seeds and inclusive ranges, e.g.
 * `SIM_SEEDS=7` to replay one failing seed or `SIM_SEEDS=1..500,9001` to search wider.
 *
 * @example
 * ```ts
 * import { seedsFrom } from "./sim.ts";
 * const list = seedsFrom(20); // [1..20] unless SIM_SEEDS says otherwise
 * if (list.length === 0) throw new Error("no seeds");
 * ```
 */
export function seedsFrom(fallback: readonly number[] | number, envVar = "SIM_SEEDS"): number[] {
  const list = typeof fallback === "number" ? seeds(fallback) : [...fallback];
  if (Deno.permissions.querySync({ name: "env", variable: envVar }).state !== "granted") return list;
  const text = Deno.env.get(envVar)?.trim();
  if (!text) return list;
  const out: number[] = [];
  for (const part of text.split(",")) {
    const m = /^\s*(\d+)\s*(?:\.\.\s*(\d+)\s*)?$/.exec(part);
    const first = Number(m?.[1]);
    const last = m?.[2] === undefined ? first : Number(m[2]);
    if (!m || last < first) {
      throw new TypeError(
        `Bad ${envVar} "${text}": expected seeds and ranges such as 7 or 1..100, comma-separated`,
      );
    }
    for (let seed = first; seed <= last; seed++) out.push(seed);
  }
  return out;
}

/**
 * Runs `body` once per seed (a list, or a count for {@linkcode seeds}). When it fails, the seed is printed and
 * put in front of the error message, so the run can be replayed exactly with that one seed.
 */
export function withSeeds(list: readonly number[] | number, body: (seed: number) => void): void {
  for (const seed of typeof list === "number" ? seeds(list) : list) {
    try {
      body(seed);
    } catch (error) {
      console.error(
        `Simulation failed with seed ${seed}; replay with withSeeds([${seed}], ...) (or SIM_SEEDS=${seed} where ` +
          `the seeds come from seedsFrom)`,
      );
      if (error instanceof Error) error.message = `[sim seed ${seed}] ${error.message}`;
      throw error;
    }
  }
}
