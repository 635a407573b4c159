/**
 * Log lines about datagrams the server did not process: drops (malformed, unexpected, over a limit) and
 * duplicates of reliable messages it processed already (debug only, when the core was asked to report them).
 *
 * @module
 */
import { formatSocketAddr } from "./wire/address.ts";
import type { EndpointEvent } from "./core/endpoint.ts";
import { getLogger } from "./deps/log.ts";
import { RefusalLimiter } from "./refusal_log.ts";

const log = getLogger(["p2p_server", "server"]);
const dropLog = getLogger(["p2p_server", "drops"]);

/** Longest remote-supplied text put in one log line. */
const MAX_REMOTE_TEXT = 200;

/** Remote-supplied text cut to {@linkcode MAX_REMOTE_TEXT} characters, saying how long it was. */
export function clip(text: string): string {
  return text.length > MAX_REMOTE_TEXT ? `${text.slice(0, MAX_REMOTE_TEXT)}... (${text.length} chars)` : text;
}

/** Whether duplicates are worth reporting: the drops logger writes debug lines. */
export function duplicatesLogged(): boolean {
  return dropLog.isEnabledFor("debug");
}

/** Logs a dropped datagram: an internal error at error level, strays after a disconnect at debug, else warn. */
export function logDropped(event: Extract<EndpointEvent, { type: "dropped" }>): void {
  const addr = formatSocketAddr(event.from);
  if (event.reason === "internal_error") {
    log.error("internal error on a datagram from {addr} (dropped, serving on): {detail}", {
      addr,
      detail: event.detail,
    });
    return;
  }
  // Stray datagrams from a peer that just left are expected (spec troubleshooting): debug only.
  dropLog[event.afterDisconnect ? "debug" : "warn"]("dropped datagram from {addr} ({reason}): {detail}", {
    addr,
    reason: event.reason,
    detail: clip(event.detail),
  });
}

/** Logs a duplicate reliable message at debug: which numbering it was found in, and that it was re-acked. */
export function logDuplicate(event: Extract<EndpointEvent, { type: "duplicate" }>): void {
  dropLog.debug("duplicate {type} {space} {number} from {addr}: processed already, acknowledged again", {
    type: event.messageType,
    space: event.space,
    number: event.number,
    addr: formatSocketAddr(event.from),
  });
}

/**
 * Log lines for refused handshakes, rate limited (anyone can send a HandshakeRequest that is refused): the
 * first 10 of each 10 s one line each, the rest in one summary line per window (`flush`, called every second).
 */
export class RefusalLog {
  readonly #limiter = new RefusalLimiter();

  /** A refusal: its own line while the window allows. */
  refused(event: Extract<EndpointEvent, { type: "refused" }>, now = performance.now()): void {
    if (!this.#limiter.admit(now, event.code)) return;
    log.info("refused handshake from {addr} (node {id}): {error} ({code})", {
      addr: formatSocketAddr(event.from),
      id: event.nodeId ?? "-",
      error: clip(event.error),
      code: event.code,
    });
  }

  /** The summary of the refusals kept quiet, once their window has passed. */
  flush(now = performance.now()): void {
    const summary = this.#limiter.flush(now);
    if (!summary) return;
    log.info("{count} more refused handshakes in the last {seconds} s ({codes})", {
      count: summary.suppressed,
      seconds: summary.seconds,
      codes: summary.byCode.map(([code, n]) => `${code} ${n}`).join(", "),
    });
  }
}
