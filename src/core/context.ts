/**
 * What every room of the core shares: the settings and the numbers derived from them, the connection table,
 * the timer table, the counters, the sources of ids and randomness, and the two outputs (datagrams to send and
 * events). The lowest level of sending lives here too: one datagram onto the output, through admission's
 * anti-amplification budget.
 *
 * @module
 */
import { formatSocketAddr, type Json, type Message, type MessageType, type NodeInfo } from "../wire/mod.ts";
import type { SocketAddr } from "../wire/mod.ts";
import type { CoreConfig } from "./config.ts";
import { type Conn, MAX_KEPT_ANSWER_BYTES, type PeerEntry, PeerTable } from "./peers.ts";
import {
  type Budget,
  FRAGMENT_COST,
  HELD_COST,
  MAX_QUEUED_BYTES_PER_PEER,
  MAX_QUEUED_PER_PEER,
  type OrderedBounds,
  PARTIAL_COST,
  type ReassemblyBounds,
  type RtoBounds,
  rtoFrom,
} from "./reliability.ts";
import { type DropReason, Stats } from "./stats.ts";
import { TimerTable } from "./timer_table.ts";
import { Admission } from "./admission.ts";
import type { Datagram } from "./outcome.ts";
import {
  type EndpointEvent,
  type EndpointOptions,
  MAX_UDP_PAYLOAD,
  type PathInfo,
  type PeerSummary,
  type Transmit,
} from "./types.ts";
import { fnv1a, mulberry32 } from "./random.ts";
import { isMeasured, natToJson } from "./nat_class.ts";
import {
  generateX25519,
  type KeyObject,
  type KeyPair,
  type MacKeyFactory,
  nodeMacKey,
  x25519,
} from "../deps/crypto.ts";

/** How many recently closed addresses are remembered (their stray datagrams are logged at debug). */
const RECENTLY_CLOSED = 1024;

/** The shared state of one endpoint. Rooms read it and write it; only the coordinator creates it. */
export class Core {
  /** `server` accepts handshakes; `client` only starts them. */
  readonly role: "server" | "client";
  /** The settings. */
  readonly config: CoreConfig;
  /** This endpoint's NodeInfo. */
  node: NodeInfo;
  /** The `sender_addr` we put on every message. */
  senderAddr: string;
  /** Source of message ids. */
  readonly newId: () => string;
  /** Source of randomness in [0, 1). */
  readonly random: () => number;
  /** Source of X25519 key pairs. */
  readonly generateX25519: () => KeyPair;
  /** The X25519 exchange. */
  readonly deriveX25519: (privateKey: KeyObject, theirPublic: Uint8Array) => Uint8Array | null;
  /** Makes a session's MAC keys. */
  readonly macKey: MacKeyFactory;
  /** The counters. */
  readonly stats: Stats;
  /** Connections and the indexes over registered peers. */
  readonly table: PeerTable = new PeerTable();
  /** Every deadline. */
  readonly timers: TimerTable = new TimerTable();
  /** What gets in, and what may go out to unproven addresses. */
  readonly admission: Admission;
  /** Addresses closed recently (a stray datagram from one is expected). */
  readonly recentlyClosed: Set<string> = new Set<string>();
  /** Links by state (client role, sibling servers). */
  readonly linkCounts = { handshaking: 0, connected: 0 };
  /** Heartbeat interval (ms). */
  readonly heartbeatMs: number;
  /** Idle timeout (ms). */
  readonly timeoutMs: number;
  /** Largest datagram accepted (bytes). */
  readonly maxIncoming: number;
  /** Report each duplicate reliable message as a `duplicate` event (for a debug log; off by default). */
  reportDuplicates = false;
  /** Retransmission timeout bounds. */
  readonly rto: RtoBounds;
  /**
   * The byte budget (`reassembly_buffer_bytes`) that all peers' partial messages and ordered messages held
   * behind a gap share.
   */
  readonly reassemblyBudget: Budget;
  /** The bytes of answers kept for repeated requests, by every remote together (`MAX_KEPT_ANSWER_BYTES`). */
  readonly answerBudget: Budget = { used: 0, limit: MAX_KEPT_ANSWER_BYTES };
  /** A peer's reassembly bounds: room for two whole messages of `max_message_size` in our fragments. */
  readonly reassemblyBounds: ReassemblyBounds;
  /** A sender's ordered-delivery bounds: room for two held messages of `max_message_size`. */
  readonly orderedBounds: OrderedBounds;
  /** Deadline of a reliable message (ms). */
  readonly deliveryMs: number;
  /** Deadline of a handshake message (ms). */
  readonly handshakeMs: number;
  /** How long an unconfirmed registration is kept (ms). */
  readonly halfOpenMs: number;
  /** Send-queue bounds per remote: room for four messages of `max_message_size` in fragments, at least. */
  readonly queueLimits: [number, number];
  /**
   * The local sockets the shell receives on and sends from, by index (`Endpoint.setSockets`): 0 is the main
   * one, the others alternates (another port, another IP address: RFC 5780). Empty: one socket.
   */
  sockets: readonly SocketAddr[] = [];
  #transmits: Transmit[] = [];
  #events: EndpointEvent[] = [];

