/**
 * Redis URLs of cluster mode, parsed without loading the Redis client (the config check uses this too), and
 * shown only with their credentials replaced by `***`.
 *
 * - `redis://[user:password@]host[:port][/db]`: one Redis server (or, with `redis_cluster`, a seed node of a
 *   Redis Cluster; several seeds as `host:port,host:port`).
 * - `rediss://...`: the same over TLS.
 * - `redis-sentinel://[user:password@]host[:port][,host[:port]...]/<master name>[/db]`: the sentinels
 *   (default port 26379) and the name of the master they watch; the credentials are the master's.
 *   `rediss-sentinel://` speaks TLS to the master and to the sentinels.
 *
 * @module
 */

/** One host and port. */
export interface RedisHost {
  host: string;
  port: number;
}

/** A parsed Redis URL. */
export interface RedisUrl {
  /** The servers named: the server, the cluster's seed nodes, or the sentinels. */
  hosts: RedisHost[];
  /** TLS (`rediss:` schemes). */
  tls: boolean;
  /** The master name for Sentinel, or null. */
  sentinelMaster: string | null;
  username: string;
  password: string;
  db: number;
}

/**
 * The URL with any password (and username) replaced by "***", for logs. Text that does not parse as a URL
 * gets the same treatment for everything between `//` and the last `@` of its authority.
 *
 * @example
 * ```ts
 * import { redactRedisUrl } from "./redis_url.ts";
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

const SCHEMES: Record<string, { tls: boolean; sentinel: boolean }> = {
  "redis:": { tls: false, sentinel: false },
  "rediss:": { tls: true, sentinel: false },
  "redis-sentinel:": { tls: false, sentinel: true },
  "rediss-sentinel:": { tls: true, sentinel: true },
};

/** What a Redis URL looks like, for messages. */
export const REDIS_URL_FORMS =
  "redis[s]://[user:password@]host:port[/db] or redis[s]-sentinel://[user:password@]host:port[,host:port...]/master[/db]";

/**
 * Parses a Redis URL.
 *
 * @throws {TypeError} `Invalid Redis URL "<url, credentials as ***>": <what is wrong>`.
 * @example
 * ```ts
 * import { parseRedisUrl } from "./redis_url.ts";
 * const u = parseRedisUrl("redis-sentinel://:pw@10.0.0.1,10.0.0.2:26380/main/2");
 * if (u.hosts.length !== 2 || u.hosts[0]!.port !== 26379 || u.sentinelMaster !== "main" || u.db !== 2) {
 *   throw new Error("unexpected");
 * }
 * ```
 */
export function parseRedisUrl(url: string): RedisUrl {
  const bad = (detail: string) => new TypeError(`Invalid Redis URL "${redactRedisUrl(url)}": ${detail}`);
  const colon = url.indexOf("://");
  const scheme = SCHEMES[url.slice(0, colon + 1).toLowerCase()];
  if (colon < 0 || !scheme) {
    throw bad(`the scheme must be redis, rediss, redis-sentinel or rediss-sentinel (${REDIS_URL_FORMS})`);
  }
  const rest = url.slice(colon + 3);
  if (/[?#]/.test(rest)) throw bad("no query or fragment allowed");
  const slash = rest.indexOf("/");
  const authority = slash < 0 ? rest : rest.slice(0, slash);
  const path = slash < 0 ? "" : rest.slice(slash + 1);
  const at = authority.lastIndexOf("@");
  const userinfo = at < 0 ? "" : authority.slice(0, at);
  const decode = (text: string) => {
    try {
      return decodeURIComponent(text);
    } catch {
      throw bad("bad percent-encoding in the credentials");
    }
  };
  const sep = userinfo.indexOf(":");
  const username = decode(sep < 0 ? userinfo : userinfo.slice(0, sep));
  const password = decode(sep < 0 ? "" : userinfo.slice(sep + 1));
  const defaultPort = scheme.sentinel ? 26379 : 6379;
  const hosts = (at < 0 ? authority : authority.slice(at + 1)).split(",").map((text) => {
    // Each host through URL, so that names and IPv6 literals are checked the usual way.
    let parsed: URL;
    try {
      parsed = new URL(`redis://${text}`);
    } catch {
      throw bad(`bad host "${text}"`);
    }
    if (parsed.hostname === "" || parsed.username !== "" || parsed.pathname !== "") {
      throw bad(`bad host "${text}"`);
    }
    const port = parsed.port === "" ? defaultPort : Number(parsed.port);
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw bad("the port must be 1-65535");
    // An IPv6 literal comes back in brackets; the socket wants it without.
    return { host: parsed.hostname.replace(/^\[(.*)\]$/, "$1"), port };
  });
  const parts = path === "" ? [] : path.split("/");
  let sentinelMaster: string | null = null;
  if (scheme.sentinel) {
    sentinelMaster = parts.shift() ?? "";
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(sentinelMaster)) {
      throw bad("the path must name the master: redis-sentinel://host:port,.../<master name>[/db]");
    }
  }
  const db = parts.shift() ?? "";
  if (parts.length > 0 || (db !== "" && !/^\d{1,5}$/.test(db))) {
    throw bad(
      scheme.sentinel
        ? "after the master name, only a database number"
        : "the path must be a database number",
    );
  }
  return { hosts, tls: scheme.tls, sentinelMaster, username, password, db: db === "" ? 0 : Number(db) };
}
