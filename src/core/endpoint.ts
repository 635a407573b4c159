/**
 * The protocol core: one synchronous state machine that does no I/O and never reads the clock. The caller
 * feeds it datagrams (`handleDatagram`) and wake-ups (`handleTimeout`) with the current time, then drains
 * what it produced: datagrams to send (`takeTransmits`), events (`takeEvents`) and the next deadline
 * (`nextDeadline`). The server and the client library run this same core, in the `server` and `client` roles.
 *
 * @module
 */
import {
  formatSocketAddr,
  isUnspecified,
  loopbackFor,
  parseSocketAddr,
  type SocketAddr,
} from "../wire/address.ts";
import type { CoreConfig as Config } from "./config.ts";
import {
  type Conn,
  type ConnExtras,
  type HeldMessage,
  type KeyedPeer,
  newConn,
  type PeerEntry,
  PeerTable,
  type RelayEntry,
} from "./peers.ts";
import {
  type AuthFields,
  DecodeError,
  decodeMessage,
  encodeMessage,
  encodeMessageText,
  type ErrorPayload,
  EXTENSIONS_VERSION,
  isJsonObject,
  isSequenceNumber,
  type Json,
  keptBytes,
  MAX_FRAGMENTS,
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
} from "../wire/mod.ts";
import {
  type Budget,
  MAX_QUEUED_BYTES_PER_PEER,
  MAX_QUEUED_PER_PEER,
  OrderedInbox,
  type Pending,
  type Queued,
  Reassembler,
  RECEIVE_WINDOW,
  type RtoBounds,
  RttEstimator,
  SendQueue,
} from "./reliability.ts";
import { type DropReason, type GiveUpReason, Stats, type StatsSnapshot } from "./stats.ts";
import { TimerHeap } from "./timers.ts";
import { fullBucket, type Rate, RateLimiter, take, takeMany } from "./limits.ts";
import { CookieJar } from "./cookies.ts";
import { fnv1a, mulberry32 } from "./random.ts";
import {
  fromBase64Url,
  type Identity,
  nodeIdForKey,
  ReplayCache,
  requestSignedBytes,
  responseSignedBytes,
  toBase64Url,
} from "./auth.ts";
import {
  generateX25519,
  hkdf,
  HmacKey,
  type KeyPair,
  signEd25519,
  verifyEd25519,
  x25519,
} from "../deps/crypto.ts";
import { isUuid } from "../deps/uuid.ts";
import { type ClusterMessage, type DirectoryRecord, RemoteDirectory, type RemotePeer } from "./directory.ts";

/** Largest UDP payload (IPv4); a single-datagram message can never be larger. */
export const MAX_UDP_PAYLOAD = 65_507;

/** Room left for the envelope when a DiscoveryResponse is cut to fit one datagram. */
const ENVELOPE_ROOM = 512;

/** Most sequence numbers honoured in one `Retransmit` request (and asked for in one we send). */
export const MAX_RETRANSMIT_REQUEST = 64;

/** Shortest wait before a gap in a peer's reliable stream is reported with `Retransmit` (ms). */
const NACK_DELAY_MS = 10;

/** Most given-up ordered messages remembered per peer for answering `Retransmit`. */
const GONE_REMEMBERED = 256;

/** Per gap filled, how much of the path's earlier lateness estimate is kept (a decaying maximum). */
const REORDER_DECAY = 0.95;

/**
 * Bytes per second (and burst) sent to a peer validated only by the compatibility rule: enough for a deployed
 * client's discovery pages and echoes, too little to make the server a useful reflector.
 */
export const UNPROVEN_RATE: Rate = { perSecond: 16 * 1024, burst: 64 * 1024 };

/** A rate-limited datagram after decoding: counted, but without an event (a flood must stay cheap). */
const QUIET_RATE_LIMITED: Drop = { reason: "rate_limited", detail: "", quiet: true };

/** Most missing `rel` numbers tracked per peer. */
const MISSING_TRACKED = RECEIVE_WINDOW;

/** Random jitter added to each backed-off retransmission wait: up to this fraction of it. */
export const BACKOFF_JITTER = 0.25;

/** Cookie challenges one handshake answers before it fails with `cookie_required`. */
const MAX_COOKIE_TRIES = 3;

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
  /** It speaks p2p_server's extensions. */
  extensions: boolean;
  /** It proved an Ed25519 key in its handshake (its id is its key's). */
  keyed: boolean;
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
  | {
    type: "connected";
    addr: SocketAddr;
    node: NodeInfo;
    /** Our public address as the remote sees it (`"ip:port"`), when it says (p2p_server does). */
    observedAddr: string | null;
  }
  | {
    type: "introduced";
    /** The server that introduced us. */
    from: SocketAddr;
    /** The other peer. */
    peer: PeerInfo;
    /** Where to try it: its observed (public) address first, then its declared one. */
    candidates: SocketAddr[];
    /** The shared nonce both sides put in their punch Pings. */
    nonce: string;
    /** Whether we asked (the initiator starts the direct handshake once a path answers). */
    initiator: boolean;
  }
  | {
    type: "punched";
    /** The introduced peer. */
    peerId: string;
    /** The path that answered. */
    addr: SocketAddr;
    /** Whether we asked (then we shake hands over the path now). */
    initiator: boolean;
  }
  | {
    type: "punchFailed";
    /** The introduced peer. */
    peerId: string;
    /** Whether we asked. */
    initiator: boolean;
  }
  | {
    type: "roamed";
    /** The peer that moved (null for a link without a registered peer). */
    peer: PeerSummary | null;
    /** Its new address. */
    to: SocketAddr;
  }
  | {
    type: "cluster";
    /** The instance to send it to (cluster mode). */
    instance: string;
    message: ClusterMessage;
  }
  | { type: "connectFailed"; addr: SocketAddr; error: string; code: string; probe: boolean }
  | { type: "linkClosed"; addr: SocketAddr; reason: "disconnect" | "timeout" | "closed" }
  | { type: "pong"; from: SocketAddr; payload: Json; message: Message }
  | {
    type: "discovery";
    from: SocketAddr;
    peers: PeerInfo[];
    nextOffset: number | null;
    /** Where the next page starts (the `cursor` to ask for), or null on the last page. */
    nextCursor: string | null;
    message: Message;
  }
  | { type: "error"; from: SocketAddr; error: ErrorPayload; message: Message }
  | { type: "delivered"; to: SocketAddr; id: string; seq: number; messageType: MessageType; rttMs: number }
  | {
    type: "gaveUp";
    to: SocketAddr;
    id: string;
    seq: number;
    messageType: MessageType;
    tries: number;
    /** `deadline` (adaptive policy), `tries` (count-based schedule) or `queue_full`. */
    reason: GiveUpReason;
  }
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
  /**
   * Source of randomness in [0, 1) for retransmission jitter. Randomness is a parameter so tests replay
   * exactly. @default {a PRNG seeded from the node id}
   */
  random?: () => number;
  /**
   * Secret for stateless handshake cookies (at least 16 bytes). @default {bytes drawn from `random`}
   */
  cookieSecret?: Uint8Array;
  /**
   * This endpoint's key-based identity. With it, handshakes are signed and sessions authenticated; the
   * node's id must be `identity.nodeId`. @default {none: unkeyed, as the spec}
   */
  identity?: Identity;
  /**
   * Cluster mode: this instance's id. The core then also serves the peers of other instances, mirrored by
   * the caller into it (`upsertRemote` and friends), and asks for messages to other instances through
   * `cluster` events. @default {none: a single instance}
   */
  instance?: string;
}

/** Cluster mode: the core's traffic with other instances ({@linkcode Endpoint.clusterCounts}). */
export interface ClusterCounts {
  /** Messages handed out for other instances. */
  messagesOut: number;
  /** Messages received from other instances. */
  messagesIn: number;
  /** Routed Data sent on to another instance. */
  relaysOut: number;
  /** Routed Data received from another instance for a peer here. */
  relaysIn: number;
  /** Introductions of a peer here asked for by another instance. */
  introductions: number;
  /** Peers removed here because the id went to another instance. */
  evictions: number;
  /** Peers of other instances in the mirror. */
  remotePeers: number;
  /** Routed Data waiting for another instance's answer. */
  relaysPending: number;
}

/** Options of {@linkcode Endpoint.send}. */
export interface SendOptions {
  /** Ask for an Ack and retransmit until it comes or the message is given up. @default {false} */
  reliable?: boolean;
  /**
   * Data only: deliver in order with this endpoint's other ordered Data to the same remote (implies
   * `reliable`). @default {false}
   */
  ordered?: boolean;
}

/** The round-trip state of one path, as {@linkcode Endpoint.path} reports it. */
export interface PathInfo {
  /** Smoothed RTT (ms), or null before the first sample. */
  srttMs: number | null;
  /** RTT variance (ms), or null before the first sample. */
  rttvarMs: number | null;
  /** The current retransmission timeout (ms). */
  rtoMs: number;
  /** RTT samples taken. */
  samples: number;
  /** Reliable messages waiting for an Ack. */
  inFlight: number;
  /** Reliable messages waiting for room in the window. */
  queued: number;
  /** The remote speaks p2p_server's extensions. */
  extensions: boolean;
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
  relayQuota: "relay_quota",
  undeliverable: "undeliverable",
  cannotIntroduce: "cannot_introduce",
  cookieRequired: "cookie_required",
  authRequired: "auth_required",
  badAuth: "bad_auth",
  badIdentity: "bad_identity",
  badSignature: "bad_signature",
  stale: "stale",
  replay: "replay",
  wrongServer: "wrong_server",
  notAllowed: "not_allowed",
} as const;

/** Codes a client's `connectFailed` carries when a server does not prove its key. */
export const CLIENT_AUTH_CODES = {
  serverKeyMismatch: "server_key_mismatch",
  serverUnauthenticated: "server_unauthenticated",
  badServerSignature: "bad_server_signature",
} as const;

/** The text upstream peers and users search for when a node id is taken. */
export const NODE_ID_EXISTS = "handshake failed: node ID already exists";

