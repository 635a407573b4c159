/**
 * A seeded, impairing UDP proxy on loopback for end-to-end tests over real sockets: clients talk to the proxy,
 * the proxy talks to the server, and on the way each datagram may be dropped, duplicated, held back behind
 * the next one (reordered) or delayed.
 *
 * One socket faces the clients. For every client source address it sees, the proxy opens one upstream socket
 * towards the server (like a NAT mapping), so the server sees a distinct source address per client; what the
 * server sends to that upstream socket goes back to that client.
 *
 * Reproducibility: every decision comes from a seeded PRNG (mulberry32), one stream per client and direction,
 * and every datagram draws the same number of values whatever is decided, so the n-th datagram of a flow
 * always gets the same fate for a given seed. What is not reproducible is which datagram is the n-th: real
 * sockets, timers and the scheduler decide the order and timing of arrivals (retransmissions, heartbeats,
 * the interleaving of Acks and replies). A failing seed therefore makes a failure likely to recur, not certain;
 * protocol timing proper is tested in virtual time (tests/sim.ts).
 *
 * Usage: `await using proxy = new LossyProxy({ upstream: server.addr, seed: 7, toServer: { drop: 0.1 } })`,
 * then point the client at `proxy.addrText`, and read `proxy.counters` afterwards.
 *
 * @module
 */
import { closeRelay, receiveUntilClosed, type RelayState } from "./relay_sockets.ts";

/** Impairments of one direction. Probabilities are from 0 to 1. */
export interface Impairments {
  /** Probability that a datagram is dropped. @default {0} */
  drop?: number;
  /** Probability that a (not dropped) datagram is sent twice, back to back. @default {0} */
  duplicate?: number;
  /**
   * Probability that a datagram is held back and sent right after the next datagram of the same flow (or
   * after `reorderHoldMs` if none comes). Only one datagram per flow is held at a time.
   * @default {0}
   */
  reorder?: number;
  /** Longest time (ms) a held-back datagram waits for the next one. @default {5} */
  reorderHoldMs?: number;
  /** Fixed extra delay (ms) of every datagram. @default {0} */
  delayMs?: number;
  /**
   * Extra random delay (ms), uniform in [0, jitterMs). Jitter can reorder datagrams too; those reorderings
   * are not counted in `reordered`.
   * @default {0}
   */
  jitterMs?: number;
}

/** Counters of one direction (over all clients). */
export interface DirectionCounters {
  /** Datagrams that arrived at the proxy. */
  received: number;
  /** Datagrams handed to the operating system (duplicates count twice). */
  forwarded: number;
  /** Datagrams dropped on purpose. */
  dropped: number;
  /** Datagrams sent twice. */
  duplicated: number;
  /** Datagrams held back and sent after a later datagram of the same flow. */
  reordered: number;
  /** Sends the operating system refused. */
  sendErrors: number;
}

/** Options of {@linkcode LossyProxy}. */
export interface LossyProxyOptions {
  /** The server's address. */
  upstream: { hostname: string; port: number };
  /** Seed of the PRNG streams. */
  seed: number;
  /** Impairments of datagrams from the clients to the server. @default {{}} (none) */
  toServer?: Impairments;
  /** Impairments of datagrams from the server to the clients. @default {{}} (none) */
  toClient?: Impairments;
  /** Address the client-facing socket binds (port 0). @default {"127.0.0.1"} */
  hostname?: string;
}

/** The counters of both directions. */
export interface ProxyCounters {
  /** Clients to server. */
  toServer: DirectionCounters;
  /** Server to clients. */
  toClient: DirectionCounters;
}

type Settings = Required<Impairments>;
type Timer = ReturnType<typeof setTimeout>;

/** One datagram on its way out of a socket. */
interface Outgoing {
  bytes: Uint8Array;
  to: Deno.NetAddr;
  counters: DirectionCounters;
}

/** One direction of one client: its PRNG stream, its impairments and the datagram it holds back. */
interface Flow {
  readonly rand: () => number;
  readonly settings: Settings;
  readonly counters: DirectionCounters;
  readonly queue: SendQueue;
  readonly to: Deno.NetAddr;
  held: { copies: Uint8Array[]; timer: Timer | undefined } | null;
}

/** A client and its upstream socket (the "NAT mapping"). */
interface Link {
  readonly client: Deno.NetAddr;
  readonly socket: Deno.DatagramConn;
  readonly toServer: Flow;
  readonly toClient: Flow;
}

/** mulberry32: a small seeded PRNG with values in [0, 1) (kept here so the helper does not load the core). */
function mulberry32(seed: number): () => number {
  let state = seed >>> 0;
  return () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = Math.imul(state ^ (state >>> 15), state | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296;
  };
}

