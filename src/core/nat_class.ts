/**
 * How a peer's NAT behaves, in RFC 4787 terms: the shared vocabulary of NAT classification (the server's
 * measurement of a registered peer) and of the connection strategy a client picks for a pair of peers.
 * On the wire it travels as the `nat` object of the handshake answer, discovery entries and introductions
 * (see docs/protocol.md); a value a peer has not been measured for is `unknown`.
 *
 * @module
 */

/** RFC 4787 mapping or filtering behaviour, as the wire names it. */
export type NatBehaviour =
  | "endpoint-independent"
  | "address-dependent"
  | "address-and-port-dependent"
  | "unknown";

/** Every {@linkcode NatBehaviour}, in the order above. */
export const NAT_BEHAVIOURS: readonly NatBehaviour[] = [
  "endpoint-independent",
  "address-dependent",
  "address-and-port-dependent",
  "unknown",
];

/** What the server measured of one peer's NAT. */
export interface NatClass {
  /** Whether the peer keeps its public address and port towards every remote. */
  mapping: NatBehaviour;
  /** Which unsolicited inbound datagrams reach the peer. */
  filtering: NatBehaviour;
  /**
   * When mapping is not endpoint-independent and the NAT allocates ports in sequence: the step between the
   * ports it gave towards successive remotes (a port predictor starts from it). Absent otherwise.
   */
  portDelta?: number;
  /** The shortest idle time (ms) after which the peer's binding was seen to expire, when measured. */
  bindingLifetimeMs?: number;
}

/** The classification of a peer nothing has been measured for. */
export const UNKNOWN_NAT: Readonly<NatClass> = Object.freeze({ mapping: "unknown", filtering: "unknown" });

/** True when `value` names a {@linkcode NatBehaviour}. */
export function isNatBehaviour(value: unknown): value is NatBehaviour {
  return typeof value === "string" && (NAT_BEHAVIOURS as readonly string[]).includes(value);
}