/**
 * The protocol state machine. See the module documentation.
 *
 * @example
 * ```ts
 * import { Endpoint } from "./endpoint.ts";
 * import { resolveConfig } from "../config.ts";
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
  readonly #rto: RtoBounds;
  readonly #random: () => number;
  readonly #reassemblyBudget: Budget;
  readonly #deliveryMs: number;
  readonly #handshakeMs: number;
  #linkCounts = { handshaking: 0, connected: 0 };
  /** The `now` of the call being handled (ms), for the byte budgets checked where datagrams are queued. */
  #clock = 0;
  /** Whether the datagram being handled carried a valid sum: stateless replies to it carry one too. */
  #replySummed = false;
  /** Size of the datagram being handled (0 outside `handleDatagram`). */
  #inLen = 0;
  /** Bytes stateless replies to the datagram being handled may still use (3x its size). */
  #statelessBudget = 0;
  /** The datagram being handled is a HandshakeRequest with a valid cookie. */
  #cookieOk = false;
  readonly #limiter: RateLimiter;
  readonly #identity: Identity | null;
  #currentResponseKey: ResponseKey | null = null;
  /** Authenticated sessions by session id (servers: to recognise a peer that roamed to a new address). */
  readonly #sessions = new Map<string, Conn>();
  readonly #replays = new ReplayCache();
  /** Punches in progress, by nonce. */
  readonly #punches = new Map<string, PunchState>();
  /** Peers a client was introduced to, by node id, and until when their direct handshake is accepted. */
  readonly #expected = new Map<string, number>();
  /** Path checks in progress, by the new address: the session that may move there and the nonce asked. */
  readonly #pathChecks = new Map<string, { conn: Conn; nonce: string; until: number }>();
  readonly #nodeRate: Rate;
  readonly #cookies: CookieJar;
  readonly #halfOpenMs: number;
  /** Send-queue bounds per remote: room for four messages of `max_message_size` in fragments, at least. */
  readonly #queueLimits: [number, number];
  /** Cluster mode: this instance's id, or null. */
  readonly #instance: string | null;
  /** Cluster mode: the other instances' peers. */
  readonly #remote = new RemoteDirectory();
  /**
   * Cluster mode: Data relayed end to end to another instance, by relay id, until it answers (in deadline
   * order: every entry waits the same time).
   */
  readonly #clusterRelays = new Map<string, ClusterRelay>();
  #clusterCounts = {
    messagesOut: 0,
    messagesIn: 0,
    relaysOut: 0,
    relaysIn: 0,
    introductions: 0,
    evictions: 0,
  };

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
    this.#rto = {
      initialMs: options.config.rtoInitialMs,
      minMs: options.config.rtoMinMs,
      maxMs: options.config.rtoMaxMs,
    };
    this.#random = options.random ?? mulberry32(fnv1a(options.node.id));
    this.#reassemblyBudget = { used: 0, limit: options.config.reassemblyBufferBytes };
    this.#deliveryMs = options.config.deliveryTimeout * 1000;
    this.#handshakeMs = options.config.handshakeTimeout * 1000;
    this.#halfOpenMs = options.config.halfOpenTimeout * 1000;
    // A fragment carries at least (max_datagram_size - 400) * 3/4 bytes of its message.
    const perMessage = Math.ceil(
      options.config.maxMessageSize / Math.max(3, Math.floor((options.config.maxDatagramSize - 400) / 4) * 3),
    );
    this.#queueLimits = [
      Math.max(MAX_QUEUED_PER_PEER, 4 * perMessage + 64),
      Math.max(MAX_QUEUED_BYTES_PER_PEER, 4 * perMessage * options.config.maxDatagramSize),
    ];
    const c = options.config;
    const rate = ([perSecond, burst]: [number, number]): Rate => ({ perSecond, burst });
    this.#limiter = new RateLimiter({
      datagramsPerIp: rate(c.rateLimitDatagramsPerIp),
      handshakesPerIp: rate(c.rateLimitHandshakesPerIp),
      datagramsGlobal: rate(c.rateLimitDatagramsGlobal),
      banSeconds: c.banSeconds,
      exemptLoopback: c.rateLimitExemptLoopback,
    });
    this.#nodeRate = rate(c.rateLimitDatagramsPerNode);
    this.#identity = options.identity ?? null;
    if (this.#identity && this.#identity.nodeId !== options.node.id) {
      throw new RangeError(
        `Node id "${options.node.id}" is not the id of its key ("${this.#identity.nodeId}")`,
      );
    }
    this.#cookies = new CookieJar(
      options.cookieSecret ?? Uint8Array.from({ length: 32 }, () => Math.floor(this.#random() * 256)),
    );
    this.#instance = options.instance ?? null;
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
    this.#clock = now;
    const stats = this.#stats;
    stats.datagramsReceived++;
    stats.bytesReceived += bytes.length;
    const admission = this.#limiter.admit(from.hostname, now);
    if (admission !== "ok") {
      // Dropped unanswered and without an event: a flood must cost as little as possible.
      stats.drop(admission === "banned" ? "banned" : "rate_limited");
      return;
    }
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
    this.#inLen = bytes.length;
    this.#statelessBudget = 3 * bytes.length;
    let outcome: Outcome;
    try {
      outcome = this.#receive(now, from, key, msg, bytes);
    } catch (error) {
      // A bug must not let one datagram stop the server: count it, report it, and go on.
      outcome = drop("internal_error", `${(error as Error)?.stack ?? error}`);
    }
    this.#inLen = 0;
    this.#statelessBudget = 0;
    this.#cookieOk = false;
    if (outcome === undefined || outcome === "deferred") stats.processed++;
    else if (outcome === "duplicate") stats.duplicates++;
    else if (outcome.quiet) stats.drop(outcome.reason);
    else this.#drop(from, key, outcome.reason, outcome.detail);
    const after = this.#table.byAddr.get(key);
    if (after) this.#reschedule(after);
  }

  /** Runs every timer due at `now`: retransmissions, give-ups, heartbeats and idle timeouts. */
  handleTimeout(now: number): void {
    this.#clock = now;
    for (;;) {
      const conn = this.#timers.popDue(now);
      if (!conn) break;
      if (this.#table.byAddr.get(conn.key) !== conn) continue;
      this.#runTimers(now, conn);
      if (this.#table.byAddr.get(conn.key) === conn) this.#reschedule(conn);
    }
    for (const [rid, relay] of this.#clusterRelays) {
      if (relay.until > now) break;
      this.#clusterRelays.delete(rid);
      this.#settleRelay(now, relay.senderKey, relay.originalId, false);
    }
    for (const punch of [...this.#punches.values()]) {
      if (punch.nextAt > now) continue;
      if (now >= punch.until) {
        this.#punches.delete(punch.nonce);
        this.#events.push({ type: "punchFailed", peerId: punch.peerId, initiator: punch.initiator });
      } else {
        this.#probe(now, punch);
      }
    }
  }

  /** Starts probing an introduced peer's candidates: every {@linkcode PUNCH_INTERVAL_MS} until the budget. */
  #startPunch(
    now: number,
    peerId: string,
    candidates: SocketAddr[],
    nonce: string,
    initiator: boolean,
  ): void {
    if (this.#punches.has(nonce)) return;
    if (this.#punches.size >= MAX_PUNCHES) this.#punches.delete(this.#punches.keys().next().value!);
    const punch: PunchState = {
      nonce,
      peerId,
      candidates: [...candidates],
      keys: new Set(candidates.map(formatSocketAddr)),
      initiator,
      until: now + PUNCH_BUDGET_MS,
      nextAt: now,
    };
    this.#punches.set(nonce, punch);
    this.#probe(now, punch);
  }

  #probe(now: number, punch: PunchState): void {
    for (const c of punch.candidates) this.punch(now, c, punch.nonce);
    punch.nextAt = now + PUNCH_INTERVAL_MS;
  }

  /** A path answered a probe: stop probing; the initiator shakes hands over it, expecting that peer. */
  #punched(now: number, punch: PunchState, addr: SocketAddr): void {
    this.#punches.delete(punch.nonce);
    this.#events.push({ type: "punched", peerId: punch.peerId, addr, initiator: punch.initiator });
    if (punch.initiator) this.connect(now, addr, { expectedId: punch.peerId });
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
    let at = this.#timers.peek();
    for (const punch of this.#punches.values()) if (punch.nextAt < at) at = punch.nextAt;
    for (const relay of this.#clusterRelays.values()) {
      if (relay.until < at) at = relay.until;
      break;
    }
    return at;
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

  /** The round-trip state of the path to `addr`, if this endpoint knows it. */
  path(addr: SocketAddr): PathInfo | undefined {
    const conn = this.#table.byAddr.get(formatSocketAddr(addr));
    if (!conn) return undefined;
    const rtt = conn.rtt;
    return {
      srttMs: rtt ? rtt.srtt : null,
      rttvarMs: rtt ? rtt.rttvar : null,
      rtoMs: this.#rtoOf(conn),
      samples: rtt?.samples ?? 0,
      inFlight: conn.outbox.size,
      queued: conn.x?.queue?.size ?? 0,
      extensions: conn.ext,
    };
  }

  /**
   * For requests retried above the core (a client's Ping or DiscoveryRequest): the wait after try number
   * `tries` (from 1) to `addr`, or null when the request should be given up, `elapsedMs` after its first
   * try. Follows the same policy as reliable messages.
   */
  retryWait(addr: SocketAddr, tries: number, elapsedMs: number): number | null {
    if (this.#config.retransmitPolicy === "schedule") {
      return this.#config.retransmitSchedule[tries - 1] ?? null;
    }
    if (elapsedMs >= this.#deliveryMs) return null;
    const conn = this.#table.byAddr.get(formatSocketAddr(addr));
    const rto = conn ? this.#rtoOf(conn) : Math.min(this.#rto.maxMs, this.#rto.initialMs);
    return Math.min(this.#backoff(rto, tries, this.#deliveryMs), this.#deliveryMs - elapsedMs);
  }

  // ---------------------------------------------------------------- commands

  /**
   * Sends a hole-punching probe to `addr`: an unnumbered Ping carrying `{"punch": nonce}`, which the
   * introduced peer's endpoint answers with a Pong echoing it. Opens our NAT's mapping towards `addr` too.
   */
  punch(now: number, addr: SocketAddr, nonce: string): void {
    this.#clock = now;
    const ping = this.#envelope(now, "Ping", { punch: nonce }, null, false, null);
    const bytes = encodeMessage(ping, true);
    this.#stats.datagramsSent++;
    this.#stats.bytesSent += bytes.length;
    this.#stats.messagesSent.Ping++;
    this.#transmits.push({ to: { hostname: addr.hostname, port: addr.port }, bytes });
  }

  /**
   * Starts a handshake towards `addr` (the client role; a server uses it for sibling servers). The outcome
   * arrives as a `connected` or `connectFailed` event.
   */
  connect(
    now: number,
    addr: SocketAddr,
    options: { probe?: boolean; validated?: boolean; pinnedKey?: Uint8Array; expectedId?: string } = {},
  ): void {
    this.#clock = now;
    const key = formatSocketAddr(addr);
    let conn = this.#table.byAddr.get(key);
    if (!conn) {
      conn = newConn(key, addr, now);
      this.#table.byAddr.set(key, conn);
    }
    if (conn.link) this.#closeLink(conn, null);
    this.#newSession(conn, null);
    // We chose to send to it, unless a remote asked us to (a connect-back): that proves nothing about it.
    if (options.validated ?? true) conn.validated = true;
    conn.lastHeard = now;
    const probe = options.probe ?? false;
    conn.link = { state: "handshaking", local: this.#node, remote: null, probe };
    if (options.pinnedKey) conn.link.pinnedKey = options.pinnedKey;
    if (options.expectedId) conn.link.expectedId = options.expectedId;
    // A new handshake of ours starts a new session, unless a peer of ours shares this connection's.
    if (!conn.peer) this.#endSession(conn);
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
   * Sends a message to a remote this endpoint has a link or peer on. Returns the message (its id names it in
   * the events); with `reliable` or `ordered`, a `delivered` or `gaveUp` event follows. A message larger
   * than `max_datagram_size` goes out as fragments when the remote speaks p2p_server's extensions.
   *
   * @throws {RangeError} when nothing is known about `to`, or the message is too large for the remote
   * (`max_message_size`, or one UDP datagram for a remote without the extensions).
   */
  send(now: number, to: SocketAddr, type: MessageType, payload: Json, options: SendOptions = {}): Message {
    this.#clock = now;
    const conn = this.#table.byAddr.get(formatSocketAddr(to));
    if (!conn || (!conn.link && !conn.peer)) {
      throw new RangeError(`Cannot send to "${formatSocketAddr(to)}": not connected`);
    }
    const ordered = type === "Data" && (options.ordered ?? false);
    const msg = this.#sendOn(now, conn, type, payload, options.reliable ?? false, null, ordered);
    if (!msg) {
      const limit = conn.ext ? this.#config.maxMessageSize : MAX_UDP_PAYLOAD;
      throw new RangeError(`Cannot send ${type}: the message exceeds ${limit} bytes`);
    }
    this.#reschedule(conn);
    return msg;
  }

  /**
   * Sends reliable `Data` to a registered peer by node id, shaped as routed Data (`{"from": ..., "data": ...}`
   * with this endpoint's id as `from`). Returns false when no such authenticated peer is registered or the
   * message is too large for it.
   */
  sendToPeer(now: number, nodeId: string, data: Json, options: { ordered?: boolean } = {}): boolean {
    this.#clock = now;
    const conn = this.#table.byId.get(nodeId.toLowerCase());
    if (!conn?.peer || conn.peer.state !== "authenticated") return false;
    const payload = { from: this.#node.id, data };
    const sent = this.#sendOn(now, conn, "Data", payload, true, null, options.ordered ?? false) !== null;
    this.#reschedule(conn);
    return sent;
  }

  /** Sends `Disconnect` to `addr` and forgets the link and peer there. */
  disconnect(now: number, addr: SocketAddr, reason: string): void {
    this.#clock = now;
    const conn = this.#table.byAddr.get(formatSocketAddr(addr));
    if (!conn) return;
    this.#sendOn(now, conn, "Disconnect", { reason }, false, null);
    if (conn.peer) this.#removePeer(conn, "shutdown");
    if (conn.link) this.#closeLink(conn, "closed");
    this.#forget(conn);
  }

  /** Sends `Disconnect` to every peer and link and forgets them all (shutdown). */
  shutdown(now: number, reason: string): void {
    this.#clock = now;
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
    this.#clock = now;
    const host = isUnspecified(local.hostname) ? loopbackFor(local.hostname) : local.hostname;
    const [first, last] = this.#config.discoveryPortRange;
    for (let port = first; port <= last; port++) {
      if (port === local.port) continue;
      const addr = { hostname: host, port };
      if (this.#table.byAddr.get(formatSocketAddr(addr))?.link) continue;
      this.connect(now, addr, { probe: true });
    }
  }

  // ---------------------------------------------------------------- receiving

  /** One decoded datagram: Ack and duplicate handling, then fragments, ordered Data or plain dispatch. */
  // ---------------------------------------------------------------- cluster mode

  /** Cluster mode: the mirror of the other instances' peers (read it, change it through the methods below). */
  get remotePeers(): RemoteDirectory {
    return this.#remote;
  }

  /** Cluster mode: counters of the traffic with other instances. */
  clusterCounts(): ClusterCounts {
    return {
      ...this.#clusterCounts,
      remotePeers: this.#remote.size,
      relaysPending: this.#clusterRelays.size,
    };
  }

  /**
   * Cluster mode: adds or updates peers of other instances (announced, or read from the shared directory).
   * This instance's own records, and ids registered here, are skipped.
   */
  upsertRemote(records: Iterable<DirectoryRecord>): void {
    const order = () => this.#table.nextOrder();
    for (const r of records) {
      if (r.instance === this.#instance || this.#table.byId.has(r.id)) continue;
      this.#remote.upsert(r, order);
    }
  }

  /** Cluster mode: peers that left another instance. */
  removeRemote(instance: string, ids: Iterable<string>): void {
    for (const id of ids) this.#remote.remove(id, instance);
  }

  /**
   * Cluster mode: replaces the mirror with a full read of the shared directory (this instance's records and
   * ids registered here are skipped). Returns how many mirrored peers were removed.
   */
  replaceRemote(records: Iterable<DirectoryRecord>): number {
    const others: DirectoryRecord[] = [];
    for (const r of records) {
      if (r.instance !== this.#instance && !this.#table.byId.has(r.id)) others.push(r);
    }
    return this.#remote.replace(others, () => this.#table.nextOrder());
  }

  /**
   * Cluster mode: an instance is gone (it shut down, or its liveness key expired): its peers leave the
   * mirror, and routed messages waiting for its answer are reported undeliverable. Returns the peers removed.
   */
  dropInstance(now: number, instance: string): number {
    this.#clock = now;
    for (const [rid, relay] of [...this.#clusterRelays]) {
      if (relay.instance !== instance) continue;
      this.#clusterRelays.delete(rid);
      this.#settleRelay(now, relay.senderKey, relay.originalId, false);
    }
    return this.#remote.dropInstance(instance);
  }

  /** Cluster mode: forgets every mirrored peer and fails every relay in flight (the directory is unreachable). */
  clearRemote(now: number): void {
    this.#clock = now;
    const relays = [...this.#clusterRelays.values()];
    this.#clusterRelays.clear();
    for (const relay of relays) this.#settleRelay(now, relay.senderKey, relay.originalId, false);
    this.#remote.clear();
  }

  /**
   * Cluster mode: the shared directory gave `id` to another instance (two instances accepted it at once):
   * the peer here is told, as any refused duplicate is, and removed. Returns whether it was here.
   */
  evictPeer(now: number, id: string): boolean {
    this.#clock = now;
    const conn = this.#table.byId.get(id);
    if (!conn?.peer) return false;
    this.#clusterCounts.evictions++;
    this.#reply(now, conn.addr, conn, "Error", { error: NODE_ID_EXISTS, code: ERROR_CODES.nodeIdConflict });
    this.#removePeer(conn, "replaced");
    if (!conn.link) this.#forget(conn);
    return true;
  }

  /** Cluster mode: a message from another instance. */
  handleClusterMessage(now: number, from: string, message: ClusterMessage): void {
    this.#clock = now;
    this.#clusterCounts.messagesIn++;
    switch (message.t) {
      case "relay": {
        this.#clusterCounts.relaysIn++;
        const target = this.#table.byId.get(message.to);
        const fail = () => {
          if (message.rid !== null) this.#clusterSend(from, { t: "relayed", rid: message.rid, ok: false });
        };
        if (!target?.peer || target.peer.network !== message.network) return fail();
        const routed = { from: message.from, data: message.data };
        const copy = this.#sendOn(now, target, "Data", routed, true, null, message.ordered);
        this.#reschedule(target);
        if (!copy) return fail();
        if (message.rid === null) return;
        const forwarded = this.#extras(target).forwarded ??= new Map();
        if (forwarded.size >= MAX_RELAYS_TRACKED) forwarded.delete(forwarded.keys().next().value!);
        forwarded.set(copy.id, { senderKey: CLUSTER_SENDER + from, originalId: message.rid });
        return;
      }
      case "relayed": {
        const relay = this.#clusterRelays.get(message.rid);
        if (!relay || relay.instance !== from) return;
        this.#clusterRelays.delete(message.rid);
        this.#settleRelay(now, relay.senderKey, relay.originalId, message.ok);
        return;
      }
      case "introduce": {
        const target = this.#table.byId.get(message.target);
        if (target?.peer?.state !== "authenticated" || !target.ext) return;
        this.#clusterCounts.introductions++;
        const card = introduction(message.peer, message.candidates, message.nonce, false);
        this.#sendOn(now, target, "DiscoveryResponse", card, true, null);
        this.#reschedule(target);
        return;
      }
      case "evict": {
        const conn = this.#table.byId.get(message.id);
        if (!conn?.peer?.keyed) return; // only a key's proof moves an id away
        this.#clusterCounts.evictions++;
        this.#removePeer(conn, "replaced");
        if (!conn.link) this.#forget(conn);
        return;
      }
    }
  }

  #clusterSend(instance: string, message: ClusterMessage): void {
    if (this.#instance === null) return;
    this.#clusterCounts.messagesOut++;
    this.#events.push({ type: "cluster", instance, message });
  }

  #receive(now: number, from: SocketAddr, key: string, msg: Message, bytes: Uint8Array): Outcome {
    this.#stats.messagesReceived[msg.message_type]++;
    this.#replySummed = msg.summed === true;
    let conn = this.#table.byAddr.get(key);
    if (!conn && msg.sid !== undefined && this.#role === "server") {
      // A datagram of an authenticated session from an address that session is not on: a roaming peer, or
      // a replay. Only a path check can tell.
      const moved = this.#roam(now, from, key, msg, bytes);
      if (moved !== true) return moved;
      conn = this.#table.byAddr.get(key);
    }
    const session = conn?.session;
    if (session && !this.#macExempt(conn!, msg) && !this.#macOk(session.recvKey, bytes, msg)) {
      return drop("bad_mac", "datagram of an authenticated session without a valid mac");
    }
    if (
      !msg.summed && !msg.mac &&
      (conn?.ext || msg.ext !== undefined || msg.rel !== undefined || msg.ord !== undefined || msg.frag)
    ) {
      // Peers that speak the extensions sum every datagram: one without a valid sum is corrupt.
      return drop("bad_checksum", "datagram from a peer with extensions carries no sum");
    }
    const type = msg.message_type;
    const peer = conn?.peer;
    if (peer && !take(conn!.bucket ??= fullBucket(this.#nodeRate, now), this.#nodeRate, now)) {
      return QUIET_RATE_LIMITED;
    }
    if (type === "HandshakeRequest" && this.#role === "server" && peer?.requestId !== msg.id) {
      // Every new request (only a retransmission of the one already answered is exempt) counts against the
      // per-IP handshake limit; one that would register a node (not the peer already here re-handshaking)
      // needs a cookie under load.
      if (!this.#limiter.admitHandshake(from.hostname, now)) return QUIET_RATE_LIMITED;
      const p = msg.payload;
      const sameNode = peer !== undefined && peer !== null && isJsonObject(p) && typeof p.id === "string" &&
        p.id.toLowerCase() === peer.info.id;
      if (!sameNode) {
        const refusal = this.#checkCookie(now, from, key, msg);
        if (refusal !== null) return refusal;
      }
    }
    if (conn) {
      conn.lastHeard = now;
      if (msg.ext !== undefined) conn.ext = true;
      if (!conn.validated) conn.bytesIn += this.#inLen;
    }
    let chunk: Uint8Array | null = null;
    if (msg.frag) {
      // Checked before the Ack: a fragment that cannot be stored is not acknowledged, so it comes again.
      const prepared = this.#prepareFragment(conn, msg);
      if (!(prepared instanceof Uint8Array)) return prepared;
      chunk = prepared;
    }
    // The Ack is decided after the message is handled, and put in front of whatever the handling sent (the
    // spec's order): a message that turns out undecodable or unexpected is not acknowledged, so a corrupted
    // copy never tells the sender that the real one arrived.
    let ackAt = -1;
    let tracked: number | null = null;
    if (msg.requires_ack && type !== "Ack") {
      if (!conn && type !== "HandshakeRequest" && type !== "Ping") {
        // Nothing from an unregistered address is processed but a handshake (and a Ping): acknowledging it
        // would tell the sender it was delivered. The Error reply says why.
        return this.#dispatch(now, from, key, conn, msg);
      }
      if (conn && type !== "HandshakeRequest") {
        if (msg.ord !== undefined && type === "Data" && conn.x?.ordered?.wouldOverflow(msg.ord)) {
          return drop("buffer_full", `ordered message ${msg.ord} does not fit the reorder buffer`);
        }
        tracked = msg.rel ?? msg.sequence_number;
        if (tracked !== null && !conn.window.isNew(tracked)) {
          this.#sendAck(now, from, conn, msg);
          return "duplicate";
        }
      }
      ackAt = this.#transmits.length;
    }
    if (
      conn?.peer?.state === "handshaking" && type !== "HandshakeRequest" && type !== "Disconnect" &&
      type !== "Ack"
    ) {
      // Any further valid message proves the HandshakeResponse arrived (deployed clients never ack it).
      this.#authenticate(now, conn);
    }
    let outcome: Outcome;
    if (chunk) outcome = this.#onFragment(now, from, key, conn!, msg, chunk);
    else if (msg.ord !== undefined && type === "Data" && conn) {
      outcome = this.#onOrdered(now, from, key, conn, msg);
    } else outcome = this.#dispatch(now, from, key, conn, msg);
    if (
      ackAt >= 0 && outcome !== "deferred" &&
      (outcome === undefined || outcome === "duplicate" || outcome.refused)
    ) {
      if (conn && tracked !== null) {
        const before = conn.window.highest;
        conn.window.accept(tracked);
        if (msg.rel !== undefined) this.#noteRel(now, conn, before, msg.rel);
      }
      // A HandshakeRequest may have created the connection meanwhile: the Ack goes out on it (with its sum).
      const ackConn = conn ?? this.#table.byAddr.get(key);
      // The Ack of a HandshakeRequest that just started a session must not be MAC'd (the requester gets its
      // keys from the response that follows); on a session that was already running it is.
      const mac = msg.message_type !== "HandshakeRequest" ||
        (session !== undefined && ackConn?.session === session);
      this.#sendAck(now, from, ackConn, msg, ackAt, mac);
    }
    return outcome;
  }

  /**
   * Stateless cookies: with `cookie_mode` `always`, or `auto` while more than `cookie_threshold` handshakes
   * are half-open, a new registration must carry a valid cookie. A request without one is answered with a
   * small challenge and nothing is stored. Returns how such a request ended, or null to go on.
   */
  #checkCookie(now: number, from: SocketAddr, key: string, msg: Message): Outcome | null {
    const mode = this.#config.cookieMode;
    if (mode === "never") return null;
    const cookie = msg.cookie;
    if (cookie !== undefined && this.#cookies.check(key, cookie, now)) {
      this.#cookieOk = true;
      this.#stats.cookiesAccepted++;
      return null;
    }
    if (mode === "auto" && this.#table.halfOpen < this.#config.cookieThreshold) return null;
    this.#stats.cookieChallenges++;
    this.#reply(now, from, undefined, "Error", {
      error: "busy: repeat with cookie",
      code: ERROR_CODES.cookieRequired,
      cookie: this.#cookies.make(key, now),
    });
    return undefined;
  }

  /** Tracks gaps in a peer's reliable stream after `rel` was accepted (`before` was the highest). */
  #noteRel(now: number, conn: Conn, before: number, rel: number): void {
    const x = conn.x;
    if (before < 0) return;
    const distance = (rel - before) | 0;
    if (distance <= 0) {
      const since = x?.missing?.get(rel);
      if (x && since !== undefined) {
        x.missing!.delete(rel);
        if (x.missing!.size === 0) x.nackAt = Infinity;
        x.reorderMs = Math.max(x.reorderMs * REORDER_DECAY, now - since);
      }
      return;
    }
    if (distance === 1 || distance >= RECEIVE_WINDOW) return;
    const extras = this.#extras(conn);
    const missing = extras.missing ??= new Map();
    for (let d = 1; d < distance; d++) {
      if (missing.size >= MISSING_TRACKED) missing.delete(missing.keys().next().value!);
      missing.set((before + d) >>> 0, now);
    }
    if (extras.nackAt === Infinity) {
      // Wait out ordinary reordering before asking: a quarter RTT plus twice its variance, or a quarter more
      // than the lateness seen on this path, whichever is longer; but ask well before the sender's timer.
      const rtt = conn.rtt;
      const wait = Math.max(NACK_DELAY_MS, rtt ? rtt.srtt / 4 + 2 * rtt.rttvar : 0, 1.25 * extras.reorderMs);
      extras.nackAt = now + Math.min(wait, this.#rtoOf(conn) / 2);
    }
  }

  /** Decodes and admits a fragment's chunk, or says why it is dropped. */
  #prepareFragment(conn: Conn | undefined, msg: Message): Uint8Array | Drop {
    if (!conn || (!conn.peer && !conn.link)) {
      return drop("not_registered", "fragment from an unknown address");
    }
    if (typeof msg.payload !== "string") {
      return drop("bad_payload", "fragment payload is not a base64 string");
    }
    let chunk: Uint8Array;
    try {
      chunk = Uint8Array.fromBase64(msg.payload);
    } catch {
      return drop("bad_payload", "fragment payload is not valid base64");
    }
    const x = this.#extras(conn);
    const why = (x.reassembly ??= new Reassembler()).admit(
      msg.frag!,
      chunk.length,
      this.#config.maxMessageSize,
      this.#reassemblyBudget,
    );
    return why === undefined ? chunk : drop("buffer_full", `fragment refused: ${why}`);
  }

  #onFragment(
    now: number,
    from: SocketAddr,
    key: string,
    conn: Conn,
    msg: Message,
    chunk: Uint8Array,
  ): Outcome {
    const result = this.#extras(conn).reassembly!.add(now, msg.frag!, chunk, this.#reassemblyBudget);
    if (result.status === "duplicate") return "duplicate";
    if (result.status !== "complete") return undefined;
    this.#stats.messagesReassembled++;
    let inner: Message;
    try {
      inner = decodeMessage(result.bytes);
    } catch (error) {
      if (!(error instanceof DecodeError)) throw error;
      return drop("bad_payload", `reassembled message: ${error.message}`);
    }
    if (inner.message_type !== msg.message_type || inner.frag || inner.id !== msg.frag!.of) {
      return drop("bad_payload", "reassembled message does not match its fragments");
    }
    if (inner.ord !== undefined && inner.message_type === "Data") {
      return this.#onOrdered(now, from, key, conn, inner);
    }
    return this.#dispatch(now, from, key, conn, inner);
  }

  /** Ordered Data: delivered now with whatever it unblocks, or held until the earlier ones arrive. */
  #onOrdered(now: number, from: SocketAddr, key: string, conn: Conn, msg: Message): Outcome {
    const inbox = this.#extras(conn).ordered ??= new OrderedInbox<HeldMessage>();
    const result = inbox.offer(now, msg.ord!, { from, key, msg });
    if (result.status === "full") return drop("buffer_full", `ordered message ${msg.ord} does not fit`);
    if (result.status === "held") {
      this.#stats.orderedHeld++;
      return undefined;
    }
    const [first, ...rest] = result.items;
    const outcome = this.#dispatch(now, first!.from, first!.key, conn, first!.msg);
    this.#dispatchHeld(now, rest);
    return outcome;
  }

  /** Dispatches held ordered messages whose turn came; their datagrams were counted when they arrived. */
  #dispatchHeld(now: number, items: HeldMessage[]): void {
    for (const item of items) {
      const outcome = this.#dispatch(now, item.from, item.key, this.#table.byAddr.get(item.key), item.msg);
      if (outcome !== undefined && outcome !== "duplicate" && outcome !== "deferred") {
        this.#events.push({
          type: "dropped",
          from: item.from,
          reason: outcome.reason,
          detail: outcome.detail,
          afterDisconnect: false,
        });
      }
    }
  }

  #extras(conn: Conn): ConnExtras {
    return conn.x ??= {
      queue: null,
      fragmented: null,
      reassembly: null,
      ordered: null,
      ordNext: 1,
      missing: null,
      nackAt: Infinity,
      goneOrdered: null,
      goneQuietUntil: -Infinity,
      reorderMs: 0,
      relays: null,
      forwarded: null,
      relayQuota: null,
      introductions: null,
    };
  }

  // ---------------------------------------------------------------- dispatch

  #dispatch(
    now: number,
    from: SocketAddr,
    key: string,
    conn: Conn | undefined,
    msg: Message,
  ): Outcome {
    switch (msg.message_type) {
      case "HandshakeRequest":
        return this.#onHandshakeRequest(now, from, key, conn, msg);
      case "HandshakeResponse":
        return this.#onHandshakeResponse(now, conn, msg);
      case "Ack":
        return this.#onAck(now, conn, msg);
      case "Ping":
        if (isJsonObject(msg.payload) && typeof msg.payload.punch === "string") {
          // The introduced peer's probe: wherever it comes from is a path to try too (its NAT may map it to
          // an address the server never saw, or it moved).
          const punch = this.#punches.get(msg.payload.punch);
          const at = formatSocketAddr(from);
          if (punch && !punch.keys.has(at) && punch.candidates.length < MAX_PUNCH_CANDIDATES) {
            punch.keys.add(at);
            punch.candidates.push({ hostname: from.hostname, port: from.port });
          }
        }
        if (conn && isJsonObject(msg.payload) && typeof msg.payload.confirm === "string") {
          this.#proof(conn, msg.payload.confirm);
        }
        this.#reply(now, from, conn, "Pong", pongPayload(msg.payload, conn?.ext ? conn.key : null));
        return undefined;
      case "Pong":
        if (conn) this.#settled(now, conn, conn.outbox.settleType("Ping"));
        if (conn?.link && isJsonObject(msg.payload) && typeof msg.payload.observed_addr === "string") {
          conn.link.observedAddr = msg.payload.observed_addr.slice(0, 64);
        }
        this.#events.push({ type: "pong", from, payload: msg.payload, message: msg });
        if (isJsonObject(msg.payload) && typeof msg.payload.punch === "string") {
          const punch = this.#punches.get(msg.payload.punch);
          if (punch) this.#punched(now, punch, from);
          return undefined;
        }
        if (conn?.link?.state === "connected" && conn.ext && msg.sequence_number === null && !conn.peer) {
          // p2p_server numbers every reply on a connection: an unnumbered Pong is a stateless one, so the
          // remote no longer knows us (restart, timeout, or our address changed under a NAT).
          this.#closeLink(conn, "disconnect");
          this.#forget(conn);
        }
        return undefined;
      case "DiscoveryRequest":
        return this.#onDiscoveryRequest(now, from, conn, msg);
      case "DiscoveryResponse":
        return this.#onDiscoveryResponse(from, conn, msg);
      case "Data":
        return this.#onData(now, from, conn, msg);
      case "Error":
        return this.#onError(now, from, conn, msg);
      case "Disconnect":
        return this.#onDisconnect(conn);
      case "Retransmit":
        return this.#onRetransmit(now, conn, msg);
    }
  }

  #onHandshakeRequest(
    now: number,
    from: SocketAddr,
    key: string,
    existing: Conn | undefined,
    msg: Message,
  ): Drop | "duplicate" | undefined {
    if (this.#role !== "server") {
      // A client accepts a handshake only from a peer its server just introduced (a direct connection).
      const id = isJsonObject(msg.payload) && typeof msg.payload.id === "string"
        ? msg.payload.id.toLowerCase()
        : "";
      const until = this.#expected.get(id);
      if (until === undefined || until < now) return drop("unexpected", "HandshakeRequest to a client");
    }
    const info = parseNodeInfo(msg.payload);
    if (typeof info === "string") {
      this.#refuse(now, from, ERROR_CODES.invalidNodeInfo, `handshake failed: invalid node info: ${info}`);
      return undefined;
    }
    // Keys: a signed request is verified (not its retransmission: that one was, and is in the replay cache);
    // an unsigned one is accepted only as the policy allows.
    let keyed: KeyedPeer | null = null;
    if (this.#config.auth !== "off" && existing?.peer?.requestId !== msg.id) {
      const verdict = this.#verifyRequest(now, from, info, msg);
      if (verdict === "refused") return undefined;
      keyed = verdict;
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
        this.#newSession(conn, msg);
        conn.outbox.settleType("HandshakeResponse");
        if (networkOf(info) !== peer.network) {
          const state = peer.state;
          this.#table.unregister(conn);
          this.#table.register(conn, { ...peer, info, network: networkOf(info), requestId: msg.id, state });
        } else {
          peer.info = info;
          peer.requestId = msg.id;
        }
        // A new handshake, new keys: the old session ends here (unless our own link shares it).
        if (!conn.link) this.#endSession(conn);
        if (keyed) conn.peer!.keyed = keyed;
        else delete conn.peer!.keyed;
        const response = this.#sendOn(
          now,
          conn,
          "HandshakeResponse",
          this.#responsePayload(networkOf(info), conn),
          true,
          null,
        );
        if (response && conn.peer) conn.peer.responseId = response.id;
        return undefined;
      }
    }
    // Checked before an old peer on this address is replaced, so a refused request changes nothing.
    const holder = this.#table.byId.get(info.id);
    if (holder && holder !== conn && keyed && holder.peer) {
      // The key proves the id: whoever holds it elsewhere (this node from its old address, or a squatter
      // without the key) gives way.
      this.#removePeer(holder, "replaced");
      if (!holder.link) this.#forget(holder);
    } else if ((holder && holder !== conn) || info.id === this.#node.id) {
      this.#refuse(now, from, ERROR_CODES.nodeIdConflict, NODE_ID_EXISTS);
      return undefined;
    }
    const elsewhere = holder ? undefined : this.#remote.byId.get(info.id);
    if (elsewhere) {
      // Registered with another instance of the cluster: the same rules across instances. A key proves the
      // id, so that instance lets go of it; an unkeyed claim is refused while the other one is alive.
      if (!keyed) {
        this.#refuse(now, from, ERROR_CODES.nodeIdConflict, NODE_ID_EXISTS);
        return undefined;
      }
      this.#remote.remove(info.id);
      this.#clusterSend(elsewhere.instance, { t: "evict", id: info.id });
    }
    // Another node from the same socket address: the old one is gone. Not a keyed one, though: anyone can
    // spoof its address, and only its key could speak for it; it leaves by Disconnect or the idle timeout.
    if (conn?.peer?.keyed && conn.session) {
      this.#refuse(
        now,
        from,
        ERROR_CODES.nodeIdConflict,
        "handshake failed: address in use by an authenticated node",
      );
      return undefined;
    }
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
    conn.ext = msg.ext !== undefined;
    if (this.#cookieOk) conn.validated = true;
    else if (!conn.validated && conn.bytesIn === 0) conn.bytesIn = this.#inLen;
    this.#newSession(conn, msg);
    const network = networkOf(info);
    this.#table.register(conn, { info, network, state: "handshaking", requestId: msg.id, joinedAt: now });
    if (keyed) conn.peer!.keyed = keyed;
    conn.heartbeatAt = now + this.#heartbeatMs;
    this.#recentlyClosed.delete(key);
    const response = this.#sendOn(
      now,
      conn,
      "HandshakeResponse",
      this.#responsePayload(network, conn),
      true,
      null,
    );
    if (response) conn.peer!.responseId = response.id;
    if (info.capabilities.includes("server") && !conn.link) {
      // A sibling server registered with us (its discovery probe, or its connectToPeer): register with it
      // too, so both list each other.
      this.connect(now, from, { probe: true, validated: false });
    }
    return undefined;
  }

  // ---------------------------------------------------------------- keys and authenticated sessions

  /**
   * Checks a HandshakeRequest's key and signature against the policy. Returns what it proved (null for an
   * unkeyed request the policy accepts), or "refused" after answering with an Error.
   */
  #verifyRequest(now: number, from: SocketAddr, info: NodeInfo, msg: Message): KeyedPeer | null | "refused" {
    const refuse = (code: string, why: string): "refused" => {
      this.#refuse(now, from, code, `handshake failed: ${why}`);
      return "refused";
    };
    const auth = msg.auth;
    const allow = this.#config.authAllowKeys;
    if (!auth) {
      if (this.#config.auth === "required" || allow !== null) {
        return refuse(ERROR_CODES.authRequired, "authentication required: sign the request with a node key");
      }
      // Version-8 ids are derived from keys: without the key, nobody may claim one.
      if (info.id[14] === "8") return refuse(ERROR_CODES.badIdentity, "a key-derived node id needs its key");
      return null;
    }
    const key = fromBase64Url(auth.key, 32);
    const dh = fromBase64Url(auth.dh, 32);
    const sig = fromBase64Url(auth.sig, 64);
    if (!key || !dh || !sig || typeof auth.to !== "string") {
      return refuse(ERROR_CODES.badAuth, "malformed auth");
    }
    if (nodeIdForKey(key) !== info.id) {
      return refuse(ERROR_CODES.badIdentity, "node id is not the id of its key");
    }
    if (allow !== null && !allow.includes(auth.key)) return refuse(ERROR_CODES.notAllowed, "key not allowed");
    if (auth.to !== "*" && auth.to !== this.#node.id) {
      return refuse(ERROR_CODES.wrongServer, "request signed for another server");
    }
    const skew = this.#config.authMaxSkew;
    if (Math.abs(Math.floor(now / 1000) - msg.timestamp) > skew) {
      return refuse(ERROR_CODES.stale, `timestamp more than ${skew} s off`);
    }
    const claims = requestSignedBytes({
      nodeId: info.id,
      networkId: networkOf(info),
      listenAddr: info.listen_addr,
      to: auth.to,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh: auth.dh,
    });
    if (!verifyEd25519(key, claims, sig)) return refuse(ERROR_CODES.badSignature, "bad signature");
    // Recorded only once verified, so forged requests cannot fill the cache.
    // Remembered at least as long as its timestamp keeps it fresh.
    const remember = Math.max(now + 2 * skew * 1000, (msg.timestamp + skew + 1) * 1000);
    if (!this.#replays.add(msg.id, remember, now)) {
      return refuse(ERROR_CODES.replay, "replayed request");
    }
    return { publicKey: key, keyText: auth.key, dh, requestId: msg.id };
  }

  /** Signs our HandshakeRequest (its id and timestamp are final here) with a fresh X25519 key. */
  #signRequest(conn: Conn, msg: Message): AuthFields {
    const link = conn.link!;
    const identity = this.#identity!;
    const eph = link.eph = generateX25519();
    link.requestId = msg.id;
    const dh = toBase64Url(eph.publicKey);
    const to = link.pinnedKey ? nodeIdForKey(link.pinnedKey) : "*";
    const claims = requestSignedBytes({
      nodeId: link.local.id,
      networkId: networkOf(link.local),
      listenAddr: link.local.listen_addr,
      to,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh,
    });
    return {
      key: identity.publicKeyText,
      dh,
      sig: toBase64Url(signEd25519(identity.privateKey, claims)),
      to,
    };
  }

  /**
   * Signs our HandshakeResponse to a keyed peer and prepares the session its X25519 exchange yields; the
   * session starts (`activate`) once the response itself is encoded, since the peer gets its keys from it.
   */
  #signResponse(
    now: number,
    conn: Conn,
    keyed: KeyedPeer,
    msg: Message,
  ): { auth: AuthFields; activate: () => void } | null {
    const identity = this.#identity!;
    const eph = this.#responseKey(now);
    const shared = x25519(eph.pair.privateKey, keyed.dh);
    if (!shared) return null;
    const sid = msg.id.replaceAll("-", "").slice(0, 16);
    const dh = eph.text;
    const claims = responseSignedBytes({
      serverId: this.#node.id,
      networkId: conn.peer!.network,
      requesterId: conn.peer!.info.id,
      requestId: keyed.requestId,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh,
      sid,
    });
    const keys = sessionKeys(shared, keyed.requestId, msg.id);
    return {
      auth: {
        key: identity.publicKeyText,
        dh,
        sig: toBase64Url(signEd25519(identity.privateKey, claims)),
        sid,
      },
      activate: () => {
        this.#endSession(conn);
        conn.session = {
          sid,
          sendKey: new HmacKey(keys.s2c),
          recvKey: new HmacKey(keys.c2s),
          remoteKey: keyed.publicKey,
        };
        this.#sessions.set(sid, conn);
      },
    };
  }

  /**
   * The X25519 key a server answers keyed handshakes with: drawn afresh after {@linkcode RESPONSE_KEY_USES}
   * handshakes or {@linkcode RESPONSE_KEY_LIFETIME_MS}, whichever comes first, instead of once per handshake
   * (its generation was about a tenth of a keyed handshake's cost). Each session still gets its own keys: the
   * requester's X25519 key is fresh and the two message ids salt the derivation. What is given up is forward
   * secrecy within that window: whoever takes the server's memory during it can derive the sessions
   * started in it, as with any session still running (docs/security.md).
   */
  #responseKey(now: number): ResponseKey {
    let key = this.#currentResponseKey;
    if (!key || key.uses >= RESPONSE_KEY_USES || now >= key.until || now < key.since) {
      const pair = generateX25519();
      key = {
        pair,
        text: toBase64Url(pair.publicKey),
        since: now,
        until: now + RESPONSE_KEY_LIFETIME_MS,
        uses: 0,
      };
      this.#currentResponseKey = key;
    }
    key.uses++;
    return key;
  }

  /**
   * A client checks the server's signed HandshakeResponse. Returns null when it may go on (the session is
   * set up when the response was keyed), or the failure code.
   */
  #verifyResponse(conn: Conn, msg: Message, serverInfo: NodeInfo): string | null {
    const link = conn.link!;
    const auth = msg.auth;
    if (!auth || !link.eph || !link.requestId) {
      return link.pinnedKey ? CLIENT_AUTH_CODES.serverUnauthenticated : null;
    }
    const key = fromBase64Url(auth.key, 32);
    const dh = fromBase64Url(auth.dh, 32);
    const sig = fromBase64Url(auth.sig, 64);
    const sid = auth.sid;
    if (!key || !dh || !sig || typeof sid !== "string" || !/^[0-9a-f]{16}$/.test(sid)) {
      return CLIENT_AUTH_CODES.badServerSignature;
    }
    if (link.pinnedKey && !equalBytes(link.pinnedKey, key)) return CLIENT_AUTH_CODES.serverKeyMismatch;
    if (nodeIdForKey(key) !== serverInfo.id) return CLIENT_AUTH_CODES.badServerSignature;
    const claims = responseSignedBytes({
      serverId: serverInfo.id,
      networkId: networkOf(serverInfo),
      requesterId: link.local.id,
      requestId: link.requestId,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh: auth.dh,
      sid,
    });
    if (!verifyEd25519(key, claims, sig)) return CLIENT_AUTH_CODES.badServerSignature;
    const shared = x25519(link.eph.privateKey, dh);
    if (!shared) return CLIENT_AUTH_CODES.badServerSignature;
    const keys = sessionKeys(shared, link.requestId, msg.id);
    this.#endSession(conn);
    conn.session = { sid, sendKey: new HmacKey(keys.c2s), recvKey: new HmacKey(keys.s2c), remoteKey: key };
    return null;
  }

  #endSession(conn: Conn): void {
    const session = conn.session;
    if (!session) return;
    if (this.#sessions.get(session.sid) === conn) this.#sessions.delete(session.sid);
    conn.session = null;
  }

  /** Encodes a message for a connection: with `sid` and a MAC in an authenticated session, else as usual. */
  #encodeOn(conn: Conn, msg: Message, sum: boolean): Uint8Array {
    const session = conn.session;
    if (!session) return encodeMessage(msg, sum);
    msg.sid = session.sid;
    return encodeMessage(msg, false, (body) => macHex(session.sendKey, body));
  }

  /**
   * What may arrive without a MAC in a running session: HandshakeRequests (signed, or refused when they would
   * displace a keyed peer), a repeated HandshakeResponse, and the Ack of our own HandshakeRequest (both sent
   * before the remote had keys, and possibly late).
   */
  #macExempt(conn: Conn, msg: Message): boolean {
    const type = msg.message_type;
    if (type === "HandshakeRequest" || type === "HandshakeResponse") return true;
    return type === "Ack" && conn.link !== null && msg.ack_for === conn.link.requestId;
  }

  #macOk(key: HmacKey, bytes: Uint8Array, msg: Message): boolean {
    const mac = msg.mac;
    if (!mac) return false;
    return constantTimeEqualText(macHex(key, bytes, mac.end), mac.tag);
  }

  /**
   * A datagram carrying a session id from an address that session is not on. A valid MAC makes it a
   * candidate for roaming: the new address is asked to prove it receives (a Ping carrying a nonce, MAC'd,
   * answered by a MAC'd Pong naming it), and only then does the session move there. A replayed datagram
   * leads nowhere: its sender cannot answer. Returns true when the session just moved to this address.
   */
  #roam(now: number, from: SocketAddr, key: string, msg: Message, bytes: Uint8Array): Outcome | true {
    const home = this.#sessions.get(msg.sid!);
    const session = home?.session;
    if (!home || !session || !this.#macOk(session.recvKey, bytes, msg)) {
      return drop("bad_mac", "session datagram from an unknown address without a valid mac");
    }
    const check = this.#pathChecks.get(key);
    const p = msg.payload;
    if (
      check && check.conn === home && check.until > now && msg.message_type === "Pong" && isJsonObject(p) &&
      p.path_response === check.nonce
    ) {
      this.#pathChecks.delete(key);
      this.#table.byAddr.delete(home.key);
      this.#recentlyClosed.add(home.key);
      home.key = key;
      home.addr = { hostname: from.hostname, port: from.port };
      this.#table.byAddr.set(key, home);
      this.#stats.roamed++;
      this.#events.push({
        type: "roamed",
        peer: home.peer ? this.#summary(home, home.peer) : null,
        to: from,
      });
      return true;
    }
    if (!check || check.until <= now) {
      if (this.#pathChecks.size >= MAX_PATH_CHECKS) {
        this.#pathChecks.delete(this.#pathChecks.keys().next().value!);
      }
      const nonce = this.#newId();
      this.#pathChecks.set(key, { conn: home, nonce, until: now + PATH_CHECK_MS });
      const ping = this.#envelope(now, "Ping", { path_challenge: nonce }, null, false, null);
      ping.sid = session.sid;
      this.#transmit(from, encodeMessage(ping, false, (body) => macHex(session.sendKey, body)), "Ping", null);
    }
    return drop("unexpected", "session datagram from a new address: path check sent");
  }

  /** The remote starts a new session: forget its stream state; our ordered numbering restarts too. */
  #newSession(conn: Conn, request: Message | null): void {
    conn.window.reset();
    const x = conn.x;
    if (x) {
      x.reassembly?.clear(this.#reassemblyBudget);
      x.ordered?.reset();
      x.missing = null;
      x.nackAt = Infinity;
      x.ordNext = 1;
    }
    const num = request?.rel ?? request?.sequence_number ?? null;
    if (request?.requires_ack && num !== null) conn.window.accept(num);
  }

  #responsePayload(network: string, conn: Conn): Json {
    // The server echoes the requester's network id: deployed clients compare it with their own.
    const node = { ...this.#node, metadata: { ...this.#node.metadata, network_id: network } };
    return {
      node_info: node,
      success: true,
      error_message: null,
      // Extensions (deployed parsers ignore unknown keys): the requester's public address as seen here (its
      // NAT mapping), and how often it should send something to keep that mapping open.
      observed_addr: conn.key,
      keepalive_interval: this.#config.suggestedKeepalive,
    } as unknown as Json;
  }

  #onHandshakeResponse(now: number, conn: Conn | undefined, msg: Message): Drop | undefined {
    const link = conn?.link;
    if (!conn || !link) return drop("unexpected", "HandshakeResponse without a handshake in progress");
    const payload = parseHandshakeResponse(msg.payload);
    if (typeof payload === "string") return drop("bad_payload", `HandshakeResponse: ${payload}`);
    if (link.state === "connected") return undefined; // a repeat; the Ack (if asked) already went out
    this.#settled(now, conn, conn.outbox.settleType("HandshakeRequest"));
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
    if (link.expectedId !== undefined && payload.node_info.id !== link.expectedId) {
      this.#failLink(conn, "handshake failed: not the peer we were introduced to", "unexpected_peer");
      return undefined;
    }
    const authFailure = this.#verifyResponse(conn, msg, payload.node_info);
    if (authFailure) {
      this.#failLink(
        conn,
        `handshake failed: the server did not prove its key (${authFailure})`,
        authFailure,
      );
      return undefined;
    }
    link.state = "connected";
    link.remote = payload.node_info;
    const extras = msg.payload as { observed_addr?: unknown; keepalive_interval?: unknown };
    if (typeof extras.observed_addr === "string" && extras.observed_addr.length <= 64) {
      link.observedAddr = extras.observed_addr;
    }
    const keepalive = extras.keepalive_interval;
    if (typeof keepalive === "number" && keepalive >= 1 && keepalive * 1000 < this.#heartbeatMs) {
      // The remote knows NATs forget idle mappings sooner than our heartbeat: keep ours open as it asks.
      link.keepaliveMs = keepalive * 1000;
      conn.heartbeatAt = Math.min(conn.heartbeatAt, now + link.keepaliveMs);
    }
    this.#linkCounts.handshaking--;
    this.#linkCounts.connected++;
    if (conn.heartbeatAt === Infinity) conn.heartbeatAt = now + this.#heartbeatMs;
    this.#events.push({
      type: "connected",
      addr: conn.addr,
      node: payload.node_info,
      observedAddr: link.observedAddr ?? null,
    });
    // Confirm at once, reliably: the remote counts us authenticated on any message after its response, and
    // it may not resend that response to an address it has not validated (anti-amplification). A Pong
    // settles this Ping as well as an Ack does.
    this.#sendOn(now, conn, "Ping", { confirm: msg.id }, true, null);
    return undefined;
  }

  #onAck(now: number, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn) return drop("unexpected", "Ack from an unknown address");
    const ackFor = msg.ack_for ?? msg.sequence_number;
    if (ackFor === null) return drop("bad_payload", "Ack names no message");
    if (typeof ackFor === "string") this.#proof(conn, ackFor);
    const pending = conn.outbox.acknowledge(ackFor);
    if (!pending) {
      // A late or repeated Ack; from a handshaking peer it still proves the peer is there.
      if (conn.peer?.state === "handshaking") this.#authenticate(now, conn);
      return undefined;
    }
    this.#stats.acksReceived++;
    this.#settled(now, conn, pending);
    if (pending.type === "HandshakeRequest" && conn.link?.state === "handshaking") {
      // Only the HandshakeResponse settles a handshake: keep asking until it comes (a repeated request makes
      // the remote resend its response) or the handshake deadline passes.
      conn.outbox.add(pending);
      return undefined;
    }
    const rttMs = now - pending.firstSentAt;
    const parent = pending.parent;
    if (parent === null) {
      this.#relayDone(now, conn, pending.id, true);
      this.#events.push({
        type: "delivered",
        to: conn.addr,
        id: pending.id,
        seq: pending.seq,
        messageType: pending.type,
        rttMs,
      });
    } else {
      const whole = conn.x?.fragmented?.get(parent);
      if (whole && --whole.remaining === 0) {
        conn.x!.fragmented!.delete(parent);
        this.#events.push({
          type: "delivered",
          to: conn.addr,
          id: parent,
          seq: pending.seq,
          messageType: whole.type,
          rttMs: now - whole.startedAt,
        });
      }
    }
    if (conn.peer?.state === "handshaking") this.#authenticate(now, conn);
    this.#pump(now, conn);
    return undefined;
  }

  /**
   * A waiting message was answered (Ack, or a reply that proves it arrived): an RTT sample when it was sent
   * only once (Karn's rule).
   */
  #settled(now: number, conn: Conn, pending: Pending | undefined): void {
    if (!pending || pending.tries !== 1 || pending.lastSentAt !== pending.firstSentAt) return;
    const ms = now - pending.firstSentAt;
    (conn.rtt ??= new RttEstimator()).sample(ms);
    this.#stats.rttSample(ms);
  }

  #onDiscoveryRequest(now: number, from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    const peer = conn?.peer;
    if (!conn || !peer) return this.#notRegistered(now, from, "DiscoveryRequest");
    if (isJsonObject(msg.payload) && msg.payload.introduce !== undefined) {
      return this.#introduce(now, from, conn, msg.payload.introduce);
    }
    let offset = 0;
    let limit = this.#config.discoveryPageSize;
    let cursor: number | null = null;
    let capability: string | null = null;
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
      if (
        p.cursor !== undefined && p.cursor !== null &&
        (typeof p.cursor !== "string" || !/^[0-9]{1,16}$/.test(p.cursor))
      ) {
        return this.#badRequest(now, from, conn, `bad "cursor": ${JSON.stringify(p.cursor)}`);
      }
      if (
        p.capability !== undefined && p.capability !== null &&
        (typeof p.capability !== "string" || p.capability.length > 256)
      ) {
        return this.#badRequest(now, from, conn, `bad "capability": ${JSON.stringify(p.capability)}`);
      }
      offset = (p.offset as number | undefined) ?? 0;
      limit = Math.min(limit, (p.limit as number | undefined) ?? limit);
      cursor = typeof p.cursor === "string" ? Number(p.cursor) : null;
      capability = typeof p.capability === "string" ? p.capability : null;
    }
    const net = this.#table.byNetwork.get(peer.network);
    const entries: Json[] = [];
    // Always one datagram: the extensions' datagram size for peers that speak them, else one UDP datagram.
    let budget = (conn.ext ? this.#config.maxDatagramSize : MAX_UDP_PAYLOAD) - ENVELOPE_ROOM;
    let index = 0;
    let next: number | null = null;
    let nextCursor: string | null = null;
    let last: string | null = null;
    let total = 0;
    // A cursor (opaque to clients: the registration order of the last peer of the previous page) resumes
    // after that peer, even if it left: unlike an offset it neither skips nor repeats peers when others join
    // or leave between pages (a network's map iterates in registration order).
    // In cluster mode the other instances' peers are listed too, merged in the same order.
    for (const other of mergeByOrder(net, this.#remote.byNetwork.get(peer.network))) {
      const local = "key" in other;
      const info = local ? other.peer!.info : other.info;
      if (local && other.peer!.state !== "authenticated") continue;
      if (capability !== null && !info.capabilities.includes(capability)) continue;
      total++;
      const order = local ? other.peer!.order ?? 0 : other.order;
      if (cursor !== null && order <= cursor) continue;
      if (cursor === null && index++ < offset) continue;
      if (next !== null || nextCursor !== null) continue;
      const entry =
        (local ? this.#peerInfo(other, conn.ext) : remotePeerInfo(other, conn.ext)) as unknown as Json;
      const size = jsonBytes(entry) + 1;
      if (entries.length >= limit || size > budget) {
        next = cursor === null ? index - 1 : null;
        nextCursor = last;
        continue;
      }
      budget -= size;
      entries.push(entry);
      last = String(order);
    }
    const payload: Json = paged
      ? { peers: entries, offset, total, next_offset: next, next_cursor: nextCursor }
      : entries;
    this.#reply(now, from, conn, "DiscoveryResponse", payload);
    return undefined;
  }

  /**
   * An introduction: both peers get each other's candidates (observed address, then declared) and one shared
   * nonce, at the same moment, so both start punching together. Only between authenticated peers of one
   * network that speak the extensions; at most one a second per requester (bursts of 10).
   */
  #introduce(now: number, from: SocketAddr, conn: Conn, target: Json): Drop | undefined {
    const refuse = (why: string): Drop => {
      this.#reply(now, from, conn, "Error", {
        error: `cannot introduce: ${why}`,
        code: ERROR_CODES.cannotIntroduce,
      });
      return { reason: "bad_payload", detail: `introduction refused: ${why}`, refused: true };
    };
    if (typeof target !== "string" || !isUuid(target)) {
      return this.#badRequest(now, from, conn, `bad "introduce"`);
    }
    const id = target.toLowerCase();
    const other = this.#table.byId.get(id);
    const me = conn.peer!;
    const remote = other ? undefined : this.#remote.byId.get(id);
    const found = other?.peer
      ? other !== conn && other.peer.network === me.network && other.peer.state === "authenticated"
      : remote !== undefined && remote.network === me.network;
    if (!found) return refuse(`no such peer: ${target}`);
    if (!conn.ext || !(other ? other.ext : remote!.ext)) {
      return refuse("both peers must speak p2p_server's extensions");
    }
    const x = this.#extras(conn);
    const bucket = x.introductions ??= fullBucket(INTRODUCTION_RATE, now);
    if (!take(bucket, INTRODUCTION_RATE, now)) return refuse("too many introductions; wait a second");
    const nonce = this.#newId();
    const mine = this.#peerInfo(conn, true);
    const myCandidates = candidatesOf(conn.key, me.info.listen_addr);
    if (other) {
      this.#sendOn(
        now,
        conn,
        "DiscoveryResponse",
        introduction(
          this.#peerInfo(other, true),
          candidatesOf(other.key, other.peer!.info.listen_addr),
          nonce,
          true,
        ),
        true,
        null,
      );
      this.#sendOn(
        now,
        other,
        "DiscoveryResponse",
        introduction(mine, myCandidates, nonce, false),
        true,
        null,
      );
      this.#reschedule(other);
    } else {
      // On another instance: it sends its peer our card in the same instant (one pub/sub hop later).
      const r = remote!;
      this.#sendOn(
        now,
        conn,
        "DiscoveryResponse",
        introduction(remotePeerInfo(r, true), candidatesOf(r.observed, r.info.listen_addr), nonce, true),
        true,
        null,
      );
      this.#clusterSend(r.instance, {
        t: "introduce",
        target: r.id,
        peer: mine,
        candidates: myCandidates,
        nonce,
      });
    }
    this.#stats.introductions++;
    return undefined;
  }

  #peerInfo(conn: Conn, observed: boolean): PeerInfo {
    const info = conn.peer!.info;
    const out: PeerInfo = {
      id: info.id,
      addr: info.listen_addr,
      last_seen: Math.floor(conn.lastHeard / 1000),
      capabilities: info.capabilities,
      name: info.name,
    };
    if (observed) out.observed_addr = conn.key;
    return out;
  }

  #onDiscoveryResponse(from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn?.link) return drop("unexpected", "DiscoveryResponse without a link");
    let list: Json = msg.payload;
    if (isJsonObject(list) && isJsonObject(list.introduction)) {
      const intro = list.introduction;
      const peer = parsePeerInfo(intro.peer as Json);
      const candidates = Array.isArray(intro.candidates) ? intro.candidates : [];
      const addrs: SocketAddr[] = [];
      for (const c of candidates.slice(0, 8)) {
        const a = typeof c === "string" ? parseSocketAddr(c) : "bad";
        if (typeof a !== "string") addrs.push(a);
      }
      if (typeof peer === "string" || typeof intro.nonce !== "string" || addrs.length === 0) {
        return drop("bad_payload", "malformed introduction");
      }
      // The introduced peer may now register with us directly (a client accepts only such handshakes).
      this.#expected.set(peer.id, this.#clock + INTRODUCTION_TTL_MS);
      this.#events.push({
        type: "introduced",
        from,
        peer,
        candidates: addrs,
        nonce: intro.nonce,
        initiator: intro.initiator === true,
      });
      this.#startPunch(this.#clock, peer.id, addrs, intro.nonce, intro.initiator === true);
      return undefined;
    }
    let nextOffset: number | null = null;
    let nextCursor: string | null = null;
    if (isJsonObject(list)) {
      const n = list.next_offset;
      nextOffset = typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? n : null;
      const c = list.next_cursor;
      nextCursor = typeof c === "string" && /^[0-9]{1,16}$/.test(c) ? c : null;
      list = list.peers ?? null;
    }
    if (!Array.isArray(list)) return drop("bad_payload", "DiscoveryResponse payload is not a peer list");
    const peers: PeerInfo[] = [];
    for (const item of list) {
      const p = parsePeerInfo(item);
      if (typeof p === "string") return drop("bad_payload", `DiscoveryResponse: ${p}`);
      peers.push(p);
    }
    this.#events.push({ type: "discovery", from, peers, nextOffset, nextCursor, message: msg });
    return undefined;
  }

  #onData(now: number, from: SocketAddr, conn: Conn | undefined, msg: Message): Outcome {
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
    if (this.#role !== "server") {
      // A peer connected to us directly (after an introduction): its Data is for us, not to echo or route.
      this.#events.push({
        type: "data",
        from,
        fromId: peer.info.id,
        to: null,
        payload: msg.payload,
        message: msg,
      });
      return undefined;
    }
    const p = msg.payload;
    if (isJsonObject(p) && p.to !== undefined && p.to !== null) {
      if (typeof p.to !== "string" || !isUuid(p.to)) {
        return this.#badRequest(now, from, conn, `bad "to": ${JSON.stringify(p.to)}`);
      }
      const toId = p.to.toLowerCase();
      const target = this.#table.byId.get(toId);
      // In cluster mode a recipient registered with another instance is reached through it.
      const remote = target?.peer ? undefined : this.#remote.byId.get(toId);
      this.#events.push({ type: "data", from, fromId: peer.info.id, to: p.to, payload: p, message: msg });
      // A recipient still "handshaking" is routed to as well: its request was valid and it has our response
      // or soon will; its Ack of this Data completes its handshake.
      // End to end for senders with the extensions: their Ack waits for the recipient's, so it means
      // "delivered", not "reached the server". A retransmission meanwhile is not relayed again, and one of a
      // message already settled gets the same answer, whether or not the recipient is still here.
      const e2e = conn.ext && msg.requires_ack && msg.rel !== undefined;
      const relays = e2e ? (this.#extras(conn).relays ??= new Map()) : null;
      const prior = relays?.get(msg.id);
      if (prior) {
        if (prior.state === "pending") return "deferred";
        if (prior.state === "failed") {
          // Answered again, never acknowledged: an Ack would say it was delivered.
          this.#undeliverable(now, conn, msg.id, prior.to);
          return { reason: "unexpected", detail: "retransmission of an undeliverable message", quiet: true };
        }
        return undefined; // delivered: acknowledged again
      }
      const reachable = target?.peer
        ? target.peer.network === peer.network
        : remote?.network === peer.network;
      if (!reachable) {
        // A sender relaying end to end learns which message it was, and gets no Ack: its send fails.
        this.#reply(now, from, conn, "Error", {
          error: `unknown recipient: ${p.to}`,
          code: ERROR_CODES.unknownRecipient,
          ...(e2e ? { id: msg.id } : {}),
        });
        return e2e ? "deferred" : undefined;
      }
      const size = jsonBytes(p.data ?? null);
      if (!this.#relayAllowed(now, conn, size)) {
        this.#reply(now, from, conn, "Error", {
          error: `relay quota exceeded: at most ${this.#config.relayQuota[0]} messages and ${
            this.#config.relayQuota[1]
          } bytes a minute`,
          code: ERROR_CODES.relayQuota,
          id: msg.id,
        });
        // Not acknowledged: the sender's send fails instead of looking delivered.
        return { reason: "rate_limited", detail: "relay quota", quiet: true };
      }
      if (remote) {
        const rid = relays ? this.#newId() : null;
        this.#clusterCounts.relaysOut++;
        this.#clusterSend(remote.instance, {
          t: "relay",
          rid,
          from: peer.info.id,
          to: remote.id,
          network: peer.network,
          data: p.data ?? null,
          ordered: msg.ord !== undefined,
        });
        if (!relays || rid === null) return undefined;
        this.#trackRelay(relays, msg, remote.id);
        this.#clusterRelays.set(rid, {
          instance: remote.instance,
          senderKey: conn.key,
          originalId: msg.id,
          until: now + this.#deliveryMs + CLUSTER_RELAY_GRACE_MS,
        });
        return "deferred";
      }
      const routed = { from: peer.info.id, data: p.data ?? null };
      const copy = this.#sendOn(now, target!, "Data", routed, true, null, msg.ord !== undefined);
      this.#reschedule(target!);
      if (!copy) {
        this.#tooLarge(now, from, conn);
        return undefined;
      }
      if (!relays) return undefined;
      this.#trackRelay(relays, msg, target!.peer!.info.id);
      const forwarded = this.#extras(target!).forwarded ??= new Map();
      if (forwarded.size >= MAX_RELAYS_TRACKED) forwarded.delete(forwarded.keys().next().value!);
      forwarded.set(copy.id, { senderKey: conn.key, originalId: msg.id });
      return "deferred";
    }
    this.#events.push({ type: "data", from, fromId: peer.info.id, to: null, payload: p, message: msg });
    if (!this.#reply(now, from, conn, "Data", { echo: p, timestamp: Math.floor(now / 1000) })) {
      this.#tooLarge(now, from, conn);
    }
    return undefined;
  }

  #onError(now: number, from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    const error = parseErrorPayload(msg.payload);
    const link = conn?.link;
    if (conn && link?.state === "handshaking") {
      const p = msg.payload;
      const cookie = isJsonObject(p) && typeof p.cookie === "string" ? p.cookie : null;
      if (error.code === ERROR_CODES.cookieRequired && cookie && (link.cookieTries ?? 0) < MAX_COOKIE_TRIES) {
        // A busy server asks for proof that we receive here: repeat the request with its cookie.
        link.cookie = cookie;
        link.cookieTries = (link.cookieTries ?? 0) + 1;
        conn.outbox.settleType("HandshakeRequest");
        this.#sendOn(
          now,
          conn,
          "HandshakeRequest",
          link.local as unknown as Json,
          true,
          link.probe ? [PROBE_WAIT_MS] : null,
        );
        return undefined;
      }
      conn.outbox.settleType("HandshakeRequest");
      this.#failLink(conn, error.error, error.code ?? "refused");
      return undefined;
    }
    this.#events.push({ type: "error", from, error, message: msg });
    if (conn?.link?.state === "connected" && error.code === ERROR_CODES.notRegistered && !conn.peer) {
      // The remote no longer knows us (it restarted, timed us out, or our address changed under a NAT):
      // the link is gone; what was in flight on it is dropped with it.
      this.#closeLink(conn, "disconnect");
      this.#forget(conn);
    }
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

  #onRetransmit(now: number, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn || (!conn.peer && !conn.link)) {
      return drop("not_registered", "Retransmit from an unknown address");
    }
    const p = msg.payload;
    const shape =
      'Retransmit payload must be {"sequence_numbers" | "reliable" | "gone" | "gone_ord": [u32, ...]}';
    if (!isJsonObject(p)) return drop("bad_payload", shape);
    const lists: Partial<Record<"sequence_numbers" | "reliable" | "gone" | "gone_ord", number[]>> = {};
    for (const name of ["sequence_numbers", "reliable", "gone", "gone_ord"] as const) {
      const list = p[name];
      if (list === undefined || list === null) continue;
      if (!Array.isArray(list) || !list.every(isSequenceNumber)) return drop("bad_payload", shape);
      lists[name] = (list as number[]).slice(0, MAX_RETRANSMIT_REQUEST);
    }
    if (Object.keys(lists).length === 0) return drop("bad_payload", shape);
    const asked = [...lists.sequence_numbers ?? [], ...lists.reliable ?? []];
    if (asked.length > 0) this.#stats.nacksReceived++;
    for (const seq of lists.sequence_numbers ?? []) this.#resendAsked(now, conn, conn.outbox.bySeq(seq));
    const gone: number[] = [];
    const goneOrd: number[] = [];
    for (const rel of lists.reliable ?? []) {
      const pending = conn.outbox.byRel(rel);
      if (pending) {
        this.#resendAsked(now, conn, pending);
        continue;
      }
      // Not waiting any more: either acknowledged (the asker has it by now) or given up.
      gone.push(rel);
      const ord = conn.x?.goneOrdered?.get(rel);
      if (ord !== undefined) goneOrd.push(ord);
    }
    const x = conn.x;
    if (gone.length > 0 && !(x && now < x.goneQuietUntil)) {
      // One answer per retransmission timeout at most, and never larger than the request.
      this.#extras(conn).goneQuietUntil = now + this.#rtoOf(conn);
      this.#sendOn(now, conn, "Retransmit", { gone, gone_ord: goneOrd }, false, null);
    }
    if (lists.gone || lists.gone_ord) {
      for (const rel of lists.gone ?? []) x?.missing?.delete(rel);
      if (x?.missing?.size === 0) x.nackAt = Infinity;
      const inbox = x?.ordered;
      if (inbox) { for (const ord of lists.gone_ord ?? []) this.#dispatchHeld(now, inbox.skip(now, ord)); }
    }
    return undefined;
  }

  /**
   * Resends a message a `Retransmit` asked for, at most once per smoothed RTT (or half a timeout before the
   * first sample) however often it is asked for, so requests cannot multiply traffic.
   */
  #resendAsked(now: number, conn: Conn, pending: Pending | undefined): void {
    if (!pending) return;
    const spacing = conn.rtt ? Math.max(1, conn.rtt.srtt) : this.#rtoOf(conn) / 2;
    // Also not before the copy in flight had a round trip to be acknowledged: asked too early, it is late,
    // not lost.
    if (now - pending.askedAt < spacing || now - pending.lastSentAt < spacing) return;
    pending.askedAt = now;
    pending.lastSentAt = now;
    pending.nextAt = Math.min(Math.max(pending.nextAt, now + this.#rtoOf(conn)), pending.giveUpAt);
    this.#stats.nackResends++;
    this.#resend(conn, pending.bytes, pending.type);
  }

  // ---------------------------------------------------------------- state changes

  #authenticate(now: number, conn: Conn): void {
    const peer = conn.peer;
    if (peer?.state !== "handshaking") return;
    this.#table.authenticate(conn);
    // A peer without the extensions never acks (deployed clients): its later message is taken as proof that
    // it receives here, for compatibility. A spoofer can fake that message, so such a peer gets a bounded
    // byte rate until it proves itself. A peer with the extensions proves it by naming our response (#proof).
    if (!conn.ext && !conn.validated) {
      conn.validated = true;
      conn.unproven = fullBucket(UNPROVEN_RATE, now);
    }
    // Whatever confirmed it (the Ack, or a later message that overtook the Ack) times the round trip.
    this.#settled(now, conn, conn.outbox.settleType("HandshakeResponse"));
    this.#stats.handshakesOk++;
    this.#stats.handshakeDuration(now - peer.joinedAt);
    this.#events.push({ type: "peerJoined", peer: this.#summary(conn, peer) });
  }

  /** Takes one routed message of `bytes` from the sender's relay quota; false when it is spent. */
  #relayAllowed(now: number, conn: Conn, bytes: number): boolean {
    const [messages, volume] = this.#config.relayQuota;
    const rates = {
      messages: { perSecond: messages / 60, burst: messages },
      bytes: { perSecond: volume / 60, burst: volume },
    };
    const x = this.#extras(conn);
    const quota = x.relayQuota ??= {
      messages: fullBucket(rates.messages, now),
      bytes: fullBucket(rates.bytes, now),
    };
    if (!take(quota.messages, rates.messages, now)) return false;
    return takeMany(quota.bytes, rates.bytes, now, Math.min(bytes, volume));
  }

  /**
   * A copy relayed to `target` was acknowledged (`delivered`) or given up: the sender learns it now, with
   * its Ack (end to end) or with an Error `undeliverable` naming its message.
   */
  #relayDone(now: number, target: Conn, copyId: string, delivered: boolean): void {
    const forwarded = target.x?.forwarded;
    const link = forwarded?.get(copyId);
    if (!link) return;
    forwarded!.delete(copyId);
    if (link.senderKey.startsWith(CLUSTER_SENDER)) {
      // Relayed for another instance: it tells its sender.
      const instance = link.senderKey.slice(CLUSTER_SENDER.length);
      this.#clusterSend(instance, { t: "relayed", rid: link.originalId, ok: delivered });
      return;
    }
    this.#settleRelay(now, link.senderKey, link.originalId, delivered);
  }

  /** The sender at `senderKey` learns the fate of its routed message `originalId`: an Ack or an Error. */
  #settleRelay(now: number, senderKey: string, originalId: string, delivered: boolean): void {
    const sender = this.#table.byAddr.get(senderKey);
    const entry = sender?.x?.relays?.get(originalId);
    if (!sender || !entry || entry.state !== "pending") return;
    if (delivered) {
      entry.state = "delivered";
      if (entry.rel !== null) sender.window.accept(entry.rel);
      const acked = { id: originalId, sequence_number: entry.seq } as Message;
      this.#sendAck(now, sender.addr, sender, acked);
    } else {
      entry.state = "failed";
      this.#undeliverable(now, sender, originalId, entry.to);
    }
    this.#reschedule(sender);
  }

  /** Records a routed message relayed end to end, until the recipient's Ack (bounded). */
  #trackRelay(relays: Map<string, RelayEntry>, msg: Message, to: string): void {
    if (relays.size >= MAX_RELAYS_TRACKED) relays.delete(relays.keys().next().value!);
    relays.set(msg.id, { state: "pending", seq: msg.sequence_number, rel: msg.rel ?? null, to });
  }

  #undeliverable(now: number, sender: Conn, id: string, to: string): void {
    this.#sendOn(
      now,
      sender,
      "Error",
      {
        error: `undeliverable: ${to} did not acknowledge the message`,
        code: ERROR_CODES.undeliverable,
        id,
      },
      false,
      null,
    );
  }

  /** An Ack or a confirming Ping named `id`: when that is our HandshakeResponse, the address is proven. */
  #proof(conn: Conn, id: string): void {
    const responseId = conn.peer?.responseId;
    if (responseId !== undefined && id.toLowerCase() === responseId) {
      conn.validated = true;
      conn.unproven = null;
    }
  }

  /** Unregisters the peer on `conn`; `peerLeft` is reported only for peers that had joined. */
  #removePeer(conn: Conn, reason: LeaveReason): void {
    const peer = this.#table.unregister(conn);
    if (!peer) return;
    if (!conn.link) {
      this.#dropStreams(conn);
      this.#endSession(conn);
    }
    if (peer.state === "authenticated") {
      this.#events.push({ type: "peerLeft", peer: this.#summary(conn, peer), reason });
    }
  }

  #closeLink(conn: Conn, reason: "disconnect" | "timeout" | "closed" | null): void {
    const link = conn.link;
    if (!link) return;
    conn.link = null;
    if (!conn.peer) this.#dropStreams(conn);
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

  /** Forgets everything in flight on a connection nobody uses any more (no events). */
  #dropStreams(conn: Conn): void {
    // What was in flight will never be delivered now: say so, once per message.
    const told = new Set<string>();
    const closed = (id: string, seq: number, type: MessageType, tries: number) => {
      if (told.has(id)) return;
      told.add(id);
      this.#gaveUp(conn, id, seq, type, tries, "closed");
    };
    const x = conn.x;
    for (const p of conn.outbox.drain()) {
      const whole = p.parent === null ? undefined : x?.fragmented?.get(p.parent);
      closed(p.parent ?? p.id, p.seq, whole?.type ?? p.type, p.tries);
    }
    if (!x) return;
    for (const item of x.queue?.removeWhere(() => true) ?? []) {
      const whole = item.frag ? x.fragmented?.get(item.frag.of) : undefined;
      closed(item.frag?.of ?? item.id, 0, whole?.type ?? item.type, 0);
    }
    x.reassembly?.clear(this.#reassemblyBudget);
    conn.x = null;
  }

  /** Drops the connection when neither a peer nor a link is left on it. */
  #forget(conn: Conn): void {
    if (conn.peer || conn.link) return;
    this.#endSession(conn);
    if (this.#table.byAddr.get(conn.key) === conn) this.#table.byAddr.delete(conn.key);
    this.#timers.schedule(conn, Infinity);
    this.#recentlyClosed.add(conn.key);
    if (this.#recentlyClosed.size > RECENTLY_CLOSED) {
      this.#recentlyClosed.delete(this.#recentlyClosed.values().next().value!);
    }
  }

  #runTimers(now: number, conn: Conn): void {
    for (const p of conn.outbox.due(now)) {
      const exhausted = p.schedule ? p.tries >= p.schedule.length : now >= p.giveUpAt;
      if (!exhausted) {
        p.tries++;
        p.lastSentAt = now;
        p.nextAt = Math.min(now + this.#wait(conn, p), p.giveUpAt);
        this.#stats.retransmissions++;
        this.#resend(conn, p.bytes, p.type);
        continue;
      }
      conn.outbox.remove(p.id);
      const reason: GiveUpReason = p.schedule ? "tries" : "deadline";
      if (p.type === "HandshakeRequest" && conn.link?.state === "handshaking") {
        this.#gaveUp(conn, p.id, p.seq, p.type, p.tries, reason);
        this.#failLink(conn, `connection timeout to ${conn.key}`, "timeout");
        if (!conn.link) return;
        continue;
      }
      this.#giveUp(conn, p, reason);
    }
    if (!conn.peer && !conn.link) return;
    if (conn.peer?.state === "handshaking" && now - conn.peer.joinedAt >= this.#halfOpenMs) {
      // Never confirmed: a spoofed source, or a peer that vanished right after asking.
      this.#stats.halfOpenExpired++;
      this.#removePeer(conn, "timeout");
      if (!conn.link) {
        this.#forget(conn);
        return;
      }
    }
    this.#pump(now, conn);
    const x = conn.x;
    if (x) this.#runExtraTimers(now, conn, x);
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
      conn.heartbeatAt = now + (conn.link?.keepaliveMs ?? this.#heartbeatMs);
    }
  }

  /** Gap reports, reassembly expiry and ordered-delivery gaps that outlived the delivery deadline. */
  #runExtraTimers(now: number, conn: Conn, x: ConnExtras): void {
    const lifetime = this.#deliveryMs;
    if (x.nackAt <= now) {
      x.nackAt = Infinity;
      const missing = x.missing;
      if (missing) {
        const ask: number[] = [];
        for (const [rel, since] of missing) {
          if (now - since >= lifetime || conn.window.has(rel)) missing.delete(rel);
          else if (ask.length < MAX_RETRANSMIT_REQUEST) ask.push(rel);
        }
        if (ask.length > 0) {
          this.#stats.nacksSent++;
          this.#sendOn(now, conn, "Retransmit", { reliable: ask }, false, null);
        }
        if (missing.size > 0) x.nackAt = now + this.#rtoOf(conn);
        else x.missing = null;
      }
    }
    if (x.reassembly && x.reassembly.nextExpiry(lifetime) <= now) {
      this.#stats.reassemblyExpired += x.reassembly.expire(now, lifetime, this.#reassemblyBudget);
    }
    if (x.ordered && x.ordered.stalledSince + lifetime <= now) {
      this.#dispatchHeld(now, x.ordered.expire(now, lifetime));
    }
  }

  #reschedule(conn: Conn): void {
    let at = conn.outbox.nextDeadline();
    if (conn.peer || conn.link) {
      if (conn.heartbeatAt < at) at = conn.heartbeatAt;
      const idle = conn.lastHeard + this.#timeoutMs;
      if (idle < at) at = idle;
      if (conn.peer?.state === "handshaking") {
        const halfOpen = conn.peer.joinedAt + this.#halfOpenMs;
        if (halfOpen < at) at = halfOpen;
      }
      const x = conn.x;
      if (x) {
        if (x.nackAt < at) at = x.nackAt;
        const lifetime = this.#deliveryMs;
        const expiry = x.reassembly ? x.reassembly.nextExpiry(lifetime) : Infinity;
        if (expiry < at) at = expiry;
        const stall = x.ordered ? x.ordered.stalledSince + lifetime : Infinity;
        if (stall < at) at = stall;
      }
    }
    this.#timers.schedule(conn, at);
  }

  /** The path's current retransmission timeout (ms). */
  #rtoOf(conn: Conn): number {
    return conn.rtt ? conn.rtt.rto(this.#rto) : Math.min(this.#rto.maxMs, this.#rto.initialMs);
  }

  /**
   * The wait after the latest try of a message: its schedule's entry, or the path's timeout doubled per
   * earlier try, plus up to {@linkcode BACKOFF_JITTER} of random jitter on resends.
   */
  #wait(conn: Conn, p: Pending): number {
    const schedule = p.schedule;
    if (schedule) return schedule[p.tries - 1] ?? 0;
    return this.#backoff(this.#rtoOf(conn), p.tries, p.giveUpAt - p.firstSentAt);
  }

  /**
   * Exponential backoff from `rto`, capped at `rto_max_ms` and at a tenth of the deadline, so that a message
   * is tried at least ten times before it is given up (a handshake under 30 % loss each way then fails
   * about once in 10^5).
   */
  #backoff(rto: number, tries: number, deadlineMs: number): number {
    const cap = Math.min(this.#rto.maxMs, Math.max(this.#rto.minMs, deadlineMs / 10));
    const base = Math.min(rto * 2 ** (tries - 1), cap);
    if (tries === 1) return base;
    // Jitter stays inside the cap: above the doubled timeout while it is below the cap, below the cap once
    // it is reached, so no wait exceeds the cap and retries at the cap are still spread out.
    const r = this.#random();
    return base < cap ? Math.min(base * (1 + BACKOFF_JITTER * r), cap) : cap * (1 - (BACKOFF_JITTER / 2) * r);
  }

  /** A reliable message (or a whole fragmented one) is given up: the event, the counter, the cleanup. */
  #giveUp(conn: Conn, p: Pending, reason: GiveUpReason): void {
    const parent = p.parent;
    if (parent === null) {
      this.#relayDone(this.#clock, conn, p.id, false);
      if (p.ord !== null) this.#rememberGone(conn, p.rel, p.ord);
      this.#gaveUp(conn, p.id, p.seq, p.type, p.tries, reason);
      return;
    }
    const x = conn.x;
    const whole = x?.fragmented?.get(parent);
    if (!x || !whole) return;
    x.fragmented!.delete(parent);
    for (const other of conn.outbox.byParent(parent)) {
      conn.outbox.remove(other.id);
      if (whole.ord !== null) this.#rememberGone(conn, other.rel, whole.ord);
    }
    x.queue?.removeWhere((item) => item.frag?.of === parent);
    if (whole.ord !== null) this.#rememberGone(conn, p.rel, whole.ord);
    this.#gaveUp(conn, parent, p.seq, whole.type, p.tries, reason);
  }

  #gaveUp(conn: Conn, id: string, seq: number, type: MessageType, tries: number, reason: GiveUpReason): void {
    this.#stats.giveUp(reason);
    this.#events.push({ type: "gaveUp", to: conn.addr, id, seq, messageType: type, tries, reason });
  }

  #rememberGone(conn: Conn, rel: number, ord: number): void {
    const gone = this.#extras(conn).goneOrdered ??= new Map();
    if (gone.size >= GONE_REMEMBERED) gone.delete(gone.keys().next().value!);
    gone.set(rel, ord);
  }

  // ---------------------------------------------------------------- sending

  /**
   * Sends a message on a connection: numbered, and recorded for retransmission when reliable. A message too
   * large for one datagram goes out as reliable fragments when the remote speaks the extension. Returns the
   * message (for fragments: the whole message), or null when it cannot be sent at all (too large).
   */
  #sendOn(
    now: number,
    conn: Conn,
    type: MessageType,
    payload: Json,
    reliable: boolean,
    schedule: readonly number[] | null,
    ordered = false,
  ): Message | null {
    if (!reliable && !ordered) {
      const seq = conn.nextSeq;
      conn.nextSeq = seq === MAX_SEQUENCE ? 0 : seq + 1;
      const msg = this.#envelope(now, type, payload, seq, false, null);
      const bytes = this.#encodeOn(conn, msg, conn.ext);
      if (bytes.length > this.#config.maxDatagramSize && conn.ext) {
        return this.#fragment(now, conn, type, payload, msg.id, null, null);
      }
      return this.#transmit(conn.addr, bytes, type, conn) ? msg : null;
    }
    const x = conn.x;
    const ord = ordered ? this.#nextOrd(conn) : null;
    const plan = schedule ??
      (this.#config.retransmitPolicy === "schedule" ? this.#config.retransmitSchedule : null);
    const deadlineMs = type === "HandshakeRequest" || type === "HandshakeResponse"
      ? this.#handshakeMs
      : this.#deliveryMs;
    const item: Queued = {
      id: this.#newId(),
      type,
      payload,
      ord,
      frag: null,
      parentOrd: null,
      schedule: plan,
      deadlineMs,
      size: 0,
    };
    if ((!x?.queue || x.queue.size === 0) && conn.outbox.hasRoom(conn.relNext)) {
      const sent = this.#transmitReliable(now, conn, item);
      if (sent !== null) return sent;
      return conn.ext ? this.#fragment(now, conn, type, payload, item.id, ord, plan) : null;
    }
    // Behind others: measure it now to decide between one datagram and fragments.
    const size = utf8.encode(encodeMessageText(this.#envelope(now, type, payload, null, true, null))).length +
      FRAGMENT_FIELDS_ROOM;
    if (size > (conn.ext ? this.#config.maxDatagramSize : MAX_UDP_PAYLOAD)) {
      return conn.ext ? this.#fragment(now, conn, type, payload, item.id, ord, plan) : this.#tooLargeToSend();
    }
    item.size = size;
    this.#enqueue(now, conn, [item]); // when the queue is full, a gaveUp event names the message
    return this.#asMessage(now, item);
  }

  #nextOrd(conn: Conn): number {
    const x = this.#extras(conn);
    const ord = x.ordNext;
    x.ordNext = ord === MAX_SEQUENCE ? 1 : ord + 1;
    return ord;
  }

  #tooLargeToSend(): null {
    this.#stats.sendsTooLarge++;
    return null;
  }

  /** The message a queued item will become (for the caller; the wire copy gets its numbers when sent). */
  #asMessage(now: number, item: Queued): Message {
    const msg = this.#envelope(now, item.type, item.payload, null, true, null);
    msg.id = item.id;
    if (item.ord !== null) msg.ord = item.ord;
    return msg;
  }

  /**
   * Queues reliable messages behind the window; when the queue cannot take them all, they are given up
   * (`queue_full`) and false is returned.
   */
  #enqueue(now: number, conn: Conn, items: Queued[]): boolean {
    const x = this.#extras(conn);
    const queue = x.queue ??= new SendQueue(this.#queueLimits[0], this.#queueLimits[1]);
    let bytes = 0;
    for (const item of items) bytes += item.size;
    if (!queue.fits(items.length, bytes)) {
      const first = items[0]!;
      const id = first.frag?.of ?? first.id;
      this.#gaveUp(conn, id, 0, first.type, 0, "queue_full");
      if (first.frag) x.fragmented?.delete(id);
      return false;
    }
    for (const item of items) queue.push(item);
    this.#pump(now, conn);
    return true;
  }

  /** Sends queued messages while the window has room. */
  #pump(now: number, conn: Conn): void {
    const queue = conn.x?.queue;
    if (!queue) return;
    while (queue.size > 0 && conn.outbox.hasRoom(conn.relNext)) {
      const item = queue.shift()!;
      if (this.#transmitReliable(now, conn, item) === null) {
        this.#stats.sendsTooLarge++;
        this.#gaveUp(conn, item.frag?.of ?? item.id, 0, item.type, 0, "queue_full");
      }
    }
    if (queue.size === 0) conn.x!.queue = null;
  }

  /**
   * Puts one reliable datagram on the wire and into the outbox. Returns null (and sends nothing) when it
   * does not fit in one datagram for this remote.
   */
  #transmitReliable(now: number, conn: Conn, item: Queued): Message | null {
    const seq = conn.nextSeq;
    const rel = conn.relNext;
    const type = item.type;
    const msg: Message = {
      id: item.id,
      message_type: type,
      timestamp: Math.floor(now / 1000),
      payload: item.payload,
      sender_addr: this.#senderAddr,
      sequence_number: seq,
      requires_ack: true,
      ack_for: null,
    };
    if (type === "HandshakeRequest" || type === "HandshakeResponse") msg.ext = EXTENSIONS_VERSION;
    const cookie = type === "HandshakeRequest" ? conn.link?.cookie : undefined;
    msg.rel = rel;
    if (item.ord !== null) msg.ord = item.ord;
    if (item.frag) msg.frag = item.frag;
    if (cookie) msg.cookie = cookie;
    // One connection carries at most one session: when two servers register with each other (a peer and a
    // link on the same connection), both requests are signed but only the first response is, so the pair
    // shares the first handshake's session.
    if (type === "HandshakeRequest" && this.#identity && this.#config.auth !== "off" && conn.link) {
      msg.auth = this.#signRequest(conn, msg);
    }
    let activate: (() => void) | null = null;
    if (type === "HandshakeResponse" && conn.peer?.keyed && this.#identity && !conn.link) {
      const signed = this.#signResponse(now, conn, conn.peer.keyed, msg);
      if (signed) {
        msg.auth = signed.auth;
        activate = signed.activate;
      }
    }
    // Handshake messages go out unMAC'd (the remote may not have the keys yet), except on a connection
    // whose session is already running (the second handshake of two servers registering with each other).
    const bytes = (type === "HandshakeRequest" || type === "HandshakeResponse") && (activate || !conn.session)
      ? encodeMessage(msg, conn.ext || msg.ext !== undefined)
      : this.#encodeOn(conn, msg, conn.ext);
    activate?.();
    if (bytes.length > (conn.ext ? this.#config.maxDatagramSize : MAX_UDP_PAYLOAD) && !item.frag) return null;
    if (!this.#transmit(conn.addr, bytes, type, conn)) return null;
    conn.nextSeq = seq === MAX_SEQUENCE ? 0 : seq + 1;
    conn.relNext = rel === MAX_SEQUENCE ? 0 : rel + 1;
    const schedule = item.schedule;
    const pending: Pending = {
      id: item.id,
      seq,
      rel,
      type,
      bytes: keptBytes(bytes),
      firstSentAt: now,
      lastSentAt: now,
      askedAt: -Infinity,
      tries: 1,
      nextAt: now,
      giveUpAt: schedule ? Infinity : now + item.deadlineMs,
      schedule,
      parent: item.frag?.of ?? null,
      ord: item.ord ?? item.parentOrd,
    };
    pending.nextAt = now + this.#wait(conn, pending);
    conn.outbox.add(pending);
    if (item.frag) this.#stats.fragmentsSent++;
    return msg;
  }

  /**
   * Cuts a message into reliable fragments of at most `max_datagram_size` bytes each and queues them. The
   * whole message (the returned one, with its own id) is what the receiver reassembles and acts on.
   */
  #fragment(
    now: number,
    conn: Conn,
    type: MessageType,
    payload: Json,
    id: string,
    ord: number | null,
    schedule: readonly number[] | null,
  ): Message | null {
    const whole = this.#envelope(now, type, payload, null, false, null);
    whole.id = id;
    if (ord !== null) whole.ord = ord;
    const bytes = encodeMessage(whole);
    const chunk = this.#chunkSize(now, type);
    const n = Math.ceil(bytes.length / chunk);
    if (bytes.length > this.#config.maxMessageSize || n > MAX_FRAGMENTS) return this.#tooLargeToSend();
    const items: Queued[] = [];
    for (let i = 0; i < n; i++) {
      items.push({
        id: this.#newId(),
        type,
        payload: bytes.subarray(i * chunk, (i + 1) * chunk).toBase64(),
        ord: null,
        frag: { of: id, i, n },
        parentOrd: ord,
        schedule,
        deadlineMs: this.#deliveryMs,
        size: this.#config.maxDatagramSize,
      });
    }
    const x = this.#extras(conn);
    (x.fragmented ??= new Map()).set(id, { remaining: n, startedAt: now, type, ord });
    this.#stats.messagesFragmented++;
    this.#enqueue(now, conn, items);
    return whole;
  }

  /** Raw bytes per fragment so that a fragment datagram, with the widest numbers, fits `max_datagram_size`. */
  #chunkSize(now: number, type: MessageType): number {
    const widest: Message = {
      id: ZERO_UUID,
      message_type: type,
      timestamp: Math.floor(now / 1000),
      payload: "",
      sender_addr: this.#senderAddr,
      sequence_number: MAX_SEQUENCE,
      requires_ack: true,
      ack_for: null,
      rel: MAX_SEQUENCE,
      frag: { of: ZERO_UUID, i: MAX_FRAGMENTS - 1, n: MAX_FRAGMENTS },
    };
    const room = this.#config.maxDatagramSize - encodeMessage(widest, true).length;
    return Math.max(3, Math.floor(room / 4) * 3);
  }

  /**
   * Replies on the connection when there is one, else statelessly (no sequence number). Returns false when
   * the reply would not fit in one datagram (it is not sent).
   */
  #reply(now: number, to: SocketAddr, conn: Conn | undefined, type: MessageType, payload: Json): boolean {
    if (conn && (conn.peer || conn.link)) return this.#sendOn(now, conn, type, payload, false, null) !== null;
    const envelope = this.#envelope(now, type, payload, null, false, null);
    let bytes = encodeMessage(envelope, this.#replySummed);
    if (type === "Error" && bytes.length > this.#inLen && isJsonObject(payload)) {
      // An Error to an address with no state is never larger than the datagram that caused it: shorten
      // its text (the code stays), or send nothing when even that is too large.
      const text = typeof payload.error === "string" ? payload.error : "";
      const cut = Math.max(0, text.length - (bytes.length - this.#inLen) - 3);
      envelope.payload = { ...payload, error: cut > 0 ? `${text.slice(0, cut)}...` : "" };
      bytes = encodeMessage(envelope, this.#replySummed);
      if (bytes.length > this.#inLen) {
        this.#stats.amplificationLimited++;
        return true;
      }
    }
    return this.#transmit(to, bytes, type, null);
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

  /** Acknowledges `acked`; with `at`, the Ack goes in front of the datagrams queued since that index. */
  #sendAck(now: number, to: SocketAddr, conn: Conn | undefined, acked: Message, at = -1, mac = true): void {
    const msg = this.#envelope(now, "Ack", null, acked.sequence_number, false, acked.id);
    this.#stats.acksSent++;
    const queued = this.#transmits.length;
    // MAC'd only when asked: see the caller (the Ack of a session-starting HandshakeRequest is not).
    const bytes = conn && mac
      ? this.#encodeOn(conn, msg, conn.ext)
      : encodeMessage(msg, conn?.ext ?? this.#replySummed);
    this.#transmit(conn?.addr ?? to, bytes, "Ack", conn ?? null);
    if (at >= 0 && at < queued) this.#transmits.splice(at, 0, this.#transmits.pop()!);
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
    return { reason: "bad_payload", detail, refused: true };
  }

  #tooLarge(now: number, to: SocketAddr, conn: Conn): void {
    this.#reply(now, to, conn, "Error", {
      error: `message too large: the reply would exceed ${MAX_UDP_PAYLOAD} bytes`,
      code: ERROR_CODES.tooLarge,
    });
  }

  #resend(conn: Conn, bytes: Uint8Array, type: MessageType): void {
    this.#transmit(conn.addr, bytes, type, conn);
  }

  /** Queues a datagram; one that cannot fit in a UDP datagram is counted and not queued (returns false). */
  #transmit(to: SocketAddr, bytes: Uint8Array, type: MessageType, conn: Conn | null): boolean {
    if (bytes.length > MAX_UDP_PAYLOAD) {
      this.#stats.sendsTooLarge++;
      return false;
    }
    // Anti-amplification: to an address that has not proved it receives here, never more than 3x the bytes
    // it sent. A datagram held back this way is treated as lost (retransmissions retry it later).
    if (conn === null) {
      // A stateless reply to an address that has an unvalidated connection spends that budget too.
      const known = this.#table.byAddr.get(formatSocketAddr(to));
      const unvalidated = known && !known.validated ? known : null;
      if (
        bytes.length > this.#statelessBudget ||
        (unvalidated && unvalidated.bytesOut + bytes.length > 3 * unvalidated.bytesIn)
      ) {
        this.#stats.amplificationLimited++;
        return true;
      }
      this.#statelessBudget -= bytes.length;
      if (unvalidated) unvalidated.bytesOut += bytes.length;
    } else if (!conn.validated) {
      if (conn.bytesOut + bytes.length > 3 * conn.bytesIn) {
        this.#stats.amplificationLimited++;
        return true;
      }
      conn.bytesOut += bytes.length;
    } else if (conn.unproven && !takeMany(conn.unproven, UNPROVEN_RATE, this.#clock, bytes.length)) {
      this.#stats.amplificationLimited++;
      return true;
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
      extensions: conn.ext,
      keyed: peer.keyed !== undefined,
    };
  }
}

