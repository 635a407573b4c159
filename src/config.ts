/**
 * Configuration: defaults, validation of the `config.json` file format, and merging with command-line
 * flags. Pure; reading the file is the caller's business.
 *
 * @module
 */
import { show } from "./wire/mod.ts";
import { AUTH_POLICIES, type AuthPolicy } from "./core/auth.ts";
import {
  type ClusterConfig,
  clusterKey,
  clusterToFile,
  completeCluster,
  stripUndefined,
} from "./config_cluster.ts";
import { ConfigError } from "./config_error.ts";
import {
  type Check,
  COOKIE_MODES,
  type CookieMode,
  CRYPTO_BACKENDS,
  type CryptoBackend,
  IO_BACKENDS,
  type IoBackend,
  LOG_FORMATS,
  type LogFormat,
  metricsAllowedHosts,
  metricsToken,
  natLifetimeGapsMs,
  oneOf,
  port,
  positiveInt,
  positiveSeconds,
  rate,
  RETRANSMIT_POLICIES,
  type RetransmitPolicy,
  retransmitSchedule,
  socketAddr,
  stunAlternateAddress,
  stunAlternatePort,
  stunProblem,
} from "./config_checks.ts";
export { ConfigError } from "./config_error.ts";
export { COOKIE_MODES, IO_BACKENDS, LOG_FORMATS } from "./config_checks.ts";
export { CRYPTO_BACKENDS, RETRANSMIT_POLICIES } from "./config_checks.ts";
export type { CookieMode, CryptoBackend, IoBackend, LogFormat, RetransmitPolicy } from "./config_checks.ts";
export type { ClusterConfig, ClusterOptions } from "./config_cluster.ts";
export { DEFAULT_CLUSTER, redactUrl } from "./config_cluster.ts";

