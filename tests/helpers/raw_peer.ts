/**
 * A hand-driven UDP peer for end-to-end tests: one socket on loopback (port 0) that sends hand-crafted
 * envelopes (all eight keys) or raw bytes, and reads whatever comes back with a deadline. Nothing here uses
 * the library under test, so the tests check the wire format independently of our own decoder.
 *
 * @module
 */
import { Wakers } from "./wakers.ts";

/** The default wait for one datagram, generous for a shared 2-core machine. */
export const RECEIVE_DEADLINE_MS = 5_000;

/** The eight envelope keys, in the order every message is written. */
export const ENVELOPE_KEYS = [
  "id",
  "message_type",
  "timestamp",
  "payload",
  "sender_addr",
  "sequence_number",
  "requires_ack",
  "ack_for",
] as const;

/** The optional fields p2p_server appends after the eight keys (docs/protocol.md, "Extensions"). */
export const EXTENSION_KEYS = ["ext", "rel", "ord", "frag", "cookie", "sum"] as const;

/** One message as it travels on the wire (untyped payload: the tests inspect it). */
export interface Envelope {
  /** UUID of the message. */
  id: string;
  /** PascalCase message type. */
  message_type: string;
  /** Unix seconds. */
  timestamp: number;
  /** Any JSON. */
  payload: unknown;
  /** `"ip:port"` or null. */
  sender_addr: string | null;
  /** u32 or null. */
  sequence_number: number | null;
  /** Whether an Ack is asked for. */
  requires_ack: boolean;
  /** On an Ack: the acknowledged message's id (or sequence number). */
  ack_for: string | number | null;
}

/** A datagram that arrived at a {@linkcode RawPeer}. */
export interface Received {
  /** The decoded envelope (a `message_type` of `"<not JSON>"` when the bytes were not a JSON object). */
  message: Envelope;
  /** The datagram's text. */
  text: string;
  /** The datagram's size in bytes. */
  size: number;
  /** Where it came from. */
  from: Deno.NetAddr;
}

/** A UDP address on loopback. */
export interface Addr {
  /** IP literal, IPv6 without brackets. */
  hostname: string;
  /** UDP port. */
  port: number;
}

/** Formats an address as `"ip:port"` or `"[ip6]:port"`. */
export function addrText(addr: Addr): string {
  return addr.hostname.includes(":") ? `[${addr.hostname}]:${addr.port}` : `${addr.hostname}:${addr.port}`;
}

/** Parses `"ip:port"` or `"[ip6]:port"` (test input only: no validation beyond the shape). */
export function parseAddr(text: string): Addr {
  const m = /^\[(.+)\]:(\d+)$/.exec(text) ?? /^([^:]+):(\d+)$/.exec(text);
  if (!m) throw new TypeError(`Not an address: "${text}"`);
  return { hostname: m[1]!, port: Number(m[2]) };
}

/** A NodeInfo as a HandshakeRequest payload carries it. */
export interface RawNodeInfo {
  /** Node UUID. */
  id: string;
  /** Node name. */
  name: string;
  /** Software version. */
  version: string;
  /** Declared `"ip:port"`. */
  listen_addr: string;
  /** Capabilities. */
  capabilities: string[];
  /** String metadata; `network_id` picks the network. */
  metadata: Record<string, string>;
}

/** What {@linkcode RawPeer.handshake} saw. */
export interface HandshakeResult {
  /** The HandshakeRequest we sent. */
  request: Envelope;
  /** The server's Ack of it (the first datagram back). */
  ack: Received;
  /** The HandshakeResponse (the second datagram back). */
  response: Received;
}

const utf8 = new TextEncoder();
const utf8Decoder = new TextDecoder();

/** A raw UDP peer. Always close it (`await using`). */
export class RawPeer implements AsyncDisposable {
  readonly #socket: Deno.DatagramConn;
  readonly #queue: Received[] = [];
  readonly #wakers = new Wakers();
  readonly #loop: Promise<void>;
  #closed = false;
  #nextSeq = 1;
  /** This peer's node id (used by {@linkcode nodeInfo}). */
  readonly nodeId: string = crypto.randomUUID();
  /** Messages {@linkcode expect} skipped over, oldest first. */
  readonly skipped: Received[] = [];

  /** Binds a socket on `hostname` (loopback), port 0. */
  constructor(hostname = "127.0.0.1") {
    this.#socket = Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
    this.#loop = this.#receiveLoop();
  }

  /** The bound address. */
  get addr(): Addr {
    const a = this.#socket.addr as Deno.NetAddr;
    return { hostname: a.hostname, port: a.port };
  }

  /** The bound address as `"ip:port"`. */
  get addrText(): string {
    return addrText(this.addr);
  }

  /** This peer's NodeInfo, with overrides. */
  nodeInfo(overrides: Partial<RawNodeInfo> = {}): RawNodeInfo {
    return {
      id: this.nodeId,
      name: "raw_peer",
      version: "0.0.1",
      listen_addr: this.addrText,
      capabilities: ["test"],
      metadata: { network_id: "p2p_default" },
      ...overrides,
    };
  }

