/**
 * Roaming: an authenticated session that shows up at a new address (a NAT rebinding, a network change)
 * moves there only after the new address proves it receives. A path check is a MAC'd Ping carrying a fresh
 * nonce, answered by a MAC'd Pong naming it; a replayed datagram leads nowhere, since its sender cannot
 * answer from the address it spoofs.
 *
 * @module
 */
import { isJsonObject, type Message } from "../wire/mod.ts";
import type { Conn } from "./peers.ts";
import type { Core } from "./context.ts";
import type { Sessions } from "./sessions.ts";
import type { Expiring } from "./timer_table.ts";
import { type Datagram, drop, type Outcome } from "./outcome.ts";

/** How long a path check waits for its answer (ms). */
const PATH_CHECK_MS = 2_000;

/** Most path checks in progress at once. */
const MAX_PATH_CHECKS = 4_096;

/** A path check in progress at a new address. */
interface PathCheck extends Expiring {
  /** The session's connection that may move there. */
  conn: Conn;
  /** The nonce asked for. */
  nonce: string;
  /** Until when the answer counts (ms). */
  until: number;
}

/** Path checks of sessions seen at new addresses. */
export class Roaming {
  readonly #core: Core;
  readonly #sessions: Sessions;
  /** Path checks in progress, by the new address. */
  readonly #checks = new Map<string, PathCheck>();

  /**
   * @param core The shared state.
   * @param sessions The sessions that may roam.
   */
  constructor(core: Core, sessions: Sessions) {
    this.#core = core;
    this.#sessions = sessions;
  }

  /** Path checks in progress. */
  get size(): number {
    return this.#checks.size;
  }

  /**
   * A datagram carrying a session id from an address that session is not on. A valid MAC makes it a
   * candidate for roaming: the new address is asked to prove it receives, and only then does the session
   * move there. Returns true when the session just moved to this address.
   */
  roam(dg: Datagram, msg: Message, bytes: Uint8Array): Outcome | true {
    const { now, from, key } = dg;
    const core = this.#core;
    const home = this.#sessions.bySid(msg.sid!);
    const session = home?.session;
    if (!home || !session || !this.#sessions.macOk(session.recvKey, bytes, msg)) {
      return drop("bad_mac", "session datagram from an unknown address without a valid mac");
    }
    const check = this.#checks.get(key);
    const p = msg.payload;
    if (
      check && check.conn === home && check.until > now && msg.message_type === "Pong" && isJsonObject(p) &&
      p.path_response === check.nonce
    ) {
      this.#checks.delete(key);
      core.table.byAddr.delete(home.key);
      core.closed(home.key);
      // The path check proved the new address: the proven index follows the move.
      const proven = home.validated;
      core.unprove(home);
      home.key = key;
      home.addr = { hostname: from.hostname, port: from.port };
      core.table.byAddr.set(key, home);
      if (proven) core.validate(home);
      core.stats.roamed++;
      core.emit({ type: "roamed", peer: home.peer ? core.summary(home, home.peer) : null, to: from });
      return true;
    }
    if (!check || check.until <= now) {
      if (this.#checks.size >= MAX_PATH_CHECKS) this.#checks.delete(this.#checks.keys().next().value!);
      const nonce = core.newId();
      const entry: PathCheck = {
        conn: home,
        nonce,
        until: now + PATH_CHECK_MS,
        expire: () => {
          if (this.#checks.get(key) === entry) this.#checks.delete(key);
        },
        deadline: Infinity,
        filedAt: Infinity,
        timerToken: 0,
      };
      this.#checks.set(key, entry);
      core.timers.housekeeping.schedule(entry, entry.until);
      const ping = core.envelope(now, "Ping", { path_challenge: nonce }, null);
      core.transmitStateless(dg, from, this.#sessions.encodeOn(home, ping, false), "Ping");
    }
    return drop("unexpected", "session datagram from a new address: path check sent");
  }
}
