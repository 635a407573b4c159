/**
 * The protocol core for embedders (`@p2p/p2p-server/core`): the sans-IO state machine behind `P2PServer`
 * and `P2PClient`. Feed it datagrams and wake-ups with the current time; drain the datagrams to send, the
 * events and the next deadline. Bring your own socket and clock (see docs/architecture.md).
 *
 * @example
 * ```ts
 * import { Endpoint } from "./mod.ts";
 * import { resolveConfig } from "../config.ts";
 * const node = {
 *   id: crypto.randomUUID(), name: "s", version: "1", listen_addr: "127.0.0.1:9",
 *   capabilities: [], metadata: {},
 * };
 * const ep = new Endpoint({ role: "server", config: resolveConfig(), node, newId: () => crypto.randomUUID(), now: 0 });
 * if (ep.nextDeadline() !== Infinity) throw new Error("an idle core has no deadline");
 * ```
 *
 * @module
 */
export { Endpoint } from "./endpoint.ts";
export * from "./types.ts";
export { UNPROVEN_CREDIT_CAP } from "./admission.ts";
export type { CoreConfig, CoreCookieMode, CoreRetransmitPolicy } from "./config.ts";
export type { ConnectOptions } from "./handshake.ts";
export type { RequestSpec } from "./requests.ts";
export { INTRODUCE_TIMEOUT_MS } from "./requests.ts";
export type { ClusterMessage, DirectoryRecord, RemotePeer } from "./directory.ts";
export { RemoteDirectory } from "./directory.ts";
export { DROP_REASONS, GIVE_UP_REASONS, STUN_ERROR_REASONS } from "./stats.ts";
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
} from "./stats.ts";
export type { Rate } from "./limits.ts";
export type { AuthPolicy } from "./auth.ts";
export type { KeyObject, KeyPair, MacKey, MacKeyFactory } from "../deps/crypto.ts";
export type { Identity } from "./auth.ts";
export { MESSAGE_TYPES } from "../wire/mod.ts";
export type {
  AuthFields,
  ErrorPayload,
  FragmentRef,
  Json,
  Message,
  MessageType,
  NodeInfo,
  PeerInfo,
  SocketAddr,
} from "../wire/mod.ts";
export { AUTH_POLICIES } from "./auth.ts";
