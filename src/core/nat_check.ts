/**
 * NAT classification of registered peers (issue 18), both roles. A peer with the extensions asks its server
 * (`DiscoveryRequest` `{"nat_check": {}}`); a server with RFC 5780 alternate sockets then tests the peer's
 * filtering (unnumbered Pings from the alternate sockets to its proven address, which the peer reports back
 * without answering them) and its mapping (the peer pings each alternate socket and the server tells it the
 * address each saw), stores the resulting {@linkcode NatClass} on the peer record and sends it to the peer.
 * Every exchange carries random tokens handed only to the peer's proven address; the checks in progress are
 * bounded per peer and in total, and each peer may start one every {@linkcode NAT_CHECK_INTERVAL_MS}. The
 * wire format is in docs/protocol.md ("The classification exchange").
 *
 * @module
 */
import {
  decodeMessage,
  encodeMessage,
  formatSocketAddr,
  isJsonObject,
  type Json,
  parseSocketAddr,
} from "../wire/mod.ts";
import type { SocketAddr } from "../wire/mod.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import { adoptKeepalive, type Conn, type PeerConn } from "./peers.ts";
import type { Timed } from "./timers.ts";
import { type Datagram, type Drop, drop } from "./outcome.ts";
import { ERROR_CODES } from "./types.ts";
import {
  isMeasured,
  type NatBehaviour,
  type NatClass,
  natFromJson,
  natToJson,
  suggestedKeepalive,
  UNKNOWN_NAT,
} from "./nat_class.ts";

/** Least time between two checks of one peer (ms). */
export const NAT_CHECK_INTERVAL_MS = 30_000;
/** Most checks in progress on a server. */
export const MAX_NAT_CHECKS = 32;
/** Filtering probes per alternate socket, and the time between them (ms). */
export const FILTER_PROBES = 3;
export const FILTER_PROBE_INTERVAL_MS = 150;
/** When the mapping test starts, after the request (ms): the filtering window. */
export const MAPPING_AT_MS = 600;
/** How long the mapping test may take (ms). */
export const MAPPING_WINDOW_MS = 1_000;
/** Tries of each mapping Ping (client role), and the time between them (ms). */
export const MAP_TRIES = 3;
export const MAP_TRY_INTERVAL_MS = 100;
/** How long a client waits for its server's result (ms). */
export const CLIENT_CHECK_TIMEOUT_MS = 5_000;
/** Mapping answers one check sends from each socket (a replayed token gets no more). */
const ANSWERS_PER_SOCKET = 3;
/** Reports a client sends for one check (3 probes from each of 2 sockets, and a little slack). */
const MAX_REPORTS = 8;
/** Most checks a client waits for at once (one per server). */
const MAX_CLIENT_CHECKS = 4;
/** Longest token or label read from the wire. */
const MAX_TOKEN = 64;

type Label = "address" | "port";

/** A check in progress (server role). */
interface ServerCheck extends Timed {
  conn: PeerConn;
  /** The filtering probes' tokens, by label, and the mapping token. */
  probeTokens: Map<Label, string>;
  mapToken: string;
  /** The alternate sockets, by role (-1 when absent). */
  p2: number;
  a2p1: number;
  a2p2: number;
  phase: "filter" | "map";
  probesLeft: number;
  mapAt: number;
  until: number;
  seen: Set<Label>;
  /** The peer's address as each target socket saw it. */
  observed: Map<number, string>;
  answers: Map<number, number>;
}

/** A check this client waits for (client role). */
interface ClientCheck extends Timed {
  server: SocketAddr;
  serverKey: string;
  token: string | null;
  targets: { addr: SocketAddr; key: string; tries: number; answered: boolean }[];
  reports: number;
  until: number;
}

