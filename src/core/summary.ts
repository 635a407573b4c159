/**
 * A registered peer as the library reports it (the core's peer list, the cluster's directory records).
 *
 * @module
 */

/** A registered peer as the library reports it. */
export interface PeerSummary {
  /** Node id. */
  id: string;
  /** Declared name. */
  name: string;
  /** Declared version. */
  version: string;
  /** Network (`metadata.network_id`). */
  network: string;
  /** Handshake state. */
  state: "handshaking" | "authenticated";
  /** Observed source address, `"ip:port"`. */
  addr: string;
  /** Declared `listen_addr`. */
  listenAddr: string;
  /** Declared capabilities. */
  capabilities: string[];
  /** Declared metadata. */
  metadata: Record<string, string>;
  /** When it registered (ms, the endpoint's clock). */
  joinedAt: number;
  /** When it was last heard from (ms, the endpoint's clock). */
  lastSeen: number;
  /** Datagrams received from the peer's address (valid ones, its first handshake included). */
  datagramsIn: number;
  /** Datagrams sent to it (Acks, replies, retransmissions included). */
  datagramsOut: number;
  /** Bytes of {@linkcode PeerSummary.datagramsIn}. */
  bytesIn: number;
  /** Bytes of {@linkcode PeerSummary.datagramsOut}. */
  bytesOut: number;
  /** It speaks p2p_server's extensions. */
  extensions: boolean;
  /** It proved an Ed25519 key in its handshake (its id is its key's). */
  keyed: boolean;
  /**
   * What is known of its NAT, as the wire's `nat` object (`mapping`, `filtering`, `port_delta`,
   * `binding_lifetime_ms`): absent until it was classified or its binding lifetime measured.
   */
  nat?: { [key: string]: string | number };
}
