/**
 * Cluster mode's settings (`cluster` in config.json, `ServerOptions.cluster`): their defaults, file keys,
 * checks and the completion of a partial section; re-exported by `src/config.ts`.
 *
 * @module
 */
import { show } from "./wire/mod.ts";
import { parseRedisUrl, redactRedisUrl, REDIS_URL_FORMS } from "./redis_url.ts";

/** Cluster mode settings ({@linkcode Config.cluster}). */
export interface ClusterConfig {
  /**
   * `redis://[user:password@]host:port[/db]`, `rediss://` for TLS, several `host:port` separated by commas
   * for the seed nodes of a Redis Cluster, or `redis[s]-sentinel://[user:password@]host:port[,host:port...]/
   * <master name>[/db]` for Sentinel (see docs/cluster.md).
   */
  redisUrl: string;
  /** This instance's id, 1 to 64 of `[A-Za-z0-9._-]`; null draws a random one each run. @default {null} */
  instanceId: string | null;
  /**
   * Seconds a directory entry lives after its instance last renewed it (renewed every third of it), so a
   * crashed instance's peers vanish from the others' discovery within this time. @default {30}
   */
  peerTtl: number;
  /** Prefix of every Redis key and pub/sub channel. @default {"p2p:"} */
  keyPrefix: string;
  /** The URL names node(s) of a Redis Cluster (sharded pub/sub, redirections followed). @default {false} */
  redisCluster?: boolean;
  /** `rediss`: the PEM file of the CA(s) to trust instead of the system's. @default {null} */
  tlsCaFile?: string | null;
  /** `rediss`: the client certificate (PEM) for mutual TLS, with {@linkcode tlsKeyFile}. @default {null} */
  tlsCertFile?: string | null;
  /** `rediss`: the client certificate's private key (PEM). @default {null} */
  tlsKeyFile?: string | null;
  /** `rediss`: the name the server's certificate must carry, when not the URL's host. @default {null} */
  tlsServerName?: string | null;
}

/** Cluster settings as the library takes them: `redisUrl`, and any of the others (defaults below). */
export type ClusterOptions = Pick<ClusterConfig, "redisUrl"> & Partial<Omit<ClusterConfig, "redisUrl">>;

/** Defaults of the optional cluster settings. */
export const DEFAULT_CLUSTER: Readonly<Omit<ClusterConfig, "redisUrl">> = Object.freeze({
  instanceId: null,
  peerTtl: 30,
  keyPrefix: "p2p:",
  redisCluster: false,
  tlsCaFile: null,
  tlsCertFile: null,
  tlsKeyFile: null,
  tlsServerName: null,
});

/** The cluster settings' keys in the config file and their fields. */
export const CLUSTER_FILE_KEYS = {
  redis_url: "redisUrl",
  instance_id: "instanceId",
  peer_ttl: "peerTtl",
  key_prefix: "keyPrefix",
  redis_cluster: "redisCluster",
  tls_ca_file: "tlsCaFile",
  tls_cert_file: "tlsCertFile",
  tls_key_file: "tlsKeyFile",
  tls_server_name: "tlsServerName",
} as const satisfies Record<string, keyof ClusterConfig>;

/** A Redis URL with its credentials replaced by `***` (for messages and logs). */
export function redactUrl(text: string): string {
  try {
    const url = new URL(text);
    if (url.username || url.password) {
      url.username = url.username ? "***" : "";
      url.password = url.password ? "***" : "";
    }
    return url.href;
  } catch {
    return redactRedisUrl(text);
  }
}

/** Checks one cluster setting; a string says what is wrong (never showing credentials). */
/** The values cluster setting `field` accepts, as its check states them (for the configuration reference). */
export function clusterAcceptedValues(field: keyof ClusterConfig): string {
  return (checkClusterField(field, Symbol("not a setting value")) ?? "").replace(/^must be /, "").replace(
    /, got [\s\S]*$/,
    "",
  );
}

