/**
 * The control messages: Ping and Pong (liveness, confirmations, punch probes, observed addresses), Ack
 * (settling what awaits it, fragments included), Error (refusals of our handshake, cookie challenges,
 * links the remote forgot) and Disconnect.
 *
 * @module
 */
import { isJsonObject, type Json, type Message, parseErrorPayload, type SocketAddr } from "../wire/mod.ts";
import { type Conn, hasLink, outboxOf } from "./peers.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { Relay } from "./relay.ts";
import type { Handshakes } from "./handshake.ts";
import type { Introductions } from "./introductions.ts";
import type { NatChecks } from "./nat_check.ts";
import type { NatLifetimes } from "./nat_lifetime.ts";
import { type Datagram, type Drop, drop, type Outcome } from "./outcome.ts";
import { ERROR_CODES } from "./types.ts";

/** Cookie challenges one handshake answers before it fails with `cookie_required`. */
const MAX_COOKIE_TRIES = 3;

/** Ping, Pong, Ack, Error and Disconnect. */
export class Control {
  readonly #core: Core;
  readonly #send: SendPath;
  readonly #life: Lifecycle;
  readonly #relay: Relay;
  readonly #hs: Handshakes;
  readonly #intro: Introductions;
  readonly #nat: NatChecks;
  readonly #lifetime: NatLifetimes;

  /**
   * @param core The shared state.
   * @param send The send path.
   * @param life Peer and link state changes.
   * @param relay Relayed Data (an Ack of a relayed copy settles its sender's message).
   * @param hs Handshakes (a cookie challenge repeats ours).
   * @param intro Punches (probes and their answers).
   * @param nat The NAT classification exchange (its probes, reports and mapping answers).
   * @param lifetime The binding lifetime exchange (the sacrificial socket's Pings).
   */
  constructor(
    core: Core,
    send: SendPath,
    life: Lifecycle,
    relay: Relay,
    hs: Handshakes,
    intro: Introductions,
    nat: NatChecks,
    lifetime: NatLifetimes,
  ) {
    this.#nat = nat;
    this.#lifetime = lifetime;
    this.#core = core;
    this.#send = send;
    this.#life = life;
    this.#relay = relay;
    this.#hs = hs;
    this.#intro = intro;
  }

  /** A Ping: answered with a Pong (a punch probe, a path challenge and a confirmation are noted first). */
  onPing(dg: Datagram, conn: Conn | undefined, msg: Message): Outcome {
    const p = msg.payload;
    if (isJsonObject(p)) {
      // The classification's Pings are never answered: a client's answer to a filtering probe would open
      // its own filter, and a report needs none.
      if (p.nat_probe !== undefined) {
        return this.#core.role === "client" ? this.#nat.onProbe(dg, p) : drop("unexpected", "nat_probe");
      }
      if (p.nat_life !== undefined) {
        return this.#core.role === "server" ? this.#lifetime.onPing(dg, p) : drop("unexpected", "nat_life");
      }
      if (p.nat_seen !== undefined) {
        return this.#core.role === "server" ? this.#nat.onSeen(conn, p) : drop("unexpected", "nat_seen");
      }
      if (typeof p.punch === "string") this.#intro.onProbe(dg.from, p.punch);
      if (conn && typeof p.confirm === "string") this.#life.proof(conn, p.confirm);
    }
    this.#send.reply(dg, conn, "Pong", pongPayload(p, conn?.ext ? conn.key : null));
    return undefined;
  }

  /** A Pong: it settles our Ping, reports our observed address, or answers a punch probe. */
  onPong(dg: Datagram, conn: Conn | undefined, msg: Message): Outcome {
    const { now, from } = dg;
    const p = msg.payload;
    if (conn) this.#send.settled(now, conn, conn.outbox.settleType("Ping"));
    if (conn?.link && isJsonObject(p) && typeof p.observed_addr === "string") {
      conn.link.observedAddr = p.observed_addr.slice(0, 64);
    }
    this.#core.emit({ type: "pong", from, payload: p, message: msg });
    if (isJsonObject(p) && typeof p.punch === "string") {
      this.#intro.onProbeAnswer(now, from, p.punch);
      return undefined;
    }
    if (isJsonObject(p) && p.nat_map !== undefined) {
      this.#nat.onMapAnswer(from, p);
      return undefined;
    }
    if (conn?.link?.state === "connected" && conn.ext && msg.sequence_number === null && !conn.peer) {
      // p2p_server numbers every reply on a connection: an unnumbered Pong is a stateless one, so the
      // remote no longer knows us (restart, timeout, or our address changed under a NAT).
      this.#life.closeLink(conn, "disconnect");
      this.#life.forget(conn);
    }
    return undefined;
  }

