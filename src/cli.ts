/**
 * The command line: flags, usage text, and turning flags into configuration. Pure; `main.ts` does the I/O.
 *
 * @module
 */
import { parseSocketAddr } from "./wire/address.ts";
import {
  type Config,
  ConfigError,
  DEFAULT_CONFIG,
  LOG_FORMATS,
  type LogFormat,
  resolveConfig,
} from "./config.ts";
import type { Level } from "./logging.ts";
import { parseArgs } from "./deps/flags.ts";
import { closest } from "./suggest.ts";

/**
 * A bad command line. `main.ts` prints the message, then {@linkcode USAGE_HINT}, and exits with status 2.
 */
export class UsageError extends TypeError {
  /**
   * @param message One line naming the flag and the value.
   */
  constructor(message: string) {
    super(message);
    this.name = "UsageError";
  }
}

/** The one line printed after a usage error's message, in place of the whole usage text. */
export const USAGE_HINT = "run 'p2p_server --help' for usage";

/**
 * What the command line asks for. `check` (`--check-config`) resolves the configuration as `run` does, then
 * prints it instead of starting the server.
 */
export type CliRequest =
  | { kind: "help" }
  | { kind: "version" }
  | ({ kind: "run" } & RunSettings)
  | ({ kind: "check" } & RunSettings);

/** What a `run` or `check` request carries: the flags' settings, the config file and the log level flag. */
export interface RunSettings {
  /** Settings given by flags (they override the config file's). */
  flags: Partial<Config>;
  /** The `-c` file, if any. */
  configFile: string | undefined;
  /** The log level flag, if any. */
  level: Level | undefined;
}

const LEVEL_FLAGS = ["TRACE", "DEBUG", "INFO", "WARN", "ERROR"] as const;

/** The flags `parseCli` knows, as `node:util` `parseArgs` takes them. */
const OPTIONS = {
  address: { type: "string", short: "a" },
  "max-connections": { type: "string", short: "m" },
  config: { type: "string", short: "c" },
  "metrics-address": { type: "string" },
  "log-format": { type: "string" },
  cluster: { type: "string" },
  "instance-id": { type: "string" },
  "check-config": { type: "boolean" },
  help: { type: "boolean", short: "h" },
  version: { type: "boolean", short: "V" },
  TRACE: { type: "boolean" },
  DEBUG: { type: "boolean" },
  INFO: { type: "boolean" },
  WARN: { type: "boolean" },
  ERROR: { type: "boolean" },
} as const;

/** The usage text printed by `--help`. */
export function usage(): string {
  const d = DEFAULT_CONFIG;
  return `p2p_server: UDP peer-to-peer handshake and rendezvous server

Usage: p2p_server [OPTIONS]
       p2p_server status [-c FILE | --address ADDR] [--table | --json]   (a running server, wg show style)

Options:
  -a, --address <ADDRESS>        Address to listen on, ip:port or [ip6]:port [default: ${d.listenAddress}]
                                 (0.0.0.0:PORT or [::]:PORT listens on all interfaces)
  -m, --max-connections <N>      Most peers held at once [default: ${d.maxConnections}]
  -c, --config <FILE>            JSON config file (keys as in config.json); flags override it
      --metrics-address <ADDR>   Serve /metrics, /health, /peers and a status page over HTTP on ip:port
                                 [default: off]; use a loopback address such as 127.0.0.1:9100
      --log-format <FORMAT>      Log line format: text or json (JSON lines) [default: ${d.logFormat}]
      --cluster <REDIS_URL>      Cluster mode: share the peer directory with other instances through
                                 Redis, redis://[user:password@]host:port[/db] [default: off]
      --instance-id <ID>         This instance's id in the cluster (needs --cluster or the config
                                 file's cluster.redis_url) [default: random each run]
      --check-config             Check the flags and the config file, print the effective configuration
                                 (secrets shown as <redacted>) and exit: 0 when valid, 2 when not;
                                 binds nothing
      --TRACE | --DEBUG | --INFO | --WARN | --ERROR
                                 Log level (one at most) [default: info; else LOG_LEVEL, else RUST_LOG]
  -h, --help                     Print this help
  -V, --version                  Print the version

Config file defaults: heartbeat_interval ${d.heartbeatInterval} s, connection_timeout ${d.connectionTimeout} s,
discovery_port_range [${d.discoveryPortRange.join(", ")}], enable_discovery ${d.enableDiscovery}, ` +
    `max_message_size ${d.maxMessageSize} B,
retransmit_policy ${d.retransmitPolicy} (rto_initial_ms ${d.rtoInitialMs}, rto_min_ms ${d.rtoMinMs}, ` +
    `rto_max_ms ${d.rtoMaxMs},
handshake_timeout ${d.handshakeTimeout} s, delivery_timeout ${d.deliveryTimeout} s; "schedule" uses ` +
    `retransmit_schedule_ms [${d.retransmitSchedule.join(", ")}]),
max_datagram_size ${d.maxDatagramSize} B, reassembly_buffer_bytes ${d.reassemblyBufferBytes}, ` +
    `discovery_page_size ${d.discoveryPageSize},
cookie_mode ${d.cookieMode} (cookie_threshold ${d.cookieThreshold}), half_open_timeout ${d.halfOpenTimeout} s, ` +
    `rate limits per second/burst:
datagrams per IP [${d.rateLimitDatagramsPerIp.join(", ")}], handshakes per IP [${
      d.rateLimitHandshakesPerIp.join(", ")
    }], per node [${d.rateLimitDatagramsPerNode.join(", ")}], global [${
      d.rateLimitDatagramsGlobal.join(", ")
    }]
(loopback exempt), ban_seconds ${d.banSeconds}, auth ${d.auth} (auth_allow_keys null, auth_max_skew ` +
    `${d.authMaxSkew} s),
identity_file: $STATE_DIRECTORY, else NAME.identity.pem beside -c NAME.json, else $XDG_STATE_HOME/p2p_server,
else ./p2p_server_identity.pem (created 0600 on first run), suggested_keepalive ${d.suggestedKeepalive} s,
relay_quota [${d.relayQuota.join(", ")}] per minute,
metrics_token null (set, it requires "Authorization: Bearer <token>" on /metrics, /peers, /api/*;
unset, /peers and /api/events answer loopback clients only), metrics_allowed_hosts [] (Host names
served besides IP literals and localhost), metrics_max_connections ${d.metricsMaxConnections},
stats_interval ${d.statsInterval} s (a stats line at info level; 0 turns it off),
stun_alternate_port null and stun_alternate_address null (RFC 5780 NAT behaviour discovery, docs/nat.md),
nat_lifetime_gaps_ms [${d.natLifetimeGapsMs.join(", ")}] (binding lifetime measurement; [] off),
io_backend ${d.ioBackend} (or mmsg: Linux recvmmsg/sendmmsg through FFI, less CPU per datagram),
crypto_backend ${d.cryptoBackend} (X25519 and session MACs from OpenSSL's libcrypto.so.3 through FFI where it opens,
else node:crypto; or openssl, node).
Logs go to stderr; SIGINT/SIGTERM disconnect every peer and exit 0.`;
}

