/**
 * The send side of reliable delivery: the outbox of reliable messages awaiting their Ack (bounded by the
 * send window) and the send queue behind it. Pure: no I/O, no clock, no randomness.
 *
 * @module
 */
import type { FragmentRef, Json, MessageType } from "../wire/mod.ts";
import { RECEIVE_WINDOW } from "./window.ts";

/** A reliable message waiting for its Ack. */
export interface Pending {
  /** The message's id (what `ack_for` names). */
  id: string;
  /** The message's sequence number. */
  seq: number;
  /** Its number in the sender's reliable stream (`rel`). */
  rel: number;
  /** The message's type. */
  type: MessageType;
  /** The encoded datagram, resent as is. */
  bytes: Uint8Array;
  /** When it was first sent. */
  firstSentAt: number;
  /** When it was last sent (a first send, a timed resend or a resend asked for by `Retransmit`). */
  lastSentAt: number;
  /** When a `Retransmit` last had it resent (ms), or `-Infinity`. */
  askedAt: number;
  /** How many times it was sent on a timer (the first send included); drives the backoff. */
  tries: number;
  /** When the current wait ends (resend or give up). */
  nextAt: number;
  /** When it is given up at the latest (`Infinity` under a count-based schedule). */
  giveUpAt: number;
  /** The waits after each try under a count-based schedule; `null` for adaptive timing. */
  schedule: readonly number[] | null;
  /** For a fragment: the id of the whole message it belongs to. */
  parent: string | null;
  /** The ordered-delivery number the message (or its whole message) carries, or null. */
  ord: number | null;
}

const NO_PENDING: ReadonlyMap<string, Pending> = new Map();

/** The most reliable datagrams one peer may have waiting for an Ack at once; the rest wait in the queue. */
export const SEND_WINDOW = 64;

/**
 * How far (in `rel` numbers) the newest datagram in flight may run ahead of the oldest unacknowledged one,
 * so that every retransmission still falls inside the receiver's duplicate window.
 */
export const MAX_REL_SPAN = RECEIVE_WINDOW / 2;

/**
 * Reliable messages sent to one peer and not yet acknowledged. At most {@linkcode SEND_WINDOW} at once, so
 * lookups by scan are cheap.
 */
export class Outbox {
  // Allocated while messages wait, released when none do: an idle peer costs no Map.
  #map: Map<string, Pending> | null = null;

