/**
 * Introductions and hole punching. A server introduces two authenticated peers of one network that speak
 * the extensions: both get each other's candidates (the observed address; the declared one only behind the same NAT) and one shared nonce at
 * once, so both start punching together. A client that gets such a card probes the candidates (an
 * unnumbered Ping carrying the nonce, every {@linkcode PUNCH_INTERVAL_MS} for {@linkcode PUNCH_BUDGET_MS});
 * the first path that answers wins, and the initiator shakes hands over it. How it punches (when it starts,
 * which ports, or not at all) is the pair's {@linkcode Strategy}, from the card's two NAT classifications.
 *
 * @module
 */
import {
  encodeMessage,
  formatSocketAddr,
  type Json,
  parsePeerInfo,
  parseSocketAddr,
  type PeerInfo,
  type SocketAddr,
} from "../wire/mod.ts";
import { isUuid } from "../deps/uuid.ts";
import { extras, type PeerConn } from "./peers.ts";
import { fullBucket, type Rate, take } from "./limits.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import type { ConnTimers } from "./conn_timers.ts";
import type { ClusterState } from "./cluster_state.ts";
import type { Handshakes } from "./handshake.ts";
import { type Discovery, remotePeerInfo } from "./discovery.ts";
import type { Timed } from "./timers.ts";
import { type Datagram, type Drop, drop } from "./outcome.ts";
import { ERROR_CODES, PUNCH_BUDGET_MS, PUNCH_INTERVAL_MS } from "./types.ts";
import { isMeasured, type NatClass, natFromJson, natToJson } from "./nat_class.ts";
import { chooseStrategy, MAX_START_DELAY_MS, probeTargets, startDelay, type Strategy } from "./strategy.ts";

/** Introductions one peer may ask for: one a second, bursts of 10. */
const INTRODUCTION_RATE: Rate = { perSecond: 1, burst: 10 };

/** Most candidates one punch probes (the server's two, plus the addresses the peer's probes came from). */
const MAX_PUNCH_CANDIDATES = 8;

/** Most punches in progress at once. */
const MAX_PUNCHES = 64;

/** How long after an introduction a client accepts the introduced peer's direct handshake (ms). */
const INTRODUCTION_TTL_MS = 30_000;

/**
 * Probes a punching client sends to a candidate that has sent it nothing: enough for two NATs whose cards
 * arrived up to {@linkcode PUNCH_INTERVAL_MS} x 4 apart, few enough that a candidate naming someone else's
 * address gets next to nothing. Each probe received from a candidate allows 3 more to it (3x, as everywhere).
 */
export const PROBES_BEFORE_ANSWER = 5;

/**
 * Where to try a peer: the address this server observed it at; its declared `listen_addr` too only when it is
 * a private, loopback or link-local address and both peers come from the same public IP (the same NAT, so a
 * LAN path may exist). A declared public address is never handed out: anyone can declare anything, so it
 * would let a peer aim the other's probes at a victim.
 */
function candidatesOf(observed: string, declared: string, otherObserved: string): string[] {
  if (observed === declared) return [observed];
  const ip = (addr: string) => {
    const a = parseSocketAddr(addr);
    return typeof a === "string" ? null : a.hostname;
  };
  const declaredIp = ip(declared);
  const sameNat = ip(observed) !== null && ip(observed) === ip(otherObserved);
  return sameNat && declaredIp !== null && isPrivateIp(declaredIp) ? [observed, declared] : [observed];
}

/** Whether `ip` is private (RFC 1918, unique local IPv6), loopback or link-local. */
export function isPrivateIp(ip: string): boolean {
  const v4 = /^(\d+)\.(\d+)\.\d+\.\d+$/.exec(ip);
  if (v4) {
    const a = Number(v4[1]);
    const b = Number(v4[2]);
    return a === 10 || a === 127 || (a === 172 && b >= 16 && b <= 31) || (a === 192 && b === 168) ||
      (a === 169 && b === 254);
  }
  const v6 = ip.toLowerCase();
  return v6 === "::1" || /^f[cd]/.test(v6) || /^fe[89ab]/.test(v6);
}

/** Longest `start_at_ms` a card carries (ms): the longest start delay a client waits. */
export const MAX_START_AT_MS = MAX_START_DELAY_MS;

