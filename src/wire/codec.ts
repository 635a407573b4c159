/**
 * The wire codec: a message to bytes (the documented key order, an optional CRC-32 `sum` or session `mac`
 * member) and bytes to a validated message, with every malformed input reported as a {@linkcode DecodeError}.
 * Pure functions, no I/O.
 *
 * @module
 */
import { crc32 as zlibCrc32 } from "../deps/crc32.ts";
import { isUuid } from "../deps/uuid.ts";
import { encodeTemplateText } from "./template.ts";
import {
  type AuthFields,
  DecodeError,
  type FragmentRef,
  isNonNegativeInteger,
  isObject,
  isSequenceNumber,
  type Json,
  MAX_FRAGMENTS,
  MAX_JSON_DEPTH,
  type Message,
  MESSAGE_TYPE_SET,
  type MessageType,
  show,
} from "./message.ts";

const decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });
/**
 * For datagrams that are all ASCII (nearly all of them), where it gives the same text: under Deno the strict
 * decoder costs about four times as much as the lenient one, more than checking the bytes first.
 */
const asciiDecoder = new TextDecoder("utf-8", { ignoreBOM: true });

/** Whether every byte is below 0x80. */
function isAscii(bytes: Uint8Array): boolean {
  let any = 0;
  for (let i = 0; i < bytes.length; i++) any |= bytes[i]!;
  return any < 0x80;
}
const encoder = new TextEncoder();

/**
 * Encodes a message as one UTF-8 JSON object with all eight keys in the documented order.
 *
 * @example
 * ```ts
 * import { encodeMessage } from "./codec.ts";
 * const bytes = encodeMessage({
 *   id: "7d444840-9dc0-11d1-b245-5ffdce74fad2", message_type: "Ping", timestamp: 1, payload: null,
 *   sender_addr: null, sequence_number: 1, requires_ack: false, ack_for: null,
 * });
 * if (!new TextDecoder().decode(bytes).startsWith('{"id":')) throw new Error("bad order");
 * ```
 *
 * With `macKey`, the datagram ends in a `mac` member whose tag `macKey` computes from the body it is given (a
 * view of scratch space, valid only during the call).
 */
export function encodeMessage(
  message: Message,
  checksum = false,
  macKey?: (body: Uint8Array) => string,
): Uint8Array {
  const text = encodeMessageText(message);
  const room = text.length * 3 + SUFFIX_ROOM;
  if (room > SCRATCH.length) return encodeLarge(text, checksum, macKey);
  // A small datagram is encoded straight into the shared slab it is handed out from; a larger one into
  // scratch space, then copied out once. (`TextEncoder.encode` allocates through the runtime and measured
  // about twice the cost of `encodeInto` plus one copy for a Pong-sized text: docs/performance.md.)
  const direct = room <= SLAB_LARGEST;
  if (direct && slabAt + room > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES);
    slabAt = 0;
  }
  const out = direct ? slab.subarray(slabAt) : SCRATCH;
  const n = encoder.encodeInto(text, out).written;
  let at = n;
  if (macKey) {
    // The tag covers the datagram as it would be without the mac member: `{...}` with its last brace.
    const tag = macKey(out.subarray(0, n));
    at = n - 1;
    out.set(MAC_PREFIX, at);
    at += MAC_PREFIX.length;
    at += encoder.encodeInto(tag, out.subarray(at, at + 4 * MAC_HEX_LENGTH)).written;
    out[at++] = 0x22;
    out[at++] = 0x7d;
  } else if (checksum) {
    // The sum covers the datagram as it would be without the sum member: `{...}` with its last brace.
    const sum = crc32(out, n);
    at = n - 1;
    for (let i = 0; i < SUM_PREFIX.length; i++) out[at++] = SUM_PREFIX[i]!;
    for (let shift = 28; shift >= 0; shift -= 4) out[at++] = HEX[(sum >>> shift) & 15]!;
    out[at++] = 0x22; // "
    out[at++] = 0x7d; // }
  }
  if (!direct) return copyOut(at);
  const bytes = out.subarray(0, at);
  slabAt += at;
  return bytes;
}

