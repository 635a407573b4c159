/**
 * A client's requests to its server: Ping, a discovery page, an introduction. The core sends each one,
 * retries it on the retransmit policy (the `requests` lane of the timer table, so in virtual time under the
 * simulator), matches the answer and reports the outcome as one `requestDone` or `requestFailed` event. The
 * shell above keeps no timer per request: it maps request ids to promises.
 *
 * Matching, per kind:
 * - `ping`: the Pong echoing the try's nonce (each try has its own, so the round trip is measured against the
 *   try that was answered); from a server that echoes no nonce, the oldest ping to it.
 * - `discovery`: DiscoveryResponses carry no request id, so the oldest discovery to that server; an Error
 *   `bad_request` or `not_registered` from it fails the oldest discovery as well.
 * - `introduce`: done when the direct handshake with that peer is up (ours, or the peer's towards us); failed
 *   by the core's `punchFailed` for it, by an Error `cannot_introduce` (the oldest introduction), when the
 *   server never acknowledges the request, or at its time limit.
 *
 * An answer that settles a request replaces its raw event (`pong`, `discovery`, `error`) in the event list,
 * so each answer is reported once. Events about requests nobody made pass untouched, and an endpoint with no
 * request outstanding pays one size check per datagram.
 *
 * @module
 */
import { formatSocketAddr, type Json, type SocketAddr } from "../wire/mod.ts";
import type { Core } from "./context.ts";
import type { SendPath } from "./send.ts";
import type { ConnTimers } from "./conn_timers.ts";
import type { Timed } from "./timers.ts";
import { type DiscoveryPage, type EndpointEvent, PUNCH_BUDGET_MS, type RequestKind } from "./types.ts";
import type { Strategy } from "./strategy.ts";

/** What a request asks for (see {@linkcode Requests}). */
export type RequestSpec =
  | { kind: "ping" }
  | { kind: "discovery"; query: Json }
  | { kind: "introduce"; peerId: string; timeoutMs?: number };

interface Pending extends Timed {
  readonly id: number;
  readonly spec: RequestSpec;
  readonly to: SocketAddr;
  readonly toKey: string;
  /** Tries sent so far. */
  tries: number;
  firstAt: number;
  sentAt: number;
  /** The nonces of this ping's tries, by nonce: when each was sent. */
  nonces: Map<string, number> | null;
  /** The reliable message carrying an introduction request (its give-up fails the request). */
  messageId: string | null;
  /** An introduction's time limit. */
  until: number;
  /** An introduction's strategy, once its card arrived. */
  strategy?: Strategy;
}

/** Default time limit of an introduction: the punch budget and 5 s for the server to relay it. */
export const INTRODUCE_TIMEOUT_MS: number = PUNCH_BUDGET_MS + 5_000;

/** The requests room: sending, retrying and matching a client's requests. */
export class Requests {
  readonly #core: Core;
  readonly #send: SendPath;
  readonly #connTimers: ConnTimers;
  /** Outstanding requests in the order they were made (the oldest first). */
  readonly #pending = new Map<number, Pending>();
  #nextId = 1;
  /** The event list scanned so far, and how far. */
  #scanned: readonly EndpointEvent[] | null = null;
  #scannedTo = 0;

  constructor(core: Core, send: SendPath, connTimers: ConnTimers) {
    this.#core = core;
    this.#send = send;
    this.#connTimers = connTimers;
  }

  /** How many requests are outstanding. */
  get size(): number {
    return this.#pending.size;
  }