interface Drop {
  reason: DropReason;
  detail: string;
  /** The message was understood and refused with an Error reply: it is still acknowledged. */
  refused?: boolean;
  /** Counted without a `dropped` event. */
  quiet?: boolean;
}

/** What became of one received datagram: processed (undefined), a duplicate, or dropped. */
type Outcome = Drop | "duplicate" | "deferred" | undefined;

function drop(reason: DropReason, detail: string): Drop {
  return { reason, detail };
}

const utf8 = new TextEncoder();

/** Bytes reserved for the numbers a queued message gets when it is sent (`sequence_number`, `rel`, `ord`). */
const FRAGMENT_FIELDS_ROOM = 48;

const ZERO_UUID = "00000000-0000-4000-8000-000000000000";

/** Most keyed handshakes a server answers with one X25519 key (see `#responseKey`). */
const RESPONSE_KEY_USES = 1_024;

/** Longest a server answers keyed handshakes with one X25519 key, in ms (see `#responseKey`). */
const RESPONSE_KEY_LIFETIME_MS = 60_000;

/** The server's current X25519 key for HandshakeResponses, its base64url text, and its period of use. */
interface ResponseKey {
  pair: KeyPair;
  text: string;
  since: number;
  until: number;
  uses: number;
}

/** The two MAC keys of a session from its X25519 secret and the two handshake message ids. */
function sessionKeys(
  shared: Uint8Array,
  requestId: string,
  responseId: string,
): { c2s: Uint8Array; s2c: Uint8Array } {
  const okm = hkdf(
    shared,
    new TextEncoder().encode(`${requestId}|${responseId}`),
    "p2p_server session v1",
    64,
  );
  return { c2s: okm.slice(0, 32), s2c: okm.slice(32) };
}

