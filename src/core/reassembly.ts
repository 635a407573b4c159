/**
 * Fragment reassembly: the partial messages of one sender, bounded per sender and by a byte budget shared
 * by the whole endpoint. Pure: no I/O, no clock, no randomness.
 *
 * What is counted is what is held: every stored chunk with its bookkeeping ({@linkcode FRAGMENT_COST}) and
 * every partial message's record ({@linkcode PARTIAL_COST}). Storage grows with the fragments that arrived,
 * never with the count a fragment declares. Chunks are kept as the base64 text they came in (a string costs
 * about its length; a small `Uint8Array` close to a kilobyte) and decoded into the whole message at the end.
 *
 * @module
 */
import type { FragmentRef } from "../wire/mod.ts";

/** A shared byte budget (the endpoint-wide bound of reassembly buffers and ordered messages held). */
export interface Budget {
  /** Bytes in use. */
  used: number;
  /** Bytes allowed. */
  limit: number;
}

/** Most whole messages one peer may have in reassembly at once. */
export const MAX_PARTIAL_PER_PEER = 4;

/**
 * Bytes counted for each stored fragment on top of its chunk's bytes: its base64 text (4/3 of the bytes,
 * plus a string header) and its map entry. About 100 bytes were measured for a 1-byte chunk (see
 * docs/security.md); counted generously.
 */
export const FRAGMENT_COST = 256;

/** Bytes counted for each partial message: its record and its map of fragments. */
export const PARTIAL_COST = 512;

/** The bounds a {@linkcode Reassembler} keeps. */
export interface ReassemblyBounds {
  /** Largest whole message (bytes of its encoding). */
  messageBytes: number;
  /** Most bytes one peer may have in reassembly, counted with {@linkcode FRAGMENT_COST} and {@linkcode PARTIAL_COST}. */
  peerBytes: number;
  /** The budget shared by every peer. */
  budget: Budget;
}

interface Partial {
  n: number;
  /** The chunks received, as their base64 text. */
  parts: Map<number, string>;
  /** Bytes of the message held (chunks only). */
  bytes: number;
  /** What is counted for it against the bounds. */
  cost: number;
  /** The length every fragment but the last has, once one arrived; 0 before. */
  chunk: number;
  /** The last fragment's length, once it arrived; 0 before. */
  tail: number;
  startedAt: number;
}

/** What {@linkcode Reassembler.add} did with a fragment. */
export type FragmentOutcome =
  | { status: "stored" }
  | { status: "duplicate" }
  | { status: "complete"; bytes: Uint8Array }
  | { status: "rejected"; detail: string };

/**
 * The smallest whole message that `n` fragments imply when fragment `i` is `size` bytes: the sender cuts
 * the message into equal chunks, the last one no longer than the others (docs/protocol.md, Fragments).
 */
export function impliedSize(ref: FragmentRef, size: number): number {
  return ref.i === ref.n - 1 ? ref.n * size : (ref.n - 1) * size + 1;
}

/**
 * Reassembly of one peer's fragmented messages: bounded in whole messages per peer, in bytes per peer and
 * (through a shared {@linkcode Budget}) in bytes across all peers; partial messages expire.
 */
export class Reassembler {
  readonly #partial = new Map<string, Partial>();
  readonly #completed: string[] = [];
  readonly #bounds: ReassemblyBounds;
  #cost = 0;

  /** @param bounds What one message, this peer and all peers together may hold. */
  constructor(bounds: ReassemblyBounds) {
    this.#bounds = bounds;
  }

  /** Partial messages held. */
  get size(): number {
    return this.#partial.size;
  }

  /** Bytes counted for what is held (chunks and bookkeeping). */
  get bytes(): number {
    return this.#cost;
  }

  /**
   * Checks whether a fragment of `size` bytes can be stored, without storing it (so a refused fragment is
   * not acknowledged and the sender tries again later). Returns why not, or `undefined`.
   */
  admit(ref: FragmentRef, size: number): string | undefined {
    if (this.#completed.includes(ref.of)) return undefined;
    const { messageBytes, peerBytes, budget } = this.#bounds;
    if (size === 0) return "the fragment is empty";
    if (impliedSize(ref, size) > messageBytes) {
      return `${ref.n} fragments with fragment ${ref.i} of ${size} bytes exceed ${messageBytes} bytes`;
    }
    const partial = this.#partial.get(ref.of);
    const last = ref.i === ref.n - 1;
    if (partial) {
      if (partial.n !== ref.n) return `fragment count ${ref.n} differs from ${partial.n}`;
      if (partial.parts.has(ref.i)) return undefined;
      if (!last && partial.chunk !== 0 && size !== partial.chunk) {
        return `fragment of ${size} bytes where the others have ${partial.chunk}`;
      }
      const chunk = last ? partial.chunk : size;
      const tail = last ? size : partial.tail;
      if (chunk !== 0 && tail > chunk) {
        return `last fragment of ${tail} bytes is longer than the others (${chunk})`;
      }
      if (partial.bytes + size > messageBytes) return `the message would exceed ${messageBytes} bytes`;
    } else if (this.#partial.size >= MAX_PARTIAL_PER_PEER) {
      return `${MAX_PARTIAL_PER_PEER} messages are already in reassembly`;
    }
    const cost = size + FRAGMENT_COST + (partial ? 0 : PARTIAL_COST);
    if (this.#cost + cost > peerBytes) return "the peer's reassembly buffer is full";
    if (budget.used + cost > budget.limit) return "the reassembly buffers are full";
    return undefined;
  }

  /**
   * Stores an admitted fragment, its chunk given as base64 `text` of `size` bytes (checked by the caller);
   * returns the whole message once every fragment is in.
   */
  add(now: number, ref: FragmentRef, text: string, size: number): FragmentOutcome {
    if (this.#completed.includes(ref.of)) return { status: "duplicate" };
    let partial = this.#partial.get(ref.of);
    let cost = size + FRAGMENT_COST;
    if (!partial) {
      partial = { n: ref.n, parts: new Map(), bytes: 0, cost: 0, chunk: 0, tail: 0, startedAt: now };
      this.#partial.set(ref.of, partial);
      cost += PARTIAL_COST;
    }
    if (partial.parts.has(ref.i)) return { status: "duplicate" };
    partial.parts.set(ref.i, text);
    if (ref.i === ref.n - 1) partial.tail = size;
    else partial.chunk = size;
    partial.bytes += size;
    partial.cost += cost;
    this.#cost += cost;
    this.#bounds.budget.used += cost;
    if (partial.parts.size < partial.n) return { status: "stored" };
    this.#release(ref.of, partial);
    this.#completed.push(ref.of);
    if (this.#completed.length > 64) this.#completed.shift();
    const whole = new Uint8Array(partial.bytes);
    let at = 0;
    for (let i = 0; i < partial.n; i++) at += whole.subarray(at).setFromBase64(partial.parts.get(i)!).written;
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
  expire(now: number, lifetimeMs: number): number {
    let expired = 0;
    for (const [id, p] of this.#partial) {
      if (p.startedAt + lifetimeMs > now) continue;
      this.#release(id, p);
      expired++;
    }
    return expired;
  }

  /** Discards everything (the peer left or started a new session). */
  clear(): void {
    for (const [id, p] of this.#partial) this.#release(id, p);
    this.#completed.length = 0;
  }

  #release(id: string, p: Partial): void {
    this.#partial.delete(id);
    this.#cost -= p.cost;
    this.#bounds.budget.used -= p.cost;
  }
}