  /** Builds an envelope with all eight keys; the next sequence number unless `fields` sets one. */
  envelope(type: string, payload: unknown = null, fields: Partial<Envelope> = {}): Envelope {
    return {
      id: crypto.randomUUID(),
      message_type: type,
      timestamp: Math.floor(Date.now() / 1000),
      payload,
      sender_addr: this.addrText,
      sequence_number: this.#nextSeq++,
      requires_ack: false,
      ack_for: null,
      ...fields,
    };
  }

  /** Sends an envelope, a string, or raw bytes, as one datagram. */
  async send(to: Addr, message: Envelope | string | Uint8Array): Promise<void> {
    const bytes = message instanceof Uint8Array
      ? message
      : utf8.encode(typeof message === "string" ? message : JSON.stringify(message));
    await this.#socket.send(bytes, { transport: "udp", hostname: to.hostname, port: to.port });
  }

  /** Builds, sends and returns an envelope. */
  async sendMessage(
    to: Addr,
    type: string,
    payload: unknown = null,
    fields: Partial<Envelope> = {},
  ): Promise<Envelope> {
    const msg = this.envelope(type, payload, fields);
    await this.send(to, msg);
    return msg;
  }

  /** Acknowledges `received` as the protocol asks (`ack_for` = its id, sequence number = its own). */
  async ack(to: Addr, received: Envelope): Promise<Envelope> {
    return await this.sendMessage(to, "Ack", null, {
      ack_for: received.id,
      sequence_number: received.sequence_number,
    });
  }

  /**
   * The next datagram, in arrival order.
   *
   * @throws {Error} when none arrives within `deadlineMs`.
   */
  async receive(deadlineMs = RECEIVE_DEADLINE_MS): Promise<Received> {
    const end = performance.now() + deadlineMs;
    while (this.#queue.length === 0) {
      const left = end - performance.now();
      if (left <= 0 || this.#closed) {
        throw new Error(`No datagram arrived at ${this.addrText} within ${deadlineMs} ms`);
      }
      await this.#wakers.wait(left);
    }
    return this.#queue.shift()!;
  }

  /**
   * The next message of type `type`, skipping (and recording in {@linkcode skipped}) any other, such as a
   * heartbeat Ping. With `ackAll`, skipped messages that ask for an Ack are acknowledged.
   *
   * @throws {Error} when none arrives within `deadlineMs`.
   */
  async expect(
    type: string,
    deadlineMs = RECEIVE_DEADLINE_MS,
    options: { ackAll?: Addr } = {},
  ): Promise<Received> {
    const end = performance.now() + deadlineMs;
    for (;;) {
      let got: Received;
      try {
        got = await this.receive(Math.max(0, end - performance.now()));
      } catch {
        const seen = this.skipped.map((r) => r.message.message_type).join(", ") || "nothing";
        throw new Error(`No ${type} arrived at ${this.addrText} within ${deadlineMs} ms (skipped: ${seen})`);
      }
      if (got.message.message_type === type) return got;
      this.skipped.push(got);
      if (options.ackAll && got.message.requires_ack) await this.ack(options.ackAll, got.message);
    }
  }

  /**
   * Handshakes with the server the way the spec's flow diagram does: sends a HandshakeRequest
   * (requires_ack, sequence number 1 unless given), expects the Ack then the HandshakeResponse, and acks the
   * response.
   */
  async handshake(
    server: Addr,
    options: { info?: Partial<RawNodeInfo>; fields?: Partial<Envelope>; ackResponse?: boolean } = {},
  ): Promise<HandshakeResult> {
    const request = await this.sendMessage(server, "HandshakeRequest", this.nodeInfo(options.info), {
      requires_ack: true,
      ...options.fields,
    });
    const ack = await this.receive();
    if (ack.message.message_type !== "Ack") {
      throw new Error(`Expected an Ack first, got ${ack.text}`);
    }
    const response = await this.receive();
    if (response.message.message_type !== "HandshakeResponse") {
      throw new Error(`Expected a HandshakeResponse after the Ack, got ${response.text}`);
    }
    if (options.ackResponse ?? true) await this.ack(server, response.message);
    return { request, ack, response };
  }

  /** Closes the socket and waits for the receive loop to end. */
  async close(): Promise<void> {
    if (!this.#closed) {
      this.#closed = true;
      try {
        this.#socket.close();
      } catch {
        // already closed
      }
    }
    await this.#loop;
    this.#wakers.wakeAll();
  }

  /** Same as {@linkcode close}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #receiveLoop(): Promise<void> {
    const buffer = new Uint8Array(65_536);
    while (!this.#closed) {
      let bytes: Uint8Array;
      let from: Deno.Addr;
      try {
        [bytes, from] = await this.#socket.receive(buffer);
      } catch {
        if (this.#closed) break;
        continue; // e.g. an ICMP error surfaced by the OS
      }
      const text = utf8Decoder.decode(bytes);
      let message: Envelope;
      try {
        const value = JSON.parse(text);
        if (typeof value !== "object" || value === null || Array.isArray(value)) throw new TypeError();
        message = value as Envelope;
      } catch {
        message = {
          id: "",
          message_type: "<not JSON>",
          timestamp: 0,
          payload: text,
          sender_addr: null,
          sequence_number: null,
          requires_ack: false,
          ack_for: null,
        };
      }
      this.#queue.push({ message, text, size: bytes.length, from: from as Deno.NetAddr });
      this.#wakers.wakeAll();
    }
  }
}
