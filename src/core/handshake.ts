/**
 * Handshakes, both roles: a server registers peers (idempotent re-registration, node-id uniqueness here and
 * across the cluster, keys, the server's capacity) and answers; a client (or a server towards its siblings)
 * starts handshakes and takes their answers. The per-IP handshake limit and the cookie challenge sit in
 * front of a new registration.
 *
 * @module
 */
import {
  formatSocketAddr,
  isJsonObject,
  isUnspecified,
  type Json,
  loopbackFor,
  type Message,
  networkOf,
  parseHandshakeResponse,
  parseNodeInfo,
  type SocketAddr,
} from "../wire/mod.ts";
import {
  adoptKeepalive,
  type Conn,
  hasLink,
  type KeyedPeer,
  type LinkConn,
  type PeerEntry,
} from "./peers.ts";
import type { Core } from "./context.ts";
import type { Sessions } from "./sessions.ts";
import type { SendPath } from "./send.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { ConnTimers } from "./conn_timers.ts";
import type { ClusterState } from "./cluster_state.ts";
import type { Expiring } from "./timer_table.ts";
import { type Datagram, type Drop, drop, type Outcome, QUIET_RATE_LIMITED } from "./outcome.ts";
import { ERROR_CODES, NODE_ID_EXISTS } from "./types.ts";
import { type Bucket, fullBucket, type Rate, take } from "./limits.ts";
import { isMeasured, natAnswer, natFromJson } from "./nat_class.ts";
import { Interner } from "./intern.ts";

/**
 * How often one node id may move to another address (a takeover: the node roams, restarts elsewhere, or
 * someone with its key claims it): once a second, bursts of 4. Checked before any signature is: a flood of
 * valid signed requests for one id from many addresses costs one map lookup each past the burst.
 */
export const TAKEOVER_RATE: Rate = { perSecond: 1, burst: 4 };

/** Node ids whose takeover rate is tracked at once (the oldest is forgotten first). */
const MAX_TAKEOVER_IDS = 4_096;

/** Wait before a sibling-server probe is given up (one try). */
const PROBE_WAIT_MS = 1000;

/** The retry schedule of a sibling probe: one try. */
const PROBE_SCHEDULE: readonly number[] = [PROBE_WAIT_MS];

/** Most introduced peers a client expects a direct handshake from at once. */
const MAX_EXPECTED = 1_024;

/** Options of {@linkcode Handshakes.connect}. */
export interface ConnectOptions {
  /** A sibling-server probe: one try, failure is quiet. @default {false} */
  probe?: boolean;
  /** We chose to send there (the address is validated); false for a connect-back asked by the remote. @default {true} */
  validated?: boolean;
  /** The remote's Ed25519 key we insist on. @default {none} */
  pinnedKey?: Uint8Array;
  /** The node id we must find there (a direct connection to an introduced peer). @default {any} */
  expectedId?: string;
}

/** A peer a client was introduced to, and until when its direct handshake is accepted. */
interface Expected extends Expiring {
  until: number;
}

/** Handshakes in both directions. */
export class Handshakes {
  readonly #core: Core;
  readonly #sessions: Sessions;
  readonly #interner = new Interner();
  readonly #send: SendPath;
  readonly #life: Lifecycle;
  readonly #connTimers: ConnTimers;
  readonly #cluster: ClusterState;
  /** Peers a client was introduced to, by node id (bounded; expired by the timer table). */
  readonly #expected = new Map<string, Expected>();
  /** Takeover buckets by node id (bounded). */
  readonly #takeovers = new Map<string, Bucket>();
  /** Takeovers admitted in the current second: they count as half-open handshakes for the cookie rule. */
  #recentTakeovers = 0;
  #recentSince = -Infinity;

  /**
   * @param core The shared state.
   * @param sessions Keys.
   * @param send The send path.
   * @param life Peer and link state changes.
   * @param connTimers Connection deadlines.
   * @param cluster The mirror of other instances' peers.
   */
  constructor(
    core: Core,
    sessions: Sessions,
    send: SendPath,
    life: Lifecycle,
    connTimers: ConnTimers,
    cluster: ClusterState,
  ) {
    this.#core = core;
    this.#sessions = sessions;
    this.#send = send;
    this.#life = life;
    this.#connTimers = connTimers;
    this.#cluster = cluster;
  }

