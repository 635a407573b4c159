/**
 * How long a registered peer's NAT keeps an idle UDP binding (issue 18), both roles, so that the server can
 * suggest a keepalive below it. The measurement needs a binding nothing else refreshes: the peer opens a
 * second, sacrificial socket S (its main socket's binding, kept open by keepalives, is never put at risk),
 * which pings the server once with a token the server handed only to the peer's proven main address. The
 * server then stays silent for the first configured gap and probes S from its main socket; S answers, which
 * also refreshes the binding outbound (RFC 4787 REQ-6), and the next, longer gap follows. A probe still
 * unanswered 1 s after its one resend ends it: the binding lived less than that gap. The result (the
 * longest gap that passed) is stored on the peer record and sent to the peer with the keepalive it implies.
 * The wire format is in docs/protocol.md ("The binding lifetime exchange").
 *
 * @module
 */
import { decodeMessage, encodeMessage, formatSocketAddr, isJsonObject, type Json } from "../wire/mod.ts";
import type { SocketAddr } from "../wire/mod.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import { adoptKeepalive, type Conn, type PeerConn } from "./peers.ts";
import type { Timed } from "./timers.ts";
import { type Datagram, type Drop, drop } from "./outcome.ts";
import { ERROR_CODES } from "./types.ts";
import { type NatClass, natFromJson, natToJson, suggestedKeepalive, UNKNOWN_NAT } from "./nat_class.ts";

/** Least time between two measurements of one peer (ms). */
export const NAT_LIFETIME_INTERVAL_MS = 600_000;
/** Most measurements under way on a server. */
export const MAX_NAT_LIFETIMES = 32;
/** How long an unanswered probe waits before its one resend, and the resend before the gap counts as failed. */
export const PROBE_WAIT_MS = 1_000;
/** How long the server waits for S's first Ping after handing out the token (ms). */
export const OPEN_WINDOW_MS = 10_000;
/** Tries of S's first Ping (client role), and the time between them (ms). */
export const OPEN_TRIES = 3;
export const OPEN_TRY_INTERVAL_MS = 1_000;
/** How long a client waits for the token, and for the server to see S open (ms). */
export const CLIENT_OPEN_TIMEOUT_MS = 5_000;
/** How many times a datagram from S other than the awaited answer may restart the current gap. */
const MAX_RESTARTS = 4;
/** The most bytes sent to S per byte received from it. */
const AMPLIFICATION = 3;
/** Most measurements a client runs at once (one per server). */
const MAX_CLIENT_LIFETIMES = 4;
/** Longest token read from the wire. */
const MAX_TOKEN = 64;
/** Most gaps a server may announce (the config allows 12). */
const MAX_GAPS = 12;

/** A measurement under way (server role). */
interface ServerLife extends Timed {
  conn: PeerConn;
  token: string;
  gaps: readonly number[];
  /** S's address as the server saw it, once S opened. */
  side: SocketAddr | null;
  sideKey: string | null;
  /** `open`: waiting for S; `wait`: a gap of silence; `probe`: a probe awaits its answer. */
  phase: "open" | "wait" | "probe";
  /** The gap being tested (its index in `gaps`). */
  seq: number;
  resent: boolean;
  passed: number | null;
  restarts: number;
  /** Bytes received from and sent to S (the probes stay within {@linkcode AMPLIFICATION} times). */
  bytesIn: number;
  bytesOut: number;
}

/** A measurement of our own binding (client role). */
interface ClientLife extends Timed {
  server: SocketAddr;
  serverKey: string;
  /** The local socket measured. */
  socket: number;
  token: string | null;
  gaps: number[];
  opened: boolean;
  openTries: number;
  answers: number;
  until: number;
}

function token(v: Json | undefined): string | null {
  return typeof v === "string" && v.length > 0 && v.length <= MAX_TOKEN ? v : null;
}

function seqOf(v: Json | undefined): number | null | "bad" {
  if (v === undefined) return null;
  return typeof v === "number" && Number.isInteger(v) && v >= 0 && v < MAX_GAPS ? v : "bad";
}

