/**
 * The STUN room: Binding requests (RFC 8489, and RFC 3489 clients' requests without the magic cookie)
 * answered with the address they came from, and RFC 5780's NAT behaviour discovery when the shell has
 * alternate sockets (`Endpoint.setSockets`): answers then carry RESPONSE-ORIGIN and, with an alternate IP
 * address, OTHER-ADDRESS, and a CHANGE-REQUEST is answered from the socket it asks for (420 when there is
 * none). The coordinator hands it every datagram that `isStunDatagram` picks out and every datagram on an
 * alternate socket (which serve STUN only), after admission's per-IP and global limits; the answer is a
 * stateless reply that spends the datagram's anti-amplification budget like any other, whichever socket it
 * goes from.
 *
 * No answer is larger than its request plus the size of its address attributes (the mapped address,
 * RESPONSE-ORIGIN, OTHER-ADDRESS), whatever the budget would allow: when the full answer would be, SOFTWARE is
 * left out first, then an error's reason phrase, then FINGERPRINT, then RESPONSE-ORIGIN, then OTHER-ADDRESS.
 * What is not answered is a counted drop (`stun_*` reasons). docs/protocol.md#stun has the rules with worked
 * examples.
 *
 * @module
 */
import { isUnspecified, type SocketAddr } from "../wire/address.ts";
import {
  addressValue,
  attributeSize,
  BINDING,
  CHANGE_IP,
  CHANGE_PORT,
  encodeStun,
  errorCodeValue,
  fingerprint,
  fingerprintOk,
  hex4,
  hostBytes,
  isStunDatagram,
  parseStun,
  putAttribute,
  putFingerprint,
  STUN_ATTR,
  STUN_HEADER_BYTES,
  StunDecodeError,
  type StunMessage,
  type StunOutgoing,
  stunSize,
  unknownAttributesValue,
} from "../wire/stun.ts";
import { slabSpace } from "../wire/codec.ts";
import type { Core } from "./context.ts";
import type { Datagram } from "./outcome.ts";
import type { StunErrorReason } from "./stats.ts";

/**
 * Comprehension-required attributes this server knows (RFC 8489's registry) and, not using credentials,
 * ignores when a request carries them ("known but unexpected"). CHANGE-REQUEST is judged apart.
 */
const KNOWN_REQUIRED: ReadonlySet<number> = new Set([
  STUN_ATTR.MAPPED_ADDRESS,
  STUN_ATTR.USERNAME,
  STUN_ATTR.MESSAGE_INTEGRITY,
  STUN_ATTR.ERROR_CODE,
  STUN_ATTR.UNKNOWN_ATTRIBUTES,
  STUN_ATTR.REALM,
  STUN_ATTR.NONCE,
  STUN_ATTR.MESSAGE_INTEGRITY_SHA256,
  STUN_ATTR.PASSWORD_ALGORITHM,
  STUN_ATTR.USERHASH,
  STUN_ATTR.XOR_MAPPED_ADDRESS,
]);

/** The longest SOFTWARE value sent (RFC 8489: fewer than 128 characters). */
const MAX_SOFTWARE = 127;

/** What the checks of a Binding request decided (`change`: the CHANGE-REQUEST flags asked for). */
type Verdict =
  | { kind: "ok"; change: number }
  | { kind: "bad_fingerprint" }
  | { kind: "error"; code: 400 | 420; reason: StunErrorReason; unknown: number[] };

const encoder = new TextEncoder();
let software: { version: string; value: Uint8Array } | null = null;

/** The SOFTWARE value for `version`, encoded once (every answer carries the same one). */
function softwareValue(version: string): Uint8Array {
  if (software?.version !== version) {
    software = { version, value: encoder.encode(`p2p_server ${version}`.slice(0, MAX_SOFTWARE)) };
  }
  return software.value;
}

type Try = readonly [boolean, boolean, boolean, boolean, boolean];
/**
 * What an answer gives up, in order, until it fits: [SOFTWARE, reason phrase, FINGERPRINT, RESPONSE-ORIGIN,
 * OTHER-ADDRESS], for a request with FINGERPRINT support (RFC 8489) and for one without (RFC 3489).
 */
const TRIES: Record<"fp" | "classic", readonly Try[]> = {
  fp: triesFor(true),
  classic: triesFor(false),
};