/** Server configuration. Every field has a documented default ({@linkcode DEFAULT_CONFIG}). */
export interface Config {
  /**
   * Address to listen on, `"ip:port"` or `"[ip6]:port"`; `0.0.0.0` / `[::]` listen on all interfaces.
   * @default {"127.0.0.1:8080"}
   */
  listenAddress: string;
  /**
   * Most peers held at once, handshaking and authenticated together. @default {100}
   */
  maxConnections: number;
  /**
   * Seconds between the server's heartbeat Pings to each peer. @default {30}
   */
  heartbeatInterval: number;
  /**
   * Seconds of silence after which a peer is removed. @default {60}
   */
  connectionTimeout: number;
  /**
   * Inclusive UDP port range probed on the server's own host for sibling servers. @default {[8081, 8090]}
   */
  discoveryPortRange: [number, number];
  /**
   * Whether to probe `discoveryPortRange` for sibling servers at start. @default {true}
   */
  enableDiscovery: boolean;
  /**
   * Largest accepted message, in bytes. A UDP datagram cannot exceed 65,507 bytes, so that is the effective
   * limit of a single-datagram message. @default {1048576}
   */
  maxMessageSize: number;
  /**
   * How reliable messages are retransmitted. `"adaptive"`: waits follow the measured round-trip time
   * (`rto_*`), back off exponentially with jitter, and a message is given up at its deadline
   * (`handshake_timeout`, `delivery_timeout`). `"schedule"`: the spec's count-based timing, one try per
   * entry of `retransmit_schedule_ms`, then give up.
   * @default {"adaptive"}
   */
  retransmitPolicy: RetransmitPolicy;
  /**
   * Under `"schedule"`: waits in milliseconds after each try of a reliable message, one try per wait, then
   * give up. `[500, 1000, 2000]` sends at 0, 0.5 s and 1.5 s and gives up at 3.5 s (the spec's "max 3 tries").
   * @default {[500, 1000, 2000]}
   */
  retransmitSchedule: number[];
  /**
   * Retransmission timeout before a path's first RTT sample, in milliseconds (the spec's 500 ms).
   * @default {500}
   */
  rtoInitialMs: number;
  /**
   * Floor of the retransmission timeout, in milliseconds.
   * @default {100}
   */
  rtoMinMs: number;
  /**
   * Ceiling of the retransmission timeout and of every backed-off wait, in milliseconds.
   * @default {2000}
   */
  rtoMaxMs: number;
  /**
   * Seconds a handshake keeps being retried before it is given up (adaptive policy).
   * @default {10}
   */
  handshakeTimeout: number;
  /**
   * Seconds any other reliable message keeps being retried before it is given up (adaptive policy); also
   * how long a partly reassembled message or a gap in ordered delivery is waited for.
   * @default {30}
   */
  deliveryTimeout: number;
  /**
   * Largest datagram sent to a peer that speaks the fragmentation extension, in bytes; larger messages are
   * cut into fragments of at most this size (up to `max_message_size` in all).
   * @default {1200}
   */
  maxDatagramSize: number;
  /**
   * Bytes all peers' partly reassembled messages may hold together.
   * @default {67108864}
   */
  reassemblyBufferBytes: number;
  /**
   * When a HandshakeRequest must carry a stateless cookie: `"auto"` once more than `cookie_threshold`
   * handshakes are half-open, `"always"`, or `"never"`.
   * @default {"auto"}
   */
  cookieMode: CookieMode;
  /**
   * Half-open handshakes (peers registered but not yet confirmed) above which `"auto"` requires cookies.
   * @default {64}
   */
  cookieThreshold: number;
  /**
   * Seconds a peer may stay half-open (its handshake answered, never confirmed) before it is removed.
   * @default {60}
   */
  halfOpenTimeout: number;
  /**
   * `[per second, burst]`: datagrams accepted from one source IP; the excess is dropped unanswered.
   * @default {[2000, 4000]}
   */
  rateLimitDatagramsPerIp: [number, number];
  /**
   * `[per second, burst]`: HandshakeRequests accepted from one source IP.
   * @default {[50, 100]}
   */
  rateLimitHandshakesPerIp: [number, number];
  /**
   * `[per second, burst]`: datagrams accepted from one registered peer.
   * @default {[1000, 2000]}
   */
  rateLimitDatagramsPerNode: [number, number];
  /**
   * `[per second, burst]`: datagrams accepted in all.
   * @default {[200000, 200000]}
   */
  rateLimitDatagramsGlobal: [number, number];
  /**
   * Seconds an IP is banned (all its datagrams dropped) after 1,000 datagrams in a row over its limit; 0
   * turns bans off.
   * @default {0}
   */
  banSeconds: number;
  /**
   * Whether loopback sources (127.0.0.0/8, ::1) are exempt from the per-IP limits.
   * @default {true}
   */
  rateLimitExemptLoopback: boolean;
  /**
   * Node authentication: `"off"` (keys ignored), `"optional"` (keyed nodes verified, unkeyed accepted) or
   * `"required"` (unkeyed handshakes refused with `auth_required`).
   * @default {"optional"}
   */
  auth: AuthPolicy;
  /**
   * Ed25519 public keys (unpadded base64url) allowed to register; `null` allows any. Unkeyed nodes are
   * refused when set.
   * @default {null}
   */
  authAllowKeys: string[] | null;
  /**
   * Seconds a signed HandshakeRequest's timestamp may differ from the server's clock.
   * @default {60}
   */
  authMaxSkew: number;
  /**
   * The server's identity key file (PKCS#8 PEM, owner-only permissions), created on first run; `null` uses a
   * new key each run. The program (`main.ts`) defaults it to `"p2p_server_identity.pem"`.
   * @default {null}
   */
  identityFile: string | null;
  /**
   * Seconds between keepalives the server suggests to clients in its HandshakeResponse (`keepalive_interval`):
   * many NATs forget an idle UDP mapping after 30 s, the spec's heartbeat interval; `P2PClient` keeps its
   * mapping open with a Ping this often.
   * @default {15}
   */
  suggestedKeepalive: number;
  /**
   * `[messages, bytes]` a peer may have relayed through the server per minute (routed Data); the excess is
   * refused with `Error` `relay_quota`.
   * @default {[1000, 1048576]}
   */
  relayQuota: [number, number];
  /**
   * Most peers listed in one DiscoveryResponse (the response is also kept within one datagram).
   * @default {64}
   */
  discoveryPageSize: number;
  /**
   * TCP address of the operations HTTP server (`/metrics`, `/health`, `/peers`, the status page), `"ip:port"`
   * or `"[ip6]:port"`; `null` turns it off. Use a loopback address unless it must be reachable from elsewhere.
   * @default {null}
   */
  metricsAddress: string | null;
  /**
   * Bearer token every operations route but `/health` requires; `null` requires none.
   * @default {null}
   */
  metricsToken: string | null;
  /**
   * Host names the operations HTTP server answers to besides IP literals and `localhost`/`*.localhost`
   * (a `Host` of any other name gets `421`: DNS rebinding). A leading `*.` matches subdomains; `"*"` turns
   * the check off (behind a proxy that checks it).
   * @default {[]}
   */
  metricsAllowedHosts: string[];
  /**
   * Most TCP connections the operations HTTP server keeps open; at the cap a new connection replaces the one
   * that has waited longest for a complete request.
   * @default {64}
   */
  metricsMaxConnections: number;
  /**
   * Log line format of the program: `"text"` or `"json"` (JSON lines).
   * @default {"text"}
   */
  logFormat: LogFormat;
  /**
   * Seconds between the periodic stats log line (info level); `0` turns it off.
   * @default {60}
   */
  statsInterval: number;
  /**
   * Cluster mode: instances sharing one peer directory on Redis (see docs/cluster.md); `null` keeps the
   * directory in this process alone. In the config file: `{"redis_url": ..., "instance_id": ...,
   * "peer_ttl": ..., "key_prefix": ..., "redis_cluster": ..., "tls_ca_file": ..., "tls_cert_file": ...,
   * "tls_key_file": ..., "tls_server_name": ...}`, only `redis_url` required.
   * @default {null}
   */
  cluster: ClusterConfig | null;
  /**
   * UDP port of a second socket that serves STUN only, for RFC 5780 NAT behaviour discovery: a
   * CHANGE-REQUEST for another port is answered from it. `0` binds any free port; `null` opens none.
   * @default {null}
   */
  stunAlternatePort: number | null;
  /**
   * A second IP address of this host for RFC 5780 (needs `stun_alternate_port` and a `listen_address` of one
   * IP): STUN is then also served on it, on both ports, answers name it in OTHER-ADDRESS, and a
   * CHANGE-REQUEST for another address is answered from it. `null` is off.
   * @default {null}
   */
  stunAlternateAddress: string | null;
  /**
   * The idle gaps (ms) after which the server probes a peer's sacrificial socket to measure how long its NAT
   * keeps an idle binding (docs/protocol.md, "The binding lifetime exchange"): the result is the longest gap
   * that passed, and the keepalive suggested to the peer stays below half of it. `[]` turns it off.
   * @default {[5000, 10000, 20000, 30000, 45000, 60000, 90000, 120000]}
   */
  natLifetimeGapsMs: number[];
  /**
   * How the UDP sockets are driven: `"deno"` (`Deno.listenDatagram`) or `"mmsg"` (Linux `recvmmsg` and
   * `sendmmsg` through `Deno.dlopen`: less CPU per datagram; needs Linux on x86_64 or aarch64 and
   * `--allow-ffi`, docs/performance.md). @default {"deno"}
   */
  ioBackend: IoBackend;
  /**
   * Keyed sessions' X25519 and HMAC-SHA-256: `"openssl"` (the system's `libcrypto.so.3` through `Deno.dlopen`,
   * less CPU; Linux and `--allow-ffi`, else refused at start), `"node"` (`node:crypto`), or `"auto"`: OpenSSL
   * where it opens and gives the known answers, else `node:crypto` (logged; docs/operations.md). @default {"auto"}
   */
  cryptoBackend: CryptoBackend;
}

