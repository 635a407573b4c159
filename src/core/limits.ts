/**
 * Rate limits for abuse resistance: token buckets per source IP (all datagrams, and handshakes apart), per
 * registered node, and for the whole endpoint, with optional temporary bans of IPs that keep exceeding their
 * limit. Pure: the endpoint passes `now`; memory is bounded by {@linkcode MAX_TRACKED_IPS}.
 *
 * @module
 */

/** A rate (tokens per second) and a burst (bucket size). */
export interface Rate {
  /** Tokens added per second. */
  perSecond: number;
  /** Most tokens held (how many may come at once). */
  burst: number;
}

/** A token bucket: `tokens` as of `at` (ms). */
export interface Bucket {
  /** Tokens left as of `at`. */
  tokens: number;
  /** When `tokens` was computed (ms). */
  at: number;
}

/** A full bucket as of `now`. */
export function fullBucket(rate: Rate, now: number): Bucket {
  return { tokens: rate.burst, at: now };
}

/**
 * Refills `bucket` for the time since it was last used and takes one token. Returns false (and takes
 * nothing) when the bucket is empty.
 *
 * @example
 * ```ts
 * import { fullBucket, take } from "./limits.ts";
 * const rate = { perSecond: 1, burst: 2 };
 * const b = fullBucket(rate, 0);
 * if (!take(b, rate, 0) || !take(b, rate, 0) || take(b, rate, 0) || !take(b, rate, 1000)) throw new Error();
 * ```
 */
export function take(bucket: Bucket, rate: Rate, now: number): boolean {
  const elapsed = now - bucket.at;
  if (elapsed > 0) {
    bucket.tokens = Math.min(rate.burst, bucket.tokens + (elapsed / 1000) * rate.perSecond);
    bucket.at = now;
  }
  if (bucket.tokens < 1) return false;
  bucket.tokens -= 1;
  return true;
}

/**
 * Like {@linkcode take} for `n` tokens at once (bytes, say). Returns false (and takes nothing) when fewer
 * than `n` are left.
 */
export function takeMany(bucket: Bucket, rate: Rate, now: number, n: number): boolean {
  const elapsed = now - bucket.at;
  if (elapsed > 0) {
    bucket.tokens = Math.min(rate.burst, bucket.tokens + (elapsed / 1000) * rate.perSecond);
    bucket.at = now;
  }
  if (bucket.tokens < n) return false;
  bucket.tokens -= n;
  return true;
}

/** The most source IPs whose buckets are remembered at once; the oldest are forgotten first. */
export const MAX_TRACKED_IPS = 65_536;

/** Limits of a {@linkcode RateLimiter}. */
export interface RateLimits {
  /** Every datagram from one source IP. */
  datagramsPerIp: Rate;
  /** HandshakeRequests from one source IP. */
  handshakesPerIp: Rate;
  /** Every datagram the endpoint receives. */
  datagramsGlobal: Rate;
  /**
   * Seconds an IP is banned for after {@linkcode BAN_STRIKES} drops over its limit within
   * {@linkcode BAN_WINDOW_MS}; 0: no bans. Only an IP that `mayBan` accepts is banned.
   */
  banSeconds: number;
  /**
   * Whether `ip` may be banned: the core bans only IPs that proved they receive (a spoofer cannot make a
   * victim's IP do that, so it cannot aim a ban at it). @default {every IP}
   */
  mayBan?: (ip: string) => boolean;
  /** Whether loopback sources (127.0.0.0/8, ::1) are exempt from the per-IP limits. */
  exemptLoopback: boolean;
}

/** Over-limit datagrams from one IP within {@linkcode BAN_WINDOW_MS} that earn a ban (when bans are on). */
export const BAN_STRIKES = 1_000;

/** The window over which an IP's over-limit datagrams are counted towards a ban. */
export const BAN_WINDOW_MS = 1_000;

interface IpState {
  all: Bucket;
  handshakes: Bucket;
  strikes: number;
  /** When the current count of strikes began. */
  strikesSince: number;
  bannedUntil: number;
}

/** What {@linkcode RateLimiter.admit} decided about one datagram. */
export type Admission = "ok" | "ip" | "global" | "banned";