function triesFor(fp: boolean): readonly Try[] {
  return [
    [true, true, fp, true, true],
    [false, true, fp, true, true],
    [false, false, fp, true, true],
    [false, false, false, true, true],
    [false, false, false, false, true],
    [false, false, false, false, false],
  ];
}

export { isStunDatagram } from "../wire/stun.ts";

/** One received STUN datagram, already admitted. */
export interface StunInput {
  /** The time of the call (ms). */
  now: number;
  /** The source address. */
  from: SocketAddr;
  /** The source address as a map key. */
  key: string;
  /** The datagram. */
  bytes: Uint8Array;
  /** The local socket it came to (0: the main one). */
  socket: number;
}

/** The address attributes of a success response, values encoded (null: not sent). */
interface Addresses {
  /** (XOR-)MAPPED-ADDRESS. */
  mapped: Uint8Array;
  /** RESPONSE-ORIGIN (SOURCE-ADDRESS to an RFC 3489 client): the socket the answer goes from. */
  origin: Uint8Array | null;
  /** OTHER-ADDRESS (CHANGED-ADDRESS to an RFC 3489 client): the socket of the other IP and port. */
  other: Uint8Array | null;
}

/**
 * Handles one datagram `isStunDatagram` picked out, or any on an alternate socket: answers a Binding
 * request, counts everything else and drops it. The room keeps no state of its own.
 */
export function onStunDatagram(core: Core, input: StunInput): void {
  const { now, from, key, bytes, socket } = input;
  const stats = core.stats;
  if (socket !== 0 && !isStunDatagram(bytes)) {
    // The alternate sockets serve STUN only: no handshake, relay or discovery is answered from them.
    return core.drop(from, key, "alternate_socket", `non-STUN datagram on alternate socket ${socket}`);
  }
  let msg: StunMessage;
  try {
    msg = parseStun(bytes);
  } catch (error) {
    if (!(error instanceof StunDecodeError)) throw error;
    return core.drop(from, key, "stun_malformed", error.message);
  }
  if (msg.class === "indication") {
    return core.drop(from, key, "stun_indication", `STUN indication (method 0x${hex4(msg.method)})`);
  }
  if (msg.class !== "request") {
    return core.drop(from, key, "stun_response", `STUN ${msg.class} response with no request of ours`);
  }
  stats.stun.requests++;
  if (msg.method !== BINDING) {
    // RFC 8489 section 6.3: a message of a method the agent does not support is silently discarded.
    return core.drop(from, key, "stun_unknown_method", `STUN method 0x${hex4(msg.method)} is not served`);
  }
  if (core.role !== "server") return core.drop(from, key, "unexpected", "STUN request to a client");
  let verdict = check(bytes, msg);
  if (verdict.kind === "bad_fingerprint") {
    return core.drop(from, key, "stun_bad_fingerprint", "STUN request with a wrong FINGERPRINT");
  }
  const mapped = addressValue(from, !msg.classic, msg.id);
  if (!mapped) return core.drop(from, key, "unexpected", `STUN request from a non-IP source "${key}"`);
  let target = socket;
  if (verdict.kind === "ok" && verdict.change !== 0) {
    target = core.socketBeside(
      socket,
      (verdict.change & CHANGE_IP) !== 0,
      (verdict.change & CHANGE_PORT) !== 0,
    );
    // RFC 5780 section 6: a change the server cannot make is a 420 naming CHANGE-REQUEST.
    if (target < 0) {
      verdict = {
        kind: "error",
        code: 420,
        reason: "unknown_attribute",
        unknown: [STUN_ATTR.CHANGE_REQUEST],
      };
    }
  }
  const addresses = addressesOf(core, msg, mapped, socket, target);
  stats.processed++;
  const known = core.table.byAddr.get(key);
  // Bytes in count for an unproven connection at this address, as its answer's bytes count against it.
  if (known && !known.validated) known.bytesIn += bytes.length;
  const dg: Datagram = {
    now,
    from,
    key,
    size: bytes.length,
    budget: 3 * bytes.length,
    summed: false,
    cookieOk: false,
  };
  const software = softwareValue(core.node.version);
  let bound = bytes.length;
  for (const a of [addresses.mapped, addresses.origin, addresses.other]) {
    if (a) bound += attributeSize(a.length);
  }
  const limit = Math.min(bound, dg.budget);
  // The usual case, a plain Binding success without RFC 5780 addresses, is written straight into its bytes.
  const answer = verdict.kind === "ok" && !addresses.origin && !addresses.other
    ? buildSuccess(msg, mapped, software, limit)
    : build(msg, addresses, verdict, software, limit);
  if (!answer) {
    stats.amplificationLimited++;
    return;
  }
  const from_ = verdict.kind === "ok" ? target : socket;
  const before = core.queuedTransmits;
  core.transmitStateless(dg, from, answer, null, from_);
  if (core.queuedTransmits === before) return;
  if (verdict.kind !== "ok") stats.stun.errors[verdict.reason]++;
  else {
    stats.stun.responses++;
    if (from_ !== socket) stats.stun.changeRequests++;
  }
}

