/**
 * The send path of the reliable transport: numbering, the outbox (what awaits an Ack), the send queue behind
 * the window, fragments of messages larger than a datagram, retransmission waits (RTO and backoff), and the
 * replies and Acks the receive path sends. Everything leaves through the core's output and its
 * anti-amplification budget.
 *
 * @module
 */
import {
  encodeMessage,
  encodeMessageText,
  EXTENSIONS_VERSION,
  isJsonObject,
  type Json,
  keptBytes,
  MAX_FRAGMENTS,
  MAX_SEQUENCE,
  type Message,
  type MessageType,
} from "../wire/mod.ts";
import { type Conn, extras, hasLink, hasPeer, keepAnswer, outboxOf, sampleRtt } from "./peers.ts";
import { type Pending, type Queued, SendQueue } from "./reliability.ts";
import type { GiveUpReason } from "./stats.ts";
import type { Core } from "./context.ts";
import type { Sessions } from "./sessions.ts";
import { type Datagram, type Drop, drop } from "./outcome.ts";
import { BACKOFF_JITTER, ERROR_CODES, MAX_UDP_PAYLOAD } from "./types.ts";

/** Options of a reliable send. */
export interface ReliableOptions {
  /** A fixed retry schedule (ms between tries) instead of the configured policy. @default {the policy's} */
  schedule?: readonly number[] | null;
  /** Data only: deliver in order with the other ordered Data to the same remote. @default {false} */
  ordered?: boolean;
}

const NO_OPTIONS: ReliableOptions = {};

/** Options of {@linkcode SendPath.ackReceived}. */
export interface AckOptions {
  /** Queue position the Ack goes in front of (-1: at the end). @default {-1} */
  at?: number;
  /** MAC'd in a running session. @default {true} */
  mac?: boolean;
}

/** A whole message to cut into fragments: its id, type, payload, ordered number and retry schedule. */
export interface FragmentSpec {
  /** The whole message's id (what the fragments name in `frag.of`). */
  id: string;
  /** Its type. */
  type: MessageType;
  /** Its payload. */
  payload: Json;
  /** Its ordered-delivery number, or null. */
  ord: number | null;
  /** The fragments' retry schedule, or null for the policy's. */
  schedule: readonly number[] | null;
}

/** Sending on connections, and answering datagrams. */
export class SendPath {
  readonly #core: Core;
  readonly #sessions: Sessions;
  /** The bytes of the last datagram `sendPlain` queued (for the answer cache). */
  #lastPlain: Uint8Array | null = null;

  /**
   * @param core The shared state.
   * @param sessions Keys and MACs of authenticated sessions.
   */
  constructor(core: Core, sessions: Sessions) {
    this.#core = core;
    this.#sessions = sessions;
  }

  /**
   * Sends an unreliable message on a connection: numbered, sent once. One too large for a datagram goes out
   * as reliable fragments when the remote speaks the extension. Returns the message (for fragments: the whole
   * message), or null when it cannot be sent at all (too large).
   */
  sendPlain(now: number, conn: Conn, type: MessageType, payload: Json): Message | null {
    const seq = conn.nextSeq;
    conn.nextSeq = seq === MAX_SEQUENCE ? 0 : seq + 1;
    const msg = this.#core.envelope(now, type, payload, seq);
    const bytes = this.#sessions.encodeOn(conn, msg, conn.ext);
    if (bytes.length > this.#core.config.maxDatagramSize && conn.ext) {
      return this.fragment(now, conn, { id: msg.id, type, payload, ord: null, schedule: null });
    }
    this.#lastPlain = bytes;
    return this.#core.transmitOn(conn, bytes, type) ? msg : null;
  }

