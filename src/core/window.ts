/**
 * Per-path receive state of reliable delivery, driven with `now`: the receive window for duplicate
 * suppression and gap detection (u32 numbers with wrap-around) and the RTT estimator (RFC 6298 gains).
 * Pure: no I/O, no clock, no randomness.
 *
 * @module
 */

export const RECEIVE_WINDOW = 1024;

/**
 * Remembers which reliable sequence numbers of one peer were already processed. Sequence numbers are u32
 * and compared with serial-number arithmetic (RFC 1982), so the window survives wrap-around. A number more
 * than {@linkcode RECEIVE_WINDOW} below the highest seen counts as a duplicate. Memory: 128 bytes of bitmap, allocated on the second reliable message.
 *
 * @example
 * ```ts
 * import { ReceiveWindow } from "./window.ts";
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

/**
 * A receive window shared by every connection in the same plain state (nothing seen, or one number and no
 * bitmap: a peer whose only reliable message was its HandshakeRequest), so an idle peer holds none of its
 * own. Reading it is reading that state; recording in it or resetting it throws: the connection takes a
 * copy first ({@linkcode ownWindow}).
 */
export class SharedWindow extends ReceiveWindow {
  readonly #sealed: boolean;

  /** @param first The one number seen, or null for none. */
  constructor(first: number | null) {
    super();
    if (first !== null) super.accept(first);
    this.#sealed = true;
  }

  /** Throws: a shared window is never written. */
  override accept(seq: number): boolean {
    if (this.#sealed) {
      throw new Error(`Cannot record ${seq} in a shared receive window: take ownWindow first`);
    }
    return super.accept(seq);
  }

  /** Throws: a shared window is never written. */
  override reset(): void {
    throw new Error("Cannot reset a shared receive window");
  }
}

/** The shared window that has seen nothing. */
export const EMPTY_WINDOW: SharedWindow = new SharedWindow(null);

/** Shared windows that saw one number, by that number (small ones only: those are what requests start at). */
const FIRST_SEEN: SharedWindow[] = [];
const MAX_SHARED_FIRST = 64;

/**
 * A window that has seen only `first` (shared when `first` is a small number, else a new one of its own):
 * the state of a fresh window after `accept(first)`.
 */
export function windowAfter(first: number): ReceiveWindow {
  if (Number.isInteger(first) && first >= 0 && first < MAX_SHARED_FIRST) {
    return FIRST_SEEN[first] ??= new SharedWindow(first);
  }
  const own = new ReceiveWindow();
  own.accept(first);
  return own;
}

/** `window` itself when it is a connection's own, else a new window of its own in the same state. */
export function ownWindow(window: ReceiveWindow): ReceiveWindow {
  if (!(window instanceof SharedWindow)) return window;
  const own = new ReceiveWindow();
  if (window.highest >= 0) own.accept(window.highest);
  return own;
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
 * import { RttEstimator } from "./window.ts";
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
    const rttvar = nextRttvar(this.srtt, this.rttvar, this.samples, ms);
    this.srtt = nextSrtt(this.srtt, this.samples, ms);
    this.rttvar = rttvar;
    this.samples++;
  }

  /** The retransmission timeout: `srtt + max(G, 4 * rttvar)` clamped to the bounds, or the initial value. */
  rto(bounds: RtoBounds): number {
    return rtoFrom(this.srtt, this.rttvar, this.samples, bounds);
  }
}

/** The smoothed RTT (ms) after a sample of `ms`, from the estimate before it (`samples` taken so far). */
export function nextSrtt(srtt: number, samples: number, ms: number): number {
  return samples === 0 ? ms : 0.875 * srtt + 0.125 * ms;
}

/** The RTT variance (ms) after a sample of `ms`, from the estimate before it (`samples` taken so far). */
export function nextRttvar(srtt: number, rttvar: number, samples: number, ms: number): number {
  return samples === 0 ? ms / 2 : 0.75 * rttvar + 0.25 * Math.abs(srtt - ms);
}

/** The retransmission timeout of an estimate: `srtt + max(G, 4 * rttvar)` clamped, or the initial value. */
export function rtoFrom(srtt: number, rttvar: number, samples: number, bounds: RtoBounds): number {
  const raw = samples === 0 ? bounds.initialMs : srtt + Math.max(RTT_GRANULARITY_MS, 4 * rttvar);
  return Math.min(bounds.maxMs, Math.max(bounds.minMs, raw));
}
