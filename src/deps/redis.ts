/**
 * The Redis link of cluster mode: one command connection and one subscriber connection to the same Redis,
 * reconnected with capped exponential backoff, behind a small interface (`exec` a pipeline, `subscribe`,
 * `close`, and three events). The one module that imports the Redis client (npm `ioredis`), so another client
 * is a one-file change. Three topologies: one server (`redis://`, `rediss://`), a Redis Cluster (the client
 * follows `MOVED`/`ASK` and failovers; subscriptions are sharded, `SSUBSCRIBE`), and Sentinel
 * (`redis-sentinel://`: the client asks the sentinels for the master, again after every lost connection, so
 * it follows a failover). TLS for `rediss` schemes, with a CA file, a client certificate and a server name.
 *
 * Credentials never leave this module: errors, `onDown` reasons and thrown messages name the server by
 * {@linkcode redactRedisUrl}, and any text coming from the client is scrubbed of the URL's user name and
 * password before it is passed on.
 *
 * @module
 */
import { Cluster, Redis, ReplyError } from "ioredis";
import { parseRedisUrl, redactRedisUrl, type RedisUrl } from "../redis_url.ts";
import { describeTlsFailure, readTls, type RedisTlsOptions, type TlsSettings } from "./redis_tls.ts";

export { redactRedisUrl } from "../redis_url.ts";
export { describeTlsFailure, type RedisTlsOptions } from "./redis_tls.ts";

/** What a {@linkcode RedisLink} reports. Callbacks are called synchronously and must not throw. */
export interface RedisLinkEvents {
  /** Both connections (commands + subscriber) are up and subscriptions are (re)established. Called on first connect and after every reconnect. */
  onReady(): void;
  /** Redis became unreachable (called once per outage, with a message that never contains credentials). */
  onDown(reason: string): void;
  /** A pub/sub message on a subscribed channel. */
  onMessage(channel: string, message: string): void;
}

/** The kind of Redis deployment a link talks to. */
export type RedisTopology = "standalone" | "cluster" | "sentinel";

/** A link to one Redis server, from {@linkcode openRedisLink}. */
export interface RedisLink {
  /** True while both connections are up. */
  readonly ready: boolean;
  /** What the link talks to (on `"cluster"`, `subscribe` is sharded and messages go out by `SPUBLISH`). */
  readonly topology: RedisTopology;
  /** Runs the commands as ONE pipeline (one round trip, not MULTI); resolves with one entry per command: the reply, or an Error for a command Redis refused. Rejects at once (no offline queue, no unbounded buffering) when not ready, and on connection loss mid-flight. */
  exec(commands: readonly (readonly (string | number)[])[]): Promise<unknown[]>;
  /** Subscribes the subscriber connection to a channel (kept across reconnects). */
  subscribe(channel: string): Promise<void>;
  /** Closes both connections; no reconnects afterwards; resolves when fully closed. */
  close(): Promise<void>;
}

/** Options of {@linkcode openRedisLink}. */
export interface RedisLinkOptions {
  /**
   * How long one connection attempt may take (TCP connect) before it counts as failed.
   * @default {2000}
   */
  connectTimeoutMs?: number;
  /**
   * max backoff between reconnect attempts; the first retry waits 50 ms and each further one doubles.
   * @default {1000}
   */
  reconnectMaxMs?: number;
  /**
   * The URL names node(s) of a Redis Cluster.
   * @default {false}
   */
  cluster?: boolean;
  /** TLS settings for `rediss` URLs (files in PEM). @default {{}} */
  tls?: RedisTlsOptions;
}

/**
 * Why {@linkcode RedisLink.exec} rejected: the link is down, was lost while the pipeline was in flight, or is
 * closed. Redis's refusal of one command is not this error but an `Error` entry in the resolved array.
 */
export class RedisUnavailableError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "RedisUnavailableError";
  }
}

/** The first reconnect delay; each further attempt doubles it up to `reconnectMaxMs`. */
const FIRST_RETRY_MS = 50;
const DEFAULT_CONNECT_TIMEOUT_MS = 2000;
const DEFAULT_RECONNECT_MAX_MS = 1000;
/** Cluster: how often an unconfirmed subscription is probed again. */
const PROBE_RETRY_MS = 200;

function positiveMs(value: number | undefined, fallback: number, name: string): number {
  if (value === undefined) return fallback;
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`Invalid ${name} "${value}": must be > 0`);
  return value;
}

function messageOf(error: unknown): string {
  if (error instanceof Error) return error.message || error.name;
  return String(error);
}