/** The 128-bit MAC tag (hex) of a datagram body, `bytes[0, end)` then its closing brace. */
function macHex(key: HmacKey, bytes: Uint8Array, end = bytes.length - 1): string {
  const tag = key.digest(bytes, end, 0x7d);
  let out = "";
  for (let i = 0; i < 16; i++) out += tag[i]!.toString(16).padStart(2, "0");
  return out;
}

function constantTimeEqualText(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length && i < b.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}

/** Introductions one peer may ask for: one a second, bursts of 10. */
const INTRODUCTION_RATE: Rate = { perSecond: 1, burst: 10 };

/** How long both sides probe after an introduction (ms), and how often (ms). */
export const PUNCH_BUDGET_MS = 3_000;
export const PUNCH_INTERVAL_MS = 100;

/** Most candidates one punch probes (the server's two, plus the addresses the peer's probes came from). */
const MAX_PUNCH_CANDIDATES = 8;

/** Most punches in progress at once. */
const MAX_PUNCHES = 64;

/** A punch in progress. */
interface PunchState {
  nonce: string;
  peerId: string;
  candidates: SocketAddr[];
  keys: Set<string>;
  initiator: boolean;
  until: number;
  nextAt: number;
}

/** How long after an introduction a client accepts the introduced peer's direct handshake (ms). */
const INTRODUCTION_TTL_MS = 30_000;

