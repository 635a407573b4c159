/**
 * What became of one received datagram, as the rooms of the core report it to the coordinator, and the
 * context of the datagram being handled, passed down explicitly (never kept on an instance).
 *
 * @module
 */
import type { SocketAddr } from "../wire/mod.ts";
import type { DropReason } from "./stats.ts";

/** A datagram the core did not act on: the stats bucket and a detail for the `dropped` event. */
export interface Drop {
  /** The stats bucket. */
  reason: DropReason;
  /** Human-readable detail. */
  detail: string;
  /** The message was understood and refused with an Error reply: it is still acknowledged. */
  refused?: boolean;
  /** Counted without a `dropped` event. */
  quiet?: boolean;
}

/**
 * What became of one received datagram: processed (undefined), a duplicate, deferred (its Ack waits for
 * someone else's, as relayed Data end to end), or dropped.
 */
export type Outcome = Drop | "duplicate" | "deferred" | undefined;

/** A drop with an event. */
export function drop(reason: DropReason, detail: string): Drop {
  return { reason, detail };
}

/** A rate-limited datagram after decoding: counted, but without an event (a flood must stay cheap). */
export const QUIET_RATE_LIMITED: Drop = { reason: "rate_limited", detail: "", quiet: true };

/**
 * The context of one received datagram while the core handles it. Created by the coordinator for each
 * datagram and handed down to whatever answers it; stateless replies spend its byte budget.
 */
export interface Datagram {
  /** The time of the call (ms). */
  readonly now: number;
  /** The source address. */
  readonly from: SocketAddr;
  /** The source address as a key (`formatSocketAddr(from)`). */
  readonly key: string;
  /** The datagram's size in bytes. */
  readonly size: number;
  /** Bytes stateless replies to it may still use (3x its size, spent as they are sent). */
  budget: number;
  /** It carried a valid sum: stateless replies to it carry one too. */
  readonly summed: boolean;
  /** It is a HandshakeRequest with a valid cookie (set by admission). */
  cookieOk: boolean;
  /**
   * The number of the reliable request being handled (`rel:n` or `seq:n`), under which its unreliable answer
   * is kept for a repeat; null for anything else.
   */
  answerKey?: string | null;
  /** The node id a HandshakeRequest being handled claims, for the report of its refusal. */
  claimedId?: string | null;
}