/** Scratch space of {@linkcode encodeMessage}: any datagram's text fits (three bytes per UTF-16 unit at most). */
const SCRATCH = new Uint8Array(3 * 65_536);
/** Room kept after the text for a sum or mac member. */
const SUFFIX_ROOM = 256;

// Encoded datagrams are carved out of shared slabs: under Deno a new typed array costs about 2 µs (its
// backing store), a view of an existing one about 0.1 µs. A slab lives as long as any datagram cut from it;
// datagrams that are kept (awaiting an Ack) get bytes of their own (keptBytes), so a slab is never held
// for long by one of them.
const SLAB_BYTES = 16_384;
/** Larger datagrams get their own buffer. */
const SLAB_LARGEST = 2_048;
let slab = new Uint8Array(SLAB_BYTES);
let slabAt = 0;

/** The first `n` bytes of the scratch space, in a slab or, when large, in a buffer of their own. */
function copyOut(n: number): Uint8Array {
  if (n > SLAB_LARGEST) return SCRATCH.slice(0, n);
  if (slabAt + n > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES);
    slabAt = 0;
  }
  slab.set(SCRATCH.subarray(0, n), slabAt);
  const out = slab.subarray(slabAt, slabAt + n);
  slabAt += n;
  return out;
}

/**
 * `n` zero bytes (at most 2,048) for a datagram written in place, cut from the shared slab as encoded
 * messages are: a view of a slab costs far less than a typed array of its own.
 */
export function slabSpace(n: number): Uint8Array {
  if (n > SLAB_LARGEST) return new Uint8Array(n);
  if (slabAt + n > SLAB_BYTES) {
    slab = new Uint8Array(SLAB_BYTES);
    slabAt = 0;
  }
  const out = slab.subarray(slabAt, slabAt + n);
  slabAt += n;
  return out;
}

/**
 * Bytes of their own for an encoded datagram that is kept for a while (until it is acknowledged): one cut
 * from a shared slab would keep the whole slab alive.
 */
export function keptBytes(bytes: Uint8Array): Uint8Array {
  return bytes.byteLength === bytes.buffer.byteLength ? bytes : bytes.slice();
}

/** {@linkcode encodeMessage} for a text too long for the scratch space (never a datagram's). */
function encodeLarge(text: string, checksum: boolean, macKey?: (body: Uint8Array) => string): Uint8Array {
  const body = encoder.encode(text);
  if (macKey) {
    const tag = encoder.encode(macKey(body));
    const out = new Uint8Array(body.length - 1 + MAC_PREFIX.length + tag.length + 2);
    out.set(body.subarray(0, body.length - 1));
    let at = body.length - 1;
    out.set(MAC_PREFIX, at);
    at += MAC_PREFIX.length;
    out.set(tag, at);
    at += tag.length;
    out[at++] = 0x22;
    out[at] = 0x7d;
    return out;
  }
  if (!checksum) return body;
  const sum = crc32(body);
  const out = new Uint8Array(body.length + SUM_SUFFIX_BYTES);
  out.set(body.subarray(0, body.length - 1));
  let at = body.length - 1;
  for (let i = 0; i < SUM_PREFIX.length; i++) out[at++] = SUM_PREFIX[i]!;
  for (let shift = 28; shift >= 0; shift -= 4) out[at++] = HEX[(sum >>> shift) & 15]!;
  out[at++] = 0x22;
  out[at] = 0x7d;
  return out;
}

/** `,"sum":"` */
const SUM_PREFIX = encoder.encode(',"sum":"');
/** `,"mac":"` */
const MAC_PREFIX = encoder.encode(',"mac":"');
/** Hex digits of a MAC tag (128 bits). */
export const MAC_HEX_LENGTH = 32;

