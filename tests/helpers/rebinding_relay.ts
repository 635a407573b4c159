/**
 * A UDP relay on loopback that imitates a NAT rebinding, for end-to-end tests of roaming over real sockets.
 *
 * One socket faces the client (one client per relay). What the client sends goes to the server from the
 * current upstream socket; {@linkcode RebindingRelay.rebind} opens a NEW upstream socket (a new source port,
 * as a NAT that forgets a mapping would pick) and makes it the current one. Every upstream socket stays open
 * and whatever the server sends to any of them goes back to the client, so a test can see which of them the
 * server is talking to. Nothing is dropped, delayed or reordered: each socket sends its datagrams one at a
 * time, in arrival order.
 *
 * Usage: `await using relay = new RebindingRelay({ upstream: server.addr })`, point the client at
 * `relay.addrText`, later `relay.rebind()`, and read `relay.counters` / `relay.fromServer`.
 *
 * @module
 */
import { closeRelay, receiveUntilClosed, type RelayState } from "./relay_sockets.ts";

/** Options of {@linkcode RebindingRelay}. */
export interface RebindingRelayOptions {
  /** The server's address. */
  upstream: { hostname: string; port: number };
  /** Address the sockets bind (port 0). @default {"127.0.0.1"} */
  hostname?: string;
}

/** Counters of one upstream socket. */
export interface UpstreamCounters {
  /** Datagrams sent from this socket to the server. */
  toServer: number;
  /** Datagrams received on this socket from the server (all forwarded to the client). */
  fromServer: number;
}

/** All counters of a relay. */
export interface RelayCounters {
  /** Datagrams received from the client. */
  fromClient: number;
  /** Datagrams sent to the client. */
  toClient: number;
  /** One entry per upstream socket, in the order they were opened (index 0 is socket #1). */
  upstream: UpstreamCounters[];
  /** Datagrams that arrived on an upstream socket from another address than the server's (ignored). */
  strays: number;
  /** Sends the operating system refused. */
  sendErrors: number;
}

/** One datagram the server sent, in arrival order. */
export interface ServerDatagram {
  /** Index of the upstream socket it arrived on (0 is socket #1). */
  socket: number;
  /** Its `message_type`, when the text shows one (diagnostics only; the relay does not parse messages). */
  type: string | null;
}

interface Upstream {
  readonly socket: Deno.DatagramConn;
  readonly queue: SerialSender;
  readonly counters: UpstreamCounters;
}

/** Sends one socket's datagrams one at a time, in order (concurrent Deno sends may overtake each other). */
class SerialSender {
  readonly #socket: Deno.DatagramConn;
  readonly #onError: () => void;
  #tail: Promise<void> = Promise.resolve();
  #closed = false;

  constructor(socket: Deno.DatagramConn, onError: () => void) {
    this.#socket = socket;
    this.#onError = onError;
  }

  send(bytes: Uint8Array, to: Deno.NetAddr, sent: () => void): void {
    if (this.#closed) return;
    this.#tail = this.#tail.then(async () => {
      if (this.#closed) return;
      try {
        await this.#socket.send(bytes, to);
        sent();
      } catch {
        this.#onError();
      }
    });
  }

  /** Sends nothing more; waits for the send in flight. */
  async close(): Promise<void> {
    this.#closed = true;
    await this.#tail;
  }
}

/** How many of the client's datagrams {@linkcode RebindingRelay.recentFromClient} keeps. */
const RECENT = 32;

const TYPE = /"message_type"\s*:\s*"([A-Za-z]+)"/;

/**
 * A relay between one client and one server that can switch to a new upstream socket on command. Binds on
 * construction; close it (or `await using` it) to close every socket and end every receive loop.
 */
export class RebindingRelay implements AsyncDisposable {
  readonly #server: Deno.NetAddr;
  readonly #hostname: string;
  readonly #front: Deno.DatagramConn;
  readonly #frontQueue: SerialSender;
  readonly #upstreams: Upstream[] = [];
  readonly #loops: Promise<void>[] = [];
  readonly #counters = { fromClient: 0, toClient: 0, strays: 0, sendErrors: 0 };
  readonly #fromServer: ServerDatagram[] = [];
  readonly #fromClientBytes: Uint8Array[] = [];
  #client: Deno.NetAddr | null = null;
  #closing: Promise<void> | null = null;
  /** Receive errors not caused by closing (each ended its receive loop). */
  readonly errors: Error[] = [];
  readonly #state: RelayState = { closing: () => this.#closing !== null, errors: this.errors };

