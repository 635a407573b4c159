/**
 * The protocol core: one synchronous state machine that does no I/O and never reads the clock. The caller
 * feeds it datagrams (`handleDatagram`) and wake-ups (`handleTimeout`) with the current time, then drains
 * what it produced: datagrams to send (`takeTransmits`), events (`takeEvents`) and the next deadline
 * (`nextDeadline`). The server and the client library run this same core, in the `server` and `client` roles.
 *
 * @module
 */
import { formatSocketAddr, isUnspecified, loopbackFor, type SocketAddr } from "./address.ts";
import type { Config } from "./config.ts";
import { type Conn, newConn, type PeerEntry, PeerTable } from "./peers.ts";
import {
  DecodeError,
  decodeMessage,
  encodeMessage,
  type ErrorPayload,
  isJsonObject,
  isSequenceNumber,
  type Json,
  MAX_SEQUENCE,
  type Message,
  type MessageType,
  networkOf,
  type NodeInfo,
  parseErrorPayload,
  parseHandshakeResponse,
  parseNodeInfo,
  parsePeerInfo,
  type PeerInfo,
} from "./protocol.ts";
import { type DropReason, Stats, type StatsSnapshot } from "./stats.ts";
import { TimerHeap } from "./timers.ts";
import { isUuid } from "./deps/uuid.ts";

/** Largest UDP payload (IPv4); a single-datagram message can never be larger. */
export const MAX_UDP_PAYLOAD = 65_507;

/** Room left for the envelope when a DiscoveryResponse is cut to fit one datagram. */
const ENVELOPE_ROOM = 512;

/** Most sequence numbers honoured in one `Retransmit` request. */
export const MAX_RETRANSMIT_REQUEST = 64;

/** Wait before a sibling-server probe is given up (one try). */
const PROBE_WAIT_MS = 1000;

/** How many recently closed addresses are remembered (their stray datagrams are logged at debug). */
const RECENTLY_CLOSED = 1024;

/** A datagram to send. */
export interface Transmit {
  /** Destination. */
  to: SocketAddr;
  /** The encoded message. */
  bytes: Uint8Array;
}

/** A registered peer as the library reports it. */
export interface PeerSummary {
  /** Node id. */
  id: string;
  /** Declared name. */
  name: string;
  /** Declared version. */
  version: string;
  /** Network (`metadata.network_id`). */
  network: string;
  /** Handshake state. */
  state: "handshaking" | "authenticated";
  /** Observed source address, `"ip:port"`. */
  addr: string;
  /** Declared `listen_addr`. */
  listenAddr: string;
  /** Declared capabilities. */
  capabilities: string[];
  /** Declared metadata. */
  metadata: Record<string, string>;
  /** When it registered (ms, the endpoint's clock). */
  joinedAt: number;
  /** When it was last heard from (ms, the endpoint's clock). */
  lastSeen: number;
}

/** Why a peer left. */
export type LeaveReason = "disconnect" | "timeout" | "replaced" | "shutdown";

/** Something that happened inside the core. */
export type EndpointEvent =
  | { type: "peerJoined"; peer: PeerSummary }
  | { type: "peerLeft"; peer: PeerSummary; reason: LeaveReason }
  | {
    type: "data";
    from: SocketAddr;
    fromId: string | null;
    to: string | null;
    payload: Json;
    message: Message;
  }
  | { type: "connected"; addr: SocketAddr; node: NodeInfo }
  | { type: "connectFailed"; addr: SocketAddr; error: string; code: string; probe: boolean }
  | { type: "linkClosed"; addr: SocketAddr; reason: "disconnect" | "timeout" | "closed" }
  | { type: "pong"; from: SocketAddr; payload: Json; message: Message }
  | { type: "discovery"; from: SocketAddr; peers: PeerInfo[]; nextOffset: number | null; message: Message }
  | { type: "error"; from: SocketAddr; error: ErrorPayload; message: Message }
  | { type: "delivered"; to: SocketAddr; id: string; seq: number; messageType: MessageType; rttMs: number }
  | { type: "gaveUp"; to: SocketAddr; id: string; seq: number; messageType: MessageType; tries: number }
  | {
    type: "dropped";
    from: SocketAddr;
    reason: DropReason;
    detail: string;
    /** The source disconnected or timed out recently: a stray datagram is expected, log it quietly. */
    afterDisconnect: boolean;
  };

/** Options of {@linkcode Endpoint}. */
export interface EndpointOptions {
  /** `server` accepts handshakes; `client` only starts them. */
  role: "server" | "client";
  /** Timing and limits (a resolved {@linkcode Config}). */
  config: Config;
  /** This endpoint's own NodeInfo (its `listen_addr` may be updated after binding). */
  node: NodeInfo;
  /** Source of message ids (UUID v4). Randomness is a parameter so tests can replay exactly. */
  newId: () => string;
  /** The current time (ms); the start of uptime. */
  now: number;
}