/** The defaults, as the spec's `config.json` has them. */
export const DEFAULT_CONFIG: Readonly<Config> = Object.freeze({
  listenAddress: "127.0.0.1:8080",
  maxConnections: 100,
  heartbeatInterval: 30,
  connectionTimeout: 60,
  discoveryPortRange: [8081, 8090] as [number, number],
  enableDiscovery: true,
  maxMessageSize: 1_048_576,
  retransmitPolicy: "adaptive",
  retransmitSchedule: [500, 1000, 2000],
  rtoInitialMs: 500,
  rtoMinMs: 100,
  rtoMaxMs: 2000,
  handshakeTimeout: 10,
  deliveryTimeout: 30,
  maxDatagramSize: 1200,
  reassemblyBufferBytes: 67_108_864,
  cookieMode: "auto",
  cookieThreshold: 64,
  halfOpenTimeout: 60,
  rateLimitDatagramsPerIp: [2000, 4000] as [number, number],
  rateLimitHandshakesPerIp: [50, 100] as [number, number],
  rateLimitDatagramsPerNode: [1000, 2000] as [number, number],
  rateLimitDatagramsGlobal: [200_000, 200_000] as [number, number],
  banSeconds: 0,
  rateLimitExemptLoopback: true,
  auth: "optional",
  authAllowKeys: null,
  authMaxSkew: 60,
  identityFile: null,
  suggestedKeepalive: 15,
  relayQuota: [1000, 1_048_576] as [number, number],
  discoveryPageSize: 64,
  metricsAddress: null,
  metricsToken: null,
  metricsAllowedHosts: [],
  metricsMaxConnections: 64,
  logFormat: "text",
  statsInterval: 60,
  cluster: null,
  stunAlternatePort: null,
  stunAlternateAddress: null,
  natLifetimeGapsMs: [5000, 10_000, 20_000, 30_000, 45_000, 60_000, 90_000, 120_000],
  ioBackend: "deno",
  cryptoBackend: "auto",
});

