/**
 * Admission: what the core lets in and what it lets out to addresses that have not proven they receive.
 * Rate limits (per IP, per IP for handshakes, per node, global, bans), stateless handshake cookies, and the
 * anti-amplification budget: never more than 3x the bytes received to an address that has not proven it
 * receives, per connection and per IP across all its ports, with at most {@linkcode UNPROVEN_CREDIT_CAP}
 * bytes of credit banked, so the bound holds over any window, not only on average.
 *
 * @module
 */
import { fullBucket, type Rate, RateLimiter, take } from "./limits.ts";
import { CookieJar } from "./cookies.ts";
import type { Conn } from "./peers.ts";
import type { CoreConfig } from "./config.ts";
import type { Datagram } from "./outcome.ts";
import type { Message } from "../wire/mod.ts";
import type { Stats } from "./stats.ts";

/**
 * The most credit (bytes that may still be sent) an IP's unproven addresses bank together: 3 bytes per byte
 * received from that IP, spent by every reply to its unproven addresses. A deployed client that never acks
 * (so never proves its address) gets its handshake, echoes and Pongs, and discovery answers trimmed to fit.
 */
export const UNPROVEN_CREDIT_CAP = 16 * 1024;

/** Source IPs whose credit is tracked at once (the oldest entry goes first; each connection keeps its own 3x). */
export const MAX_CREDIT_IPS = 16_384;

/** What the cookie check decided about a HandshakeRequest. */
export type CookieVerdict =
  /** Go on (a valid cookie, or none needed). */
  | "ok"
  /** Answer with this cookie challenge and store nothing. */
  | { challenge: string };

/** The gate in front of the core and the budget behind it. */
export class Admission {
  readonly #config: CoreConfig;
  readonly #stats: Stats;
  readonly #limiter: RateLimiter;
  readonly #cookies: CookieJar;
  readonly #nodeRate: Rate;
  /** Per source IP with unproven connections: the bytes that may still go to them. */
  readonly #credit = new Map<string, number>();

  /**
   * @param config The core's settings.
   * @param stats Where refusals are counted.
   * @param cookieSecret The secret cookies are made with.
   * @param mayBan Whether an IP may be banned (it has a connection that proved it receives).
   */
  constructor(config: CoreConfig, stats: Stats, cookieSecret: Uint8Array, mayBan: (ip: string) => boolean) {
    this.#config = config;
    this.#stats = stats;
    const rate = ([perSecond, burst]: [number, number]): Rate => ({ perSecond, burst });
    this.#limiter = new RateLimiter({
      datagramsPerIp: rate(config.rateLimitDatagramsPerIp),
      handshakesPerIp: rate(config.rateLimitHandshakesPerIp),
      datagramsGlobal: rate(config.rateLimitDatagramsGlobal),
      banSeconds: config.banSeconds,
      exemptLoopback: config.rateLimitExemptLoopback,
      mayBan,
    });
    this.#nodeRate = rate(config.rateLimitDatagramsPerNode);
    this.#cookies = new CookieJar(cookieSecret);
  }

  /** The per-IP and global limits for one datagram, before it is decoded. */
  admit(ip: string, now: number): "ok" | "ip" | "global" | "banned" {
    return this.#limiter.admit(ip, now);
  }

  /** Bytes received from `ip`: 3x as many may go back to its unproven addresses (up to the cap). */
  received(ip: string, size: number): void {
    const credit = this.#credit.get(ip);
    if (credit !== undefined) this.#credit.set(ip, Math.min(UNPROVEN_CREDIT_CAP, credit + 3 * size));
  }

  /** How many bytes may go to `conn` now (`Infinity` once it proved it receives). */
  available(conn: Conn): number {
    if (conn.validated) return Infinity;
    const own = 3 * conn.bytesIn - conn.bytesOut;
    return Math.min(own, this.#credit.get(conn.addr.hostname) ?? Math.min(own, UNPROVEN_CREDIT_CAP));
  }

  /** The per-node limit of a registered peer. */
  nodeAllows(conn: Conn, now: number): boolean {
    return take(conn.bucket ??= fullBucket(this.#nodeRate, now), this.#nodeRate, now);
  }

  /** The per-IP handshake limit. */
  handshakeAllowed(ip: string, now: number): boolean {
    return this.#limiter.admitHandshake(ip, now);
  }

  /**
   * Stateless cookies: with `cookie_mode` `always`, or `auto` while more than `cookie_threshold` handshakes
   * are half-open, a new registration must carry a valid cookie. A request without one is to be answered
   * with a small challenge, and nothing is stored.
   */
  checkCookie(dg: Datagram, msg: Message, halfOpen: number): CookieVerdict {
    const mode = this.#config.cookieMode;
    if (mode === "never") return "ok";
    const cookie = msg.cookie;
    if (cookie !== undefined && this.#cookies.check(dg.key, cookie, dg.now)) {
      dg.cookieOk = true;
      this.#stats.cookiesAccepted++;
      return "ok";
    }
    if (mode === "auto" && halfOpen < this.#config.cookieThreshold) return "ok";
    this.#stats.cookieChallenges++;
    return { challenge: this.#cookies.make(dg.key, dg.now) };
  }

  /**
   * Whether `size` more bytes may go to a connection now: to one that has not proven it receives, at most 3x
   * what it sent and within its IP's credit. Spends both when it allows.
   */
  mayOn(conn: Conn, size: number): boolean {
    if (conn.validated) return true;
    const own = 3 * conn.bytesIn - conn.bytesOut;
    if (size > own || !this.#spend(conn.addr.hostname, size, own)) return this.#limited();
    conn.bytesOut += size;
    return true;
  }

  /**
   * Whether a stateless reply of `size` bytes may answer the datagram being handled: within 3x its size, and
   * within the budget of an unvalidated connection at the same address. Spends both when it allows.
   */
  mayStateless(dg: Datagram, known: Conn | undefined, size: number): boolean {
    // A stateless reply to an address that has an unvalidated connection spends that budget too.
    const unvalidated = known && !known.validated ? known : null;
    if (size > dg.budget || (unvalidated && unvalidated.bytesOut + size > 3 * unvalidated.bytesIn)) {
      return this.#limited();
    }
    // An IP with unproven connections spends its credit on stateless replies too (each is within 3x of its
    // own trigger, so an IP with none needs no entry).
    const ip = dg.from.hostname;
    if (this.#credit.has(ip) && !this.#spend(ip, size, 0)) return this.#limited();
    dg.budget -= size;
    if (unvalidated) unvalidated.bytesOut += size;
    return true;
  }

  /** Spends `size` of `ip`'s credit (starting from `seed`, capped, when it has none yet). */
  #spend(ip: string, size: number, seed: number): boolean {
    let credit = this.#credit.get(ip);
    if (credit === undefined) {
      credit = Math.min(seed, UNPROVEN_CREDIT_CAP);
      if (this.#credit.size >= MAX_CREDIT_IPS) this.#credit.delete(this.#credit.keys().next().value!);
    }
    if (size > credit) {
      this.#credit.set(ip, credit);
      return false;
    }
    this.#credit.set(ip, credit - size);
    return true;
  }

  #limited(): false {
    this.#stats.amplificationLimited++;
    return false;
  }
}
