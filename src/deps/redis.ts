/**
 * The Redis link of cluster mode: one command connection and one subscriber connection to the same Redis,
 * reconnected with capped exponential backoff, behind a small interface (`exec` a pipeline, `subscribe`,
 * `close`, and three events). The one module that imports the Redis client (npm `ioredis`), so another client
 * is a one-file change.
 *
 * Credentials never leave this module: errors, `onDown` reasons and thrown messages name the server by
 * {@linkcode redactRedisUrl}, and any text coming from the client is scrubbed of the URL's user name and
 * password before it is passed on.
 *
 * @module
 */
import { Redis, ReplyError } from "ioredis";

/** What a {@linkcode RedisLink} reports. Callbacks are called synchronously and must not throw. */
export interface RedisLinkEvents {
  /** Both connections (commands + subscriber) are up and subscriptions are (re)established. Called on first connect and after every reconnect. */
  onReady(): void;
  /** Redis became unreachable (called once per outage, with a message that never contains credentials). */
  onDown(reason: string): void;
  /** A pub/sub message on a subscribed channel. */
  onMessage(channel: string, message: string): void;
}

/** A link to one Redis server, from {@linkcode openRedisLink}. */
export interface RedisLink {
  /** True while both connections are up. */
  readonly ready: boolean;
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

/**
 * The URL with any password (and username) replaced by "***", for logs. Text that does not parse as a URL
 * gets the same treatment for everything between `//` and the last `@` of its authority.
 *
 * @example
 * ```ts
 * import { redactRedisUrl } from "./redis.ts";
 * const shown = redactRedisUrl("redis://app:s3cret@10.0.0.5:6379/2");
 * if (shown !== "redis://***@10.0.0.5:6379/2") throw new Error(shown);
 * ```
 */
export function redactRedisUrl(url: string): string {
  // Works on the text rather than through URL so that nothing else (case, escapes, a missing port) changes,
  // and so that unparsable input is redacted too. The authority ends at the first "/", "?" or "#"; its
  // userinfo ends at its last "@".
  const start = url.indexOf("//");
  if (start < 0) return url.includes("@") ? `***@${url.slice(url.lastIndexOf("@") + 1)}` : url;
  const from = start + 2;
  const rest = url.slice(from);
  const end = rest.search(/[/?#]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  const at = authority.lastIndexOf("@");
  if (at < 0) return url;
  return `${url.slice(0, from)}***${url.slice(from + at)}`;
}

interface ParsedUrl {
  host: string;
  port: number;
  username: string;
  password: string;
  db: number;
}

function parseRedisUrl(url: string): ParsedUrl {
  const bad = (detail: string) => new TypeError(`Invalid Redis URL "${redactRedisUrl(url)}": ${detail}`);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw bad("not a URL, expected redis://[user:password@]host:port[/db]");
  }
  if (parsed.protocol !== "redis:") throw bad(`the scheme must be "redis:"`);
  if (parsed.hostname === "") throw bad("no host");
  if (parsed.search !== "" || parsed.hash !== "") throw bad("no query or fragment allowed");
  const port = parsed.port === "" ? 6379 : Number(parsed.port);
  if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad("the port must be 1-65535");
  const path = parsed.pathname.replace(/^\//, "");
  if (path !== "" && !/^\d{1,5}$/.test(path)) throw bad("the path must be a database number");
  const decode = (text: string) => {
    try {
      return decodeURIComponent(text);
    } catch {
      throw bad("bad percent-encoding in the credentials");
    }
  };
  // An IPv6 literal comes back in brackets; the socket wants it without.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1");
  return {
    host,
    port,
    username: decode(parsed.username),
    password: decode(parsed.password),
    db: path === "" ? 0 : Number(path),
  };
}

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
  const connectTimeoutMs = positiveMs(
    options.connectTimeoutMs,
    DEFAULT_CONNECT_TIMEOUT_MS,
    "connectTimeoutMs",
  );
  const reconnectMaxMs = positiveMs(options.reconnectMaxMs, DEFAULT_RECONNECT_MAX_MS, "reconnectMaxMs");
  return new IoRedisLink(parsed, redactRedisUrl(url), events, connectTimeoutMs, reconnectMaxMs);
}

class IoRedisLink implements RedisLink {
  readonly #events: RedisLinkEvents;
  readonly #shown: string;
  readonly #password: string;
  readonly #userPattern: RegExp | undefined;
  readonly #commands: Redis;
  readonly #subscriber: Redis;
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
  #closed = false;
  #closing: Promise<void> | undefined;

  constructor(
    url: ParsedUrl,
    shown: string,
    events: RedisLinkEvents,
    connectTimeoutMs: number,
    reconnectMaxMs: number,
  ) {
    this.#events = events;
    this.#shown = shown;
    this.#password = url.password;
    if (url.username !== "") {
      const escaped = url.username.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
      this.#userPattern = new RegExp(`(?<![\\w-])${escaped}(?![\\w-])`, "g");
    }
    const clientOptions = {
      host: url.host,
      port: url.port,
      db: url.db,
      ...(url.username !== "" ? { username: url.username } : {}),
      ...(url.password !== "" ? { password: url.password } : {}),
      connectTimeout: connectTimeoutMs,
      // 50 ms, 100 ms, 200 ms, ... capped; `times` starts at 1 and resets after a successful connect.
      retryStrategy: (times: number) =>
        this.#closed ? null : Math.min(FIRST_RETRY_MS * 2 ** Math.min(times - 1, 30), reconnectMaxMs),
      // Commands fail at once while disconnected, and those in flight fail when the connection drops, instead
      // of being queued or resent after a reconnect.
      enableOfflineQueue: false,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      // This module resubscribes itself, so that onReady can wait for the subscriptions.
      autoResubscribe: false,
      // RESP2: no HELLO round trip, and the same replies from every Redis version.
      protocol: 2,
      disableClientInfo: true,
      lazyConnect: false,
    } as const;
    this.#commands = new Redis(clientOptions);
    this.#subscriber = new Redis(clientOptions);

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
    this.#subscriber.on("message", (channel: string, message: string) => {
      if (!this.#closed) this.#emit(() => this.#events.onMessage(channel, message));
    });
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
    this.#channels.add(channel);
    // While the subscriber is down the channel is subscribed on its next connect, before onReady.
    if (!this.#subscriberUp) return;
    const epoch = this.#subscriberEpoch;
    try {
      await this.#subscriber.subscribe(channel);
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
    this.#subscriber.subscribe(...channels).then(
      () => {
        if (epoch !== this.#subscriberEpoch || this.#closed) return;
        // Channels added while this SUBSCRIBE was in flight were sent by subscribe() only if the subscriber was
        // up; it was not, so send them now.
        const late = [...this.#channels].filter((c) => !channels.includes(c));
        if (late.length > 0) {
          this.#subscriberConnected();
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

  #lost(client: Redis): void {
    if (client === this.#commands) this.#commandsUp = false;
    else {
      this.#subscriberUp = false;
      this.#subscriberEpoch++;
    }
    if (this.#closed) return;
    this.#down(this.#lastError ?? "connection closed");
  }

  #failed(message: string): void {
    this.#lastError = this.#scrub(message);
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

/** Closes the client now (pending commands fail) and resolves when it has ended. */
function disconnect(client: Redis): Promise<void> {
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
