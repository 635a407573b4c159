/**
 * Ordered delivery of one sender's ordered messages, held (bounded in count and in bytes) behind a gap. Pure:
 * no I/O, no clock, no randomness.
 *
 * @module
 */
import type { Budget } from "./reassembly.ts";

/** Most messages held back per sender while an earlier ordered message is missing. */
export const MAX_ORDERED_HELD = 256;

/** Bytes counted for each held message on top of its encoding: its record, its bytes' object, its map entry. */
export const HELD_COST = 256;

/** The byte bounds an {@linkcode OrderedInbox} keeps. */
export interface OrderedBounds {
  /** Most bytes one sender may have held, each message counted as its size plus {@linkcode HELD_COST}. */
  peerBytes: number;
  /** The budget shared by every peer (the reassembly budget). */
  budget: Budget;
}

/** What {@linkcode OrderedInbox.offer} decided. */
export type OrderedOutcome<T> = { status: "deliver"; items: T[] } | { status: "held" } | { status: "full" };

/**
 * Ordered delivery of one sender's ordered messages: numbers `ord` from 1 per session, delivered in order;
 * later ones wait (bounded) until the gap is filled, the sender says it gave the missing one up, or the
 * gap outlives the delivery deadline.
 */
export class OrderedInbox<T> {
  readonly #bounds: OrderedBounds;
  /** The next number to deliver. */
  expected = 1;
  /** When the current gap was first seen (ms), or `Infinity` without a gap. */
  stalledSince = Infinity;
  // A held message and what it counts, or null for a number the sender gave up on.
  readonly #held = new Map<number, { item: T; cost: number } | null>();
  #cost = 0;

  /** @param bounds What this sender and all senders together may hold; without, only the count is bounded. */
  constructor(bounds: OrderedBounds = { peerBytes: Infinity, budget: { used: 0, limit: Infinity } }) {
    this.#bounds = bounds;
  }

  /** Messages held. */
  get held(): number {
    return this.#held.size;
  }

  /** Bytes counted for the messages held. */
  get bytes(): number {
    return this.#cost;
  }

  /**
   * Whether a message numbered `ord` of `size` bytes could not be held now (checked before it is
   * acknowledged).
   */
  wouldOverflow(ord: number, size = 0): boolean {
    return this.ahead(ord) && !this.#fits(size + HELD_COST);
  }

  /** Whether a message numbered `ord` would wait (an earlier one is missing). */
  ahead(ord: number): boolean {
    return ((ord - this.expected) | 0) > 0;
  }

  /** Offers a message of `size` bytes; returns what is now deliverable, in order. */
  offer(now: number, ord: number, item: T, size = 0): OrderedOutcome<T> {
    const distance = (ord - this.expected) | 0;
    if (distance < 0) {
      // Below the expected number and yet new (the duplicate window said so): a message this inbox already
      // skipped (given up, or waited for past the deadline) arrived after all. Late beats never: deliver it.
      return { status: "deliver", items: [item] };
    }
    if (distance > 0) {
      const cost = size + HELD_COST;
      if (!this.#fits(cost)) return { status: "full" };
      this.#held.set(ord, { item, cost });
      this.#cost += cost;
      this.#bounds.budget.used += cost;
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

  /** Forgets everything (a new session, or the connection's state is dropped). */
  reset(): void {
    this.#held.clear();
    this.#bounds.budget.used -= this.#cost;
    this.#cost = 0;
    this.expected = 1;
    this.stalledSince = Infinity;
  }

  #flush(now: number, items: T[]): void {
    for (;;) {
      if (!this.#held.has(this.expected)) break;
      const held = this.#held.get(this.expected)!;
      this.#held.delete(this.expected);
      if (held !== null) {
        items.push(held.item);
        this.#cost -= held.cost;
        this.#bounds.budget.used -= held.cost;
      }
      this.expected = (this.expected + 1) >>> 0;
    }
    this.stalledSince = this.#held.size === 0 ? Infinity : now;
  }

  #fits(cost: number): boolean {
    const { peerBytes, budget } = this.#bounds;
    return this.#held.size < MAX_ORDERED_HELD && this.#cost + cost <= peerBytes &&
      budget.used + cost <= budget.limit;
  }
}