  /**
   * Sends a reliable message on a connection: numbered, recorded for retransmission until its Ack, queued
   * behind the window when it is full. One too large for a datagram goes out as reliable fragments when the
   * remote speaks the extension. Returns the message (for fragments: the whole message), or null when it
   * cannot be sent at all (too large).
   */
  sendReliable(
    now: number,
    conn: Conn,
    type: MessageType,
    payload: Json,
    options: ReliableOptions = NO_OPTIONS,
  ): Message | null {
    const x = conn.x;
    const ord = options.ordered ? this.nextOrd(conn) : null;
    const config = this.#core.config;
    const plan = options.schedule ??
      (config.retransmitPolicy === "schedule" ? config.retransmitSchedule : null);
    const deadlineMs = type === "HandshakeRequest" || type === "HandshakeResponse"
      ? this.#core.handshakeMs
      : this.#core.deliveryMs;
    const item: Queued = {
      id: this.#core.newId(),
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
      const sent = this.transmitReliable(now, conn, item);
      if (sent !== null) return sent;
      return conn.ext ? this.fragment(now, conn, item) : null;
    }
    // Behind others: measure it now to decide between one datagram and fragments.
    const probe = this.#core.envelope(now, type, payload, null);
    probe.requires_ack = true;
    const size = utf8.encode(encodeMessageText(probe)).length + FRAGMENT_FIELDS_ROOM;
    if (size > (conn.ext ? config.maxDatagramSize : MAX_UDP_PAYLOAD)) {
      return conn.ext ? this.fragment(now, conn, item) : this.tooLargeToSend();
    }
    item.size = size;
    this.enqueue(now, conn, [item]); // when the queue is full, a gaveUp event names the message
    return this.asMessage(now, item);
  }

  nextOrd(conn: Conn): number {
    const x = extras(conn);
    const ord = x.ordNext;
    x.ordNext = ord === MAX_SEQUENCE ? 1 : ord + 1;
    return ord;
  }

  tooLargeToSend(): null {
    this.#core.stats.sendsTooLarge++;
    return null;
  }

  /** The message a queued item will become (for the caller; the wire copy gets its numbers when sent). */
  asMessage(now: number, item: Queued): Message {
    const msg = this.#core.envelope(now, item.type, item.payload, null);
    msg.requires_ack = true;
    msg.id = item.id;
    if (item.ord !== null) msg.ord = item.ord;
    return msg;
  }