/**
 * Opens the link; never throws for an unreachable server (it keeps retrying and reports via events). Throws
 * synchronously only for a malformed URL, with a message that shows the URL with its password replaced by
 * "***" (and a `RangeError` for a bad option).
 *
 * @example
 * ```ts
 * import { openRedisLink } from "./redis.ts";
 * const downs: string[] = [];
 * const link = openRedisLink("redis://127.0.0.1:6379", {
 *   onReady() {},
 *   onDown(reason) {
 *     downs.push(reason);
 *   },
 *   onMessage(_channel, _message) {},
 * });
 * // Kept across reconnects, also when Redis is not there yet.
 * await link.subscribe("p2p_server:example");
 * await link.close();
 * if (link.ready) throw new Error("closed links are not ready");
 * ```
 */
export function openRedisLink(
  url: string,
  events: RedisLinkEvents,
  options: RedisLinkOptions = {},
): RedisLink {
  const parsed = parseRedisUrl(url);
  if (options.cluster && parsed.sentinelMaster !== null) {
    throw new TypeError(
      `Invalid Redis URL "${redactRedisUrl(url)}": a Sentinel URL cannot name a Redis Cluster`,
    );
  }
  const tls = parsed.tls ? readTls(options.tls ?? {}) : null;
  const connectTimeoutMs = positiveMs(
    options.connectTimeoutMs,
    DEFAULT_CONNECT_TIMEOUT_MS,
    "connectTimeoutMs",
  );
  const reconnectMaxMs = positiveMs(options.reconnectMaxMs, DEFAULT_RECONNECT_MAX_MS, "reconnectMaxMs");
  const topology: RedisTopology = options.cluster
    ? "cluster"
    : parsed.sentinelMaster !== null
    ? "sentinel"
    : "standalone";
  return new IoRedisLink(parsed, redactRedisUrl(url), events, {
    connectTimeoutMs,
    reconnectMaxMs,
    topology,
    tls,
  });
}

interface LinkSettings {
  connectTimeoutMs: number;
  reconnectMaxMs: number;
  topology: RedisTopology;
  tls: TlsSettings | null;
}

type Client = Redis | Cluster;

