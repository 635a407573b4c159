/**
 * Data and its relay: Data delivered to a client, echoed by a server, or routed to the peer it names, here
 * or on another instance of the cluster. Routed Data from a sender with the extensions goes end to end: the
 * sender's Ack waits for the recipient's, and failure is an `undeliverable` Error naming the message. Each
 * sender has a relay quota (messages and bytes a minute).
 *
 * @module
 */
import { isJsonObject, type Json, type Message } from "../wire/mod.ts";
import { isUuid } from "../deps/uuid.ts";
import { type Conn, extras, recordingWindow, type RelayEntry, type RelaySender } from "./peers.ts";
import { fullBucket, take, takeMany } from "./limits.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import type { ConnTimers } from "./conn_timers.ts";
import { CLUSTER_RELAY_GRACE_MS, type ClusterState } from "./cluster_state.ts";
import { type Datagram, drop, type Outcome } from "./outcome.ts";
import { ERROR_CODES } from "./types.ts";

/** Most routed messages tracked per peer for end-to-end relaying (each direction). */
const MAX_RELAYS_TRACKED = 1_024;

/** Encoded size of a JSON value in bytes. */
export function jsonBytes(value: unknown): number {
  const text = JSON.stringify(value);
  return NON_ASCII.test(text) ? utf8.encode(text).length : text.length;
}

const NON_ASCII = /[^ -~\t\n\r]/; // anything outside printable ASCII
const utf8 = new TextEncoder();

/** Data, echoes and routing. */
export class Relay {
  readonly #core: Core;
  readonly #send: SendPath;
  readonly #connTimers: ConnTimers;
  readonly #cluster: ClusterState;

  /**
   * @param core The shared state.
   * @param send The send path.
   * @param connTimers Connection deadlines (a relayed copy moves its recipient's).
   * @param cluster The other instances' peers, and the way to them.
   */
  constructor(core: Core, send: SendPath, connTimers: ConnTimers, cluster: ClusterState) {
    this.#core = core;
    this.#send = send;
    this.#connTimers = connTimers;
    this.#cluster = cluster;
  }

  /** Remembers whom to tell when the copy `copyId` relayed to `target` is acknowledged or given up (bounded). */
  forwarding(target: Conn, copyId: string, sender: RelaySender, originalId: string): void {
    const forwarded = extras(target).forwarded ??= new Map();
    if (forwarded.size >= MAX_RELAYS_TRACKED) forwarded.delete(forwarded.keys().next().value!);
    forwarded.set(copyId, { sender, originalId });
  }

