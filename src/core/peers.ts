/**
 * Per-address state and the indexes over it: by socket address, by node id, and by network. A connection
 * (`Conn`) is the transport state shared by both roles for one remote address (sequence counter, receive
 * window, outbox, timers); on top of it, `peer` is set when the remote registered with us and `link` when we
 * registered with the remote.
 *
 * @module
 */
import type { SocketAddr } from "../wire/address.ts";
import type { NodeInfo } from "../wire/mod.ts";
import type { MessageType } from "../wire/mod.ts";
import {
  EMPTY_OUTBOX,
  EMPTY_WINDOW,
  nextRttvar,
  nextSrtt,
  type OrderedInbox,
  Outbox,
  ownWindow,
  type Reassembler,
  ReceiveWindow,
  type SendQueue,
  windowAfter,
} from "./reliability.ts";
import type { Timed } from "./timers.ts";
import { ConnTimes, TimeSlab } from "./conn_times.ts";
import type { NatClass } from "./nat_class.ts";
import type { Bucket } from "./limits.ts";
import type { KeyPair, MacKey } from "../deps/crypto.ts";

/** State of a peer that registered with this endpoint. */
export type PeerState = "handshaking" | "authenticated";

/** A remote node registered with this endpoint. */
export interface PeerEntry {
  /** The NodeInfo it sent. */
  info: NodeInfo;
  /** Its network (`metadata.network_id`, default `p2p_default`). */
  network: string;
  /** `handshaking` until our HandshakeResponse is acked or any later message arrives. */
  state: PeerState;
  /** Id of the HandshakeRequest that registered it (a repeat of it is a retransmission). */
  requestId: string;
  /**
   * Id of our latest HandshakeResponse to it: an Ack or a confirming Ping that names it proves the peer
   * receives at its address (a random UUID cannot be guessed by a spoofer).
   */
  responseId?: string | undefined;
  /** Set when the peer proved an Ed25519 key in its HandshakeRequest. */
  keyed?: KeyedPeer;
  /** When it registered (ms). */
  joinedAt: number;
  /** Its place in registration order (set by {@linkcode PeerTable.register}; discovery cursors use it). */
  order?: number;
  /** Its NAT as this server classified it (absent until measured; see src/core/nat_check.ts). */
  nat?: NatClass;
  /** When it last started a classification (ms): one every 30 s. */
  natCheckedAt?: number;
  /** When it last started a binding lifetime measurement (ms): one every 10 minutes. */
  natLifetimeAt?: number;
}

/** What a keyed HandshakeRequest proved, kept to answer it. */
export interface KeyedPeer {
  /** The peer's Ed25519 public key (raw). */
  publicKey: Uint8Array;
  /** The same, base64url. */
  keyText: string;
  /** The peer's X25519 key for this handshake (raw). */
  dh: Uint8Array;
  /** The id of the request that proved it. */
  requestId: string;
  /** That request's timestamp (Unix seconds): a later handshake of this key must not be older. */
  timestamp: number;
  /** The ids of this key's accepted requests with that same timestamp (a few at most). */
  sameSecond: string[];
}

/** The keys of an authenticated session on a connection. */
export interface Session {
  /** Session id (16 hex digits), carried by every datagram of the session. */
  sid: string;
  /** MAC key of what we send. */
  sendKey: MacKey;
  /** MAC key of what we receive. */
  recvKey: MacKey;
  /** The remote's Ed25519 public key (raw). */
  remoteKey: Uint8Array;
  /**
   * The sequence numbers of the unreliable datagrams received in this session (a sliding window, allocated
   * on the first): the sender never sends one twice, so a number seen again is a replay.
   */
  replay?: ReceiveWindow;
}

/** A handshake this endpoint started towards a remote (client role, sibling servers). */
export interface LinkEntry {
  /** `handshaking` until the remote's successful HandshakeResponse arrives. */
  state: "handshaking" | "connected";
  /** The NodeInfo we sent. */
  local: NodeInfo;
  /** The remote's NodeInfo, once known. */
  remote: NodeInfo | null;
  /** A sibling-server probe: one try, failure is quiet. */
  probe: boolean;
  /** The cookie a busy remote handed out, sent with the repeated request. */
  cookie?: string;
  /** How many cookie challenges this handshake has answered. */
  cookieTries?: number;
  /** Our X25519 key pair for this handshake (keyed handshakes). */
  eph?: KeyPair;
  /** The id of our latest HandshakeRequest (what the response must name). */
  requestId?: string;
  /** The remote's Ed25519 key we insist on (pinned), if any. */
  pinnedKey?: Uint8Array;
  /** Our address as the remote sees it (its HandshakeResponse or Pong said), if it told us. */
  observedAddr?: string;
  /** The keepalive interval the remote suggested (ms), when shorter than our heartbeat. */
  keepaliveMs?: number;
  /** The node id we must find there (a direct connection to an introduced peer). */
  expectedId?: string;
}