function checkClusterField(field: keyof ClusterConfig, v: unknown): string | undefined {
  switch (field) {
    case "redisUrl": {
      if (typeof v !== "string") return `must be a string such as "redis://127.0.0.1:6379/0", got ${show(v)}`;
      try {
        parseRedisUrl(v);
      } catch (error) {
        return `must be ${REDIS_URL_FORMS}, got "${redactUrl(v)}" (${
          (error as Error).message.replace(/^.*": /, "")
        })`;
      }
      return undefined;
    }
    case "redisCluster":
      return typeof v === "boolean" ? undefined : `must be true or false, got ${show(v)}`;
    case "tlsCaFile":
    case "tlsCertFile":
    case "tlsKeyFile":
      return v === null || (typeof v === "string" && v !== "")
        ? undefined
        : `must be null or the path of a PEM file, got ${show(v)}`;
    case "tlsServerName":
      return v === null || (typeof v === "string" && /^[A-Za-z0-9.-]{1,253}$/.test(v))
        ? undefined
        : `must be null or a host name, got ${show(v)}`;
    case "instanceId":
      return v === null || (typeof v === "string" && /^[A-Za-z0-9._-]{1,64}$/.test(v))
        ? undefined
        : `must be null or 1 to 64 of A-Z a-z 0-9 . _ -, got ${show(v)}`;
    case "peerTtl":
      return typeof v === "number" && Number.isFinite(v) && v >= 1 && v <= 3600
        ? undefined
        : `must be a number of seconds from 1 to 3600, got ${show(v)}`;
    case "keyPrefix":
      return typeof v === "string" && /^[\x21-\x7e]{0,64}$/.test(v)
        ? undefined
        : `must be up to 64 printable ASCII characters without spaces, got ${show(v)}`;
  }
}

/**
 * Completes and checks cluster settings (camelCase fields; `fileKeys` when they came from the config file).
 * Returns the settings, or a message naming the key (`cluster.redis_url`, ...) and the value.
 */
export function completeCluster(
  value: unknown,
  fileKeys: boolean,
  complete = true,
): ClusterConfig | null | string {
  if (value === null) return null;
  if (typeof value !== "object" || Array.isArray(value)) {
    return `"cluster" must be null or an object with "redis_url", got ${show(value)}`;
  }
  const given: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const field = fileKeys ? CLUSTER_FILE_KEYS[k as keyof typeof CLUSTER_FILE_KEYS] : k;
    if (field === undefined || !Object.values(CLUSTER_FILE_KEYS).includes(field as keyof ClusterConfig)) {
      return `"cluster.${k}" is not a cluster setting (known: ${Object.keys(CLUSTER_FILE_KEYS).join(", ")})`;
    }
    given[field] = v;
  }
  // From the config file, what is given is checked; the command line may still add `redis_url`.
  const merged = complete
    ? { ...DEFAULT_CLUSTER, ...stripUndefined(given) } as Record<string, unknown>
    : given;
  for (const [key, field] of Object.entries(CLUSTER_FILE_KEYS)) {
    if (!complete && merged[field] === undefined) continue;
    const problem = checkClusterField(field, merged[field]);
    if (problem) return `"cluster.${key}" ${problem}`;
  }
  if (complete) {
    const problem = checkClusterCombination(merged as unknown as ClusterConfig);
    if (problem) return problem;
  }
  return merged as unknown as ClusterConfig;
}

/** Checks the settings that depend on each other (the URL's kind and the TLS and cluster settings). */
function checkClusterCombination(c: ClusterConfig): string | undefined {
  const url = parseRedisUrl(c.redisUrl);
  const shown = redactUrl(c.redisUrl);
  if (url.sentinelMaster !== null && c.redisCluster) {
    return `"cluster.redis_cluster" must be false with a Sentinel URL, got true for "${shown}"`;
  }
  if (url.hosts.length > 1 && url.sentinelMaster === null && !c.redisCluster) {
    return `"cluster.redis_url" names several servers, which needs "redis_cluster": true or a redis-sentinel:// URL, got "${shown}"`;
  }
  if (c.redisCluster && url.db !== 0) {
    return `"cluster.redis_url" must not name a database with "redis_cluster" (Redis Cluster has only 0), got "${shown}"`;
  }
  for (
    const [key, value] of [
      ["tls_ca_file", c.tlsCaFile],
      ["tls_cert_file", c.tlsCertFile],
      ["tls_key_file", c.tlsKeyFile],
      ["tls_server_name", c.tlsServerName],
    ] as const
  ) {
    if (value !== null && !url.tls) {
      return `"cluster.${key}" needs a rediss:// or rediss-sentinel:// URL, got "${shown}"`;
    }
  }
  if ((c.tlsCertFile === null) !== (c.tlsKeyFile === null)) {
    const missing = c.tlsCertFile === null ? "tls_cert_file" : "tls_key_file";
    return `"cluster.${missing}" must be set too: a client certificate needs its key, got null`;
  }
  return undefined;
}

export function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}

/** The key a cluster problem names (`cluster.redis_url`, ...). */
export function clusterKey(problem: string): string {
  return /^"(cluster(?:\.[a-z_]+)?)"/.exec(problem)?.[1] ?? "cluster";
}

/** A cluster section in the config.json format (snake_case keys). */
export function clusterToFile(cluster: ClusterConfig): Record<string, unknown> {
  return Object.fromEntries(Object.entries(CLUSTER_FILE_KEYS).map(([key, field]) => [key, cluster[field]]));
}
