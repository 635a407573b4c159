/**
 * Reliability at the spec's level: a per-peer receive window for duplicate suppression (u32 sequence numbers
 * with wrap-around), and an outbox of reliable messages awaiting their Ack, retransmitted on a schedule and
 * given up after the last wait. Pure data structures; the endpoint drives them with `now`.
 *
 * @module
 */
import type { MessageType } from "./protocol.ts";

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

/** A reliable message waiting for its Ack. */
export interface Pending {
  /** The message's id (what `ack_for` names). */
  id: string;
  /** The message's sequence number. */
  seq: number;
  /** The message's type. */
  type: MessageType;
  /** The encoded datagram, resent as is. */
  bytes: Uint8Array;
  /** When it was first sent. */
  firstSentAt: number;
  /** How many times it has been sent. */
  tries: number;
  /** When the current wait ends (resend or give up). */
  nextAt: number;
  /** The waits after each try. */
  schedule: readonly number[];
}

const NO_PENDING: ReadonlyMap<string, Pending> = new Map();

/** The most reliable messages one peer may have waiting for an Ack at once. */
export const MAX_PENDING_PER_PEER = 256;

/** What {@linkcode Outbox.poll} decided for one due message. */
export type Due = { action: "resend"; pending: Pending } | { action: "give_up"; pending: Pending };

/**
 * Reliable messages sent to one peer and not yet acknowledged. Sizes are small (a handful per peer), so the
 * earliest deadline is found by a scan.
 */
export class Outbox {
  // Allocated while messages wait, released when none do: an idle peer costs no Map.
  #map: Map<string, Pending> | null = null;

  get #byId(): ReadonlyMap<string, Pending> {
    return this.#map ?? NO_PENDING;
  }

  #delete(id: string): void {
    const map = this.#map;
    if (!map) return;
    map.delete(id);
    if (map.size === 0) this.#map = null;
  }

  /** Number of messages waiting. */
  get size(): number {
    return this.#byId.size;
  }

  /** Whether another message fits. */
  get full(): boolean {
    return this.#byId.size >= MAX_PENDING_PER_PEER;
  }

  /** Records a message that was just sent for the first time. */
  add(
    now: number,
    id: string,
    seq: number,
    type: MessageType,
    bytes: Uint8Array,
    schedule: readonly number[],
  ) {
    (this.#map ??= new Map()).set(id, {
      id,
      seq,
      type,
      bytes,
      firstSentAt: now,
      tries: 1,
      nextAt: now + (schedule[0] ?? 0),
      schedule,
    });
  }

  /** Removes and returns the message an Ack names, by message id (string) or sequence number. */
  acknowledge(ackFor: string | number): Pending | undefined {
    if (typeof ackFor === "string") {
      const pending = this.#byId.get(ackFor.toLowerCase());
      if (pending) this.#delete(pending.id);
      return pending;
    }
    for (const pending of this.#byId.values()) {
      if (pending.seq === ackFor) {
        this.#delete(pending.id);
        return pending;
      }
    }
    return undefined;
  }

  /** Removes and returns the first waiting message of a type (a reply proved it arrived). */
  settleType(type: MessageType): Pending | undefined {
    for (const pending of this.#byId.values()) {
      if (pending.type === type) {
        this.#delete(pending.id);
        return pending;
      }
    }
    return undefined;
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

  /** The earliest resend or give-up time, or `Infinity`. */
  nextDeadline(): number {
    let min = Infinity;
    for (const pending of this.#byId.values()) if (pending.nextAt < min) min = pending.nextAt;
    return min;
  }

  /**
   * Everything due at `now`: messages to resend (their try count and next wait already advanced) and
   * messages given up (already removed).
   */
  poll(now: number): Due[] {
    const due: Due[] = [];
    for (const pending of this.#byId.values()) {
      if (pending.nextAt > now) continue;
      if (pending.tries >= pending.schedule.length) {
        this.#delete(pending.id);
        due.push({ action: "give_up", pending });
      } else {
        pending.nextAt = now + pending.schedule[pending.tries]!;
        pending.tries++;
        due.push({ action: "resend", pending });
      }
    }
    return due;
  }

  /** Removes and returns everything. */
  drain(): Pending[] {
    const all = [...this.#byId.values()];
    this.#map = null;
    return all;
  }
}