/** Options of {@linkcode Endpoint.send}. */
export interface SendOptions {
  /** Ask for an Ack and retransmit until it comes or the schedule runs out. @default {false} */
  reliable?: boolean;
}

/** Error codes the core puts in `Error` payloads. */
export const ERROR_CODES = {
  nodeIdConflict: "node_id_conflict",
  serverFull: "server_full",
  invalidNodeInfo: "invalid_node_info",
  notRegistered: "not_registered",
  unknownRecipient: "unknown_recipient",
  badRequest: "bad_request",
  tooLarge: "too_large",
} as const;

/** The text upstream peers and users search for when a node id is taken. */
export const NODE_ID_EXISTS = "handshake failed: node ID already exists";

/**
 * The protocol state machine. See the module documentation.
 *
 * @example
 * ```ts
 * import { Endpoint } from "./endpoint.ts";
 * import { resolveConfig } from "./config.ts";
 * const node = {
 *   id: crypto.randomUUID(), name: "s", version: "1", listen_addr: "127.0.0.1:9",
 *   capabilities: [], metadata: {},
 * };
 * const newId = () => crypto.randomUUID();
 * const ep = new Endpoint({ role: "server", config: resolveConfig(), node, newId, now: 0 });
 * const ping = JSON.stringify({
 *   id: crypto.randomUUID(), message_type: "Ping", timestamp: 0, payload: null,
 *   sender_addr: null, sequence_number: 1, requires_ack: false, ack_for: null,
 * });
 * ep.handleDatagram(0, { hostname: "127.0.0.1", port: 5000 }, new TextEncoder().encode(ping));
 * const [pong] = ep.takeTransmits();
 * if (!new TextDecoder().decode(pong!.bytes).includes('"Pong"')) throw new Error("no pong");
 * ```
 */
export class Endpoint {
  readonly #role: "server" | "client";
  readonly #config: Config;
  #node: NodeInfo;
  readonly #newId: () => string;
  readonly #stats: Stats;
  readonly #table = new PeerTable();
  readonly #timers = new TimerHeap<Conn>();
  #transmits: Transmit[] = [];
  #events: EndpointEvent[] = [];
  #senderAddr: string;
  #recentlyClosed = new Set<string>();
  readonly #heartbeatMs: number;
  readonly #timeoutMs: number;
  readonly #maxIncoming: number;
  #linkCounts = { handshaking: 0, connected: 0 };

  /** @param options See {@linkcode EndpointOptions}. */
  constructor(options: EndpointOptions) {
    this.#role = options.role;
    this.#config = options.config;
    this.#node = options.node;
    this.#newId = options.newId;
    this.#stats = new Stats(options.now);
    this.#senderAddr = options.node.listen_addr;
    this.#heartbeatMs = options.config.heartbeatInterval * 1000;
    this.#timeoutMs = options.config.connectionTimeout * 1000;
    this.#maxIncoming = Math.min(options.config.maxMessageSize, 65_535);
  }

  /** This endpoint's NodeInfo. */
  get node(): NodeInfo {
    return this.#node;
  }

  /** Updates the address this endpoint reports for itself (after binding to port 0, say). */
  setListenAddr(addr: string): void {
    this.#node = { ...this.#node, listen_addr: addr };
    this.#senderAddr = addr;
  }

  // ---------------------------------------------------------------- inputs

  /** Feeds one received datagram. */
  handleDatagram(now: number, from: SocketAddr, bytes: Uint8Array): void {
    const stats = this.#stats;
    stats.datagramsReceived++;
    stats.bytesReceived += bytes.length;
    const key = formatSocketAddr(from);
    if (bytes.length > this.#maxIncoming) {
      this.#drop(from, key, "oversize", `${bytes.length} bytes exceed the ${this.#maxIncoming}-byte limit`);
      return;
    }
    let msg: Message;
    try {
      msg = decodeMessage(bytes);
    } catch (error) {
      if (!(error instanceof DecodeError)) throw error;
      this.#drop(from, key, error.reason, error.message);
      return;
    }
    stats.messagesReceived[msg.message_type]++;
    const conn = this.#table.byAddr.get(key);
    if (conn) conn.lastHeard = now;

    const type = msg.message_type;
    if (msg.requires_ack && type !== "Ack") {
      if (
        conn && msg.sequence_number !== null && type !== "HandshakeRequest" &&
        !conn.window.accept(msg.sequence_number)
      ) {
        stats.duplicates++;
        this.#sendAck(now, from, conn, msg);
        this.#reschedule(conn);
        return;
      }
      this.#sendAck(now, from, conn, msg);
    }
    if (
      conn?.peer?.state === "handshaking" && type !== "HandshakeRequest" && type !== "Disconnect" &&
      type !== "Ack"
    ) {
      // Any further valid message proves the HandshakeResponse arrived (deployed clients never ack it).
      this.#authenticate(now, conn);
    }

    const outcome = this.#dispatch(now, from, key, conn, msg);
    if (outcome === undefined) stats.processed++;
    else if (outcome === "duplicate") stats.duplicates++;
    else this.#drop(from, key, outcome.reason, outcome.detail);
    const after = this.#table.byAddr.get(key);
    if (after) this.#reschedule(after);
  }

