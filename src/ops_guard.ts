/**
 * The checks every request to the operations routes passes before any route does work, and the headers every
 * answer carries. Pure: {@linkcode OpsGuard.check} looks at a request (and, when known, the address it came
 * from) and returns a refusal or null; {@linkcode secureResponse} adds the security headers.
 *
 * In order:
 *
 * 1. **Host** (DNS rebinding): a web page on `evil.example` whose name the attacker re-points at the server's
 *    address makes browsers send `Host: evil.example`. Only IP literals (a rebinding attack needs a name),
 *    `localhost` (and `*.localhost`) and the names in `allowedHosts` are served; any other `Host` gets `421`.
 *    `/health` is exempt (load balancers probe it under whatever name they know; it tells nothing private).
 * 2. **Token**: with a token, every route but `/health` and the page `/` needs `Authorization: Bearer
 *    <token>` (compared in constant time), checked before anything else is read.
 * 3. **Private routes**: `/peers` and `/api/events` list every network's peers and their addresses. With a
 *    token they need it (as above); without one they are answered only to loopback clients (`403` to anyone
 *    else, and to a caller whose address is unknown).
 *
 * @module
 */
import { isLoopbackIp } from "./core/limits.ts";
import { sha256 } from "./deps/crypto.ts";
import { getLogger } from "./deps/log.ts";

/** Routes that list peers and addresses: token, or loopback only when there is no token. */
export const PRIVATE_ROUTES: readonly string[] = ["/peers", "/api/events"];

/** Routes open without the token. */
export const OPEN_ROUTES: readonly string[] = ["/health", "/"];

/** What the transport knows of a request's origin (`Deno.serve`'s handler info has this shape). */
export interface OpsRequestInfo {
  /** The TCP peer of the connection. */
  remoteAddr?: { hostname: string };
}

/** Options of {@linkcode OpsGuard}. */
export interface OpsGuardOptions {
  /** Bearer token of the routes but `/health` and `/`. @default {null} */
  token?: string | null;
  /**
   * Host names served besides IP literals and `localhost`/`*.localhost` (case-insensitive, no port; a
   * leading `*.` matches any subdomain; `"*"` turns the check off).
   * @default {[]}
   */
  allowedHosts?: readonly string[];
}

const encoder = new TextEncoder();

/** Compares two strings in time that depends only on their lengths. */
export function constantTimeEqual(a: string, b: string): boolean {
  const x = encoder.encode(a);
  const y = encoder.encode(b);
  let diff = x.length ^ y.length;
  const n = Math.max(x.length, y.length);
  for (let i = 0; i < n; i++) diff |= (x[i] ?? 0) ^ (y[i] ?? 0);
  return diff === 0;
}

function refusal(status: number, error: string, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify({ error }), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...headers },
  });
}

/**
 * The host name of a `Host` header value (lowercase, without port, brackets or a trailing dot), or null when
 * it is not a plausible host.
 */
export function hostName(host: string): string | null {
  const h = host.trim().toLowerCase();
  let name: string;
  if (h.startsWith("[")) {
    const end = h.indexOf("]");
    if (end < 0 || !/^(:\d{1,5})?$/.test(h.slice(end + 1))) return null;
    name = h.slice(1, end);
    return /^[0-9a-f:.]+$/.test(name) && name.includes(":") ? name : null;
  }
  const m = /^([^:]*)(:\d{1,5})?$/.exec(h);
  if (!m) return null;
  name = m[1]!.replace(/\.$/, "");
  return /^[a-z0-9_-]+(\.[a-z0-9_-]+)*$/.test(name) ? name : null;
}

function isIpLiteral(name: string): boolean {
  if (name.includes(":")) return true; // only bracketed IPv6 gets here (see hostName)
  const parts = name.split(".");
  return parts.length === 4 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255);
}

/**
 * The request checks of the operations routes.
 *
 * @example
 * ```ts
 * import { OpsGuard } from "./ops_guard.ts";
 * const guard = new OpsGuard({ token: null, allowedHosts: ["status.example.org"] });
 * const rebound = new Request("http://evil.example/peers");
 * if (guard.check(rebound, { remoteAddr: { hostname: "127.0.0.1" } })?.status !== 421) throw new Error();
 * const local = new Request("http://127.0.0.1:9100/peers");
 * if (guard.check(local, { remoteAddr: { hostname: "127.0.0.1" } }) !== null) throw new Error();
 * ```
 */
export class OpsGuard {
  readonly #token: string | null;
  readonly #anyHost: boolean;
  readonly #exact = new Set<string>();
  readonly #suffixes: string[] = [];

