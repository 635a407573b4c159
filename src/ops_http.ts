/**
 * The HTTP/1.1 server under the operations routes: a small server of its own over `Deno.listen`, because the
 * operations port must never take the UDP service down and `Deno.serve` gives no hold on its connections (no
 * connection cap, no timeouts, and an accept that fails for want of file descriptors is thrown uncaught and
 * ends the process). What it guarantees:
 *
 * - **Connection cap** (`maxConnections`): at the cap, a new connection takes the place of the one that has
 *   waited longest for a complete request (one being answered is never cut); idle connections cannot lock
 *   scrapers out.
 * - **Timeouts**: a connection must send the first byte of a request within `idleTimeoutMs` of opening (or of
 *   its previous answer) and the whole request head within `headerTimeoutMs` of that byte; an answer must be
 *   taken within `writeTimeoutMs`. Else the connection is closed.
 * - **Accept errors** (`Too many open files` and the like) are logged (at most once a second) and retried
 *   after a pause growing from 10 ms to 1 s, closing the longest-waiting connection to free a descriptor; the
 *   server keeps serving once descriptors are free again.
 * - **Bounded requests**: only a request head of at most `maxHeaderBytes` (and 100 fields) is read; a request
 *   with a body is answered and its connection closed, its body never read. Malformed requests get `400` and
 *   a close.
 *
 * Handler errors answer `500`; nothing a client sends can throw out of {@linkcode serveHttp}.
 *
 * @module
 */
import { getLogger } from "./deps/log.ts";

const log = getLogger(["p2p_server", "ops"]);

/** Limits of {@linkcode serveHttp}. */
export interface HttpLimits {
  /** Most connections open at once. @default {64} */
  maxConnections?: number;
  /** Time allowed for the first byte of a request (ms), after opening or after the previous answer. @default {10_000} */
  idleTimeoutMs?: number;
  /** Time allowed for the rest of the request head after its first byte (ms). @default {10_000} */
  headerTimeoutMs?: number;
  /** Time allowed to write one answer (ms). @default {10_000} */
  writeTimeoutMs?: number;
  /** Largest request head (request line and header fields), bytes. @default {16_384} */
  maxHeaderBytes?: number;
  /** Requests served on one connection before it is closed. @default {1000} */
  maxRequestsPerConnection?: number;
}

/** The defaults of {@linkcode HttpLimits}. */
export const HTTP_LIMITS: Readonly<Required<HttpLimits>> = {
  maxConnections: 64,
  idleTimeoutMs: 10_000,
  headerTimeoutMs: 10_000,
  writeTimeoutMs: 10_000,
  maxHeaderBytes: 16_384,
  maxRequestsPerConnection: 1000,
};

/** Counters of a {@linkcode HttpServer}. */
export interface HttpCounters {
  /** Connections accepted. */
  accepted: number;
  /** Connections open now. */
  open: number;
  /** Connections closed to make room at the cap (or to free a descriptor after an accept error). */
  evicted: number;
  /** Connections closed for a timeout. */
  timedOut: number;
  /** Accept calls that failed (too many open files and the like). */
  acceptErrors: number;
  /** Requests answered. */
  requests: number;
  /** Requests refused as malformed or too large. */
  badRequests: number;
}

/** The handler: a `Request` and where it came from, to a `Response`. */
export type HttpHandler = (
  request: Request,
  info: { remoteAddr: Deno.NetAddr },
) => Response | Promise<Response>;

/** A running {@linkcode serveHttp}. */
export interface HttpServer {
  /** The bound address. */
  readonly addr: Deno.NetAddr;
  /** Counters so far (a copy). */
  counters(): HttpCounters;
  /** Stops accepting, closes idle connections, lets answers under way finish (at most 2 s), then closes. */
  close(): Promise<void>;
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  401: "Unauthorized",
  403: "Forbidden",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Content Too Large",
  421: "Misdirected Request",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  503: "Service Unavailable",
};

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const latin1 = new TextDecoder("latin1");
const encoder = new TextEncoder();