/** What one check concluded: the class, from what was observed. */
export function classify(
  main: string,
  observed: ReadonlyMap<"p2" | "a2p1" | "a2p2", string>,
  seen: ReadonlySet<Label>,
  sockets: { p2: boolean; a2p1: boolean; a2p2: boolean },
): NatClass {
  let mapping: NatBehaviour = "unknown";
  const at = (k: "p2" | "a2p1" | "a2p2") => observed.get(k);
  if (sockets.a2p1) {
    const a = at("a2p1");
    if (a !== undefined) {
      if (a === main) mapping = "endpoint-independent";
      else if (sockets.a2p2 && at("a2p2") !== undefined) {
        mapping = at("a2p2") === a ? "address-dependent" : "address-and-port-dependent";
      }
    }
  } else if (sockets.p2 && at("p2") !== undefined && at("p2") !== main) {
    // Only another port of the same address: a different mapping there says port-dependent; the same
    // one cannot tell endpoint-independent from address-dependent (left unknown).
    mapping = "address-and-port-dependent";
  }
  let filtering: NatBehaviour = "unknown";
  if (sockets.a2p2) {
    filtering = seen.has("address")
      ? "endpoint-independent"
      : seen.has("port")
      ? "address-dependent"
      : "address-and-port-dependent";
  } else if (sockets.p2 && !seen.has("port")) {
    // Without another address only the port test runs: filtered means port-dependent; let through could be
    // endpoint-independent or address-dependent (left unknown).
    filtering = "address-and-port-dependent";
  }
  const out: NatClass = { mapping, filtering };
  if (mapping !== "endpoint-independent" && mapping !== "unknown") {
    const ports = (["p2", "a2p1", "a2p2"] as const).map((k) => portOf(at(k))).filter((p) => p !== null);
    if (ports.length >= 3) {
      const steps = ports.slice(1).map((p, i) => p! - ports[i]!);
      const step = steps[0]!;
      if (step !== 0 && steps.every((s) => s === step)) out.portDelta = step;
    }
  }
  return out;
}

function portOf(addr: string | undefined): number | null {
  if (addr === undefined) return null;
  const i = addr.lastIndexOf(":");
  const port = Number(addr.slice(i + 1));
  return Number.isInteger(port) ? port : null;
}

function token(v: Json | undefined): string | null {
  return typeof v === "string" && v.length > 0 && v.length <= MAX_TOKEN ? v : null;
}

/** The classification exchange, both roles. */
export class NatChecks {
  readonly #core: Core;
  readonly #send: SendPath;
  /** Server role: checks in progress by the peer's address key, and by token. */
  readonly #checks = new Map<string, ServerCheck>();
  readonly #byToken = new Map<string, ServerCheck>();
  /** Client role: checks we wait for, by server address key. */
  readonly #mine = new Map<string, ClientCheck>();

  constructor(core: Core, send: SendPath) {
    this.#core = core;
    this.#send = send;
  }

  /** Checks in progress (server) or awaited (client). */
  get size(): number {
    return this.#checks.size + this.#mine.size;
  }

  /** Whether this server can run the exchange (it has at least the alternate port). */
  get available(): boolean {
    return this.#core.role === "server" && this.#core.socketBeside(0, false, true) > 0;
  }

  // ------------------------------------------------------------------ server role

