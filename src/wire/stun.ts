/**
 * STUN (RFC 8489) on the wire: telling a STUN datagram from a JSON one, parsing a message's header and
 * attributes with every length checked, FINGERPRINT, the (XOR-)MAPPED-ADDRESS, ERROR-CODE and
 * UNKNOWN-ATTRIBUTES values, and encoding a message. No behaviour lives here: the core's STUN room
 * (`src/core/stun.ts`) decides what to answer.
 *
 * A message is a 20-byte header (type, length of what follows, the magic cookie, a 96-bit transaction id)
 * followed by attributes, each a type, a length and a value padded to a multiple of 4 bytes. A request from an
 * RFC 3489 client has no magic cookie: its 128-bit transaction id fills bytes 4-19 (`classic`).
 *
 * @module
 */
import { crc32 } from "./codec.ts";
import { formatIp, ipBytes, type SocketAddr } from "./address.ts";

/** The magic cookie, bytes 4-7 of every RFC 5389/8489 message. */
export const MAGIC_COOKIE = 0x2112a442;

/** FINGERPRINT is the CRC-32 of the message up to it, XORed with this ("STUN"). */
export const FINGERPRINT_XOR = 0x5354554e;

/** The header's size. */
export const STUN_HEADER_BYTES = 20;

/** The Binding method. */
export const BINDING = 0x001;

/**
 * Attribute types used here (RFC 8489 section 18.3; RFC 5780 for CHANGE-REQUEST, PADDING, RESPONSE-PORT,
 * RESPONSE-ORIGIN and OTHER-ADDRESS; RFC 3489 for SOURCE-ADDRESS and CHANGED-ADDRESS, their forerunners).
 */
export const STUN_ATTR = {
  MAPPED_ADDRESS: 0x0001,
  CHANGE_REQUEST: 0x0003,
  SOURCE_ADDRESS: 0x0004,
  CHANGED_ADDRESS: 0x0005,
  USERNAME: 0x0006,
  MESSAGE_INTEGRITY: 0x0008,
  ERROR_CODE: 0x0009,
  UNKNOWN_ATTRIBUTES: 0x000a,
  REALM: 0x0014,
  NONCE: 0x0015,
  MESSAGE_INTEGRITY_SHA256: 0x001c,
  PASSWORD_ALGORITHM: 0x001d,
  USERHASH: 0x001e,
  XOR_MAPPED_ADDRESS: 0x0020,
  PADDING: 0x0026,
  RESPONSE_PORT: 0x0027,
  PASSWORD_ALGORITHMS: 0x8002,
  ALTERNATE_DOMAIN: 0x8003,
  SOFTWARE: 0x8022,
  ALTERNATE_SERVER: 0x8023,
  FINGERPRINT: 0x8028,
  RESPONSE_ORIGIN: 0x802b,
  OTHER_ADDRESS: 0x802c,
} as const;

/** CHANGE-REQUEST's flags (the value's last byte): answer from the other IP address, the other port. */
export const CHANGE_IP = 0x04;
/** See {@linkcode CHANGE_IP}. */
export const CHANGE_PORT = 0x02;

/** The four classes of a STUN message. */
export type StunClass = "request" | "indication" | "success" | "error";

const CLASSES: readonly StunClass[] = ["request", "indication", "success", "error"];

/** One attribute as it sits in a parsed message. */
export interface StunAttribute {
  /** Its type. */
  type: number;
  /** Where its 4-byte header starts in the message. */
  offset: number;
  /** Its value (a view into the message, without padding). */
  value: Uint8Array;
}

/** A parsed STUN message. */
export interface StunMessage {
  /** The method (12 bits). */
  method: number;
  /** The class. */
  class: StunClass;
  /** Bytes 4-7 carry no magic cookie: an RFC 3489 message, whose transaction id is bytes 4-19. */
  classic: boolean;
  /** Bytes 4-19 of the header: the magic cookie and the transaction id (or RFC 3489's 128-bit id). */
  id: Uint8Array;
  /** The attributes in order. */
  attributes: StunAttribute[];
}

/** The message's bytes are not a well-formed STUN message. */
export class StunDecodeError extends SyntaxError {
  /** @param message What is wrong. */
  constructor(message: string) {
    super(message);
    this.name = "StunDecodeError";
  }
}

function u16(b: Uint8Array, at: number): number {
  return (b[at]! << 8) | b[at + 1]!;
}

