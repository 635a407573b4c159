/**
 * `P2PServer`: the handshake and rendezvous server as a library.
 *
 * @module
 */
import { clip, duplicatesLogged, logDropped, logDuplicate, RefusalLog } from "./datagram_log.ts";
import { formatSocketAddr, parseSocketAddr, type SocketAddr } from "./wire/address.ts";
import { type Config, ConfigError, resolveConfig } from "./config.ts";
import { generateIdentity, type Identity } from "./core/auth.ts";
import { openIdentityFile } from "./key_file.ts";
import { bindAlternates, bindUdp, monotonicNow, UdpDriver } from "./driver.ts";
import { requireIoBackend } from "./udp_mmsg.ts";
import { chooseCrypto, type ChosenCrypto } from "./openssl.ts";
import { Emitter, type ListenerError } from "./emitter.ts";
import { Endpoint, type EndpointEvent, type LeaveReason, type PeerSummary } from "./core/endpoint.ts";
import { BindError, ConnectionTimeoutError, HandshakeError } from "./errors.ts";
import { type IdentityOptions, makeNodeInfo, VERSION } from "./identity.ts";
import type { OpsRequestInfo } from "./ops_guard.ts";
import type { Json, Message, NodeInfo } from "./wire/mod.ts";
import type { GiveUpReason, StatsSnapshot } from "./core/stats.ts";
import {
  createOpsHandler,
  EventRing,
  type OpsHandler,
  type OpsPeer,
  type OpsServer,
  type OpsServerInfo,
  serveOps,
  toOpsPeer,
  TrafficHistory,
} from "./ops_server.ts";
import { getLogger } from "./deps/log.ts";
import { ClusterNode, type OpenClusterLink } from "./cluster.ts";

const log = getLogger(["p2p_server", "server"]);
/** What remotes say (their Error texts): anyone can send them, so throttled and cut short. */
const remoteLog = getLogger(["p2p_server", "remote"]);

/** Capabilities every p2p_server announces. */
export const SERVER_CAPABILITIES: readonly string[] = ["server", "discovery", "routing"];

/** Options of {@linkcode P2PServer}: any {@linkcode Config} field, plus identity and lifetime. */
export interface ServerOptions extends Partial<Config>, Omit<IdentityOptions, "networkId"> {
  /** Closes the server when aborted. */
  signal?: AbortSignal;
  /**
   * The server's key-based identity; its node id becomes the server's. Without it, the key in
   * `identityFile` is used (created on first use), else a new key each run (unless `auth` is `"off"`).
   * @default {from identityFile, else generated}
   */
  identity?: Identity;
  /**
   * Cluster mode: how to reach Redis (the default opens `cluster.redisUrl` with the npm client; tests may
   * pass another link). The Redis client is loaded only when cluster mode is on. @default {openRedisLink}
   */
  clusterLink?: OpenClusterLink;
}

/** Events a {@linkcode P2PServer} emits. */
export interface ServerEvents extends Record<string, unknown> {
  /** A peer completed its handshake. */
  peerJoined: PeerSummary;
  /** A peer left (Disconnect, timeout, replaced by another node on its address, or shutdown). */
  peerLeft: { peer: PeerSummary; reason: LeaveReason };
  /** A registered peer sent Data (echoed back, or routed when `to` named another peer). */
  data: { from: SocketAddr; fromId: string | null; to: string | null; payload: Json; message: Message };
  /** A reliable message was given up: its deadline passed (`deadline`), its tries ran out under the spec's
   * count-based schedule (`tries`), or the peer's send queue was full (`queue_full`). */
  gaveUp: { to: SocketAddr; id: string; messageType: string; tries: number; reason: GiveUpReason };
  /** A sibling server (or a `connectToPeer` target) accepted our handshake. */
  connected: { addr: SocketAddr; node: NodeInfo };
  /** A listener of another event threw (also logged at error level); see {@linkcode ListenerError}. */
  error: ListenerError;
}