  /** A peer's `{"nat_check": {}}` request (server role). */
  request(dg: Datagram, conn: PeerConn): Drop | undefined {
    const now = dg.now;
    const stats = this.#core.stats.natChecks;
    stats.requested++;
    const refuse = (code: string, why: string): Drop => {
      stats.refused++;
      this.#send.reply(dg, conn, "Error", { error: `nat check refused: ${why}`, code });
      return { reason: "bad_payload", detail: `nat check refused: ${why}`, refused: true };
    };
    if (!this.available) {
      return refuse(ERROR_CODES.natCheckUnavailable, "this server has no alternate socket");
    }
    if (!conn.ext) return refuse(ERROR_CODES.natCheckUnavailable, "the peer does not speak the extensions");
    if (conn.peer.state !== "authenticated") return refuse(ERROR_CODES.rateLimited, "not authenticated yet");
    if (this.#checks.has(conn.key)) return undefined; // one in progress: it answers this request too
    const last = conn.peer.natCheckedAt;
    if (last !== undefined && now - last < NAT_CHECK_INTERVAL_MS) {
      return refuse(ERROR_CODES.rateLimited, "one check per peer every 30 s");
    }
    if (this.#checks.size >= MAX_NAT_CHECKS) return refuse(ERROR_CODES.rateLimited, "too many checks; retry");
    conn.peer.natCheckedAt = now;
    const core = this.#core;
    const check: ServerCheck = {
      conn,
      probeTokens: new Map(),
      mapToken: core.newId(),
      p2: core.socketBeside(0, false, true),
      a2p1: core.socketBeside(0, true, false),
      a2p2: core.socketBeside(0, true, true),
      phase: "filter",
      probesLeft: FILTER_PROBES,
      mapAt: now + MAPPING_AT_MS,
      until: Infinity,
      seen: new Set(),
      observed: new Map(),
      answers: new Map(),
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    if (check.a2p2 > 0) check.probeTokens.set("address", core.newId());
    if (check.p2 > 0) check.probeTokens.set("port", core.newId());
    this.#checks.set(conn.key, check);
    this.#byToken.set(check.mapToken, check);
    this.#probe(now, check);
    return undefined;
  }

  /** A peer's report of a filtering probe it received (`{"nat_seen": token, "via": label}`). */
  onSeen(conn: Conn | undefined, p: { [key: string]: Json }): Drop | undefined {
    const check = conn ? this.#checks.get(conn.key) : undefined;
    const t = token(p.nat_seen);
    const label = p.via === "address" || p.via === "port" ? p.via : null;
    if (!check || check.conn !== conn || label === null || t === null || check.probeTokens.get(label) !== t) {
      return drop("nat_check_token", "nat_seen with no matching check or token");
    }
    if (check.phase !== "filter") return drop("nat_check_late", "nat_seen after the filtering window");
    check.seen.add(label);
    this.#core.stats.natChecks.seen++;
    return undefined;
  }

  /**
   * A datagram on an alternate socket that is not STUN: a mapping Ping (`{"nat_map": token}`) is answered
   * from the same socket with the address it came from. Returns false for anything else (the caller drops
   * it as `alternate_socket`).
   */
  onAlternate(now: number, from: SocketAddr, key: string, bytes: Uint8Array, socket: number): boolean {
    if (this.#core.role !== "server") return false;
    const dg: Datagram = {
      now,
      from,
      key,
      size: bytes.length,
      budget: 3 * bytes.length,
      summed: true,
      cookieOk: false,
    };
    let msg;
    try {
      msg = decodeMessage(bytes);
    } catch {
      return false;
    }
    const p = msg.payload;
    if (msg.message_type !== "Ping" || !isJsonObject(p) || p.nat_map === undefined) return false;
    const t = token(p.nat_map);
    const check = t === null ? undefined : this.#byToken.get(t);
    const core = this.#core;
    if (!check || check.phase !== "map") {
      core.drop(dg.from, dg.key, "nat_check_token", "nat_map with no matching check");
      return true;
    }
    const answered = check.answers.get(socket) ?? 0;
    if (answered >= ANSWERS_PER_SOCKET) {
      core.drop(dg.from, dg.key, "nat_check_repeat", "nat_map answered enough from this socket");
      return true;
    }
    check.answers.set(socket, answered + 1);
    // The first address a socket saw the token from is the mapping (a copy from elsewhere changes nothing).
    if (!check.observed.has(socket)) check.observed.set(socket, dg.key);
    core.stats.natChecks.mapAnswers++;
    core.stats.processed++;
    const pong = core.envelope(dg.now, "Pong", { nat_map: t, observed: dg.key }, null);
    core.transmitStateless(dg, dg.from, encodeMessage(pong, true), "Pong", socket);
    const targets = [check.p2, check.a2p1, check.a2p2].filter((s) => s > 0);
    if (targets.every((s) => check.observed.has(s))) this.#finish(dg.now, check);
    return true;
  }

  #probe(now: number, check: ServerCheck): void {
    const core = this.#core;
    for (const [label, t] of check.probeTokens) {
      const socket = label === "address" ? check.a2p2 : check.p2;
      const ping = core.envelope(now, "Ping", { nat_probe: t, via: label }, null);
      if (core.transmitOn(check.conn, encodeMessage(ping, true), "Ping", socket)) {
        core.stats.natChecks.probes++;
      }
    }
    check.probesLeft--;
    core.timers.natChecks.schedule(
      check,
      check.probesLeft > 0 ? now + FILTER_PROBE_INTERVAL_MS : check.mapAt,
    );
  }

  #startMapping(now: number, check: ServerCheck): void {
    check.phase = "map";
    check.until = now + MAPPING_WINDOW_MS;
    const sockets = this.#core.sockets;
    const targets = [check.p2, check.a2p1, check.a2p2].filter((s) => s > 0).map((s) =>
      formatSocketAddr(sockets[s]!)
    );
    this.#send.sendReliable(now, check.conn, "DiscoveryResponse", {
      nat_check: { token: check.mapToken, targets },
    });
    this.#core.timers.natChecks.schedule(check, check.until);
  }