/** Transport state for one remote address. */
export interface Conn extends Timed {
  /** `formatSocketAddr(addr)`. */
  key: string;
  /** The remote address replies go to (the observed source). */
  addr: SocketAddr;
  /** Next sequence number to send. */
  nextSeq: number;
  /**
   * Reliable messages without a `rel` number already processed, by `sequence_number` (deployed peers number
   * everything this way; p2p_server peers their HandshakeRequest). A shared window while it has seen at
   * most one small number (read it through {@linkcode windowFor}, record through {@linkcode recordingWindow}).
   */
  window: ReceiveWindow;
  /**
   * Reliable messages with a `rel` number (p2p_server peers' reliable stream) already processed, allocated
   * on the first. A space of its own: a `rel` never collides with a `sequence_number` of the same value.
   */
  relWindow: ReceiveWindow | null;
  /** Next `rel` number (the reliable stream) to send. */
  relNext: number;
  /** Smoothed round-trip time of this path (ms); 0 before the first sample (see {@linkcode sampleRtt}). */
  srtt: number;
  /** Its variance (ms). */
  rttvar: number;
  /** RTT samples taken on this path. */
  rttSamples: number;
  /** The remote speaks p2p_server's extensions (it sent `ext`). */
  ext: boolean;
  /** Reliability state beyond the basics, allocated on first use (idle peers carry none). */
  x: ConnExtras | null;
  /** The authenticated session, once keys were agreed: every datagram then carries `sid` and a `mac`. */
  session: Session | null;
  /**
   * The remote proved it receives at this address (a confirmed handshake, a valid cookie, or we started the
   * handshake). Until then at most 3x the bytes received from it are sent to it.
   */
  validated: boolean;
  /** Bytes received from the remote while unvalidated. */
  bytesIn: number;
  /** Bytes sent to the remote while unvalidated. */
  bytesOut: number;
  /** Rate-limit bucket of a registered peer, once it has sent anything after registering. */
  bucket: Bucket | null;
  /**
   * Reliable messages waiting for an Ack: the shared {@linkcode EMPTY_OUTBOX} while none do (add through
   * {@linkcode outboxOf}; {@linkcode releaseOutbox} hands an emptied one back).
   */
  outbox: Outbox;
  /** When anything was last heard from this address (ms). */
  lastHeard: number;
  /** Datagrams and bytes received from this address, and sent to it (for `/peers` and `peers()`). */
  rxDatagrams: number;
  rxBytes: number;
  txDatagrams: number;
  txBytes: number;
  /** When the next heartbeat Ping is due (ms). */
  heartbeatAt: number;
  /** Set when the remote registered with us. */
  peer: PeerEntry | null;
  /** Set when we registered with the remote. */
  link: LinkEntry | null;
}

/** A received ordered message waiting for its turn. */
export interface HeldMessage {
  /** Source. */
  from: SocketAddr;
  /** Source key. */
  key: string;
  /**
   * The message's encoding (its own copy: a datagram's bytes are the shell's buffer), decoded again when its
   * turn comes, so that what is held is what is counted: a decoded payload can take many times its size.
   */
  bytes: Uint8Array;
}

/** A whole message sent as fragments, until every fragment is acknowledged or one is given up. */
export interface FragmentedSend {
  /** Fragments not yet acknowledged. */
  remaining: number;
  /** When it was handed to the endpoint (ms). */
  startedAt: number;
  /** Its type. */
  type: MessageType;
  /** Its ordered-delivery number, or null. */
  ord: number | null;
}

/** A routed message relayed end to end. */
export interface RelayEntry {
  /** Where it stands: the recipient has not acked yet, has, or it was given up. */
  state: "pending" | "delivered" | "failed";
  /** The sender's `sequence_number`, echoed in the Ack. */
  seq: number | null;
  /** The sender's `rel` number, recorded as handled once delivered. */
  rel: number | null;
  /** The recipient's node id (for the error text). */
  to: string;
}

/** Who sent a message this endpoint relays: a peer here (by connection key) or another instance. */
export type RelaySender = { kind: "peer"; key: string } | { kind: "instance"; instance: string };