/**
 * The UDP handshake server.
 *
 * @example
 * ```ts
 * import { P2PServer } from "../mod.ts";
 * await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
 * const addr = await server.listen();
 * if (addr.port === 0) throw new Error("not bound");
 * if (server.getStats().peers.authenticated !== 0) throw new Error("unexpected peers");
 * ```
 */
export class P2PServer {
  readonly #config: Config;
  /** The X25519 and HMAC implementations `crypto_backend` chose. */
  readonly #crypto: ChosenCrypto;
  readonly #endpoint: Endpoint;
  readonly #identity: Identity | null;
  readonly #events = new Emitter<ServerEvents>((report) =>
    this.#recent.push({ time: Date.now(), type: "listener_error", addr: "-", detail: report.error })
  );
  readonly #signal: AbortSignal | undefined;
  #driver: UdpDriver | null = null;
  #closing: Promise<void> | null = null;
  #finished: PromiseWithResolvers<void> = Promise.withResolvers();
  #connects = new Map<string, PromiseWithResolvers<NodeInfo>>();
  #ops: OpsServer | null = null;
  #opsHandler: OpsHandler;
  #recent = new EventRing(100);
  #history = new TrafficHistory(300);
  readonly #refusals = new RefusalLog();
  readonly #startedAt = Date.now();
  #cluster: ClusterNode | null = null;
  readonly #clusterLink: OpenClusterLink | null;

  /** A server that is not listening yet ({@linkcode P2PServer.listen} binds it).
   * @param options Configuration, identity and lifetime.
   * @throws {ConfigError} (a `TypeError`) for a bad configuration value.
   */
  constructor(options: ServerOptions = {}) {
    const { signal, nodeId, name, version, capabilities, metadata, ...rest } = options;
    const { identity: given, clusterLink, ...config } = rest;
    this.#config = resolveConfig(config);
    requireIoBackend(this.#config.ioBackend);
    this.#crypto = chooseCrypto(this.#config.cryptoBackend);
    this.#signal = signal;
    let identity: Identity | undefined;
    if (this.#config.auth !== "off") {
      const file = this.#config.identityFile;
      if (given) identity = given;
      else if (file === null) identity = generateIdentity();
      else {
        const opened = openIdentityFile(file);
        identity = opened.identity;
        if (opened.created) {
          log.info("created identity key file {path} (mode 0600) for node id {id}", {
            path: file,
            id: identity.nodeId,
          });
        }
      }
      if (nodeId !== undefined && nodeId.toLowerCase() !== identity.nodeId) {
        throw new ConfigError(
          `Invalid option "nodeId": a keyed server's id is its key's ("${identity.nodeId}"), got "${nodeId}"`,
          "nodeId",
        );
      }
    }
    this.#identity = identity ?? null;
    this.#clusterLink = clusterLink ?? null;
    const instance = this.#config.cluster ? this.#config.cluster.instanceId ?? crypto.randomUUID() : null;
    const node = makeNodeInfo(
      {
        nodeId: identity?.nodeId ?? nodeId,
        name: name ?? "p2p_server",
        version,
        metadata,
        capabilities: capabilities ?? [...SERVER_CAPABILITIES],
      } as IdentityOptions,
      "p2p_server",
      this.#config.listenAddress,
    );
    this.#endpoint = new Endpoint({
      role: "server",
      config: this.#config,
      node,
      newId: () => crypto.randomUUID(),
      now: monotonicNow(),
      random: Math.random,
      cookieSecret: crypto.getRandomValues(new Uint8Array(32)),
      deriveX25519: this.#crypto.deriveX25519,
      macKey: this.#crypto.macKey,
      ...(identity ? { identity } : {}),
      ...(instance !== null ? { instance } : {}),
    });
    if (this.#config.cluster && instance !== null) {
      const endpoint = this.#endpoint;
      this.#cluster = new ClusterNode({ ...this.#config.cluster, instanceId: instance }, {
        endpoint,
        run: (command) =>
          this.#driver && !this.#driver.closed ? this.#driver.run(command) : command(monotonicNow()),
        toUnixMs: (t) => t + Date.now() - monotonicNow(),
        address: () => this.#driver ? formatSocketAddr(this.#driver.localAddr) : this.#config.listenAddress,
        fatal: (error) => void this.close(error.message),
      });
    }
    this.#opsHandler = createOpsHandler({
      stats: () => this.getStats(),
      peers: () => this.#opsPeers(),
      events: () => this.#recent.list(),
      info: () => this.#info(),
      history: () => this.#history.list(),
      closing: () => this.#closing !== null || (this.#driver?.closed ?? false),
    }, { token: this.#config.metricsToken, allowedHosts: this.#config.metricsAllowedHosts });
  }

  /** The resolved configuration. */
  get config(): Readonly<Config> {
    return this.#config;
  }
  /** The server's Ed25519 public key (unpadded base64url) for clients to pin, or null when `auth` is off. */
  get publicKey(): string | null {
    return this.#identity?.publicKeyText ?? null;
  }
  /** This server's NodeInfo. */
  get node(): NodeInfo {
    return this.#endpoint.node;
  }
  /** Cluster mode: this instance's id; null for a single instance. */
  get instanceId(): string | null {
    return this.#cluster?.instance ?? null;
  }
  /** The bound address. @throws {Error} before {@linkcode listen}. */
  get addr(): SocketAddr {
    if (!this.#driver) throw new Error("Server is not listening: call listen() first");
    return this.#driver.localAddr;
  }
  /** The bound address of the operations HTTP server, or null when `metricsAddress` is not set. */
  get metricsAddr(): SocketAddr | null {
    return this.#ops?.addr ?? null;
  }

  /** Why the server closed itself (cluster: an `InstanceIdInUseError` at start), or null. */
  get stoppedBy(): Error | null {
    return this.#cluster?.fatalError ?? null;
  }
  /** Settles when the server has closed. */
  get finished(): Promise<void> {
    return this.#finished.promise;
  }

  /**
   * Binds `listenAddress` and starts serving. With `enableDiscovery`, probes the discovery port range for
   * sibling servers. With `metricsAddress`, also serves the operations HTTP routes there.
   *
   * @returns The bound address (useful with port 0).
   * @throws {BindError} `failed to bind <addr>: <reason>` (for the UDP or the metrics address).
   * @throws {UnstableApiError} when Deno runs without `--unstable-net` (UDP sockets are unstable in Deno).
   */
  listen(): Promise<SocketAddr> {
    if (this.#driver) return Promise.resolve(this.#driver.localAddr);
    const c = this.#config;
    const main = bindUdp(parseSocketAddr(c.listenAddress) as SocketAddr, c.ioBackend);
    const alt = { port: c.stunAlternatePort, address: c.stunAlternateAddress };
    const sockets = bindAlternates(main, alt, c.ioBackend);
    if (c.metricsAddress !== null) {
      try {
        this.#ops = serveOps(c.metricsAddress, this.#opsHandler, c);
      } catch (error) {
        for (const socket of sockets) socket.close();
        const why = `${(error as Error).message} (metrics_address, TCP)`;
        throw new BindError(c.metricsAddress, why, { cause: error });
      }
    }
    const driver = new UdpDriver(this.#endpoint, sockets, (e) => this.#onEvent(e));
    this.#driver = driver;
    const local = driver.localAddr;
    this.#endpoint.setListenAddr(formatSocketAddr(local));
    this.#endpoint.setSockets(driver.localAddrs);
    this.#endpoint.reportDuplicates(duplicatesLogged());
    driver.start();
    log.info("listening on {addr}", { addr: formatSocketAddr(local) });
    const alternates = driver.localAddrs.slice(1).map(formatSocketAddr).join(", ");
    if (alternates) log.info("STUN alternates on {alternates}", { alternates });
    if (this.#ops) log.info("metrics on http://{addr}/metrics", { addr: formatSocketAddr(this.#ops.addr) });
    if (this.#config.auth !== "off") log.info("crypto: {name}", { name: this.#crypto.name });
    // Periodic work is ticks of the core (the driver's one timer): the stats line, and the status page's
    // chart (one sample a second, five minutes of them, kept here so it is full on opening).
    this.#sampleTraffic();
    driver.run((now) => {
      this.#endpoint.every(now, "stats", this.#config.statsInterval * 1000);
      this.#endpoint.every(now, "history", 1000);
    });
    if (this.#config.enableDiscovery) driver.run((now) => this.#endpoint.probeSiblings(now, local));
    const cluster = this.#cluster;
    if (cluster) {
      // The Redis client is loaded on first use: a single instance never loads it (nor needs its permissions).
      const open = this.#clusterLink
        ? Promise.resolve(this.#clusterLink)
        : import("./deps/redis.ts").then((m) => m.openRedisLink);
      void open.then((o) => cluster.start(o), (error) => {
        log.error("cluster: cannot load the Redis client: {error}", { error: (error as Error).message });
      });
    }
    this.#signal?.addEventListener("abort", () => void this.close(), { once: true });
    if (this.#signal?.aborted) void this.close();
    return Promise.resolve(local);
  }

  /** Listens (if not yet listening) and resolves when the server has closed. */
  async run(): Promise<void> {
    await this.listen();
    await this.finished;
  }

  /**
   * Handshakes with another server (or any peer that accepts handshakes) at `addr`, so that each lists the
   * other.
   *
   * @returns The remote's NodeInfo.
   * @throws {ConnectionTimeoutError} when it does not answer.
   * @throws {HandshakeError} when it refuses.
   */
  connectToPeer(addr: string | SocketAddr): Promise<NodeInfo> {
    const driver = this.#requireDriver();
    const target = typeof addr === "string" ? parseSocketAddr(addr) : addr;
    if (typeof target === "string") {
      return Promise.reject(new TypeError(`Cannot connect to "${addr}": ${target}`));
    }
    const key = formatSocketAddr(target);
    let waiter = this.#connects.get(key);
    if (!waiter) {
      waiter = Promise.withResolvers<NodeInfo>();
      this.#connects.set(key, waiter);
      driver.run((now) => this.#endpoint.connect(now, target));
    }
    return waiter.promise;
  }

  /**
   * Sends reliable Data to an authenticated peer (fragmented when larger than `max_datagram_size` and the
   * peer speaks the extension); with `ordered`, in order with the server's other ordered Data to it. Returns
   * false when there is no such peer or the message is too large for it.
   */
  sendData(nodeId: string, data: Json, options: { ordered?: boolean } = {}): boolean {
    return this.#requireDriver().run((now) => this.#endpoint.sendToPeer(now, nodeId, data, options));
  }

  /** A fresh snapshot of every counter. */
  getStats(): StatsSnapshot {
    const snapshot = this.#endpoint.getStats(monotonicNow());
    if (this.#cluster) snapshot.cluster = this.#cluster.status();
    return snapshot;
  }

  /** The registered peers, in registration order. */
  peers(): PeerSummary[] {
    return this.#endpoint.peers();
  }

  /**
   * Answers a request to the operations routes (`/metrics`, `/health`, `/peers`, `/api/stats`,
   * `/api/events`, `/`), so an application can mount them in its own HTTP server. The server started by
   * `metricsAddress` uses the same handler; pass `Deno.serve`'s `info` ({@linkcode OpsRequestInfo}).
   */
  fetch(request: Request, info?: OpsRequestInfo): Response {
    return this.#opsHandler(request, info);
  }

  /**
   * Subscribes to an event; returns the unsubscribe function. A listener that throws (or rejects) does not
   * stop the others: its error is logged and emitted as an `error` event (`code` `"listener_error"`).
   */
  on<K extends keyof ServerEvents>(type: K, listener: (value: ServerEvents[K]) => void): () => void {
    return this.#events.on(type, listener);
  }

  /** Sends `Disconnect` to every peer, closes the socket and settles {@linkcode finished}. */
  close(reason = "server shutting down"): Promise<void> {
    this.#closing ??= (async () => {
      const driver = this.#driver;
      if (driver) {
        driver.run((now) => this.#endpoint.shutdown(now, reason));
        await driver.close();
      }
      await this.#cluster?.close();
      for (const [key, waiter] of this.#connects) waiter.reject(new ConnectionTimeoutError(key));
      this.#connects.clear();
      // The operations server goes last, so /health answers 503 for the whole shutdown.
      await this.#ops?.close();
      log.info("closed");
      this.#finished.resolve();
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #requireDriver(): UdpDriver {
    if (!this.#driver || this.#driver.closed || this.#closing) {
      throw new Error("Server is not listening: call listen() first");
    }
    return this.#driver;
  }

  #opsPeers(): OpsPeer[] {
    const now = monotonicNow();
    const offset = Date.now() - now; // endpoint clock -> unix time
    return this.peers().map((p) => {
      const path = parseSocketAddr(p.addr);
      const rtt = typeof path === "string" ? null : this.#endpoint.path(path)?.srttMs ?? null;
      return toOpsPeer(p, rtt, now, offset);
    });
  }

  #info(): OpsServerInfo {
    return {
      version: VERSION,
      node_id: this.node.id,
      name: this.node.name,
      listen_addr: this.#driver ? formatSocketAddr(this.#driver.localAddr) : this.#config.listenAddress,
      public_key: this.publicKey,
      started_at: this.#startedAt,
      instance: this.instanceId,
    };
  }

  #sampleTraffic(): void {
    const s = this.#endpoint.getStats(monotonicNow());
    this.#history.push({
      time: Date.now(),
      datagrams_in: s.datagramsReceived,
      datagrams_out: s.datagramsSent,
      bytes_in: s.bytesReceived,
      bytes_out: s.bytesSent,
    });
  }

  #logStats(): void {
    const s = this.getStats();
    log.info(
      "stats: peers {authenticated} authenticated, {handshaking} handshaking; datagrams in {received} out {sent}; " +
        "bytes in {bytesReceived} out {bytesSent}; retransmissions {retransmissions}, give-ups {giveUps}, " +
        "dropped {dropped}; siblings {siblings} found of {probed} probed",
      {
        authenticated: s.peers.authenticated,
        handshaking: s.peers.handshaking,
        received: s.datagramsReceived,
        sent: s.datagramsSent,
        bytesReceived: s.bytesReceived,
        bytesSent: s.bytesSent,
        retransmissions: s.retransmissions,
        giveUps: s.giveUps,
        dropped: s.droppedTotal,
        siblings: s.siblingProbes.found,
        probed: s.siblingProbes.sent,
      },
    );
  }

  #onEvent(event: EndpointEvent): void {
    this.#cluster?.onEvent(event);
    switch (event.type) {
      case "tick":
        if (event.name === "stats") this.#logStats();
        else if (event.name === "history") {
          this.#sampleTraffic();
          this.#refusals.flush();
        }
        break;
      case "peerJoined":
        this.#recent.push({
          time: Date.now(),
          type: "join",
          addr: event.peer.addr,
          id: event.peer.id,
          detail: event.peer.name,
        });
        log.info("peer joined: {id} ({name}) from {addr} in network {network}", {
          id: event.peer.id,
          name: event.peer.name,
          addr: event.peer.addr,
          network: event.peer.network,
        });
        this.#events.emit("peerJoined", event.peer);
        break;
      case "peerLeft":
        this.#recent.push({
          time: Date.now(),
          type: "leave",
          addr: event.peer.addr,
          id: event.peer.id,
          detail: event.reason,
        });
        log.info("peer left: {id} from {addr} ({reason})", {
          id: event.peer.id,
          addr: event.peer.addr,
          reason: event.reason,
        });
        this.#events.emit("peerLeft", { peer: event.peer, reason: event.reason });
        break;
      case "data":
        log.debug("data from {addr}", { addr: formatSocketAddr(event.from) });
        this.#events.emit("data", {
          from: event.from,
          fromId: event.fromId,
          to: event.to,
          payload: event.payload,
          message: event.message,
        });
        break;
      case "connected": {
        const key = formatSocketAddr(event.addr);
        log.info("connected to {addr} ({name})", { addr: key, name: event.node.name });
        this.#connects.get(key)?.resolve(event.node);
        this.#connects.delete(key);
        this.#events.emit("connected", { addr: event.addr, node: event.node });
        break;
      }
      case "connectFailed": {
        const key = formatSocketAddr(event.addr);
        const waiter = this.#connects.get(key);
        if (event.probe && !waiter) {
          log.debug("no sibling server at {addr}: {error}", { addr: key, error: event.error });
          break;
        }
        log.warn("handshake with {addr} failed: {error}", { addr: key, error: event.error });
        waiter?.reject(
          event.code === "timeout"
            ? new ConnectionTimeoutError(key)
            : new HandshakeError(event.error, event.code),
        );
        this.#connects.delete(key);
        break;
      }
      case "roamed":
        this.#recent.push({
          time: Date.now(),
          type: "roamed",
          addr: formatSocketAddr(event.to),
          detail: event.peer ? `${event.peer.id} moved here` : "a session moved here",
        });
        log.info("peer {id} moved to {addr} (authenticated session, path checked)", {
          id: event.peer?.id ?? "?",
          addr: formatSocketAddr(event.to),
        });
        break;
      case "linkClosed":
        log.info("link to {addr} closed ({reason})", {
          addr: formatSocketAddr(event.addr),
          reason: event.reason,
        });
        break;
      case "gaveUp":
        this.#recent.push({
          time: Date.now(),
          type: "give_up",
          addr: formatSocketAddr(event.to),
          detail: `${event.messageType} after ${event.tries} tries (${event.reason})`,
        });
        // Deployed clients never ack the HandshakeResponse, and a HandshakeRequest given up is reported by its
        // connection failing (quietly for sibling probes): both are routine at info level.
        log[
          event.messageType === "HandshakeResponse" || event.messageType === "HandshakeRequest"
            ? "debug"
            : "info"
        ](
          "gave up on {type} to {addr} after {tries} tries ({reason})",
          {
            type: event.messageType,
            addr: formatSocketAddr(event.to),
            tries: event.tries,
            reason: event.reason,
          },
        );
        this.#events.emit("gaveUp", {
          to: event.to,
          id: event.id,
          messageType: event.messageType,
          tries: event.tries,
          reason: event.reason,
        });
        break;
      case "error":
        remoteLog.info("error from {addr}: {error}", {
          addr: formatSocketAddr(event.from),
          error: clip(event.error.error),
        });
        break;
      case "dropped":
        this.#recent.push({
          time: Date.now(),
          type: "drop",
          addr: formatSocketAddr(event.from),
          detail: event.reason,
        });
        logDropped(event);
        break;
      case "duplicate":
        logDuplicate(event);
        break;
      case "refused":
        this.#refusals.refused(event);
        this.#recent.push({
          time: Date.now(),
          type: "refused",
          addr: formatSocketAddr(event.from),
          ...(event.nodeId ? { id: event.nodeId } : {}),
          detail: event.code,
        });
        break;
      case "pong":
      case "discovery":
      case "delivered":
      case "cluster":
        break;
    }
  }
}
