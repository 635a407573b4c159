/**
 * The data structures of reliable delivery, driven by the endpoint with `now`: a per-peer receive window for
 * duplicate suppression and gap detection (u32 numbers with wrap-around), an RTT estimator (RFC 6298 gains),
 * the outbox of reliable messages awaiting their Ack, the send queue behind it, fragment reassembly and the
 * ordered-delivery buffer. Pure: no I/O, no clock, no randomness.
 *
 * @module
 */
import type { FragmentRef, Json, MessageType } from "./protocol.ts";

/** How many sequence numbers below the highest seen are remembered for duplicate detection. */
export const RECEIVE_WINDOW = 1024;

/**
 * Remembers which reliable sequence numbers of one peer were already processed. Sequence numbers are u32
 * and compared with serial-number arithmetic (RFC 1982), so the window survives wrap-around. A number more
 * than {@linkcode RECEIVE_WINDOW} below the highest seen counts as a duplicate. Memory: 128 bytes of bitmap, allocated on the second reliable message.
 *
 * @example
 * ```ts
 * import { ReceiveWindow } from "./reliability.ts";
 * const w = new ReceiveWindow();
 * if (!w.accept(0xffffffff) || !w.accept(0) || w.accept(0xffffffff)) throw new Error("wrap-around broken");
 * ```
 */
export class ReceiveWindow {
  #highest = -1;
  // Allocated on the second reliable message: a peer that only handshook costs no bitmap.
  #bits: Uint32Array | null = null;