/** Where a trailing `,"mac":"<32 hex>"}` member starts, and its tag; null when there is none. */
function findMac(bytes: Uint8Array): { tag: string; end: number } | null {
  const n = bytes.length;
  const start = n - 2 - MAC_HEX_LENGTH - MAC_PREFIX.length;
  if (start < 1 || bytes[n - 1] !== 0x7d || bytes[n - 2] !== 0x22) return null;
  for (let i = 0; i < MAC_PREFIX.length; i++) if (bytes[start + i] !== MAC_PREFIX[i]) return null;
  let tag = "";
  for (let i = start + MAC_PREFIX.length; i < n - 2; i++) {
    const b = bytes[i]!;
    if (!((b >= 0x30 && b <= 0x39) || (b >= 0x61 && b <= 0x66))) return null;
    tag += String.fromCharCode(b);
  }
  return { tag, end: start };
}
/** What the sum member adds: `,"sum":"` + 8 hex digits + `"`. */
const SUM_SUFFIX_BYTES = SUM_PREFIX.length + 9;
const HEX = encoder.encode("0123456789abcdef");

/** The closing brace a sum covers after the body (see `checkSum`). */
const CLOSING_BRACE = Uint8Array.of(0x7d);

/**
 * CRC-32 (IEEE 802.3) of `bytes[0, end)` followed by the byte `last` (the datagram without its sum member).
 * @example
 * ```ts
 * import { crc32 } from "./codec.ts";
 * if (crc32(new TextEncoder().encode("123456789")) !== 0xcbf43926) throw new Error("not CRC-32");
 * ```
 */
export function crc32(bytes: Uint8Array, end = bytes.length): number {
  return zlibCrc32(end === bytes.length ? bytes : bytes.subarray(0, end));
}

/**
 * When `bytes` end in a sum member, whether it matches: `true`, `false` (corrupt), or `null` (no sum).
 */
function checkSum(bytes: Uint8Array): boolean | null {
  const n = bytes.length;
  const start = n - 1 - SUM_SUFFIX_BYTES; // where `,"sum":"` begins
  if (start < 1 || bytes[n - 1] !== 0x7d || bytes[n - 2] !== 0x22) return null;
  for (let i = 0; i < SUM_PREFIX.length; i++) if (bytes[start + i] !== SUM_PREFIX[i]) return null;
  let sum = 0;
  for (let i = start + SUM_PREFIX.length; i < n - 2; i++) {
    const b = bytes[i]!;
    const digit = b >= 0x30 && b <= 0x39 ? b - 0x30 : b >= 0x61 && b <= 0x66 ? b - 0x57 : -1;
    if (digit < 0) return false;
    sum = sum * 16 + digit;
  }
  // CRC of the body up to the sum member, then the closing brace.
  return zlibCrc32(CLOSING_BRACE, zlibCrc32(bytes.subarray(0, start))) === sum;
}

/** Whether the JSON text nests arrays and objects deeper than {@linkcode MAX_JSON_DEPTH}. */
function tooDeep(text: string): boolean {
  if (text.length <= 2 * MAX_JSON_DEPTH) return false;
  // The depth is at most the number of `{` and `[` anywhere: counting them with the native `indexOf` is much
  // cheaper than the scan below, and settles almost every datagram.
  let openers = 0;
  for (let i = text.indexOf("{"); i >= 0 && openers <= MAX_JSON_DEPTH; i = text.indexOf("{", i + 1)) {
    openers++;
  }
  for (let i = text.indexOf("["); i >= 0 && openers <= MAX_JSON_DEPTH; i = text.indexOf("[", i + 1)) {
    openers++;
  }
  if (openers <= MAX_JSON_DEPTH) return false;
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // backslash: skip the escaped character
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > MAX_JSON_DEPTH) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** The JSON text {@linkcode encodeMessage} encodes: the eight keys in order, then any extension fields. */
export function encodeMessageText(message: Message): string {
  return encodeTemplateText(message) ?? encodeObjectText(message);
}