/**
 * The plain Binding request, answered without parsing it into objects: an RFC 8489 request on the main
 * socket of a server without alternate sockets, whose attributes are all comprehension-optional (SOFTWARE,
 * and FINGERPRINT last with the right value). Writes the same answer {@linkcode onStunDatagram} would
 * (`buildSuccess`'s, into a slab: tests/stun_fast_test.ts compares the two) and counts the same; returns
 * false, having done nothing, for any other datagram, which then takes the general path.
 */
export function answerPlainBinding(
  core: Core,
  now: number,
  from: SocketAddr,
  key: string,
  bytes: Uint8Array,
): boolean {
  const n = bytes.length;
  if (
    n < STUN_HEADER_BYTES || bytes[0] !== 0 || bytes[1] !== 1 || ((bytes[2]! << 8) | bytes[3]!) !== n - 20 ||
    (n & 3) !== 0 || bytes[4] !== 0x21 || bytes[5] !== 0x12 || bytes[6] !== 0xa4 || bytes[7] !== 0x42 ||
    core.sockets.length >= 2 || core.role !== "server"
  ) {
    return false;
  }
  let fp = -1;
  for (let at = STUN_HEADER_BYTES; at < n;) {
    if (fp >= 0 || at + 4 > n) return false;
    const type = (bytes[at]! << 8) | bytes[at + 1]!;
    const len = (bytes[at + 2]! << 8) | bytes[at + 3]!;
    const next = at + 4 + len + ((4 - (len & 3)) & 3);
    if (next > n || type < 0x8000) return false;
    if (type === STUN_ATTR.FINGERPRINT) {
      if (len !== 4) return false;
      fp = at;
    }
    at = next;
  }
  if (fp >= 0) {
    const got = ((bytes[fp + 4]! << 24) | (bytes[fp + 5]! << 16) | (bytes[fp + 6]! << 8) | bytes[fp + 7]!) >>>
      0;
    if (got !== fingerprint(bytes, fp)) return false;
  }
  const ip = hostBytes(from.hostname);
  if (!ip) return false;
  let skip = 0;
  if (ip.length === 16 && ip[10] === 0xff && ip[11] === 0xff) {
    skip = 12;
    for (let i = 0; i < 10; i++) if (ip[i] !== 0) skip = 0;
  }
  const ipLength = ip.length - skip;
  const stats = core.stats;
  stats.stun.requests++;
  stats.processed++;
  const known = core.table.byAddr.get(key);
  if (known && !known.validated) known.bytesIn += n;
  const dg: Datagram = { now, from, key, size: n, budget: 3 * n, summed: false, cookieOk: false };
  const software = softwareValue(core.node.version);
  // As buildSuccess: the largest of [address, SOFTWARE, FINGERPRINT], [address, FINGERPRINT], [address].
  const limit = Math.min(n + 8 + ipLength, dg.budget);
  const bare = STUN_HEADER_BYTES + 8 + ipLength;
  let size = bare + 8 + attributeSize(software.length);
  let withSoftware = true;
  let withFingerprint = true;
  if (size > limit) {
    withSoftware = false;
    size = bare + 8;
    if (size > limit) {
      withFingerprint = false;
      size = bare;
      if (size > limit) {
        stats.amplificationLimited++;
        return true;
      }
    }
  }
  const out = slabSpace(size);
  out[0] = 0x01; // Binding success response
  out[1] = 0x01;
  out[2] = (size - STUN_HEADER_BYTES) >> 8;
  out[3] = (size - STUN_HEADER_BYTES) & 0xff;
  for (let i = 4; i < STUN_HEADER_BYTES; i++) out[i] = bytes[i]!;
  // XOR-MAPPED-ADDRESS: the port XOR the cookie's top half, the address XOR the cookie (and the id).
  out[20] = 0x00;
  out[21] = 0x20;
  out[23] = 4 + ipLength;
  out[25] = ipLength === 4 ? 1 : 2;
  out[26] = (from.port >> 8) ^ bytes[4]!;
  out[27] = (from.port & 0xff) ^ bytes[5]!;
  for (let i = 0; i < ipLength; i++) out[28 + i] = ip[skip + i]! ^ bytes[4 + i]!;
  let at = bare;
  if (withSoftware) at = putAttribute(out, at, STUN_ATTR.SOFTWARE, software);
  if (withFingerprint) putFingerprint(out, at);
  const before = core.queuedTransmits;
  core.transmitStateless(dg, from, out, null, 0);
  if (core.queuedTransmits !== before) stats.stun.responses++;
  return true;
}