/** A copy of routed Data this endpoint relays, and whom to tell when it is acknowledged or given up. */
export interface ForwardedCopy {
  /** The original sender. */
  sender: RelaySender;
  /** The sender's message id. */
  originalId: string;
}

/** Per-connection reliability state that most peers never need. */
export interface ConnExtras {
  /** Reliable messages waiting for window room. */
  queue: SendQueue | null;
  /** Whole messages in flight as fragments, by id. */
  fragmented: Map<string, FragmentedSend> | null;
  /** Fragments being reassembled. */
  reassembly: Reassembler | null;
  /** The remote's ordered stream. */
  ordered: OrderedInbox<HeldMessage> | null;
  /**
   * Routed Data this peer sent, by message id, while the server relays it end to end: its Ack waits for the
   * recipient's (bounded; delivered ones are kept a while to answer retransmissions).
   */
  relays: Map<string, RelayEntry> | null;
  /** Copies this endpoint is relaying to this peer, by our message id: whom to tell when it is acked. */
  forwarded: Map<string, ForwardedCopy> | null;
  /** Relay quota buckets of this peer as a sender: messages and bytes. */
  relayQuota: { messages: Bucket; bytes: Bucket } | null;
  /** Introductions this peer asked for (a token bucket). */
  introductions: Bucket | null;
  /**
   * The unreliable answers to the remote's latest reliable requests, by request number (`rel:n` or `seq:n`):
   * a repeated request, whose answer was lost, gets it again. Bounded by {@linkcode MAX_ANSWERS} and
   * {@linkcode MAX_ANSWER_BYTES}; the oldest goes first.
   */
  answers: Map<string, KeptAnswer> | null;
  /** Bytes held in {@linkcode ConnExtras.answers}. */
  answerBytes: number;
  /** Next ordered-delivery number to send (from 1 per session). */
  ordNext: number;
  /** `rel` numbers missing from the remote's reliable stream, with when each gap was seen (ms). */
  missing: Map<number, number> | null;
  /** When the next `Retransmit` request may go out (ms). */
  nackAt: number;
  /** Given-up ordered messages by `rel` number, so a `Retransmit` can be answered with their `ord`. */
  goneOrdered: Map<number, number> | null;
  /** Until when no further "gone" answer is sent (ms). */
  goneQuietUntil: number;
  /**
   * How late (ms) messages of the remote's reliable stream have been arriving after a later one: a decaying
   * maximum of the time gaps took to fill, so gap reports wait out the reordering this path really has.
   */
  reorderMs: number;
}

/** An answer kept for a repeated request. */
export interface KeptAnswer {
  bytes: Uint8Array;
  type: MessageType;
}

/** Answers kept per remote (see {@linkcode ConnExtras.answers}). */
export const MAX_ANSWERS = 8;

/** Bytes of answers kept per remote. */
export const MAX_ANSWER_BYTES = 16 * 1024;

/** Bytes of answers kept by all remotes together: a bound on what many peers can pin, whatever their number. */
export const MAX_KEPT_ANSWER_BYTES = 16 * 1_048_576;

/**
 * Keeps `answer` for the request `key` of `conn`, forgetting its oldest beyond the per-remote bounds; within
 * `budget` (shared by every remote), or not at all when that is spent.
 */
export function keepAnswer(
  conn: Conn,
  key: string,
  answer: KeptAnswer,
  budget: { used: number; limit: number },
): void {
  if (answer.bytes.length > MAX_ANSWER_BYTES) return;
  const x = extras(conn);
  const answers = x.answers ??= new Map();
  const drop = (k: string, kept: KeptAnswer) => {
    answers.delete(k);
    x.answerBytes -= kept.bytes.length;
    budget.used -= kept.bytes.length;
  };
  const old = answers.get(key);
  if (old) drop(key, old);
  while (answers.size >= MAX_ANSWERS || x.answerBytes + answer.bytes.length > MAX_ANSWER_BYTES) {
    const [first, kept] = answers.entries().next().value!;
    drop(first, kept);
  }
  if (budget.used + answer.bytes.length > budget.limit) return;
  answers.set(key, answer);
  x.answerBytes += answer.bytes.length;
  budget.used += answer.bytes.length;
}

/** Forgets every answer kept for `conn` (it is forgotten, or a new session starts), giving back the budget. */
export function releaseAnswers(conn: Conn, budget: { used: number }): void {
  const x = conn.x;
  if (!x?.answers) return;
  budget.used -= x.answerBytes;
  x.answers = null;
  x.answerBytes = 0;
}