class IoRedisLink implements RedisLink {
  readonly topology: RedisTopology;
  readonly #events: RedisLinkEvents;
  readonly #shown: string;
  readonly #password: string;
  readonly #userPattern: RegExp | undefined;
  readonly #commands: Client;
  readonly #subscriber: Client;
  readonly #tls: boolean;
  /** A client certificate is sent (mutual TLS). */
  readonly #clientCertificate: boolean;
  readonly #channels = new Set<string>();
  /** The command connection answered its ready check. */
  #commandsUp = false;
  /** The subscriber connection answered its ready check and holds every channel in `#channels`. */
  #subscriberUp = false;
  #ready = false;
  /** onDown was reported for the current outage (reset by onReady). */
  #downReported = false;
  /** Counts the subscriber's connections, so a stale resubscription can tell it was overtaken. */
  #subscriberEpoch = 0;
  #lastError: string | undefined;
  /** Cluster: a channel of this link alone, on its channels' slot, published to confirm the subscriptions. */
  #probe: string | undefined;
  /** Cluster: the master whose subscriber the last successful probe reached. */
  #confirmedOwner: string | undefined;
  #probeTimer: ReturnType<typeof setTimeout> | undefined;
  #probing = false;
  /** Cluster: every channel went out in an SSUBSCRIBE since the subscriber (re)connected. */
  #sent = false;
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(url: RedisUrl, shown: string, events: RedisLinkEvents, settings: LinkSettings) {
    this.topology = settings.topology;
    this.#events = events;
    this.#shown = shown;
    this.#password = url.password;
    this.#tls = settings.tls !== null;
    this.#clientCertificate = settings.tls?.cert !== undefined;
    if (url.username !== "") {
      const escaped = url.username.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      this.#userPattern = new RegExp(`(?<![\\w-])${escaped}(?![\\w-])`, "g");
    }
    // 50 ms, 100 ms, 200 ms, ... capped; `times` starts at 1 and resets after a successful connect.
    const retry = (times: number) =>
      this.#closed ? null : Math.min(FIRST_RETRY_MS * 2 ** Math.min(times - 1, 30), settings.reconnectMaxMs);
    const common = {
      ...(url.username !== "" ? { username: url.username } : {}),
      ...(url.password !== "" ? { password: url.password } : {}),
      ...(settings.tls ? { tls: settings.tls } : {}),
      connectTimeout: settings.connectTimeoutMs,
      // Commands fail at once while disconnected, and those in flight fail when the connection drops, instead
      // of being queued or resent after a reconnect.
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // RESP2: no HELLO round trip, and the same replies from every Redis version.
      protocol: 2 as const,
      disableClientInfo: true,
      // A connection left on a demoted master (after a failover it did not see) reconnects.
      reconnectOnError: (error: Error) => error.message.startsWith("READONLY") ? 1 as const : false,
    };
    const make = (): Client => {
      if (settings.topology === "cluster") {
        return new Cluster(url.hosts, {
          redisOptions: common,
          enableOfflineQueue: false,
          clusterRetryStrategy: retry,
          // Redirections and failovers are followed by the client, briefly; a longer outage fails commands.
          retryDelayOnFailover: 100,
          retryDelayOnClusterDown: 100,
          slotsRefreshTimeout: settings.connectTimeoutMs,
          shardedSubscribers: true,
          lazyConnect: false,
        });
      }
      return new Redis({
        ...common,
        ...(url.sentinelMaster !== null
          ? {
            sentinels: url.hosts,
            name: url.sentinelMaster,
            role: "master" as const,
            sentinelRetryStrategy: retry,
            ...(settings.tls ? { enableTLSForSentinelMode: true, sentinelTLS: settings.tls } : {}),
          }
          : { host: url.hosts[0]!.host, port: url.hosts[0]!.port }),
        db: url.db,
        retryStrategy: retry,
        enableOfflineQueue: false,
        // This module resubscribes itself, so that onReady can wait for the subscriptions.
        autoResubscribe: false,
        lazyConnect: false,
      });
    };
    this.#commands = make();
    this.#subscriber = make();

    this.#commands.on("ready", () => {
      this.#commandsUp = true;
      this.#update();
    });
    this.#subscriber.on("ready", () => this.#subscriberConnected());
    for (const client of [this.#commands, this.#subscriber]) {
      // Without an "error" listener the client prints each error to the console itself.
      client.on("error", (error: unknown) => this.#failed(messageOf(error)));
      client.on("close", () => this.#lost(client));
    }
    const sharded = this.topology === "cluster";
    this.#subscriber.on(sharded ? "smessage" : "message", (channel: string, message: string) => {
      if (!this.#closed && channel !== this.#probe) {
        this.#emit(() => this.#events.onMessage(channel, message));
      }
    });
    if (sharded) {
      // The client keeps one sharded subscriber per master and replaces them as the cluster changes; it says
      // which (`-node`, with the node's key) only when one's connection ends. The link's subscriptions are
      // lost when the subscriber of their slot's master ends, or when the slot moves to another master (a
      // failover): then it reports an outage, and it is ready again only once a probe published on its slot
      // reaches its own subscriber (so not while the slot still points at a dead master, however often the
      // client rebuilds its subscribers meanwhile).
      this.#subscriber.on("-node", (_redis: unknown, nodeKey: unknown) => {
        if (typeof nodeKey === "string" && nodeKey === this.#confirmedOwner) this.#subscriptionLost();
      });
      const check = () => {
        if (this.#closed) return;
        if (this.#subscriberUp && this.#slotOwner() !== this.#confirmedOwner) this.#subscriptionLost();
        else if (!this.#subscriberUp) this.#confirmSoon(0);
      };
      this.#subscriber.on("-subscriber", check);
      this.#subscriber.on("subscribersReady", check);
      this.#subscriber.on("refresh", check);
    }
  }

  get ready(): boolean {
    return this.#ready;
  }

  async exec(commands: readonly (readonly (string | number)[])[]): Promise<unknown[]> {
    for (const command of commands) {
      if (command.length === 0 || typeof command[0] !== "string" || command[0] === "") {
        throw new TypeError(
          `Invalid Redis command ${this.#scrub(JSON.stringify(command))}: must start with its name`,
        );
      }
    }
    if (this.#closed) throw new RedisUnavailableError(`Redis link to "${this.#shown}" is closed`);
    if (!this.#ready) {
      throw new RedisUnavailableError(
        `Redis at "${this.#shown}" is unreachable: ${this.#lastError ?? "not connected yet"}`,
      );
    }
    if (commands.length === 0) return [];
    let results: [error: Error | null, reply: unknown][] | null;
    try {
      results = await this.#commands.pipeline(commands.map((command) => ["call", ...command])).exec();
    } catch (error) {
      throw this.#unavailable(error);
    }
    if (results === null || results.length !== commands.length) {
      throw new RedisUnavailableError(`Lost the connection to Redis at "${this.#shown}": no replies`);
    }
    return results.map(([error, reply]) => {
      if (error === null) return reply;
      // Anything but an error reply from Redis (a dropped connection, a closed link) fails the whole call.
      if (!(error instanceof ReplyError)) throw this.#unavailable(error);
      return new Error(this.#scrub(messageOf(error)));
    });
  }

  async subscribe(channel: string): Promise<void> {
    if (this.#closed) throw new RedisUnavailableError(`Redis link to "${this.#shown}" is closed`);
    if (this.#channels.has(channel)) return;
    const added = [channel];
    if (this.topology === "cluster" && this.#probe === undefined) {
      // The probe shares the first channel's hash tag, so it lives on the same slot and goes out in the same
      // SSUBSCRIBE as the channels of that slot.
      this.#probe = `${hashTag(channel) ?? channel}:link-probe:${crypto.randomUUID()}`;
      this.#channels.add(this.#probe);
      added.unshift(this.#probe);
    }
    this.#channels.add(channel);
    // While the subscriber is down the channel is subscribed on its next connect, before onReady.
    if (!this.#subscriberUp) return;
    const epoch = this.#subscriberEpoch;
    try {
      await this.#subscribeOn(...added);
    } catch (error) {
      // A reconnect resubscribes every channel; only a refusal on a live connection is the caller's problem.
      if (epoch === this.#subscriberEpoch && this.#subscriberUp && error instanceof ReplyError) {
        this.#channels.delete(channel);
        throw new Error(`Redis refused to subscribe to "${channel}": ${this.#scrub(messageOf(error))}`);
      }
    }
  }

  close(): Promise<void> {
    this.#closing ??= this.#close();
    return this.#closing;
  }

  async #close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#probeTimer);
    this.#ready = false;
    this.#commandsUp = false;
    this.#subscriberUp = false;
    await Promise.all([this.#commands, this.#subscriber].map(disconnect));
  }

  #subscriberConnected(): void {
    if (this.#closed) return;
    const epoch = ++this.#subscriberEpoch;
    const channels = [...this.#channels];
    if (channels.length === 0) {
      this.#subscriberUp = true;
      this.#update();
      return;
    }
    this.#subscribeOn(...channels).then(
      () => {
        if (epoch !== this.#subscriberEpoch || this.#closed) return;
        // Channels added while this SUBSCRIBE was in flight were sent by subscribe() only if the subscriber was
        // up; it was not, so send them now.
        const late = [...this.#channels].filter((c) => !channels.includes(c));
        if (late.length > 0) {
          this.#subscriberConnected();
          return;
        }
        if (this.topology === "cluster") {
          this.#sent = true;
          this.#confirmSoon(0);
          return;
        }
        this.#subscriberUp = true;
        this.#update();
      },
      (error: unknown) => {
        // A dropped connection is followed by a reconnect that tries again; a refusal is an outage too.
        if (epoch !== this.#subscriberEpoch || this.#closed) return;
        this.#failed(`cannot subscribe: ${messageOf(error)}`);
        this.#subscriber.disconnect(true);
      },
    );
  }

  #subscribeOn(...channels: string[]): Promise<unknown> {
    return this.topology === "cluster"
      ? this.#subscriber.ssubscribe(...channels)
      : this.#subscriber.subscribe(...channels);
  }

  /** Cluster: the master that serves the probe's slot now, as the client knows it. */
  #slotOwner(): string | undefined {
    if (this.#probe === undefined) return undefined;
    return (this.#subscriber as Cluster).slots[keySlot(this.#probe)]?.[0];
  }

  /** Cluster: the subscriptions are gone until a probe confirms them again. */
  #subscriptionLost(): void {
    if (this.#closed) return;
    this.#subscriberUp = false;
    this.#confirmedOwner = undefined;
    this.#down("the sharded subscriber lost its node (failover)");
    this.#confirmSoon(PROBE_RETRY_MS);
  }

  /** Cluster: publishes the probe (after `delayMs`), again and again while it reaches no subscriber. */
  #confirmSoon(delayMs: number): void {
    if (this.#closed || this.#subscriberUp || this.#probing || !this.#sent) return;
    clearTimeout(this.#probeTimer);
    this.#probeTimer = setTimeout(() => void this.#confirm(), delayMs);
  }

  async #confirm(): Promise<void> {
    const probe = this.#probe;
    if (this.#closed || this.#subscriberUp || this.#probing) return;
    if (probe === undefined) {
      // Nothing subscribed: nothing to lose.
      this.#subscriberUp = true;
      this.#update();
      return;
    }
    this.#probing = true;
    const owner = this.#slotOwner();
    let reached = false;
    try {
      reached = Number(await this.#commands.call("SPUBLISH", probe, "")) > 0;
    } catch {
      // The slot's master is down or moving: try again.
    } finally {
      this.#probing = false;
    }
    if (this.#closed || this.#subscriberUp) return;
    if (reached && owner !== undefined && owner === this.#slotOwner()) {
      this.#confirmedOwner = owner;
      this.#subscriberUp = true;
      this.#update();
      return;
    }
    this.#confirmSoon(PROBE_RETRY_MS);
  }

  #lost(client: Client): void {
    if (client === this.#commands) this.#commandsUp = false;
    else {
      this.#subscriberUp = false;
      this.#sent = false;
      this.#subscriberEpoch++;
    }
    if (this.#closed) return;
    this.#down(this.#lastError ?? "connection closed");
  }

  #failed(message: string): void {
    this.#lastError = this.#scrub(
      this.#tls ? describeTlsFailure(message, { clientCertificate: this.#clientCertificate }) : message,
    );
    // Errors on a working link (a reset connection) are followed by "close"; errors while down (refused
    // connects, refused AUTH) start or continue an outage.
    if (!this.#ready && !this.#closed) this.#down(this.#lastError);
  }

  #down(reason: string): void {
    this.#ready = false;
    if (this.#downReported) return;
    this.#downReported = true;
    this.#emit(() => this.#events.onDown(`Redis at "${this.#shown}" is unreachable: ${this.#scrub(reason)}`));
  }

  #update(): void {
    if (this.#closed || this.#ready || !this.#commandsUp || !this.#subscriberUp) return;
    this.#ready = true;
    this.#downReported = false;
    this.#lastError = undefined;
    this.#emit(() => this.#events.onReady());
  }

  /**
   * The rejection of a pipeline that failed other than by an error reply. The client's own text for these
   * ("Reached the max retries per request limit", "Connection is closed.") speaks of its options, not of what
   * happened, so the reason is the last connection error seen, if any.
   */
  #unavailable(_error: unknown): RedisUnavailableError {
    if (this.#closed) return new RedisUnavailableError(`Redis link to "${this.#shown}" is closed`);
    return new RedisUnavailableError(
      `Lost the connection to Redis at "${this.#shown}": ${this.#lastError ?? "connection closed"}`,
    );
  }

  /**
   * The text with the URL's credentials replaced by "***": the password wherever it occurs, the user name
   * where it stands as a word of its own (so that a short one does not mangle words such as "username").
   */
  #scrub(text: string): string {
    let out = this.#password === "" ? text : text.replaceAll(this.#password, "***");
    if (this.#userPattern !== undefined) out = out.replace(this.#userPattern, "***");
    return out;
  }

  /** Runs an event callback; one that throws is reported as an uncaught error, not thrown into the client. */
  #emit(callback: () => void): void {
    try {
      callback();
    } catch (error) {
      reportError(error);
    }
  }
}

/** The hash tag of a key or channel (`{...}`, braces included), as Redis Cluster finds it, or null. */
function hashTag(name: string): string | null {
  const open = name.indexOf("{");
  if (open < 0) return null;
  const close = name.indexOf("}", open + 1);
  return close > open + 1 ? name.slice(open, close + 1) : null;
}

/** The Redis Cluster slot of a key or channel: CRC16 (XMODEM) of its hash tag's content, or of all of it. */
export function keySlot(name: string): number {
  const tag = hashTag(name);
  const bytes = new TextEncoder().encode(tag === null ? name : tag.slice(1, -1));
  let crc = 0;
  for (const byte of bytes) {
    crc ^= byte << 8;
    for (let bit = 0; bit < 8; bit++) {
      crc = crc & 0x8000 ? ((crc << 1) ^ 0x1021) & 0xffff : (crc << 1) & 0xffff;
    }
  }
  return crc % 16384;
}

/** Closes the client now (pending commands fail) and resolves when it has ended. */
function disconnect(client: Client): Promise<void> {
  if (client.status === "end") return Promise.resolve();
  if (client.status === "reconnecting") {
    // Between attempts there is no socket and no "end" event: stopping the retry timer is all there is.
    client.disconnect(false);
    return Promise.resolve();
  }
  const ended = new Promise<void>((resolve) => client.once("end", () => resolve()));
  client.disconnect(false);
  return ended;
}