function hasCookie(b: Uint8Array): boolean {
  return b[4] === 0x21 && b[5] === 0x12 && b[6] === 0xa4 && b[7] === 0x42;
}

/**
 * Whether a datagram on the shared port is STUN rather than the JSON protocol (the RFC 7983 way: by its first
 * bytes). STUN: the first two bits are 0 and bytes 4-7 hold the magic cookie, or, for an RFC 3489 client, the
 * datagram is exactly a Binding request header (`00 01`) whose length field counts the rest. JSON starts with
 * `{` or whitespace, and can hold neither a control byte such as the cookie's 0x12 nor a leading NUL, so no
 * JSON datagram, valid or not, is ever taken for STUN.
 *
 * @example
 * ```ts
 * import { isStunDatagram } from "./stun.ts";
 * const request = Uint8Array.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(7)]);
 * if (!isStunDatagram(request) || isStunDatagram(new TextEncoder().encode("{}"))) throw new Error("demux");
 * ```
 */
export function isStunDatagram(bytes: Uint8Array): boolean {
  if (bytes.length < 8 || (bytes[0]! & 0xc0) !== 0) return false;
  if (hasCookie(bytes)) return true;
  return bytes.length >= STUN_HEADER_BYTES && bytes[0] === 0 && bytes[1] === 1 &&
    u16(bytes, 2) === bytes.length - STUN_HEADER_BYTES && bytes.length % 4 === 0;
}

/**
 * Parses a STUN message: the header (first two bits 0, the length field equal to what follows and a multiple
 * of 4) and every attribute (each header and padded value inside the message). Only Binding messages may lack
 * the magic cookie (RFC 3489's).
 *
 * @throws {StunDecodeError} when the bytes are not a well-formed message.
 * @example
 * ```ts
 * import { parseStun } from "./stun.ts";
 * const m = parseStun(Uint8Array.from([0, 1, 0, 0, 0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(7)]));
 * if (m.class !== "request" || m.method !== 1 || m.attributes.length !== 0) throw new Error("parse");
 * ```
 */
export function parseStun(bytes: Uint8Array): StunMessage {
  const n = bytes.length;
  if (n < STUN_HEADER_BYTES) {
    throw new StunDecodeError(`STUN message of ${n} bytes is shorter than its header`);
  }
  const type = u16(bytes, 0);
  if (type & 0xc000) throw new StunDecodeError("STUN message does not start with two zero bits");
  const length = u16(bytes, 2);
  if (length !== n - STUN_HEADER_BYTES) {
    throw new StunDecodeError(
      `STUN length field ${length} does not match the ${n - STUN_HEADER_BYTES} bytes`,
    );
  }
  if (length % 4 !== 0) throw new StunDecodeError(`STUN length ${length} is not a multiple of 4`);
  const cls = CLASSES[((type >> 7) & 2) | ((type >> 4) & 1)]!;
  const method = (type & 0x000f) | ((type >> 1) & 0x0070) | ((type >> 2) & 0x0f80);
  const classic = !hasCookie(bytes);
  if (classic && method !== BINDING) {
    throw new StunDecodeError("STUN message without the magic cookie is not an RFC 3489 Binding message");
  }
  const attributes: StunAttribute[] = [];
  for (let at = STUN_HEADER_BYTES; at < n;) {
    if (at + 4 > n) throw new StunDecodeError(`STUN attribute header at ${at} runs past the message`);
    const len = u16(bytes, at + 2);
    const end = at + 4 + len;
    if (end + ((4 - (len % 4)) % 4) > n) {
      throw new StunDecodeError(
        `STUN attribute 0x${hex4(u16(bytes, at))} of ${len} bytes runs past the message`,
      );
    }
    attributes.push({ type: u16(bytes, at), offset: at, value: bytes.subarray(at + 4, end) });
    at = end + ((4 - (len % 4)) % 4);
  }
  return { method, class: cls, classic, id: bytes.slice(4, STUN_HEADER_BYTES), attributes };
}

/** `n` as four lowercase hex digits. */
export function hex4(n: number): string {
  return n.toString(16).padStart(4, "0");
}

/**
 * The FINGERPRINT of a message whose FINGERPRINT attribute starts at `offset`: the CRC-32 of the bytes before
 * it, with the header's length field counting up to the end of the FINGERPRINT, XORed with 0x5354554e.
 *
 * @example
 * ```ts
 * import { fingerprint } from "./stun.ts";
 * const header = Uint8Array.from([0, 1, 0, 8, 0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(0)]);
 * if (typeof fingerprint(header, 20) !== "number") throw new Error("no fingerprint");
 * ```
 */
