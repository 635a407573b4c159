/**
 * Discovery: a server answers a DiscoveryRequest with one page of the requester's network (by offset or by
 * cursor, filtered by capability, merged with the other instances' peers in registration order, always one
 * datagram); a client takes the pages.
 *
 * @module
 */
import {
  isJsonObject,
  type Json,
  type Message,
  type NatInfo,
  parsePeerInfo,
  type PeerInfo,
  type SocketAddr,
} from "../wire/mod.ts";
import { isMeasured, natToJson } from "./nat_class.ts";
import type { NatChecks } from "./nat_check.ts";
import type { NatLifetimes } from "./nat_lifetime.ts";
import { type Conn, hasPeer, type PeerConn } from "./peers.ts";
import type { RemotePeer } from "./directory.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import type { ClusterState } from "./cluster_state.ts";
import { jsonBytes } from "./relay.ts";
import { type Datagram, type Drop, drop } from "./outcome.ts";
import { MAX_UDP_PAYLOAD } from "./types.ts";

/** Room left for the envelope when a DiscoveryResponse is cut to fit one datagram. */
const ENVELOPE_ROOM = 512;

/** Hands an introduction request on (the introductions room). */
export type IntroduceRequest = (dg: Datagram, conn: PeerConn, target: Json) => Drop | undefined;

/** Hands a received introduction card on (the introductions room). */
export type IntroductionCard = (
  now: number,
  from: SocketAddr,
  card: { [key: string]: Json },
) => Drop | undefined;

/** Discovery pages, both roles. */
export class Discovery {
  readonly #core: Core;
  readonly #send: SendPath;
  readonly #cluster: ClusterState;
  readonly #introduce: IntroduceRequest;
  readonly #introduced: IntroductionCard;
  readonly #nat: NatChecks;
  readonly #lifetime: NatLifetimes;

  /**
   * @param core The shared state.
   * @param send The send path.
   * @param cluster The other instances' peers.
   * @param introduce Where introduction requests go.
   * @param introduced Where introduction cards go.
   * @param nat The NAT classification exchange (its requests and answers travel as discovery messages).
   * @param lifetime The binding lifetime exchange (likewise).
   */
  constructor(
    core: Core,
    send: SendPath,
    cluster: ClusterState,
    introduce: IntroduceRequest,
    introduced: IntroductionCard,
    nat: NatChecks,
    lifetime: NatLifetimes,
  ) {
    this.#nat = nat;
    this.#lifetime = lifetime;
    this.#core = core;
    this.#send = send;
    this.#cluster = cluster;
    this.#introduce = introduce;
    this.#introduced = introduced;
  }

