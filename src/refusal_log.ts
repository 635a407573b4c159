/**
 * Rate limiting for the log lines of refused handshakes: anyone can send a HandshakeRequest that is refused,
 * so the first `limit` refusals of each window are logged one line each and the rest are counted; the next
 * flush after the window prints one summary line ("N more refusals in the last T s"). Time is a parameter.
 *
 * @module
 */

/** What {@linkcode RefusalLimiter.flush} reports about the refusals it kept quiet. */
export interface RefusalSummary {
  /** Refusals not logged one by one. */
  suppressed: number;
  /** Them by code, most frequent first. */
  byCode: [string, number][];
  /** The window they fell in, seconds. */
  seconds: number;
}

/** Options of {@linkcode RefusalLimiter}. */
export interface RefusalLimiterOptions {
  /** Refusals logged one line each per window. @default {10} */
  limit?: number;
  /** The window, ms. @default {10000} */
  windowMs?: number;
}

/**
 * Decides which refusals get their own log line.
 *
 * @example
 * ```ts
 * import { RefusalLimiter } from "./refusal_log.ts";
 * const limiter = new RefusalLimiter({ limit: 1, windowMs: 1000 });
 * if (!limiter.admit(0, "server_full") || limiter.admit(10, "server_full")) throw new Error();
 * if (limiter.flush(1000)?.suppressed !== 1) throw new Error();
 * ```
 */
export class RefusalLimiter {
  readonly #limit: number;
  readonly #windowMs: number;
  #windowStart = -Infinity;
  #logged = 0;
  #suppressed = new Map<string, number>();

  /** @param options Limit and window. */
  constructor(options: RefusalLimiterOptions = {}) {
    this.#limit = options.limit ?? 10;
    this.#windowMs = options.windowMs ?? 10_000;
  }

  /** Counts a refusal at `now` (ms); true when it gets its own log line. */
  admit(now: number, code: string): boolean {
    if (now - this.#windowStart >= this.#windowMs) {
      if (this.#suppressed.size === 0) {
        this.#windowStart = now;
        this.#logged = 0;
      }
    }
    if (this.#logged < this.#limit && this.#suppressed.size === 0) {
      this.#logged++;
      return true;
    }
    this.#suppressed.set(code, (this.#suppressed.get(code) ?? 0) + 1);
    return false;
  }

  /**
   * Once the window has passed, returns what was kept quiet in it (and starts a new window), else null.
   * Call it now and then (the server does every second).
   */
  flush(now: number): RefusalSummary | null {
    if (now - this.#windowStart < this.#windowMs) return null;
    if (this.#suppressed.size === 0) return null;
    const byCode = [...this.#suppressed.entries()].sort((a, b) => b[1] - a[1]);
    const suppressed = byCode.reduce((n, [, k]) => n + k, 0);
    const seconds = Math.round((now - this.#windowStart) / 1000);
    this.#suppressed.clear();
    this.#windowStart = now;
    this.#logged = 0;
    return { suppressed, byCode, seconds };
  }
}