/**
 * An introduction card. `you` is the receiver's own NAT class as the server knows it (left out when nothing
 * was measured); `startAtMs` the delay after receipt at which the receiver starts probing, so that both
 * sides begin together (see {@linkcode startDelays}).
 */
export function introduction(
  peer: PeerInfo,
  candidates: string[],
  nonce: string,
  initiator: boolean,
  you?: NatClass,
  startAtMs = 0,
): Json {
  const card: { [key: string]: Json } = { peer: peer as unknown as Json, candidates, nonce, initiator };
  if (you && isMeasured(you)) card.you = { nat: natToJson(you) };
  card.start_at_ms = Math.max(0, Math.min(MAX_START_AT_MS, Math.round(startAtMs)));
  return { introduction: card };
}

/**
 * The delays of two cards sent in the same instant to peers whose round trips to us are `rttA` and `rttB`
 * (ms, 0 when unknown): the nearer one waits out the difference of the one-way times (half round trips),
 * so both start probing at about the moment the farther one gets its card.
 */
export function startDelays(rttA: number, rttB: number): [number, number] {
  const a = Math.max(0, rttA) / 2;
  const b = Math.max(0, rttB) / 2;
  const far = Math.max(a, b);
  return [Math.min(MAX_START_AT_MS, far - a), Math.min(MAX_START_AT_MS, far - b)];
}

function isObject(v: Json | undefined): v is { [key: string]: Json } {
  return v !== null && typeof v === "object" && !Array.isArray(v);
}

/** A card's `start_at_ms` read leniently: a finite number clamped to 0..{@linkcode MAX_START_AT_MS}. */
function startAtOf(v: Json | undefined): number {
  return typeof v === "number" && Number.isFinite(v) ? Math.max(0, Math.min(MAX_START_AT_MS, v)) : 0;
}

/** A punch in progress. */
interface PunchState extends Timed {
  nonce: string;
  peerId: string;
  candidates: SocketAddr[];
  keys: Set<string>;
  /** Probes each candidate may still get before it sends anything more (by address key). */
  allowance: Map<string, number>;
  initiator: boolean;
  strategy: Strategy;
  until: number;
  nextAt: number;
}

/** Introductions (server role) and punches (client role). */
export class Introductions {
  readonly #core: Core;
  readonly #send: SendPath;
  readonly #connTimers: ConnTimers;
  readonly #cluster: ClusterState;
  readonly #handshakes: Handshakes;
  readonly #disc: Discovery;
  /** Punches in progress, by nonce. */
  readonly #punches = new Map<string, PunchState>();

  /**
   * @param core The shared state.
   * @param send The send path.
   * @param connTimers Connection deadlines.
   * @param cluster The other instances' peers.
   * @param handshakes Handshakes (a punched path is shaken hands over; introduced peers are expected).
   * @param disc Discovery (a peer's entry is its introduction card).
   */
  constructor(
    core: Core,
    send: SendPath,
    connTimers: ConnTimers,
    cluster: ClusterState,
    handshakes: Handshakes,
    disc: Discovery,
  ) {
    this.#core = core;
    this.#send = send;
    this.#connTimers = connTimers;
    this.#cluster = cluster;
    this.#handshakes = handshakes;
    this.#disc = disc;
  }

  /** Punches in progress. */
  get punching(): number {
    return this.#punches.size;
  }