  /** A client will accept a direct handshake from the introduced peer `id` until `until` (ms). */
  expect(id: string, until: number): void {
    const old = this.#expected.get(id);
    if (old) {
      this.#expected.delete(id);
      this.#core.timers.housekeeping.schedule(old, Infinity);
    }
    if (this.#expected.size >= MAX_EXPECTED) {
      const [first, entry] = this.#expected.entries().next().value!;
      this.#expected.delete(first);
      this.#core.timers.housekeeping.schedule(entry, Infinity);
    }
    const entry: Expected = {
      until,
      expire: () => {
        if (this.#expected.get(id) === entry) this.#expected.delete(id);
      },
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.#expected.set(id, entry);
    this.#core.timers.housekeeping.schedule(entry, until);
  }

  /**
   * The gate in front of a HandshakeRequest (server role): every new request (only a retransmission of the
   * one already answered is exempt) counts against the per-IP handshake limit; one that would register a
   * node (not the peer already here re-handshaking) needs a cookie under load. Returns how the request
   * ended, or null to go on.
   */
  admit(dg: Datagram, peer: PeerEntry | null | undefined, msg: Message): Outcome | null {
    if (peer?.requestId === msg.id) return null;
    if (!this.#core.admission.handshakeAllowed(dg.from.hostname, dg.now)) return QUIET_RATE_LIMITED;
    const p = msg.payload;
    const claimed = isJsonObject(p) && typeof p.id === "string" ? p.id.toLowerCase() : null;
    const sameNode = peer !== undefined && peer !== null && claimed === peer.info.id;
    if (sameNode) return null;
    // A claim of an id registered at another address (here or on another instance) is a takeover: admitted
    // like a new handshake under load (the cookie rule counts it), and at most TAKEOVER_RATE per id.
    if (claimed !== null && (this.#core.table.byId.has(claimed) || this.#cluster.remote.byId.has(claimed))) {
      if (!this.#takeoverAllowed(claimed, dg.now)) return QUIET_RATE_LIMITED;
    }
    const load = this.#core.table.halfOpen + (dg.now - this.#recentSince < 1_000 ? this.#recentTakeovers : 0);
    const verdict = this.#core.admission.checkCookie(dg, msg, load);
    if (verdict === "ok") return null;
    this.#send.reply(dg, undefined, "Error", {
      error: "busy: repeat with cookie",
      code: ERROR_CODES.cookieRequired,
      cookie: verdict.challenge,
    });
    return undefined;
  }

  /** Takes a takeover token for node `id`, and counts the takeover towards the cookie rule's load. */
  #takeoverAllowed(id: string, now: number): boolean {
    let bucket = this.#takeovers.get(id);
    if (!bucket) {
      if (this.#takeovers.size >= MAX_TAKEOVER_IDS) {
        this.#takeovers.delete(this.#takeovers.keys().next().value!);
      }
      this.#takeovers.set(id, bucket = fullBucket(TAKEOVER_RATE, now));
    }
    if (!take(bucket, TAKEOVER_RATE, now)) return false;
    if (now - this.#recentSince >= 1_000) {
      this.#recentSince = now;
      this.#recentTakeovers = 0;
    }
    this.#recentTakeovers++;
    return true;
  }

  /**
   * A HandshakeRequest (server role; a client accepts one only from a peer it was just introduced to):
   * validated, its key checked, and the peer registered (or re-registered, or refused) and answered.
   */
  onHandshakeRequest(dg: Datagram, existing: Conn | undefined, msg: Message): Drop | "duplicate" | undefined {
    const { now, from, key } = dg;
    // The node id it claims, for the report of a refusal (clipped: anyone can send anything).
    const claimed = isJsonObject(msg.payload) ? msg.payload.id : undefined;
    dg.claimedId = typeof claimed === "string" ? claimed.toLowerCase().slice(0, 64) : null;
    if (this.#core.role !== "server") {
      // A client accepts a handshake only from a peer its server just introduced (a direct connection).
      const id = isJsonObject(msg.payload) && typeof msg.payload.id === "string"
        ? msg.payload.id.toLowerCase()
        : "";
      const until = this.#expected.get(id)?.until;
      if (until === undefined || until < now) return drop("unexpected", "HandshakeRequest to a client");
    }
    const parsed = parseNodeInfo(msg.payload);
    if (typeof parsed === "string") {
      this.#send.refuse(dg, ERROR_CODES.invalidNodeInfo, `handshake failed: invalid node info: ${parsed}`);
      return undefined;
    }
    // Kept for as long as the peer stays: its capability list and metadata are shared with equal ones.
    const info = this.#interner.node(parsed);
    // Keys: a signed request is verified (not its retransmission: that one was, and is in the replay cache);
    // an unsigned one is accepted only as the policy allows.
    let keyed: KeyedPeer | null = null;
    if (this.#core.config.auth !== "off" && existing?.peer?.requestId !== msg.id) {
      const verdict = this.#sessions.verifyRequest(now, info, msg);
      if (verdict !== null && "code" in verdict) {
        this.#send.refuse(dg, verdict.code, verdict.error);
        return undefined;
      }
      keyed = verdict;
    }
    let conn = existing;
    if (conn?.peer) {
      const peer = conn.peer;
      if (peer.requestId === msg.id) {
        // A retransmission of the request we already answered: resend the answer if it is still waiting.
        const pending = conn.outbox.findType("HandshakeResponse");
        if (pending) this.#send.resend(conn, pending.bytes, pending.type);
        return "duplicate";
      }
      if (peer.info.id === info.id) {
        // The same node from the same address handshakes again (it restarted, or re-registers after a
        // Disconnect we never saw): idempotent. A new session starts its sequence numbers afresh.
        this.#life.newSession(conn, msg);
        conn.outbox.settleType("HandshakeResponse");
        if (networkOf(info) !== peer.network) {
          const state = peer.state;
          this.#core.table.unregister(conn);
          this.#core.table.register(conn, {
            ...peer,
            info,
            network: networkOf(info),
            requestId: msg.id,
            state,
          });
        } else {
          peer.info = info;
          peer.requestId = msg.id;
        }
        // A new handshake, new keys: the old session ends here (unless our own link shares it).
        if (!conn.link) this.#sessions.endSession(conn);
        if (keyed) conn.peer.keyed = keyed;
        else delete conn.peer.keyed;
        const response = this.#send.sendReliable(
          now,
          conn,
          "HandshakeResponse",
          this.responsePayload(networkOf(info), conn),
        );
        if (response && conn.peer) conn.peer.responseId = response.id;
        return undefined;
      }
    }
    // Checked before an old peer on this address is replaced, so a refused request changes nothing.
    const holder = this.#core.table.byId.get(info.id);
    if (holder && holder !== conn && keyed && holder.peer) {
      // The key proves the id: whoever holds it elsewhere (this node from its old address, or a squatter
      // without the key) gives way.
      this.#life.removePeer(holder, "replaced");
      if (!holder.link) this.#life.forget(holder);
    } else if (info.id === this.#core.node.id) {
      // Two servers started from one identity file share one id: say so, on both sides' logs.
      const why =
        "handshake failed: node ID already exists: it is this server's own (a shared identity file?)";
      this.#send.refuse(dg, ERROR_CODES.nodeIdConflict, why);
      return undefined;
    } else if (holder && holder !== conn) {
      this.#send.refuse(dg, ERROR_CODES.nodeIdConflict, NODE_ID_EXISTS);
      return undefined;
    }
    const elsewhere = holder ? undefined : this.#cluster.remote.byId.get(info.id);
    if (elsewhere) {
      // Registered with another instance of the cluster: the same rules across instances. A key proves the
      // id, so that instance lets go of it; an unkeyed claim is refused while the other one is alive.
      if (!keyed) {
        this.#send.refuse(dg, ERROR_CODES.nodeIdConflict, NODE_ID_EXISTS);
        return undefined;
      }
      this.#cluster.remote.remove(info.id);
      this.#cluster.send(elsewhere.instance, { t: "evict", id: info.id });
    }
    // Another node from the same socket address: the old one is gone. Not a keyed one, though: anyone can
    // spoof its address, and only its key could speak for it; it leaves by Disconnect or the idle timeout.
    if (conn?.peer?.keyed && conn.session) {
      this.#send.refuse(
        dg,
        ERROR_CODES.nodeIdConflict,
        "handshake failed: address in use by an authenticated node",
      );
      return undefined;
    }
    if (conn?.peer) this.#life.removePeer(conn, "replaced");
    if (this.#core.table.peerCount >= this.#core.config.maxConnections) {
      this.#send.refuse(
        dg,
        ERROR_CODES.serverFull,
        `handshake failed: server full (max_connections ${this.#core.config.maxConnections})`,
      );
      return undefined;
    }
    if (!conn) {
      conn = this.#core.table.open(key, from, now);
      conn.rxDatagrams = 1; // the request that made it
      conn.rxBytes = dg.size;
    }
    conn.ext = msg.ext !== undefined;
    if (dg.cookieOk) this.#core.validate(conn);
    else if (!conn.validated && conn.bytesIn === 0) conn.bytesIn = dg.size;
    this.#life.newSession(conn, msg);
    const network = networkOf(info);
    // `order` and `responseId` are set right after: declared here, they live in the object itself rather
    // than in a property array allocated beside it for every peer.
    const registered = this.#core.table.register(conn, {
      info,
      network,
      state: "handshaking",
      requestId: msg.id,
      joinedAt: now,
      order: 0,
      responseId: undefined,
    });
    if (keyed) registered.peer.keyed = keyed;
    conn.heartbeatAt = now + this.#core.heartbeatMs;
    this.#core.recentlyClosed.delete(key);
    const response = this.#send.sendReliable(
      now,
      conn,
      "HandshakeResponse",
      this.responsePayload(network, conn),
    );
    if (response) registered.peer.responseId = response.id;
    if (info.capabilities.includes("server") && !conn.link) {
      // A sibling server registered with us (its discovery probe, or its connectToPeer): register with it
      // too, so both list each other.
      this.connect(now, from, { probe: true, validated: false });
    }
    return undefined;
  }

  /** Our handshake's answer (client role, sibling servers): the link connects, or fails with a reason. */
  onHandshakeResponse(now: number, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!hasLink(conn)) return drop("unexpected", "HandshakeResponse without a handshake in progress");
    const link = conn.link;
    const payload = parseHandshakeResponse(msg.payload);
    if (typeof payload === "string") return drop("bad_payload", `HandshakeResponse: ${payload}`);
    if (link.state === "connected") return undefined; // a repeat; the Ack (if asked) already went out
    this.#send.settled(now, conn, conn.outbox.settleType("HandshakeRequest"));
    if (!payload.success) {
      this.#life.failLink(conn, payload.error_message ?? "handshake failed", "refused");
      return undefined;
    }
    const theirs = networkOf(payload.node_info);
    const ours = networkOf(link.local);
    if (theirs !== ours) {
      this.#life.failLink(
        conn,
        `handshake failed: network mismatch ("${theirs}" is not "${ours}")`,
        "network_mismatch",
      );
      return undefined;
    }
    if (link.expectedId !== undefined && payload.node_info.id !== link.expectedId) {
      this.#life.failLink(conn, "handshake failed: not the peer we were introduced to", "unexpected_peer");
      return undefined;
    }
    const authFailure = this.#sessions.verifyResponse(conn, msg, payload.node_info);
    if (authFailure) {
      this.#life.failLink(
        conn,
        `handshake failed: the server did not prove its key (${authFailure})`,
        authFailure,
      );
      return undefined;
    }
    link.state = "connected";
    link.remote = payload.node_info;
    const extras = msg.payload as {
      observed_addr?: unknown;
      keepalive_interval?: unknown;
      suggested_keepalive?: unknown;
      nat_lifetime?: unknown;
    };
    if (typeof extras.observed_addr === "string" && extras.observed_addr.length <= 64) {
      link.observedAddr = extras.observed_addr;
    }
    // The remote knows NATs forget idle mappings sooner than our heartbeat: keep ours open as it asks (and
    // below the binding lifetime it measured for us, when it did).
    for (const keepalive of [extras.keepalive_interval, extras.suggested_keepalive]) {
      if (typeof keepalive === "number") adoptKeepalive(conn, now, keepalive, this.#core.heartbeatMs);
    }
    this.#core.linkCounts.handshaking--;
    this.#core.linkCounts.connected++;
    if (link.probe) this.#core.stats.siblingProbes.found++;
    if (conn.heartbeatAt === Infinity) conn.heartbeatAt = now + this.#core.heartbeatMs;
    const nat = natFromJson((msg.payload as { nat?: unknown }).nat);
    this.#core.emit({
      type: "connected",
      addr: conn.addr,
      node: payload.node_info,
      observedAddr: link.observedAddr ?? null,
      ...(isMeasured(nat) ? { nat } : {}),
      ...((msg.payload as { nat_check?: unknown }).nat_check === true ? { natCheck: true } : {}),
      ...(extras.nat_lifetime === true ? { natLifetime: true } : {}),
    });
    // Confirm at once, reliably: the remote counts us authenticated on any message after its response, and
    // it may not resend that response to an address it has not validated (anti-amplification). A Pong
    // settles this Ping as well as an Ack does.
    this.#send.sendReliable(now, conn, "Ping", { confirm: msg.id });
    return undefined;
  }

  /**
   * Starts a handshake towards `addr` (the client role; a server uses it for sibling servers). The outcome
   * arrives as a `connected` or `connectFailed` event.
   */
  connect(
    now: number,
    addr: SocketAddr,
    options: ConnectOptions = {},
  ): void {
    const key = formatSocketAddr(addr);
    let conn = this.#core.table.byAddr.get(key);
    if (!conn) {
      conn = this.#core.table.open(key, addr, now);
    }
    if (conn.link) this.#life.closeLink(conn, null);
    this.#life.newSession(conn, null);
    // We chose to send to it, unless a remote asked us to (a connect-back): that proves nothing about it.
    if (options.validated ?? true) this.#core.validate(conn);
    conn.lastHeard = now;
    const probe = options.probe ?? false;
    conn.link = { state: "handshaking", local: this.#core.node, remote: null, probe };
    if (options.pinnedKey) conn.link.pinnedKey = options.pinnedKey;
    if (options.expectedId) conn.link.expectedId = options.expectedId;
    // A new handshake of ours starts a new session, unless a peer of ours shares this connection's.
    if (!conn.peer) this.#sessions.endSession(conn);
    this.#core.linkCounts.handshaking++;
    this.#send.sendReliable(now, conn, "HandshakeRequest", this.#core.node as unknown as Json, {
      schedule: probe ? PROBE_SCHEDULE : null,
    });
    this.#connTimers.reschedule(conn);
  }

  /** The payload of our HandshakeResponse to a peer of `network` on `conn`. */
  responsePayload(network: string, conn: Conn): Json {
    // The server echoes the requester's network id: deployed clients compare it with their own.
    const node = { ...this.#core.node, metadata: { ...this.#core.node.metadata, network_id: network } };
    return {
      node_info: node,
      success: true,
      error_message: null,
      // Extensions (deployed parsers ignore unknown keys): the requester's public address as seen here (its
      // NAT mapping), and how often it should send something to keep that mapping open.
      observed_addr: conn.key,
      keepalive_interval: this.#core.config.suggestedKeepalive,
      ...natAnswer(conn.ext ? conn.peer?.nat : undefined, this.#core.config.suggestedKeepalive),
      // The classification exchange, when this server has the alternate sockets it needs.
      ...(conn.ext && this.#core.socketBeside(0, false, true) > 0 ? { nat_check: true } : {}),
      // The binding lifetime measurement, unless the configured gaps turn it off.
      ...(conn.ext && this.#core.config.natLifetimeGapsMs.length > 0 ? { nat_lifetime: true } : {}),
    } as unknown as Json;
  }

  /**
   * Probes `discoveryPortRange` on this endpoint's own host for sibling servers: one HandshakeRequest per
   * port, one try each. Siblings that answer become links; they probe back (or answer our registration by
   * connecting back), so both list each other with capability `server`.
   */
  probeSiblings(now: number, local: SocketAddr): void {
    const host = isUnspecified(local.hostname) ? loopbackFor(local.hostname) : local.hostname;
    const [first, last] = this.#core.config.discoveryPortRange;
    for (let port = first; port <= last; port++) {
      if (port === local.port) continue;
      const addr = { hostname: host, port };
      if (this.#core.table.byAddr.get(formatSocketAddr(addr))?.link) continue;
      this.#core.stats.siblingProbes.sent++;
      this.connect(now, addr, { probe: true });
    }
  }
  /** Repeats our HandshakeRequest on `conn` (with the cookie its link now carries). */
  repeatRequest(now: number, conn: LinkConn): void {
    const link = conn.link;
    this.#send.sendReliable(now, conn, "HandshakeRequest", link.local as unknown as Json, {
      schedule: link.probe ? PROBE_SCHEDULE : null,
    });
  }
}
