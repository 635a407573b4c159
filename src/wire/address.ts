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