  /**
   * Queues reliable messages behind the window; when the queue cannot take them all, they are given up
   * (`queue_full`) and false is returned.
   */
  enqueue(now: number, conn: Conn, items: Queued[]): boolean {
    const x = extras(conn);
    const queue = x.queue ??= new SendQueue(this.#core.queueLimits[0], this.#core.queueLimits[1]);
    let bytes = 0;
    for (const item of items) bytes += item.size;
    if (!queue.fits(items.length, bytes)) {
      const first = items[0]!;
      const id = first.frag?.of ?? first.id;
      this.gaveUp(conn, id, 0, first.type, 0, "queue_full");
      if (first.frag) x.fragmented?.delete(id);
      return false;
    }
    for (const item of items) queue.push(item);
    this.pump(now, conn);
    return true;
  }

  /** Sends queued messages while the window has room. */
  pump(now: number, conn: Conn): void {
    const queue = conn.x?.queue;
    if (!queue) return;
    while (queue.size > 0 && conn.outbox.hasRoom(conn.relNext)) {
      const item = queue.shift()!;
      if (this.transmitReliable(now, conn, item) === null) {
        this.#core.stats.sendsTooLarge++;
        this.gaveUp(conn, item.frag?.of ?? item.id, 0, item.type, 0, "queue_full");
      }
    }
    if (queue.size === 0) conn.x!.queue = null;
  }

  /**
   * Puts one reliable datagram on the wire and into the outbox. Returns null (and sends nothing) when it
   * does not fit in one datagram for this remote.
   */
  transmitReliable(now: number, conn: Conn, item: Queued): Message | null {
    const seq = conn.nextSeq;
    const rel = conn.relNext;
    const type = item.type;
    const msg: Message = {
      id: item.id,
      message_type: type,
      timestamp: Math.floor(now / 1000),
      payload: item.payload,
      sender_addr: this.#core.senderAddr,
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
    if (
      type === "HandshakeRequest" && this.#sessions.keyed && this.#core.config.auth !== "off" && hasLink(conn)
    ) {
      msg.auth = this.#sessions.signRequest(conn, msg);
    }
    let activate: (() => void) | null = null;
    if (
      type === "HandshakeResponse" && hasPeer(conn) && conn.peer.keyed && this.#sessions.keyed && !conn.link
    ) {
      const signed = this.#sessions.signResponse(now, conn, conn.peer.keyed, msg);
      if (signed) {
        msg.auth = signed.auth;
        activate = signed.activate;
      }
    }
    // Handshake messages go out unMAC'd (the remote may not have the keys yet), except on a connection
    // whose session is already running (the second handshake of two servers registering with each other).
    const bytes = (type === "HandshakeRequest" || type === "HandshakeResponse") && (activate || !conn.session)
      ? encodeMessage(msg, conn.ext || msg.ext !== undefined)
      : this.#sessions.encodeOn(conn, msg, conn.ext);
    activate?.();
    if (bytes.length > (conn.ext ? this.#core.config.maxDatagramSize : MAX_UDP_PAYLOAD) && !item.frag) {
      return null;
    }
    if (!this.#core.transmitOn(conn, bytes, type)) return null;
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
    pending.nextAt = now + this.wait(conn, pending);
    outboxOf(conn).add(pending);
    if (item.frag) this.#core.stats.fragmentsSent++;
    return msg;
  }

  /**
   * Cuts a message into reliable fragments of at most `max_datagram_size` bytes each and queues them. The
   * whole message (the returned one, with its own id) is what the receiver reassembles and acts on.
   */
  fragment(now: number, conn: Conn, spec: FragmentSpec): Message | null {
    const { id, type, payload, ord, schedule } = spec;
    const whole = this.#core.envelope(now, type, payload, null);
    whole.id = id;
    if (ord !== null) whole.ord = ord;
    const bytes = encodeMessage(whole);
    const chunk = this.chunkSize(now, type);
    const n = Math.ceil(bytes.length / chunk);
    if (bytes.length > this.#core.config.maxMessageSize || n > MAX_FRAGMENTS) return this.tooLargeToSend();
    const items: Queued[] = [];
    for (let i = 0; i < n; i++) {
      items.push({
        id: this.#core.newId(),
        type,
        payload: bytes.subarray(i * chunk, (i + 1) * chunk).toBase64(),
        ord: null,
        frag: { of: id, i, n },
        parentOrd: ord,
        schedule,
        deadlineMs: this.#core.deliveryMs,
        size: this.#core.config.maxDatagramSize,
      });
    }
    const x = extras(conn);
    (x.fragmented ??= new Map()).set(id, { remaining: n, startedAt: now, type, ord });
    this.#core.stats.messagesFragmented++;
    this.enqueue(now, conn, items);
    return whole;
  }

  /** Raw bytes per fragment so that a fragment datagram, with the widest numbers, fits `max_datagram_size`. */
  chunkSize(now: number, type: MessageType): number {
    const widest: Message = {
      id: ZERO_UUID,
      message_type: type,
      timestamp: Math.floor(now / 1000),
      payload: "",
      sender_addr: this.#core.senderAddr,
      sequence_number: MAX_SEQUENCE,
      requires_ack: true,
      ack_for: null,
      rel: MAX_SEQUENCE,
      frag: { of: ZERO_UUID, i: MAX_FRAGMENTS - 1, n: MAX_FRAGMENTS },
    };
    const room = this.#core.config.maxDatagramSize - encodeMessage(widest, true).length;
    return Math.max(3, Math.floor(room / 4) * 3);
  }

  /**
   * Answers the datagram being handled: on its connection when there is one, else statelessly (no sequence
   * number, within 3x the datagram's size). Returns false when the reply would not fit in one datagram (it is
   * not sent).
   */
  reply(dg: Datagram, conn: Conn | undefined, type: MessageType, payload: Json): boolean {
    if (conn && (conn.peer || conn.link)) {
      this.#lastPlain = null;
      const sent = this.sendPlain(dg.now, conn, type, payload) !== null;
      // The answer to a reliable request is kept: a repeat of the request (its answer lost) gets it again.
      if (sent && dg.answerKey && this.#lastPlain) {
        keepAnswer(conn, dg.answerKey, { bytes: this.#lastPlain, type }, this.#core.answerBudget);
      }
      return sent;
    }
    const envelope = this.#core.envelope(dg.now, type, payload, null);
    let bytes = encodeMessage(envelope, dg.summed);
    if (type === "Error" && bytes.length > dg.size && isJsonObject(payload)) {
      // An Error to an address with no state is never larger than the datagram that caused it: shorten
      // its text (the code stays), or send nothing when even that is too large.
      const text = typeof payload.error === "string" ? payload.error : "";
      const cut = Math.max(0, text.length - (bytes.length - dg.size) - 3);
      envelope.payload = { ...payload, error: cut > 0 ? `${text.slice(0, cut)}...` : "" };
      bytes = encodeMessage(envelope, dg.summed);
      if (bytes.length > dg.size) {
        this.#core.stats.amplificationLimited++;
        return true;
      }
    }
    return this.#core.transmitStateless(dg, dg.from, bytes, type);
  }

  /** Acknowledges `acked` on a connection (MAC'd in a running session). */
  ackOn(now: number, conn: Conn, acked: Message): void {
    const msg = this.#ack(now, acked);
    this.#core.transmitOn(conn, this.#sessions.encodeOn(conn, msg, conn.ext), "Ack");
  }

  /**
   * Acknowledges a message of the datagram being handled. With `at`, the Ack goes in front of the datagrams
   * queued since that position; `mac: false` sends it without the session's MAC (the Ack of a
   * HandshakeRequest that just started a session: the requester gets its keys from the response that follows).
   */
  ackReceived(dg: Datagram, conn: Conn | undefined, acked: Message, options: AckOptions = {}): void {
    const msg = this.#ack(dg.now, acked);
    const core = this.#core;
    const queued = core.queuedTransmits;
    if (!conn) core.transmitStateless(dg, dg.from, encodeMessage(msg, dg.summed), "Ack");
    else if (options.mac ?? true) {
      core.transmitOn(conn, this.#sessions.encodeOn(conn, msg, conn.ext), "Ack");
    } else core.transmitOn(conn, encodeMessage(msg, conn.ext), "Ack");
    const at = options.at ?? -1;
    if (at >= 0 && at < queued && core.queuedTransmits > queued) core.moveLastTo(at);
  }

  #ack(now: number, acked: Message): Message {
    const msg = this.#core.envelope(now, "Ack", null, acked.sequence_number);
    msg.ack_for = acked.id;
    this.#core.stats.acksSent++;
    return msg;
  }

  /** Refuses a handshake: the counter by code, and an Error (stateless, within budget). */
  refuse(dg: Datagram, code: string, error: string): void {
    this.#core.stats.handshakeFailed(code);
    this.reply(dg, undefined, "Error", { error, code });
    this.#core.emit({ type: "refused", from: dg.from, nodeId: dg.claimedId ?? null, code, error });
  }

  /** Answers a request from an address that has not registered. */
  notRegistered(dg: Datagram, what: string): Drop {
    this.reply(dg, undefined, "Error", {
      error: "not registered: send a HandshakeRequest first",
      code: ERROR_CODES.notRegistered,
    });
    return drop("not_registered", `${what} from an address that has not registered`);
  }

  /** Answers a malformed request of a registered peer (the message is still acknowledged). */
  badRequest(dg: Datagram, conn: Conn, detail: string): Drop {
    this.reply(dg, conn, "Error", { error: `bad request: ${detail}`, code: ERROR_CODES.badRequest });
    return { reason: "bad_payload", detail, refused: true };
  }

  /** Says a reply would have been too large. */
  tooLarge(dg: Datagram, conn: Conn): void {
    this.reply(dg, conn, "Error", {
      error: `message too large: the reply would exceed ${MAX_UDP_PAYLOAD} bytes`,
      code: ERROR_CODES.tooLarge,
    });
  }

  /**
   * A reliable message processed already came again: acknowledged again, and, when its answer was kept (the
   * answer may be what was lost), answered again within the budget; reported as a duplicate when asked.
   */
  repeated(dg: Datagram, conn: Conn, msg: Message, key: string, number: number): void {
    this.ackReceived(dg, conn, msg);
    const kept = conn.x?.answers?.get(key);
    if (kept) {
      this.#core.transmitOn(conn, kept.bytes, kept.type);
      this.#core.stats.answersReplayed++;
    }
    this.#core.duplicate(dg.from, msg, number);
  }

  /** Sends a kept datagram again (a retransmission). */
  resend(conn: Conn, bytes: Uint8Array, type: MessageType): void {
    this.#core.transmitOn(conn, bytes, type);
  }

  /**
   * The wait after the latest try of a message: its schedule's entry, or the path's timeout doubled per
   * earlier try, plus up to {@linkcode BACKOFF_JITTER} of random jitter on resends.
   */
  wait(conn: Conn, p: Pending): number {
    const schedule = p.schedule;
    if (schedule) return schedule[p.tries - 1] ?? 0;
    return this.backoff(this.#core.rtoOf(conn), p.tries, p.giveUpAt - p.firstSentAt);
  }

  /**
   * Exponential backoff from `rto`, capped at `rto_max_ms` and at a tenth of the deadline, so that a message
   * is tried at least ten times before it is given up (a handshake under 30 % loss each way then fails
   * about once in 10^5).
   */
  backoff(rto: number, tries: number, deadlineMs: number): number {
    const cap = Math.min(this.#core.rto.maxMs, Math.max(this.#core.rto.minMs, deadlineMs / 10));
    const base = Math.min(rto * 2 ** (tries - 1), cap);
    if (tries === 1) return base;
    // Jitter stays inside the cap: above the doubled timeout while it is below the cap, below the cap once
    // it is reached, so no wait exceeds the cap and retries at the cap are still spread out.
    const r = this.#core.random();
    return base < cap ? Math.min(base * (1 + BACKOFF_JITTER * r), cap) : cap * (1 - (BACKOFF_JITTER / 2) * r);
  }

  gaveUp(conn: Conn, id: string, seq: number, type: MessageType, tries: number, reason: GiveUpReason): void {
    this.#core.stats.giveUp(reason);
    this.#core.emit({ type: "gaveUp", to: conn.addr, id, seq, messageType: type, tries, reason });
  }

  /**
   * A waiting message was answered (Ack, or a reply that proves it arrived): an RTT sample when it was sent
   * only once (Karn's rule).
   */
  settled(now: number, conn: Conn, pending: Pending | undefined): void {
    if (!pending || pending.tries !== 1 || pending.lastSentAt !== pending.firstSentAt) return;
    const ms = now - pending.firstSentAt;
    sampleRtt(conn, ms);
    this.#core.stats.rttSample(ms);
  }
}

const utf8 = new TextEncoder();

/** Bytes reserved for the numbers a queued message gets when it is sent (`sequence_number`, `rel`, `ord`). */
const FRAGMENT_FIELDS_ROOM = 48;

const ZERO_UUID = "00000000-0000-4000-8000-000000000000";