/**
 * The lifetime a measurement reports: the longest gap that passed; when even the first failed, half of it
 * (the binding lived less than the first gap).
 */
export function measuredLifetime(gaps: readonly number[], passed: number | null): number {
  return passed ?? Math.floor((gaps[0] ?? 2) / 2);
}

/** The host part of a formatted address (what follows is `:port`). */
function hostOf(key: string): string {
  return key.slice(0, key.lastIndexOf(":"));
}

/** The binding lifetime exchange, both roles. */
export class NatLifetimes {
  readonly #core: Core;
  readonly #send: SendPath;
  /** Server role: measurements under way by the peer's address key, and by token. */
  readonly #runs = new Map<string, ServerLife>();
  readonly #byToken = new Map<string, ServerLife>();
  /** Client role: our measurements, by server address key. */
  readonly #mine = new Map<string, ClientLife>();

  constructor(core: Core, send: SendPath) {
    this.#core = core;
    this.#send = send;
  }

  /** Measurements under way (server) or awaited (client). */
  get size(): number {
    return this.#runs.size + this.#mine.size;
  }

  // ------------------------------------------------------------------ server role

  /** A peer's `{"nat_lifetime": {}}` request (server role). */
  request(dg: Datagram, conn: PeerConn): Drop | undefined {
    const now = dg.now;
    const stats = this.#core.stats.natLifetimes;
    stats.requested++;
    const refuse = (code: string, why: string): Drop => {
      stats.refused++;
      this.#send.reply(dg, conn, "Error", {
        error: `nat lifetime refused: ${why}`,
        code,
        about: "nat_lifetime",
      });
      return { reason: "bad_payload", detail: `nat lifetime refused: ${why}`, refused: true };
    };
    const gaps = this.#core.config.natLifetimeGapsMs;
    if (gaps.length === 0) return refuse(ERROR_CODES.natCheckUnavailable, "this server does not measure it");
    if (!conn.ext) return refuse(ERROR_CODES.natCheckUnavailable, "the peer does not speak the extensions");
    if (conn.peer.state !== "authenticated") return refuse(ERROR_CODES.rateLimited, "not authenticated yet");
    if (this.#runs.has(conn.key)) return undefined; // one under way: its token answer is on its way already
    const last = conn.peer.natLifetimeAt;
    if (last !== undefined && now - last < NAT_LIFETIME_INTERVAL_MS) {
      return refuse(ERROR_CODES.rateLimited, "one measurement per peer every 10 minutes");
    }
    if (this.#runs.size >= MAX_NAT_LIFETIMES) {
      return refuse(ERROR_CODES.rateLimited, "too many under way; retry");
    }
    conn.peer.natLifetimeAt = now;
    const run: ServerLife = {
      conn,
      token: this.#core.newId(),
      gaps: [...gaps],
      side: null,
      sideKey: null,
      phase: "open",
      seq: 0,
      resent: false,
      passed: null,
      restarts: 0,
      bytesIn: 0,
      bytesOut: 0,
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.#runs.set(conn.key, run);
    this.#byToken.set(run.token, run);
    this.#send.sendReliable(now, conn, "DiscoveryResponse", {
      nat_lifetime: { token: run.token, gaps_ms: [...gaps] },
    });
    this.#core.timers.natLifetimes.schedule(run, now + OPEN_WINDOW_MS);
    return undefined;
  }

  /**
   * A `Ping` carrying `nat_life` (server role): S opening (`{"nat_life": token}`) or answering a probe
   * (`{"nat_life": token, "seq": n}`). Never answered with the usual Pong.
   */
  onPing(dg: Datagram, p: { [key: string]: Json }): Drop | undefined {
    const t = token(p.nat_life);
    const run = t === null ? undefined : this.#byToken.get(t);
    if (!run) return drop("nat_life_token", "nat_life with no measurement under way for its token");
    if (this.#core.table.byAddr.get(run.conn.key) !== run.conn || !run.conn.peer) {
      this.#end(run); // the peer left: its measurement ends with it
      return drop("nat_life_token", "nat_life for a peer that left");
    }
    const seq = seqOf(p.seq);
    if (seq === "bad") return drop("bad_payload", "nat_life with a bad seq");
    if (run.side === null) {
      // S opens. The token went only to the peer's main address; S must be another socket of the same host
      // (the same public IP), so probes only ever go to the peer's proven IP address.
      if (seq !== null) return drop("nat_life_token", "nat_life answer before the socket opened");
      if (dg.key === run.conn.key || hostOf(dg.key) !== hostOf(run.conn.key)) {
        return drop("nat_life_address", "nat_life open not from another port of the peer's address");
      }
      run.side = { hostname: dg.from.hostname, port: dg.from.port };
      run.sideKey = dg.key;
      run.bytesIn += dg.size;
      this.#core.stats.natLifetimes.opened++;
      this.#send.sendReliable(dg.now, run.conn, "DiscoveryResponse", {
        nat_lifetime: { token: run.token, opened: dg.key },
      });
      this.#wait(dg.now, run);
      return undefined;
    }
    if (dg.key !== run.sideKey) return drop("nat_life_address", "nat_life from another address than S");
    run.bytesIn += dg.size;
    if (run.phase === "probe" && seq === run.seq) {
      this.#core.stats.natLifetimes.answered++;
      run.passed = run.gaps[run.seq]!;
      run.seq++;
      if (run.seq >= run.gaps.length) this.#finish(dg.now, run, null);
      else this.#wait(dg.now, run);
      return undefined;
    }
    // Anything else from S (a repeated open, a late copy of an answer) refreshed the binding later than the
    // gap under way assumes: that gap starts again from now, a few times at most.
    if (++run.restarts > MAX_RESTARTS) this.#finish(dg.now, run, null);
    else this.#wait(dg.now, run);
    return drop("nat_life_repeat", "nat_life repeated");
  }

  /** Starts the silence of the gap under way. */
  #wait(now: number, run: ServerLife): void {
    run.phase = "wait";
    run.resent = false;
    this.#core.timers.natLifetimes.schedule(run, now + run.gaps[run.seq]!);
  }

  /** Sends (or resends) the probe of the gap under way, within the bytes S sent. */
  #probe(now: number, run: ServerLife): boolean {
    const core = this.#core;
    const pong = core.envelope(now, "Pong", { nat_life: run.token, seq: run.seq }, null);
    const bytes = encodeMessage(pong, true);
    if (run.bytesOut + bytes.length > AMPLIFICATION * run.bytesIn) return false;
    run.bytesOut += bytes.length;
    core.transmitUnchecked(run.side!, bytes, "Pong");
    core.stats.natLifetimes.probes++;
    run.phase = "probe";
    core.timers.natLifetimes.schedule(run, now + PROBE_WAIT_MS);
    return true;
  }

  #finish(now: number, run: ServerLife, failed: number | null): void {
    this.#end(run);
    const conn = run.conn;
    const stats = this.#core.stats.natLifetimes;
    if (this.#core.table.byAddr.get(conn.key) !== conn || !conn.peer) return; // it left meanwhile
    const lifetime = measuredLifetime(run.gaps, run.passed);
    const nat: NatClass = { ...(conn.peer.nat ?? UNKNOWN_NAT), bindingLifetimeMs: lifetime };
    conn.peer.nat = nat;
    const keepalive = suggestedKeepalive(nat, this.#core.config.suggestedKeepalive);
    this.#send.sendReliable(now, conn, "DiscoveryResponse", {
      nat: natToJson(nat),
      suggested_keepalive: keepalive,
      nat_lifetime: { token: run.token, passed_ms: run.passed, failed_ms: failed },
    });
    stats.completed++;
    if (failed !== null) stats.expired++;
    this.#core.emit({
      type: "natLifetime",
      from: conn.addr,
      peerId: conn.peer.info.id,
      peer: conn.peer.state === "authenticated" ? this.#core.summary(conn, conn.peer) : null,
      nat,
      suggestedKeepalive: keepalive,
      passedMs: run.passed,
      failedMs: failed,
      socket: -1,
      reason: null,
    });
  }

  #end(run: ServerLife): void {
    this.#runs.delete(run.conn.key);
    this.#byToken.delete(run.token);
    this.#core.timers.natLifetimes.schedule(run, Infinity);
  }

  #step(now: number, run: ServerLife): void {
    if (this.#core.table.byAddr.get(run.conn.key) !== run.conn) return this.#end(run); // the peer left
    if (run.phase === "open") return this.#end(run); // S never opened: nothing measured, nothing to say
    if (run.phase === "wait") {
      if (!this.#probe(now, run)) this.#finish(now, run, null);
      return;
    }
    if (!run.resent) {
      run.resent = true;
      if (this.#probe(now, run)) {
        this.#core.stats.natLifetimes.resent++;
        return;
      }
    }
    this.#finish(now, run, run.gaps[run.seq]!);
  }

  // ------------------------------------------------------------------ client role

  /**
   * Asks the server at `to` to measure our binding lifetime through local socket `socket`, which the shell
   * bound for it alone (client role): the outcome is a `natLifetime` event, after which the shell may close
   * the socket.
   */
  ask(now: number, to: Conn, socket: number): void {
    const key = to.key;
    if (this.#mine.has(key)) return;
    if (this.#mine.size >= MAX_CLIENT_LIFETIMES) {
      this.#settle(this.#mine.values().next().value!, UNKNOWN_NAT, null, null, null, "timeout");
    }
    const life: ClientLife = {
      server: to.addr,
      serverKey: key,
      socket,
      token: null,
      gaps: [],
      opened: false,
      openTries: 0,
      answers: 0,
      until: now + CLIENT_OPEN_TIMEOUT_MS,
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.#mine.set(key, life);
    this.#core.timers.natLifetimes.schedule(life, life.until);
    this.#send.sendReliable(now, to, "DiscoveryRequest", { nat_lifetime: {} });
  }

  /** A DiscoveryResponse carrying `nat_lifetime` from our server: the token, S seen open, or the result. */
  onAnswer(now: number, from: SocketAddr, p: { [key: string]: Json }): Drop | undefined {
    const life = this.#mine.get(formatSocketAddr(from));
    const info = p.nat_lifetime;
    if (!life || !isJsonObject(info)) return drop("unexpected", "nat lifetime answer nobody asked for");
    const t = token(info.token);
    if (t === null) return drop("bad_payload", "malformed nat_lifetime answer");
    if (life.token === null) {
      const gaps = info.gaps_ms;
      if (
        !Array.isArray(gaps) || gaps.length === 0 || gaps.length > MAX_GAPS ||
        !gaps.every((g) => typeof g === "number" && Number.isInteger(g) && g >= 1 && g <= 600_000)
      ) return drop("bad_payload", "nat_lifetime answer without its gaps");
      life.token = t;
      life.gaps = gaps as number[];
      this.#open(now, life);
      return undefined;
    }
    if (t !== life.token) return drop("nat_life_token", "nat_lifetime answer for another token");
    if (p.nat !== undefined) {
      const k = p.suggested_keepalive;
      const keepalive = typeof k === "number" && Number.isInteger(k) && k >= 1 ? k : null;
      const conn = this.#core.table.byAddr.get(life.serverKey);
      if (conn && keepalive !== null) adoptKeepalive(conn, now, keepalive, this.#core.heartbeatMs);
      const ms = (v: Json | undefined) => typeof v === "number" && Number.isInteger(v) && v > 0 ? v : null;
      this.#settle(life, natFromJson(p.nat), keepalive, ms(info.passed_ms), ms(info.failed_ms), null);
      return undefined;
    }
    if (info.opened !== undefined) this.#opened(life);
    return undefined;
  }

  /**
   * A datagram on a socket we measure through (client role): a probe from our server is answered from that
   * socket; anything else is dropped.
   */
  onSide(now: number, from: SocketAddr, key: string, bytes: Uint8Array, socket: number): void {
    const core = this.#core;
    let life: ClientLife | undefined;
    for (const l of this.#mine.values()) if (l.socket === socket) life = l;
    let msg;
    try {
      msg = decodeMessage(bytes);
    } catch {
      msg = null;
    }
    const p = msg?.payload;
    if (!life || key !== life.serverKey || msg?.message_type !== "Pong" || !isJsonObject(p)) {
      core.drop(
        from,
        key,
        "nat_life_token",
        "a datagram on a measured socket that is not our server's probe",
      );
      return;
    }
    const seq = seqOf(p.seq);
    if (life.token === null || token(p.nat_life) !== life.token || typeof seq !== "number") {
      core.drop(from, key, "nat_life_token", "a probe with no matching token");
      return;
    }
    if (life.answers >= 2 * life.gaps.length + 2) {
      core.drop(from, key, "nat_life_repeat", "probes answered enough");
      return;
    }
    this.#opened(life);
    life.answers++;
    core.stats.processed++;
    const ping = core.envelope(now, "Ping", { nat_life: life.token, seq }, null);
    core.transmitUnchecked(life.server, encodeMessage(ping, true), "Ping", socket);
  }

  /** An Error from a server we wait for, about this exchange: `nat_check_unavailable` or `rate_limited`. */
  onError(from: SocketAddr, code: string | undefined): void {
    const life = this.#mine.get(formatSocketAddr(from));
    if (!life) return;
    if (code === ERROR_CODES.natCheckUnavailable) {
      this.#settle(life, UNKNOWN_NAT, null, null, null, "unavailable");
    } else if (code === ERROR_CODES.rateLimited) {
      this.#settle(life, UNKNOWN_NAT, null, null, null, "rate_limited");
    }
  }

  /** S's first Ping (and its tries until the server says S opened). */
  #open(now: number, life: ClientLife): void {
    life.openTries++;
    const ping = this.#core.envelope(now, "Ping", { nat_life: life.token! }, null);
    this.#core.transmitUnchecked(life.server, encodeMessage(ping, true), "Ping", life.socket);
    const next = life.openTries < OPEN_TRIES ? now + OPEN_TRY_INTERVAL_MS : life.until;
    this.#core.timers.natLifetimes.schedule(life, Math.min(next, life.until));
  }

  /** The server saw S open: from now on we wait for the gaps (each may take 2 s of probing, or restart). */
  #opened(life: ClientLife): void {
    if (life.opened) return;
    life.opened = true;
    const total = life.gaps.reduce((a, b) => a + b, 0);
    life.until += total + (2 * PROBE_WAIT_MS + MAX_RESTARTS * 1_000) * life.gaps.length + 10_000;
    this.#core.timers.natLifetimes.schedule(life, life.until);
  }

  #settle(
    life: ClientLife,
    nat: NatClass,
    keepalive: number | null,
    passedMs: number | null,
    failedMs: number | null,
    reason: "unavailable" | "rate_limited" | "timeout" | null,
  ): void {
    this.#mine.delete(life.serverKey);
    this.#core.timers.natLifetimes.schedule(life, Infinity);
    this.#core.emit({
      type: "natLifetime",
      from: life.server,
      peerId: null,
      peer: null,
      nat,
      suggestedKeepalive: keepalive,
      passedMs,
      failedMs,
      socket: life.socket,
      reason,
    });
  }

  // ------------------------------------------------------------------ both

  /** Runs every step due at `now`: the next probe, a resend, the end of a measurement; S's open tries. */
  run(now: number): void {
    for (;;) {
      const due = this.#core.timers.natLifetimes.popDue(now) as ServerLife | ClientLife | undefined;
      if (!due) return;
      if ("serverKey" in due) {
        if (now >= due.until) this.#settle(due, UNKNOWN_NAT, null, null, null, "timeout");
        else if (!due.opened && due.token !== null && due.openTries < OPEN_TRIES) this.#open(now, due);
        else this.#core.timers.natLifetimes.schedule(due, due.until);
      } else this.#step(now, due);
    }
  }

  /** Forgets every measurement (shutdown). */
  clear(): void {
    this.#runs.clear();
    this.#byToken.clear();
    this.#mine.clear();
  }
}
