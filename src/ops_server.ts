/**
 * The operations HTTP server: `/metrics` (Prometheus), `/health`, `/peers`, `/api/stats`, `/api/events`,
 * `/api/history` and the status page at `/`. {@linkcode createOpsHandler} answers `fetch`-style requests and touches no socket;
 * {@linkcode serveOps} is the thin `Deno.serve` shell around it.
 *
 * @module
 */
import { formatSocketAddr, parseSocketAddr, type SocketAddr } from "./wire/address.ts";
import { formatMetrics, METRICS_CONTENT_TYPE, type ProcessMemory } from "./metrics.ts";
import { buildLabels, sampleProcess } from "./process_info.ts";
import type { StatsSnapshot } from "./core/stats.ts";
import type { PeerSummary } from "./core/endpoint.ts";
import { type HttpLimits, serveHttp } from "./ops_http.ts";
import { OpsGuard, type OpsRequestInfo, secureResponse, warnIfExposed } from "./ops_guard.ts";
import { STATUS_PAGE_HTML } from "./status_page.ts";

/** A peer as `/peers` lists it (`wg show`'s view of a peer: where it is, when, how much, how fast). */
export interface OpsPeer {
  /** Node id. */
  id: string;
  /** Declared name. */
  name: string;
  /** Declared software version. */
  version: string;
  /** Observed source address (the NAT's public side when the peer is behind one). */
  addr: string;
  /** Declared listen address. */
  listen_addr: string;
  /**
   * The observed address differs from the declared one: the peer is behind a NAT (a declared `0.0.0.0` or
   * `::` host matches any host; the port must match).
   */
  behind_nat: boolean;
  /** `handshaking` or `authenticated`. */
  state: string;
  /** Network id. */
  network: string;
  /** It proved an Ed25519 key in its handshake (its id is its key's). */
  keyed: boolean;
  /** It speaks p2p_server's extensions. */
  extensions: boolean;
  /** When it registered (its latest handshake), unix seconds. */
  joined_at: number;
  /** Seconds since its latest handshake. */
  handshake_age_seconds: number;
  /** When it was last heard from, unix seconds. */
  last_seen: number;
  /** Seconds since it was last heard from. */
  last_seen_age_seconds: number;
  /** Smoothed round-trip time (ms) from its Acks, or null before the first sample. */
  rtt_ms: number | null;
  /** Datagrams received from it, or null where the core does not count them. */
  datagrams_in: number | null;
  /** Datagrams sent to it, or null where the core does not count them. */
  datagrams_out: number | null;
  /** Bytes received from it, or null where the core does not count them. */
  bytes_in: number | null;
  /** Bytes sent to it, or null where the core does not count them. */
  bytes_out: number | null;
  /** Declared capabilities. */
  capabilities: string[];
}

/**
 * Whether a peer seen at `observed` that declared `declared` sits behind a NAT: the ports differ, or the
 * hosts do (a declared unspecified host, `0.0.0.0` or `::`, matches any).
 */
export function behindNat(observed: string, declared: string): boolean {
  const o = parseSocketAddr(observed);
  const d = parseSocketAddr(declared);
  if (typeof o === "string" || typeof d === "string") return observed !== declared;
  if (o.port !== d.port) return true;
  return d.hostname !== "0.0.0.0" && d.hostname !== "::" && d.hostname !== o.hostname;
}

/**
 * A peer as `/peers` lists it, from the library's summary, its smoothed RTT, the endpoint clock's `now` and
 * that clock's offset to unix time (ms).
 */
export function toOpsPeer(p: PeerSummary, rttMs: number | null, now: number, offset: number): OpsPeer {
  const age = (t: number) => Math.max(0, Math.round((now - t) / 100) / 10);
  return {
    id: p.id,
    name: p.name,
    version: p.version,
    addr: p.addr,
    listen_addr: p.listenAddr,
    behind_nat: behindNat(p.addr, p.listenAddr),
    state: p.state,
    network: p.network,
    keyed: p.keyed,
    extensions: p.extensions,
    joined_at: Math.floor((p.joinedAt + offset) / 1000),
    handshake_age_seconds: age(p.joinedAt),
    last_seen: Math.floor((p.lastSeen + offset) / 1000),
    last_seen_age_seconds: age(p.lastSeen),
    rtt_ms: rttMs === null ? null : Math.round(rttMs * 100) / 100,
    datagrams_in: p.datagramsIn,
    datagrams_out: p.datagramsOut,
    bytes_in: p.bytesIn,
    bytes_out: p.bytesOut,
    capabilities: p.capabilities,
  };
}