/** Most routed messages tracked per peer for end-to-end relaying (each direction). */
const MAX_RELAYS_TRACKED = 1_024;

/** How long a path check waits for its answer (ms). */
const PATH_CHECK_MS = 2_000;

/** Most path checks in progress at once. */
const MAX_PATH_CHECKS = 4_096;

const NON_ASCII = /[^ -~\t\n\r]/; // anything outside printable ASCII

/** Encoded size of a JSON value in bytes. */
/** Marks a relay's sender as another instance (socket address keys never start with it). */
const CLUSTER_SENDER = "@";

/** How much longer than `delivery_timeout` a relay through another instance is waited for. */
const CLUSTER_RELAY_GRACE_MS = 5_000;

/** Routed Data waiting for another instance's answer. */
interface ClusterRelay {
  instance: string;
  senderKey: string;
  originalId: string;
  until: number;
}

/** A peer of another instance as a discovery entry. */
function remotePeerInfo(r: RemotePeer, observed: boolean): PeerInfo {
  const out: PeerInfo = {
    id: r.id,
    addr: r.info.listen_addr,
    last_seen: Math.floor(r.last_seen / 1000),
    capabilities: r.info.capabilities,
    name: r.info.name,
  };
  if (observed) out.observed_addr = r.observed;
  return out;
}

