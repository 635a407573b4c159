/**
 * p2p_server: a UDP peer-to-peer handshake and rendezvous server, and a client for it.
 *
 * - {@linkcode P2PServer}: the server as a library (`listen`, `connectToPeer`, `getStats`, events, `close`).
 * - {@linkcode P2PClient}: a peer (`connect`, `ping`, `discover`, `send`, `disconnect`).
 * - {@linkcode Endpoint}: the protocol core both are built on, which does no I/O (feed it datagrams and
 *   time, drain datagrams and events) — for custom transports and simulations.
 *
 * @example
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
export { P2PServer, SERVER_CAPABILITIES } from "./src/server.ts";
export type { ServerEvents, ServerOptions } from "./src/server.ts";
export { P2PClient } from "./src/client.ts";
export type {
  ClientEvents,
  ClientOptions,
  ClientSendOptions,
  DiscoveryPage,
  DiscoveryQuery,
} from "./src/client.ts";
export {
  CONFIG_FILE_KEYS,
  ConfigError,
  DEFAULT_CONFIG,
  LOG_FORMATS,
  parseConfigFile,
  resolveConfig,
  RETRANSMIT_POLICIES,
} from "./src/config.ts";
export type {
  ClusterConfig,
  ClusterOptions,
  Config,
  ConfigFileResult,
  LogFormat,
  RetransmitPolicy,
} from "./src/config.ts";
export type { ListenerError } from "./src/emitter.ts";
export {
  BindError,
  ConnectionTimeoutError,
  HandshakeError,
  RemoteError,
  UnstableApiError,
} from "./src/errors.ts";
export { Endpoint, ERROR_CODES, MAX_UDP_PAYLOAD, NODE_ID_EXISTS } from "./src/core/endpoint.ts";
export type {
  EndpointEvent,
  EndpointOptions,
  LeaveReason,
  PathInfo,
  PeerSummary,
  SendOptions,
  Transmit,
} from "./src/core/endpoint.ts";
export {
  DecodeError,
  decodeMessage,
  DEFAULT_NETWORK_ID,
  encodeMessage,
  MESSAGE_TYPES,
  parseNodeInfo,
} from "./src/wire/mod.ts";
export type {
  DecodeFailure,
  ErrorPayload,
  HandshakeResponsePayload,
  Json,
  Message,
  MessageType,
  NodeInfo,
  PeerInfo,
} from "./src/wire/mod.ts";
export { DROP_REASONS, HANDSHAKE_BUCKETS, Histogram, RTT_BUCKETS } from "./src/core/stats.ts";
export type { DropReason, GiveUpReason, HistogramSnapshot, StatsSnapshot } from "./src/core/stats.ts";
export { formatMetrics, METRICS_CONTENT_TYPE } from "./src/metrics.ts";
export type { MetricsOptions, ProcessMemory, ProcessSample } from "./src/metrics.ts";
export {
  constantTimeEqual,
  createOpsHandler,
  EventRing,
  PEERS_DEFAULT_LIMIT,
  PEERS_MAX_LIMIT,
  serveOps,
} from "./src/ops_server.ts";
export type {
  OpsEvent,
  OpsHandler,
  OpsHandlerOptions,
  OpsPeer,
  OpsServer,
  OpsSource,
} from "./src/ops_server.ts";
export type { OpsRequestInfo } from "./src/ops_guard.ts";
export { STATUS_PAGE_HTML } from "./src/status_page.ts";
export { formatSocketAddr, parseSocketAddr } from "./src/wire/address.ts";
export type { SocketAddr } from "./src/wire/address.ts";
export { makeNodeInfo, VERSION } from "./src/identity.ts";
export type { IdentityOptions } from "./src/identity.ts";
export { AUTH_POLICIES, generateIdentity, identityFrom, nodeIdForKey } from "./src/core/auth.ts";
export type { AuthPolicy, Identity } from "./src/core/auth.ts";
export { KeyFileError, loadOrCreateIdentity } from "./src/key_file.ts";
export { CLIENT_AUTH_CODES } from "./src/core/endpoint.ts";