/**
 * Parses the command line.
 *
 * @throws {UsageError} for an unknown flag (suggesting the nearest known one when it is close), a missing or
 * bad value, or two log levels.
 * @example
 * ```ts
 * import { parseCli } from "./cli.ts";
 * const r = parseCli(["-a", "[::1]:9000", "--DEBUG"]);
 * if (r.kind !== "run" || r.flags.listenAddress !== "[::1]:9000" || r.level !== "debug") throw new Error();
 * ```
 */
export function parseCli(args: string[]): CliRequest {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args, strict: true, allowPositionals: false, options: OPTIONS }));
  } catch (error) {
    const message = (error as Error).message;
    const unknown = /^Unknown option '(.*)'$/.exec(message)?.[1];
    if (unknown === undefined) throw new UsageError(message.split("\n")[0]!);
    const near = closest(unknown, Object.keys(OPTIONS).map((name) => `--${name}`));
    throw new UsageError(`Unknown option "${unknown}"${near === undefined ? "" : `: did you mean ${near}?`}`);
  }
  if (values.help) return { kind: "help" };
  if (values.version) return { kind: "version" };
  const levels = LEVEL_FLAGS.filter((f) => values[f]);
  if (levels.length > 1) {
    throw new UsageError(
      `Only one log level flag may be given, got ${levels.map((l) => `--${l}`).join(" and ")}`,
    );
  }
  const flags: Partial<Config> = {};
  const address = values.address as string | undefined;
  if (address !== undefined) {
    const parsed = parseSocketAddr(address);
    if (typeof parsed === "string") {
      throw new UsageError(
        `Invalid value for --address: "${address}": expected ip:port or [ip6]:port (${parsed})`,
      );
    }
    flags.listenAddress = address;
  }
  const max = values["max-connections"] as string | undefined;
  if (max !== undefined) {
    const n = Number(max);
    if (!/^\d+$/.test(max) || !Number.isSafeInteger(n) || n < 1 || n > 1_000_000) {
      throw new UsageError(
        `Invalid value for --max-connections: "${max}": expected an integer from 1 to 1000000`,
      );
    }
    flags.maxConnections = n;
  }
  const metrics = values["metrics-address"] as string | undefined;
  if (metrics !== undefined) {
    const parsed = parseSocketAddr(metrics);
    if (typeof parsed === "string") {
      throw new UsageError(
        `Invalid value for --metrics-address: "${metrics}": expected ip:port or [ip6]:port (${parsed})`,
      );
    }
    flags.metricsAddress = metrics;
  }
  const format = values["log-format"] as string | undefined;
  if (format !== undefined) {
    if (!(LOG_FORMATS as readonly string[]).includes(format)) {
      throw new UsageError(
        `Invalid value for --log-format: "${format}": expected one of ${LOG_FORMATS.join(", ")}`,
      );
    }
    flags.logFormat = format as LogFormat;
  }
  const redisUrl = values.cluster as string | undefined;
  const instanceId = values["instance-id"] as string | undefined;
  if (redisUrl !== undefined || instanceId !== undefined) {
    // Completed with the config file's cluster settings and checked by resolveConfig (which names the key).
    const cluster: Record<string, string> = {};
    if (redisUrl !== undefined) cluster.redisUrl = redisUrl;
    if (instanceId !== undefined) cluster.instanceId = instanceId;
    flags.cluster = cluster as unknown as Config["cluster"];
    try {
      resolveConfig({ cluster: { redisUrl: "redis://127.0.0.1:6379", ...cluster } as Config["cluster"] });
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      const flag = error.key === "cluster.instance_id" ? "--instance-id" : "--cluster";
      throw new UsageError(`Invalid value for ${flag}: ${error.message.replace(/^.*?" /, "")}`);
    }
  }
  const level = levels[0]?.toLowerCase() as Level | undefined;
  const settings: RunSettings = { flags, configFile: values.config as string | undefined, level };
  return values["check-config"] ? { kind: "check", ...settings } : { kind: "run", ...settings };
}
