/**
 * The one I/O shell: owns the UDP sockets (`Deno.listenDatagram`: the main one and any alternates), the
 * monotonic clock and the single re-armed timer. Each datagram is fed to the core with the index of the
 * socket it came to, and each datagram out is sent from the socket the core names. After every input it drains all of the core's outputs (datagrams in order, then events), then arms
 * one timer at the core's earliest deadline.
 *
 * @module
 */
import { formatSocketAddr, type SocketAddr } from "./wire/address.ts";
import { BindError, UnstableApiError } from "./errors.ts";
import type { Endpoint, EndpointEvent, Transmit } from "./core/endpoint.ts";
import { getLogger } from "./deps/log.ts";
import { MmsgSocket, SLOTS } from "./udp_mmsg.ts";
import type { IoBackend } from "./config.ts";

const log = getLogger(["p2p_server", "socket"]);

/** Longest the batched backend's main thread sleeps in the kernel for the next datagram (ms), see below. */
const SOON_MS = 1;
/** Most batches the batched backend reads in a row before it lets the event loop run. */
const YIELD_BATCHES = 32;

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

/** A socket the driver runs: `Deno.listenDatagram`'s, or the batched backend's (see {@linkcode IoBackend}). */
export type UdpSocket = Deno.DatagramConn | MmsgSocket;

export type { IoBackend };

/**
 * Binds a UDP socket with the given backend.
 *
 * @throws {UnstableApiError} when Deno runs without `--unstable-net` (the `deno` backend).
 * @throws {BindError} `failed to bind <addr>: <reason>`.
 */
export function bindUdp(addr: SocketAddr, backend: IoBackend = "deno"): UdpSocket {
  if (backend === "deno") requireUdpSockets();
  try {
    if (backend === "mmsg") return new MmsgSocket(addr);
    return Deno.listenDatagram({ transport: "udp", hostname: addr.hostname, port: addr.port });
  } catch (error) {
    throw new BindError(formatSocketAddr(addr), (error as Error).message, { cause: error });
  }
}

/**
 * Binds the alternate sockets of RFC 5780 beside the bound main socket (A1:P1), in the order the core numbers
 * them: A1:P2 (`port`, 0 for any free one), then, with `address` (A2), A2:P1 and A2:P2. Returns the main
 * socket and the alternates; when one cannot be bound, closes those bound here (the main one too) and throws.
 *
 * @throws {BindError} naming the address that failed.
 */
export function bindAlternates(
  main: UdpSocket,
  alternates: { port: number | null; address: string | null },
  backend: IoBackend = "deno",
): UdpSocket[] {
  const sockets = [main];
  if (alternates.port === null) return sockets;
  try {
    const a1 = main.addr as Deno.NetAddr;
    const second = bindUdp({ hostname: a1.hostname, port: alternates.port }, backend);
    sockets.push(second);
    if (alternates.address !== null) {
      const p2 = (second.addr as Deno.NetAddr).port;
      sockets.push(bindUdp({ hostname: alternates.address, port: a1.port }, backend));
      sockets.push(bindUdp({ hostname: alternates.address, port: p2 }, backend));
    }
    return sockets;
  } catch (error) {
    for (const s of sockets) s.close();
    throw error;
  }
}

/** Drives one {@linkcode Endpoint} over its UDP sockets. */
export class UdpDriver {
  readonly #endpoint: Endpoint;
  /** By the core's socket index; null where a socket added later was closed again. */
  readonly #sockets: (UdpSocket | null)[];
  readonly #onEvent: (event: EndpointEvent) => void;
  #queue: Transmit[] = [];
  #pumping: Promise<void> | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #timerAt = Infinity;
  #closed = false;
  #receiving: Promise<unknown> | null = null;
  /** Receive loops of sockets added after {@linkcode start}. */
  readonly #added = new Set<Promise<void>>();
  /** Datagrams the operating system refused to send. */
  sendErrors = 0;

  /**
   * @param endpoint The core to drive.
   * @param sockets A bound socket (see {@linkcode bindUdp}), or the main one and its alternates: socket `i`
   *   is the core's socket `i` (`Endpoint.setSockets`, which the caller tells).
   * @param onEvent Called for every event the core produces, in order.
   */
  constructor(
    endpoint: Endpoint,
    sockets: UdpSocket | readonly UdpSocket[],
    onEvent: (event: EndpointEvent) => void,
  ) {
    this.#endpoint = endpoint;
    this.#sockets = Array.isArray(sockets) ? [...sockets] : [sockets as UdpSocket];
    this.#onEvent = onEvent;
  }

  /** The bound local address (of the main socket). */
  get localAddr(): SocketAddr {
    return this.localAddrs[0]!;
  }