  /**
   * A DiscoveryRequest: one page of the requester's network (authenticated peers, here and on other
   * instances), always one datagram. A request naming a peer to `introduce` goes to the introductions room.
   */
  onDiscoveryRequest(dg: Datagram, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!hasPeer(conn)) return this.#send.notRegistered(dg, "DiscoveryRequest");
    const peer = conn.peer;
    if (isJsonObject(msg.payload) && msg.payload.introduce !== undefined) {
      return this.#introduce(dg, conn, msg.payload.introduce);
    }
    if (isJsonObject(msg.payload) && msg.payload.nat_check !== undefined) return this.#nat.request(dg, conn);
    if (isJsonObject(msg.payload) && msg.payload.nat_lifetime !== undefined) {
      return this.#lifetime.request(dg, conn);
    }
    let offset = 0;
    let limit = this.#core.config.discoveryPageSize;
    let cursor: number | null = null;
    let capability: string | null = null;
    const paged = msg.payload !== null;
    if (paged) {
      const p = msg.payload;
      if (!isJsonObject(p)) {
        return this.#send.badRequest(dg, conn, "DiscoveryRequest payload must be null or an object");
      }
      if (p.offset !== undefined && !(Number.isSafeInteger(p.offset) && (p.offset as number) >= 0)) {
        return this.#send.badRequest(dg, conn, `bad "offset": ${JSON.stringify(p.offset)}`);
      }
      if (p.limit !== undefined && !(Number.isSafeInteger(p.limit) && (p.limit as number) >= 1)) {
        return this.#send.badRequest(dg, conn, `bad "limit": ${JSON.stringify(p.limit)}`);
      }
      if (
        p.cursor !== undefined && p.cursor !== null &&
        (typeof p.cursor !== "string" || !/^[0-9]{1,16}$/.test(p.cursor))
      ) {
        return this.#send.badRequest(dg, conn, `bad "cursor": ${JSON.stringify(p.cursor)}`);
      }
      if (
        p.capability !== undefined && p.capability !== null &&
        (typeof p.capability !== "string" || p.capability.length > 256)
      ) {
        return this.#send.badRequest(dg, conn, `bad "capability": ${JSON.stringify(p.capability)}`);
      }
      offset = (p.offset as number | undefined) ?? 0;
      limit = Math.min(limit, (p.limit as number | undefined) ?? limit);
      cursor = typeof p.cursor === "string" ? Number(p.cursor) : null;
      capability = typeof p.capability === "string" ? p.capability : null;
    }
    const net = this.#core.table.byNetwork.get(peer.network);
    const entries: Json[] = [];
    // Always one datagram: the extensions' datagram size for peers that speak them, else one UDP datagram.
    let budget = (conn.ext ? this.#core.config.maxDatagramSize : MAX_UDP_PAYLOAD) - ENVELOPE_ROOM;
    // To an address that has not proven it receives (a deployed client never does), also within what may go
    // to it (3x what its IP sent, admission.ts), its Ack included: a smaller answer rather than none.
    const allowed = this.#core.admission.available(conn);
    if (allowed !== Infinity) {
      budget = Math.min(budget, allowed - ENVELOPE_ROOM - (msg.requires_ack ? ACK_ROOM : 0));
    }
    let index = 0;
    let next: number | null = null;
    let nextCursor: string | null = null;
    let last: string | null = null;
    let total = 0;
    // A cursor (opaque to clients: the registration order of the last peer of the previous page) resumes
    // after that peer, even if it left: unlike an offset it neither skips nor repeats peers when others join
    // or leave between pages (a network's map iterates in registration order).
    // In cluster mode the other instances' peers are listed too, merged in the same order.
    for (const other of mergeByOrder(net, this.#cluster.remote.byNetwork.get(peer.network))) {
      const local = "key" in other;
      const info = local ? other.peer.info : other.info;
      if (local && other.peer.state !== "authenticated") continue;
      if (capability !== null && !info.capabilities.includes(capability)) continue;
      total++;
      const order = local ? other.peer.order ?? 0 : other.order;
      if (cursor !== null && order <= cursor) continue;
      if (cursor === null && index++ < offset) continue;
      if (next !== null || nextCursor !== null) continue;
      const entry =
        (local ? this.peerInfo(other, conn.ext) : remotePeerInfo(other, conn.ext)) as unknown as Json;
      const size = jsonBytes(entry) + 1;
      if (entries.length >= limit || size > budget) {
        next = cursor === null ? index - 1 : null;
        nextCursor = last;
        continue;
      }
      budget -= size;
      entries.push(entry);
      last = String(order);
    }
    const payload: Json = paged
      ? { peers: entries, offset, total, next_offset: next, next_cursor: nextCursor }
      : entries;
    this.#send.reply(dg, conn, "DiscoveryResponse", payload);
    return undefined;
  }

  /**
   * A DiscoveryResponse on our link: a page of peers (a `discovery` event), or an introduction card (handed
   * to the introductions room).
   */
  onDiscoveryResponse(now: number, from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn?.link) return drop("unexpected", "DiscoveryResponse without a link");
    let list: Json = msg.payload;
    if (isJsonObject(list) && isJsonObject(list.introduction)) {
      return this.#introduced(now, from, list.introduction);
    }
    if (isJsonObject(list) && isJsonObject(list.nat_lifetime)) {
      return this.#lifetime.onAnswer(now, from, list);
    }
    if (isJsonObject(list) && (isJsonObject(list.nat_check) || isJsonObject(list.nat))) {
      return this.#nat.onAnswer(now, from, list);
    }
    let nextOffset: number | null = null;
    let nextCursor: string | null = null;
    if (isJsonObject(list)) {
      const n = list.next_offset;
      nextOffset = typeof n === "number" && Number.isSafeInteger(n) && n >= 0 ? n : null;
      const c = list.next_cursor;
      nextCursor = typeof c === "string" && /^[0-9]{1,16}$/.test(c) ? c : null;
      list = list.peers ?? null;
    }
    if (!Array.isArray(list)) return drop("bad_payload", "DiscoveryResponse payload is not a peer list");
    const peers: PeerInfo[] = [];
    for (const item of list) {
      const p = parsePeerInfo(item);
      if (typeof p === "string") return drop("bad_payload", `DiscoveryResponse: ${p}`);
      peers.push(p);
    }
    this.#core.emit({ type: "discovery", from, peers, nextOffset, nextCursor, message: msg });
    return undefined;
  }

  /** A registered peer as a discovery entry (with its observed address for peers with the extensions). */
  peerInfo(conn: PeerConn, observed: boolean): PeerInfo {
    const info = conn.peer.info;
    const out: PeerInfo = {
      id: info.id,
      addr: info.listen_addr,
      last_seen: Math.floor(conn.lastHeard / 1000),
      capabilities: info.capabilities,
      name: info.name,
    };
    if (observed) out.observed_addr = conn.key;
    const nat = conn.peer.nat;
    if (observed && nat && isMeasured(nat)) out.nat = natToJson(nat) as unknown as NatInfo;
    return out;
  }
}

/** A peer of another instance as a discovery entry. */
export function remotePeerInfo(r: RemotePeer, observed: boolean): PeerInfo {
  const out: PeerInfo = {
    id: r.id,
    addr: r.info.listen_addr,
    last_seen: Math.floor(r.last_seen / 1000),
    capabilities: r.info.capabilities,
    name: r.info.name,
  };
  if (observed) out.observed_addr = r.observed;
  if (observed && r.nat) out.nat = r.nat as unknown as NatInfo;
  return out;
}

/** Room kept for the Ack of a DiscoveryRequest that asked for one (it goes out with the answer). */
const ACK_ROOM = 320;

/**
 * This instance's peers of one network and the mirrored ones of other instances, merged by their place in
 * the registration order (each map iterates in that order).
 */
function* mergeByOrder(
  local: Map<string, PeerConn> | undefined,
  remote: Map<string, RemotePeer> | undefined,
): Generator<PeerConn | RemotePeer> {
  if (!remote || remote.size === 0) {
    if (local) yield* local.values();
    return;
  }
  if (!local) {
    yield* remote.values();
    return;
  }
  const a = local.values();
  const b = remote.values();
  let x = a.next();
  let y = b.next();
  for (;;) {
    if (x.done) {
      if (y.done) return;
      yield y.value;
      y = b.next();
    } else if (y.done || (x.value.peer.order ?? 0) < y.value.order) {
      yield x.value;
      x = a.next();
    } else {
      yield y.value;
      y = b.next();
    }
  }
}
