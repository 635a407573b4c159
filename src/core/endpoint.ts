/**
 * The protocol core's coordinator: one synchronous state machine that does no I/O and never reads the
 * clock. The caller feeds it datagrams (`handleDatagram`) and wake-ups (`handleTimeout`) with the current
 * time, then drains what it produced: datagrams to send (`takeTransmits`), events (`takeEvents`) and the
 * next deadline (`nextDeadline`). The server and the client library run this same core, in the `server` and
 * `client` roles.
 *
 * The coordinator decodes each datagram, finds its connection, applies what every datagram goes through
 * (admission, the session MAC, duplicate suppression, the Ack decision) and hands the message to the one
 * room that owns its type: handshakes, discovery, introductions and punching, relay, the reliable
 * transport's receive side, roaming, the cluster mirror. docs/architecture.md draws the map.
 *
 * @module
 */
import {
  DecodeError,
  decodeMessage,
  formatSocketAddr,
  type Json,
  type Message,
  type MessageType,
  type NodeInfo,
  type SocketAddr,
} from "../wire/mod.ts";
import { type Conn, heard, recordingWindow, windowFor } from "./peers.ts";
import type { NatClass } from "./nat_class.ts";
import type { DirectoryRecord, RemoteDirectory } from "./directory.ts";
import type { ClusterMessage } from "./directory.ts";
import type { StatsSnapshot } from "./stats.ts";
import { Core } from "./context.ts";
import type { ReliableOptions } from "./send.ts";
import { buildRooms, type Rooms } from "./rooms.ts";
import type { ConnectOptions } from "./handshake.ts";
import type { RequestSpec } from "./requests.ts";
import { answerPlainBinding, isStunDatagram, onStunDatagram } from "./stun.ts";
import { type Datagram, drop, type Outcome, QUIET_RATE_LIMITED } from "./outcome.ts";
import {
  type ClusterCounts,
  type EndpointEvent,
  type EndpointOptions,
  MAX_UDP_PAYLOAD,
  type PathInfo,
  type PeerSummary,
  type SendOptions,
  type Transmit,
} from "./types.ts";

export * from "./types.ts";
export { UNPROVEN_CREDIT_CAP } from "./admission.ts";
export type { CoreConfig } from "./config.ts";
export type { ConnectOptions } from "./handshake.ts";

const ORDERED: ReliableOptions = { ordered: true };
const UNORDERED: ReliableOptions = {};

/**
 * The protocol state machine. See the module documentation.
 *
 * @example
 * ```ts
 * import { Endpoint } from "./endpoint.ts";
 * import { resolveConfig } from "../config.ts";
 * const node = {
 *   id: crypto.randomUUID(), name: "s", version: "1", listen_addr: "127.0.0.1:9",
 *   capabilities: [], metadata: {},
 * };
 * const newId = () => crypto.randomUUID();
 * const ep = new Endpoint({ role: "server", config: resolveConfig(), node, newId, now: 0 });
 * const ping = JSON.stringify({
 *   id: crypto.randomUUID(), message_type: "Ping", timestamp: 0, payload: null,
 *   sender_addr: null, sequence_number: 1, requires_ack: false, ack_for: null,
 * });
 * ep.handleDatagram(0, { hostname: "127.0.0.1", port: 5000 }, new TextEncoder().encode(ping));
 * const [pong] = ep.takeTransmits();
 * if (!new TextDecoder().decode(pong!.bytes).includes('"Pong"')) throw new Error("no pong");
 * ```
 */
export class Endpoint {
  readonly #core: Core;
  readonly #r: Rooms;