/** The config file's keys (snake_case, as in the spec) and the Config fields they set. */
export const CONFIG_FILE_KEYS = {
  listen_address: "listenAddress",
  max_connections: "maxConnections",
  heartbeat_interval: "heartbeatInterval",
  connection_timeout: "connectionTimeout",
  discovery_port_range: "discoveryPortRange",
  enable_discovery: "enableDiscovery",
  max_message_size: "maxMessageSize",
  retransmit_policy: "retransmitPolicy",
  retransmit_schedule_ms: "retransmitSchedule",
  rto_initial_ms: "rtoInitialMs",
  rto_min_ms: "rtoMinMs",
  rto_max_ms: "rtoMaxMs",
  handshake_timeout: "handshakeTimeout",
  delivery_timeout: "deliveryTimeout",
  max_datagram_size: "maxDatagramSize",
  reassembly_buffer_bytes: "reassemblyBufferBytes",
  cookie_mode: "cookieMode",
  cookie_threshold: "cookieThreshold",
  half_open_timeout: "halfOpenTimeout",
  rate_limit_datagrams_per_ip: "rateLimitDatagramsPerIp",
  rate_limit_handshakes_per_ip: "rateLimitHandshakesPerIp",
  rate_limit_datagrams_per_node: "rateLimitDatagramsPerNode",
  rate_limit_datagrams_global: "rateLimitDatagramsGlobal",
  ban_seconds: "banSeconds",
  rate_limit_exempt_loopback: "rateLimitExemptLoopback",
  auth: "auth",
  auth_allow_keys: "authAllowKeys",
  auth_max_skew: "authMaxSkew",
  identity_file: "identityFile",
  suggested_keepalive: "suggestedKeepalive",
  relay_quota: "relayQuota",
  discovery_page_size: "discoveryPageSize",
  metrics_address: "metricsAddress",
  metrics_token: "metricsToken",
  metrics_allowed_hosts: "metricsAllowedHosts",
  metrics_max_connections: "metricsMaxConnections",
  log_format: "logFormat",
  stats_interval: "statsInterval",
  cluster: "cluster",
  stun_alternate_port: "stunAlternatePort",
  stun_alternate_address: "stunAlternateAddress",
  nat_lifetime_gaps_ms: "natLifetimeGapsMs",
  io_backend: "ioBackend",
  crypto_backend: "cryptoBackend",
} as const satisfies Record<string, keyof Config>;

type FileKey = keyof typeof CONFIG_FILE_KEYS;

const FIELD_TO_FILE_KEY = Object.fromEntries(
  Object.entries(CONFIG_FILE_KEYS).map(([k, v]) => [v, k]),
) as Record<keyof Config, FileKey>;

