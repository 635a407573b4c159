/**
 * Cluster mode, the I/O side: keeps this instance's peers in the shared directory on Redis, keeps the core's
 * mirror of the other instances' peers current, and carries the core's messages to other instances over
 * Redis pub/sub. See docs/cluster.md for the layout and the failure behaviour.
 *
 * Keys and channels (all with the hash tag `{<key_prefix>}`, default `{p2p:}`; see `src/cluster_wire.ts`):
 * - `{p}peer:<node id>`: `"<instance> <record JSON>"`, expiring after `peer_ttl`; refreshed by its owner.
 * - `{p}peers`: the set of node ids with entries (what a full read walks; expired ones are pruned).
 * - `{p}instance:<instance>`: the instance's liveness (with this process's token), expiring after `peer_ttl`.
 * - channel `{p}events`: joins, leaves and goodbyes, batched, for every instance.
 * - channel `{p}to:<instance>`: messages for one instance (relayed Data, introductions, ...).
 *
 * Writes are batched: whatever accumulated while the previous pipeline was in flight goes out as the next
 * one, so the number of round trips per second stays bounded however many peers join.
 *
 * @module
 */
import type { ClusterCounts, Endpoint, EndpointEvent, PeerSummary } from "./core/endpoint.ts";
import {
  type ClusterEnvelope,
  type ClusterMessage,
  type DirectoryRecord,
  parseRecord,
  peerRecord,
} from "./core/directory.ts";
import type { ClusterStatus } from "./core/stats.ts";
import type { ClusterConfig } from "./config.ts";
import { getLogger } from "./deps/log.ts";
import type { RedisLink, RedisLinkEvents, RedisLinkOptions } from "./deps/redis.ts";
import {
  asEval,
  checkMessage,
  checkTlsFiles,
  CLAIM,
  ClusterKeys,
  isNoScript,
  parseBody,
  readDirectory,
  type RedisCommand,
  RELEASE,
} from "./cluster_wire.ts";
import { InstanceIdInUseError, Liveness } from "./cluster_liveness.ts";

export { checkMessage } from "./cluster_wire.ts";

const log = getLogger(["p2p_server", "cluster"]);

/** What the cluster needs of the Redis client (`src/deps/redis.ts` provides it; tests may fake it). */
export type ClusterLink = RedisLink;

/** Callbacks a {@linkcode ClusterLink} reports to. */
export type ClusterLinkEvents = RedisLinkEvents;

/** Opens a link to Redis. */
export type OpenClusterLink = (
  url: string,
  events: ClusterLinkEvents,
  options: RedisLinkOptions,
) => ClusterLink;

/** What the cluster needs of the server it belongs to. */
export interface ClusterHost {
  /** Runs a command against the core with the current time and flushes its outputs. */
  run<T>(command: (now: number) => T): T;
  /** The core. */
  readonly endpoint: Endpoint;
  /** The core's clock to Unix ms. */
  toUnixMs(endpointTime: number): number;
  /** The server's address, for the instance's liveness entry. */
  address(): string;
  /**
   * The cluster cannot go on and the server must stop: another live process holds this instance id at
   * start ({@linkcode InstanceIdInUseError}).
   */
  fatal(error: Error): void;
}

/** The core tick (served by the driver's one timer) that refreshes this instance's liveness. */
const CLUSTER_TICK = "cluster";

/** How long one pipeline may go unanswered before Redis counts as unreachable. */
const EXEC_TIMEOUT_MS = 5_000;

/** Entries per pipeline command when many peers are written at once (bounds each script's run time). */
const CHUNK = 500;

/** One instance's membership of the cluster. */
export class ClusterNode {
  readonly #config: ClusterConfig;
  readonly #instance: string;
  readonly #host: ClusterHost;
  readonly #keys: ClusterKeys;
  readonly #own: string;
  readonly #ttlMs: number;
  readonly #liveness: Liveness;
  /** The instance joined at least once (a collision later degrades it; one at start stops the server). */
  #joined = false;
  #link: ClusterLink | null = null;
  #state: ClusterStatus["state"] = "connecting";
  #since = Date.now();
  #lastError: string | null = null;
  /** Peers to claim (joined or moved), by id. */
  #claims = new Map<string, PeerSummary>();
  /** Peers to release (left), by id. */
  #releases = new Set<string>();
  /** Messages for other instances, by instance. */
  #outbox = new Map<string, ClusterMessage[]>();
  #flushing: Promise<void> | null = null;
  #flushQueued = false;
  #ticks = 0;
  #resyncing = false;
  /** While a full read is under way: ids announced joined (record) or left (null) since it began. */
  #sinceResync: Map<string, DirectoryRecord | null> | null = null;
  #closed = false;
  #joining = false;
  #counts = { roundTrips: 0, commands: 0, directoryWrites: 0, resyncs: 0, conflicts: 0, invalid: 0 };