  /** @param options The endpoint's options. */
  constructor(options: EndpointOptions) {
    const c = options.config;
    this.role = options.role;
    this.config = c;
    this.node = options.node;
    this.newId = options.newId;
    this.stats = new Stats(options.now);
    this.senderAddr = options.node.listen_addr;
    this.heartbeatMs = c.heartbeatInterval * 1000;
    this.timeoutMs = c.connectionTimeout * 1000;
    this.maxIncoming = Math.min(c.maxMessageSize, 65_535);
    this.rto = { initialMs: c.rtoInitialMs, minMs: c.rtoMinMs, maxMs: c.rtoMaxMs };
    this.random = options.random ?? mulberry32(fnv1a(options.node.id));
    this.generateX25519 = options.generateX25519 ?? generateX25519;
    this.deriveX25519 = options.deriveX25519 ?? x25519;
    this.macKey = options.macKey ?? nodeMacKey;
    this.deliveryMs = c.deliveryTimeout * 1000;
    this.handshakeMs = c.handshakeTimeout * 1000;
    this.halfOpenMs = c.halfOpenTimeout * 1000;
    // A fragment carries at least (max_datagram_size - 400) * 3/4 bytes of its message.
    const perMessage = Math.ceil(
      c.maxMessageSize / Math.max(3, Math.floor((c.maxDatagramSize - 400) / 4) * 3),
    );
    const budget = this.reassemblyBudget = { used: 0, limit: c.reassemblyBufferBytes };
    this.reassemblyBounds = {
      messageBytes: c.maxMessageSize,
      peerBytes: 2 * (c.maxMessageSize + perMessage * FRAGMENT_COST + PARTIAL_COST),
      budget,
    };
    this.orderedBounds = { peerBytes: 2 * (c.maxMessageSize + HELD_COST), budget };
    this.queueLimits = [
      Math.max(MAX_QUEUED_PER_PEER, 4 * perMessage + 64),
      Math.max(MAX_QUEUED_BYTES_PER_PEER, 4 * perMessage * c.maxDatagramSize),
    ];
    const secret = options.cookieSecret ??
      Uint8Array.from({ length: 32 }, () => Math.floor(this.random() * 256));
    this.admission = new Admission(c, this.stats, secret, (ip) => this.#provenIps.has(ip));
  }

  // ---------------------------------------------------------------- proven addresses

  /** Connections that proved they receive, per IP: only these IPs can be banned (a spoofer's cannot). */
  readonly #provenIps = new Map<string, number>();

  /** Marks `conn`'s address proven: it showed it receives there. */
  validate(conn: Conn): void {
    if (conn.validated) return;
    conn.validated = true;
    const ip = conn.addr.hostname;
    this.#provenIps.set(ip, (this.#provenIps.get(ip) ?? 0) + 1);
  }

  /** Takes `conn` out of the proven index (it is forgotten, or moves to another address). */
  unprove(conn: Conn): void {
    if (!conn.validated) return;
    conn.validated = false;
    const ip = conn.addr.hostname;
    const n = (this.#provenIps.get(ip) ?? 1) - 1;
    if (n > 0) this.#provenIps.set(ip, n);
    else this.#provenIps.delete(ip);
  }

  // ---------------------------------------------------------------- outputs

  /** Reports an event. */
  emit(event: EndpointEvent): void {
    this.#events.push(event);
  }

  /** The events produced since the last {@linkcode takeEvents} (read-only; for the requests room). */
  get pendingEvents(): readonly EndpointEvent[] {
    return this.#events;
  }

  /** Replaces event `index` of {@linkcode pendingEvents} (an answer reported as its request's outcome). */
  replacePending(index: number, event: EndpointEvent): void {
    this.#events[index] = event;
  }

  /** A reliable message processed already came again: a `duplicate` event when asked for. */
  duplicate(from: SocketAddr, msg: Message, number: number): void {
    if (!this.reportDuplicates) return;
    const space = msg.rel !== undefined ? "rel" : "sequence_number";
    this.emit({ type: "duplicate", from, messageType: msg.message_type, space, number });
  }

  /** Takes the events produced so far. */
  takeEvents(): EndpointEvent[] {
    const out = this.#events;
    if (out.length === 0) return out;
    this.#events = [];
    return out;
  }

  /** Takes the datagrams produced so far, in the order they must be sent. */
  takeTransmits(): Transmit[] {
    const out = this.#transmits;
    if (out.length === 0) return out;
    this.#transmits = [];
    return out;
  }

  /** How many datagrams are waiting to be taken (a position to insert an Ack at, see {@linkcode moveLastTo}). */
  get queuedTransmits(): number {
    return this.#transmits.length;
  }

  /** Moves the datagram queued last to position `at` (an Ack goes in front of what its handling sent). */
  moveLastTo(at: number): void {
    if (at >= 0 && at < this.#transmits.length - 1) this.#transmits.splice(at, 0, this.#transmits.pop()!);
  }

  /**
   * Queues a datagram on a connection, within admission's budget for addresses not proven. One that cannot
   * fit in a UDP datagram is counted and not queued (false). One held back by the budget is treated as lost
   * (true: retransmissions retry it later).
   */
  transmitOn(conn: Conn, bytes: Uint8Array, type: MessageType, socket = 0): boolean {
    if (bytes.length > MAX_UDP_PAYLOAD) {
      this.stats.sendsTooLarge++;
      return false;
    }
    if (!this.admission.mayOn(conn, bytes.length)) return true;
    conn.txDatagrams++;
    conn.txBytes += bytes.length;
    this.#queue(conn.addr, bytes, type, socket);
    return true;
  }

  /**
   * Queues a stateless reply to the datagram being handled (no connection), within 3x its size, sent from
   * local socket `socket` (whichever socket it goes from, it spends the same budgets). Same return value as
   * {@linkcode transmitOn}. `type` is null for a datagram that is not a message of ours (STUN).
   */
  transmitStateless(
    dg: Datagram,
    to: SocketAddr,
    bytes: Uint8Array,
    type: MessageType | null,
    socket = 0,
  ): boolean {
    if (bytes.length > MAX_UDP_PAYLOAD) {
      this.stats.sendsTooLarge++;
      return false;
    }
    const known = this.table.byAddr.get(to === dg.from ? dg.key : formatSocketAddr(to));
    if (!this.admission.mayStateless(dg, known, bytes.length)) return true;
    this.#queue(to, bytes, type, socket);
    return true;
  }

  /**
   * The local socket whose IP address differs from socket `via`'s exactly when `otherIp` and whose port
   * differs exactly when `otherPort` (RFC 5780's change request, and its OTHER-ADDRESS when both); -1 when
   * there is none.
   */
  socketBeside(via: number, otherIp: boolean, otherPort: boolean): number {
    const here = this.sockets[via];
    if (!here) return otherIp || otherPort ? -1 : via;
    return this.sockets.findIndex((s) =>
      (s.hostname !== here.hostname) === otherIp && (s.port !== here.port) === otherPort
    );
  }

  /**
   * Queues a datagram that needs no budget (we start the exchange: a punch probe), from local socket
   * `socket`.
   */
  transmitUnchecked(to: SocketAddr, bytes: Uint8Array, type: MessageType, socket = 0): void {
    this.#queue({ hostname: to.hostname, port: to.port }, bytes, type, socket);
  }

  #queue(to: SocketAddr, bytes: Uint8Array, type: MessageType | null, socket = 0): void {
    const stats = this.stats;
    stats.datagramsSent++;
    stats.bytesSent += bytes.length;
    if (type !== null) stats.messagesSent[type]++;
    this.#transmits.push(socket === 0 ? { to, bytes } : { to, bytes, socket });
  }

  /** A new unnumbered-or-numbered message from this endpoint: fresh id, timestamp in seconds, no Ack asked. */
  envelope(now: number, type: MessageType, payload: Json, seq: number | null): Message {
    return {
      id: this.newId(),
      message_type: type,
      timestamp: Math.floor(now / 1000),
      payload,
      sender_addr: this.senderAddr,
      sequence_number: seq,
      requires_ack: false,
      ack_for: null,
    };
  }

  /** Counts a dropped datagram and reports it. */
  drop(from: SocketAddr, key: string, reason: DropReason, detail: string): void {
    this.stats.drop(reason);
    this.emit({ type: "dropped", from, reason, detail, afterDisconnect: this.recentlyClosed.has(key) });
  }

  /** Remembers that `key` closed (bounded). */
  closed(key: string): void {
    this.recentlyClosed.add(key);
    if (this.recentlyClosed.size > RECENTLY_CLOSED) {
      this.recentlyClosed.delete(this.recentlyClosed.values().next().value!);
    }
  }

  /** A registered peer as the library reports it. */
  summary(conn: Conn, peer: PeerEntry): PeerSummary {
    return {
      id: peer.info.id,
      name: peer.info.name,
      version: peer.info.version,
      network: peer.network,
      state: peer.state,
      addr: conn.key,
      listenAddr: peer.info.listen_addr,
      capabilities: [...peer.info.capabilities],
      metadata: { ...peer.info.metadata },
      joinedAt: peer.joinedAt,
      lastSeen: conn.lastHeard,
      datagramsIn: conn.rxDatagrams,
      datagramsOut: conn.txDatagrams,
      bytesIn: conn.rxBytes,
      bytesOut: conn.txBytes,
      extensions: conn.ext,
      keyed: peer.keyed !== undefined,
      ...(peer.nat && isMeasured(peer.nat) ? { nat: natToJson(peer.nat) } : {}),
    };
  }

  /** The path's current retransmission timeout (ms). */
  rtoOf(conn: Conn): number {
    return conn.rttSamples > 0
      ? rtoFrom(conn.srtt, conn.rttvar, conn.rttSamples, this.rto)
      : Math.min(this.rto.maxMs, this.rto.initialMs);
  }

  /** The round-trip state of the path to `addr`, if this endpoint knows it. */
  pathInfo(addr: SocketAddr): PathInfo | undefined {
    const conn = this.table.byAddr.get(formatSocketAddr(addr));
    if (!conn) return undefined;
    const sampled = conn.rttSamples > 0;
    return {
      srttMs: sampled ? conn.srtt : null,
      rttvarMs: sampled ? conn.rttvar : null,
      rtoMs: this.rtoOf(conn),
      samples: conn.rttSamples,
      inFlight: conn.outbox.size,
      queued: conn.x?.queue?.size ?? 0,
      extensions: conn.ext,
      keepaliveMs: conn.link?.keepaliveMs ?? this.heartbeatMs,
    };
  }
}