const CHECKS: Record<keyof Config, Check> = {
  listenAddress: socketAddr,
  maxConnections: positiveInt(1_000_000),
  heartbeatInterval: positiveSeconds,
  connectionTimeout: positiveSeconds,
  discoveryPortRange: (v) =>
    Array.isArray(v) && v.length === 2 && port(v[0]) && port(v[1]) && (v[0] as number) <= (v[1] as number)
      ? undefined
      : "must be [first, last] with ports from 1 to 65535 and first <= last",
  enableDiscovery: (v) => typeof v === "boolean" ? undefined : "must be true or false",
  maxMessageSize: positiveInt(16 * 1_048_576),
  retransmitSchedule,
  retransmitPolicy: oneOf(RETRANSMIT_POLICIES),
  rtoInitialMs: positiveInt(600_000),
  rtoMinMs: positiveInt(600_000),
  rtoMaxMs: positiveInt(600_000),
  handshakeTimeout: positiveSeconds,
  deliveryTimeout: positiveSeconds,
  maxDatagramSize: (v) =>
    typeof v === "number" && Number.isInteger(v) && v >= 576 && v <= 65_507
      ? undefined
      : "must be an integer from 576 to 65507",
  reassemblyBufferBytes: positiveInt(4 * 1024 * 1_048_576),
  cookieMode: oneOf(COOKIE_MODES),
  cookieThreshold: (v) =>
    typeof v === "number" && Number.isInteger(v) && v >= 0 && v <= 1_000_000
      ? undefined
      : "must be an integer from 0 to 1000000",
  halfOpenTimeout: positiveSeconds,
  rateLimitDatagramsPerIp: rate,
  rateLimitHandshakesPerIp: rate,
  rateLimitDatagramsPerNode: rate,
  rateLimitDatagramsGlobal: rate,
  banSeconds: (v) =>
    typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 86_400
      ? undefined
      : "must be a number of seconds from 0 (off) to 86400",
  rateLimitExemptLoopback: (v) => typeof v === "boolean" ? undefined : "must be true or false",
  auth: (v) =>
    (AUTH_POLICIES as readonly unknown[]).includes(v)
      ? undefined
      : `must be one of ${AUTH_POLICIES.map((f) => `"${f}"`).join(", ")}`,
  authAllowKeys: (v) =>
    v === null ||
      (Array.isArray(v) && v.length <= 100_000 &&
        v.every((k) => typeof k === "string" && /^[A-Za-z0-9_-]{43}$/.test(k)))
      ? undefined
      : "must be null or a list of Ed25519 public keys in unpadded base64url (43 characters each)",
  authMaxSkew: positiveSeconds,
  suggestedKeepalive: positiveSeconds,
  relayQuota: (v) =>
    Array.isArray(v) && v.length === 2 &&
      v.every((x) => typeof x === "number" && Number.isInteger(x) && x >= 1 && x <= 1_000_000_000)
      ? undefined
      : "must be [messages, bytes] per minute, each an integer from 1 to 1000000000",
  identityFile: (v) =>
    v === null || (typeof v === "string" && v.length >= 1 && v.length <= 4096)
      ? undefined
      : "must be null or a file path",
  discoveryPageSize: positiveInt(10_000),
  metricsAddress: (v) =>
    v === null
      ? undefined
      : typeof v === "string"
      ? socketAddr(v)
      : 'must be null or a string such as "127.0.0.1:9100"',
  metricsToken,
  metricsAllowedHosts,
  metricsMaxConnections: positiveInt(100_000),
  logFormat: oneOf(LOG_FORMATS),
  statsInterval: (v) =>
    typeof v === "number" && Number.isFinite(v) && v >= 0 && v <= 86_400
      ? undefined
      : "must be a number of seconds from 0 (off) to 86400",
  // Checked (and completed) by completeCluster, which names the sub-key.
  cluster: () => undefined,
  stunAlternatePort,
  stunAlternateAddress,
  natLifetimeGapsMs,
  ioBackend: oneOf(IO_BACKENDS),
  cryptoBackend: oneOf(CRYPTO_BACKENDS),
};

/** A value no check accepts: what a check says about it is the rule it enforces. */
const NOTHING_VALID = Symbol("not a setting value");

/**
 * The values `field` accepts, as its check states them ("an integer from 1 to 1000000", ...): the rule is
 * declared once, in the check, and the configuration reference quotes it from there.
 */
export function acceptedValues(field: keyof Config): string {
  return (CHECKS[field](NOTHING_VALID) ?? "").replace(/^must be /, "");
}

/** The result of reading a config file: the values it sets and the unknown keys it had. */
export interface ConfigFileResult {
  /** Values the file sets. */
  config: Partial<Config>;
  /** Keys the file had that p2p_server does not know (warned about by name). */
  unknownKeys: string[];
}

