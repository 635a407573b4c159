/**
 * The core's one timer table: every deadline the core has, in lanes by kind, each a {@linkcode TimerHeap}.
 * The earliest deadline over the lanes is the endpoint's next wake-up; nothing is found by scanning a map.
 *
 * - `conns`: each connection's earliest deadline (retransmission or give-up, heartbeat, idle and half-open
 *   timeouts, gap reports, reassembly expiry, ordered-delivery stalls);
 * - `punches`: the next probe (or the end of the budget) of each hole punch in progress;
 * - `clusterRelays`: routed Data waiting for another instance's answer;
 * - `requests`: a client's requests (Ping, discovery, introduction) awaiting their answer;
 * - `natChecks`: the steps of NAT classification exchanges (probes, the mapping test, the end of a check);
 * - `natLifetimes`: the steps of binding lifetime measurements (the next probe, its resend, the end);
 * - `ticks`: periodic work the shell asked for (the stats line, traffic history, the cluster's refresh);
 * - `housekeeping`: expiry of bounded bookkeeping (path checks, introduced peers a client accepts). These
 *   never wake the endpoint by themselves: they are swept whenever the table runs, and their maps are bounded.
 *
 * Lanes run in this order when several are due at once: connections, cluster relays, punches, requests,
 * ticks.
 *
 * @module
 */
import { type Timed, TimerHeap } from "./timers.ts";
import type { Conn } from "./peers.ts";

/** An entry of the housekeeping lane: it knows how to expire itself. */
export interface Expiring extends Timed {
  /** Called once its deadline has passed (when the table next runs). */
  expire(): void;
}

/** Deadlines of the core, by kind. */
export class TimerTable {
  /** Per-connection deadlines (the heap's own order for ties, as the core has always had). */
  readonly conns: TimerHeap<Conn> = new TimerHeap<Conn>();
  /** Hole punches in progress (first in, first out on ties). */
  readonly punches: TimerHeap<Timed> = new TimerHeap({ fifo: true });
  /** Routed Data waiting for another instance (first in, first out on ties). */
  readonly clusterRelays: TimerHeap<Timed> = new TimerHeap({ fifo: true });
  /** A client's requests awaiting an answer (first in, first out on ties). */
  readonly requests: TimerHeap<Timed> = new TimerHeap({ fifo: true });
  /** NAT classification steps, both roles (first in, first out on ties). */
  readonly natChecks: TimerHeap<Timed> = new TimerHeap({ fifo: true });
  /** Binding lifetime measurement steps, both roles (first in, first out on ties). */
  readonly natLifetimes: TimerHeap<Timed> = new TimerHeap({ fifo: true });
  /** Periodic ticks the shell asked for (first in, first out on ties). */
  readonly ticks: TimerHeap<Timed> = new TimerHeap({ fifo: true });
  /** Expiry of bounded bookkeeping; never a wake-up of its own. */
  readonly housekeeping: TimerHeap<Expiring> = new TimerHeap<Expiring>({ fifo: true });

  /** The earliest deadline that must wake the endpoint, or `Infinity`. */
  next(): number {
    let at = this.conns.peek();
    const punch = this.punches.peek();
    if (punch < at) at = punch;
    const relay = this.clusterRelays.peek();
    if (relay < at) at = relay;
    const request = this.requests.peek();
    if (request < at) at = request;
    const nat = this.natChecks.peek();
    if (nat < at) at = nat;
    const life = this.natLifetimes.peek();
    if (life < at) at = life;
    const tick = this.ticks.peek();
    if (tick < at) at = tick;
    return at;
  }

  /** Expires every housekeeping entry due at `now`. */
  sweep(now: number): void {
    for (;;) {
      const item = this.housekeeping.popDue(now);
      if (!item) return;
      item.expire();
    }
  }

  /** Empties every lane (shutdown). */
  clear(): void {
    this.conns.clear();
    this.punches.clear();
    this.clusterRelays.clear();
    this.requests.clear();
    this.ticks.clear();
    this.natChecks.clear();
    this.natLifetimes.clear();
    this.housekeeping.clear();
  }
}
