/**
 * The STUN room: Binding requests on the main port (RFC 8489, and RFC 3489 clients' requests without the
 * magic cookie) answered with the address they came from. The coordinator hands it every datagram that
 * `isStunDatagram` picks out, after admission's per-IP and global limits; the answer is a stateless reply
 * that spends the datagram's anti-amplification budget like any other.
 *
 * No answer is larger than its request plus the size of the mapped-address attribute, whatever the budget
 * would allow: when the full answer would be, SOFTWARE is left out first, then an error's reason phrase,
 * then FINGERPRINT. What is not answered is a counted drop (`stun_*` reasons). docs/protocol.md#stun has the
 * rules with a worked example.
 *
 * @module
 */
import type { SocketAddr } from "../wire/mod.ts";
import {
  addressValue,
  attributeSize,
  BINDING,
  encodeStun,
  errorCodeValue,
  fingerprintOk,
  hex4,
  parseStun,
  STUN_ATTR,
  StunDecodeError,
  type StunMessage,
  type StunOutgoing,
  stunSize,
  unknownAttributesValue,
} from "../wire/stun.ts";
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

/** What the checks of a Binding request decided. */
type Verdict =
  | { kind: "ok" }
  | { kind: "bad_fingerprint" }
  | { kind: "error"; code: 400 | 420; reason: StunErrorReason; unknown: number[] };

const encoder = new TextEncoder();

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
}

/**
 * Handles one datagram `isStunDatagram` picked out: answers a Binding request, counts everything else STUN
 * and drops it. The room keeps no state of its own.
 */
export function onStunDatagram(core: Core, input: StunInput): void {
  const { now, from, key, bytes } = input;
  const stats = core.stats;
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
  const verdict = check(bytes, msg);
  if (verdict.kind === "bad_fingerprint") {
    return core.drop(from, key, "stun_bad_fingerprint", "STUN request with a wrong FINGERPRINT");
  }
  const mapped = addressValue(from, !msg.classic, msg.id);
  if (!mapped) return core.drop(from, key, "unexpected", `STUN request from a non-IP source "${key}"`);
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
  const software = encoder.encode(`p2p_server ${core.node.version}`.slice(0, MAX_SOFTWARE));
  const answer = build(msg, mapped, verdict, software, bytes.length + attributeSize(mapped.length));
  if (!answer) {
    stats.amplificationLimited++;
    return;
  }
  const before = core.queuedTransmits;
  core.transmitStateless(dg, from, answer, null);
  if (core.queuedTransmits === before) return;
  if (verdict.kind === "ok") stats.stun.responses++;
  else stats.stun.errors[verdict.reason]++;
}

/** The largest answer within `limit` bytes, or null when not even the bare one fits. */
function build(
  msg: StunMessage,
  mapped: Uint8Array,
  verdict: Verdict,
  softwareValue: Uint8Array,
  limit: number,
): Uint8Array | null {
  const software = { type: STUN_ATTR.SOFTWARE, value: softwareValue };
  // RFC 3489 clients know neither FINGERPRINT nor XOR-MAPPED-ADDRESS.
  const wantsFingerprint = !msg.classic;
  const tries: [boolean, boolean, boolean][] = [
    // [SOFTWARE, reason phrase, FINGERPRINT], in the order they are given up.
    [true, true, wantsFingerprint],
    [false, true, wantsFingerprint],
    [false, false, wantsFingerprint],
    [false, false, false],
  ];
  for (const [withSoftware, withPhrase, withFingerprint] of tries) {
    const attributes: StunOutgoing["attributes"][number][] = [];
    let cls: StunOutgoing["class"] = "success";
    if (verdict.kind === "ok") {
      const type = msg.classic ? STUN_ATTR.MAPPED_ADDRESS : STUN_ATTR.XOR_MAPPED_ADDRESS;
      attributes.push({ type, value: mapped });
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
 * request is discarded) and last (else 400); CHANGE-REQUEST must be 4 bytes (else 400) and may ask for no
 * change (else 420: there is no alternate address to answer from yet); any other unknown
 * comprehension-required attribute is a 420. Attributes after MESSAGE-INTEGRITY(-SHA256) are ignored, as
 * RFC 8489 section 14.5 says, FINGERPRINT aside.
 */
function check(bytes: Uint8Array, msg: StunMessage): Verdict {
  let fingerprint: StunMessage["attributes"][number] | undefined;
  let afterIntegrity = false;
  let bad = false;
  const unknown: number[] = [];
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
      else if ((a.value[3]! & 0x06) !== 0 && !unknown.includes(a.type)) unknown.push(a.type);
    } else if (a.type < 0x8000 && !KNOWN_REQUIRED.has(a.type) && !unknown.includes(a.type)) {
      unknown.push(a.type);
    }
  }
  if (fingerprint && !fingerprintOk(bytes, fingerprint)) return { kind: "bad_fingerprint" };
  if (bad) return { kind: "error", code: 400, reason: "bad_request", unknown: [] };
  if (unknown.length > 0) return { kind: "error", code: 420, reason: "unknown_attribute", unknown };
  return { kind: "ok" };
}
