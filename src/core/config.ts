/**
 * The settings the protocol core reads: a subset of the program's resolved configuration, declared here so
 * the core depends on no shell module. The program's `Config` satisfies it.
 *
 * @module
 */
import type { AuthPolicy } from "./auth.ts";

/** How reliable messages are retried: adaptive (RTT-based backoff until a deadline) or a fixed schedule. */
export type CoreRetransmitPolicy = "adaptive" | "schedule";

/** When a new registration must carry a stateless cookie. */
export type CoreCookieMode = "never" | "auto" | "always";

/** Timing and limits of the protocol core (seconds unless the name says otherwise). */
export interface CoreConfig {
  /** Most registered peers. */
  maxConnections: number;
  /** Heartbeat Ping interval (s). */
  heartbeatInterval: number;
  /** Idle timeout of a peer or link (s). */
  connectionTimeout: number;
  /** Ports probed for sibling servers, inclusive. */
  discoveryPortRange: [number, number];
  /** Largest message accepted or sent, fragments reassembled (bytes). */
  maxMessageSize: number;
  /** Retry policy of reliable messages. */
  retransmitPolicy: CoreRetransmitPolicy;
  /** Waits between tries under the `schedule` policy (ms). */
  retransmitSchedule: number[];
  /** Retransmission timeout before any RTT sample (ms). */
  rtoInitialMs: number;
  /** Lower bound of the retransmission timeout (ms). */
  rtoMinMs: number;
  /** Upper bound of the retransmission timeout (ms). */
  rtoMaxMs: number;
  /** Deadline of a handshake message (s). */
  handshakeTimeout: number;
  /** Deadline of any other reliable message (s). */
  deliveryTimeout: number;
  /** Largest datagram sent to a peer with the extensions (bytes); larger messages are fragmented. */
  maxDatagramSize: number;
  /** Bytes all partial reassemblies together may hold. */
  reassemblyBufferBytes: number;
  /** When new registrations need a cookie. */
  cookieMode: CoreCookieMode;
  /** Half-open handshakes above which `auto` cookie mode engages. */
  cookieThreshold: number;
  /** How long an unconfirmed registration is kept (s). */
  halfOpenTimeout: number;
  /** Datagrams per second and burst per source IP. */
  rateLimitDatagramsPerIp: [number, number];
  /** Handshakes per second and burst per source IP. */
  rateLimitHandshakesPerIp: [number, number];
  /** Datagrams per second and burst per registered node. */
  rateLimitDatagramsPerNode: [number, number];
  /** Datagrams per second and burst for the whole endpoint. */
  rateLimitDatagramsGlobal: [number, number];
  /** How long an IP that overran its limit is banned (s). */
  banSeconds: number;
  /** Whether loopback sources skip the per-IP limits. */
  rateLimitExemptLoopback: boolean;
  /** Key policy of handshakes. */
  auth: AuthPolicy;
  /** Keys allowed to register (base64url), or null for any. */
  authAllowKeys: string[] | null;
  /** Largest clock skew of a signed handshake (s). */
  authMaxSkew: number;
  /** Keepalive interval suggested to peers behind NATs (s). */
  suggestedKeepalive: number;
  /** Routed Data a peer may send per minute: messages and bytes. */
  relayQuota: [number, number];
  /** Largest discovery page (entries). */
  discoveryPageSize: number;
  /** Idle gaps of the binding lifetime measurement (ms, increasing); empty: not offered. */
  natLifetimeGapsMs: number[];
}