/** Who the server is, for the status page header, `/api/stats` and `p2p_server status`. */
export interface OpsServerInfo {
  /** p2p_server's version. */
  version: string;
  /** The server's node id. */
  node_id: string;
  /** The server's name. */
  name: string;
  /** The bound UDP address, `"ip:port"` (the configured one before `listen()`). */
  listen_addr: string;
  /** The Ed25519 public key clients pin, or null with `auth` off. */
  public_key: string | null;
  /** When the server started, unix ms. */
  started_at: number;
  /** Cluster mode: this instance's id; null for a single instance. */
  instance: string | null;
}

/** One sample of the traffic history: the cumulative counters at `time`. */
export interface TrafficSample {
  /** Unix ms. */
  time: number;
  /** Datagrams received so far. */
  datagrams_in: number;
  /** Datagrams sent so far. */
  datagrams_out: number;
  /** Bytes received so far. */
  bytes_in: number;
  /** Bytes sent so far. */
  bytes_out: number;
}

/**
 * The server-side traffic history behind the status page's chart (`/api/history`): one sample of the
 * cumulative counters per interval, the last `capacity` of them, so the chart is full when the page opens.
 */
export class TrafficHistory {
  readonly #capacity: number;
  #items: TrafficSample[] = [];

  /** @param capacity Most samples kept. @default {300} (five minutes at one a second) */
  constructor(capacity = 300) {
    this.#capacity = capacity;
  }

  /** Adds a sample. */
  push(sample: TrafficSample): void {
    this.#items.push(sample);
    if (this.#items.length > this.#capacity) this.#items.splice(0, this.#items.length - this.#capacity);
  }

  /** The samples, oldest first (copies). */
  list(): TrafficSample[] {
    return this.#items.map((s) => ({ ...s }));
  }
}

/** One entry of the recent-events ring (`/api/events`). */
export interface OpsEvent {
  /** Unix time, ms. */
  time: number;
  /** What happened. */
  type: "join" | "leave" | "give_up" | "drop" | "roamed" | "refused" | "sibling" | "listener_error";
  /** The peer or remote address concerned. */
  addr: string;
  /** Node id, when known. */
  id?: string;
  /** Leave reason, give-up message type, drop reason, refusal code, or sibling status. */
  detail?: string;
  /** How many events this entry stands for (drops of one reason within a second are merged). */
  count: number;
}

/** A bounded ring of the most recent {@linkcode OpsEvent}s. */
export class EventRing {
  readonly #capacity: number;
  // A ring: `#next` is where the next event goes; once full, the oldest is overwritten (no shifting).
  readonly #items: OpsEvent[] = [];
  #next = 0;

  /** @param capacity Most events kept. @default {100} */
  constructor(capacity = 100) {
    this.#capacity = Math.max(1, capacity);
  }

