/**
 * Cluster mode's commands and messages: the shell mirrors the shared directory into the core (upserts,
 * removals, full reads, instances gone) and hands it other instances' messages (relayed Data, its answers,
 * introductions, evictions); the core answers with `cluster` events. The state lives in `cluster_state.ts`.
 *
 * @module
 */
import type { ClusterMessage, DirectoryRecord, RemoteDirectory } from "./directory.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { ConnTimers } from "./conn_timers.ts";
import type { Relay } from "./relay.ts";
import type { ClusterState } from "./cluster_state.ts";
import { introduction } from "./introductions.ts";
import { type ClusterCounts, ERROR_CODES, NODE_ID_EXISTS } from "./types.ts";

/** The cluster mirror's side of the core's API. */
export class ClusterMirror {
  readonly #core: Core;
  readonly #cluster: ClusterState;
  readonly #send: SendPath;
  readonly #life: Lifecycle;
  readonly #connTimers: ConnTimers;
  readonly #relay: Relay;

  /**
   * @param core The shared state.
   * @param cluster The cluster state.
   * @param send The send path.
   * @param life Peer state changes (evictions).
   * @param connTimers Connection deadlines.
   * @param relay Relayed Data (its senders learn the outcome).
   */
  constructor(
    core: Core,
    cluster: ClusterState,
    send: SendPath,
    life: Lifecycle,
    connTimers: ConnTimers,
    relay: Relay,
  ) {
    this.#core = core;
    this.#cluster = cluster;
    this.#send = send;
    this.#life = life;
    this.#connTimers = connTimers;
    this.#relay = relay;
  }

  /** The mirror of the other instances' peers. */
  get remotePeers(): RemoteDirectory {
    return this.#cluster.remote;
  }

  /** Runs every relay whose wait for another instance ended at `now`: its sender learns it failed. */
  runRelays(now: number): void {
    for (;;) {
      const relay = this.#cluster.due(now);
      if (!relay) return;
      this.#relay.settleRelay(now, relay.senderKey, relay.originalId, false);
    }
  }

  /** Cluster mode: counters of the traffic with other instances. */
  clusterCounts(): ClusterCounts {
    return {
      ...this.#cluster.counts,
      remotePeers: this.#cluster.remote.size,
      relaysPending: this.#cluster.relays.size,
    };
  }

  /**
   * Cluster mode: adds or updates peers of other instances (announced, or read from the shared directory).
   * This instance's own records, and ids registered here, are skipped.
   */
  upsertRemote(records: Iterable<DirectoryRecord>): void {
    const order = () => this.#core.table.nextOrder();
    for (const r of records) {
      if (r.instance === this.#cluster.instance || this.#core.table.byId.has(r.id)) continue;
      this.#cluster.remote.upsert(r, order);
    }
  }

  /** Cluster mode: peers that left another instance. */
  removeRemote(instance: string, ids: Iterable<string>): void {
    for (const id of ids) this.#cluster.remote.remove(id, instance);
  }

  /**
   * Cluster mode: replaces the mirror with a full read of the shared directory (this instance's records and
   * ids registered here are skipped). Returns how many mirrored peers were removed.
   */
  replaceRemote(records: Iterable<DirectoryRecord>): number {
    const others: DirectoryRecord[] = [];
    for (const r of records) {
      if (r.instance !== this.#cluster.instance && !this.#core.table.byId.has(r.id)) others.push(r);
    }
    return this.#cluster.remote.replace(others, () => this.#core.table.nextOrder());
  }

  /**
   * Cluster mode: an instance is gone (it shut down, or its liveness key expired): its peers leave the
   * mirror, and routed messages waiting for its answer are reported undeliverable. Returns the peers removed.
   */
  dropInstance(now: number, instance: string): number {
    for (const [rid, relay] of [...this.#cluster.relays]) {
      if (relay.instance !== instance) continue;
      this.#cluster.take(rid);
      this.#relay.settleRelay(now, relay.senderKey, relay.originalId, false);
    }
    return this.#cluster.remote.dropInstance(instance);
  }

  /** Cluster mode: forgets every mirrored peer and fails every relay in flight (the directory is unreachable). */
  clearRemote(now: number): void {
    const relays = [...this.#cluster.relays.values()];
    for (const relay of relays) this.#cluster.take(relay.rid);
    for (const relay of relays) this.#relay.settleRelay(now, relay.senderKey, relay.originalId, false);
    this.#cluster.remote.clear();
  }

  /**
   * Cluster mode: the shared directory gave `id` to another instance (two instances accepted it at once):
   * the peer here is told, as any refused duplicate is, and removed. Returns whether it was here.
   */
  evictPeer(now: number, id: string): boolean {
    const conn = this.#core.table.byId.get(id);
    if (!conn?.peer) return false;
    this.#cluster.counts.evictions++;
    this.#send.sendPlain(now, conn, "Error", { error: NODE_ID_EXISTS, code: ERROR_CODES.nodeIdConflict });
    this.#life.removePeer(conn, "replaced");
    if (!conn.link) this.#life.forget(conn);
    return true;
  }

  /** Cluster mode: a message from another instance. */
  handleClusterMessage(now: number, from: string, message: ClusterMessage): void {
    this.#cluster.counts.messagesIn++;
    switch (message.t) {
      case "relay": {
        this.#cluster.counts.relaysIn++;
        const target = this.#core.table.byId.get(message.to);
        const fail = () => {
          if (message.rid !== null) this.#cluster.send(from, { t: "relayed", rid: message.rid, ok: false });
        };
        if (!target?.peer || target.peer.network !== message.network) return fail();
        const routed = { from: message.from, data: message.data };
        const copy = this.#send.sendReliable(now, target, "Data", routed, { ordered: message.ordered });
        this.#connTimers.reschedule(target);
        if (!copy) return fail();
        if (message.rid === null) return;
        this.#relay.forwarding(target, copy.id, { kind: "instance", instance: from }, message.rid);
        return;
      }
      case "relayed": {
        const relay = this.#cluster.relays.get(message.rid);
        if (!relay || relay.instance !== from) return;
        this.#cluster.take(message.rid);
        this.#relay.settleRelay(now, relay.senderKey, relay.originalId, message.ok);
        return;
      }
      case "introduce": {
        const target = this.#core.table.byId.get(message.target);
        if (target?.peer?.state !== "authenticated" || !target.ext) return;
        this.#cluster.counts.introductions++;
        const card = introduction(message.peer, message.candidates, message.nonce, false, target.peer.nat);
        this.#send.sendReliable(now, target, "DiscoveryResponse", card);
        this.#connTimers.reschedule(target);
        return;
      }
      case "evict": {
        const conn = this.#core.table.byId.get(message.id);
        if (!conn?.peer?.keyed) return; // only a key's proof moves an id away
        this.#cluster.counts.evictions++;
        this.#life.removePeer(conn, "replaced");
        if (!conn.link) this.#life.forget(conn);
        return;
      }
    }
  }
}
