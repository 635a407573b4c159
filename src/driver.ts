/**
 * The one I/O shell: owns the UDP socket (`Deno.listenDatagram`), the monotonic clock and the single re-armed
 * timer. After every input it drains all of the core's outputs (datagrams in order, then events), then arms
 * one timer at the core's earliest deadline.
 *
 * @module
 */
import { formatSocketAddr, type SocketAddr } from "./wire/address.ts";
import { BindError, UnstableApiError } from "./errors.ts";
import type { Endpoint, EndpointEvent, Transmit } from "./core/endpoint.ts";
import { getLogger } from "./deps/log.ts";

const log = getLogger(["p2p_server", "socket"]);

/** The clock the shell feeds the core: monotonic, in Unix milliseconds. */
export function monotonicNow(): number {
  return performance.timeOrigin + performance.now();
}

/**
 * Checks that the runtime has UDP sockets (`Deno.listenDatagram`, behind `--unstable-net`).
 *
 * @throws {UnstableApiError} naming the flag, when Deno runs without it.
 */
export function requireUdpSockets(): void {
  if (typeof (Deno as { listenDatagram?: unknown }).listenDatagram !== "function") {
    throw new UnstableApiError("Deno.listenDatagram", "--unstable-net", "net");
  }
}

/**
 * Binds a UDP socket.
 *
 * @throws {UnstableApiError} when Deno runs without `--unstable-net`.
 * @throws {BindError} `failed to bind <addr>: <reason>`.
 */
export function bindUdp(addr: SocketAddr): Deno.DatagramConn {
  requireUdpSockets();
  try {
    return Deno.listenDatagram({ transport: "udp", hostname: addr.hostname, port: addr.port });
  } catch (error) {
    throw new BindError(formatSocketAddr(addr), (error as Error).message, { cause: error });
  }
}

/** Drives one {@linkcode Endpoint} over one UDP socket. */
export class UdpDriver {
  readonly #endpoint: Endpoint;
  readonly #socket: Deno.DatagramConn;
  readonly #onEvent: (event: EndpointEvent) => void;
  #queue: Transmit[] = [];
  #pumping: Promise<void> | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #closed = false;
  #receiving: Promise<void> | null = null;
  /** Datagrams the operating system refused to send. */
  sendErrors = 0;

  /**
   * @param endpoint The core to drive.
   * @param socket A bound socket (see {@linkcode bindUdp}).
   * @param onEvent Called for every event the core produces, in order.
   */
  constructor(endpoint: Endpoint, socket: Deno.DatagramConn, onEvent: (event: EndpointEvent) => void) {
    this.#endpoint = endpoint;
    this.#socket = socket;
    this.#onEvent = onEvent;
  }

  /** The bound local address. */
  get localAddr(): SocketAddr {
    const a = this.#socket.addr as Deno.NetAddr;
    return { hostname: a.hostname, port: a.port };
  }

  /** Whether {@linkcode close} has begun. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Starts receiving. */
  start(): void {
    this.#receiving ??= this.#receiveLoop();
  }

  /** Runs a command against the core with the current time, then flushes its outputs. */
  run<T>(command: (now: number) => T): T {
    const result = command(monotonicNow());
    this.#flush();
    return result;
  }

  /** Waits until every queued datagram has been handed to the operating system. */
  async drained(): Promise<void> {
    while (this.#pumping) await this.#pumping;
  }

  /** Stops the timer, sends what is queued, closes the socket and waits for the receive loop to end. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#disarm();
    await this.drained();
    this.#closed = true;
    try {
      this.#socket.close();
    } catch {
      // already closed
    }
    await this.#receiving;
  }

  async #receiveLoop(): Promise<void> {
    // One buffer for every datagram: the core decodes it before the next receive.
    const buffer = new Uint8Array(65_536);
    while (!this.#closed) {
      let bytes: Uint8Array;
      let from: Deno.Addr;
      try {
        [bytes, from] = await this.#socket.receive(buffer);
      } catch (error) {
        if (this.#closed) break;
        if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) break;
        log.debug("receive failed: {error}", { error: (error as Error).message });
        continue;
      }
      const addr = from as Deno.NetAddr;
      this.#endpoint.handleDatagram(monotonicNow(), addr, bytes);
      this.#flush();
    }
  }

  #flush(): void {
    const out = this.#endpoint.takeTransmits();
    if (out.length > 0) {
      if (this.#queue.length === 0) this.#queue = out;
      else for (const t of out) this.#queue.push(t);
      this.#pumping ??= this.#pump();
    }
    const events = this.#endpoint.takeEvents();
    for (const event of events) this.#onEvent(event);
    this.#arm();
  }

  // Datagrams are sent one at a time: sends started concurrently can leave the socket out of order, and the
  // protocol needs an Ack to go out before the reply that follows it.
  async #pump(): Promise<void> {
    try {
      while (this.#queue.length > 0) {
        const batch = this.#queue;
        this.#queue = [];
        for (const t of batch) {
          try {
            await this.#socket.send(t.bytes, { transport: "udp", hostname: t.to.hostname, port: t.to.port });
          } catch (error) {
            if (this.#closed) return;
            this.sendErrors++;
            log.debug("send to {to} failed: {error}", {
              to: formatSocketAddr(t.to),
              error: (error as Error).message,
            });
          }
        }
      }
    } finally {
      this.#pumping = null;
    }
  }

  #arm(): void {
    if (this.#closed) return;
    const at = this.#endpoint.nextDeadline();
    if (at === this.#timerAt) return;
    this.#disarm();
    if (at === Infinity) return;
    this.#timerAt = at;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#timerAt = Infinity;
      this.#endpoint.handleTimeout(monotonicNow());
      this.#flush();
    }, Math.max(0, Math.ceil(at - monotonicNow())));
  }

  #disarm(): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
    this.#timerAt = Infinity;
  }
}