  #finish(now: number, check: ServerCheck): void {
    this.#end(check);
    const conn = check.conn;
    if (this.#core.table.byAddr.get(conn.key) !== conn || !conn.peer) return; // it left meanwhile
    const observed = new Map<"p2" | "a2p1" | "a2p2", string>();
    for (const k of ["p2", "a2p1", "a2p2"] as const) {
      const seenAt = check.observed.get(check[k]);
      if (check[k] > 0 && seenAt !== undefined) observed.set(k, seenAt);
    }
    const nat = classify(conn.key, observed, check.seen, {
      p2: check.p2 > 0,
      a2p1: check.a2p1 > 0,
      a2p2: check.a2p2 > 0,
    });
    const keep = conn.peer.nat?.bindingLifetimeMs;
    if (keep !== undefined) nat.bindingLifetimeMs = keep;
    if (isMeasured(nat)) conn.peer.nat = nat;
    const keepalive = suggestedKeepalive(nat, this.#core.config.suggestedKeepalive);
    this.#send.sendReliable(now, conn, "DiscoveryResponse", {
      nat: natToJson(nat),
      suggested_keepalive: keepalive,
    });
    this.#core.stats.natChecks.completed++;
    this.#core.emit({
      type: "natChecked",
      from: conn.addr,
      peerId: conn.peer.info.id,
      peer: conn.peer.state === "authenticated" ? this.#core.summary(conn, conn.peer) : null,
      nat,
      suggestedKeepalive: keepalive,
      reason: null,
    });
  }

  #end(check: ServerCheck): void {
    this.#checks.delete(check.conn.key);
    this.#byToken.delete(check.mapToken);
    this.#core.timers.natChecks.schedule(check, Infinity);
  }

  // ------------------------------------------------------------------ client role

  /** Asks the server at `to` to classify our NAT (client role): the outcome is a `natChecked` event. */
  ask(now: number, to: Conn): void {
    const key = to.key;
    if (this.#mine.has(key)) return;
    if (this.#mine.size >= MAX_CLIENT_CHECKS) {
      const oldest = this.#mine.values().next().value!;
      this.#settle(oldest, UNKNOWN_NAT, null, "timeout");
    }
    const check: ClientCheck = {
      server: to.addr,
      serverKey: key,
      token: null,
      targets: [],
      reports: 0,
      until: now + CLIENT_CHECK_TIMEOUT_MS,
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.#mine.set(key, check);
    this.#core.timers.natChecks.schedule(check, check.until);
    this.#send.sendReliable(now, to, "DiscoveryRequest", { nat_check: {} });
  }

  /**
   * A filtering probe (`{"nat_probe": token, "via": label}`) from an address that is not our server's:
   * reported to each server we wait for, never answered (an answer would open our own filter).
   */
  onProbe(dg: Datagram, p: { [key: string]: Json }): Drop | undefined {
    const t = token(p.nat_probe);
    const via = token(p.via);
    if (t === null || via === null) return drop("bad_payload", "malformed nat_probe");
    let reported = false;
    for (const check of this.#mine.values()) {
      if (check.serverKey === dg.key || check.reports >= MAX_REPORTS || check.token !== null) continue;
      const conn = this.#core.table.byAddr.get(check.serverKey);
      if (!conn?.link) continue;
      check.reports++;
      this.#send.sendPlain(dg.now, conn, "Ping", { nat_seen: t, via });
      reported = true;
    }
    return reported ? undefined : drop("nat_check_token", "nat_probe while no check is awaited");
  }

  /** A DiscoveryResponse of the exchange from our server: the mapping targets, or the result. */
  onAnswer(now: number, from: SocketAddr, p: { [key: string]: Json }): Drop | undefined {
    const check = this.#mine.get(formatSocketAddr(from));
    if (!check) return drop("unexpected", "nat check answer nobody asked for");
    if (isJsonObject(p.nat_check)) {
      const t = token(p.nat_check.token);
      const list = p.nat_check.targets;
      if (t === null || !Array.isArray(list)) return drop("bad_payload", "malformed nat_check answer");
      if (check.token !== null) return undefined; // a repeat
      check.token = t;
      for (const item of list.slice(0, 3)) {
        const parsed = typeof item === "string" && item.length <= 64 ? parseSocketAddr(item) : "bad";
        const addr = typeof parsed === "string" ? null : parsed;
        if (addr) check.targets.push({ addr, key: formatSocketAddr(addr), tries: 0, answered: false });
      }
      this.#mapPings(now, check);
      return undefined;
    }
    const k = p.suggested_keepalive;
    const keepalive = typeof k === "number" && Number.isInteger(k) && k >= 1 ? k : null;
    const conn = this.#core.table.byAddr.get(check.serverKey);
    if (conn && keepalive !== null) adoptKeepalive(conn, now, keepalive, this.#core.heartbeatMs);
    this.#settle(check, natFromJson(p.nat), keepalive, null);
    return undefined;
  }

  /** A Pong answering a mapping Ping (`{"nat_map": token, "observed": ...}`). */
  onMapAnswer(from: SocketAddr, p: { [key: string]: Json }): void {
    const t = token(p.nat_map);
    const key = formatSocketAddr(from);
    for (const check of this.#mine.values()) {
      if (check.token === null || check.token !== t) continue;
      for (const target of check.targets) if (target.key === key) target.answered = true;
    }
  }

  /** An Error from a server we wait for: `nat_check_unavailable` or `rate_limited` ends the wait. */
  onError(from: SocketAddr, code: string | undefined): void {
    const check = this.#mine.get(formatSocketAddr(from));
    if (!check) return;
    if (code === ERROR_CODES.natCheckUnavailable) this.#settle(check, UNKNOWN_NAT, null, "unavailable");
    else if (code === ERROR_CODES.rateLimited) this.#settle(check, UNKNOWN_NAT, null, "rate_limited");
  }

  #mapPings(now: number, check: ClientCheck): void {
    let more = false;
    for (const target of check.targets) {
      if (target.answered || target.tries >= MAP_TRIES) continue;
      target.tries++;
      const ping = this.#core.envelope(now, "Ping", { nat_map: check.token! }, null);
      this.#core.transmitUnchecked(target.addr, encodeMessage(ping, true), "Ping");
      if (target.tries < MAP_TRIES) more = true;
    }
    this.#core.timers.natChecks.schedule(check, more ? now + MAP_TRY_INTERVAL_MS : check.until);
  }

  #settle(
    check: ClientCheck,
    nat: NatClass,
    keepalive: number | null,
    reason: "unavailable" | "rate_limited" | "timeout" | null,
  ): void {
    this.#mine.delete(check.serverKey);
    this.#core.timers.natChecks.schedule(check, Infinity);
    this.#core.emit({
      type: "natChecked",
      from: check.server,
      peerId: null,
      peer: null,
      nat,
      suggestedKeepalive: keepalive,
      reason,
    });
  }

  // ------------------------------------------------------------------ both

  /** Runs every step due at `now`: the next probe, the mapping test, the end of a check. */
  run(now: number): void {
    for (;;) {
      const due = this.#core.timers.natChecks.popDue(now) as ServerCheck | ClientCheck | undefined;
      if (!due) return;
      if ("serverKey" in due) {
        if (now >= due.until) this.#settle(due, UNKNOWN_NAT, null, "timeout");
        else if (due.token !== null) this.#mapPings(now, due);
        continue;
      }
      if (this.#core.table.byAddr.get(due.conn.key) !== due.conn) {
        this.#end(due); // it left
      } else if (due.phase === "filter") {
        if (due.probesLeft > 0) this.#probe(now, due);
        else this.#startMapping(now, due);
      } else if (now >= due.until) this.#finish(now, due);
    }
  }

  /** Forgets every check (shutdown). */
  clear(): void {
    this.#checks.clear();
    this.#byToken.clear();
    this.#mine.clear();
  }
}