  /**
   * Data: to a client, delivered; to a server, echoed back, or routed to the peer it names (here or on
   * another instance), end to end for senders with the extensions (their Ack waits for the recipient's).
   */
  onData(dg: Datagram, conn: Conn | undefined, msg: Message): Outcome {
    const { now, from } = dg;
    if (conn?.link?.state === "connected") {
      // We registered with the sender: it delivers data to us (routed Data, server pushes, echoes).
      const p = msg.payload;
      const fromId = isJsonObject(p) && typeof p.from === "string" ? p.from : null;
      this.#core.emit({ type: "data", from, fromId, to: null, payload: p, message: msg });
      return undefined;
    }
    const peer = conn?.peer;
    if (!conn || !peer) {
      if (this.#core.role !== "server") return drop("not_registered", "Data from an unknown address");
      return this.#send.notRegistered(dg, "Data");
    }
    if (this.#core.role !== "server") {
      // A peer connected to us directly (after an introduction): its Data is for us, not to echo or route.
      this.#core.emit({
        type: "data",
        from,
        fromId: peer.info.id,
        to: null,
        payload: msg.payload,
        message: msg,
      });
      return undefined;
    }
    const p = msg.payload;
    if (isJsonObject(p) && p.to !== undefined && p.to !== null) {
      if (typeof p.to !== "string" || !isUuid(p.to)) {
        return this.#send.badRequest(dg, conn, `bad "to": ${JSON.stringify(p.to)}`);
      }
      const toId = p.to.toLowerCase();
      const target = this.#core.table.byId.get(toId);
      // In cluster mode a recipient registered with another instance is reached through it.
      const remote = target?.peer ? undefined : this.#cluster.remote.byId.get(toId);
      this.#core.emit({ type: "data", from, fromId: peer.info.id, to: p.to, payload: p, message: msg });
      // A recipient still "handshaking" is routed to as well: its request was valid and it has our response
      // or soon will; its Ack of this Data completes its handshake.
      // End to end for senders with the extensions: their Ack waits for the recipient's, so it means
      // "delivered", not "reached the server". A retransmission meanwhile is not relayed again, and one of a
      // message already settled gets the same answer, whether or not the recipient is still here.
      const e2e = conn.ext && msg.requires_ack && msg.rel !== undefined;
      const relays = e2e ? (extras(conn).relays ??= new Map()) : null;
      const prior = relays?.get(msg.id);
      if (prior) {
        if (prior.state === "pending") return "deferred";
        if (prior.state === "failed") {
          // Answered again, never acknowledged: an Ack would say it was delivered.
          this.undeliverable(now, conn, msg.id, prior.to);
          return { reason: "unexpected", detail: "retransmission of an undeliverable message", quiet: true };
        }
        return undefined; // delivered: acknowledged again
      }
      const reachable = target?.peer
        ? target.peer.network === peer.network
        : remote?.network === peer.network;
      if (!reachable) {
        // A sender relaying end to end learns which message it was, and gets no Ack: its send fails.
        this.#send.reply(dg, conn, "Error", {
          error: `unknown recipient: ${p.to}`,
          code: ERROR_CODES.unknownRecipient,
          ...(e2e ? { id: msg.id } : {}),
        });
        return e2e ? "deferred" : undefined;
      }
      const size = jsonBytes(p.data ?? null);
      if (!this.relayAllowed(now, conn, size)) {
        this.#send.reply(dg, conn, "Error", {
          error: `relay quota exceeded: at most ${this.#core.config.relayQuota[0]} messages and ${
            this.#core.config.relayQuota[1]
          } bytes a minute`,
          code: ERROR_CODES.relayQuota,
          id: msg.id,
        });
        // Not acknowledged: the sender's send fails instead of looking delivered.
        return { reason: "rate_limited", detail: "relay quota", quiet: true };
      }
      if (remote) {
        const rid = relays ? this.#core.newId() : null;
        this.#cluster.counts.relaysOut++;
        this.#cluster.send(remote.instance, {
          t: "relay",
          rid,
          from: peer.info.id,
          to: remote.id,
          network: peer.network,
          data: p.data ?? null,
          ordered: msg.ord !== undefined,
        });
        if (!relays || rid === null) return undefined;
        this.trackRelay(relays, msg, remote.id);
        this.#cluster.track(
          rid,
          remote.instance,
          conn.key,
          msg.id,
          now + this.#core.deliveryMs + CLUSTER_RELAY_GRACE_MS,
        );
        return "deferred";
      }
      const routed = { from: peer.info.id, data: p.data ?? null };
      const copy = this.#send.sendReliable(now, target!, "Data", routed, { ordered: msg.ord !== undefined });
      this.#connTimers.reschedule(target!);
      if (!copy) {
        this.#send.tooLarge(dg, conn);
        return undefined;
      }
      if (!relays) return undefined;
      this.trackRelay(relays, msg, target!.peer.info.id);
      this.forwarding(target!, copy.id, { kind: "peer", key: conn.key }, msg.id);
      return "deferred";
    }
    this.#core.emit({ type: "data", from, fromId: peer.info.id, to: null, payload: p, message: msg });
    // The echo is the answer the sender waits for: reliable to a peer with the extensions (it acks), so a lost
    // echo is sent again; to a deployed peer (it never acks) plain, kept for a repeat of its request.
    const echo: Json = { echo: p, timestamp: Math.floor(now / 1000) };
    const sent = conn.ext ? this.#send.sendReliable(now, conn, "Data", echo) !== null : this.#send.reply(
      dg,
      conn,
      "Data",
      echo,
    );
    if (!sent) this.#send.tooLarge(dg, conn);
    return undefined;
  }

  /** Takes one routed message of `bytes` from the sender's relay quota; false when it is spent. */
  relayAllowed(now: number, conn: Conn, bytes: number): boolean {
    const [messages, volume] = this.#core.config.relayQuota;
    const rates = {
      messages: { perSecond: messages / 60, burst: messages },
      bytes: { perSecond: volume / 60, burst: volume },
    };
    const x = extras(conn);
    const quota = x.relayQuota ??= {
      messages: fullBucket(rates.messages, now),
      bytes: fullBucket(rates.bytes, now),
    };
    if (!take(quota.messages, rates.messages, now)) return false;
    return takeMany(quota.bytes, rates.bytes, now, Math.min(bytes, volume));
  }

  /**
   * A copy relayed to `target` was acknowledged (`delivered`) or given up: the sender learns it now, with
   * its Ack (end to end) or with an Error `undeliverable` naming its message.
   */
  relayDone(now: number, target: Conn, copyId: string, delivered: boolean): void {
    const forwarded = target.x?.forwarded;
    const copy = forwarded?.get(copyId);
    if (!copy) return;
    forwarded!.delete(copyId);
    const sender = copy.sender;
    if (sender.kind === "instance") {
      // Relayed for another instance: it tells its sender.
      this.#cluster.send(sender.instance, { t: "relayed", rid: copy.originalId, ok: delivered });
      return;
    }
    this.settleRelay(now, sender.key, copy.originalId, delivered);
  }

  /** The sender at `senderKey` learns the fate of its routed message `originalId`: an Ack or an Error. */
  settleRelay(now: number, senderKey: string, originalId: string, delivered: boolean): void {
    const sender = this.#core.table.byAddr.get(senderKey);
    const entry = sender?.x?.relays?.get(originalId);
    if (!sender || !entry || entry.state !== "pending") return;
    if (delivered) {
      entry.state = "delivered";
      if (entry.rel !== null) recordingWindow(sender, entry.rel).accept(entry.rel);
      const acked = { id: originalId, sequence_number: entry.seq } as Message;
      this.#send.ackOn(now, sender, acked);
    } else {
      entry.state = "failed";
      this.undeliverable(now, sender, originalId, entry.to);
    }
    this.#connTimers.reschedule(sender);
  }

  /** Records a routed message relayed end to end, until the recipient's Ack (bounded). */
  trackRelay(relays: Map<string, RelayEntry>, msg: Message, to: string): void {
    if (relays.size >= MAX_RELAYS_TRACKED) relays.delete(relays.keys().next().value!);
    relays.set(msg.id, { state: "pending", seq: msg.sequence_number, rel: msg.rel ?? null, to });
  }

  /** Tells a sender its routed message `id` to `to` was not delivered. */
  undeliverable(now: number, sender: Conn, id: string, to: string): void {
    this.#send.sendPlain(now, sender, "Error", {
      error: `undeliverable: ${to} did not acknowledge the message`,
      code: ERROR_CODES.undeliverable,
      id,
    });
  }
}
