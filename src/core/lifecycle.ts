/**
 * The life of peers and links on a connection: a peer confirmed (its handshake proved), a peer removed, a
 * link closed or failed, and a connection forgotten once neither is left, with whatever was in flight on it
 * reported as given up.
 *
 * @module
 */
import type { MessageType } from "../wire/mod.ts";
import { type Conn, recordingWindow, releaseAnswers, restartWindow } from "./peers.ts";
import type { Message } from "../wire/mod.ts";
import type { Core } from "./context.ts";
import type { Sessions } from "./sessions.ts";
import type { SendPath } from "./send.ts";
import type { LeaveReason } from "./types.ts";

/** State changes of peers and links. */
export class Lifecycle {
  readonly #core: Core;
  readonly #sessions: Sessions;
  readonly #send: SendPath;

  /**
   * @param core The shared state.
   * @param sessions Keys of authenticated sessions (ended with their connection).
   * @param send The send path (what was in flight is reported given up through it).
   */
  constructor(core: Core, sessions: Sessions, send: SendPath) {
    this.#core = core;
    this.#sessions = sessions;
    this.#send = send;
  }

  authenticate(now: number, conn: Conn): void {
    const peer = conn.peer;
    if (peer?.state !== "handshaking") return;
    this.#core.table.authenticate(conn);
    // A peer without the extensions never acks (deployed clients): its later message is taken as proof that
    // it received the response, for compatibility, so it joins; but a spoofer can fake that message, so it
    // has not proven its address: until it does (naming our response, see #proof), everything sent to it
    // stays within 3x what its IP sent (admission.ts).
    // Whatever confirmed it (the Ack, or a later message that overtook the Ack) times the round trip.
    this.#send.settled(now, conn, conn.outbox.settleType("HandshakeResponse"));
    this.#core.stats.handshakesOk++;
    this.#core.stats.handshakeDuration(now - peer.joinedAt);
    this.#core.emit({ type: "peerJoined", peer: this.#core.summary(conn, peer) });
  }

  /** Unregisters the peer on `conn`; `peerLeft` is reported only for peers that had joined. */
  removePeer(conn: Conn, reason: LeaveReason): void {
    const peer = this.#core.table.unregister(conn);
    if (!peer) return;
    if (!conn.link) {
      this.dropStreams(conn);
      this.#sessions.endSession(conn);
    }
    if (peer.state === "authenticated") {
      this.#core.emit({ type: "peerLeft", peer: this.#core.summary(conn, peer), reason });
    }
  }

  closeLink(conn: Conn, reason: "disconnect" | "timeout" | "closed" | null): void {
    const link = conn.link;
    if (!link) return;
    conn.link = null;
    if (!conn.peer) this.dropStreams(conn);
    if (link.state === "handshaking") this.#core.linkCounts.handshaking--;
    else this.#core.linkCounts.connected--;
    if (reason !== null && link.state === "connected") {
      this.#core.emit({ type: "linkClosed", addr: conn.addr, reason });
    }
  }

  failLink(conn: Conn, error: string, code: string): void {
    const probe = conn.link?.probe ?? false;
    this.closeLink(conn, null);
    this.#core.emit({ type: "connectFailed", addr: conn.addr, error, code, probe });
    this.forget(conn);
  }

  /** Forgets everything in flight on a connection nobody uses any more (no events). */
  dropStreams(conn: Conn): void {
    // What was in flight will never be delivered now: say so, once per message.
    const told = new Set<string>();
    const closed = (id: string, seq: number, type: MessageType, tries: number) => {
      if (told.has(id)) return;
      told.add(id);
      this.#send.gaveUp(conn, id, seq, type, tries, "closed");
    };
    const x = conn.x;
    for (const p of conn.outbox.drain()) {
      const whole = p.parent === null ? undefined : x?.fragmented?.get(p.parent);
      closed(p.parent ?? p.id, p.seq, whole?.type ?? p.type, p.tries);
    }
    if (!x) return;
    for (const item of x.queue?.removeWhere(() => true) ?? []) {
      const whole = item.frag ? x.fragmented?.get(item.frag.of) : undefined;
      closed(item.frag?.of ?? item.id, 0, whole?.type ?? item.type, 0);
    }
    x.reassembly?.clear();
    x.ordered?.reset();
    conn.x = null;
  }

  /** Drops the connection when neither a peer nor a link is left on it. */
  forget(conn: Conn): void {
    if (conn.peer || conn.link) return;
    this.#sessions.endSession(conn);
    this.#core.table.close(conn);
    this.#core.unprove(conn);
    releaseAnswers(conn, this.#core.answerBudget);
    this.#core.timers.conns.forget(conn);
    this.#core.closed(conn.key);
  }

  /** The remote starts a new session: forget its stream state; our ordered numbering restarts too. */
  newSession(conn: Conn, request: Message | null): void {
    const num = request?.rel ?? request?.sequence_number ?? null;
    const reliable = request?.requires_ack === true && num !== null;
    restartWindow(conn, reliable && request.rel === undefined ? num : null);
    conn.relWindow?.reset();
    // Answers of the old session's requests: a repeat of a new request with the same number must not get them.
    releaseAnswers(conn, this.#core.answerBudget);
    const x = conn.x;
    if (x) {
      x.reassembly?.clear();
      x.ordered?.reset();
      x.missing = null;
      x.nackAt = Infinity;
      x.ordNext = 1;
    }
    if (reliable && request.rel !== undefined) recordingWindow(conn, request.rel).accept(num);
  }

  /** An Ack or a confirming Ping named `id`: when that is our HandshakeResponse, the address is proven. */
  proof(conn: Conn, id: string): void {
    const responseId = conn.peer?.responseId;
    if (responseId !== undefined && id.toLowerCase() === responseId) {
      this.#core.validate(conn);
      // Proven: the id has done its work, and an idle peer need not keep it.
      conn.peer!.responseId = undefined;
    }
  }
}
