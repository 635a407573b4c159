/**
 * Fragment reassembly: the partial messages of one sender, bounded per sender and by a byte budget shared
 * by the whole endpoint. Pure: no I/O, no clock, no randomness.
 *
 * @module
 */
import type { FragmentRef } from "../wire/mod.ts";

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
