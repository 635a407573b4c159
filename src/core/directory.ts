/**
 * Cluster mode, the pure part: the record an instance writes for each of its peers into the shared directory,
 * the messages instances send each other, and the mirror of the other instances' peers that the protocol core
 * reads synchronously (discovery, node-id uniqueness, introductions, relayed Data). Nothing here does I/O; the
 * Redis side is `src/cluster.ts`.
 *
 * @module
 */
import { type Json, type NodeInfo, parseNodeInfo, type PeerInfo } from "../wire/mod.ts";
import type { PeerSummary } from "./summary.ts";
import { isMeasured, natFromJson, natToJson } from "./nat_class.ts";

/** What the shared directory holds for one peer (the JSON written to Redis and sent between instances). */
export interface DirectoryRecord {
  /** Node id (lowercase). */
  id: string;
  /** The instance the peer is registered with. */
  instance: string;
  /** Its network (`metadata.network_id`). */
  network: string;
  /** The NodeInfo it declared. */
  info: NodeInfo;
  /** Its address as its instance sees it (`"ip:port"`). */
  observed: string;
  /** It speaks p2p_server's extensions (needed for introductions). */
  ext: boolean;
  /** It proved an Ed25519 key (its id is its key's). */
  keyed: boolean;
  /** Unix ms when its instance last heard from it (as of the record's last write). */
  last_seen: number;
  /**
   * What its instance knows of its NAT (the wire's `nat` object), once classified or measured; its discovery
   * entries and introduction cards carry it as a local peer's do.
   */
  nat?: { [key: string]: string | number };
}

/** The record of a peer registered with `instance` (`lastSeen` in Unix ms). */
export function peerRecord(instance: string, p: PeerSummary, lastSeen: number): DirectoryRecord {
  return {
    id: p.id,
    instance,
    network: p.network,
    info: {
      id: p.id,
      name: p.name,
      version: p.version,
      listen_addr: p.listenAddr,
      capabilities: p.capabilities,
      metadata: p.metadata,
    },
    observed: p.addr,
    ext: p.extensions,
    keyed: p.keyed,
    last_seen: lastSeen,
    ...(p.nat ? { nat: p.nat } : {}),
  };
}

/** An instance id: 1 to 64 of `[A-Za-z0-9._-]` (it is part of Redis keys and channel names). */
export const INSTANCE_ID = /^[A-Za-z0-9._-]{1,64}$/;

/** Parses a record read from Redis or another instance; a string says what is wrong. */
export function parseRecord(value: unknown): DirectoryRecord | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return "not an object";
  const r = value as Record<string, unknown>;
  if (typeof r.instance !== "string" || !INSTANCE_ID.test(r.instance)) return "bad instance";
  if (typeof r.network !== "string" || r.network.length > 256) return "bad network";
  if (typeof r.observed !== "string" || r.observed.length > 64) return "bad observed";
  if (typeof r.ext !== "boolean" || typeof r.keyed !== "boolean") return "bad flags";
  if (typeof r.last_seen !== "number" || !Number.isFinite(r.last_seen)) return "bad last_seen";
  const info = parseNodeInfo(r.info as Json);
  if (typeof info === "string") return `bad info: ${info}`;
  if (r.id !== info.id) return "id does not match info";
  // Read as leniently as a `nat` object from a peer: what is not understood is left out, never refused.
  const nat = r.nat === undefined ? null : natFromJson(r.nat);
  return {
    id: info.id,
    instance: r.instance,
    network: r.network,
    info,
    observed: r.observed,
    ext: r.ext,
    keyed: r.keyed,
    last_seen: r.last_seen,
    ...(nat && isMeasured(nat) ? { nat: natToJson(nat) } : {}),
  };
}

/**
 * What instances send each other on their own channels.
 *
 * - `relay`: routed Data for a peer on the receiving instance; `rid` (null for senders without end-to-end
 *   acknowledgement) names it in the answer.
 * - `relayed`: the recipient acknowledged a relay (`ok`), or it could not be delivered.
 * - `introduce`: the receiving instance's peer `target` is introduced to `peer` (the card and nonce the
 *   requester got at the same moment).
 * - `evict`: a keyed node proved its key on the sending instance; the receiving instance drops its old entry.
 */
