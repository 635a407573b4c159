/**
 * Log lines about datagrams the server did not process: drops (malformed, unexpected, over a limit) and
 * duplicates of reliable messages it processed already (debug only, when the core was asked to report them).
 *
 * @module
 */
import { formatSocketAddr } from "./wire/address.ts";
import type { EndpointEvent } from "./core/endpoint.ts";
import { getLogger } from "./deps/log.ts";

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