  /** Returns true when `seq` is new (and records it), false for a duplicate. */
  accept(seq: number): boolean {
    if (this.#highest < 0) {
      this.#highest = seq;
      return true;
    }
    if (!this.#bits) {
      this.#bits = new Uint32Array(RECEIVE_WINDOW / 32);
      this.#set(this.#highest);
    }
    const distance = (seq - this.#highest) | 0;
    if (distance > 0) {
      if (distance >= RECEIVE_WINDOW) this.#bits.fill(0);
      else for (let d = 1; d <= distance; d++) this.#clear((this.#highest + d) >>> 0);
      this.#highest = seq;
      this.#set(seq);
      return true;
    }
    if (distance === 0 || -distance >= RECEIVE_WINDOW) return false;
    if (this.#has(seq)) return false;
    this.#set(seq);
    return true;
  }

  /** The highest number accepted so far, or -1 before the first. */
  get highest(): number {
    return this.#highest;
  }

  /** Whether {@linkcode accept} would take `seq` as new (without recording it). */
  isNew(seq: number): boolean {
    if (this.#highest < 0) return true;
    const distance = (seq - this.#highest) | 0;
    if (distance > 0) return true;
    if (distance === 0 || -distance >= RECEIVE_WINDOW) return false;
    return this.#bits === null || !this.#has(seq);
  }

  /** Whether `seq` was accepted (numbers outside the window count as not accepted). */
  has(seq: number): boolean {
    if (this.#highest < 0) return false;
    const distance = (seq - this.#highest) | 0;
    if (distance > 0 || -distance >= RECEIVE_WINDOW) return false;
    if (distance === 0) return true;
    return this.#bits !== null && this.#has(seq);
  }

  /** Forgets everything (the peer started a new session). */
  reset(): void {
    this.#highest = -1;
    this.#bits = null;
  }

  #set(seq: number): void {
    const i = seq & (RECEIVE_WINDOW - 1);
    this.#bits![i >>> 5]! |= 1 << (i & 31);
  }

  #clear(seq: number): void {
    const i = seq & (RECEIVE_WINDOW - 1);
    this.#bits![i >>> 5]! &= ~(1 << (i & 31));
  }

  #has(seq: number): boolean {
    const i = seq & (RECEIVE_WINDOW - 1);
    return (this.#bits![i >>> 5]! & (1 << (i & 31))) !== 0;
  }
}

/** Clock granularity added to the variance term of the retransmission timeout (ms), as RFC 6298's G. */
export const RTT_GRANULARITY_MS = 1;

/** Bounds of the retransmission timeout. */
export interface RtoBounds {
  /** The timeout before any RTT sample (ms). */
  initialMs: number;
  /** Floor (ms). */
  minMs: number;
  /** Ceiling (ms); also caps every backed-off wait. */
  maxMs: number;
}

/**
 * Smoothed round-trip time and its variance for one path (RFC 6298 / RFC 9002: gains 1/8 and 1/4). Samples
 * come only from messages acknowledged after their first send (Karn's rule: a retransmitted message's Ack is
 * ambiguous).
 *
 * @example
 * ```ts
 * import { RttEstimator } from "./reliability.ts";
 * const rtt = new RttEstimator();
 * rtt.sample(100);
 * if (rtt.rto({ initialMs: 500, minMs: 10, maxMs: 2000 }) !== 300) throw new Error("100 + 4 * 50");
 * ```
 */
export class RttEstimator {
  /** Smoothed RTT (ms); 0 before the first sample. */
  srtt = 0;
  /** RTT variance (ms). */
  rttvar = 0;
  /** Samples taken. */
  samples = 0;

  /** Takes one RTT sample (ms). */
  sample(ms: number): void {
    if (this.samples === 0) {
      this.srtt = ms;
      this.rttvar = ms / 2;
    } else {
      this.rttvar = 0.75 * this.rttvar + 0.25 * Math.abs(this.srtt - ms);
      this.srtt = 0.875 * this.srtt + 0.125 * ms;
    }
    this.samples++;
  }

  /** The retransmission timeout: `srtt + max(G, 4 * rttvar)` clamped to the bounds, or the initial value. */
  rto(bounds: RtoBounds): number {
    const raw = this.samples === 0
      ? bounds.initialMs
      : this.srtt + Math.max(RTT_GRANULARITY_MS, 4 * this.rttvar);
    return Math.min(bounds.maxMs, Math.max(bounds.minMs, raw));
  }
}

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

/** A shared byte budget (the endpoint-wide bound of reassembly buffers). */
export interface Budget {
  /** Bytes in use. */
  used: number;
  /** Bytes allowed. */
  limit: number;
}

/** Most whole messages one peer may have in reassembly at once. */
export const MAX_PARTIAL_PER_PEER = 4;

interface Partial {
  n: number;
  got: number;
  parts: (Uint8Array | undefined)[];
  bytes: number;
  startedAt: number;
}

/** What {@linkcode Reassembler.add} did with a fragment. */
export type FragmentOutcome =
  | { status: "stored" }
  | { status: "duplicate" }
  | { status: "complete"; bytes: Uint8Array }
  | { status: "rejected"; detail: string };

/**
 * Reassembly of one peer's fragmented messages: bounded in whole messages per peer, in bytes per peer and
 * (through a shared {@linkcode Budget}) in bytes across all peers; partial messages expire.
 */
export class Reassembler {
  readonly #partial = new Map<string, Partial>();
  readonly #completed: string[] = [];
  #bytes = 0;

  /** Partial messages held. */
  get size(): number {
    return this.#partial.size;
  }

  /** Bytes held. */
  get bytes(): number {
    return this.#bytes;
  }

  /**
   * Checks whether a fragment can be stored, without storing it (so a refused fragment is not acknowledged
   * and the sender tries again later). `maxBytes` bounds one whole message and, twice over, the peer's total.
   */
  admit(ref: FragmentRef, size: number, maxBytes: number, budget: Budget): string | undefined {
    if (this.#completed.includes(ref.of)) return undefined;
    const partial = this.#partial.get(ref.of);
    if (partial) {
      if (partial.n !== ref.n) return `fragment count ${ref.n} differs from ${partial.n}`;
      if (partial.parts[ref.i]) return undefined;
    } else if (this.#partial.size >= MAX_PARTIAL_PER_PEER) {
      return `${MAX_PARTIAL_PER_PEER} messages are already in reassembly`;
    }
    if ((partial?.bytes ?? 0) + size > maxBytes) return `the message would exceed ${maxBytes} bytes`;
    if (this.#bytes + size > 2 * maxBytes) return "the peer's reassembly buffer is full";
    if (budget.used + size > budget.limit) return "the reassembly buffers are full";
    return undefined;
  }

  /** Stores an admitted fragment; returns the whole message once every fragment is in. */
  add(now: number, ref: FragmentRef, chunk: Uint8Array, budget: Budget): FragmentOutcome {
    if (this.#completed.includes(ref.of)) return { status: "duplicate" };
    let partial = this.#partial.get(ref.of);
    if (!partial) {
      partial = { n: ref.n, got: 0, parts: new Array(ref.n), bytes: 0, startedAt: now };
      this.#partial.set(ref.of, partial);
    }
    if (partial.parts[ref.i]) return { status: "duplicate" };
    partial.parts[ref.i] = chunk;
    partial.got++;
    partial.bytes += chunk.length;
    this.#bytes += chunk.length;
    budget.used += chunk.length;
    if (partial.got < partial.n) return { status: "stored" };
    this.#release(ref.of, partial, budget);
    this.#completed.push(ref.of);
    if (this.#completed.length > 64) this.#completed.shift();
    const whole = new Uint8Array(partial.bytes);
    let at = 0;
    for (const part of partial.parts) {
      whole.set(part!, at);
      at += part!.length;
    }
    return { status: "complete", bytes: whole };
  }

  /** When the oldest partial message expires, given its lifetime (ms); `Infinity` when none is held. */
  nextExpiry(lifetimeMs: number): number {
    let min = Infinity;
    for (const p of this.#partial.values()) {
      if (p.startedAt + lifetimeMs < min) min = p.startedAt + lifetimeMs;
    }
    return min;
  }

  /** Discards partial messages older than `lifetimeMs`; returns how many. */
  expire(now: number, lifetimeMs: number, budget: Budget): number {
    let expired = 0;
    for (const [id, p] of this.#partial) {
      if (p.startedAt + lifetimeMs > now) continue;
      this.#release(id, p, budget);
      expired++;
    }
    return expired;
  }

  /** Discards everything (the peer left or started a new session). */
  clear(budget: Budget): void {
    for (const [id, p] of this.#partial) this.#release(id, p, budget);
    this.#completed.length = 0;
  }

  #release(id: string, p: Partial, budget: Budget): void {
    this.#partial.delete(id);
    this.#bytes -= p.bytes;
    budget.used -= p.bytes;
  }
}

/** Most messages held back per sender while an earlier ordered message is missing. */
export const MAX_ORDERED_HELD = 256;

/** What {@linkcode OrderedInbox.offer} decided. */
export type OrderedOutcome<T> = { status: "deliver"; items: T[] } | { status: "held" } | { status: "full" };

/**
 * Ordered delivery of one sender's ordered messages: numbers `ord` from 1 per session, delivered in order;
 * later ones wait (bounded) until the gap is filled, the sender says it gave the missing one up, or the
 * gap outlives the delivery deadline.
 */
export class OrderedInbox<T> {
  /** The next number to deliver. */
  expected = 1;
  /** When the current gap was first seen (ms), or `Infinity` without a gap. */
  stalledSince = Infinity;
  // A held message, or null for a number the sender gave up on.
  readonly #held = new Map<number, T | null>();

  /** Messages held. */
  get held(): number {
    return this.#held.size;
  }

  /** Whether a message numbered `ord` could not be held now (checked before it is acknowledged). */
  wouldOverflow(ord: number): boolean {
    return ((ord - this.expected) | 0) > 0 && this.#held.size >= MAX_ORDERED_HELD;
  }

  /** Offers a message; returns what is now deliverable, in order. */
  offer(now: number, ord: number, item: T): OrderedOutcome<T> {
    const distance = (ord - this.expected) | 0;
    if (distance < 0) {
      // Below the expected number and yet new (the duplicate window said so): a message this inbox already
      // skipped (given up, or waited for past the deadline) arrived after all. Late beats never: deliver it.
      return { status: "deliver", items: [item] };
    }
    if (distance > 0) {
      if (this.#held.size >= MAX_ORDERED_HELD) return { status: "full" };
      this.#held.set(ord, item);
      if (this.stalledSince === Infinity) this.stalledSince = now;
      return { status: "held" };
    }
    const items = [item];
    this.expected = (this.expected + 1) >>> 0;
    this.#flush(now, items);
    return { status: "deliver", items };
  }

  /** The sender gave `ord` up: skip it. Returns what became deliverable. */
  skip(now: number, ord: number): T[] {
    const distance = (ord - this.expected) | 0;
    const items: T[] = [];
    if (distance < 0) return items;
    if (distance > 0) {
      // A message already held under that number arrived after all: keep it.
      if (!this.#held.has(ord) && this.#held.size < MAX_ORDERED_HELD) this.#held.set(ord, null);
      return items;
    }
    this.expected = (this.expected + 1) >>> 0;
    this.#flush(now, items);
    return items;
  }

  /** Gives up on the gap when it is older than `lifetimeMs`: skips to the lowest held number. */
  expire(now: number, lifetimeMs: number): T[] {
    const items: T[] = [];
    if (this.stalledSince + lifetimeMs > now || this.#held.size === 0) return items;
    let lowest = -1;
    for (const ord of this.#held.keys()) {
      if (lowest < 0 || ((ord - lowest) | 0) < 0) lowest = ord;
    }
    this.expected = lowest;
    this.#flush(now, items);
    return items;
  }

  /** Forgets everything (a new session). */
  reset(): void {
    this.#held.clear();
    this.expected = 1;
    this.stalledSince = Infinity;
  }

  #flush(now: number, items: T[]): void {
    for (;;) {
      if (!this.#held.has(this.expected)) break;
      const item = this.#held.get(this.expected)!;
      this.#held.delete(this.expected);
      if (item !== null) items.push(item);
      this.expected = (this.expected + 1) >>> 0;
    }
    this.stalledSince = this.#held.size === 0 ? Infinity : now;
  }
}
