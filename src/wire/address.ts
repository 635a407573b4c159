/**
 * Socket addresses: `"ip:port"` for IPv4, `"[ip6]:port"` for IPv6, as the wire and the command line write
 * them.
 *
 * @module
 */

/** A UDP endpoint. Compatible with `Deno.NetAddr`. */
export interface SocketAddr {
  /** IP address literal (IPv6 without brackets) or `localhost`. */
  hostname: string;
  /** Port, 0 to 65535. */
  port: number;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)){3}$/;

/** Whether `host` is an IPv4 dotted-quad literal. */
export function isIPv4(host: string): boolean {
  return IPV4.test(host);
}

/** Whether `host` is an IPv6 literal (without brackets; zone ids allowed). */
export function isIPv6(host: string): boolean {
  if (!host.includes(":")) return false;
  const [addr = "", zone] = host.split("%", 2);
  if (zone !== undefined && !/^[\w.-]+$/.test(zone)) return false;
  try {
    // The URL parser validates IPv6 literals (including embedded IPv4) without any I/O.
    new URL(`http://[${addr}]/`);
    return true;
  } catch {
    return false;
  }
}

/**
 * Parses `"ip:port"`, `"[ip6]:port"` or `"localhost:port"`. Returns the address, or a one-line reason when
 * the text is not one.
 *
 * @example
 * ```ts
 * import { parseSocketAddr } from "./address.ts";
 * const a = parseSocketAddr("[::1]:8080");
 * if (typeof a === "string" || a.hostname !== "::1" || a.port !== 8080) throw new Error("parse failed");
 * ```
 */
export function parseSocketAddr(text: string): SocketAddr | string {
  let host: string;
  let portText: string;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close < 0 || text[close + 1] !== ":") return "expected [ipv6]:port";
    host = text.slice(1, close);
    portText = text.slice(close + 2);
    if (!isIPv6(host)) return "not an IPv6 address";
  } else {
    const colon = text.lastIndexOf(":");
    if (colon < 0) return "missing :port";
    host = text.slice(0, colon);
    portText = text.slice(colon + 1);
    if (host.includes(":")) return "IPv6 addresses are written [ip]:port";
    if (!isIPv4(host) && host !== "localhost") return "not an IP address";
  }
  if (!/^\d{1,5}$/.test(portText)) return "bad port";
  const port = Number(portText);
  if (port > 65535) return "port out of range";
  return { hostname: host, port };
}

/** Formats an address as `"ip:port"` or `"[ip6]:port"`; the form used as a map key throughout. */
export function formatSocketAddr(addr: SocketAddr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}

/** Whether the address is an unspecified ("any") address such as `0.0.0.0` or `::`. */
export function isUnspecified(hostname: string): boolean {
  return hostname === "0.0.0.0" || hostname === "::" || /^[0:]+$/.test(hostname);
}

/** The loopback address of the same family as `hostname` (used to reach "our own host"). */
export function loopbackFor(hostname: string): string {
  return hostname.includes(":") ? "::1" : "127.0.0.1";
}

/**
 * The bytes of an IP address literal: 4 for IPv4, 16 for IPv6 (`::` compression, an embedded dotted quad and a
 * `%zone` suffix accepted), or `null` when `host` is not one.
 *
 * @example
 * ```ts
 * import { ipBytes } from "./address.ts";
 * if (ipBytes("::1")?.[15] !== 1 || ipBytes("10.0.0.1")?.length !== 4) throw new Error("parse failed");
 * ```
 */
export function ipBytes(host: string): Uint8Array | null {
  const v4 = ipv4Bytes(host);
  if (v4) return v4;
  if (!isIPv6(host)) return null;
  let text = host.split("%", 1)[0]!;
  const out = new Uint8Array(16);
  const tail: number[] = [];
  const dotted = text.lastIndexOf(":");
  if (text.includes(".", dotted)) {
    // An embedded IPv4 address stands for the last two groups.
    const quad = text.slice(dotted + 1).split(".").map(Number);
    text = `${text.slice(0, dotted + 1)}${(quad[0]! << 8 | quad[1]!).toString(16)}:${
      (quad[2]! << 8 | quad[3]!).toString(16)
    }`;
  }
  const [head = "", rest] = text.split("::", 2);
  const groups = (part: string): number[] => part === "" ? [] : part.split(":").map((g) => parseInt(g, 16));
  const front = groups(head);
  if (rest !== undefined) tail.push(...groups(rest));
  const all = [...front, ...new Array(8 - front.length - tail.length).fill(0), ...tail];
  for (let i = 0; i < 8; i++) {
    out[2 * i] = all[i]! >> 8;
    out[2 * i + 1] = all[i]! & 0xff;
  }
  return out;
}

/**
 * The 4 bytes of a dotted quad, or null when `host` is not one ({@linkcode isIPv4}'s grammar: four decimal
 * octets up to 255, no leading zeros). By hand rather than with the regular expression and a split: the
 * STUN room calls it for every Binding request.
 */
function ipv4Bytes(host: string): Uint8Array | null {
  const n = host.length;
  if (n < 7 || n > 15) return null;
  const out = new Uint8Array(4);
  let octet = 0;
  let value = 0;
  let digits = 0;
  for (let i = 0; i <= n; i++) {
    const c = i < n ? host.charCodeAt(i) : 0x2e;
    if (c === 0x2e) {
      if (digits === 0 || octet > 3) return null;
      out[octet++] = value;
      value = 0;
      digits = 0;
    } else if (c >= 0x30 && c <= 0x39) {
      if (digits === 1 && value === 0) return null; // a leading zero
      value = value * 10 + (c - 0x30);
      if (++digits > 3 || value > 255) return null;
    } else {
      return null;
    }
  }
  return octet === 4 ? out : null;
}

/**
 * Formats 4 or 16 address bytes as an IP literal (IPv6 in the RFC 5952 form: lowercase, the longest run of
 * two or more zero groups as `::`).
 *
 * @example
 * ```ts
 * import { formatIp, ipBytes } from "./address.ts";
 * if (formatIp(ipBytes("2001:db8:0:0:0:0:0:1")!) !== "2001:db8::1") throw new Error("format failed");
 * ```
 */
export function formatIp(bytes: Uint8Array): string {
  if (bytes.length === 4) return bytes.join(".");
  if (bytes.length !== 16) throw new RangeError(`Cannot format ${bytes.length} bytes as an IP address`);
  const groups = Array.from({ length: 8 }, (_, i) => (bytes[2 * i]! << 8) | bytes[2 * i + 1]!);
  let best = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen) [best, bestLen] = [i, j - i];
    i = j;
  }
  const hex = (gs: number[]) => gs.map((g) => g.toString(16)).join(":");
  if (best < 0) return hex(groups);
  return `${hex(groups.slice(0, best))}::${hex(groups.slice(best + bestLen))}`;
}