  /**
   * Creates the core in the given role.
   *
   * @param options See {@linkcode EndpointOptions}.
   */
  constructor(options: EndpointOptions) {
    const identity = options.identity ?? null;
    if (identity && identity.nodeId !== options.node.id) {
      throw new RangeError(`Node id "${options.node.id}" is not the id of its key ("${identity.nodeId}")`);
    }
    const core = this.#core = new Core(options);
    this.#r = buildRooms(
      core,
      identity,
      options.replayCacheSize,
      options.instance ?? null,
      (dg, conn, msg) => this.#dispatch(dg, conn, msg),
    );
  }

  /** This endpoint's NodeInfo. */
  get node(): NodeInfo {
    return this.#core.node;
  }

  /** Whether each duplicate reliable message is reported as a `duplicate` event (counted either way). */
  reportDuplicates(on: boolean): void {
    this.#core.reportDuplicates = on;
  }

  /** Updates the address this endpoint reports for itself (after binding to port 0, say). */
  setListenAddr(addr: string): void {
    this.#core.node = { ...this.#core.node, listen_addr: addr };
    this.#core.senderAddr = addr;
  }

  /** Names the shell's local sockets: 0 is the main one, the others RFC 5780 alternates serving STUN only. */
  setSockets(sockets: readonly SocketAddr[]): void {
    this.#core.sockets = sockets.map((s) => ({ hostname: s.hostname, port: s.port }));
  }

  /** Feeds one received datagram, which came to local socket `socket` (see {@linkcode setSockets}). */
  handleDatagram(now: number, from: SocketAddr, bytes: Uint8Array, socket = 0): void {
    const core = this.#core;
    const stats = core.stats;
    stats.datagramsReceived++;
    stats.bytesReceived += bytes.length;
    const admission = core.admission.admit(from.hostname, now);
    if (admission !== "ok") {
      // Dropped unanswered and without an event: a flood must cost as little as possible.
      stats.drop(admission === "banned" ? "banned" : "rate_limited");
      return;
    }
    core.admission.received(from.hostname, bytes.length);
    const key = formatSocketAddr(from);
    if (bytes.length > core.maxIncoming) {
      core.drop(from, key, "oversize", `${bytes.length} bytes exceed the ${core.maxIncoming}-byte limit`);
      return;
    }
    // A client's other sockets are the sacrificial ones of binding lifetime measurements.
    if (socket !== 0 && core.role === "client") return this.#r.lifetime.onSide(now, from, key, bytes, socket);
    if (socket !== 0 && !isStunDatagram(bytes) && this.#r.nat.onAlternate(now, from, key, bytes, socket)) {
      return;
    }
    if (socket === 0 && bytes[0] === 0 && answerPlainBinding(core, now, from, key, bytes)) return;
    if (socket !== 0 || isStunDatagram(bytes)) return onStunDatagram(core, { now, from, key, bytes, socket });
    let msg: Message;
    try {
      msg = decodeMessage(bytes);
    } catch (error) {
      if (!(error instanceof DecodeError)) throw error;
      core.drop(from, key, error.reason, error.message);
      return;
    }
    const dg: Datagram = {
      now,
      from,
      key,
      size: bytes.length,
      budget: 3 * bytes.length,
      summed: msg.summed === true,
      cookieOk: false,
    };
    let outcome: Outcome;
    try {
      outcome = this.#receive(dg, msg, bytes);
    } catch (error) {
      // A bug must not let one datagram stop the server: count it, report it, and go on.
      outcome = drop("internal_error", `${(error as Error)?.stack ?? error}`);
    }
    if (outcome === undefined || outcome === "deferred") stats.processed++;
    else if (outcome === "duplicate") stats.duplicates++;
    else if (outcome.quiet) stats.drop(outcome.reason);
    else core.drop(from, key, outcome.reason, outcome.detail);
    const after = core.table.byAddr.get(key);
    if (after) this.#r.connTimers.reschedule(after);
    if (this.#r.requests.size !== 0) this.#r.requests.observe(now);
  }

  /**
   * Runs every timer due at `now`, lane by lane: connections (retransmissions, give-ups, heartbeats, idle
   * timeouts, gap reports), relays waiting for another instance, punches; then expires housekeeping.
   */
  handleTimeout(now: number): void {
    const core = this.#core;
    const conns = core.timers.conns;
    for (;;) {
      const conn = conns.popDue(now);
      if (!conn) break;
      if (core.table.byAddr.get(conn.key) !== conn) continue;
      this.#r.connTimers.runTimers(now, conn);
      if (core.table.byAddr.get(conn.key) === conn) this.#r.connTimers.reschedule(conn);
    }
    this.#r.mirror.runRelays(now);
    this.#r.intro.runPunches(now);
    this.#r.requests.run(now);
    this.#r.nat.run(now);
    this.#r.lifetime.run(now);
    this.#r.ticks.run(now);
    core.timers.sweep(now);
    if (this.#r.requests.size !== 0) this.#r.requests.observe(now);
  }

  /** Takes the datagrams produced so far, in the order they must be sent. */
  takeTransmits(): Transmit[] {
    return this.#core.takeTransmits();
  }

  /** Takes the events produced so far. */
  takeEvents(): EndpointEvent[] {
    return this.#core.takeEvents();
  }

  /** When `handleTimeout` must next be called (ms), or `Infinity` when nothing is scheduled. */
  nextDeadline(): number {
    return this.#core.timers.next();
  }

  /** A fresh snapshot of every counter. */
  getStats(now: number): StatsSnapshot {
    const core = this.#core;
    return core.stats.snapshot(now, core.table.counts(), core.linkCounts);
  }

  /** The registered peers (both states), in registration order. */
  peers(): PeerSummary[] {
    const out: PeerSummary[] = [];
    for (const net of this.#core.table.byNetwork.values()) {
      for (const conn of net.values()) out.push(this.#core.summary(conn, conn.peer));
    }
    return out;
  }

  /** The registered peer with node id `id`, if any. */
  peer(id: string): PeerSummary | undefined {
    const conn = this.#core.table.byId.get(id.toLowerCase());
    return conn?.peer ? this.#core.summary(conn, conn.peer) : undefined;
  }

  /** The round-trip state of the path to `addr`, if this endpoint knows it. */
  path(addr: SocketAddr): PathInfo | undefined {
    return this.#core.pathInfo(addr);
  }

  /**
   * Records `nat` as the classification of the registered peer `id` (server role; the classification
   * exchange does it, a test may seed one). Returns whether there was such a peer.
   */
  setPeerNat(id: string, nat: NatClass): boolean {
    const conn = this.#core.table.byId.get(id.toLowerCase());
    if (conn?.peer) conn.peer.nat = { ...nat };
    return conn?.peer !== undefined;
  }

  /**
   * Makes a request to the server at `to` (the client role): a Ping, a discovery page (`query` is the
   * DiscoveryRequest's payload) or an introduction to a peer. The core retries it on the retransmit policy
   * and reports the outcome as a `requestDone` or `requestFailed` event naming the returned id; an answer
   * that settles a request is reported that way instead of as its raw `pong`, `discovery` or `error` event.
   *
   * @throws {RangeError} when there is no link to `to`.
   */
  request(now: number, to: SocketAddr, spec: RequestSpec): number {
    return this.#r.requests.start(now, to, spec);
  }

  /**
   * Reports a `tick` event named `name` every `periodMs` from `now` on (periodic work of the shell: a stats
   * line, a traffic sample, a cluster refresh), replacing an earlier tick of that name; a period that is not
   * a positive finite number cancels it. The ticks are deadlines of the core, served by the shell's one timer.
   */
  every(now: number, name: string, periodMs: number): void {
    this.#r.ticks.every(now, name, periodMs);
  }

  /**
   * Asks the server at `to` to classify our NAT (client role; the server needs RFC 5780 alternate sockets).
   * The outcome is one `natChecked` event (its `reason` says why when the check did not run).
   *
   * @throws {RangeError} when there is no link to `to`.
   */
  checkNat(now: number, to: SocketAddr): void {
    const conn = this.#core.table.byAddr.get(formatSocketAddr(to));
    if (!conn?.link) throw new RangeError(`No link to ${formatSocketAddr(to)}`);
    this.#r.nat.ask(now, conn);
  }

  /**
   * Asks the server at `to` to measure how long our NAT keeps an idle binding (client role; the server's
   * HandshakeResponse offers it with `nat_lifetime`), through local socket `socket` (the shell's index for a
   * socket it bound for this alone: nothing else may send from it, or its binding stays fresh). The outcome
   * is one `natLifetime` event naming the socket; then the shell may close it.
   *
   * @throws {RangeError} when there is no link to `to`.
   */
  measureLifetime(now: number, to: SocketAddr, socket: number): void {
    const conn = this.#core.table.byAddr.get(formatSocketAddr(to));
    if (!conn?.link) throw new RangeError(`No link to ${formatSocketAddr(to)}`);
    this.#r.lifetime.ask(now, conn, socket);
  }

  /**
   * Sends a hole-punching probe to `addr`: an unnumbered Ping carrying `{"punch": nonce}`, which the
   * introduced peer's endpoint answers with a Pong echoing it. Opens our NAT's mapping towards `addr` too.
   */
  punch(now: number, addr: SocketAddr, nonce: string): void {
    this.#r.intro.punch(now, addr, nonce);
  }

  /**
   * Starts a handshake towards `addr` (the client role; a server uses it for sibling servers). The outcome
   * arrives as a `connected` or `connectFailed` event.
   */
  connect(now: number, addr: SocketAddr, options: ConnectOptions = {}): void {
    this.#r.hs.connect(now, addr, options);
  }

  /**
   * Sends a message to a remote this endpoint has a link or peer on. Returns the message (its id names it in
   * the events); with `reliable` or `ordered`, a `delivered` or `gaveUp` event follows. A message larger
   * than `max_datagram_size` goes out as fragments when the remote speaks p2p_server's extensions.
   *
   * @throws {RangeError} when nothing is known about `to`, or the message is too large for the remote
   * (`max_message_size`, or one UDP datagram for a remote without the extensions).
   */
  send(now: number, to: SocketAddr, type: MessageType, payload: Json, options: SendOptions = {}): Message {
    const conn = this.#core.table.byAddr.get(formatSocketAddr(to));
    if (!conn || (!conn.link && !conn.peer)) {
      throw new RangeError(`Cannot send to "${formatSocketAddr(to)}": not connected`);
    }
    const ordered = type === "Data" && (options.ordered ?? false);
    const msg = ordered || options.reliable
      ? this.#r.send.sendReliable(now, conn, type, payload, ordered ? ORDERED : UNORDERED)
      : this.#r.send.sendPlain(now, conn, type, payload);
    if (!msg) {
      const limit = conn.ext ? this.#core.config.maxMessageSize : MAX_UDP_PAYLOAD;
      throw new RangeError(`Cannot send ${type}: the message exceeds ${limit} bytes`);
    }
    this.#r.connTimers.reschedule(conn);
    return msg;
  }

  /**
   * Sends reliable `Data` to a registered peer by node id, shaped as routed Data (`{"from": ..., "data": ...}`
   * with this endpoint's id as `from`). Returns false when no such authenticated peer is registered or the
   * message is too large for it.
   */
  sendToPeer(now: number, nodeId: string, data: Json, options: { ordered?: boolean } = {}): boolean {
    const conn = this.#core.table.byId.get(nodeId.toLowerCase());
    if (!conn?.peer || conn.peer.state !== "authenticated") return false;
    const payload = { from: this.#core.node.id, data };
    const sent = this.#r.send.sendReliable(now, conn, "Data", payload, options.ordered ? ORDERED : UNORDERED);
    this.#r.connTimers.reschedule(conn);
    return sent !== null;
  }

  /** Sends `Disconnect` to `addr` and forgets the link and peer there. */
  disconnect(now: number, addr: SocketAddr, reason: string): void {
    const conn = this.#core.table.byAddr.get(formatSocketAddr(addr));
    if (!conn) return;
    this.#r.send.sendPlain(now, conn, "Disconnect", { reason });
    this.#close(conn);
    this.#r.requests.abandon(conn.key, "closed");
  }

  /** Sends `Disconnect` to every peer and link and forgets them all (shutdown). */
  shutdown(now: number, reason: string): void {
    for (const conn of [...this.#core.table.byAddr.values()]) {
      if (conn.peer || conn.link) this.#r.send.sendPlain(now, conn, "Disconnect", { reason });
      this.#close(conn);
    }
    this.#core.timers.conns.clear();
    this.#r.requests.abandon(null, "closed");
    this.#r.ticks.clear();
    this.#r.nat.clear();
    this.#r.lifetime.clear();
  }

  #close(conn: Conn): void {
    if (conn.peer) this.#r.life.removePeer(conn, "shutdown");
    if (conn.link) this.#r.life.closeLink(conn, "closed");
    this.#r.life.forget(conn);
  }

  /**
   * Probes `discoveryPortRange` on this endpoint's own host for sibling servers: one HandshakeRequest per
   * port, one try each. Siblings that answer become links; they probe back (or answer our registration by
   * connecting back), so both list each other with capability `server`.
   */
  probeSiblings(now: number, local: SocketAddr): void {
    this.#r.hs.probeSiblings(now, local);
  }

  /** Cluster mode: the mirror of the other instances' peers (read it, change it through the methods below). */
  get remotePeers(): RemoteDirectory {
    return this.#r.mirror.remotePeers;
  }

  /** Cluster mode: counters of the traffic with other instances. */
  clusterCounts(): ClusterCounts {
    return this.#r.mirror.clusterCounts();
  }

  /**
   * Cluster mode: adds or updates peers of other instances (announced, or read from the shared directory).
   * This instance's own records, and ids registered here, are skipped.
   */
  upsertRemote(records: Iterable<DirectoryRecord>): void {
    this.#r.mirror.upsertRemote(records);
  }

  /** Cluster mode: peers that left another instance. */
  removeRemote(instance: string, ids: Iterable<string>): void {
    this.#r.mirror.removeRemote(instance, ids);
  }

  /**
   * Cluster mode: replaces the mirror with a full read of the shared directory (this instance's records and
   * ids registered here are skipped). Returns how many mirrored peers were removed.
   */
  replaceRemote(records: Iterable<DirectoryRecord>): number {
    return this.#r.mirror.replaceRemote(records);
  }

  /**
   * Cluster mode: an instance is gone (it shut down, or its liveness key expired): its peers leave the
   * mirror, and routed messages waiting for its answer are reported undeliverable. Returns the peers removed.
   */
  dropInstance(now: number, instance: string): number {
    return this.#r.mirror.dropInstance(now, instance);
  }

  /** Cluster mode: forgets every mirrored peer and fails every relay in flight (the directory is unreachable). */
  clearRemote(now: number): void {
    this.#r.mirror.clearRemote(now);
  }

  /**
   * Cluster mode: the shared directory gave `id` to another instance (two instances accepted it at once):
   * the peer here is told, as any refused duplicate is, and removed. Returns whether it was here.
   */
  evictPeer(now: number, id: string): boolean {
    return this.#r.mirror.evictPeer(now, id);
  }

  /** Cluster mode: a message from another instance. */
  handleClusterMessage(now: number, from: string, message: ClusterMessage): void {
    this.#r.mirror.handleClusterMessage(now, from, message);
  }

  /** One decoded datagram: MAC and sum, limits, Ack and duplicate handling, then to the room that owns it. */
  #receive(dg: Datagram, msg: Message, bytes: Uint8Array): Outcome {
    const { now, key } = dg;
    const core = this.#core;
    core.stats.messagesReceived[msg.message_type]++;
    let conn = core.table.byAddr.get(key);
    if (!conn && msg.sid !== undefined && core.role === "server") {
      // A datagram of an authenticated session from an address that session is not on: a roaming peer, or
      // a replay. Only a path check can tell.
      const moved = this.#r.roaming.roam(dg, msg, bytes);
      if (moved !== true) return moved;
      conn = core.table.byAddr.get(key);
    }
    const session = conn?.session;
    if (
      session && !this.#r.sessions.macExempt(conn!, msg) &&
      !this.#r.sessions.macOk(session.recvKey, bytes, msg)
    ) {
      return drop("bad_mac", "datagram of an authenticated session without a valid mac");
    }
    if (session && msg.mac && !this.#r.sessions.fresh(session, msg)) {
      return drop("replayed", "a replayed datagram");
    }
    if (
      !msg.summed && !msg.mac &&
      (conn?.ext || msg.ext !== undefined || msg.rel !== undefined || msg.ord !== undefined || msg.frag)
    ) {
      // Peers that speak the extensions sum every datagram: one without a valid sum is corrupt.
      return drop("bad_checksum", "datagram from a peer with extensions carries no sum");
    }
    const type = msg.message_type;
    const peer = conn?.peer;
    if (peer && type !== "Ack" && !core.admission.nodeAllows(conn!, now)) return QUIET_RATE_LIMITED;
    if (type === "HandshakeRequest" && core.role === "server") {
      const refusal = this.#r.hs.admit(dg, peer, msg);
      if (refusal !== null) return refusal;
    }
    if (conn) heard(conn, dg, msg.ext !== undefined);
    // Checked before the Ack: a fragment that cannot be stored is not acknowledged, so it comes again.
    const chunk = msg.frag ? this.#r.streams.prepareFragment(conn, msg) : null;
    if (chunk !== null && typeof chunk !== "number") return chunk;
    // The Ack is decided after the message is handled and goes in front of what the handling sent (the spec's
    // order): an undecodable or unexpected message is not acked, so a corrupted copy never claims delivery.
    let ackAt = -1;
    let tracked: number | null = null;
    if (msg.requires_ack && type !== "Ack") {
      if (!conn && type !== "HandshakeRequest" && type !== "Ping") {
        // Nothing from an unregistered address is processed but a handshake (and a Ping): acknowledging it
        // would tell the sender it was delivered. The Error reply says why.
        return this.#dispatch(dg, conn, msg);
      }
      if (conn && type !== "HandshakeRequest") {
        if (
          msg.ord !== undefined && type === "Data" && conn.x?.ordered?.wouldOverflow(msg.ord, bytes.length)
        ) {
          return drop("buffer_full", `ordered message ${msg.ord} does not fit the reorder buffer`);
        }
        tracked = msg.rel ?? msg.sequence_number;
        const answerKey = tracked === null ? null : `${msg.rel !== undefined ? "rel" : "seq"}:${tracked}`;
        if (tracked !== null && !windowFor(conn, msg.rel).isNew(tracked)) {
          this.#r.send.repeated(dg, conn, msg, answerKey!, tracked);
          return "duplicate";
        }
        dg.answerKey = answerKey;
      }
      ackAt = core.queuedTransmits;
    }
    if (
      conn?.peer?.state === "handshaking" && type !== "HandshakeRequest" && type !== "Disconnect" &&
      type !== "Ack"
    ) {
      // Any further valid message proves the HandshakeResponse arrived (deployed clients never ack it).
      this.#r.life.authenticate(now, conn);
    }
    let outcome: Outcome;
    if (chunk !== null) outcome = this.#r.streams.onFragment(dg, conn!, msg, chunk);
    else if (msg.ord !== undefined && type === "Data" && conn) {
      outcome = this.#r.streams.onOrdered(dg, conn, msg, bytes, true);
    } else outcome = this.#dispatch(dg, conn, msg);
    if (
      ackAt >= 0 && outcome !== "deferred" &&
      (outcome === undefined || outcome === "duplicate" || outcome.refused)
    ) {
      if (conn && tracked !== null) {
        const window = recordingWindow(conn, msg.rel);
        const before = window.highest;
        window.accept(tracked);
        if (msg.rel !== undefined) this.#r.streams.noteRel(now, conn, before, msg.rel);
      }
      // A HandshakeRequest may have created the connection meanwhile: the Ack goes out on it (with its sum).
      const ackConn = conn ?? core.table.byAddr.get(key);
      // The Ack of a HandshakeRequest that just started a session must not be MAC'd (the requester gets its
      // keys from the response that follows); on a session that was already running it is.
      const mac = msg.message_type !== "HandshakeRequest" ||
        (session !== undefined && ackConn?.session === session);
      this.#r.send.ackReceived(dg, ackConn, msg, { at: ackAt, mac });
    }
    return outcome;
  }

  /** Hands a message to the room that owns its type. */
  #dispatch(dg: Datagram, conn: Conn | undefined, msg: Message): Outcome {
    switch (msg.message_type) {
      case "HandshakeRequest":
        return this.#r.hs.onHandshakeRequest(dg, conn, msg);
      case "HandshakeResponse":
        return this.#r.hs.onHandshakeResponse(dg.now, conn, msg);
      case "Ack":
        return this.#r.control.onAck(dg.now, conn, msg);
      case "Ping":
        return this.#r.control.onPing(dg, conn, msg);
      case "Pong":
        return this.#r.control.onPong(dg, conn, msg);
      case "DiscoveryRequest":
        return this.#r.disc.onDiscoveryRequest(dg, conn, msg);
      case "DiscoveryResponse":
        return this.#r.disc.onDiscoveryResponse(dg.now, dg.from, conn, msg);
      case "Data":
        return this.#r.relay.onData(dg, conn, msg);
      case "Error":
        return this.#r.control.onError(dg.now, dg.from, conn, msg);
      case "Disconnect":
        return this.#r.control.onDisconnect(conn);
      case "Retransmit":
        return this.#r.streams.onRetransmit(dg, conn, msg);
    }
  }
}
