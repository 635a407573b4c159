/**
 * The core's public vocabulary: what it emits (datagrams, events), what it reports (peer summaries, path and
 * cluster figures), the options it takes, and the error codes it puts on the wire.
 *
 * @module
 */
import type { Json, Message, MessageType, NodeInfo, PeerInfo } from "../wire/mod.ts";
import type { NatClass } from "./nat_class.ts";
import type { ErrorPayload, SocketAddr } from "../wire/mod.ts";
import type { ClusterMessage } from "./directory.ts";
import type { DropReason, GiveUpReason } from "./stats.ts";
import type { CoreConfig } from "./config.ts";
import type { Identity } from "./auth.ts";
import type { KeyObject, KeyPair, MacKeyFactory } from "../deps/crypto.ts";
import type { PeerSummary } from "./summary.ts";
import type { Strategy } from "./strategy.ts";

export type { PeerSummary } from "./summary.ts";

/** The kinds of request a client makes with `Endpoint.request`. */
export type RequestKind = "ping" | "discovery" | "introduce";

/** One page of a paged discovery. */
export interface DiscoveryPage {
  /** The peers on this page. */
  peers: PeerInfo[];
  /** The offset of the next page, or null when this was the last. */
  nextOffset: number | null;
  /** The cursor of the next page (resumes after this page's last peer), or null when this was the last. */
  nextCursor: string | null;
}

/** Largest UDP payload (IPv4); a single-datagram message can never be larger. */
export const MAX_UDP_PAYLOAD = 65_507;

/** Most sequence numbers honoured in one `Retransmit` request (and asked for in one we send). */
export const MAX_RETRANSMIT_REQUEST = 64;

/** Random jitter added to each backed-off retransmission wait: up to this fraction of it. */
export const BACKOFF_JITTER = 0.25;

/** How long both sides probe after an introduction (ms). */
export const PUNCH_BUDGET_MS = 3_000;

/** How often both sides probe after an introduction (ms). */
export const PUNCH_INTERVAL_MS = 100;