interface Connection {
  conn: Deno.Conn;
  remoteAddr: Deno.NetAddr;
  /** Waiting for a request (evictable) since this time, or null while one is answered. */
  waitingSince: number | null;
  timer: ReturnType<typeof setTimeout> | undefined;
  closed: boolean;
}

class BadRequest extends Error {
  readonly status: number;
  constructor(status: number, message: string) {
    super(message);
    this.status = status;
  }
}

/**
 * Serves `handler` on `hostname:port` (port 0: a free one) within `limits`.
 *
 * @throws {Deno.errors.AddrInUse} and the other errors of `Deno.listen` when it cannot bind.
 * @example
 * ```ts
 * import { serveHttp } from "./ops_http.ts";
 * const server = serveHttp({ hostname: "127.0.0.1", port: 0 }, () => new Response("ok"));
 * const res = await fetch(`http://127.0.0.1:${server.addr.port}/`);
 * if ((await res.text()) !== "ok") throw new Error();
 * await server.close();
 * ```
 */
export function serveHttp(
  address: { hostname: string; port: number },
  handler: HttpHandler,
  limits: HttpLimits = {},
): HttpServer {
  const l = { ...HTTP_LIMITS, ...limits };
  const listener = Deno.listen({ transport: "tcp", hostname: address.hostname, port: address.port });
  const addr = listener.addr as Deno.NetAddr;
  const open = new Set<Connection>();
  const served = new Set<Promise<void>>();
  const counters: HttpCounters = {
    accepted: 0,
    open: 0,
    evicted: 0,
    timedOut: 0,
    acceptErrors: 0,
    requests: 0,
    badRequests: 0,
  };
  let closing = false;
  let pause: { timer: ReturnType<typeof setTimeout>; resolve: () => void } | null = null;
  let lastAcceptWarning = -Infinity;

  const drop = (c: Connection) => {
    if (c.closed) return;
    c.closed = true;
    clearTimeout(c.timer);
    open.delete(c);
    counters.open = open.size;
    try {
      c.conn.close();
    } catch {
      // already closed
    }
  };
  const arm = (c: Connection, ms: number) => {
    clearTimeout(c.timer);
    c.timer = setTimeout(() => {
      counters.timedOut++;
      drop(c);
    }, ms);
  };
  /** Closes the connection that has waited longest for a request; false when every one is busy. */
  const evictOldest = (): boolean => {
    let oldest: Connection | null = null;
    for (const c of open) {
      if (c.waitingSince !== null && (oldest === null || c.waitingSince < oldest.waitingSince!)) oldest = c;
    }
    if (oldest === null) return false;
    counters.evicted++;
    drop(oldest);
    return true;
  };

  const serveConnection = async (c: Connection): Promise<void> => {
    let buffer = new Uint8Array(4096);
    let length = 0;
    let requests = 0;
    try {
      while (!c.closed && !closing) {
        // Wait for a request: the first byte within idleTimeoutMs, the whole head within headerTimeoutMs.
        c.waitingSince = performance.now();
        arm(c, l.idleTimeoutMs);
        let headEnd = findHeadEnd(buffer, 0, length);
        let started = length > 0;
        if (started) arm(c, l.headerTimeoutMs);
        while (headEnd < 0) {
          if (length > l.maxHeaderBytes) throw new BadRequest(431, "request head too large");
          if (length === buffer.length) {
            const bigger = new Uint8Array(Math.min(buffer.length * 2, l.maxHeaderBytes + 4096));
            bigger.set(buffer);
            buffer = bigger;
          }
          const n = await c.conn.read(buffer.subarray(length));
          if (n === null) return; // the client closed
          const scanned = length;
          length += n;
          if (!started) {
            started = true;
            arm(c, l.headerTimeoutMs);
          }
          headEnd = findHeadEnd(buffer, Math.max(0, scanned - 3), length);
        }
        if (headEnd > l.maxHeaderBytes) throw new BadRequest(431, "request head too large");
        c.waitingSince = null;
        clearTimeout(c.timer);
        const head = latin1.decode(buffer.subarray(0, headEnd));
        const consumed = headEnd + 4;
        buffer.copyWithin(0, consumed, length);
        length -= consumed;
        const parsed = parseHead(head, addr);
        requests++;
        const keepAlive = parsed.keepAlive && !parsed.hasBody && requests < l.maxRequestsPerConnection &&
          !closing;
        let response: Response;
        try {
          response = await handler(parsed.request, { remoteAddr: c.remoteAddr });
        } catch (error) {
          log.error("ops: a handler failed: {error}", { error: (error as Error)?.stack ?? String(error) });
          response = new Response("internal error\n", { status: 500 });
        }
        counters.requests++;
        arm(c, l.writeTimeoutMs);
        await writeResponse(c.conn, response, parsed.request.method === "HEAD", keepAlive);
        if (!keepAlive) return;
      }
    } catch (error) {
      if (error instanceof BadRequest && !c.closed) {
        counters.badRequests++;
        arm(c, l.writeTimeoutMs);
        const body = JSON.stringify({ error: error.message });
        const response = new Response(body, {
          status: error.status,
          headers: { "content-type": "application/json; charset=utf-8" },
        });
        await writeResponse(c.conn, response, false, false).catch(() => {});
      }
      // Otherwise: the connection broke, timed out or was evicted (its read or write failed); nothing to do.
    } finally {
      drop(c);
    }
  };

  const acceptLoop = async (): Promise<void> => {
    let backoff = 0;
    while (!closing) {
      let conn: Deno.Conn;
      try {
        conn = await listener.accept();
        backoff = 0;
      } catch (error) {
        if (closing) return;
        counters.acceptErrors++;
        const now = performance.now();
        if (now - lastAcceptWarning >= 1000) {
          lastAcceptWarning = now;
          log.warn("ops: cannot accept a connection ({error}); retrying, the UDP service is not affected", {
            error: (error as Error).message,
          });
        }
        evictOldest();
        backoff = Math.min(Math.max(backoff * 2, 10), 1000);
        await new Promise<void>((resolve) => {
          pause = { timer: setTimeout(resolve, backoff), resolve };
        });
        pause = null;
        continue;
      }
      if (closing) {
        conn.close();
        return;
      }
      counters.accepted++;
      if (open.size >= l.maxConnections && !evictOldest()) {
        counters.evicted++;
        conn.close();
        continue;
      }
      const c: Connection = {
        conn,
        remoteAddr: conn.remoteAddr as Deno.NetAddr,
        waitingSince: performance.now(),
        timer: undefined,
        closed: false,
      };
      open.add(c);
      counters.open = open.size;
      const p = serveConnection(c);
      served.add(p);
      void p.finally(() => served.delete(p));
    }
  };
  const accepting = acceptLoop();

  let closed: Promise<void> | null = null;
  return {
    addr: { transport: "tcp", hostname: addr.hostname, port: addr.port },
    counters: () => ({ ...counters }),
    close: () =>
      closed ??= (async () => {
        closing = true;
        try {
          listener.close();
        } catch {
          // already closed
        }
        if (pause) {
          clearTimeout(pause.timer);
          pause.resolve();
        }
        await accepting;
        for (const c of [...open]) if (c.waitingSince !== null) drop(c);
        let grace: ReturnType<typeof setTimeout> | undefined;
        await Promise.race([
          Promise.all(served),
          new Promise<void>((resolve) => grace = setTimeout(resolve, 2000)),
        ]);
        clearTimeout(grace);
        for (const c of [...open]) drop(c);
        await Promise.all(served);
      })(),
  };
}

