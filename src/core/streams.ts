/**
 * The receive side of the reliable transport: gaps in a peer's reliable stream and the `Retransmit`
 * requests that report them (and answering the peer's), fragment reassembly, and ordered delivery (messages
 * held behind a gap until it fills, is given up, or outlives the delivery deadline).
 *
 * @module
 */
import { DecodeError, decodeMessage, isJsonObject, isSequenceNumber, type Message } from "../wire/mod.ts";
import { type Conn, type ConnExtras, extras, type HeldMessage } from "./peers.ts";
import { OrderedInbox, type Pending, Reassembler, RECEIVE_WINDOW } from "./reliability.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import { type Datagram, type Drop, drop, type Outcome } from "./outcome.ts";
import { MAX_RETRANSMIT_REQUEST } from "./types.ts";

/** Hands a message to the room that handles its type (the coordinator's dispatch). */
export type Dispatch = (dg: Datagram, conn: Conn | undefined, msg: Message) => Outcome;

/** Shortest wait before a gap in a peer's reliable stream is reported with `Retransmit` (ms). */
const NACK_DELAY_MS = 10;

/** Most given-up ordered messages remembered per peer for answering `Retransmit`. */
const GONE_REMEMBERED = 256;

/** Per gap filled, how much of the path's earlier lateness estimate is kept (a decaying maximum). */
const REORDER_DECAY = 0.95;

/** Most missing `rel` numbers tracked per peer. */
const MISSING_TRACKED = RECEIVE_WINDOW;

/** Gap reports, fragments and ordered delivery of what peers send us. */
export class Streams {
  readonly #core: Core;
  readonly #send: SendPath;
  readonly #dispatch: Dispatch;

  /**
   * @param core The shared state.
   * @param send The send path (Retransmit requests and answers, resends).
   * @param dispatch Hands a reassembled or released message on.
   */
  constructor(core: Core, send: SendPath, dispatch: Dispatch) {
    this.#core = core;
    this.#send = send;
    this.#dispatch = dispatch;
  }