/** A datagram to send. */
export interface Transmit {
  /** Destination. */
  to: SocketAddr;
  /** The encoded message. */
  bytes: Uint8Array;
  /**
   * The local socket to send it from: an index into the sockets given to `Endpoint.setSockets` (the
   * datagram's answer goes from another one for an RFC 5780 change request). @default {0, the main socket}
   */
  socket?: number;
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
    /** Our NAT's class as the server measured it earlier (its HandshakeResponse's `nat`), when it says. */
    nat?: NatClass;
    /** Set when the server offers the NAT classification exchange (`"nat_check": true`). */
    natCheck?: boolean;
    /** Set when the server offers the binding lifetime measurement (`"nat_lifetime": true`). */
    natLifetime?: boolean;
  }
  | {
    type: "natLifetime";
    /** Server role: the peer measured. Client role: the server that measured us. */
    from: SocketAddr;
    /** Server role: the peer's node id; client role: null. */
    peerId: string | null;
    /** Server role: the registered peer as it is now, when authenticated (else, and client role, null). */
    peer: PeerSummary | null;
    /** The class stored for the peer, with `bindingLifetimeMs` (unknown behaviours when not classified). */
    nat: NatClass;
    /** The keepalive (s) suggested with it (adopted by the client when shorter than its own), when said. */
    suggestedKeepalive: number | null;
    /** The longest idle gap (ms) the binding survived; null when it survived none. */
    passedMs: number | null;
    /** The gap (ms) after which it was found expired; null when it survived every gap. */
    failedMs: number | null;
    /** Client role: the local socket measured (the shell may close it now); server role: -1. */
    socket: number;
    /** Null when the measurement ran; else why not (client role). */
    reason: "unavailable" | "rate_limited" | "timeout" | null;
  }
  | {
    type: "natChecked";
    /** Server role: the peer classified. Client role: the server that classified us. */
    from: SocketAddr;
    /** Server role: the peer's node id; client role: null. */
    peerId: string | null;
    /** Server role: the registered peer as it is now, when authenticated (else, and client role, null). */
    peer: PeerSummary | null;
    /** The class (`unknown` behaviours when nothing could be told, or the check did not run). */
    nat: NatClass;
    /** The keepalive (s) the server suggests with it, when it said. */
    suggestedKeepalive: number | null;
    /** Null when the check ran; else why not (client role). */
    reason: "unavailable" | "rate_limited" | "timeout" | null;
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
    /** Our own NAT class as the server knows it (the card's `you.nat`; unknown when it sent none). */
    you: NatClass;
    /** The card's `start_at_ms`: when (ms after receipt) both sides are to begin probing. */
    startAtMs: number;
    /** The pair's strategy, from both NAT classifications (`relay`: nothing is punched). */
    strategy: Strategy;
  }
  | {
    type: "punched";
    /** The introduced peer. */
    peerId: string;
    /** The path that answered. */
    addr: SocketAddr;
    /** Whether we asked (then we shake hands over the path now). */
    initiator: boolean;
    /** The pair's strategy, from both NAT classifications (`relay`: nothing is punched). */
    strategy: Strategy;
  }
  | {
    type: "punchFailed";
    /** The introduced peer. */
    peerId: string;
    /** Whether we asked. */
    initiator: boolean;
    /** The pair's strategy, from both NAT classifications (`relay`: nothing is punched). */
    strategy: Strategy;
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
  /**
   * A reliable message already processed came again: acknowledged again, not processed (only reported when
   * `Endpoint.reportDuplicates(true)` asked for it). `space` names the numbering it was found in.
   */
  | {
    type: "duplicate";
    from: SocketAddr;
    messageType: MessageType;
    space: "rel" | "sequence_number";
    number: number;
  }
  /**
   * A client sent a message again (the client role only): a reliable message retransmitted, or a request
   * (Ping, DiscoveryRequest) tried again; `tries` counts the first send.
   */
  | { type: "retry"; to: SocketAddr; messageType: MessageType; tries: number }
  /**
   * A HandshakeRequest was refused (server role): the remote got an `Error` with this code and text (invalid
   * node info, a bad signature, node_id_conflict, server_full, ...); `nodeId` is the id it claimed, if any.
   */
  | { type: "refused"; from: SocketAddr; nodeId: string | null; code: string; error: string }
  /** A periodic tick asked for with `Endpoint.every` is due. */
  | { type: "tick"; name: string }
  /** A request made with `Endpoint.request` was answered (its answer's raw event is not reported). */
  | { type: "requestDone"; id: number; kind: "ping"; rttMs: number }
  | { type: "requestDone"; id: number; kind: "discovery"; page: DiscoveryPage }
  | {
    type: "requestDone";
    id: number;
    kind: "introduce";
    /** The introduced peer, now reached directly. */
    nodeId: string;
    /** The address the punch found, `"ip:port"`. */
    addr: string;
    /** The pair's strategy. */
    strategy: Strategy;
  }
  /**
   * A request made with `Endpoint.request` failed: `timeout` (no answer within the retransmit policy, or an
   * introduction past its time limit), `closed` (the link closed first), `punch_failed` (no direct path was
   * found) or `refused` (the server answered with an Error; `code` is its code).
   */
  | {
    type: "requestFailed";
    id: number;
    kind: RequestKind;
    reason: "timeout" | "closed" | "punch_failed" | "refused";
    error: string;
    code: string;
    /** An introduction's strategy, once its card arrived (`relay`: it failed at once, by choice). */
    strategy?: Strategy;
  }
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

/** Options of the core (`Endpoint`). */
export interface EndpointOptions {
  /** `server` accepts handshakes; `client` only starts them. */
  role: "server" | "client";
  /** Timing and limits (the resolved configuration: {@linkcode CoreConfig}). */
  config: CoreConfig;
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
  /** Signed request ids remembered against replays (tests shrink it). @default {REPLAY_CACHE_SIZE, 65,536} */
  replayCacheSize?: number;
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
  /**
   * Source of X25519 key pairs for keyed handshakes. Key generation is a parameter so a keyed run in the
   * simulator replays byte for byte. @default {node:crypto's generator}
   */
  generateX25519?: () => KeyPair;
  /**
   * The X25519 exchange of keyed handshakes: our private key and their raw public key to the shared secret,
   * or null for a key that yields none. The I/O shell passes the implementation `crypto_backend` chose.
   * @default {node:crypto's}
   */
  deriveX25519?: (privateKey: KeyObject, theirPublic: Uint8Array) => Uint8Array | null;
  /**
   * Makes a session's MAC keys (HMAC-SHA-256). The I/O shell passes the implementation `crypto_backend`
   * chose. @default {node:crypto's}
   */
  macKey?: MacKeyFactory;
}

/** Cluster mode: the core's traffic with other instances (`Endpoint.clusterCounts`). */
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

/** Options of `Endpoint.send`. */
export interface SendOptions {
  /** Ask for an Ack and retransmit until it comes or the message is given up. @default {false} */
  reliable?: boolean;
  /**
   * Data only: deliver in order with this endpoint's other ordered Data to the same remote (implies
   * `reliable`). @default {false}
   */
  ordered?: boolean;
}

/** The round-trip state of one path, as `Endpoint.path` reports it. */
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
  /** How often we send a keepalive on the path (ms): the heartbeat, or a shorter interval the remote suggested. */
  keepaliveMs: number;
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
  natCheckUnavailable: "nat_check_unavailable",
  rateLimited: "rate_limited",
} as const;

/** Codes a client's `connectFailed` carries when a server does not prove its key. */
export const CLIENT_AUTH_CODES = {
  serverKeyMismatch: "server_key_mismatch",
  serverUnauthenticated: "server_unauthenticated",
  badServerSignature: "bad_server_signature",
} as const;

/** The text upstream peers and users search for when a node id is taken. */
export const NODE_ID_EXISTS = "handshake failed: node ID already exists";