/** {@linkcode encodeMessageText} through `JSON.stringify` of an object: the reference the template matches. */
export function encodeObjectText(message: Message): string {
  const out: Record<string, unknown> = {
    id: message.id,
    message_type: message.message_type,
    timestamp: message.timestamp,
    payload: message.payload,
    sender_addr: message.sender_addr,
    sequence_number: message.sequence_number,
    requires_ack: message.requires_ack,
    ack_for: message.ack_for,
  };
  if (message.ext !== undefined) out.ext = message.ext;
  if (message.rel !== undefined) out.rel = message.rel;
  if (message.ord !== undefined) out.ord = message.ord;
  if (message.frag !== undefined) out.frag = message.frag;
  if (message.cookie !== undefined) out.cookie = message.cookie;
  if (message.auth !== undefined) out.auth = message.auth;
  if (message.sid !== undefined) out.sid = message.sid;
  return JSON.stringify(out);
}

/**
 * The common case of {@linkcode isUuid}, checked without a regular expression (about 0.4 µs less per
 * datagram): lowercase, hyphenated, version 1 to 8, variant 10. Every string it accepts `isUuid` accepts too;
 * what it rejects (uppercase, the nil and max UUIDs, anything invalid) goes on to `isUuid`.
 */
function isLowerUuid(s: string): boolean {
  if (s.length !== 36) return false;
  for (let i = 0; i < 36; i++) {
    const c = s.charCodeAt(i);
    if (i === 8 || i === 13 || i === 18 || i === 23) {
      if (c !== 0x2d) return false;
    } else if (!((c >= 0x30 && c <= 0x39) || (c >= 0x61 && c <= 0x66))) return false;
  }
  const version = s.charCodeAt(14);
  const variant = s.charCodeAt(19);
  return version >= 0x31 && version <= 0x38 &&
    (variant === 0x38 || variant === 0x39 || variant === 0x61 || variant === 0x62);
}

/**
 * Decodes one datagram into a {@linkcode Message}, with the same strictness as the deployed peers: a known
 * key of the wrong type drops the datagram; unknown keys are ignored; the optional keys `payload`,
 * `sender_addr`, `sequence_number`, `ack_for` and `requires_ack` may be missing (null, null, null, null,
 * false).
 *
 * @throws {DecodeError} when the bytes are not a valid envelope.
 * @example
 * ```ts
 * import { decodeMessage } from "./codec.ts";
 * const m = decodeMessage(new TextEncoder().encode(
 *   '{"id":"7d444840-9dc0-11d1-b245-5ffdce74fad2","message_type":"Ping","timestamp":1,"requires_ack":false}',
 * ));
 * if (m.message_type !== "Ping" || m.payload !== null) throw new Error("unexpected");
 * ```
 */