  /**
   * An introduction card from our server (client role): the introduced peer may now register with us
   * directly, and punching starts.
   */
  introduced(now: number, from: SocketAddr, intro: { [key: string]: Json }): Drop | undefined {
    const peer = parsePeerInfo(intro.peer as Json);
    const candidates = Array.isArray(intro.candidates) ? intro.candidates : [];
    const addrs: SocketAddr[] = [];
    for (const c of candidates.slice(0, 8)) {
      const a = typeof c === "string" ? parseSocketAddr(c) : "bad";
      if (typeof a !== "string") addrs.push(a);
    }
    if (typeof peer === "string" || typeof intro.nonce !== "string" || addrs.length === 0) {
      return drop("bad_payload", "malformed introduction");
    }
    // Both sides choose from the same two classifications: the other's (`peer.nat`) and ours as the server
    // knows it (`you.nat`); either absent is unknown, and then the punch is today's.
    const theirs = natFromJson(peer.nat);
    const mine = natFromJson(isObject(intro.you) ? intro.you.nat : undefined);
    const startAtMs = startAtOf(intro.start_at_ms);
    const strategy = chooseStrategy(mine, theirs);
    const initiator = intro.initiator === true;
    this.#core.emit({
      type: "introduced",
      from,
      peer,
      candidates: addrs,
      nonce: intro.nonce,
      initiator,
      you: mine,
      startAtMs,
      strategy,
    });
    if (strategy === "relay") {
      // No direct path can work between these two NATs: nothing is punched, the caller relays at once.
      this.#core.emit({ type: "punchFailed", peerId: peer.id, initiator, strategy });
      return undefined;
    }
    // The introduced peer may now register with us directly (a client accepts only such handshakes).
    this.#handshakes.expect(peer.id, now + INTRODUCTION_TTL_MS);
    const targets = probeTargets(strategy, theirs, addrs);
    const startAt = now + startDelay(strategy, startAtMs);
    this.#startPunch(
      now,
      { peerId: peer.id, candidates: targets, nonce: intro.nonce, initiator, strategy },
      startAt,
    );
    return undefined;
  }

  /**
   * Sends a hole-punching probe to `addr`: an unnumbered Ping carrying `{"punch": nonce}`, which the
   * introduced peer's endpoint answers with a Pong echoing it. Opens our NAT's mapping towards `addr` too.
   */
  punch(now: number, addr: SocketAddr, nonce: string): void {
    const ping = this.#core.envelope(now, "Ping", { punch: nonce }, null);
    this.#core.transmitUnchecked(addr, encodeMessage(ping, true), "Ping");
  }

  /**
   * A Ping carrying a punch nonce: wherever it comes from is a path to try too (the peer's NAT may map it to
   * an address the server never saw, or it moved).
   */
  onProbe(from: SocketAddr, nonce: string): void {
    const punch = this.#punches.get(nonce);
    const at = formatSocketAddr(from);
    if (!punch) return;
    if (punch.keys.has(at)) {
      // It probes us: 3 more probes to it for each of its own (3x what it sent).
      punch.allowance.set(at, (punch.allowance.get(at) ?? 0) + 3);
    } else if (punch.candidates.length < MAX_PUNCH_CANDIDATES) {
      punch.keys.add(at);
      punch.candidates.push({ hostname: from.hostname, port: from.port });
      punch.allowance.set(at, 3);
    }
  }

  /** A Pong echoing a punch nonce: that path works. Returns whether the nonce was ours. */
  onProbeAnswer(now: number, from: SocketAddr, nonce: string): boolean {
    const punch = this.#punches.get(nonce);
    if (!punch) return false;
    this.#punches.delete(punch.nonce);
    this.#core.timers.punches.schedule(punch, Infinity);
    const { peerId, initiator, strategy } = punch;
    this.#core.emit({ type: "punched", peerId, addr: from, initiator, strategy });
    if (punch.initiator) this.#handshakes.connect(now, from, { expectedId: punch.peerId });
    return true;
  }

  /** Runs every punch due at `now`: the next probe, or the end of its budget. */
  runPunches(now: number): void {
    for (;;) {
      const punch = this.#core.timers.punches.popDue(now) as PunchState | undefined;
      if (!punch) return;
      if (now >= punch.until) {
        this.#punches.delete(punch.nonce);
        const { peerId, initiator, strategy } = punch;
        this.#core.emit({ type: "punchFailed", peerId, initiator, strategy });
      } else {
        this.#probe(now, punch);
      }
    }
  }

  /** Forgets every punch (shutdown). */
  clear(): void {
    this.#punches.clear();
  }

  /**
   * Starts probing an introduced peer's candidates at `startAt` (now, or the shared start time): every
   * {@linkcode PUNCH_INTERVAL_MS} until the budget, which counts from the start.
   */
  #startPunch(
    now: number,
    p: { peerId: string; candidates: SocketAddr[]; nonce: string; initiator: boolean; strategy: Strategy },
    startAt: number,
  ): void {
    if (this.#punches.has(p.nonce)) return;
    if (this.#punches.size >= MAX_PUNCHES) {
      const oldest = this.#punches.values().next().value!;
      this.#punches.delete(oldest.nonce);
      this.#core.timers.punches.schedule(oldest, Infinity);
    }
    const punch: PunchState = {
      ...p,
      candidates: p.candidates.slice(0, MAX_PUNCH_CANDIDATES),
      keys: new Set(p.candidates.map(formatSocketAddr)),
      allowance: new Map(p.candidates.map((c) => [formatSocketAddr(c), PROBES_BEFORE_ANSWER])),
      until: startAt + PUNCH_BUDGET_MS,
      nextAt: startAt,
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.#punches.set(p.nonce, punch);
    if (startAt > now) this.#core.timers.punches.schedule(punch, startAt);
    else this.#probe(now, punch);
  }

  #probe(now: number, punch: PunchState): void {
    for (const c of punch.candidates) {
      const key = formatSocketAddr(c);
      const left = punch.allowance.get(key) ?? 0;
      if (left <= 0) continue; // silent so far: it gets no more until it sends something
      punch.allowance.set(key, left - 1);
      this.punch(now, c, punch.nonce);
    }
    punch.nextAt = now + PUNCH_INTERVAL_MS;
    this.#core.timers.punches.schedule(punch, punch.nextAt);
  }

  /**
   * An introduction: both peers get each other's candidates (the observed address; the declared one only behind the same NAT) and one shared
   * nonce, at the same moment, so both start punching together. Only between authenticated peers of one
   * network that speak the extensions; at most one a second per requester (bursts of 10).
   */
  introduce(dg: Datagram, conn: PeerConn, target: Json): Drop | undefined {
    const now = dg.now;
    const refuse = (why: string): Drop => {
      this.#send.reply(dg, conn, "Error", {
        error: `cannot introduce: ${why}`,
        code: ERROR_CODES.cannotIntroduce,
      });
      return { reason: "bad_payload", detail: `introduction refused: ${why}`, refused: true };
    };
    if (typeof target !== "string" || !isUuid(target)) {
      return this.#send.badRequest(dg, conn, `bad "introduce"`);
    }
    const id = target.toLowerCase();
    const other = this.#core.table.byId.get(id);
    const me = conn.peer;
    const remote = other ? undefined : this.#cluster.remote.byId.get(id);
    const found = other?.peer
      ? other !== conn && other.peer.network === me.network && other.peer.state === "authenticated"
      : remote !== undefined && remote.network === me.network;
    if (!found) return refuse(`no such peer: ${target}`);
    if (!conn.ext || !(other ? other.ext : remote!.ext)) {
      return refuse("both peers must speak p2p_server's extensions");
    }
    const x = extras(conn);
    const bucket = x.introductions ??= fullBucket(INTRODUCTION_RATE, now);
    if (!take(bucket, INTRODUCTION_RATE, now)) return refuse("too many introductions; wait a second");
    const nonce = this.#core.newId();
    const mine = this.#disc.peerInfo(conn, true);
    const otherKey = other ? other.key : remote!.observed;
    const myCandidates = candidatesOf(conn.key, me.info.listen_addr, otherKey);
    const rtt = (c: PeerConn) => c.rttSamples > 0 ? c.srtt : 0;
    if (other) {
      const [myDelay, otherDelay] = startDelays(rtt(conn), rtt(other));
      this.#send.sendReliable(
        now,
        conn,
        "DiscoveryResponse",
        introduction(
          this.#disc.peerInfo(other, true),
          candidatesOf(other.key, other.peer.info.listen_addr, conn.key),
          nonce,
          true,
          me.nat,
          myDelay,
        ),
      );
      this.#send.sendReliable(
        now,
        other,
        "DiscoveryResponse",
        introduction(mine, myCandidates, nonce, false, other.peer.nat, otherDelay),
      );
      this.#connTimers.reschedule(other);
    } else {
      // On another instance: it sends its peer our card in the same instant (one pub/sub hop later).
      const r = remote!;
      this.#send.sendReliable(
        now,
        conn,
        "DiscoveryResponse",
        introduction(
          remotePeerInfo(r, true),
          candidatesOf(r.observed, r.info.listen_addr, conn.key),
          nonce,
          true,
          me.nat,
        ),
      );
      this.#cluster.send(r.instance, {
        t: "introduce",
        target: r.id,
        peer: mine,
        candidates: myCandidates,
        nonce,
      });
    }
    this.#core.stats.introductions++;
    return undefined;
  }
}
