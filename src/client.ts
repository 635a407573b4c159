/**
 * `P2PClient`: a peer that registers with a p2p_server (or any deployed server speaking the same protocol),
 * built on the same core as the server, in the client role.
 *
 * @module
 */
import { chooseCrypto } from "./openssl.ts";
import {
  formatSocketAddr,
  isUnspecified,
  loopbackFor,
  parseSocketAddr,
  type SocketAddr,
} from "./wire/address.ts";
import { type Config, resolveConfig } from "./config.ts";
import { bindUdp, monotonicNow, UdpDriver } from "./driver.ts";
import { Emitter } from "./emitter.ts";
import { Endpoint, type EndpointEvent } from "./core/endpoint.ts";
import type { DiscoveryPage, RequestKind } from "./core/types.ts";
import type { Strategy } from "./core/strategy.ts";
import { ConnectionTimeoutError, HandshakeError, RemoteError } from "./errors.ts";
import { makeNodeInfo } from "./identity.ts";
import type { Json, NodeInfo, PeerInfo } from "./wire/mod.ts";
import type { StatsSnapshot } from "./core/stats.ts";
import { fromBase64Url, generateIdentity } from "./core/auth.ts";
import type { NatClass } from "./core/nat_class.ts";
import { ClientNat } from "./client_nat.ts";

export type {
  ClientEvents,
  ClientOptions,
  ClientSendOptions,
  DirectPeer,
  DiscoveryQuery,
} from "./client_options.ts";
import type {
  ClientEvents,
  ClientOptions,
  ClientSendOptions,
  DirectPeer,
  DiscoveryQuery,
} from "./client_options.ts";

/** Most pages {@linkcode P2PClient.discover} follows (a bound on a misbehaving server). */
const MAX_DISCOVERY_PAGES = 1_000;

export type { DiscoveryPage } from "./core/types.ts";

interface Waiter<T> {
  resolve: (value: T) => void;
  reject: (error: Error) => void;
}

/**
 * A peer of a p2p_server.
 *
 * @example
 * ```ts
 * import { P2PClient, P2PServer } from "../mod.ts";
 * await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
 * const { port } = await server.listen();
 * await using client = new P2PClient({ server: `127.0.0.1:${port}`, name: "doc" });
 * await client.connect();
 * const rtt = await client.ping();
 * const peers = await client.discover();
 * if (!(rtt >= 0) || peers.length !== 1) throw new Error("unexpected");
 * await client.disconnect();
 * ```
 */
export class P2PClient {
  #pinnedKey: Uint8Array | null = null;
  #observedAddr: string | null = null;
  readonly #server: SocketAddr;
  readonly #serverKey: string;
  readonly #config: Config;
  readonly #endpoint: Endpoint;
  readonly #events = new Emitter<ClientEvents>();
  readonly #signal: AbortSignal | undefined;
  #driver: UdpDriver | null = null;
  #serverInfo: NodeInfo | null = null;
  #connecting: PromiseWithResolvers<NodeInfo> | null = null;
  /** ping(), discoverPage() and introduce() calls waiting, by the core's request id. */
  #requests = new Map<number, Waiter<never>>();
  #sends = new Map<string, Waiter<void>>();
  /** Direct peers by node id, and by address key. */
  #direct = new Map<string, SocketAddr>();
  #directByAddr = new Map<string, string>();

  #closing: Promise<void> | null = null;
  /** Classification and binding lifetime measurement of our NAT. */
  readonly #natSide: ClientNat;