export function decodeMessage(bytes: Uint8Array): Message {
  const summed = checkSum(bytes);
  if (summed === false) throw new DecodeError("bad_checksum", "Datagram does not match its sum");
  let text: string;
  try {
    text = (isAscii(bytes) ? asciiDecoder : decoder).decode(bytes);
  } catch {
    throw new DecodeError("invalid_utf8", "Datagram is not valid UTF-8");
  }
  if (tooDeep(text)) throw new DecodeError("too_deep", `Datagram nests deeper than ${MAX_JSON_DEPTH} levels`);
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new DecodeError("invalid_json", `Datagram is not JSON: ${(error as Error).message}`);
  }
  if (!isObject(value)) throw new DecodeError("not_an_object", "Datagram is not a JSON object");
  const { id, message_type, timestamp } = value;
  if (typeof id !== "string" || !(isLowerUuid(id) || isUuid(id))) {
    throw new DecodeError("bad_field", `Bad "id": ${show(id)}`);
  }
  if (typeof message_type !== "string") {
    throw new DecodeError("bad_field", `Bad "message_type": ${show(message_type)}`);
  }
  if (!MESSAGE_TYPE_SET.has(message_type)) {
    throw new DecodeError("unknown_type", `Unknown "message_type": ${show(message_type)}`);
  }
  if (!isNonNegativeInteger(timestamp)) {
    throw new DecodeError("bad_field", `Bad "timestamp": ${show(timestamp)}`);
  }
  const payload = value.payload === undefined ? null : value.payload as Json;
  const sender = value.sender_addr ?? null;
  if (sender !== null && typeof sender !== "string") {
    throw new DecodeError("bad_field", `Bad "sender_addr": ${show(sender)}`);
  }
  const seq = value.sequence_number ?? null;
  if (seq !== null && !isSequenceNumber(seq)) {
    throw new DecodeError("bad_field", `Bad "sequence_number": ${show(seq)}`);
  }
  const requiresAck = value.requires_ack ?? false;
  if (typeof requiresAck !== "boolean") {
    throw new DecodeError("bad_field", `Bad "requires_ack": ${show(requiresAck)}`);
  }
  const ackFor = value.ack_for ?? null;
  if (
    ackFor !== null && !(typeof ackFor === "string" && (isLowerUuid(ackFor) || isUuid(ackFor))) &&
    !isSequenceNumber(ackFor)
  ) {
    throw new DecodeError("bad_field", `Bad "ack_for": ${show(ackFor)}`);
  }
  const msg: Message = {
    id,
    message_type: message_type as MessageType,
    timestamp,
    payload,
    sender_addr: sender,
    sequence_number: seq,
    requires_ack: requiresAck,
    ack_for: ackFor as string | number | null,
  };
  const { ext, rel, ord, frag, cookie, auth, sid } = value;
  if (ext !== undefined && ext !== null) {
    if (!isSequenceNumber(ext)) throw new DecodeError("bad_field", `Bad "ext": ${show(ext)}`);
    msg.ext = ext;
  }
  if (rel !== undefined && rel !== null) {
    if (!isSequenceNumber(rel)) throw new DecodeError("bad_field", `Bad "rel": ${show(rel)}`);
    msg.rel = rel;
  }
  if (ord !== undefined && ord !== null) {
    if (!isSequenceNumber(ord)) throw new DecodeError("bad_field", `Bad "ord": ${show(ord)}`);
    msg.ord = ord;
  }
  if (frag !== undefined && frag !== null) {
    const ref = parseFragmentRef(frag);
    if (!ref) throw new DecodeError("bad_field", `Bad "frag": ${show(frag)}`);
    msg.frag = ref;
  }
  if (cookie !== undefined && cookie !== null) {
    if (typeof cookie !== "string" || !/^[0-9a-f]{1,64}$/.test(cookie)) {
      throw new DecodeError("bad_field", `Bad "cookie": ${show(cookie)}`);
    }
    msg.cookie = cookie;
  }
  if (auth !== undefined && auth !== null) {
    const fields = parseAuthFields(auth);
    if (!fields) throw new DecodeError("bad_field", `Bad "auth": ${show(auth)}`);
    msg.auth = fields;
  }
  if (sid !== undefined && sid !== null) {
    if (typeof sid !== "string" || !/^[0-9a-f]{16}$/.test(sid)) {
      throw new DecodeError("bad_field", `Bad "sid": ${show(sid)}`);
    }
    msg.sid = sid;
  }
  if (summed) msg.summed = true;
  else {
    const mac = findMac(bytes);
    if (mac) msg.mac = mac;
  }
  return msg;
}

function parseAuthFields(value: unknown): AuthFields | null {
  if (!isObject(value)) return null;
  const out: Record<string, string> = {};
  for (const k of ["key", "dh", "sig", "to", "sid"] as const) {
    const v = value[k];
    if (v === undefined || v === null) continue;
    if (typeof v !== "string" || v.length > 200) return null;
    out[k] = v;
  }
  if (out.key === undefined || out.dh === undefined || out.sig === undefined) return null;
  return out as unknown as AuthFields;
}

function parseFragmentRef(value: unknown): FragmentRef | null {
  if (!isObject(value)) return null;
  const { of, i, n } = value;
  if (typeof of !== "string" || !isUuid(of)) return null;
  if (!isNonNegativeInteger(n) || n < 1 || n > MAX_FRAGMENTS) return null;
  if (!isNonNegativeInteger(i) || i >= n) return null;
  return { of: of.toLowerCase(), i, n };
}