  /**
   * Makes a request to the server at `to`. Returns its id, which names it in the `requestDone` or
   * `requestFailed` event that follows.
   *
   * @throws {RangeError} when there is no connection to `to`.
   */
  start(now: number, to: SocketAddr, spec: RequestSpec): number {
    const toKey = formatSocketAddr(to);
    const conn = this.#core.table.byAddr.get(toKey);
    if (!conn?.link) throw new RangeError(`Cannot make a request to "${toKey}": not connected`);
    const p: Pending = {
      id: this.#nextId++,
      spec,
      to,
      toKey,
      tries: 0,
      firstAt: now,
      sentAt: now,
      nonces: spec.kind === "ping" ? new Map() : null,
      messageId: null,
      until: Infinity,
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.#catchUp();
    this.#pending.set(p.id, p);
    if (spec.kind === "introduce") {
      // One reliable request: the transport retries it; the time limit covers the relay and the punch.
      p.until = now + (spec.timeoutMs ?? INTRODUCE_TIMEOUT_MS);
      const msg = this.#send.sendReliable(now, conn, "DiscoveryRequest", { introduce: spec.peerId }, {
        ordered: false,
      });
      p.messageId = msg?.id ?? null;
      this.#connTimers.reschedule(conn);
      this.#core.timers.requests.schedule(p, p.until);
    } else {
      this.#try(now, p);
    }
    return p.id;
  }

  /**
   * The wait after try number `tries` (from 1) to `addr`, or null when the request should be given up,
   * `elapsedMs` after its first try. Follows the same policy as reliable messages.
   */
  retryWait(addr: SocketAddr, tries: number, elapsedMs: number): number | null {
    const core = this.#core;
    if (core.config.retransmitPolicy === "schedule") return core.config.retransmitSchedule[tries - 1] ?? null;
    if (elapsedMs >= core.deliveryMs) return null;
    const conn = core.table.byAddr.get(formatSocketAddr(addr));
    const rto = conn ? core.rtoOf(conn) : Math.min(core.rto.maxMs, core.rto.initialMs);
    return Math.min(this.#send.backoff(rto, tries, core.deliveryMs), core.deliveryMs - elapsedMs);
  }

  /** Runs every request due at `now`: its next try, or its end. */
  run(now: number): void {
    for (;;) {
      const p = this.#core.timers.requests.popDue(now) as Pending | undefined;
      if (!p) return;
      if (!this.#pending.has(p.id)) continue;
      if (p.spec.kind === "introduce") {
        this.#fail(p, "timeout", `no direct path to ${p.spec.peerId} was found in time`);
        continue;
      }
      const conn = this.#core.table.byAddr.get(p.toKey);
      const next = this.retryWait(p.to, p.tries + 1, now - p.firstAt);
      if (!conn?.link || next === null) this.#fail(p, "timeout", `no answer from ${p.toKey}`);
      else this.#try(now, p);
    }
  }

  /**
   * Matches the events emitted since the last look against the outstanding requests, replacing each answer
   * that settles one with the request's outcome.
   */
  observe(now: number): void {
    if (this.#pending.size === 0) {
      this.#catchUp();
      return;
    }
    const events = this.#core.pendingEvents;
    if (events !== this.#scanned) {
      this.#scanned = events;
      this.#scannedTo = 0;
    }
    // Outcomes appended below are past the end being scanned, and carry nothing to match.
    const end = events.length;
    for (let i = this.#scannedTo; i < end; i++) {
      const settled = this.#match(now, events[i]!);
      if (settled) this.#core.replacePending(i, settled);
    }
    this.#scannedTo = events.length;
  }

  /** Fails every outstanding request to `toKey` (its link closed), or every one when `toKey` is null. */
  abandon(toKey: string | null, reason: "closed" | "timeout"): void {
    for (const p of [...this.#pending.values()]) {
      if (toKey === null || p.toKey === toKey) this.#fail(p, reason, `the link to ${p.toKey} closed`);
    }
  }

  /** Skips the events emitted so far (they predate any request being looked for). */
  #catchUp(): void {
    const events = this.#core.pendingEvents;
    this.#scanned = events;
    this.#scannedTo = events.length;
  }

  #try(now: number, p: Pending): void {
    const conn = this.#core.table.byAddr.get(p.toKey);
    if (!conn?.link) {
      this.#fail(p, "closed", `the link to ${p.toKey} closed`);
      return;
    }
    p.tries++;
    p.sentAt = now;
    if (p.tries > 1) {
      const messageType = p.spec.kind === "ping" ? "Ping" : "DiscoveryRequest";
      this.#core.emit({ type: "retry", to: p.to, messageType, tries: p.tries });
    }
    let payload: Json;
    if (p.spec.kind === "ping") {
      const nonce = this.#core.newId();
      p.nonces!.set(nonce, now);
      payload = { nonce };
    } else {
      payload = (p.spec as { query: Json }).query;
    }
    this.#send.sendPlain(now, conn, p.spec.kind === "ping" ? "Ping" : "DiscoveryRequest", payload);
    this.#connTimers.reschedule(conn);
    const wait = this.retryWait(p.to, p.tries, now - p.firstAt);
    this.#core.timers.requests.schedule(p, now + (wait ?? 0));
  }

  /** The outcome an event settles, or null when it answers no request. */
  #match(now: number, event: EndpointEvent): EndpointEvent | null {
    switch (event.type) {
      case "pong": {
        const p = event.payload;
        const obj = p !== null && typeof p === "object" && !Array.isArray(p) ? p : null;
        if (obj && typeof obj.punch === "string") return null;
        const key = formatSocketAddr(event.from);
        const nonce = obj && typeof obj.nonce === "string" ? obj.nonce : null;
        const req = this.#oldest("ping", key, (q) => nonce === null || q.nonces!.has(nonce));
        if (!req) return null;
        const sentAt = nonce === null ? req.sentAt : req.nonces!.get(nonce)!;
        this.#forget(req);
        return { type: "requestDone", id: req.id, kind: "ping", rttMs: Math.max(0, now - sentAt) };
      }
      case "discovery": {
        const req = this.#oldest("discovery", formatSocketAddr(event.from));
        if (!req) return null;
        this.#forget(req);
        const page: DiscoveryPage = {
          peers: event.peers,
          nextOffset: event.nextOffset,
          nextCursor: event.nextCursor,
        };
        return { type: "requestDone", id: req.id, kind: "discovery", page };
      }
      case "error": {
        const code = event.error.code;
        const key = formatSocketAddr(event.from);
        const kind: RequestKind | null = code === "cannot_introduce"
          ? "introduce"
          : code === "bad_request" || code === "not_registered"
          ? "discovery"
          : null;
        const req = kind && this.#oldest(kind, key);
        if (!req || code === undefined) return null;
        this.#forget(req);
        return {
          type: "requestFailed",
          id: req.id,
          kind: req.spec.kind,
          reason: "refused",
          error: event.error.error,
          code,
        };
      }
      case "connected":
      case "peerJoined": {
        const nodeId = event.type === "connected" ? event.node.id : event.peer.id;
        const addr = event.type === "connected" ? formatSocketAddr(event.addr) : event.peer.addr;
        const req = this.#oldest("introduce", null, (q) => (q.spec as { peerId: string }).peerId === nodeId);
        if (!req || addr === req.toKey) return null;
        this.#forget(req);
        const strategy = req.strategy ?? "direct";
        this.#core.emit({ type: "requestDone", id: req.id, kind: "introduce", nodeId, addr, strategy });
        return null;
      }
      case "introduced": {
        const req = event.initiator ? this.#introduction(event.peer.id) : undefined;
        if (req) req.strategy = event.strategy;
        return null;
      }
      case "punchFailed": {
        const req = event.initiator ? this.#introduction(event.peerId) : undefined;
        if (!req) return null;
        const error = event.strategy === "relay"
          ? `no direct path to ${event.peerId} can work between these NATs (strategy relay): relay with send(data, { to })`
          : `no direct path to ${event.peerId} was found (strategy ${event.strategy})`;
        this.#fail(req, "punch_failed", error, event.strategy);
        return null;
      }
      case "gaveUp": {
        const req = this.#oldest("introduce", formatSocketAddr(event.to), (q) => q.messageId === event.id);
        if (req) this.#fail(req, "timeout", `${req.toKey} never acknowledged the introduction request`);
        return null;
      }
      case "linkClosed": {
        this.abandon(formatSocketAddr(event.addr), "closed");
        return null;
      }
      default:
        return null;
    }
  }

  #oldest(kind: RequestKind, toKey: string | null, test?: (p: Pending) => boolean): Pending | undefined {
    for (const p of this.#pending.values()) {
      if (p.spec.kind !== kind || (toKey !== null && p.toKey !== toKey)) continue;
      if (!test || test(p)) return p;
    }
    return undefined;
  }

  #forget(p: Pending): void {
    this.#pending.delete(p.id);
    this.#core.timers.requests.schedule(p, Infinity);
  }

  /** The oldest introduction request waiting for `peerId`. */
  #introduction(peerId: string): Pending | undefined {
    return this.#oldest("introduce", null, (q) => (q.spec as { peerId: string }).peerId === peerId);
  }

  #fail(p: Pending, reason: "timeout" | "closed" | "punch_failed", error: string, strategy?: Strategy): void {
    if (!this.#pending.has(p.id)) return;
    this.#forget(p);
    const chosen = strategy ?? p.strategy;
    const failed = {
      type: "requestFailed",
      id: p.id,
      kind: p.spec.kind,
      reason,
      error,
      code: reason,
    } as const;
    this.#core.emit(chosen ? { ...failed, strategy: chosen } : failed);
  }
}