  get #byId(): ReadonlyMap<string, Pending> {
    return this.#map ?? NO_PENDING;
  }

  /** Number of messages waiting. */
  get size(): number {
    return this.#byId.size;
  }

  /** Whether the window has room for another datagram whose `rel` number would be `nextRel`. */
  hasRoom(nextRel: number): boolean {
    const map = this.#map;
    if (!map) return true;
    if (map.size >= SEND_WINDOW) return false;
    for (const p of map.values()) if (((nextRel - p.rel) | 0) >= MAX_REL_SPAN) return false;
    return true;
  }

  /** Records a message that was just sent for the first time. */
  add(pending: Pending): void {
    if (this === EMPTY_OUTBOX) throw new Error("Cannot add to the shared empty outbox: use outboxOf(conn)");
    (this.#map ??= new Map()).set(pending.id, pending);
  }

  /** Removes a message (acknowledged, settled, given up or cancelled). */
  remove(id: string): void {
    const map = this.#map;
    if (!map) return;
    map.delete(id);
    if (map.size === 0) this.#map = null;
  }

  /** Removes and returns the message an Ack names, by message id (string) or sequence number. */
  acknowledge(ackFor: string | number): Pending | undefined {
    const pending = typeof ackFor === "string" ? this.#byId.get(ackFor.toLowerCase()) : this.bySeq(ackFor);
    if (pending) this.remove(pending.id);
    return pending;
  }

  /** Removes and returns the first waiting message of a type (a reply proved it arrived). */
  settleType(type: MessageType): Pending | undefined {
    const pending = this.findType(type);
    if (pending) this.remove(pending.id);
    return pending;
  }

  /** The first waiting message of a type, left in place. */
  findType(type: MessageType): Pending | undefined {
    for (const pending of this.#byId.values()) if (pending.type === type) return pending;
    return undefined;
  }

  /** The waiting message with sequence number `seq`, if still held. */
  bySeq(seq: number): Pending | undefined {
    for (const pending of this.#byId.values()) if (pending.seq === seq) return pending;
    return undefined;
  }

  /** The waiting message with reliable-stream number `rel`, if still held. */
  byRel(rel: number): Pending | undefined {
    for (const pending of this.#byId.values()) if (pending.rel === rel) return pending;
    return undefined;
  }

  /** Every waiting fragment of the whole message `parent`. */
  byParent(parent: string): Pending[] {
    const out: Pending[] = [];
    for (const pending of this.#byId.values()) if (pending.parent === parent) out.push(pending);
    return out;
  }

  /** The earliest resend or give-up time, or `Infinity`. */
  nextDeadline(): number {
    let min = Infinity;
    for (const pending of this.#byId.values()) if (pending.nextAt < min) min = pending.nextAt;
    return min;
  }

  /** The messages whose wait has ended at `now` (left in place; the caller resends or gives up). */
  due(now: number): Pending[] {
    const out: Pending[] = [];
    for (const pending of this.#byId.values()) if (pending.nextAt <= now) out.push(pending);
    return out;
  }

  /** Removes and returns everything. */
  drain(): Pending[] {
    const all = [...this.#byId.values()];
    this.#map = null;
    return all;
  }
}

/**
 * The outbox of every connection with nothing waiting for an Ack, shared: an idle peer holds no outbox of
 * its own. Reading it is always empty; adding to it throws (`outboxOf` in peers.ts gives a connection its
 * own first).
 */
export const EMPTY_OUTBOX: Outbox = new Outbox();

/** A reliable message accepted for sending but waiting for room in the window. */
export interface Queued {
  /** Message id (already reported to the caller). */
  id: string;
  /** Message type. */
  type: MessageType;
  /** Payload (for a fragment: its base64 chunk). */
  payload: Json;
  /** Ordered-delivery number carried on the wire, or null. */
  ord: number | null;
  /** Fragment reference carried on the wire, or null. */
  frag: FragmentRef | null;
  /** The ord number of the whole message a fragment belongs to (bookkeeping only). */
  parentOrd: number | null;
  /** A count-based schedule, or null for adaptive timing. */
  schedule: readonly number[] | null;
  /** Give-up deadline measured from the first send (ms). */
  deadlineMs: number;
  /** Approximate size in bytes, for the queue bound. */
  size: number;
}

/** Least number of messages one peer's send queue holds (the endpoint raises it for large messages). */
export const MAX_QUEUED_PER_PEER = 8192;

/** Least number of bytes one peer's send queue holds (the endpoint raises it for large messages). */
export const MAX_QUEUED_BYTES_PER_PEER = 6 * 1_048_576;

/** FIFO of reliable messages waiting for window room. */
export class SendQueue {
  #items: Queued[] = [];
  #head = 0;
  readonly #maxItems: number;
  readonly #maxBytes: number;
  /** Bytes waiting. */
  bytes = 0;

  /**
   * @param maxItems Most messages waiting. @default {MAX_QUEUED_PER_PEER}
   * @param maxBytes Most bytes waiting. @default {MAX_QUEUED_BYTES_PER_PEER}
   */
  constructor(maxItems: number = MAX_QUEUED_PER_PEER, maxBytes: number = MAX_QUEUED_BYTES_PER_PEER) {
    this.#maxItems = maxItems;
    this.#maxBytes = maxBytes;
  }

  /** Messages waiting. */
  get size(): number {
    return this.#items.length - this.#head;
  }

  /** Whether `count` more messages of `bytes` in total fit. */
  fits(count: number, bytes: number): boolean {
    return this.size + count <= this.#maxItems && this.bytes + bytes <= this.#maxBytes;
  }

  /** Appends a message. */
  push(item: Queued): void {
    this.#items.push(item);
    this.bytes += item.size;
  }

  /** The oldest message, left in place. */
  peek(): Queued | undefined {
    return this.#items[this.#head];
  }

  /** Removes and returns the oldest message. */
  shift(): Queued | undefined {
    const item = this.#items[this.#head];
    if (!item) return undefined;
    this.#items[this.#head++] = undefined as unknown as Queued;
    this.bytes -= item.size;
    if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return item;
  }

  /** Removes every message `drop` selects; returns them. */
  removeWhere(drop: (item: Queued) => boolean): Queued[] {
    const kept: Queued[] = [];
    const removed: Queued[] = [];
    for (let i = this.#head; i < this.#items.length; i++) {
      const item = this.#items[i]!;
      (drop(item) ? removed : kept).push(item);
    }
    this.#items = kept;
    this.#head = 0;
    for (const item of removed) this.bytes -= item.size;
    return removed;
  }
}