/** A valid datagram from `conn`'s address: when it was heard, what it counts, what it announced. */
export function heard(conn: Conn, dg: { now: number; size: number }, ext: boolean): void {
  conn.lastHeard = dg.now;
  conn.rxDatagrams++;
  conn.rxBytes += dg.size;
  if (ext) conn.ext = true;
  if (!conn.validated) conn.bytesIn += dg.size;
}

/** A connection's state; its times are kept in a {@linkcode TimeSlab} (see src/core/conn_times.ts). */
class ConnState extends ConnTimes implements Conn {
  key: string;
  addr: SocketAddr;
  nextSeq = 1;
  window: ReceiveWindow = EMPTY_WINDOW;
  relWindow: ReceiveWindow | null = null;
  relNext = 1;
  rttSamples = 0;
  ext = false;
  x: ConnExtras | null = null;
  session: Session | null = null;
  validated = false;
  bytesIn = 0;
  bytesOut = 0;
  bucket: Bucket | null = null;
  outbox: Outbox = EMPTY_OUTBOX;
  rxDatagrams = 0;
  rxBytes = 0;
  txDatagrams = 0;
  txBytes = 0;
  peer: PeerEntry | null = null;
  link: LinkEntry | null = null;
  timerToken = 0;

  constructor(key: string, addr: SocketAddr, now: number, slab?: TimeSlab) {
    super(now, slab);
    this.key = key;
    this.addr = { hostname: addr.hostname, port: addr.port };
  }
}

/**
 * Creates the transport state for a new remote address, its times in a slab of its own (a connection
 * table's {@linkcode PeerTable.open} puts them in the table's).
 */
export function newConn(key: string, addr: SocketAddr, now: number): Conn {
  return new ConnState(key, addr, now);
}

/** Takes one RTT sample (ms) of `conn`'s path into its estimate (the same arithmetic as `RttEstimator`). */
export function sampleRtt(conn: Conn, ms: number): void {
  const rttvar = nextRttvar(conn.srtt, conn.rttvar, conn.rttSamples, ms);
  conn.srtt = nextSrtt(conn.srtt, conn.rttSamples, ms);
  conn.rttvar = rttvar;
  conn.rttSamples++;
}

/** The connection's own outbox, made when the first reliable message to it waits for an Ack. */
export function outboxOf(conn: Conn): Outbox {
  if (conn.outbox === EMPTY_OUTBOX) conn.outbox = new Outbox();
  return conn.outbox;
}

/** Gives up the connection's own outbox once nothing waits in it (an idle peer then holds none). */
export function releaseOutbox(conn: Conn): void {
  if (conn.outbox.size === 0) conn.outbox = EMPTY_OUTBOX;
}

/**
 * The receive window a reliable message is numbered in, to read: the `rel` window when it carries `rel`,
 * else the `sequence_number` window (which may be a shared {@linkcode EMPTY_WINDOW}-like one: record through
 * {@linkcode recordingWindow}). The two spaces are kept apart so that neither number can mark the other's
 * message a duplicate.
 */
export function windowFor(conn: Conn, rel: number | undefined): ReceiveWindow {
  if (rel === undefined) return conn.window;
  return conn.relWindow ??= new ReceiveWindow();
}

/** The same window as {@linkcode windowFor}, the connection's own, to record a number in. */
export function recordingWindow(conn: Conn, rel: number | undefined): ReceiveWindow {
  if (rel === undefined) return conn.window = ownWindow(conn.window);
  return conn.relWindow ??= new ReceiveWindow();
}

/**
 * Starts the `sequence_number` window of a new session: empty, or having seen only `first` (shared when
 * that state is common, so a peer that only handshook holds no window of its own).
 */
export function restartWindow(conn: Conn, first: number | null): void {
  conn.window = first === null ? EMPTY_WINDOW : windowAfter(first);
}

/** The connections of one endpoint and the indexes over its registered peers. */
/**
 * Keeps the link's NAT mapping open with a keepalive every `seconds` when that is shorter than what it uses
 * now (its heartbeat, or an interval the remote suggested earlier): the next keepalive moves up as well.
 * Returns whether it changed.
 */
export function adoptKeepalive(conn: Conn, now: number, seconds: number, heartbeatMs: number): boolean {
  const link = conn.link;
  const ms = seconds * 1000;
  if (!link || !(ms >= 1000) || ms >= (link.keepaliveMs ?? heartbeatMs)) return false;
  link.keepaliveMs = ms;
  conn.heartbeatAt = Math.min(conn.heartbeatAt, now + ms);
  return true;
}