export function fingerprint(bytes: Uint8Array, offset: number): number {
  const length = offset + 8 - STUN_HEADER_BYTES;
  // The CRC covers a header whose length ends with the FINGERPRINT: when the header says so already (a
  // message whose last attribute it is, the usual case), no copy is needed.
  if (bytes[2] === length >> 8 && bytes[3] === (length & 0xff)) {
    return (crc32(bytes.subarray(0, offset)) ^ FINGERPRINT_XOR) >>> 0;
  }
  const prefix = bytes.slice(0, offset);
  prefix[2] = length >> 8;
  prefix[3] = length & 0xff;
  return (crc32(prefix) ^ FINGERPRINT_XOR) >>> 0;
}

/**
 * Writes one attribute at `at` (its padding must be zero already) and returns where the next one goes. Byte
 * by byte up to 64 bytes: for a few bytes a copy call costs more than the copy.
 */
export function putAttribute(out: Uint8Array, at: number, type: number, value: Uint8Array): number {
  out[at] = type >> 8;
  out[at + 1] = type & 0xff;
  out[at + 2] = value.length >> 8;
  out[at + 3] = value.length & 0xff;
  if (value.length > 64) out.set(value, at + 4);
  else for (let i = 0; i < value.length; i++) out[at + 4 + i] = value[i]!;
  return at + attributeSize(value.length);
}

/**
 * Writes the FINGERPRINT attribute at `at`, the end of a message whose header already counts it (the 8
 * bytes from `at` must be there, and zero).
 */
export function putFingerprint(out: Uint8Array, at: number): void {
  const sum = fingerprint(out, at);
  out[at] = 0x80;
  out[at + 1] = 0x28;
  out[at + 3] = 4;
  out[at + 4] = sum >>> 24;
  out[at + 5] = (sum >>> 16) & 0xff;
  out[at + 6] = (sum >>> 8) & 0xff;
  out[at + 7] = sum & 0xff;
}

/** Whether the FINGERPRINT attribute `attr` of `bytes` is 4 bytes and holds the right value. */
export function fingerprintOk(bytes: Uint8Array, attr: StunAttribute): boolean {
  const v = attr.value;
  if (v.length !== 4) return false;
  const got = ((v[0]! << 24) | (v[1]! << 16) | (v[2]! << 8) | v[3]!) >>> 0;
  return got === fingerprint(bytes, attr.offset);
}

/** The size of an attribute with a `len`-byte value, header and padding included. */
export function attributeSize(len: number): number {
  return 4 + len + ((4 - (len % 4)) % 4);
}

/**
 * The value of a MAPPED-ADDRESS (`xor` false) or XOR-MAPPED-ADDRESS (`xor` true, with the message's `id`,
 * bytes 4-19 of its header): a reserved byte, the family (1 IPv4, 2 IPv6), the port and the address. An
 * IPv4-mapped IPv6 source (`::ffff:a.b.c.d`) is reported as the IPv4 address it is. Returns `null` when
 * `addr.hostname` is not an IP literal.
 *
 * @example
 * ```ts
 * import { addressValue } from "./stun.ts";
 * const id = Uint8Array.from([0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(0)]);
 * const v = addressValue({ hostname: "192.0.2.1", port: 32853 }, true, id)!;
 * if (v[2] !== 0xa1 || v[3] !== 0x47) throw new Error("X-Port is 0xa147 in RFC 5769");
 * ```
 */
export function addressValue(addr: SocketAddr, xor: boolean, id: Uint8Array): Uint8Array | null {
  let ip = hostBytes(addr.hostname);
  if (!ip) return null;
  if (ip.length === 16 && ip.subarray(0, 10).every((b) => b === 0) && ip[10] === 0xff && ip[11] === 0xff) {
    ip = ip.slice(12);
  }
  const out = new Uint8Array(4 + ip.length);
  out[1] = ip.length === 4 ? 1 : 2;
  out[2] = (addr.port >> 8) ^ (xor ? id[0]! : 0);
  out[3] = (addr.port & 0xff) ^ (xor ? id[1]! : 0);
  for (let i = 0; i < ip.length; i++) out[4 + i] = ip[i]! ^ (xor ? id[i]! : 0);
  return out;
}

