/**
 * The connection strategy for a pair of peers, from both peers' NAT classifications ({@linkcode NatClass}):
 * punch at once, punch from a shared start time, punch predicted ports, or relay at once. Both peers compute
 * it from the same two classifications (their introduction cards carry both), so both choose the same one
 * without a further message. The table, with the reasoning per row, is in docs/nat.md.
 *
 * @module
 */
import type { NatClass } from "./nat_class.ts";
import type { SocketAddr } from "../wire/mod.ts";

/**
 * How two introduced peers try to reach each other:
 * - `direct`: both probe each other's candidates from the moment their card arrives, and answer whatever
 *   address the other's probes come from (what every pair did before classification);
 * - `simultaneous`: as `direct`, but both start probing at one shared instant (the card's `start_at_ms`),
 *   because the path opens only if one side's first probe is let in before the other's has left;
 * - `predict`: as `simultaneous`, and a NAT that allocates ports in sequence (`portDelta`) is probed at the
 *   ports it will allocate next (its observed port plus multiples of its `portDelta`);
 * - `relay`: no direct path can work between these two NATs; nothing is punched and the peers use the
 *   server's relay (`send(data, { to })`) at once.
 */
export type Strategy = "direct" | "simultaneous" | "predict" | "relay";

/** Every {@linkcode Strategy}. */
export const STRATEGIES: readonly Strategy[] = ["direct", "simultaneous", "predict", "relay"];

/** How many predicted ports of a sequentially allocating NAT are probed. */
export const PREDICTED_PORTS = 4;

/** Longest wait for a shared start time a card may ask (ms); a larger one is cut to this. */
export const MAX_START_DELAY_MS = 1_000;

/** Endpoint-independent mapping: the same public address and port towards every remote. */
function keepsMapping(nat: NatClass): boolean {
  return nat.mapping === "endpoint-independent";
}

/** Its next mappings can be predicted: it opens a new one per remote, in a known step. */
function predictable(nat: NatClass): boolean {
  return !keepsMapping(nat) && nat.portDelta !== undefined;
}

/**
 * Its filter lets in a datagram from a port of an address it has sent to but not from that port (an
 * endpoint-independent or address-dependent filter): it can learn the other's new mapping from its probes.
 */
function admitsNewPort(nat: NatClass): boolean {
  return nat.filtering !== "address-and-port-dependent";
}

/** Whether all four behaviours of the pair were measured. */
function known(a: NatClass, b: NatClass): boolean {
  return [a.mapping, a.filtering, b.mapping, b.filtering].every((x) => x !== "unknown");
}

/**
 * The strategy for the pair (`a`, `b`); symmetric: `chooseStrategy(a, b) === chooseStrategy(b, a)`. Only a
 * pair whose four behaviours are all known leaves `direct`, so a guess never takes away a path that punching
 * would have found.
 *
 * | mappings                    | condition                                                  | strategy       |
 * | --------------------------- | ---------------------------------------------------------- | -------------- |
 * | any behaviour unknown       |                                                            | `direct`       |
 * | both endpoint-independent   |                                                            | `direct`       |
 * | one endpoint-independent, K | K's filter admits a new port of an address it sent to      | `direct`       |
 * | one endpoint-independent, K | else, the other predictable                                | `predict`      |
 * | one endpoint-independent, K | else                                                       | `relay`        |
 * | neither                     | both predictable                                           | `predict`      |
 * | neither                     | one filters endpoint-independently, the other admits a new port | `simultaneous` |
 * | neither                     | else                                                       | `relay`        |
 */
export function chooseStrategy(a: NatClass, b: NatClass): Strategy {
  if (!known(a, b)) return "direct";
  if (keepsMapping(a) && keepsMapping(b)) return "direct";
  if (keepsMapping(a) || keepsMapping(b)) {
    const [keeper, other] = keepsMapping(a) ? [a, b] : [b, a];
    // The other's probes leave from a new mapping; the keeper lets them in and answers where they came from.
    if (admitsNewPort(keeper)) return "direct";
    // The keeper lets in only where it sent: it must send to the other's next mapping.
    return predictable(other) ? "predict" : "relay";
  }
  if (predictable(a) && predictable(b)) return "predict";
  // Neither mapping can be known in advance: a probe to the other's server mapping is let in only by an
  // endpoint-independent filter, and its answer (from yet another mapping) only by a filter that admits a
  // new port.
  const open = (x: NatClass, y: NatClass) => x.filtering === "endpoint-independent" && admitsNewPort(y);
  return open(a, b) || open(b, a) ? "simultaneous" : "relay";
}

/**
 * Where to probe the other peer under `strategy`: its candidates as the server gave them, and under `predict`
 * also, first, the next {@linkcode PREDICTED_PORTS} ports a predictable NAT will allocate (its observed port
 * plus 1..n times its `portDelta`; the observed one belongs to its mapping towards the server). Both sides
 * probe in this order, so each side's k-th probe leaves from its own k-th new mapping, which is where the
 * other's k-th probe goes. Predicted ports outside 1..65,535 are left out.
 */
export function probeTargets(strategy: Strategy, theirs: NatClass, candidates: SocketAddr[]): SocketAddr[] {
  if (strategy !== "predict" || !predictable(theirs) || candidates.length === 0) return candidates;
  const observed = candidates[0]!;
  const out: SocketAddr[] = [];
  for (let k = 1; k <= PREDICTED_PORTS; k++) {
    const port = observed.port + k * theirs.portDelta!;
    if (port >= 1 && port <= 65_535) out.push({ hostname: observed.hostname, port });
  }
  return [...out, ...candidates];
}

/**
 * When to send the first probe (ms after the card arrived): at once under `direct`, after the card's
 * `start_at_ms` (cut to 0..{@linkcode MAX_START_DELAY_MS}; absent or not a number is 0) under
 * `simultaneous` and `predict`.
 */
export function startDelay(strategy: Strategy, startAtMs: unknown): number {
  if (strategy !== "simultaneous" && strategy !== "predict") return 0;
  if (typeof startAtMs !== "number" || !Number.isFinite(startAtMs)) return 0;
  return Math.min(MAX_START_DELAY_MS, Math.max(0, Math.round(startAtMs)));
}