/** Where to try a peer: its observed address, then its declared one. */
function candidatesOf(observed: string, declared: string): string[] {
  return observed === declared ? [observed] : [observed, declared];
}

function introduction(peer: PeerInfo, candidates: string[], nonce: string, initiator: boolean): Json {
  return { introduction: { peer: peer as unknown as Json, candidates, nonce, initiator } };
}

/**
 * This instance's peers of one network and the mirrored ones of other instances, merged by their place in
 * the registration order (each map iterates in that order).
 */
function* mergeByOrder(
  local: Map<string, Conn> | undefined,
  remote: Map<string, RemotePeer> | undefined,
): Generator<Conn | RemotePeer> {
  if (!remote || remote.size === 0) {
    if (local) yield* local.values();
    return;
  }
  if (!local) {
    yield* remote.values();
    return;
  }
  const a = local.values();
  const b = remote.values();
  let x = a.next();
  let y = b.next();
  for (;;) {
    if (x.done) {
      if (y.done) return;
      yield y.value;
      y = b.next();
    } else if (y.done || (x.value.peer!.order ?? 0) < y.value.order) {
      yield x.value;
      x = a.next();
    } else {
      yield y.value;
      y = b.next();
    }
  }
}

function jsonBytes(value: unknown): number {
  const text = JSON.stringify(value);
  return NON_ASCII.test(text) ? utf8.encode(text).length : text.length;
}

/** A Pong echoes a Ping's `nonce` (our client matches replies by it); otherwise its payload is null. */
function pongPayload(ping: Json, observed: string | null): Json {
  const out: { [key: string]: Json } = {};
  if (isJsonObject(ping)) {
    // A path check (a server asking whether we receive at a new address) is answered by naming its nonce.
    if (typeof ping.path_challenge === "string") out.path_response = ping.path_challenge;
    else if (ping.nonce !== undefined) out.nonce = ping.nonce;
    // A punch probe from an introduced peer: echo its nonce, so it knows this path works.
    if (typeof ping.punch === "string" && ping.punch.length <= 64) out.punch = ping.punch;
  }
  // To a peer with the extensions: its address as seen here (deployed peers get the spec's payload).
  if (observed !== null) out.observed_addr = observed;
  return Object.keys(out).length > 0 ? out : null;
}