/** A connection in the server role: it holds a registered peer. */
export type PeerConn = Conn & { peer: PeerEntry };

/** A connection in the client role: it holds a link to a server (or to an introduced peer). */
export type LinkConn = Conn & { link: LinkEntry };

/** Whether `conn` holds a registered peer. */
export function hasPeer(conn: Conn | undefined): conn is PeerConn {
  return conn?.peer != null;
}

/** Whether `conn` holds a link. */
export function hasLink(conn: Conn | undefined): conn is LinkConn {
  return conn?.link != null;
}

export class PeerTable {
  /**
   * Every connection by address key: add with {@linkcode PeerTable.open}, drop with
   * {@linkcode PeerTable.close} (a move to another key may delete and set it again).
   */
  readonly byAddr = new Map<string, Conn>();
  /** The times of every connection in {@linkcode PeerTable.byAddr}. */
  readonly #times = new TimeSlab();
  /** Registered peers by node id. */
  readonly byId = new Map<string, PeerConn>();
  /** Registered peers by network, then node id (insertion order = registration order). */
  readonly byNetwork = new Map<string, Map<string, PeerConn>>();
  #handshaking = 0;
  #authenticated = 0;
  #order = 0;

  /** A new connection for `addr`, added under `key` (which must have none). */
  open(key: string, addr: SocketAddr, now: number): Conn {
    const conn = new ConnState(key, addr, now, this.#times);
    this.byAddr.set(key, conn);
    return conn;
  }

  /**
   * Drops `conn` from the table: its times move to an array of its own (a reference kept to it reads them
   * still), and its slot of the table's slab is given back.
   */
  close(conn: Conn): void {
    if (this.byAddr.get(conn.key) === conn) this.byAddr.delete(conn.key);
    if (!(conn instanceof ConnState) || conn.times !== this.#times) return;
    conn.detach();
  }

  /** The slab's slots in use and its capacity (for tests and memory accounting). */
  get timeSlots(): { live: number; capacity: number } {
    return { live: this.#times.live, capacity: this.#times.capacity };
  }

  /** Peers by state. */
  counts(): { handshaking: number; authenticated: number } {
    return { handshaking: this.#handshaking, authenticated: this.#authenticated };
  }

  /** Peers registered but not yet confirmed (half-open handshakes). */
  get halfOpen(): number {
    return this.#handshaking;
  }

  /** Number of registered peers (both states). */
  get peerCount(): number {
    return this.#handshaking + this.#authenticated;
  }

  /** The next place in registration order (mirrored peers of other instances take places too). */
  nextOrder(): number {
    return ++this.#order;
  }

  /** Registers `peer` on `conn` (which must have none). */
  register(conn: Conn, peer: PeerEntry): PeerConn {
    peer.order = this.nextOrder();
    conn.peer = peer;
    // The indexes hold only connections with a peer: `unregister` takes a connection out of them before it
    // clears `peer`, so the type holds for as long as it is indexed.
    const registered = conn as PeerConn;
    this.byId.set(peer.info.id, registered);
    let net = this.byNetwork.get(peer.network);
    if (!net) this.byNetwork.set(peer.network, net = new Map());
    net.set(peer.info.id, registered);
    if (peer.state === "handshaking") this.#handshaking++;
    else this.#authenticated++;
    return registered;
  }

  /** Marks a handshaking peer authenticated. */
  authenticate(conn: Conn): void {
    if (conn.peer?.state !== "handshaking") return;
    conn.peer.state = "authenticated";
    this.#handshaking--;
    this.#authenticated++;
  }

  /** Removes the peer registered on `conn`, returning it. */
  unregister(conn: Conn): PeerEntry | null {
    const peer = conn.peer;
    if (!peer) return null;
    if (this.byId.get(peer.info.id) === conn) this.byId.delete(peer.info.id);
    const net = this.byNetwork.get(peer.network);
    if (net?.get(peer.info.id) === conn) {
      net.delete(peer.info.id);
      if (net.size === 0) this.byNetwork.delete(peer.network);
    }
    conn.peer = null;
    if (peer.state === "handshaking") this.#handshaking--;
    else this.#authenticated--;
    return peer;
  }
}

/** The connection's rarely needed state, allocated on first use. */
export function extras(conn: Conn): ConnExtras {
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
    answers: null,
    answerBytes: 0,
  };
}
