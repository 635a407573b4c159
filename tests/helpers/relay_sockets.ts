/**
 * What the loopback relays of the end-to-end tests (`tests/helpers/lossy_proxy.ts`,
 * `tests/helpers/rebinding_relay.ts`) share: a receive loop that ends quietly when its relay closes, and the
 * order a relay closes in (send queues, then sockets, then receive loops), so that no send in flight and no
 * receive loop outlives it.
 *
 * @module
 */

/** A relay's view of itself that its receive loops read. */
export interface RelayState {
  /** Whether the relay is closing: a receive error then ends the loop quietly, and no datagram is handed on. */
  readonly closing: () => boolean;
  /** Where a receive error not caused by closing goes (it also ends its loop). */
  readonly errors: Error[];
}

/** Hands every datagram `socket` receives to `onDatagram` until the relay closes or a receive fails. */
export async function receiveUntilClosed(
  socket: Deno.DatagramConn,
  onDatagram: (bytes: Uint8Array, from: Deno.NetAddr) => void,
  state: RelayState,
): Promise<void> {
  for (;;) {
    let received: [Uint8Array, Deno.Addr];
    try {
      received = await socket.receive();
    } catch (error) {
      if (!state.closing()) state.errors.push(error as Error);
      return;
    }
    if (state.closing()) return;
    onDatagram(received[0], received[1] as Deno.NetAddr);
  }
}

/** The parts of a relay that {@linkcode closeRelay} closes. */
export interface RelayParts {
  /** Send queues: each sends nothing more and waits for its send in flight. */
  queues: { close(): Promise<void> }[];
  /** Every socket of the relay (one already closed is skipped). */
  sockets: Deno.DatagramConn[];
  /** The receive loops, which end once their sockets close. */
  loops: Promise<void>[];
}

/** Closes a relay: waits for the sends in flight, then closes every socket, then waits for the receive loops. */
export async function closeRelay(parts: RelayParts): Promise<void> {
  await Promise.all(parts.queues.map((q) => q.close()));
  for (const socket of parts.sockets) {
    try {
      socket.close();
    } catch {
      // already closed
    }
  }
  await Promise.all(parts.loops);
}