  /** @param options See {@linkcode OpsGuardOptions}. */
  constructor(options: OpsGuardOptions = {}) {
    this.#token = options.token ?? null;
    const hosts = options.allowedHosts ?? [];
    this.#anyHost = hosts.includes("*");
    for (const entry of hosts) {
      const h = entry.toLowerCase().replace(/\.$/, "");
      if (h.startsWith("*.")) this.#suffixes.push(h.slice(1));
      else this.#exact.add(h.startsWith("[") && h.endsWith("]") ? h.slice(1, -1) : h);
    }
  }

  /** Whether requests need the token. */
  get hasToken(): boolean {
    return this.#token !== null;
  }

  /** Whether a `Host` header value may be served. */
  hostAllowed(host: string): boolean {
    if (this.#anyHost) return true;
    const name = hostName(host);
    if (name === null) return false;
    if (isIpLiteral(name) || name === "localhost" || name.endsWith(".localhost")) return true;
    return this.#exact.has(name) || this.#suffixes.some((s) => name.endsWith(s));
  }

  /**
   * Checks `request` before any route looks at it: returns the refusal to send (`421` for a `Host` not
   * allowed, `401` without the token, `403` for a private route from a non-loopback caller when there is no
   * token), or null when the request may go on.
   */
  check(request: Request, info?: OpsRequestInfo): Response | null {
    const url = new URL(request.url);
    const path = url.pathname;
    if (path === "/health") return null;
    const host = request.headers.get("host") ?? url.host;
    if (!this.hostAllowed(host)) {
      return refusal(421, `misdirected request: host "${host.slice(0, 100)}" is not served here`);
    }
    if (this.#token !== null) {
      if (path === "/") return null;
      const header = request.headers.get("authorization") ?? "";
      const given = header.startsWith("Bearer ") ? header.slice("Bearer ".length) : "";
      if (!constantTimeEqual(given, this.#token)) {
        return refusal(401, "unauthorized", { "www-authenticate": 'Bearer realm="p2p_server"' });
      }
      return null;
    }
    if (PRIVATE_ROUTES.includes(path)) {
      const from = info?.remoteAddr?.hostname;
      if (from === undefined || !isLoopbackIp(from)) {
        return refusal(
          403,
          `forbidden: ${path} is served to loopback clients only unless metrics_token is set`,
        );
      }
    }
    return null;
  }
}

/** The hashes (CSP `'sha256-...'` sources) of the inline `<script>` elements of `html`. */
function scriptHashes(html: string): string {
  const re = /<script>([\s\S]*?)<\/script>/g;
  return [...html.matchAll(re)].map((m) => `'sha256-${sha256(encoder.encode(m[1]!)).toBase64()}'`).join(" ");
}

const policies = new Map<string, string>();

/**
 * The Content-Security-Policy of an HTML page: nothing but its own inline scripts (by hash) and styles, and
 * requests to its own origin; never framed.
 */
export function pagePolicy(html: string): string {
  let policy = policies.get(html);
  if (policy === undefined) {
    const scripts = scriptHashes(html);
    policy = [
      "default-src 'none'",
      `script-src ${scripts || "'none'"}`,
      // Inline style attributes as well as the <style> element: a hash cannot cover attributes everywhere.
      "style-src 'unsafe-inline'",
      "connect-src 'self'",
      "img-src 'self' data:",
      "base-uri 'none'",
      "form-action 'none'",
      "frame-ancestors 'none'",
    ].join("; ");
    policies.clear(); // one page per process: keep only the latest
    policies.set(html, policy);
  }
  return policy;
}

/**
 * Adds the security headers to an answer of the operations routes: `X-Content-Type-Options: nosniff`,
 * `Referrer-Policy: no-referrer`, `X-Frame-Options: DENY`, `Cross-Origin-Resource-Policy: same-origin`, and a
 * Content-Security-Policy (for HTML, `pagePolicy(html)`; for anything else, nothing may run or frame it).
 */
export function secureResponse(response: Response, html?: string): Response {
  const h = response.headers;
  h.set("x-content-type-options", "nosniff");
  h.set("referrer-policy", "no-referrer");
  h.set("x-frame-options", "DENY");
  h.set("cross-origin-resource-policy", "same-origin");
  h.set(
    "content-security-policy",
    html !== undefined ? pagePolicy(html) : "default-src 'none'; frame-ancestors 'none'",
  );
  return response;
}

/** Logs a warning when the ops server on `addr` (`ip:port`) is reachable from other hosts without a token. */
export function warnIfExposed(addr: string, token: string | null): void {
  const host = addr.startsWith("[") ? addr.slice(1, addr.indexOf("]")) : addr.slice(0, addr.lastIndexOf(":"));
  if (token !== null || isLoopbackIp(host)) return;
  getLogger(["p2p_server", "server"]).warn(
    "the operations server on {addr} is reachable from other hosts and has no metrics_token: anyone who can " +
      "reach it reads /metrics and /api/stats (/peers and /api/events stay loopback-only); set metrics_token",
    { addr },
  );
}