  /** An Ack: settles the message it names (and, for fragments, the whole message once all are acked). */
  onAck(now: number, conn: Conn | undefined, msg: Message): Drop | undefined {
    if (!conn) return drop("unexpected", "Ack from an unknown address");
    const ackFor = msg.ack_for ?? msg.sequence_number;
    if (ackFor === null) return drop("bad_payload", "Ack names no message");
    if (typeof ackFor === "string") this.#life.proof(conn, ackFor);
    const pending = conn.outbox.acknowledge(ackFor);
    if (!pending) {
      // A late or repeated Ack; from a handshaking peer it still proves the peer is there.
      if (conn.peer?.state === "handshaking") this.#life.authenticate(now, conn);
      return undefined;
    }
    this.#core.stats.acksReceived++;
    this.#send.settled(now, conn, pending);
    if (pending.type === "HandshakeRequest" && conn.link?.state === "handshaking") {
      // Only the HandshakeResponse settles a handshake: keep asking until it comes (a repeated request makes
      // the remote resend its response) or the handshake deadline passes.
      outboxOf(conn).add(pending);
      return undefined;
    }
    const rttMs = now - pending.firstSentAt;
    const parent = pending.parent;
    if (parent === null) {
      this.#relay.relayDone(now, conn, pending.id, true);
      this.#core.emit({
        type: "delivered",
        to: conn.addr,
        id: pending.id,
        seq: pending.seq,
        messageType: pending.type,
        rttMs,
      });
    } else {
      const fragmented = conn.x?.fragmented;
      const whole = fragmented?.get(parent);
      if (fragmented && whole && --whole.remaining === 0) {
        fragmented.delete(parent);
        this.#core.emit({
          type: "delivered",
          to: conn.addr,
          id: parent,
          seq: pending.seq,
          messageType: whole.type,
          rttMs: now - whole.startedAt,
        });
      }
    }
    if (conn.peer?.state === "handshaking") this.#life.authenticate(now, conn);
    this.#send.pump(now, conn);
    return undefined;
  }

  /** An Error: a refusal of our handshake (or a cookie challenge), else an `error` event. */
  onError(now: number, from: SocketAddr, conn: Conn | undefined, msg: Message): Drop | undefined {
    const error = parseErrorPayload(msg.payload);
    const link = conn?.link;
    if (hasLink(conn) && link?.state === "handshaking") {
      const p = msg.payload;
      const cookie = isJsonObject(p) && typeof p.cookie === "string" ? p.cookie : null;
      if (error.code === ERROR_CODES.cookieRequired && cookie && (link.cookieTries ?? 0) < MAX_COOKIE_TRIES) {
        // A busy server asks for proof that we receive here: repeat the request with its cookie.
        link.cookie = cookie;
        link.cookieTries = (link.cookieTries ?? 0) + 1;
        conn.outbox.settleType("HandshakeRequest");
        this.#hs.repeatRequest(now, conn);
        return undefined;
      }
      conn.outbox.settleType("HandshakeRequest");
      this.#life.failLink(conn, error.error, error.code ?? "refused");
      return undefined;
    }
    this.#core.emit({ type: "error", from, error, message: msg });
    if (conn?.link) {
      const p = msg.payload;
      if (isJsonObject(p) && p.about === "nat_lifetime") this.#lifetime.onError(from, error.code);
      else this.#nat.onError(from, error.code);
    }
    if (conn?.link?.state === "connected" && error.code === ERROR_CODES.notRegistered && !conn.peer) {
      // The remote no longer knows us (it restarted, timed us out, or our address changed under a NAT):
      // the link is gone; what was in flight on it is dropped with it.
      this.#life.closeLink(conn, "disconnect");
      this.#life.forget(conn);
    }
    return undefined;
  }

  /** A Disconnect: the peer and link at that address leave. */
  onDisconnect(conn: Conn | undefined): Drop | undefined {
    if (!conn || (!conn.peer && !conn.link)) {
      return drop("not_registered", "Disconnect from an unknown address");
    }
    if (conn.peer) {
      this.#core.stats.disconnects++;
      this.#life.removePeer(conn, "disconnect");
    }
    if (conn.link) this.#life.closeLink(conn, "disconnect");
    this.#life.forget(conn);
    return undefined;
  }
}

/** A Pong echoes a Ping's `nonce` (our client matches replies by it); otherwise its payload is null. */
/** The longest `nonce` a Pong echoes (as a string's length): a Pong never grows with its Ping. */
export const MAX_ECHOED_NONCE = 64;

/** Whether a Ping's `nonce` is echoed: a string of at most {@linkcode MAX_ECHOED_NONCE} characters, or a number. */
function smallNonce(nonce: Json | undefined): nonce is string | number {
  return (typeof nonce === "string" && nonce.length <= MAX_ECHOED_NONCE) ||
    (typeof nonce === "number" && Number.isFinite(nonce));
}

function pongPayload(ping: Json, observed: string | null): Json {
  const out: { [key: string]: Json } = {};
  if (isJsonObject(ping)) {
    // A path check (a server asking whether we receive at a new address) is answered by naming its nonce.
    if (typeof ping.path_challenge === "string") out.path_response = ping.path_challenge;
    else if (smallNonce(ping.nonce)) out.nonce = ping.nonce;
    // A punch probe from an introduced peer: echo its nonce, so it knows this path works.
    if (typeof ping.punch === "string" && ping.punch.length <= 64) out.punch = ping.punch;
  }
  // To a peer with the extensions: its address as seen here (deployed peers get the spec's payload).
  if (observed !== null) out.observed_addr = observed;
  return Object.keys(out).length > 0 ? out : null;
}