/**
 * The address attributes of an answer to a request that came to `socket` and is answered from `target`:
 * RESPONSE-ORIGIN and OTHER-ADDRESS only when the shell has alternate sockets (RFC 5780 service), each only
 * for a socket with a specific address (one bound to `0.0.0.0` does not know which of its addresses a
 * request came to).
 */
function addressesOf(
  core: Core,
  msg: StunMessage,
  mapped: Uint8Array,
  socket: number,
  target: number,
): Addresses {
  if (core.sockets.length < 2) return { mapped, origin: null, other: null };
  const local = (i: number) => {
    const s = core.sockets[i];
    return s && !isUnspecified(s.hostname) ? addressValue(s, false, msg.id) : null;
  };
  return { mapped, origin: local(target), other: local(core.socketBeside(socket, true, true)) };
}

/**
 * What {@linkcode build} gives for a success that carries only the mapped address, written directly: the
 * largest of [address, SOFTWARE, FINGERPRINT], [address, FINGERPRINT] and [address] within `limit` bytes
 * (no FINGERPRINT for an RFC 3489 client), or null when not even the address fits. Byte for byte the same
 * (tests/stun_fast_test.ts checks it against `build`).
 */
export function buildSuccess(
  msg: StunMessage,
  mapped: Uint8Array,
  software: Uint8Array,
  limit: number,
): Uint8Array | null {
  const fp = msg.classic ? 0 : 8;
  const bare = STUN_HEADER_BYTES + attributeSize(mapped.length);
  let size = bare + fp + attributeSize(software.length);
  let withSoftware = true;
  let withFingerprint = fp !== 0;
  if (size > limit) {
    withSoftware = false;
    size = bare + fp;
    if (size > limit) {
      withFingerprint = false;
      size = bare;
      if (size > limit) return null;
    }
  }
  const out = new Uint8Array(size);
  out[0] = 0x01; // Binding success response: method 0x001, class 0b10
  out[1] = 0x01;
  out[2] = (size - STUN_HEADER_BYTES) >> 8;
  out[3] = (size - STUN_HEADER_BYTES) & 0xff;
  const id = msg.id;
  for (let i = 0; i < 16; i++) out[4 + i] = id[i]!;
  let at = putAttribute(
    out,
    STUN_HEADER_BYTES,
    msg.classic ? STUN_ATTR.MAPPED_ADDRESS : STUN_ATTR.XOR_MAPPED_ADDRESS,
    mapped,
  );
  if (withSoftware) at = putAttribute(out, at, STUN_ATTR.SOFTWARE, software);
  if (withFingerprint) putFingerprint(out, at);
  return out;
}

