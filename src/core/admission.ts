/**
 * Admission: what the core lets in and what it lets out to addresses that have not proven they receive.
 * Rate limits (per IP, per IP for handshakes, per node, global, bans), stateless handshake cookies, and the
 * anti-amplification budget (never more than 3x the bytes received to an unproven address; a bounded byte
 * rate to a deployed peer validated only by the compatibility rule).
 *
 * @module
 */
import { fullBucket, type Rate, RateLimiter, take, takeMany } from "./limits.ts";
import { CookieJar } from "./cookies.ts";
import type { Conn } from "./peers.ts";
import type { CoreConfig } from "./config.ts";
import type { Datagram } from "./outcome.ts";
import type { Message } from "../wire/mod.ts";
import type { Stats } from "./stats.ts";

/**
 * Bytes per second (and burst) sent to a peer validated only by the compatibility rule: enough for a deployed
 * client's discovery pages and echoes, too little to make the server a useful reflector.
 */
export const UNPROVEN_RATE: Rate = { perSecond: 16 * 1024, burst: 64 * 1024 };

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

  /**
   * @param config The core's settings.
   * @param stats Where refusals are counted.
   * @param cookieSecret The secret cookies are made with.
   */
  constructor(config: CoreConfig, stats: Stats, cookieSecret: Uint8Array) {
    this.#config = config;
    this.#stats = stats;
    const rate = ([perSecond, burst]: [number, number]): Rate => ({ perSecond, burst });
    this.#limiter = new RateLimiter({
      datagramsPerIp: rate(config.rateLimitDatagramsPerIp),
      handshakesPerIp: rate(config.rateLimitHandshakesPerIp),
      datagramsGlobal: rate(config.rateLimitDatagramsGlobal),
      banSeconds: config.banSeconds,
      exemptLoopback: config.rateLimitExemptLoopback,
    });
    this.#nodeRate = rate(config.rateLimitDatagramsPerNode);
    this.#cookies = new CookieJar(cookieSecret);
  }

  /** The per-IP and global limits for one datagram, before it is decoded. */
  admit(ip: string, now: number): "ok" | "ip" | "global" | "banned" {
    return this.#limiter.admit(ip, now);
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
   * what it sent; to one validated only by the compatibility rule, within {@linkcode UNPROVEN_RATE}. Spends
   * the budget when it allows.
   */
  mayOn(now: number, conn: Conn, size: number): boolean {
    if (!conn.validated) {
      if (conn.bytesOut + size > 3 * conn.bytesIn) return this.#limited();
      conn.bytesOut += size;
    } else if (conn.unproven && !takeMany(conn.unproven, UNPROVEN_RATE, now, size)) {
      return this.#limited();
    }
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
    dg.budget -= size;
    if (unvalidated) unvalidated.bytesOut += size;
    return true;
  }

  #limited(): false {
    this.#stats.amplificationLimited++;
    return false;
  }
}