/** Host name -> its address bytes (null: not an IP literal), for the sources seen lately; read-only. */
const hostCache = new Map<string, Uint8Array | null>();
const HOST_CACHE_LIMIT = 4_096;

/** {@linkcode ipBytes} of a host name, remembered: a client usually asks more than once. */
export function hostBytes(hostname: string): Uint8Array | null {
  let ip = hostCache.get(hostname);
  if (ip === undefined) {
    if (hostCache.size >= HOST_CACHE_LIMIT) hostCache.clear();
    ip = ipBytes(hostname);
    hostCache.set(hostname, ip);
  }
  return ip;
}

/**
 * Decodes a (XOR-)MAPPED-ADDRESS value (the inverse of {@linkcode addressValue}).
 *
 * @throws {StunDecodeError} when the value is not one.
 */
export function decodeAddress(value: Uint8Array, xor: boolean, id: Uint8Array): SocketAddr {
  const family = value[1];
  const size = family === 1 ? 4 : family === 2 ? 16 : 0;
  if (size === 0 || value.length !== 4 + size) {
    throw new StunDecodeError(`STUN address of ${value.length} bytes with family ${family} is not one`);
  }
  const port = ((value[2]! ^ (xor ? id[0]! : 0)) << 8) | (value[3]! ^ (xor ? id[1]! : 0));
  const ip = value.slice(4).map((b, i) => b ^ (xor ? id[i]! : 0));
  return { hostname: formatIp(ip), port };
}

const encoder = new TextEncoder();

/** The value of an ERROR-CODE attribute: class and number of `code` (300-699), then the reason phrase. */
export function errorCodeValue(code: number, reason: string): Uint8Array {
  const phrase = encoder.encode(reason);
  const out = new Uint8Array(4 + phrase.length);
  out[2] = Math.floor(code / 100);
  out[3] = code % 100;
  out.set(phrase, 4);
  return out;
}

/** The value of an UNKNOWN-ATTRIBUTES attribute: the types, 16 bits each. */
export function unknownAttributesValue(types: readonly number[]): Uint8Array {
  const out = new Uint8Array(2 * types.length);
  types.forEach((t, i) => {
    out[2 * i] = t >> 8;
    out[2 * i + 1] = t & 0xff;
  });
  return out;
}

/** A message to encode. */
export interface StunOutgoing {
  /** The method. */
  method: number;
  /** The class. */
  class: StunClass;
  /** Bytes 4-19 of the header (the magic cookie and the transaction id, or an RFC 3489 id). */
  id: Uint8Array;
  /** The attributes in order, each a type and an unpadded value. */
  attributes: readonly { type: number; value: Uint8Array }[];
  /** Whether to end the message with a FINGERPRINT. */
  fingerprint: boolean;
}

/** The size {@linkcode encodeStun} gives `msg`. */
export function stunSize(msg: StunOutgoing): number {
  let n = STUN_HEADER_BYTES + (msg.fingerprint ? 8 : 0);
  for (const a of msg.attributes) n += attributeSize(a.value.length);
  return n;
}

/**
 * Encodes a message: the header, the attributes padded with zero bytes, and a FINGERPRINT when asked.
 *
 * @example
 * ```ts
 * import { encodeStun, parseStun } from "./stun.ts";
 * const id = Uint8Array.from([0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(1)]);
 * const bytes = encodeStun({ method: 1, class: "success", id, attributes: [], fingerprint: true });
 * if (bytes.length !== 28 || parseStun(bytes).class !== "success") throw new Error("encode");
 * ```
 */
export function encodeStun(msg: StunOutgoing): Uint8Array {
  const out = new Uint8Array(stunSize(msg));
  const c = CLASSES.indexOf(msg.class);
  const m = msg.method;
  const type = (m & 0x000f) | ((m & 0x0070) << 1) | ((m & 0x0f80) << 2) | ((c & 1) << 4) | ((c & 2) << 7);
  out[0] = type >> 8;
  out[1] = type & 0xff;
  out[2] = (out.length - STUN_HEADER_BYTES) >> 8;
  out[3] = (out.length - STUN_HEADER_BYTES) & 0xff;
  // Byte by byte: the pieces are a few bytes each, where a copy call costs more than the copy.
  const id = msg.id;
  for (let i = 0; i < 16; i++) out[4 + i] = id[i]!;
  let at = STUN_HEADER_BYTES;
  for (const a of msg.attributes) at = putAttribute(out, at, a.type, a.value);
  if (msg.fingerprint) putFingerprint(out, at);
  return out;
}