  /** Runs every timer due at `now`: retransmissions, give-ups, heartbeats and idle timeouts. */
  handleTimeout(now: number): void {
    for (;;) {
      const conn = this.#timers.popDue(now);
      if (!conn) break;
      if (this.#table.byAddr.get(conn.key) !== conn) continue;
      this.#runTimers(now, conn);
      if (this.#table.byAddr.get(conn.key) === conn) this.#reschedule(conn);
    }
  }

  // ---------------------------------------------------------------- outputs

  /** Takes the datagrams produced so far, in the order they must be sent. */
  takeTransmits(): Transmit[] {
    const out = this.#transmits;
    if (out.length === 0) return out;
    this.#transmits = [];
    return out;
  }

  /** Takes the events produced so far. */
  takeEvents(): EndpointEvent[] {
    const out = this.#events;
    if (out.length === 0) return out;
    this.#events = [];
    return out;
  }

  /** When `handleTimeout` must next be called (ms), or `Infinity` when nothing is scheduled. */
  nextDeadline(): number {
    return this.#timers.peek();
  }

  /** A fresh snapshot of every counter. */
  getStats(now: number): StatsSnapshot {
    return this.#stats.snapshot(now, this.#table.counts(), this.#linkCounts);
  }

  /** The registered peers (both states), in registration order. */
  peers(): PeerSummary[] {
    const out: PeerSummary[] = [];
    for (const net of this.#table.byNetwork.values()) {
      for (const conn of net.values()) out.push(this.#summary(conn, conn.peer!));
    }
    return out;
  }

  /** The registered peer with node id `id`, if any. */
  peer(id: string): PeerSummary | undefined {
    const conn = this.#table.byId.get(id.toLowerCase());
    return conn?.peer ? this.#summary(conn, conn.peer) : undefined;
  }

  // ---------------------------------------------------------------- commands

  /**
   * Starts a handshake towards `addr` (the client role; a server uses it for sibling servers). The outcome
   * arrives as a `connected` or `connectFailed` event.
   */
  connect(now: number, addr: SocketAddr, options: { probe?: boolean } = {}): void {
    const key = formatSocketAddr(addr);
    let conn = this.#table.byAddr.get(key);
    if (!conn) {
      conn = newConn(key, addr, now);
      this.#table.byAddr.set(key, conn);
    }
    if (conn.link) this.#closeLink(conn, null);
    conn.window.reset();
    conn.lastHeard = now;
    const probe = options.probe ?? false;
    conn.link = { state: "handshaking", local: this.#node, remote: null, probe };
    this.#linkCounts.handshaking++;
    this.#sendOn(
      now,
      conn,
      "HandshakeRequest",
      this.#node as unknown as Json,
      true,
      probe ? [PROBE_WAIT_MS] : null,
    );
    this.#reschedule(conn);
  }

  /**
   * Sends a message to a remote this endpoint has a link or peer on. Returns the message id and sequence
   * number; with `reliable`, a `delivered` or `gaveUp` event follows.
   *
   * @throws {RangeError} when nothing is known about `to`, or the message does not fit in one datagram.
   */
  send(now: number, to: SocketAddr, type: MessageType, payload: Json, options: SendOptions = {}): Message {
    const conn = this.#table.byAddr.get(formatSocketAddr(to));
    if (!conn || (!conn.link && !conn.peer)) {
      throw new RangeError(`Cannot send to "${formatSocketAddr(to)}": not connected`);
    }
    const msg = this.#sendOn(now, conn, type, payload, options.reliable ?? false, null);
    if (!msg) throw new RangeError(`Cannot send ${type}: the message exceeds ${MAX_UDP_PAYLOAD} bytes`);
    this.#reschedule(conn);
    return msg;
  }

  /**
   * Sends reliable `Data` to a registered peer by node id, shaped as routed Data (`{"from": ..., "data": ...}`
   * with this endpoint's id as `from`). Returns false when no such authenticated peer is registered or the
   * message does not fit in one datagram.
   */
  sendToPeer(now: number, nodeId: string, data: Json): boolean {
    const conn = this.#table.byId.get(nodeId.toLowerCase());
    if (!conn?.peer || conn.peer.state !== "authenticated") return false;
    const sent = this.#sendOn(now, conn, "Data", { from: this.#node.id, data }, true, null) !== null;
    this.#reschedule(conn);
    return sent;
  }

  /** Sends `Disconnect` to `addr` and forgets the link and peer there. */
  disconnect(now: number, addr: SocketAddr, reason: string): void {
    const conn = this.#table.byAddr.get(formatSocketAddr(addr));
    if (!conn) return;
    this.#sendOn(now, conn, "Disconnect", { reason }, false, null);
    if (conn.peer) this.#removePeer(conn, "shutdown");
    if (conn.link) this.#closeLink(conn, "closed");
    this.#forget(conn);
  }

  /** Sends `Disconnect` to every peer and link and forgets them all (shutdown). */
  shutdown(now: number, reason: string): void {
    for (const conn of [...this.#table.byAddr.values()]) {
      if (conn.peer || conn.link) this.#sendOn(now, conn, "Disconnect", { reason }, false, null);
      if (conn.peer) this.#removePeer(conn, "shutdown");
      if (conn.link) this.#closeLink(conn, "closed");
      this.#forget(conn);
    }
    this.#timers.clear();
  }

  /**
   * Probes `discoveryPortRange` on this endpoint's own host for sibling servers: one HandshakeRequest per
   * port, one try each. Siblings that answer become links; they probe back (or answer our registration by
   * connecting back), so both list each other with capability `server`.
   */
  probeSiblings(now: number, local: SocketAddr): void {
    const host = isUnspecified(local.hostname) ? loopbackFor(local.hostname) : local.hostname;
    const [first, last] = this.#config.discoveryPortRange;
    for (let port = first; port <= last; port++) {
      if (port === local.port) continue;
      const addr = { hostname: host, port };
      if (this.#table.byAddr.get(formatSocketAddr(addr))?.link) continue;
      this.connect(now, addr, { probe: true });
    }
  }

  // ---------------------------------------------------------------- dispatch

  #dispatch(
    now: number,
    from: SocketAddr,
    key: string,
    conn: Conn | undefined,
    msg: Message,
  ): Drop | "duplicate" | undefined {
    switch (msg.message_type) {
      case "HandshakeRequest":
        return this.#onHandshakeRequest(now, from, key, conn, msg);
      case "HandshakeResponse":
        return this.#onHandshakeResponse(now, conn, msg);
      case "Ack":
        return this.#onAck(now, conn, msg);
      case "Ping":
        this.#reply(now, from, conn, "Pong", pongPayload(msg.payload));
        return undefined;
      case "Pong":
        this.#events.push({ type: "pong", from, payload: msg.payload, message: msg });
        return undefined;
      case "DiscoveryRequest":
        return this.#onDiscoveryRequest(now, from, conn, msg);
      case "DiscoveryResponse":
        return this.#onDiscoveryResponse(from, conn, msg);
      case "Data":
        return this.#onData(now, from, conn, msg);
      case "Error":
        return this.#onError(from, conn, msg);
      case "Disconnect":
        return this.#onDisconnect(conn);
      case "Retransmit":
        return this.#onRetransmit(conn, msg);
    }
  }

  #onHandshakeRequest(
    now: number,
    from: SocketAddr,
    key: string,
    existing: Conn | undefined,
    msg: Message,
  ): Drop | "duplicate" | undefined {
    if (this.#role !== "server") return drop("unexpected", "HandshakeRequest to a client");
    const info = parseNodeInfo(msg.payload);
    if (typeof info === "string") {
      this.#refuse(now, from, ERROR_CODES.invalidNodeInfo, `handshake failed: invalid node info: ${info}`);
      return undefined;
    }
    let conn = existing;
    if (conn?.peer) {
      const peer = conn.peer;
      if (peer.requestId === msg.id) {
        // A retransmission of the request we already answered: resend the answer if it is still waiting.
        const pending = conn.outbox.findType("HandshakeResponse");
        if (pending) this.#resend(conn, pending.bytes, pending.type);
        return "duplicate";
      }
      if (peer.info.id === info.id) {
        // The same node from the same address handshakes again (it restarted, or re-registers after a
        // Disconnect we never saw): idempotent. A new session starts its sequence numbers afresh.
        conn.window.reset();
        if (msg.sequence_number !== null) conn.window.accept(msg.sequence_number);
        conn.outbox.settleType("HandshakeResponse");
        if (networkOf(info) !== peer.network) {
          const state = peer.state;
          this.#table.unregister(conn);
          this.#table.register(conn, { ...peer, info, network: networkOf(info), requestId: msg.id, state });
        } else {
          peer.info = info;
          peer.requestId = msg.id;
        }
        this.#sendOn(now, conn, "HandshakeResponse", this.#responsePayload(networkOf(info)), true, null);
        return undefined;
      }
    }
    // Checked before an old peer on this address is replaced, so a refused request changes nothing.
    const holder = this.#table.byId.get(info.id);
    if ((holder && holder !== conn) || info.id === this.#node.id) {
      this.#refuse(now, from, ERROR_CODES.nodeIdConflict, NODE_ID_EXISTS);
      return undefined;
    }
    // Another node from the same socket address: the old one is gone.
    if (conn?.peer) this.#removePeer(conn, "replaced");
    if (this.#table.peerCount >= this.#config.maxConnections) {
      this.#refuse(
        now,
        from,
        ERROR_CODES.serverFull,
        `handshake failed: server full (max_connections ${this.#config.maxConnections})`,
      );
      return undefined;
    }
    if (!conn) {
      conn = newConn(key, from, now);
      this.#table.byAddr.set(key, conn);
    }
    conn.window.reset();
    if (msg.requires_ack && msg.sequence_number !== null) conn.window.accept(msg.sequence_number);
    const network = networkOf(info);
    this.#table.register(conn, { info, network, state: "handshaking", requestId: msg.id, joinedAt: now });
    conn.heartbeatAt = now + this.#heartbeatMs;
    this.#recentlyClosed.delete(key);
    this.#sendOn(now, conn, "HandshakeResponse", this.#responsePayload(network), true, null);
    if (info.capabilities.includes("server") && !conn.link) {
      // A sibling server registered with us (its discovery probe, or its connectToPeer): register with it
      // too, so both list each other.
      this.connect(now, from, { probe: true });
    }
    return undefined;
  }

  #responsePayload(network: string): Json {
    // The server echoes the requester's network id: deployed clients compare it with their own.
    const node = { ...this.#node, metadata: { ...this.#node.metadata, network_id: network } };
    return { node_info: node, success: true, error_message: null } as unknown as Json;
  }

  #onHandshakeResponse(now: number, conn: Conn | undefined, msg: Message): Drop | undefined {
    const link = conn?.link;
    if (!conn || !link) return drop("unexpected", "HandshakeResponse without a handshake in progress");
    const payload = parseHandshakeResponse(msg.payload);
    if (typeof payload === "string") return drop("bad_payload", `HandshakeResponse: ${payload}`);
    if (link.state === "connected") return undefined; // a repeat; the Ack (if asked) already went out
    conn.outbox.settleType("HandshakeRequest");
    if (!payload.success) {
      this.#failLink(conn, payload.error_message ?? "handshake failed", "refused");
      return undefined;
    }
    const theirs = networkOf(payload.node_info);
    const ours = networkOf(link.local);
    if (theirs !== ours) {
      this.#failLink(
        conn,
        `handshake failed: network mismatch ("${theirs}" is not "${ours}")`,
        "network_mismatch",
      );
      return undefined;
    }
    link.state = "connected";
    link.remote = payload.node_info;
    this.#linkCounts.handshaking--;
    this.#linkCounts.connected++;
    if (conn.heartbeatAt === Infinity) conn.heartbeatAt = now + this.#heartbeatMs;
    this.#events.push({ type: "connected", addr: conn.addr, node: payload.node_info });
    return undefined;
  }

  #onAck(now: number, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn) return drop("unexpected", "Ack from an unknown address");
    const ackFor = msg.ack_for ?? msg.sequence_number;
    if (ackFor === null) return drop("bad_payload", "Ack names no message");
    const pending = conn.outbox.acknowledge(ackFor);
    if (!pending) {
      // A late or repeated Ack; from a handshaking peer it still proves the peer is there.
      if (conn.peer?.state === "handshaking") this.#authenticate(now, conn);
      return undefined;
    }
    this.#stats.acksReceived++;
    const rttMs = now - pending.firstSentAt;
    if (pending.tries === 1) this.#stats.rttSample(rttMs);
    this.#events.push({
      type: "delivered",
      to: conn.addr,
      id: pending.id,
      seq: pending.seq,
      messageType: pending.type,
      rttMs,
    });
    if (conn.peer?.state === "handshaking") this.#authenticate(now, conn);
    return undefined;
  }

  #onDiscoveryRequest(now: number, from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    const peer = conn?.peer;
    if (!conn || !peer) return this.#notRegistered(now, from, "DiscoveryRequest");
    let offset = 0;
    let limit = this.#config.discoveryPageSize;
    const paged = msg.payload !== null;
    if (paged) {
      const p = msg.payload;
      if (!isJsonObject(p)) {
        return this.#badRequest(now, from, conn, "DiscoveryRequest payload must be null or an object");
      }
      if (p.offset !== undefined && !(Number.isSafeInteger(p.offset) && (p.offset as number) >= 0)) {
        return this.#badRequest(now, from, conn, `bad "offset": ${JSON.stringify(p.offset)}`);
      }
      if (p.limit !== undefined && !(Number.isSafeInteger(p.limit) && (p.limit as number) >= 1)) {
        return this.#badRequest(now, from, conn, `bad "limit": ${JSON.stringify(p.limit)}`);
      }
      offset = (p.offset as number | undefined) ?? 0;
      limit = Math.min(limit, (p.limit as number | undefined) ?? limit);
    }
    const net = this.#table.byNetwork.get(peer.network);
    const entries: Json[] = [];
    let budget = MAX_UDP_PAYLOAD - ENVELOPE_ROOM;
    let index = 0;
    let next: number | null = null;
    let total = 0;
    if (net) {
      for (const other of net.values()) {
        if (other.peer!.state !== "authenticated") continue;
        total++;
        if (index++ < offset) continue;
        if (next !== null) continue;
        const entry = this.#peerInfo(other) as unknown as Json;
        const size = jsonBytes(entry) + 1;
        if (entries.length >= limit || size > budget) {
          next = index - 1;
          continue;
        }
        budget -= size;
        entries.push(entry);
      }
    }
    const payload: Json = paged ? { peers: entries, offset, total, next_offset: next } : entries;
    this.#reply(now, from, conn, "DiscoveryResponse", payload);
    return undefined;
  }

  #peerInfo(conn: Conn): PeerInfo {
    const info = conn.peer!.info;
    return {
      id: info.id,
      addr: info.listen_addr,
      last_seen: Math.floor(conn.lastHeard / 1000),
      capabilities: info.capabilities,
      name: info.name,
    };
  }

  #onDiscoveryResponse(from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn?.link) return drop("unexpected", "DiscoveryResponse without a link");
    let list: Json = msg.payload;
    let nextOffset: number | null = null;
    if (isJsonObject(list)) {
      const n = list.next_offset;
      nextOffset = typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? n : null;
      list = list.peers ?? null;
    }
    if (!Array.isArray(list)) return drop("bad_payload", "DiscoveryResponse payload is not a peer list");
    const peers: PeerInfo[] = [];
    for (const item of list) {
      const p = parsePeerInfo(item);
      if (typeof p === "string") return drop("bad_payload", `DiscoveryResponse: ${p}`);
      peers.push(p);
    }
    this.#events.push({ type: "discovery", from, peers, nextOffset, message: msg });
    return undefined;
  }

  #onData(now: number, from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (conn?.link?.state === "connected") {
      // We registered with the sender: it delivers data to us (routed Data, server pushes, echoes).
      const p = msg.payload;
      const fromId = isJsonObject(p) && typeof p.from === "string" ? p.from : null;
      this.#events.push({ type: "data", from, fromId, to: null, payload: p, message: msg });
      return undefined;
    }
    const peer = conn?.peer;
    if (!conn || !peer) {
      if (this.#role !== "server") return drop("not_registered", "Data from an unknown address");
      return this.#notRegistered(now, from, "Data");
    }
    const p = msg.payload;
    if (isJsonObject(p) && p.to !== undefined && p.to !== null) {
      if (typeof p.to !== "string" || !isUuid(p.to)) {
        return this.#badRequest(now, from, conn, `bad "to": ${JSON.stringify(p.to)}`);
      }
      const target = this.#table.byId.get(p.to.toLowerCase());
      this.#events.push({ type: "data", from, fromId: peer.info.id, to: p.to, payload: p, message: msg });
      if (!target?.peer || target.peer.state !== "authenticated" || target.peer.network !== peer.network) {
        this.#reply(now, from, conn, "Error", {
          error: `unknown recipient: ${p.to}`,
          code: ERROR_CODES.unknownRecipient,
        });
        return undefined;
      }
      if (!this.#sendOn(now, target, "Data", { from: peer.info.id, data: p.data ?? null }, true, null)) {
        this.#tooLarge(now, from, conn);
      }
      this.#reschedule(target);
      return undefined;
    }
    this.#events.push({ type: "data", from, fromId: peer.info.id, to: null, payload: p, message: msg });
    if (!this.#reply(now, from, conn, "Data", { echo: p, timestamp: Math.floor(now / 1000) })) {
      this.#tooLarge(now, from, conn);
    }
    return undefined;
  }

  #onError(from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    const error = parseErrorPayload(msg.payload);
    if (conn?.link?.state === "handshaking") {
      conn.outbox.settleType("HandshakeRequest");
      this.#failLink(conn, error.error, error.code ?? "refused");
      return undefined;
    }
    this.#events.push({ type: "error", from, error, message: msg });
    return undefined;
  }

  #onDisconnect(conn: Conn | undefined): Drop | undefined {
    if (!conn || (!conn.peer && !conn.link)) {
      return drop("not_registered", "Disconnect from an unknown address");
    }
    if (conn.peer) {
      this.#stats.disconnects++;
      this.#removePeer(conn, "disconnect");
    }
    if (conn.link) this.#closeLink(conn, "disconnect");
    this.#forget(conn);
    return undefined;
  }

  #onRetransmit(conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn || (!conn.peer && !conn.link)) {
      return drop("not_registered", "Retransmit from an unknown address");
    }
    const p = msg.payload;
    const seqs = isJsonObject(p) ? p.sequence_numbers : undefined;
    if (!Array.isArray(seqs) || !seqs.every(isSequenceNumber)) {
      return drop("bad_payload", 'Retransmit payload must be {"sequence_numbers": [u32, ...]}');
    }
    for (const seq of seqs.slice(0, MAX_RETRANSMIT_REQUEST)) {
      const pending = conn.outbox.bySeq(seq as number);
      if (pending) this.#resend(conn, pending.bytes, pending.type);
    }
    return undefined;
  }

  // ---------------------------------------------------------------- state changes

  #authenticate(now: number, conn: Conn): void {
    const peer = conn.peer;
    if (peer?.state !== "handshaking") return;
    this.#table.authenticate(conn);
    conn.outbox.settleType("HandshakeResponse");
    this.#stats.handshakesOk++;
    this.#stats.handshakeDuration(now - peer.joinedAt);
    this.#events.push({ type: "peerJoined", peer: this.#summary(conn, peer) });
  }

  /** Unregisters the peer on `conn`; `peerLeft` is reported only for peers that had joined. */
  #removePeer(conn: Conn, reason: LeaveReason): void {
    const peer = this.#table.unregister(conn);
    if (!peer) return;
    if (!conn.link) conn.outbox.drain();
    if (peer.state === "authenticated") {
      this.#events.push({ type: "peerLeft", peer: this.#summary(conn, peer), reason });
    }
  }

  #closeLink(conn: Conn, reason: "disconnect" | "timeout" | "closed" | null): void {
    const link = conn.link;
    if (!link) return;
    conn.link = null;
    if (!conn.peer) conn.outbox.drain();
    if (link.state === "handshaking") this.#linkCounts.handshaking--;
    else this.#linkCounts.connected--;
    if (reason !== null && link.state === "connected") {
      this.#events.push({ type: "linkClosed", addr: conn.addr, reason });
    }
  }

  #failLink(conn: Conn, error: string, code: string): void {
    const probe = conn.link?.probe ?? false;
    this.#closeLink(conn, null);
    this.#events.push({ type: "connectFailed", addr: conn.addr, error, code, probe });
    this.#forget(conn);
  }

  /** Drops the connection when neither a peer nor a link is left on it. */
  #forget(conn: Conn): void {
    if (conn.peer || conn.link) return;
    if (this.#table.byAddr.get(conn.key) === conn) this.#table.byAddr.delete(conn.key);
    this.#timers.schedule(conn, Infinity);
    this.#recentlyClosed.add(conn.key);
    if (this.#recentlyClosed.size > RECENTLY_CLOSED) {
      this.#recentlyClosed.delete(this.#recentlyClosed.values().next().value!);
    }
  }

  #runTimers(now: number, conn: Conn): void {
    for (const due of conn.outbox.poll(now)) {
      const p = due.pending;
      if (due.action === "resend") {
        this.#stats.retransmissions++;
        this.#resend(conn, p.bytes, p.type);
        continue;
      }
      if (p.type === "HandshakeRequest" && conn.link?.state === "handshaking") {
        this.#failLink(conn, `connection timeout to ${conn.key}`, "timeout");
        if (!conn.link) return;
        continue;
      }
      this.#stats.giveUps++;
      this.#events.push({
        type: "gaveUp",
        to: conn.addr,
        id: p.id,
        seq: p.seq,
        messageType: p.type,
        tries: p.tries,
      });
    }
    if (!conn.peer && !conn.link) return;
    if (now - conn.lastHeard >= this.#timeoutMs) {
      if (conn.peer) {
        this.#stats.timeouts++;
        this.#removePeer(conn, "timeout");
      }
      if (conn.link?.state === "handshaking") {
        this.#failLink(conn, `connection timeout to ${conn.key}`, "timeout");
      } else if (conn.link) {
        this.#closeLink(conn, "timeout");
      }
      this.#forget(conn);
      return;
    }
    if (now >= conn.heartbeatAt) {
      this.#sendOn(now, conn, "Ping", null, false, null);
      conn.heartbeatAt = now + this.#heartbeatMs;
    }
  }

  #reschedule(conn: Conn): void {
    let at = conn.outbox.nextDeadline();
    if (conn.peer || conn.link) {
      if (conn.heartbeatAt < at) at = conn.heartbeatAt;
      const idle = conn.lastHeard + this.#timeoutMs;
      if (idle < at) at = idle;
    }
    this.#timers.schedule(conn, at);
  }

  // ---------------------------------------------------------------- sending

  /** Sends a message on a connection: numbered, and recorded for retransmission when reliable. */
  #sendOn(
    now: number,
    conn: Conn,
    type: MessageType,
    payload: Json,
    reliable: boolean,
    schedule: readonly number[] | null,
  ): Message | null {
    const seq = conn.nextSeq;
    conn.nextSeq = seq === MAX_SEQUENCE ? 0 : seq + 1;
    const msg = this.#envelope(now, type, payload, seq, reliable, null);
    const bytes = encodeMessage(msg);
    if (!this.#transmit(conn.addr, bytes, type)) return null;
    if (reliable) {
      if (conn.outbox.full) {
        this.#stats.giveUps++;
        this.#events.push({ type: "gaveUp", to: conn.addr, id: msg.id, seq, messageType: type, tries: 1 });
      } else {
        conn.outbox.add(now, msg.id, seq, type, bytes, schedule ?? this.#config.retransmitSchedule);
      }
    }
    return msg;
  }

  /**
   * Replies on the connection when there is one, else statelessly (no sequence number). Returns false when
   * the reply would not fit in one datagram (it is not sent).
   */
  #reply(now: number, to: SocketAddr, conn: Conn | undefined, type: MessageType, payload: Json): boolean {
    if (conn && (conn.peer || conn.link)) return this.#sendOn(now, conn, type, payload, false, null) !== null;
    return this.#transmit(to, encodeMessage(this.#envelope(now, type, payload, null, false, null)), type);
  }

  /** A new message from this endpoint: fresh id, timestamp in seconds, our `sender_addr`. */
  #envelope(
    now: number,
    type: MessageType,
    payload: Json,
    seq: number | null,
    requiresAck: boolean,
    ackFor: string | null,
  ): Message {
    return {
      id: this.#newId(),
      message_type: type,
      timestamp: Math.floor(now / 1000),
      payload,
      sender_addr: this.#senderAddr,
      sequence_number: seq,
      requires_ack: requiresAck,
      ack_for: ackFor,
    };
  }

  #sendAck(now: number, to: SocketAddr, conn: Conn | undefined, acked: Message): void {
    const msg = this.#envelope(now, "Ack", null, acked.sequence_number, false, acked.id);
    this.#stats.acksSent++;
    this.#transmit(conn?.addr ?? to, encodeMessage(msg), "Ack");
  }

  #refuse(now: number, to: SocketAddr, code: string, error: string): void {
    this.#stats.handshakeFailed(code);
    this.#reply(now, to, undefined, "Error", { error, code });
  }

  #notRegistered(now: number, from: SocketAddr, what: string): Drop {
    this.#reply(now, from, undefined, "Error", {
      error: "not registered: send a HandshakeRequest first",
      code: ERROR_CODES.notRegistered,
    });
    return drop("not_registered", `${what} from an address that has not registered`);
  }

  #badRequest(now: number, from: SocketAddr, conn: Conn, detail: string): Drop {
    this.#reply(now, from, conn, "Error", { error: `bad request: ${detail}`, code: ERROR_CODES.badRequest });
    return drop("bad_payload", detail);
  }

  #tooLarge(now: number, to: SocketAddr, conn: Conn): void {
    this.#reply(now, to, conn, "Error", {
      error: `message too large: the reply would exceed ${MAX_UDP_PAYLOAD} bytes`,
      code: ERROR_CODES.tooLarge,
    });
  }

  #resend(conn: Conn, bytes: Uint8Array, type: MessageType): void {
    this.#transmit(conn.addr, bytes, type);
  }

  /** Queues a datagram; one that cannot fit in a UDP datagram is counted and not queued (returns false). */
  #transmit(to: SocketAddr, bytes: Uint8Array, type: MessageType): boolean {
    if (bytes.length > MAX_UDP_PAYLOAD) {
      this.#stats.sendsTooLarge++;
      return false;
    }
    this.#stats.datagramsSent++;
    this.#stats.bytesSent += bytes.length;
    this.#stats.messagesSent[type]++;
    this.#transmits.push({ to, bytes });
    return true;
  }

  #drop(from: SocketAddr, key: string, reason: DropReason, detail: string): void {
    this.#stats.drop(reason);
    this.#events.push({
      type: "dropped",
      from,
      reason,
      detail,
      afterDisconnect: this.#recentlyClosed.has(key),
    });
  }

  #summary(conn: Conn, peer: PeerEntry): PeerSummary {
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
    };
  }
}

interface Drop {
  reason: DropReason;
  detail: string;
}

function drop(reason: DropReason, detail: string): Drop {
  return { reason, detail };
}

const utf8 = new TextEncoder();
const NON_ASCII = /[^ -~\t\n\r]/; // anything outside printable ASCII

/** Encoded size of a JSON value in bytes. */
function jsonBytes(value: unknown): number {
  const text = JSON.stringify(value);
  return NON_ASCII.test(text) ? utf8.encode(text).length : text.length;
}

/** A Pong echoes a Ping's `nonce` (our client matches replies by it); otherwise its payload is null. */
function pongPayload(ping: Json): Json {
  return isJsonObject(ping) && ping.nonce !== undefined ? { nonce: ping.nonce } : null;
}