/** The largest answer within `limit` bytes, or null when not even the bare one fits. */
export function build(
  msg: StunMessage,
  addresses: Addresses,
  verdict: Verdict,
  softwareValue: Uint8Array,
  limit: number,
): Uint8Array | null {
  const software = { type: STUN_ATTR.SOFTWARE, value: softwareValue };
  // RFC 3489 clients know neither FINGERPRINT nor XOR-MAPPED-ADDRESS, and know RESPONSE-ORIGIN and
  // OTHER-ADDRESS by their old names (SOURCE-ADDRESS, CHANGED-ADDRESS).
  for (
    const [withSoftware, withPhrase, withFingerprint, withOrigin, withOther]
      of TRIES[msg.classic ? "classic" : "fp"]
  ) {
    const attributes: StunOutgoing["attributes"][number][] = [];
    let cls: StunOutgoing["class"] = "success";
    if (verdict.kind === "ok") {
      const type = msg.classic ? STUN_ATTR.MAPPED_ADDRESS : STUN_ATTR.XOR_MAPPED_ADDRESS;
      attributes.push({ type, value: addresses.mapped });
      if (withOrigin && addresses.origin) {
        const type = msg.classic ? STUN_ATTR.SOURCE_ADDRESS : STUN_ATTR.RESPONSE_ORIGIN;
        attributes.push({ type, value: addresses.origin });
      }
      if (withOther && addresses.other) {
        const type = msg.classic ? STUN_ATTR.CHANGED_ADDRESS : STUN_ATTR.OTHER_ADDRESS;
        attributes.push({ type, value: addresses.other });
      }
    } else if (verdict.kind === "error") {
      cls = "error";
      const phrase = !withPhrase ? "" : verdict.code === 420 ? "Unknown Attribute" : "Bad Request";
      attributes.push({ type: STUN_ATTR.ERROR_CODE, value: errorCodeValue(verdict.code, phrase) });
      const unknown = verdict.unknown;
      if (unknown.length > 0) {
        // RFC 3489 lists an odd number of types with the last one repeated (a multiple of 4 bytes); RFC
        // 8489 pads as any attribute.
        const list = msg.classic && unknown.length % 2 === 1 ? [...unknown, unknown.at(-1)!] : unknown;
        attributes.push({ type: STUN_ATTR.UNKNOWN_ATTRIBUTES, value: unknownAttributesValue(list) });
      }
    }
    if (withSoftware) attributes.push(software);
    const out: StunOutgoing = {
      method: BINDING,
      class: cls,
      id: msg.id,
      attributes,
      fingerprint: withFingerprint,
    };
    if (stunSize(out) <= limit) return encodeStun(out);
  }
  return null;
}

/**
 * The checks of a Binding request after framing: a FINGERPRINT, when there is one, must be right (else the
 * request is discarded) and last (else 400); CHANGE-REQUEST must be 4 bytes (else 400), and the change it
 * asks for is returned (whether there is a socket to make it from is the caller's question); any other
 * unknown comprehension-required attribute is a 420, PADDING and RESPONSE-PORT (RFC 5780, not served)
 * among them. Attributes after MESSAGE-INTEGRITY(-SHA256) are ignored, as RFC 8489 section 14.5 says,
 * FINGERPRINT aside.
 */
function check(bytes: Uint8Array, msg: StunMessage): Verdict {
  let fingerprint: StunMessage["attributes"][number] | undefined;
  let afterIntegrity = false;
  let bad = false;
  const unknown: number[] = [];
  let change = 0;
  for (const a of msg.attributes) {
    if (fingerprint) {
      bad = true;
      break;
    }
    if (a.type === STUN_ATTR.FINGERPRINT) {
      fingerprint = a;
      continue;
    }
    if (afterIntegrity) continue;
    if (a.type === STUN_ATTR.MESSAGE_INTEGRITY || a.type === STUN_ATTR.MESSAGE_INTEGRITY_SHA256) {
      afterIntegrity = true;
    } else if (a.type === STUN_ATTR.CHANGE_REQUEST) {
      if (a.value.length !== 4) bad = true;
      else change |= a.value[3]! & (CHANGE_IP | CHANGE_PORT);
    } else if (a.type < 0x8000 && !KNOWN_REQUIRED.has(a.type) && !unknown.includes(a.type)) {
      unknown.push(a.type);
    }
  }
  if (fingerprint && !fingerprintOk(bytes, fingerprint)) return { kind: "bad_fingerprint" };
  if (bad) return { kind: "error", code: 400, reason: "bad_request", unknown: [] };
  if (unknown.length > 0) return { kind: "error", code: 420, reason: "unknown_attribute", unknown };
  return { kind: "ok", change };
}