  /** @param options The server's address. */
  constructor(options: RebindingRelayOptions) {
    this.#server = { transport: "udp", hostname: options.upstream.hostname, port: options.upstream.port };
    this.#hostname = options.hostname ?? "127.0.0.1";
    this.#front = Deno.listenDatagram({ transport: "udp", hostname: this.#hostname, port: 0 });
    this.#frontQueue = new SerialSender(this.#front, () => this.#counters.sendErrors++);
    try {
      this.#open();
    } catch (error) {
      this.#front.close();
      throw error;
    }
    this.#loops.push(receiveUntilClosed(this.#front, (bytes, from) => {
      this.#counters.fromClient++;
      this.#fromClientBytes.push(bytes.slice());
      if (this.#fromClientBytes.length > RECENT) this.#fromClientBytes.shift();
      this.#client = { transport: "udp", hostname: from.hostname, port: from.port };
      const current = this.#upstreams[this.#upstreams.length - 1]!;
      current.queue.send(bytes, this.#server, () => current.counters.toServer++);
    }, this.#state));
  }

  /** The address the client sends to. */
  get addr(): Deno.NetAddr {
    return this.#front.addr as Deno.NetAddr;
  }

  /** {@linkcode addr} as `"ip:port"` (or `"[ip6]:port"`). */
  get addrText(): string {
    return text(this.addr);
  }

  /** The server-facing addresses, in the order the sockets were opened (index 0 is socket #1). */
  get upstreamAddrs(): Deno.NetAddr[] {
    return this.#upstreams.map((u) => u.socket.addr as Deno.NetAddr);
  }

  /** A fresh copy of the counters. */
  get counters(): RelayCounters {
    return { ...this.#counters, upstream: this.#upstreams.map((u) => ({ ...u.counters })) };
  }

  /** Every datagram the server sent so far, in arrival order (a copy). */
  get fromServer(): ServerDatagram[] {
    return [...this.#fromServer];
  }

  /** Copies of the last datagrams the client sent (at most 32), oldest first: material for replays. */
  get recentFromClient(): Uint8Array[] {
    return this.#fromClientBytes.map((b) => b.slice());
  }

  /**
   * Opens a new upstream socket (new source port) and sends the client's datagrams from it from now on. The
   * old sockets stay open: what the server sends there still reaches the client.
   *
   * @returns The new socket's address (it is the last of {@linkcode upstreamAddrs}).
   */
  rebind(): Deno.NetAddr {
    if (this.#closing) throw new Error("Relay is closed");
    this.#open();
    return this.#upstreams[this.#upstreams.length - 1]!.socket.addr as Deno.NetAddr;
  }

  /** Closes every socket and waits for the receive loops to end. Idempotent. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      await closeRelay({
        queues: [this.#frontQueue, ...this.#upstreams.map((u) => u.queue)],
        sockets: [this.#front, ...this.#upstreams.map((u) => u.socket)],
        loops: this.#loops,
      });
    })();
    return this.#closing;
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #open(): void {
    const socket = Deno.listenDatagram({ transport: "udp", hostname: this.#hostname, port: 0 });
    const counters: UpstreamCounters = { toServer: 0, fromServer: 0 };
    const upstream: Upstream = {
      socket,
      counters,
      queue: new SerialSender(socket, () => this.#counters.sendErrors++),
    };
    const index = this.#upstreams.length;
    this.#upstreams.push(upstream);
    this.#loops.push(receiveUntilClosed(socket, (bytes, from) => {
      if (from.hostname !== this.#server.hostname || from.port !== this.#server.port) {
        this.#counters.strays++;
        return;
      }
      counters.fromServer++;
      const m = TYPE.exec(new TextDecoder().decode(bytes.subarray(0, 512)));
      this.#fromServer.push({ socket: index, type: m ? m[1]! : null });
      const client = this.#client;
      if (client) this.#frontQueue.send(bytes, client, () => this.#counters.toClient++);
    }, this.#state));
  }
}

function text(addr: Deno.NetAddr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}
