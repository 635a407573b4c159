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

/** Largest `binding_lifetime_ms` read from the wire (a day): beyond it a value says nothing useful. */
const MAX_BINDING_LIFETIME_MS = 86_400_000;

/** Whether `nat`'s mapping or filtering is known (the classification exchange told something). */
export function isClassified(nat: NatClass): boolean {
  return nat.mapping !== "unknown" || nat.filtering !== "unknown";
}

/** Whether anything is known of `nat`: its mapping, its filtering or its binding lifetime. */
export function isMeasured(nat: NatClass): boolean {
  return isClassified(nat) || nat.bindingLifetimeMs !== undefined;
}

/** A {@linkcode NatClass} as the wire's `nat` object (snake_case keys, absent ones left out). */
export function natToJson(nat: NatClass): { [key: string]: string | number } {
  const out: { [key: string]: string | number } = { mapping: nat.mapping, filtering: nat.filtering };
  if (nat.portDelta !== undefined) out.port_delta = nat.portDelta;
  if (nat.bindingLifetimeMs !== undefined) out.binding_lifetime_ms = nat.bindingLifetimeMs;
  return out;
}

/**
 * Reads a wire `nat` object leniently: an unknown behaviour reads as `unknown`, a `port_delta` that is not a
 * non-zero integer within ±65,535 and a `binding_lifetime_ms` that is not a positive integer up to a day are
 * left out, and anything that is not an object is {@linkcode UNKNOWN_NAT}.
 */
export function natFromJson(value: unknown): NatClass {
  if (value === null || typeof value !== "object" || Array.isArray(value)) return UNKNOWN_NAT;
  const v = value as { [key: string]: unknown };
  const out: NatClass = {
    mapping: isNatBehaviour(v.mapping) ? v.mapping : "unknown",
    filtering: isNatBehaviour(v.filtering) ? v.filtering : "unknown",
  };
  const delta = v.port_delta;
  if (Number.isInteger(delta) && delta !== 0 && Math.abs(delta as number) <= 65_535) {
    out.portDelta = delta as number;
  }
  const life = v.binding_lifetime_ms;
  if (Number.isInteger(life) && (life as number) > 0 && (life as number) <= MAX_BINDING_LIFETIME_MS) {
    out.bindingLifetimeMs = life as number;
  }
  return out;
}

/**
 * The keepalive (s) to suggest to a peer: `fallback` (the configured one), or below half the binding
 * lifetime measured for it when that is shorter (at least 1 s).
 */
export function suggestedKeepalive(nat: NatClass | undefined, fallback: number): number {
  const life = nat?.bindingLifetimeMs;
  if (life === undefined) return fallback;
  return Math.max(1, Math.min(fallback, Math.floor(life / 2000)));
}

/**
 * The classification keys of an answer to a peer (its HandshakeResponse, its classification result):
 * `{nat, suggested_keepalive}` once something was measured, nothing otherwise.
 */
export function natAnswer(nat: NatClass | undefined, keepalive: number): { [key: string]: unknown } {
  if (!nat || !isMeasured(nat)) return {};
  return { nat: natToJson(nat), suggested_keepalive: suggestedKeepalive(nat, keepalive) };
}
