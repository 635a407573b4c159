/**
 * p2p_server as a library: the UDP peer-to-peer handshake and rendezvous server, and a client for it.
 *
 * - {@linkcode P2PServer}: the server (`listen`, `run`, `connectToPeer`, `sendData`, `peers`, `getStats`,
 *   `fetch`, events, `close`), configured by {@linkcode ServerOptions}: any {@linkcode Config} field plus
 *   the server's identity.
 * - {@linkcode P2PClient}: a peer (`connect`, `ping`, `discover`, `send`, `introduce`, `sendDirect`,
 *   `disconnect`), configured by {@linkcode ClientOptions}.
 * - What they report: their events ({@linkcode ServerEvents}, {@linkcode ClientEvents}) and the stats
 *   snapshot ({@linkcode StatsSnapshot}).
 * - What they throw, for callers to branch on: {@linkcode HandshakeError} (its `code` one of
 *   {@linkcode ERROR_CODES} or {@linkcode CLIENT_AUTH_CODES}), {@linkcode RemoteError},
 *   {@linkcode ConnectionTimeoutError}, {@linkcode BindError}, {@linkcode UnstableApiError},
 *   {@linkcode ConfigError} and {@linkcode KeyFileError}.
 * - Key-based identities for either side: {@linkcode generateIdentity}, {@linkcode loadOrCreateIdentity},
 *   {@linkcode nodeIdForKey}.
 *
 * Nothing else is part of this entry point. The sans-IO protocol core both classes are built on (for custom
 * transports and simulations) is the `./core` export (`@p2p/p2p-server/core`).
 *
 * @example Register a client with a server, both in this process
 * ```ts
 * import { P2PClient, P2PServer } from "./mod.ts";
 * await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
 * const { port } = await server.listen();
 * await using client = new P2PClient({ server: `127.0.0.1:${port}`, name: "example" });
 * const info = await client.connect();
 * if (!info.capabilities.includes("server")) throw new Error("not a server");
 * ```
 *
 * @module
 */

// The server, what it takes and what it reports.
export { P2PServer, SERVER_CAPABILITIES } from "./src/server.ts";
export type { ServerEvents, ServerOptions } from "./src/server.ts";
export type { LeaveReason, PeerSummary } from "./src/core/types.ts";
export type { OpsRequestInfo } from "./src/ops_guard.ts";
export type { ClusterLink, ClusterLinkEvents, OpenClusterLink } from "./src/cluster.ts";
export type {
  RedisLink,
  RedisLinkEvents,
  RedisLinkOptions,
  RedisTlsOptions,
  RedisTopology,
} from "./src/deps/redis.ts";
export type { ListenerError } from "./src/emitter.ts";

// The client.
export { P2PClient } from "./src/client.ts";
export type {
  ClientEvents,
  ClientOptions,
  ClientSendOptions,
  DirectPeer,
  DiscoveryPage,
  DiscoveryQuery,
} from "./src/client.ts";
export { STRATEGIES } from "./src/core/strategy.ts";
export type { Strategy } from "./src/core/strategy.ts";

// Configuration: the option types, the values each enumerated option accepts, identities.
export {
  ConfigError,
  COOKIE_MODES,
  CRYPTO_BACKENDS,
  IO_BACKENDS,
  LOG_FORMATS,
  RETRANSMIT_POLICIES,
} from "./src/config.ts";
export type {
  ClusterConfig,
  Config,
  CookieMode,
  CryptoBackend,
  IoBackend,
  LogFormat,
  RetransmitPolicy,
} from "./src/config.ts";
export { AUTH_POLICIES, generateIdentity, nodeIdForKey } from "./src/core/auth.ts";
export type { AuthPolicy, Identity } from "./src/core/auth.ts";
export { KeyFileError, loadOrCreateIdentity } from "./src/key_file.ts";
export { VERSION } from "./src/identity.ts";
export type { IdentityOptions } from "./src/identity.ts";

// Errors and their codes.
export {
  BindError,
  ConnectionTimeoutError,
  HandshakeError,
  RemoteError,
  UnstableApiError,
} from "./src/errors.ts";
export { CLIENT_AUTH_CODES, ERROR_CODES } from "./src/core/types.ts";

// What events and results carry.
export { MESSAGE_TYPES } from "./src/wire/message.ts";
export type {
  AuthFields,
  ErrorPayload,
  FragmentRef,
  Json,
  Message,
  MessageType,
  NatInfo,
  NodeInfo,
  PeerInfo,
} from "./src/wire/mod.ts";
export type { SocketAddr } from "./src/wire/address.ts";
export type { NatBehaviour, NatClass } from "./src/core/nat_class.ts";

// Stats.
export { DROP_REASONS, GIVE_UP_REASONS, STUN_ERROR_REASONS } from "./src/core/stats.ts";
export type {
  ClusterStatus,
  DropReason,
  GiveUpReason,
  HistogramSnapshot,
  NatCheckStats,
  NatLifetimeStats,
  StatsSnapshot,
  StunErrorReason,
  StunStats,
} from "./src/core/stats.ts";