  /** Adds an event; a drop with the same reason and address as the newest entry within 1 s is merged. */
  push(event: Omit<OpsEvent, "count">): void {
    const items = this.#items;
    const last = items.length === 0 ? undefined : items[(this.#next - 1 + items.length) % items.length];
    if (
      last && event.type === "drop" && last.type === "drop" && last.detail === event.detail &&
      last.addr === event.addr && event.time - last.time < 1000
    ) {
      last.count++;
      return;
    }
    const entry = { ...event, count: 1 };
    if (items.length < this.#capacity) items.push(entry);
    else items[this.#next] = entry;
    this.#next = (this.#next + 1) % this.#capacity;
  }

  /** The events, oldest first (copies). */
  list(): OpsEvent[] {
    const items = this.#items;
    const start = items.length < this.#capacity ? 0 : this.#next;
    return items.map((_, i) => ({ ...items[(start + i) % items.length]! }));
  }
}

/** What the handler reads from the server. */
export interface OpsSource {
  /** A fresh stats snapshot. */
  stats(): StatsSnapshot;
  /** The registered peers. */
  peers(): OpsPeer[];
  /** The recent events, oldest first. */
  events(): OpsEvent[];
  /** Who the server is. @default {none: `/api/stats` has no `server` object} */
  info?(): OpsServerInfo;
  /** The traffic history, oldest first. @default {none: `/api/history` is empty} */
  history?(): TrafficSample[];
  /** True once the server began closing. */
  closing(): boolean;
}

/** Options of {@linkcode createOpsHandler}. */
export interface OpsHandlerOptions {
  /** Bearer token every route but `/health` and the static page `/` requires. @default {null} */
  token?: string | null;
  /**
   * Host names served besides IP literals and `localhost` (DNS rebinding; see `src/ops_guard.ts`).
   * @default {[]}
   */
  allowedHosts?: readonly string[];
  /** Wall clock (unix ms), for `/api/stats`. @default {Date.now} */
  clock?: () => number;
}

/** Largest `limit` of `/peers`. */
export const PEERS_MAX_LIMIT = 1000;
/** Default `limit` of `/peers`. */
export const PEERS_DEFAULT_LIMIT = 100;

export { constantTimeEqual } from "./ops_guard.ts";

/** Answers a request to the operations routes; `info` says where it came from (see `src/ops_guard.ts`). */
export type OpsHandler = (request: Request, info?: OpsRequestInfo) => Response;

function json(body: unknown, status = 200, headers: Record<string, string> = {}): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { "content-type": "application/json; charset=utf-8", "cache-control": "no-store", ...headers },
  });
}

function parseIndex(value: string | null, fallback: number, min: number, max: number): number | string {
  if (value === null || value === "") return fallback;
  if (!/^\d+$/.test(value)) return `expected an integer from ${min} to ${max}`;
  const n = Number(value);
  return n >= min && n <= max ? n : `expected an integer from ${min} to ${max}`;
}

/**
 * Builds the request handler of the operations routes.
 *
 * @example
 * ```ts
 * import { createOpsHandler } from "./ops_server.ts";
 * import { Stats } from "./core/stats.ts";
 * const handle = createOpsHandler({
 *   stats: () => new Stats(0).snapshot(0, { handshaking: 0, authenticated: 0 }, { handshaking: 0, connected: 0 }),
 *   peers: () => [],
 *   events: () => [],
 *   closing: () => false,
 * });
 * const res = handle(new Request("http://localhost/health"));
 * if (res.status !== 200) throw new Error(`status ${res.status}`);
 * ```
 */
export function createOpsHandler(
  source: OpsSource,
  options: OpsHandlerOptions = {},
): OpsHandler {
  const guard = new OpsGuard({ token: options.token ?? null, allowedHosts: options.allowedHosts ?? [] });
  const route = routes(source, options.clock ?? Date.now);
  return (request, info) => {
    // Host, token and private routes are checked before any route does work.
    const refused = guard.check(request, info);
    if (refused) return secureResponse(refused);
    const response = route(request);
    return secureResponse(response, new URL(request.url).pathname === "/" ? STATUS_PAGE_HTML : undefined);
  };
}

function routes(source: OpsSource, clock: () => number): (request: Request) => Response {
  return (request) => {
    const url = new URL(request.url);
    if (request.method !== "GET" && request.method !== "HEAD") {
      return json({ error: "method not allowed" }, 405, { allow: "GET, HEAD" });
    }
    const path = url.pathname;
    if (path === "/health") {
      if (source.closing()) return json({ status: "shutting_down" }, 503);
      const s = source.stats();
      const body: Record<string, unknown> = {
        // Degraded still serves its own peers (200), so a load balancer keeps it while it can.
        status: s.cluster && s.cluster.state !== "ok" ? "degraded" : "ok",
        peers: s.peers.authenticated + s.peers.handshaking,
        uptime_seconds: s.uptimeSeconds,
      };
      if (s.cluster) {
        body.cluster = {
          state: s.cluster.state,
          instance: s.cluster.instance,
          remote_peers: s.cluster.remotePeers,
          instances: s.cluster.instances,
          last_error: s.cluster.lastError,
        };
      }
      return json(body);
    }
    if (path === "/") {
      // The page holds no data; it reads the token from the URL fragment and sends it on its own requests.
      return new Response(STATUS_PAGE_HTML, {
        headers: { "content-type": "text/html; charset=utf-8", "cache-control": "no-store" },
      });
    }
    switch (path) {
      case "/metrics":
        return new Response(
          formatMetrics(source.stats(), { process: sampleProcess(), build: buildLabels() }),
          {
            headers: { "content-type": METRICS_CONTENT_TYPE, "cache-control": "no-store" },
          },
        );
      case "/peers": {
        const offset = parseIndex(url.searchParams.get("offset"), 0, 0, Number.MAX_SAFE_INTEGER);
        const limit = parseIndex(url.searchParams.get("limit"), PEERS_DEFAULT_LIMIT, 1, PEERS_MAX_LIMIT);
        if (typeof offset === "string") return json({ error: `invalid offset: ${offset}` }, 400);
        if (typeof limit === "string") return json({ error: `invalid limit: ${limit}` }, 400);
        const all = source.peers();
        const page = all.slice(offset, offset + limit);
        const next = offset + page.length < all.length ? offset + page.length : null;
        return json({ peers: page, total: all.length, next_offset: next });
      }
      case "/api/stats":
        return json({
          server_time: clock(),
          closing: source.closing(),
          ...(source.info ? { server: source.info() } : {}),
          stats: source.stats(),
          memory: memory(),
        });
      case "/api/events":
        return json({ events: source.events() });
      case "/api/history": {
        // `since` (unix ms): only the samples after it, so a page polling every second reads one or two.
        const since = parseIndex(url.searchParams.get("since"), 0, 0, Number.MAX_SAFE_INTEGER);
        if (typeof since === "string") return json({ error: `invalid since: ${since}` }, 400);
        const samples = (source.history?.() ?? []).filter((s) => s.time > since);
        return json({ server_time: clock(), interval_ms: 1000, samples });
      }
      default:
        return json({ error: "not found" }, 404);
    }
  };
}

/** A running operations server. */
export interface OpsServer {
  /** The bound TCP address. */
  readonly addr: SocketAddr;
  /** Stops accepting connections and waits for open requests to finish. */
  close(): Promise<void>;
}

/**
 * Serves `handler` over HTTP on `address` (`ip:port`; port 0 picks a free port), with the connection cap,
 * timeouts and accept-error handling of `src/ops_http.ts` (at most `metricsMaxConnections` connections);
 * warns when the address is not loopback and there is no `metricsToken`.
 *
 * @throws {TypeError} for a malformed address.
 * @throws {Deno.errors.AddrInUse} and other bind errors from `Deno.listen`.
 */
export function serveOps(
  address: string,
  handler: OpsHandler,
  options: { metricsMaxConnections?: number; metricsToken?: string | null } = {},
): OpsServer {
  const parsed = parseSocketAddr(address);
  if (typeof parsed === "string") throw new TypeError(`Invalid metrics address "${address}": ${parsed}`);
  const limits: HttpLimits = options.metricsMaxConnections
    ? { maxConnections: options.metricsMaxConnections }
    : {};
  const server = serveHttp(parsed, handler, limits);
  const addr = { hostname: server.addr.hostname, port: server.addr.port };
  warnIfExposed(formatSocketAddr(addr), options.metricsToken ?? null);
  return { addr, close: () => server.close() };
}

/** The process's memory as the runtime reports it (bytes). */
function memory(): ProcessMemory {
  const m = Deno.memoryUsage();
  return { rss: m.rss, heapUsed: m.heapUsed, heapTotal: m.heapTotal };
}