/** The offset of the `\r\n\r\n` that ends the request head in `buffer[from, length)`, or -1. */
function findHeadEnd(buffer: Uint8Array, from: number, length: number): number {
  for (let i = from; i + 3 < length; i++) {
    if (buffer[i] === 13 && buffer[i + 1] === 10 && buffer[i + 2] === 13 && buffer[i + 3] === 10) return i;
  }
  return -1;
}

/** Parses a request head into a `Request` (without body). @throws {BadRequest} */
function parseHead(
  head: string,
  local: Deno.NetAddr,
): { request: Request; keepAlive: boolean; hasBody: boolean } {
  const lines = head.split("\r\n");
  const m = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) (\S+) HTTP\/1\.([01])$/.exec(lines[0]!);
  if (!m) throw new BadRequest(400, "malformed request line");
  const [, method, target, minor] = m as unknown as [string, string, string, string];
  if (lines.length - 1 > 100) throw new BadRequest(431, "too many header fields");
  const headers = new Headers();
  let hosts = 0;
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = colon > 0 ? line.slice(0, colon) : "";
    if (!TOKEN.test(name)) throw new BadRequest(400, "malformed header field");
    const value = line.slice(colon + 1).replace(/^[ \t]+|[ \t]+$/g, "");
    // deno-lint-ignore no-control-regex -- control characters (but tab) are what is refused
    if (/[\x00-\x08\x0a-\x1f\x7f]/.test(value)) throw new BadRequest(400, "malformed header field");
    if (name.toLowerCase() === "host") hosts++;
    try {
      headers.append(name, value);
    } catch {
      throw new BadRequest(400, "malformed header field");
    }
  }
  if (minor === "1" && hosts !== 1) throw new BadRequest(400, "a request needs exactly one Host header");
  if (hosts > 1) throw new BadRequest(400, "a request needs at most one Host header");
  if (!target.startsWith("/")) throw new BadRequest(400, "only origin-form request targets are served");
  const host = headers.get("host") ??
    (local.hostname.includes(":") ? `[${local.hostname}]:${local.port}` : `${local.hostname}:${local.port}`);
  let url: URL;
  try {
    url = new URL(`http://${host}${target}`);
  } catch {
    throw new BadRequest(400, "malformed Host or request target");
  }
  const connection = (headers.get("connection") ?? "").toLowerCase().split(",").map((t) => t.trim());
  const keepAlive = minor === "1" ? !connection.includes("close") : connection.includes("keep-alive");
  const length = headers.get("content-length");
  const hasBody = headers.has("transfer-encoding") || (length !== null && length.trim() !== "0");
  let request: Request;
  try {
    request = new Request(url, { method, headers });
  } catch {
    throw new BadRequest(400, "malformed request");
  }
  return { request, keepAlive, hasBody };
}

/** Writes `response` (whole, with Content-Length); its body is left out for HEAD. */
async function writeResponse(
  conn: Deno.Conn,
  response: Response,
  head: boolean,
  keepAlive: boolean,
): Promise<void> {
  const body = new Uint8Array(await response.arrayBuffer());
  const reason = response.statusText || REASONS[response.status] || "";
  let text = `HTTP/1.1 ${response.status} ${reason}\r\n`;
  for (const [name, value] of response.headers) {
    if (name === "content-length" || name === "connection" || name === "transfer-encoding") continue;
    text += `${name}: ${value}\r\n`;
  }
  text += `content-length: ${body.length}\r\nconnection: ${keepAlive ? "keep-alive" : "close"}\r\n`;
  text += `date: ${new Date().toUTCString()}\r\n\r\n`;
  const headBytes = encoder.encode(text);
  let out: Uint8Array;
  if (head || body.length === 0) out = headBytes;
  else {
    out = new Uint8Array(headBytes.length + body.length);
    out.set(headBytes);
    out.set(body, headBytes.length);
  }
  for (let offset = 0; offset < out.length;) offset += await conn.write(out.subarray(offset));
}
