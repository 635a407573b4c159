/**
 * Stateless handshake cookies: a server under load answers a HandshakeRequest without a valid cookie with a
 * small challenge and keeps no state; the peer repeats its request with the cookie, which proves it receives
 * datagrams at its source address. A cookie is an HMAC-SHA-256 of the source address and a time period under
 * a secret, truncated to 128 bits; it is valid in its period and the next ({@linkcode COOKIE_PERIOD_MS}
 * each), so every period effectively rotates the key.
 *
 * @module
 */
import { hmacSha256 } from "../deps/crypto.ts";

/** How long one cookie period lasts (ms). A cookie is accepted for one to two periods. */
export const COOKIE_PERIOD_MS = 60_000;

/** Hex digits in a cookie. */
export const COOKIE_HEX_LENGTH = 32;

const HEX = "0123456789abcdef";

/**
 * Makes and checks cookies for source addresses.
 *
 * @example
 * ```ts
 * import { CookieJar } from "./cookies.ts";
 * const jar = new CookieJar(new Uint8Array(32).fill(7));
 * const cookie = jar.make("192.0.2.1:5000", 0);
 * if (!jar.check("192.0.2.1:5000", cookie, 61_000) || jar.check("192.0.2.1:5001", cookie, 0)) {
 *   throw new Error("a cookie belongs to one address and lasts into the next period");
 * }
 * ```
 */
export class CookieJar {
  readonly #secret: Uint8Array;

  /** @param secret At least 16 random bytes; a new secret invalidates every cookie. */
  constructor(secret: Uint8Array) {
    if (secret.length < 16) throw new RangeError(`Cookie secret too short: ${secret.length} bytes, need 16`);
    this.#secret = secret.slice();
  }

  /** The cookie for `addr` (`"ip:port"`) at `now` (ms). */
  make(addr: string, now: number): string {
    return this.#cookie(addr, Math.floor(now / COOKIE_PERIOD_MS));
  }

  /** Whether `cookie` is the one for `addr` in the current or the previous period. */
  check(addr: string, cookie: string, now: number): boolean {
    if (cookie.length !== COOKIE_HEX_LENGTH) return false;
    const period = Math.floor(now / COOKIE_PERIOD_MS);
    return equal(cookie, this.#cookie(addr, period)) || equal(cookie, this.#cookie(addr, period - 1));
  }

  #cookie(addr: string, period: number): string {
    const mac = hmacSha256(this.#secret, `${period}|${addr}`);
    let out = "";
    for (let i = 0; i < COOKIE_HEX_LENGTH / 2; i++) out += HEX[mac[i]! >> 4]! + HEX[mac[i]! & 15]!;
    return out;
  }
}

/** Compares two equal-length strings without stopping at the first difference. */
function equal(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}
