/**
 * Cluster mode's state in the core: this instance's id, the mirror of the other instances' peers (read
 * synchronously by discovery, handshakes, relays and introductions), routed Data waiting for another
 * instance's answer (in the timer table's cluster lane), the traffic counters, and the way out to another
 * instance (a `cluster` event the shell carries).
 *
 * @module
 */
import { type ClusterMessage, RemoteDirectory } from "./directory.ts";
import type { Core } from "./context.ts";
import type { Timed } from "./timers.ts";

/** How much longer than `delivery_timeout` a relay through another instance is waited for (ms). */
export const CLUSTER_RELAY_GRACE_MS = 5_000;

/** Routed Data waiting for another instance's answer. */
export interface ClusterRelay extends Timed {
  /** The relay id it was sent with. */
  rid: string;
  /** The instance it went to. */
  instance: string;
  /** The sender's connection key here. */
  senderKey: string;
  /** The sender's message id. */
  originalId: string;
  /** Until when the answer is waited for (ms). */
  until: number;
}

/** The core's cluster state (empty and unused for a single instance). */
export class ClusterState {
  readonly #core: Core;
  /** This instance's id, or null for a single instance. */
  readonly instance: string | null;
  /** The other instances' peers. */
  readonly remote: RemoteDirectory = new RemoteDirectory();
  /** Routed Data waiting for another instance, by relay id. */
  readonly relays: Map<string, ClusterRelay> = new Map();
  /** Traffic with other instances. */
  readonly counts = {
    messagesOut: 0,
    messagesIn: 0,
    relaysOut: 0,
    relaysIn: 0,
    introductions: 0,
    evictions: 0,
  };

  /**
   * @param core The shared state.
   * @param instance This instance's id, or null.
   */
  constructor(core: Core, instance: string | null) {
    this.#core = core;
    this.instance = instance;
  }

  /** Asks the shell to send `message` to `instance` (nothing for a single instance). */
  send(instance: string, message: ClusterMessage): void {
    if (this.instance === null) return;
    this.counts.messagesOut++;
    this.#core.emit({ type: "cluster", instance, message });
  }

  /** Waits for `instance` to answer relay `rid` until `until`. */
  track(rid: string, instance: string, senderKey: string, originalId: string, until: number): void {
    const relay: ClusterRelay = {
      rid,
      instance,
      senderKey,
      originalId,
      until,
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.relays.set(rid, relay);
    this.#core.timers.clusterRelays.schedule(relay, until);
  }

  /** Stops waiting for relay `rid`; returns it if it was waited for. */
  take(rid: string): ClusterRelay | undefined {
    const relay = this.relays.get(rid);
    if (!relay) return undefined;
    this.relays.delete(rid);
    this.#core.timers.clusterRelays.schedule(relay, Infinity);
    return relay;
  }

  /** The relay whose wait ended at or before `now`, if any (removed). */
  due(now: number): ClusterRelay | undefined {
    const relay = this.#core.timers.clusterRelays.popDue(now) as ClusterRelay | undefined;
    if (relay) this.relays.delete(relay.rid);
    return relay;
  }
}