  /** Joins the cluster `config` describes, for the server `host`. */
  constructor(config: ClusterConfig, host: ClusterHost) {
    this.#config = config;
    this.#instance = config.instanceId ?? crypto.randomUUID();
    this.#host = host;
    checkTlsFiles(config);
    this.#keys = new ClusterKeys(config.keyPrefix, config.redisCluster ?? false);
    this.#own = this.#keys.channel(this.#instance);
    this.#ttlMs = Math.round(config.peerTtl * 1000);
    this.#liveness = new Liveness(this.#keys, this.#instance, {
      ttlMs: this.#ttlMs,
      periodMs: this.#periodMs(),
      sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
    });
  }

  /** How often the entries are renewed: every third of `peer_ttl`. */
  #periodMs(): number {
    return Math.max(100, Math.floor(this.#ttlMs / 3));
  }

  /** What stopped the server (another live process holds this instance id at start), or null. */
  fatalError: Error | null = null;

  /** This instance's id. */
  get instance(): string {
    return this.#instance;
  }

  /** Connects with `open` (retrying in the background until Redis answers) and starts the refresh timer. */
  start(open: OpenClusterLink): void {
    if (this.#link || this.#closed) return;
    const c = this.#config;
    this.#liveness.describe(this.#host.address(), Date.now());
    this.#link = open(c.redisUrl, {
      onReady: () => void this.#onReady(),
      onDown: (reason) => this.#onDown(reason),
      onMessage: (channel, message) => this.#onMessage(channel, message),
    }, {
      cluster: c.redisCluster ?? false,
      tls: {
        caFile: c.tlsCaFile,
        certFile: c.tlsCertFile,
        keyFile: c.tlsKeyFile,
        serverName: c.tlsServerName,
      },
    });
    void this.#link.subscribe(this.#keys.events).catch(() => {});
    void this.#link.subscribe(this.#own).catch(() => {});
    this.#host.run((now) => this.#host.endpoint.every(now, CLUSTER_TICK, this.#periodMs())); // core tick
  }

  /** The state and the counters, for stats, `/health` and `/metrics`. */
  status(): ClusterStatus {
    const core: ClusterCounts = this.#host.endpoint.clusterCounts();
    return {
      state: this.#state,
      instance: this.#instance,
      remotePeers: core.remotePeers,
      instances: this.#host.endpoint.remotePeers.instances().size,
      since: this.#since,
      lastError: this.#lastError,
      roundTrips: this.#counts.roundTrips,
      commands: this.#counts.commands,
      directoryWrites: this.#counts.directoryWrites,
      messagesOut: core.messagesOut,
      messagesIn: core.messagesIn,
      resyncs: this.#counts.resyncs,
      conflicts: this.#counts.conflicts,
      invalid: this.#counts.invalid,
    };
  }

  /** Takes the core's events that concern the cluster: joins, leaves, moves, messages to other instances. */
  onEvent(event: EndpointEvent): void {
    if (this.#closed) return;
    switch (event.type) {
      case "tick":
        if (event.name === CLUSTER_TICK) void this.#refresh();
        break;
      case "peerJoined":
        this.#releases.delete(event.peer.id);
        this.#claims.set(event.peer.id, event.peer);
        break;
      case "roamed":
      case "natChecked":
      case "natLifetime":
        // A peer that moved, or whose NAT is now known: its entry is written again.
        if (event.peer) this.#claims.set(event.peer.id, event.peer);
        break;
      case "peerLeft":
        this.#claims.delete(event.peer.id);
        this.#releases.add(event.peer.id);
        break;
      case "cluster": {
        if (this.#state === "degraded") return; // lost with the connection; the core hears of it on return
        let list = this.#outbox.get(event.instance);
        if (!list) this.#outbox.set(event.instance, list = []);
        list.push(event.message);
        break;
      }
      default:
        return;
    }
    this.#scheduleFlush();
  }

  /**
   * Leaves the cluster: releases this instance's peers still registered (the server sent them Disconnect),
   * says goodbye so the others drop its peers at once, and closes the link.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#host.run((now) => this.#host.endpoint.every(now, CLUSTER_TICK, 0));
    await this.#flushing;
    this.#closed = true;
    const link = this.#link;
    if (link?.ready && this.#state === "ok") {
      await this.#flushNow(link);
      const bye = JSON.stringify({ from: this.#instance, bye: true });
      await this.#exec(link, [this.#liveness.leaveCommand(bye)]).catch(() => {});
    }
    this.#setState("closed", null);
    await link?.close();
  }

  // ---------------------------------------------------------------- connection state

  async #onReady(): Promise<void> {
    if (this.#closed || this.#joining) return;
    this.#joining = true;
    try {
      await this.#join();
    } finally {
      this.#joining = false;
    }
  }

  async #join(): Promise<void> {
    const link = this.#link!;
    // Whatever was registered here is claimed again (its entries may have expired, or Redis restarted
    // empty), then the mirror is rebuilt from a full read.
    try {
      if (await this.#liveness.claim((commands) => this.#exec(link, commands))) {
        log.info("cluster: took over instance id {instance} (its previous process stopped renewing it)", {
          instance: this.#instance,
        });
      }
      if (this.#closed) return;
      const peers = this.#host.endpoint.peers().filter((p) => p.state === "authenticated");
      await this.#claim(link, peers, true);
      await this.#resync(link);
    } catch (error) {
      if (error instanceof InstanceIdInUseError && !this.#joined) {
        // A second process with the same id: it must not write this instance's entries. The server stops.
        log.error("cluster: {error}", { error: error.message });
        this.#setState("degraded", error.message);
        this.fatalError = error;
        this.#host.fatal(error);
        return;
      }
      this.#onDown(
        error instanceof InstanceIdInUseError
          ? error.message
          : `resynchronising failed: ${(error as Error).message}`,
      );
      return;
    }
    this.#joined = true;
    if (this.#state !== "ok") {
      if (this.#state === "degraded") log.info("cluster: Redis reachable again; directory resynchronised");
      else log.info("cluster: joined as instance {instance}", { instance: this.#instance });
      this.#setState("ok", null);
    }
    this.#scheduleFlush();
  }

  #onDown(reason: string): void {
    if (this.#closed) return;
    this.#lastError = reason;
    if (this.#state === "degraded") return;
    log.warn("cluster: Redis unreachable ({reason}); serving this instance's peers only", { reason });
    this.#setState("degraded", reason);
    // Rejoining claims every peer here and releases stale entries from a full read: nothing to keep.
    this.#claims.clear();
    this.#releases.clear();
    // The other instances cannot be reached or trusted to be current: their peers are forgotten (and routed
    // Data waiting for them is reported undeliverable) until Redis is back.
    this.#host.run((now) => this.#host.endpoint.clearRemote(now));
    this.#outbox.clear();
  }

  #setState(state: ClusterStatus["state"], error: string | null): void {
    this.#state = state;
    this.#since = Date.now();
    if (error !== null) this.#lastError = error;
  }

  // ---------------------------------------------------------------- writes

  #scheduleFlush(): void {
    if (this.#flushQueued || this.#closed) return;
    this.#flushQueued = true;
    // Everything the current burst of datagrams produced goes into one pipeline.
    setTimeout(() => {
      this.#flushQueued = false;
      if (this.#flushing) return; // the running loop picks the new work up
      // `finally` runs after the assignment, even when the loop has nothing to do.
      this.#flushing = this.#flushLoop().finally(() => {
        this.#flushing = null;
      });
    }, 0);
  }

  async #flushLoop(): Promise<void> {
    const link = this.#link;
    while (link?.ready && this.#state === "ok" && this.#pending()) await this.#flushNow(link);
  }

  #pending(): boolean {
    return this.#claims.size > 0 || this.#releases.size > 0 || this.#outbox.size > 0;
  }

  async #flushNow(link: ClusterLink): Promise<void> {
    const claims = [...this.#claims.values()];
    const releases = [...this.#releases];
    const outbox = this.#outbox;
    this.#claims = new Map();
    this.#releases = new Set();
    this.#outbox = new Map();
    const commands: RedisCommand[] = [];
    const targets = [...outbox.keys()];
    const keys = this.#keys;
    for (const [instance, messages] of outbox) {
      const envelope: ClusterEnvelope = { from: this.#instance, m: messages };
      commands.push([keys.publish, keys.channel(instance), JSON.stringify(envelope)]);
    }
    for (let i = 0; i < releases.length; i += CHUNK) {
      const ids = releases.slice(i, i + CHUNK);
      commands.push(
        RELEASE.call([keys.index, ...ids.map((id) => keys.peer(id))], [
          this.#instance,
          keys.events,
          keys.publish,
          ...ids,
        ]),
      );
      this.#counts.directoryWrites += ids.length;
    }
    const firstClaim = commands.length;
    commands.push(...this.#claimCommands(claims, true));
    try {
      const replies = await this.#exec(link, commands);
      // Nobody listens on an instance's channel: it is gone (its liveness entry has not expired yet). Its
      // peers leave the mirror and the relays waiting for it fail now, not at their deadline; if it was only
      // reconnecting, its next join announces its peers again.
      const gone = targets.filter((_, i) => replies[i] === 0);
      if (gone.length > 0) {
        this.#host.run((now) => {
          for (const instance of gone) this.#host.endpoint.dropInstance(now, instance);
        });
      }
      this.#settleClaims(claims, replies.slice(firstClaim));
    } catch (error) {
      this.#onDown((error as Error).message);
    }
  }

  /** Claims peers in chunks, in one pipeline; the ones another instance holds are removed here. */
  async #claim(link: ClusterLink, peers: PeerSummary[], announce: boolean): Promise<void> {
    if (peers.length === 0) return;
    this.#settleClaims(peers, await this.#exec(link, this.#claimCommands(peers, announce)));
  }

  /** The claim scripts for `peers`, one per {@linkcode CHUNK}. */
  #claimCommands(peers: PeerSummary[], announce: boolean): RedisCommand[] {
    const keys = this.#keys;
    const commands: RedisCommand[] = [];
    for (let i = 0; i < peers.length; i += CHUNK) {
      const chunk = peers.slice(i, i + CHUNK);
      const args: (string | number)[] = [
        this.#instance,
        this.#ttlMs,
        announce ? keys.events : "",
        keys.publish,
      ];
      for (const p of chunk) args.push(p.keyed ? "1" : "0", p.id, JSON.stringify(this.#record(p)));
      commands.push(CLAIM.call([keys.index, ...chunk.map((p) => keys.peer(p.id))], args));
      this.#counts.directoryWrites += chunk.length;
    }
    return commands;
  }

  /** Takes the claim scripts' replies: the peers refused (another instance holds their id) leave here. */
  #settleClaims(peers: PeerSummary[], replies: unknown[]): void {
    const lost: string[] = [];
    replies.forEach((reply, c) => {
      if (reply instanceof Error) throw reply;
      for (const i of reply as number[]) lost.push(peers[c * CHUNK + i - 1]!.id);
    });
    if (lost.length === 0) return;
    // Two instances accepted the same id at once (or during an outage): the directory decided for the other.
    this.#host.run((now) => {
      for (const id of lost) if (this.#host.endpoint.evictPeer(now, id)) this.#counts.conflicts++;
    });
    log.warn("cluster: {n} peer(s) removed here, their node id is registered with another instance", {
      n: lost.length,
    });
  }

  #record(p: PeerSummary): DirectoryRecord {
    return peerRecord(this.#instance, p, Math.round(this.#host.toUnixMs(p.lastSeen)));
  }

  /**
   * Runs one pipeline. Scripts go out by `EVALSHA`; the ones Redis does not hold yet (a new or restarted
   * server, a failover) are sent again in full by `EVAL`, in order, in one more round trip.
   */
  async #exec(link: ClusterLink, commands: readonly RedisCommand[]): Promise<unknown[]> {
    const replies = await this.#execOnce(link, commands);
    const missing = replies.flatMap((reply, i) => isNoScript(reply) ? [i] : []);
    if (missing.length === 0) return replies;
    const again = await this.#execOnce(link, missing.map((i) => asEval(commands[i]!) ?? commands[i]!));
    missing.forEach((i, n) => replies[i] = again[n]);
    return replies;
  }

  async #execOnce(link: ClusterLink, commands: readonly RedisCommand[]): Promise<unknown[]> {
    this.#counts.roundTrips++;
    this.#counts.commands += commands.length;
    // A connection that died without a reset (a half-open TCP path) would leave a pipeline waiting forever:
    // past the deadline Redis counts as unreachable.
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(
        () => reject(new Error(`no answer from Redis within ${EXEC_TIMEOUT_MS} ms`)),
        EXEC_TIMEOUT_MS,
      );
    });
    try {
      return await Promise.race([link.exec(commands), deadline]);
    } finally {
      clearTimeout(timer);
    }
  }

  // ---------------------------------------------------------------- the periodic refresh

  /**
   * Every third of `peer_ttl`: renews this instance's liveness and its peers' entries (re-claiming them: an
   * entry another instance took is a conflict), drops the peers of instances whose liveness expired, and
   * every third time reads the whole directory again.
   */
  async #refresh(): Promise<void> {
    const link = this.#link;
    if (!link?.ready || this.#closed) return;
    if (this.#state === "degraded") {
      // Degraded by a timeout while the connections stayed up: try to rejoin.
      await this.#onReady();
      return;
    }
    if (this.#state !== "ok") return;
    this.#ticks++;
    try {
      const known = [...this.#host.endpoint.remotePeers.instances().keys()];
      const replies = await this.#exec(link, [
        this.#liveness.renewCommand(),
        ...known.map((i) => ["EXISTS", this.#keys.instance(i)]),
      ]);
      if (!this.#liveness.renewed(replies[0])) {
        // Another process took this instance id (it found the entry expired, say after a long pause here):
        // this one stops writing to the directory and says so; the next ticks retry the claim.
        this.#onDown(this.#liveness.lost().message);
        return;
      }
      const gone = known.filter((_, i) => replies[i + 1] === 0);
      if (gone.length > 0) {
        const n = this.#host.run((now) =>
          gone.reduce((sum, i) => sum + this.#host.endpoint.dropInstance(now, i), 0)
        );
        log.info("cluster: instance(s) {gone} stopped refreshing; {n} of their peers forgotten", {
          gone: gone.join(", "),
          n,
        });
      }
      const peers = this.#host.endpoint.peers().filter((p) =>
        p.state === "authenticated" && !this.#claims.has(p.id)
      );
      await this.#claim(link, peers, false);
      if (this.#ticks % 3 === 0) await this.#resync(link);
    } catch (error) {
      this.#onDown((error as Error).message);
    }
  }

  /** Reads the whole directory and makes the core's mirror equal to it. */
  async #resync(link: ClusterLink): Promise<void> {
    if (this.#resyncing) return;
    this.#resyncing = true;
    this.#sinceResync = new Map();
    try {
      const { records, mine, invalid } = await readDirectory(
        (commands) => this.#exec(link, commands),
        this.#keys,
        this.#instance,
      );
      this.#counts.invalid += invalid;
      // Announcements that arrived during the read are newer than what it saw.
      const late = this.#sinceResync;
      const merged = new Map(records.map((r) => [r.id, r]));
      for (const [id, r] of late) {
        if (r) merged.set(id, r);
        else merged.delete(id);
      }
      this.#counts.resyncs++;
      const removed = this.#host.run(() => this.#host.endpoint.replaceRemote(merged.values()));
      if (removed > 0) log.debug("cluster: resync removed {n} stale peer(s)", { n: removed });
      // Entries still naming this instance for peers no longer here (they left during an outage): released.
      const here = new Set(this.#host.endpoint.peers().map((p) => p.id));
      for (const id of mine) if (!here.has(id)) this.#releases.add(id);
      if (this.#releases.size > 0) this.#scheduleFlush();
    } finally {
      this.#resyncing = false;
      this.#sinceResync = null;
    }
  }

  // ---------------------------------------------------------------- messages

  #onMessage(channel: string, text: string): void {
    if (this.#closed || this.#state !== "ok") return;
    const parsed = parseBody(text);
    if (!parsed) {
      this.#counts.invalid++;
      return;
    }
    const { from, body } = parsed;
    if (from === this.#instance) return;
    if (channel === this.#keys.events) this.#onAnnouncement(from, body);
    else if (channel === this.#own) this.#onEnvelope(from, body.m);
  }

  #onAnnouncement(from: string, body: Record<string, unknown>): void {
    const endpoint = this.#host.endpoint;
    if (body.bye === true) {
      const n = this.#host.run((now) => endpoint.dropInstance(now, from));
      log.info("cluster: instance {from} left; {n} of its peers forgotten", { from, n });
      return;
    }
    if (Array.isArray(body.joined)) {
      const records: DirectoryRecord[] = [];
      for (const item of body.joined) {
        const r = parseRecord(item);
        if (typeof r === "string" || r.instance !== from) this.#counts.invalid++;
        else records.push(r);
      }
      for (const r of records) this.#sinceResync?.set(r.id, r);
      this.#host.run(() => endpoint.upsertRemote(records));
    }
    if (Array.isArray(body.left)) {
      const ids = body.left.filter((id): id is string => typeof id === "string");
      for (const id of ids) this.#sinceResync?.set(id, null);
      this.#host.run(() => endpoint.removeRemote(from, ids));
    }
  }

  #onEnvelope(from: string, messages: unknown): void {
    if (!Array.isArray(messages)) {
      this.#counts.invalid++;
      return;
    }
    this.#host.run((now) => {
      for (const m of messages) {
        const message = checkMessage(m);
        if (!message) {
          this.#counts.invalid++;
          continue;
        }
        this.#host.endpoint.handleClusterMessage(now, from, message);
      }
    });
  }
}