  /** The bound local addresses of every open socket, the main one first. */
  get localAddrs(): SocketAddr[] {
    return this.#sockets.filter((s) => s !== null).map((s) => {
      const a = s.addr as Deno.NetAddr;
      return { hostname: a.hostname, port: a.port };
    });
  }

  /**
   * Adds a bound socket (a client's sacrificial socket of a binding lifetime measurement) and starts
   * receiving on it. Returns its index: what arrives there is fed to the core with it, and the core names it
   * to send from there.
   */
  addSocket(socket: UdpSocket): number {
    if (this.#closed) {
      socket.close();
      throw new Error("Driver is closed");
    }
    const index = this.#sockets.length;
    this.#sockets.push(socket);
    const loop = this.#receive(socket, index).finally(() => this.#added.delete(loop));
    this.#added.add(loop);
    return index;
  }

  /** Closes a socket added with {@linkcode addSocket} (the main one and the alternates stay). */
  closeSocket(index: number): void {
    const socket = this.#sockets[index];
    if (index === 0 || !socket) return;
    this.#sockets[index] = null;
    try {
      socket.close();
    } catch {
      // already closed
    }
  }

  /** Whether {@linkcode close} has begun. */
  get closed(): boolean {
    return this.#closed;
  }

  /** Starts receiving. */
  start(): void {
    this.#receiving ??= Promise.all(this.#sockets.map((s, i) => s && this.#receive(s, i)));
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
    for (const socket of this.#sockets) {
      try {
        socket?.close();
      } catch {
        // already closed
      }
    }
    await this.#receiving;
    await Promise.all([...this.#added]);
  }

  async #receiveLoop(socket: Deno.DatagramConn, index: number): Promise<void> {
    // One buffer per socket for every datagram: the core decodes it before the next receive.
    const buffer = new Uint8Array(65_536);
    while (!this.#closed && this.#sockets[index] === socket) {
      let bytes: Uint8Array;
      let from: Deno.Addr;
      try {
        [bytes, from] = await socket.receive(buffer);
      } catch (error) {
        if (this.#closed || this.#sockets[index] !== socket) break;
        if (error instanceof Deno.errors.BadResource || error instanceof Deno.errors.Interrupted) break;
        log.debug("receive failed: {error}", { error: (error as Error).message });
        continue;
      }
      const addr = from as Deno.NetAddr;
      this.#endpoint.handleDatagram(monotonicNow(), addr, bytes, index);
      this.#flush();
    }
  }

  #receive(socket: UdpSocket, index: number): Promise<void> {
    return socket instanceof MmsgSocket
      ? this.#receiveBatches(socket, index)
      : this.#receiveLoop(socket, index);
  }

  // The batched backend: every datagram waiting is read with one system call and handed to the core at the
  // time of the read; the outputs are flushed once per batch. When nothing is waiting, the main thread first
  // sleeps in the kernel for up to SOON_MS (a datagram then wakes it directly), and only then waits on the
  // runtime's blocking-call thread, whose hand-over to the main thread costs a wake-up of its own. After
  // YIELD_BATCHES batches in a row without a wait, the next read goes through that thread anyway, so that the
  // event loop (timers, the ops server, signals) runs under any load.
  async #receiveBatches(socket: MmsgSocket, index: number): Promise<void> {
    let run = 0;
    let n = 0;
    while (!this.#closed) {
      // After a full batch more is likely waiting; after a partial one the kernel had no more, so the read
      // starts with the sleep (which returns at once when a datagram came meanwhile).
      if (run >= YIELD_BATCHES) n = 0;
      else if (n === SLOTS) n = socket.receiveNow() || socket.receiveSoon(SOON_MS);
      else n = socket.receiveSoon(SOON_MS);
      if (n > 0) run++;
      else {
        run = 0;
        n = await socket.receiveWait();
      }
      if (n === 0) break; // closed
      const now = monotonicNow();
      for (let i = 0; i < n; i++) {
        if (socket.truncated(i)) continue; // cannot happen for UDP: a slot holds any datagram
        this.#endpoint.handleDatagram(now, socket.from(i), socket.bytes(i), index);
      }
      this.#flush();
    }
  }

  #flush(): void {
    const out = this.#endpoint.takeTransmits();
    if (out.length > 0) {
      if (this.#queue.length === 0 && this.#pumping === null) this.#sendNow(out);
      else for (const t of out) this.#queue.push(t);
      if (this.#queue.length > 0) this.#pumping ??= this.#pump();
    }
    const events = this.#endpoint.takeEvents();
    for (const event of events) this.#onEvent(event);
    this.#arm();
  }

  // With the batched backend, sends go to the kernel at once, in order, a run of datagrams from the same
  // socket per system call; from the first one the kernel cannot take now (its send buffer full), the rest
  // waits in the queue for the pump. The `deno` backend's sends all go through the pump.
  #sendNow(out: Transmit[]): void {
    let i = 0;
    while (i < out.length) {
      const t = out[i]!;
      const index = t.socket ?? 0;
      const socket = this.#sockets[index];
      if (!(socket instanceof MmsgSocket)) break;
      let sent: number;
      try {
        sent = socket.sendBatch(out, i, index);
      } catch (error) {
        this.#sendFailed(t, error);
        i++;
        continue;
      }
      if (sent <= 0) break;
      i += sent;
    }
    if (i === 0) this.#queue = out;
    else for (; i < out.length; i++) this.#queue.push(out[i]!);
  }

  #sendFailed(t: Transmit, error: unknown): void {
    this.sendErrors++;
    log.debug("send to {to} failed: {error}", {
      to: formatSocketAddr(t.to),
      error: (error as Error).message,
    });
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
            const socket = this.#sockets[t.socket ?? 0];
            if (!socket) throw new RangeError(`No local socket ${t.socket}`);
            if (socket instanceof MmsgSocket) {
              while (!socket.sendNow(t.bytes, t.to.hostname, t.to.port)) {
                if (!(await socket.writable())) return;
              }
            } else {
              await socket.send(t.bytes, { transport: "udp", hostname: t.to.hostname, port: t.to.port });
            }
          } catch (error) {
            if (this.#closed) return;
            this.#sendFailed(t, error);
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