export type ClusterMessage =
  | {
    t: "relay";
    rid: string | null;
    from: string;
    to: string;
    network: string;
    data: Json;
    ordered: boolean;
  }
  | { t: "relayed"; rid: string; ok: boolean }
  | { t: "introduce"; target: string; peer: PeerInfo; candidates: string[]; nonce: string }
  | { t: "evict"; id: string };

/** An envelope on an instance channel: who sent it, and the messages (batched). */
export interface ClusterEnvelope {
  /** The sending instance. */
  from: string;
  /** Messages, in order. */
  m: ClusterMessage[];
}

/** A peer of another instance, as mirrored here. */
export interface RemotePeer extends DirectoryRecord {
  /** Its place in this endpoint's registration order (discovery cursors page through both kinds). */
  order: number;
}

/**
 * The mirror of the other instances' peers: by node id and by network (insertion order = the order it was
 * first seen here, which discovery merges with the local registration order).
 */
export class RemoteDirectory {
  /** Mirrored peers by node id. */
  readonly byId: Map<string, RemotePeer> = new Map();
  /** Mirrored peers by network, then node id. */
  readonly byNetwork: Map<string, Map<string, RemotePeer>> = new Map();
  readonly #perInstance = new Map<string, number>();

  /** Number of mirrored peers. */
  get size(): number {
    return this.byId.size;
  }

  /** The instances that have peers in the mirror, with how many. */
  instances(): ReadonlyMap<string, number> {
    return this.#perInstance;
  }

  /**
   * Adds or updates a record. An update in the same network keeps the peer's place in the order; a peer that
   * moved to another instance or network is placed anew.
   */
  upsert(record: DirectoryRecord, nextOrder: () => number): void {
    const old = this.byId.get(record.id);
    if (old && old.instance === record.instance && old.network === record.network) {
      Object.assign(old, record);
      return;
    }
    if (old) this.remove(old.id, old.instance);
    const peer: RemotePeer = { ...record, order: nextOrder() };
    this.byId.set(peer.id, peer);
    let net = this.byNetwork.get(peer.network);
    if (!net) this.byNetwork.set(peer.network, net = new Map());
    net.set(peer.id, peer);
    this.#perInstance.set(peer.instance, (this.#perInstance.get(peer.instance) ?? 0) + 1);
  }

  /** Removes a peer if `instance` (when given) still holds it; returns whether it was there. */
  remove(id: string, instance?: string): boolean {
    const peer = this.byId.get(id);
    if (!peer || (instance !== undefined && peer.instance !== instance)) return false;
    this.byId.delete(id);
    const net = this.byNetwork.get(peer.network);
    net?.delete(id);
    if (net?.size === 0) this.byNetwork.delete(peer.network);
    const n = (this.#perInstance.get(peer.instance) ?? 1) - 1;
    if (n === 0) this.#perInstance.delete(peer.instance);
    else this.#perInstance.set(peer.instance, n);
    return true;
  }

  /** Removes every peer of one instance; returns how many. */
  dropInstance(instance: string): number {
    let n = 0;
    for (const peer of [...this.byId.values()]) if (peer.instance === instance && this.remove(peer.id)) n++;
    return n;
  }

  /**
   * Makes the mirror equal to `records` (a full read of the directory): upserts each, removes the rest.
   * Returns how many were removed.
   */
  replace(records: Iterable<DirectoryRecord>, nextOrder: () => number): number {
    const seen = new Set<string>();
    for (const r of records) {
      seen.add(r.id);
      this.upsert(r, nextOrder);
    }
    let removed = 0;
    for (const id of [...this.byId.keys()]) if (!seen.has(id) && this.remove(id)) removed++;
    return removed;
  }

  /** Empties the mirror. */
  clear(): void {
    this.byId.clear();
    this.byNetwork.clear();
    this.#perInstance.clear();
  }
}
