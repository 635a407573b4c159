/**
 * A connection's deadlines: what runs when one is due (retransmissions, give-ups, half-open and idle
 * timeouts, heartbeats, and the receive side's gap reports and expiries) and the earliest of them filed in
 * the timer table's connection lane.
 *
 * @module
 */
import { type Conn, releaseOutbox } from "./peers.ts";
import type { Pending } from "./reliability.ts";
import type { GiveUpReason } from "./stats.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import type { Lifecycle } from "./lifecycle.ts";
import type { Streams } from "./streams.ts";

/** Told when a reliable message is given up (a relayed copy's sender then learns it was not delivered). */
export type GivenUp = (now: number, conn: Conn, id: string) => void;

/** The timers of connections. */
export class ConnTimers {
  readonly #core: Core;
  readonly #send: SendPath;
  readonly #life: Lifecycle;
  readonly #streams: Streams;
  readonly #relayGivenUp: GivenUp;

  /**
   * @param core The shared state.
   * @param send The send path.
   * @param life Peer and link state changes.
   * @param streams The receive side's timers.
   * @param relayGivenUp Told of each message given up.
   */
  constructor(core: Core, send: SendPath, life: Lifecycle, streams: Streams, relayGivenUp: GivenUp) {
    this.#core = core;
    this.#send = send;
    this.#life = life;
    this.#streams = streams;
    this.#relayGivenUp = relayGivenUp;
  }

  /**
   * Runs a connection's due timers: retransmissions and give-ups, half-open expiry, the send queue, gap
   * reports, reassembly and ordered-delivery expiry, the idle timeout and the heartbeat.
   */
  runTimers(now: number, conn: Conn): void {
    for (const p of conn.outbox.due(now)) {
      const exhausted = p.schedule ? p.tries >= p.schedule.length : now >= p.giveUpAt;
      if (!exhausted) {
        p.tries++;
        p.lastSentAt = now;
        p.nextAt = Math.min(now + this.#send.wait(conn, p), p.giveUpAt);
        this.#core.stats.retransmissions++;
        this.#send.resend(conn, p.bytes, p.type);
        // A client reports each retry (its user may want to see them); a server, with many peers, does not.
        if (this.#core.role === "client") {
          this.#core.emit({ type: "retry", to: conn.addr, messageType: p.type, tries: p.tries });
        }
        continue;
      }
      conn.outbox.remove(p.id);
      const reason: GiveUpReason = p.schedule ? "tries" : "deadline";
      if (p.type === "HandshakeRequest" && conn.link?.state === "handshaking") {
        // A sibling probe nothing answered is routine (most ports of the range are empty): counted as such,
        // not as a give-up.
        if (conn.link.probe) this.#core.stats.siblingProbes.unanswered++;
        else this.#send.gaveUp(conn, p.id, p.seq, p.type, p.tries, reason);
        this.#life.failLink(conn, `connection timeout to ${conn.key}`, "timeout");
        if (!conn.link) return;
        continue;
      }
      this.giveUp(now, conn, p, reason);
    }
    if (!conn.peer && !conn.link) return;
    if (conn.peer?.state === "handshaking" && now - conn.peer.joinedAt >= this.#core.halfOpenMs) {
      // Never confirmed: a spoofed source, or a peer that vanished right after asking.
      this.#core.stats.halfOpenExpired++;
      this.#life.removePeer(conn, "timeout");
      if (!conn.link) {
        this.#life.forget(conn);
        return;
      }
    }
    this.#send.pump(now, conn);
    const x = conn.x;
    if (x) this.#streams.runExtraTimers(now, conn, x);
    if (now - conn.lastHeard >= this.#core.timeoutMs) {
      if (conn.peer) {
        this.#core.stats.timeouts++;
        this.#life.removePeer(conn, "timeout");
      }
      if (conn.link?.state === "handshaking") {
        this.#life.failLink(conn, `connection timeout to ${conn.key}`, "timeout");
      } else if (conn.link) {
        this.#life.closeLink(conn, "timeout");
      }
      this.#life.forget(conn);
      return;
    }
    if (now >= conn.heartbeatAt) {
      this.#send.sendPlain(now, conn, "Ping", null);
      conn.heartbeatAt = now + (conn.link?.keepaliveMs ?? this.#core.heartbeatMs);
    }
  }

  /** Files the connection's earliest deadline in the timer table (call after anything that may move it). */
  reschedule(conn: Conn): void {
    releaseOutbox(conn);
    let at = conn.outbox.nextDeadline();
    if (conn.peer || conn.link) {
      if (conn.heartbeatAt < at) at = conn.heartbeatAt;
      const idle = conn.lastHeard + this.#core.timeoutMs;
      if (idle < at) at = idle;
      if (conn.peer?.state === "handshaking") {
        const halfOpen = conn.peer.joinedAt + this.#core.halfOpenMs;
        if (halfOpen < at) at = halfOpen;
      }
      const x = conn.x;
      if (x) {
        if (x.nackAt < at) at = x.nackAt;
        const lifetime = this.#core.deliveryMs;
        const expiry = x.reassembly ? x.reassembly.nextExpiry(lifetime) : Infinity;
        if (expiry < at) at = expiry;
        const stall = x.ordered ? x.ordered.stalledSince + lifetime : Infinity;
        if (stall < at) at = stall;
      }
    }
    this.#core.timers.conns.schedule(conn, at);
  }

  /** A reliable message (or a whole fragmented one) is given up: the event, the counter, the cleanup. */
  giveUp(now: number, conn: Conn, p: Pending, reason: GiveUpReason): void {
    const parent = p.parent;
    if (parent === null) {
      this.#relayGivenUp(now, conn, p.id);
      if (p.ord !== null) this.#streams.rememberGone(conn, p.rel, p.ord);
      this.#send.gaveUp(conn, p.id, p.seq, p.type, p.tries, reason);
      return;
    }
    const x = conn.x;
    const whole = x?.fragmented?.get(parent);
    if (!x || !whole) return;
    x.fragmented!.delete(parent);
    for (const other of conn.outbox.byParent(parent)) {
      conn.outbox.remove(other.id);
      if (whole.ord !== null) this.#streams.rememberGone(conn, other.rel, whole.ord);
    }
    x.queue?.removeWhere((item) => item.frag?.of === parent);
    if (whole.ord !== null) this.#streams.rememberGone(conn, p.rel, whole.ord);
    this.#send.gaveUp(conn, parent, p.seq, whole.type, p.tries, reason);
  }
}