/**
 * The per-IP and global buckets of one endpoint.
 *
 * @example
 * ```ts
 * import { RateLimiter } from "./limits.ts";
 * const limiter = new RateLimiter({
 *   datagramsPerIp: { perSecond: 10, burst: 2 }, handshakesPerIp: { perSecond: 1, burst: 1 },
 *   datagramsGlobal: { perSecond: 1000, burst: 1000 }, banSeconds: 0, exemptLoopback: true,
 * });
 * const ip = "192.0.2.7";
 * if (limiter.admit(ip, 0) !== "ok" || limiter.admit(ip, 0) !== "ok" || limiter.admit(ip, 0) !== "ip") {
 *   throw new Error("burst of 2");
 * }
 * ```
 */
export class RateLimiter {
  #unbannable = 0;
  readonly #limits: RateLimits;
  readonly #ips = new Map<string, IpState>();
  readonly #global: Bucket;

  /** @param limits The rates; see {@linkcode RateLimits}. */
  constructor(limits: RateLimits) {
    this.#limits = limits;
    this.#global = fullBucket(limits.datagramsGlobal, 0);
  }

  /** Source IPs currently tracked. */
  get trackedIps(): number {
    return this.#ips.size;
  }

  /** IPs banned as of `now`. */
  bannedIps(now: number): number {
    let n = 0;
    for (const s of this.#ips.values()) if (s.bannedUntil > now) n++;
    return n;
  }

  /** Takes a datagram token for `ip` and a global one. */
  admit(ip: string, now: number): Admission {
    const limits = this.#limits;
    if (!(limits.exemptLoopback && isLoopbackIp(ip))) {
      const state = this.#state(ip, now);
      if (state.bannedUntil > now) return "banned";
      if (!take(state.all, limits.datagramsPerIp, now)) {
        if (limits.banSeconds > 0) this.#strike(ip, state, now);
        return "ip";
      }
    }
    return take(this.#global, limits.datagramsGlobal, now) ? "ok" : "global";
  }

  /**
   * Counts an over-limit datagram. The count runs over a window, not in a row: a flooder's datagrams admitted
   * as its bucket refills do not reset it, so a steady flood over the limit is banned.
   */
  #strike(ip: string, state: IpState, now: number): void {
    if (now - state.strikesSince >= BAN_WINDOW_MS) {
      state.strikesSince = now;
      state.strikes = 0;
    }
    if (++state.strikes < BAN_STRIKES) return;
    state.strikes = 0;
    state.strikesSince = now;
    if (this.#limits.mayBan && !this.#limits.mayBan(ip)) {
      this.#unbannable++;
      return;
    }
    state.bannedUntil = now + this.#limits.banSeconds * 1000;
  }

  /** Times an IP earned a ban but was not banned: it has not proven it receives (it may be spoofed). */
  get unbannable(): number {
    return this.#unbannable;
  }

  /** Takes a handshake token for `ip`. */
  admitHandshake(ip: string, now: number): boolean {
    const limits = this.#limits;
    if (limits.exemptLoopback && isLoopbackIp(ip)) return true;
    return take(this.#state(ip, now).handshakes, limits.handshakesPerIp, now);
  }

  #state(ip: string, now: number): IpState {
    let state = this.#ips.get(ip);
    if (state) return state;
    if (this.#ips.size >= MAX_TRACKED_IPS) {
      // Forget the oldest that is not banned (a ban outlives eviction as long as any other entry can go).
      for (const [key, s] of this.#ips) {
        if (s.bannedUntil <= now) {
          this.#ips.delete(key);
          break;
        }
      }
      if (this.#ips.size >= MAX_TRACKED_IPS) this.#ips.delete(this.#ips.keys().next().value!);
    }
    state = {
      all: fullBucket(this.#limits.datagramsPerIp, now),
      handshakes: fullBucket(this.#limits.handshakesPerIp, now),
      strikes: 0,
      strikesSince: -Infinity,
      bannedUntil: -Infinity,
    };
    this.#ips.set(ip, state);
    return state;
  }
}

/** Whether `ip` is a loopback address (127.0.0.0/8 or ::1). */
export function isLoopbackIp(ip: string): boolean {
  return ip.startsWith("127.") || ip === "::1" || ip.startsWith("::ffff:127.");
}