  /**
   * A client that is not connected yet ({@linkcode P2PClient.connect} binds its socket and registers).
   *
   * @param options Server address, identity and timing.
   * @throws {ConfigError} (a `TypeError`) for a bad address or timing value.
   */
  constructor(options: ClientOptions = {}) {
    const serverText = options.server ?? "127.0.0.1:8080";
    const parsed = parseSocketAddr(serverText);
    if (typeof parsed === "string") throw new TypeError(`Invalid server address "${serverText}": ${parsed}`);
    this.#server = parsed.hostname === "localhost" ? { hostname: "127.0.0.1", port: parsed.port } : parsed;
    this.#serverKey = formatSocketAddr(this.#server);
    const bind = options.bind ?? (this.#server.hostname.includes(":") ? "[::]:0" : "0.0.0.0:0");
    const bindProblem = parseSocketAddr(bind);
    if (typeof bindProblem === "string") {
      throw new TypeError(`Invalid bind address "${bind}": ${bindProblem}`);
    }
    const partial: Partial<Config> = { ...options.reliability, listenAddress: bind, enableDiscovery: false };
    if (options.retransmitSchedule) {
      partial.retransmitSchedule = options.retransmitSchedule;
      partial.retransmitPolicy = "schedule";
    }
    if (options.heartbeatInterval !== undefined) partial.heartbeatInterval = options.heartbeatInterval;
    if (options.connectionTimeout !== undefined) partial.connectionTimeout = options.connectionTimeout;
    if (options.cryptoBackend !== undefined) partial.cryptoBackend = options.cryptoBackend;
    this.#config = resolveConfig(partial);
    this.#signal = options.signal;
    if (options.serverKey !== undefined) {
      const pinned = fromBase64Url(options.serverKey, 32);
      if (!pinned) {
        throw new TypeError(`Invalid serverKey "${options.serverKey}": not a base64url Ed25519 key`);
      }
      this.#pinnedKey = pinned;
    }
    const identity = options.identity === "generate" || (options.identity === undefined && this.#pinnedKey)
      ? generateIdentity()
      : options.identity;
    if (identity && options.nodeId !== undefined && options.nodeId.toLowerCase() !== identity.nodeId) {
      throw new TypeError(`Invalid nodeId "${options.nodeId}": a keyed client's id is its key's`);
    }
    const chosen = chooseCrypto(this.#config.cryptoBackend);
    this.#endpoint = new Endpoint({
      role: "client",
      config: this.#config,
      node: makeNodeInfo(identity ? { ...options, nodeId: identity.nodeId } : options, "p2p_client", bind),
      newId: () => crypto.randomUUID(),
      now: monotonicNow(),
      random: Math.random,
      deriveX25519: chosen.deriveX25519,
      macKey: chosen.macKey,
      ...(identity ? { identity } : {}),
    });
    this.#natSide = new ClientNat(this.#endpoint, this.#server, this.#events, {
      classify: options.classifyNat ?? true,
      lifetime: options.measureBindingLifetime ?? true,
    });
  }

  /**
   * This client's NAT as the server classified it (see {@linkcode classifyNat}) and, once measured, its
   * binding lifetime (see {@linkcode measureBindingLifetime}); `unknown` behaviours until then, or when the
   * server cannot tell.
   */
  get nat(): NatClass {
    return this.#natSide.nat;
  }

  /**
   * Seconds between the keepalives this client sends the server: its heartbeat, or the shorter interval
   * the server suggested (its HandshakeResponse, a classification or a binding lifetime result).
   */
  get keepaliveInterval(): number {
    const path = this.#endpoint.path(this.#server);
    return path ? path.keepaliveMs / 1000 : this.#config.heartbeatInterval;
  }

  /**
   * This client's public address as the server sees it (`"ip:port"`: its NAT's mapping), from the server's
   * HandshakeResponse; null before connecting or when the server does not say.
   */
  get observedAddr(): string | null {
    return this.#observedAddr;
  }

  /** The server's address. */
  get server(): SocketAddr {
    return this.#server;
  }

  /** This client's NodeInfo. */
  get node(): NodeInfo {
    return this.#endpoint.node;
  }

  /** The server's NodeInfo, once connected. */
  get serverInfo(): NodeInfo | null {
    return this.#serverInfo;
  }

  /** The bound local address. @throws {Error} before {@linkcode connect}. */
  get localAddr(): SocketAddr {
    if (!this.#driver) throw new Error("Client is not connected: call connect() first");
    return this.#driver.localAddr;
  }

  /**
   * Subscribes to an event; returns the unsubscribe function. A listener that throws (or rejects) does not
   * stop the others: its error is logged and emitted as an `error` event (`code` `"listener_error"`).
   */
  on<K extends keyof ClientEvents>(type: K, listener: (value: ClientEvents[K]) => void): () => void {
    return this.#events.on(type, listener);
  }

  /** A fresh snapshot of the client's counters. */
  getStats(): StatsSnapshot {
    return this.#endpoint.getStats(monotonicNow());
  }

  /**
   * Handshakes with the server.
   *
   * @returns The server's NodeInfo.
   * @throws {ConnectionTimeoutError} `connection timeout to <addr>` when the server does not answer.
   * @throws {HandshakeError} when the server refuses (e.g. `handshake failed: node ID already exists`).
   * @throws {BindError} when the local socket cannot be bound.
   */
  connect(): Promise<NodeInfo> {
    if (this.#closing) return Promise.reject(new Error("Client is closed"));
    if (this.#connecting) return this.#connecting.promise;
    if (!this.#driver) {
      const bind = parseSocketAddr(this.#config.listenAddress) as SocketAddr;
      const driver = new UdpDriver(this.#endpoint, bindUdp(bind), (e) => this.#onEvent(e));
      this.#driver = driver;
      const local = driver.localAddr;
      const reported = isUnspecified(local.hostname) && isLoopback(this.#server.hostname)
        ? { hostname: loopbackFor(this.#server.hostname), port: local.port }
        : local;
      this.#endpoint.setListenAddr(formatSocketAddr(reported));
      driver.start();
      this.#signal?.addEventListener("abort", () => void this.close(), { once: true });
    }
    this.#connecting = Promise.withResolvers();
    const pinnedKey = this.#pinnedKey;
    this.#driver.run((now) => this.#endpoint.connect(now, this.#server, pinnedKey ? { pinnedKey } : {}));
    return this.#connecting.promise;
  }

  /**
   * Pings the server and measures the round trip. Retries on the retransmit schedule.
   *
   * @returns Round-trip time in milliseconds (of the try that was answered).
   * @throws {ConnectionTimeoutError} when no Pong arrives.
   */
  ping(): Promise<number> {
    return this.#request<number>({ kind: "ping" });
  }

  /** Makes a request through the core, which retries it and reports its outcome (see `#onRequest`). */
  #request<T>(spec: Parameters<Endpoint["request"]>[2]): Promise<T> {
    const driver = this.#requireConnected();
    const id = driver.run((now) => this.#endpoint.request(now, this.#server, spec));
    const { promise, resolve, reject } = Promise.withResolvers<T>();
    this.#requests.set(id, { resolve, reject } as Waiter<never>);
    return promise;
  }

  /**
   * Asks the server for the peers of this client's network. With options, one page (see
   * {@linkcode discoverPage}). Without, every peer: from a p2p_server (which keeps each answer within one
   * datagram) page after page by cursor; from a server without paging, its one answer (upstream's array).
   *
   * @throws {ConnectionTimeoutError} when no answer arrives.
   */
  async discover(options?: DiscoveryQuery): Promise<PeerInfo[]> {
    if (options) return (await this.discoverPage(options)).peers;
    if (!this.#pagedServer()) return (await this.discoverPage()).peers;
    const all: PeerInfo[] = [];
    let cursor: string | null = null;
    for (let i = 0; i < MAX_DISCOVERY_PAGES; i++) {
      const page: DiscoveryPage = await this.discoverPage(cursor === null ? {} : { cursor });
      all.push(...page.peers);
      if (page.nextCursor === null) break;
      cursor = page.nextCursor;
    }
    return all;
  }

  /** Whether the server speaks p2p_server's extensions (and so pages by cursor). */
  #pagedServer(): boolean {
    return this.#endpoint.path(this.#server)?.extensions ?? false;
  }

  /** One page of the peers of this client's network, with where the next page starts. */
  discoverPage(options?: DiscoveryQuery): Promise<DiscoveryPage> {
    return this.#request<DiscoveryPage>({ kind: "discovery", query: options ? { ...options } : null });
  }

  /**
   * Sends Data through the server: echoed back when `to` is null, routed to the peer `to` otherwise. With
   * `reliable` (the default) the promise settles when the server acknowledges it.
   *
   * @throws {ConnectionTimeoutError} when a reliable message is never acknowledged.
   */
  send(data: Json, options: ClientSendOptions = {}): Promise<void> {
    const driver = this.#requireConnected();
    const payload: Json = options.to ? { to: options.to, data } : data;
    const ordered = options.ordered ?? false;
    const reliable = (options.reliable ?? true) || ordered;
    const msg = driver.run((now) =>
      this.#endpoint.send(now, this.#server, "Data", payload, { reliable, ordered })
    );
    if (!reliable) return Promise.resolve();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#sends.set(msg.id, { resolve, reject });
    return promise;
  }

  /**
   * Asks the server to classify this client's NAT (its mapping and filtering behaviour, RFC 4787): the
   * server needs `stun_alternate_port` (and `stun_alternate_address` for the full answer); the exchange
   * takes about 1.6 s. Resolves with the class (also {@linkcode nat} and the `nat` event); with `unknown`
   * behaviours when the server cannot classify or does not answer within 5 s. Done automatically after
   * {@linkcode connect} when the server offers it (option `classifyNat`).
   *
   * @throws {RemoteError} `rate_limited` when the server ran a check for this client in the last 30 s or
   *   has too many under way.
   */
  classifyNat(): Promise<NatClass> {
    return this.#natSide.classify(this.#requireConnected());
  }

  /**
   * Asks the server to measure how long this client's NAT keeps an idle UDP binding (the server offers it
   * unless its `nat_lifetime_gaps_ms` is `[]`): a second, sacrificial socket is bound beside the main one,
   * the server probes it after ever longer gaps of silence (5 s to 2 min by default, about 6.5 minutes in
   * all) until a probe goes unanswered, and the socket closes at the end. Resolves with {@linkcode nat},
   * whose `bindingLifetimeMs` is the longest gap the binding survived (half the first gap when it survived
   * none); the client then keeps its main mapping open with the keepalive the server suggests with it
   * (below half that lifetime, see {@linkcode keepaliveInterval}), and emits `natLifetime`. Done
   * automatically after connecting (after the classification, when that runs too) when offered (option
   * `measureBindingLifetime`).
   *
   * @throws {RemoteError} `rate_limited` when the server measured this client in the last 10 minutes or
   *   has too many measurements under way.
   */
  measureBindingLifetime(): Promise<NatClass> {
    return this.#natSide.measureLifetime(this.#requireConnected());
  }

  /**
   * Asks the server to introduce this client to `nodeId` (another peer of its network, also speaking
   * p2p_server's extensions) and punches a path to it. How is the pair's `strategy`, chosen by both sides
   * alike from the card's two NAT classifications (docs/nat.md): `direct` (both probe each other's candidate
   * addresses at once for up to 3 s; also whenever either NAT is unknown), `simultaneous` (the same from the
   * card's shared start time), `predict` (also the next ports of a NAT that allocates them in sequence) or
   * `relay`. The first path that answers carries a direct, authenticated handshake. Resolves once the direct
   * connection is up, with the strategy; then {@linkcode sendDirect} reaches the peer without the server,
   * and its Data arrives on `data` with `fromId` set. When no path is found, rejects with a `HandshakeError`
   * `punch_failed` whose `strategy` says how it tried; under `relay` it rejects at once, nothing punched.
   * Either way `send(data, { to })` relays through the server instead.
   */
  introduce(nodeId: string, options: { timeoutMs?: number } = {}): Promise<DirectPeer> {
    this.#requireConnected();
    const id = nodeId.toLowerCase();
    const known = this.#direct.get(id);
    if (known) return Promise.resolve({ nodeId: id, addr: formatSocketAddr(known) });
    const spec = options.timeoutMs === undefined
      ? { kind: "introduce" as const, peerId: id }
      : { kind: "introduce" as const, peerId: id, timeoutMs: options.timeoutMs };
    return this.#request<DirectPeer>(spec);
  }

  /** Sends Data straight to a direct peer (see {@linkcode introduce}); reliable by default. */
  sendDirect(nodeId: string, data: Json, options: { reliable?: boolean } = {}): Promise<void> {
    const driver = this.#requireConnected();
    const addr = this.#direct.get(nodeId.toLowerCase());
    if (!addr) return Promise.reject(new Error(`No direct connection to ${nodeId}: call introduce() first`));
    const reliable = options.reliable ?? true;
    const msg = driver.run((now) => this.#endpoint.send(now, addr, "Data", data, { reliable }));
    if (!reliable) return Promise.resolve();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#sends.set(msg.id, { resolve, reject });
    return promise;
  }

  /** The direct peers, by node id, with their addresses. */
  get directPeers(): DirectPeer[] {
    return [...this.#direct].map(([nodeId, addr]) => ({ nodeId, addr: formatSocketAddr(addr) }));
  }

  #addDirect(nodeId: string, addr: SocketAddr): void {
    const id = nodeId.toLowerCase();
    if (this.#direct.has(id)) return;
    this.#direct.set(id, addr);
    this.#directByAddr.set(formatSocketAddr(addr), id);
    this.#events.emit("direct", { nodeId: id, addr: formatSocketAddr(addr) });
  }

  /** Tells the server this client leaves, and closes the socket. */
  async disconnect(reason = "client disconnecting"): Promise<void> {
    if (this.#driver && !this.#driver.closed && this.#serverInfo) {
      this.#driver.run((now) => this.#endpoint.disconnect(now, this.#server, reason));
    }
    await this.close();
  }

  /** Closes the socket without telling the server; pending requests reject. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      const closed = new Error("Client is closed");
      this.#connecting?.reject(closed);
      this.#connecting = null;
      for (const w of this.#requests.values()) w.reject(closed);
      for (const w of this.#sends.values()) w.reject(closed);
      this.#natSide.close(closed);
      this.#requests.clear();
      this.#sends.clear();
      const wasConnected = this.#serverInfo !== null;
      this.#serverInfo = null;
      if (this.#driver) {
        this.#driver.run((now) => this.#endpoint.shutdown(now, "client closing"));
        await this.#driver.close();
      }
      if (wasConnected) this.#events.emit("disconnected", { reason: "closed" });
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #requireConnected(): UdpDriver {
    if (!this.#driver || this.#closing || !this.#serverInfo) {
      throw new Error(`Client is not connected to ${this.#serverKey}: call connect() first`);
    }
    return this.#driver;
  }

  /** A request's outcome, from the core: settles its promise. */
  #onRequest(id: number, outcome: { value: unknown } | { error: Error }): void {
    const waiter = this.#requests.get(id);
    if (!waiter) return; // closed already
    this.#requests.delete(id);
    if ("error" in outcome) waiter.reject(outcome.error);
    else waiter.resolve(outcome.value as never);
  }

  #requestError(kind: RequestKind, reason: string, error: string, code: string, strategy?: Strategy): Error {
    if (reason === "refused") return new RemoteError(error, code);
    if (kind === "introduce" && reason !== "closed") {
      return new HandshakeError(error, "punch_failed", strategy);
    }
    return new ConnectionTimeoutError(this.#serverKey);
  }

  #onEvent(event: EndpointEvent): void {
    switch (event.type) {
      case "connected":
        if (formatSocketAddr(event.addr) !== this.#serverKey) {
          // Our direct handshake with an introduced peer (the core checked it is that node; a keyed one proves
          // its id with its key).
          this.#addDirect(event.node.id, event.addr);
          break;
        }
        this.#serverInfo = event.node;
        this.#observedAddr = event.observedAddr;
        this.#connecting?.resolve(event.node);
        this.#connecting = null;
        this.#natSide.connected(this.#driver!, event);
        break;
      case "natChecked":
        if (formatSocketAddr(event.from) === this.#serverKey) this.#natSide.checked(this.#driver!, event);
        break;
      case "natLifetime":
        if (formatSocketAddr(event.from) === this.#serverKey) this.#natSide.measured(this.#driver!, event);
        break;
      case "connectFailed":
        if (formatSocketAddr(event.addr) !== this.#serverKey) break; // a direct attempt; introduce() times out
        this.#connecting?.reject(
          event.code === "timeout"
            ? new ConnectionTimeoutError(this.#serverKey)
            : new HandshakeError(event.error, event.code),
        );
        this.#connecting = null;
        break;
      case "requestDone":
        this.#onRequest(event.id, {
          value: event.kind === "ping"
            ? event.rttMs
            : event.kind === "discovery"
            ? event.page
            : { nodeId: event.nodeId, addr: event.addr, strategy: event.strategy },
        });
        break;
      case "requestFailed":
        this.#onRequest(event.id, {
          error: this.#requestError(event.kind, event.reason, event.error, event.code, event.strategy),
        });
        break;
      case "pong":
      case "discovery":
        break; // answers nobody asked for (our requests' answers arrive as requestDone)
      case "delivered": {
        const waiter = this.#sends.get(event.id);
        if (!waiter) break;
        this.#sends.delete(event.id);
        waiter.resolve();
        break;
      }
      case "gaveUp": {
        const waiter = this.#sends.get(event.id);
        if (!waiter) break;
        this.#sends.delete(event.id);
        waiter.reject(new ConnectionTimeoutError(this.#serverKey));
        break;
      }
      case "data":
        this.#events.emit("data", {
          from: event.from,
          fromId: event.fromId ?? this.#directByAddr.get(formatSocketAddr(event.from)) ?? null,
          payload: event.payload,
          message: event.message,
        });
        break;
      case "error": {
        const code = event.error.code;
        // The answer to our classification or measurement request: it settles as the event that follows.
        if (this.#natSide.expects(code)) break;
        // A relayed message that could not be delivered, or exceeded the relay quota, is named by its id:
        // its send() rejects (it was never acknowledged).
        const p = event.message.payload;
        const about = p !== null && typeof p === "object" && !Array.isArray(p) && typeof p.id === "string"
          ? this.#sends.get(p.id)
          : undefined;
        if (about && typeof p === "object" && p !== null && !Array.isArray(p)) {
          this.#sends.delete(p.id as string);
          about.reject(new RemoteError(event.error.error, code));
          this.#events.emit("error", event.error);
          break;
        }
        // Errors that refuse a request (bad_request, not_registered, cannot_introduce) arrive as its
        // requestFailed; any other goes to "error" listeners (e.g. unknown_recipient).
        this.#events.emit("error", event.error);
        break;
      }
      case "linkClosed":
        if (formatSocketAddr(event.addr) !== this.#serverKey) {
          const id = this.#directByAddr.get(formatSocketAddr(event.addr));
          this.#directByAddr.delete(formatSocketAddr(event.addr));
          if (id) this.#direct.delete(id);
          break;
        }
        this.#serverInfo = null;
        this.#events.emit("disconnected", { reason: event.reason });
        break;
      case "introduced":
      case "punched":
        break; // the core probes the candidates and, when we asked, shakes hands over the path that answers
      case "punchFailed":
        break; // an introduce() of ours fails through its requestFailed
      case "peerJoined":
        // An introduced peer completed its direct handshake with us (we did not ask; it did).
        this.#addDirect(event.peer.id, parseSocketAddr(event.peer.addr) as SocketAddr);
        break;
      case "retry":
        this.#events.emit("retry", {
          to: formatSocketAddr(event.to),
          messageType: event.messageType,
          tries: event.tries,
        });
        break;
      case "roamed":
        break;
      case "peerLeft":
      case "dropped":
        break;
    }
  }
}

function isLoopback(hostname: string): boolean {
  return hostname === "::1" || hostname.startsWith("127.");
}