  /** Tracks gaps in a peer's reliable stream after `rel` was accepted (`before` was the highest). */
  noteRel(now: number, conn: Conn, before: number, rel: number): void {
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
    const more = extras(conn);
    const missing = more.missing ??= new Map();
    for (let d = 1; d < distance; d++) {
      if (missing.size >= MISSING_TRACKED) missing.delete(missing.keys().next().value!);
      missing.set((before + d) >>> 0, now);
    }
    if (more.nackAt === Infinity) {
      // Wait out ordinary reordering before asking: a quarter RTT plus twice its variance, or a quarter more
      // than the lateness seen on this path, whichever is longer; but ask well before the sender's timer.
      const rttWait = conn.rttSamples > 0 ? conn.srtt / 4 + 2 * conn.rttvar : 0;
      const wait = Math.max(NACK_DELAY_MS, rttWait, 1.25 * more.reorderMs);
      more.nackAt = now + Math.min(wait, this.#core.rtoOf(conn) / 2);
    }
  }

  /** Checks and admits a fragment's chunk: returns its size in bytes, or says why it is dropped. */
  prepareFragment(conn: Conn | undefined, msg: Message): number | Drop {
    if (!conn || (!conn.peer && !conn.link)) {
      return drop("not_registered", "fragment from an unknown address");
    }
    if (typeof msg.payload !== "string") {
      return drop("bad_payload", "fragment payload is not a base64 string");
    }
    let size: number;
    try {
      // Decoded to check it only: the chunk is kept as its text (a string costs its length; a small
      // Uint8Array costs close to a kilobyte of the process's memory), decoded into the whole message once.
      size = Uint8Array.fromBase64(msg.payload).length;
    } catch {
      return drop("bad_payload", "fragment payload is not valid base64");
    }
    if (size === 0) return drop("bad_payload", "fragment payload is empty");
    const x = extras(conn);
    const why = (x.reassembly ??= new Reassembler(this.#core.reassemblyBounds)).admit(msg.frag!, size);
    return why === undefined ? size : drop("buffer_full", `fragment refused: ${why}`);
  }

  /**
   * A fragment whose chunk of `size` bytes was admitted by {@linkcode prepareFragment}: stored, and the whole
   * message handled once complete.
   */
  onFragment(dg: Datagram, conn: Conn, msg: Message, size: number): Outcome {
    const result = extras(conn).reassembly!.add(dg.now, msg.frag!, msg.payload as string, size);
    if (result.status === "duplicate") return "duplicate";
    if (result.status !== "complete") return undefined;
    this.#core.stats.messagesReassembled++;
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
      return this.onOrdered(dg, conn, inner, result.bytes);
    }
    return this.#dispatch(dg, conn, inner);
  }

  /**
   * Ordered Data: delivered now with whatever it unblocks, or held until the earlier ones arrive. `bytes` is
   * its encoding: the datagram (copied before it is held) or the reassembled message (already its own).
   */
  onOrdered(dg: Datagram, conn: Conn, msg: Message, bytes: Uint8Array, copy = false): Outcome {
    const now = dg.now;
    const inbox = extras(conn).ordered ??= new OrderedInbox<HeldMessage>(this.#core.orderedBounds);
    const ord = msg.ord!;
    const kept = copy && inbox.ahead(ord) ? bytes.slice() : bytes;
    const result = inbox.offer(now, ord, { from: dg.from, key: dg.key, bytes: kept }, bytes.length);
    if (result.status === "full") return drop("buffer_full", `ordered message ${ord} does not fit`);
    if (result.status === "held") {
      this.#core.stats.orderedHeld++;
      return undefined;
    }
    // The first is this message, decoded already; the rest were held.
    const outcome = this.#dispatch(dg, conn, msg);
    this.dispatchHeld(now, result.items.slice(1), dg);
    return outcome;
  }

  /**
   * Dispatches held ordered messages whose turn came (their datagrams were counted when they arrived), in the
   * context of the datagram that released them, or of none (a timer).
   */
  dispatchHeld(now: number, items: HeldMessage[], dg: Datagram | null): void {
    for (const item of items) {
      const conn = this.#core.table.byAddr.get(item.key);
      let outcome: Outcome;
      try {
        // Decoded once already when it arrived; decoding it again cannot fail but is checked all the same.
        outcome = this.#dispatch(heldDatagram(dg, now, item), conn, decodeMessage(item.bytes));
      } catch (error) {
        if (!(error instanceof DecodeError)) throw error;
        outcome = drop("bad_payload", `held ordered message: ${error.message}`);
      }
      if (outcome !== undefined && outcome !== "duplicate" && outcome !== "deferred") {
        this.#core.emit({
          type: "dropped",
          from: item.from,
          reason: outcome.reason,
          detail: outcome.detail,
          afterDisconnect: false,
        });
      }
    }
  }

  /** A `Retransmit` from the remote: resend what it asks for, say what is gone, skip what it gave up. */
  onRetransmit(dg: Datagram, conn: Conn | undefined, msg: Message): Drop | undefined {
    const now = dg.now;
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
    if (asked.length > 0) this.#core.stats.nacksReceived++;
    for (const seq of lists.sequence_numbers ?? []) this.resendAsked(now, conn, conn.outbox.bySeq(seq));
    const gone: number[] = [];
    const goneOrd: number[] = [];
    for (const rel of lists.reliable ?? []) {
      const pending = conn.outbox.byRel(rel);
      if (pending) {
        this.resendAsked(now, conn, pending);
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
      extras(conn).goneQuietUntil = now + this.#core.rtoOf(conn);
      this.#send.sendPlain(now, conn, "Retransmit", { gone, gone_ord: goneOrd });
    }
    if (lists.gone || lists.gone_ord) {
      for (const rel of lists.gone ?? []) x?.missing?.delete(rel);
      if (x?.missing?.size === 0) x.nackAt = Infinity;
      const inbox = x?.ordered;
      if (inbox) { for (const ord of lists.gone_ord ?? []) this.dispatchHeld(now, inbox.skip(now, ord), dg); }
    }
    return undefined;
  }

  /**
   * Resends a message a `Retransmit` asked for, at most once per smoothed RTT (or half a timeout before the
   * first sample) however often it is asked for, so requests cannot multiply traffic.
   */
  resendAsked(now: number, conn: Conn, pending: Pending | undefined): void {
    if (!pending) return;
    const spacing = conn.rttSamples > 0 ? Math.max(1, conn.srtt) : this.#core.rtoOf(conn) / 2;
    // Also not before the copy in flight had a round trip to be acknowledged: asked too early, it is late,
    // not lost.
    if (now - pending.askedAt < spacing || now - pending.lastSentAt < spacing) return;
    pending.askedAt = now;
    pending.lastSentAt = now;
    pending.nextAt = Math.min(Math.max(pending.nextAt, now + this.#core.rtoOf(conn)), pending.giveUpAt);
    this.#core.stats.nackResends++;
    this.#send.resend(conn, pending.bytes, pending.type);
  }

  /** Gap reports, reassembly expiry and ordered-delivery gaps that outlived the delivery deadline. */
  runExtraTimers(now: number, conn: Conn, x: ConnExtras): void {
    const lifetime = this.#core.deliveryMs;
    if (x.nackAt <= now) {
      x.nackAt = Infinity;
      const missing = x.missing;
      if (missing) {
        const ask: number[] = [];
        for (const [rel, since] of missing) {
          if (now - since >= lifetime || conn.relWindow?.has(rel)) missing.delete(rel);
          else if (ask.length < MAX_RETRANSMIT_REQUEST) ask.push(rel);
        }
        if (ask.length > 0) {
          this.#core.stats.nacksSent++;
          this.#send.sendPlain(now, conn, "Retransmit", { reliable: ask });
        }
        if (missing.size > 0) x.nackAt = now + this.#core.rtoOf(conn);
        else x.missing = null;
      }
    }
    if (x.reassembly && x.reassembly.nextExpiry(lifetime) <= now) {
      this.#core.stats.reassemblyExpired += x.reassembly.expire(now, lifetime);
    }
    if (x.ordered && x.ordered.stalledSince + lifetime <= now) {
      this.dispatchHeld(now, x.ordered.expire(now, lifetime), null);
    }
  }

  rememberGone(conn: Conn, rel: number, ord: number): void {
    const gone = extras(conn).goneOrdered ??= new Map();
    if (gone.size >= GONE_REMEMBERED) gone.delete(gone.keys().next().value!);
    gone.set(rel, ord);
  }
}

/**
 * The context a held message is handled in: the releasing datagram's when it came from the same address
 * (its reply budget is shared), else a fresh one with nothing to spend (a timer, or a peer that moved).
 */
function heldDatagram(dg: Datagram | null, now: number, item: HeldMessage): Datagram {
  if (dg !== null && dg.key === item.key) return dg;
  return {
    now,
    from: item.from,
    key: item.key,
    size: dg?.size ?? 0,
    budget: 0,
    summed: dg?.summed ?? false,
    cookieOk: false,
  };
}