/**
 * Parses and validates the text of a `config.json`.
 *
 * @param text The file's contents.
 * @param source The file name, used in error messages.
 * @throws {ConfigError} naming the file, the key and the bad value.
 * @example
 * ```ts
 * import { parseConfigFile } from "./config.ts";
 * const { config, unknownKeys } = parseConfigFile('{"max_connections": 5, "colour": "red"}', "c.json");
 * if (config.maxConnections !== 5 || unknownKeys[0] !== "colour") throw new Error("unexpected");
 * ```
 */
export function parseConfigFile(text: string, source: string): ConfigFileResult {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new ConfigError(`${source}: not valid JSON: ${(error as Error).message}`, "");
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new ConfigError(`${source}: expected a JSON object, got ${show(value)}`, "");
  }
  const config: Record<string, unknown> = {};
  const unknownKeys: string[] = [];
  for (const [key, v] of Object.entries(value)) {
    if (key === "$schema") continue; // the editors' schema (config.schema.json), not a setting
    if (!Object.hasOwn(CONFIG_FILE_KEYS, key)) {
      unknownKeys.push(key);
      continue;
    }
    const field = CONFIG_FILE_KEYS[key as FileKey];
    if (field === "cluster") {
      const cluster = completeCluster(v, true, false);
      if (typeof cluster === "string") throw new ConfigError(`${source}: ${cluster}`, clusterKey(cluster));
      config[field] = cluster;
      continue;
    }
    const problem = CHECKS[field](v);
    if (problem) throw new ConfigError(`${source}: "${key}" ${problem}, got ${show(v)}`, key);
    config[field] = v;
  }
  return { config: config as Partial<Config>, unknownKeys };
}

/**
 * Completes a partial configuration with the defaults and validates every value.
 *
 * @throws {ConfigError} (a `TypeError`) naming the key and the bad value.
 * @example
 * ```ts
 * import { resolveConfig } from "./config.ts";
 * const c = resolveConfig({ maxConnections: 10 });
 * if (c.maxConnections !== 10 || c.heartbeatInterval !== 30) throw new Error("unexpected");
 * ```
 */
export function resolveConfig(partial: Partial<Config> = {}): Config {
  const merged = { ...DEFAULT_CONFIG, ...stripUndefined(partial) } as Config;
  for (const field of Object.keys(CHECKS) as (keyof Config)[]) {
    const problem = CHECKS[field](merged[field]);
    if (problem) {
      throw new ConfigError(
        `Invalid config "${FIELD_TO_FILE_KEY[field]}": ${problem}, got ${show(merged[field])}`,
        FIELD_TO_FILE_KEY[field],
      );
    }
  }
  const cluster = completeCluster(merged.cluster, false);
  if (typeof cluster === "string") throw new ConfigError(`Invalid config ${cluster}`, clusterKey(cluster));
  const stun = stunProblem(merged);
  if (stun) throw new ConfigError(`Invalid config "${stun[0]}": ${stun[1]}, got ${show(stun[2])}`, stun[0]);
  if (merged.rtoMinMs > merged.rtoMaxMs) {
    throw new ConfigError(
      `Invalid config "rto_min_ms": must not exceed "rto_max_ms" (${merged.rtoMaxMs}), got ${merged.rtoMinMs}`,
      "rto_min_ms",
    );
  }
  return {
    ...merged,
    discoveryPortRange: [merged.discoveryPortRange[0], merged.discoveryPortRange[1]],
    retransmitSchedule: [...merged.retransmitSchedule],
    rateLimitDatagramsPerIp: [...merged.rateLimitDatagramsPerIp],
    rateLimitHandshakesPerIp: [...merged.rateLimitHandshakesPerIp],
    rateLimitDatagramsPerNode: [...merged.rateLimitDatagramsPerNode],
    rateLimitDatagramsGlobal: [...merged.rateLimitDatagramsGlobal],
    relayQuota: [...merged.relayQuota],
    natLifetimeGapsMs: [...merged.natLifetimeGapsMs],
    cluster,
  };
}

/** Writes a Config as the `config.json` file format (snake_case keys). */
export function toConfigFile(config: Config): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, field] of Object.entries(CONFIG_FILE_KEYS)) out[key] = config[field];
  if (config.cluster) out.cluster = clusterToFile(config.cluster);
  return out;
}
