/**
 * The small checks settings are validated with (each returns what is wrong, in the words the configuration
 * reference quotes), and the rules that relate the STUN settings to `listen_address`. Pure.
 *
 * @module
 */
import { ipBytes, isUnspecified, parseSocketAddr } from "./wire/address.ts";

/** A check: undefined when the value is accepted, else the rule it breaks ("must be ..."). */
export type Check = (value: unknown) => string | undefined;

/** An integer from 1 to `max`. */
export const positiveInt = (max: number): Check => (v) =>
  typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= max
    ? undefined
    : `must be an integer from 1 to ${max}`;

/** Seconds above 0, at most a day. */
export const positiveSeconds: Check = (v) =>
  typeof v === "number" && Number.isFinite(v) && v > 0 && v <= 86_400
    ? undefined
    : "must be a number of seconds above 0 and at most 86400";

/** `[per second, burst]`. */
export const rate: Check = (v) =>
  Array.isArray(v) && v.length === 2 &&
    v.every((x) => typeof x === "number" && Number.isFinite(x) && x >= 1 && x <= 100_000_000)
    ? undefined
    : "must be [per second, burst], each a number from 1 to 100000000";

/** A port from 1 to 65535. */
export const port = (v: unknown): boolean =>
  typeof v === "number" && Number.isInteger(v) && v >= 1 && v <= 65535;

/** `"ip:port"` or `"[ip6]:port"`. */
export const socketAddr: Check = (v) => {
  if (typeof v !== "string") return 'must be a string such as "127.0.0.1:8080"';
  const parsed = parseSocketAddr(v);
  return typeof parsed === "string" ? `must be "ip:port" or "[ip6]:port" (${parsed})` : undefined;
};

/** `retransmit_schedule_ms`. */
export const retransmitSchedule: Check = (v) =>
  Array.isArray(v) && v.length >= 1 && v.length <= 32 &&
    v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 1 && x <= 600_000)
    ? undefined
    : "must be a list of 1 to 32 waits in milliseconds, each from 1 to 600000";

/** `metrics_token`. */
export const metricsToken: Check = (v) =>
  v === null || (typeof v === "string" && v.length >= 1 && v.length <= 4096 && /^[\x21-\x7e]+$/.test(v))
    ? undefined
    : "must be null or 1 to 4096 printable ASCII characters without spaces";

/** `metrics_allowed_hosts`. */
export const metricsAllowedHosts: Check = (v) =>
  Array.isArray(v) && v.length <= 1000 &&
    v.every((h) =>
      typeof h === "string" &&
      (h === "*" || /^(\*\.)?[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*\.?$/.test(h) || /^\[[0-9A-Fa-f:.]+\]$/.test(h))
    )
    ? undefined
    : 'must be a list of host names without ports (such as ["status.example.org", "*.example.net"]) or ["*"]';

/** `nat_lifetime_gaps_ms`: at most 12 increasing gaps, each from 200 ms to 10 minutes. */
export const natLifetimeGapsMs: Check = (v) =>
  Array.isArray(v) && v.length <= 12 &&
    v.every((x, i) =>
      typeof x === "number" && Number.isInteger(x) && x >= 200 && x <= 600_000 && (i === 0 || x > v[i - 1])
    )
    ? undefined
    : "must be a list of at most 12 increasing gaps in milliseconds, each from 200 to 600000 ([] turns it off)";

/** `stun_alternate_port`. */
export const stunAlternatePort: Check = (v) =>
  v === null || (typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 65535)
    ? undefined
    : "must be null (off) or a UDP port from 0 (any free port) to 65535";

/** `stun_alternate_address`. */
export const stunAlternateAddress: Check = (v) =>
  v === null || (typeof v === "string" && ipBytes(v) !== null && !isUnspecified(v))
    ? undefined
    : 'must be null (off) or an IP address of this host without a port, such as "203.0.113.2"';

/** The STUN settings and the listen address they go with. */
export interface StunSettings {
  /** `listen_address`, already checked. */
  listenAddress: string;
  /** `stun_alternate_port`, already checked. */
  stunAlternatePort: number | null;
  /** `stun_alternate_address`, already checked. */
  stunAlternateAddress: string | null;
}

/**
 * What is wrong with the STUN settings together, as `[key, problem, value]`, or undefined: an alternate port
 * must differ from the listen port; an alternate address needs an alternate port and a listen address that
 * is one IP address of the same family, other than it (RFC 5780 answers from the other address, so both must
 * be bound apart).
 */
export function stunProblem(c: StunSettings): [string, string, unknown] | undefined {
  const listen = parseSocketAddr(c.listenAddress);
  if (typeof listen === "string") return undefined;
  if (c.stunAlternatePort !== null && c.stunAlternatePort !== 0 && c.stunAlternatePort === listen.port) {
    return ["stun_alternate_port", "must differ from the port of listen_address", c.stunAlternatePort];
  }
  const alt = c.stunAlternateAddress;
  if (alt === null) return undefined;
  if (c.stunAlternatePort === null) {
    return ["stun_alternate_address", "needs stun_alternate_port to be set", alt];
  }
  const key = "stun_alternate_address";
  if (isUnspecified(listen.hostname)) {
    return [key, `needs listen_address to be one IP address, not "${listen.hostname}"`, alt];
  }
  const a = ipBytes(alt)!;
  const b = ipBytes(listen.hostname);
  if (!b || a.length !== b.length) return [key, "must be of the same IP family as listen_address", alt];
  if (a.every((x, i) => x === b[i])) return [key, "must differ from the IP address of listen_address", alt];
  return undefined;
}

/** The socket backends `io_backend` accepts. */
export const IO_BACKENDS = ["deno", "mmsg"] as const;

/** One of {@linkcode IO_BACKENDS}. */
export type IoBackend = typeof IO_BACKENDS[number];

/** Where `crypto_backend` computes X25519 and HMAC-SHA-256. */
export const CRYPTO_BACKENDS = ["auto", "node", "openssl"] as const;

/** One of {@linkcode CRYPTO_BACKENDS}. */
export type CryptoBackend = typeof CRYPTO_BACKENDS[number];

/** The retransmission policies `retransmit_policy` accepts. */
export const RETRANSMIT_POLICIES = ["adaptive", "schedule"] as const;

/** One of {@linkcode RETRANSMIT_POLICIES}. */
export type RetransmitPolicy = typeof RETRANSMIT_POLICIES[number];

/** The cookie modes `cookie_mode` accepts. */
export const COOKIE_MODES = ["auto", "always", "never"] as const;

/** One of {@linkcode COOKIE_MODES}. */
export type CookieMode = typeof COOKIE_MODES[number];

/** The log formats `log_format` accepts. */
export const LOG_FORMATS = ["text", "json"] as const;

/** One of {@linkcode LOG_FORMATS}. */
export type LogFormat = typeof LOG_FORMATS[number];

/** A check that accepts one of `values` and names them all otherwise. */
export function oneOf(values: readonly string[]): Check {
  return (v) =>
    (values as readonly unknown[]).includes(v)
      ? undefined
      : `must be one of ${values.map((f) => `"${f}"`).join(", ")}`;
}