/** A distinct, well-mixed seed for stream `n` of `seed` (so streams do not start correlated). */
function streamSeed(seed: number, n: number): number {
  let h = (seed ^ Math.imul(n + 1, 0x9e3779b9)) >>> 0;
  h = Math.imul(h ^ (h >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return (h ^ (h >>> 16)) >>> 0;
}

function settingsOf(impairments: Impairments = {}): Settings {
  const s: Settings = {
    drop: impairments.drop ?? 0,
    duplicate: impairments.duplicate ?? 0,
    reorder: impairments.reorder ?? 0,
    reorderHoldMs: impairments.reorderHoldMs ?? 5,
    delayMs: impairments.delayMs ?? 0,
    jitterMs: impairments.jitterMs ?? 0,
  };
  for (const key of ["drop", "duplicate", "reorder"] as const) {
    if (!(s[key] >= 0 && s[key] <= 1)) throw new RangeError(`Invalid ${key} probability "${s[key]}"`);
  }
  for (const key of ["reorderHoldMs", "delayMs", "jitterMs"] as const) {
    if (!(s[key] >= 0 && Number.isFinite(s[key]))) throw new RangeError(`Invalid ${key} "${s[key]}"`);
  }
  return s;
}

function zeroCounters(): DirectionCounters {
  return { received: 0, forwarded: 0, dropped: 0, duplicated: 0, reordered: 0, sendErrors: 0 };
}

function loopbackLike(hostname: string): string {
  return hostname.includes(":") ? "::1" : "127.0.0.1";
}

/**
 * Sends a socket's datagrams one at a time, in order: sends started concurrently can leave a Deno socket out
 * of order, which would be reordering the proxy did not decide.
 */
class SendQueue {
  readonly #socket: Deno.DatagramConn;
  #items: Outgoing[] = [];
  #pumping: Promise<void> | null = null;
  #closed = false;

  constructor(socket: Deno.DatagramConn) {
    this.#socket = socket;
  }

  push(items: Outgoing[]): void {
    if (this.#closed) return;
    for (const item of items) this.#items.push(item);
    this.#pumping ??= this.#pump();
  }

  /** Discards what is queued and waits for the send in flight, if any. */
  async close(): Promise<void> {
    this.#closed = true;
    this.#items = [];
    await this.#pumping;
  }

  async #pump(): Promise<void> {
    try {
      for (let item = this.#items.shift(); item; item = this.#items.shift()) {
        try {
          await this.#socket.send(item.bytes, item.to);
          item.counters.forwarded++;
        } catch {
          item.counters.sendErrors++;
        }
      }
    } finally {
      this.#pumping = null;
    }
  }
}

/**
 * A seeded lossy UDP proxy between clients and one server, on loopback. Binds on construction; close it
 * (or `await using` it) to close every socket, clear every timer and end every receive loop.
 */
export class LossyProxy implements AsyncDisposable {
  readonly #upstream: Deno.NetAddr;
  readonly #seed: number;
  readonly #toServer: Settings;
  readonly #toClient: Settings;
  readonly #socket: Deno.DatagramConn;
  readonly #clientQueue: SendQueue;
  readonly #links = new Map<string, Link>();
  readonly #loops: Promise<void>[] = [];
  readonly #timers = new Set<Timer>();
  readonly #counters: ProxyCounters = { toServer: zeroCounters(), toClient: zeroCounters() };
  #closing: Promise<void> | null = null;
  /** Receive errors that were not caused by closing (each one ended its receive loop). */
  readonly errors: Error[] = [];
  readonly #state: RelayState = { closing: () => this.#closing !== null, errors: this.errors };

  /**
   * @param options The server's address, the seed and the impairments of each direction.
   * @throws {RangeError} for a probability outside [0, 1] or a negative delay.
   */
  constructor(options: LossyProxyOptions) {
    this.#upstream = { transport: "udp", hostname: options.upstream.hostname, port: options.upstream.port };
    this.#seed = options.seed;
    this.#toServer = settingsOf(options.toServer);
    this.#toClient = settingsOf(options.toClient);
    this.#socket = Deno.listenDatagram({
      transport: "udp",
      hostname: options.hostname ?? "127.0.0.1",
      port: 0,
    });
    this.#clientQueue = new SendQueue(this.#socket);
    this.#loops.push(receiveUntilClosed(this.#socket, (bytes, from) => {
      const link = this.#linkFor(from);
      if (link) this.#handle(link.toServer, bytes);
    }, this.#state));
  }

  /** The address clients send to. */
  get addr(): Deno.NetAddr {
    return this.#socket.addr as Deno.NetAddr;
  }

  /** The address clients send to, as `"ip:port"` or `"[ip6]:port"`. */
  get addrText(): string {
    const { hostname, port } = this.addr;
    return hostname.includes(":") ? `[${hostname}]:${port}` : `${hostname}:${port}`;
  }

  /** The seed the PRNG streams derive from. */
  get seed(): number {
    return this.#seed;
  }

  /** How many distinct client addresses have been seen (one upstream socket each). */
  get clientCount(): number {
    return this.#links.size;
  }

  /** The upstream (server-facing) address used for each client, keyed by the client's `"ip:port"`. */
  get mappings(): Map<string, Deno.NetAddr> {
    return new Map([...this.#links].map(([key, link]) => [key, link.socket.addr as Deno.NetAddr]));
  }

  /** A fresh copy of the counters of both directions. */
  get counters(): ProxyCounters {
    return { toServer: { ...this.#counters.toServer }, toClient: { ...this.#counters.toClient } };
  }

  /** Closes every socket, clears every timer (held and delayed datagrams are discarded). Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      for (const timer of this.#timers) clearTimeout(timer);
      this.#timers.clear();
      const links = [...this.#links.values()];
      await closeRelay({
        queues: [this.#clientQueue, ...links.map((l) => l.toServer.queue)],
        sockets: [this.#socket, ...links.map((l) => l.socket)],
        loops: this.#loops,
      });
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /** The link of a client, made (with its upstream socket) on its first datagram. */
  #linkFor(client: Deno.NetAddr): Link | null {
    const key = client.hostname.includes(":")
      ? `[${client.hostname}]:${client.port}`
      : `${client.hostname}:${client.port}`;
    const known = this.#links.get(key);
    if (known) return known;
    let socket: Deno.DatagramConn;
    try {
      socket = Deno.listenDatagram({
        transport: "udp",
        hostname: loopbackLike(this.#upstream.hostname),
        port: 0,
      });
    } catch (error) {
      this.errors.push(error as Error);
      return null;
    }
    const n = this.#links.size;
    const clientAddr: Deno.NetAddr = { transport: "udp", hostname: client.hostname, port: client.port };
    const link: Link = {
      client: clientAddr,
      socket,
      toServer: this.#flow(
        2 * n,
        this.#toServer,
        this.#counters.toServer,
        new SendQueue(socket),
        this.#upstream,
      ),
      toClient: this.#flow(2 * n + 1, this.#toClient, this.#counters.toClient, this.#clientQueue, clientAddr),
    };
    this.#links.set(key, link);
    this.#loops.push(receiveUntilClosed(socket, (bytes) => this.#handle(link.toClient, bytes), this.#state));
    return link;
  }

  #flow(
    stream: number,
    settings: Settings,
    counters: DirectionCounters,
    queue: SendQueue,
    to: Deno.NetAddr,
  ): Flow {
    return { rand: mulberry32(streamSeed(this.#seed, stream)), settings, counters, queue, to, held: null };
  }

  /** Decides one datagram's fate. Always draws four values, so the n-th datagram's fate depends on n only. */
  #handle(flow: Flow, bytes: Uint8Array): void {
    const { settings: s, counters } = flow;
    counters.received++;
    const dropRoll = flow.rand();
    const duplicateRoll = flow.rand();
    const reorderRoll = flow.rand();
    const jitterRoll = flow.rand();
    if (dropRoll < s.drop) {
      counters.dropped++;
      return;
    }
    const copies = duplicateRoll < s.duplicate ? [bytes, bytes] : [bytes];
    if (copies.length === 2) counters.duplicated++;
    const delay = s.delayMs + jitterRoll * s.jitterMs;
    if (reorderRoll < s.reorder && !flow.held) {
      const held: NonNullable<Flow["held"]> = { copies, timer: undefined };
      held.timer = this.#after(s.reorderHoldMs + delay, () => {
        // Nothing came in time: it goes out late, but not behind another datagram.
        if (flow.held !== held) return;
        flow.held = null;
        this.#emit(flow, held.copies, 0);
      });
      flow.held = held;
      return;
    }
    const held = flow.held;
    if (held) {
      flow.held = null;
      this.#cancel(held.timer);
      counters.reordered++;
      this.#emit(flow, [...copies, ...held.copies], delay);
    } else {
      this.#emit(flow, copies, delay);
    }
  }

  #emit(flow: Flow, datagrams: Uint8Array[], delay: number): void {
    const items = datagrams.map((bytes) => ({ bytes, to: flow.to, counters: flow.counters }));
    if (delay <= 0) flow.queue.push(items);
    else this.#after(delay, () => flow.queue.push(items));
  }

  #after(ms: number, fn: () => void): Timer {
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      if (!this.#closing) fn();
    }, ms);
    this.#timers.add(timer);
    return timer;
  }

  #cancel(timer: Timer | undefined): void {
    if (timer === undefined) return;
    clearTimeout(timer);
    this.#timers.delete(timer);
  }
}
