/**
 * The wire format's vocabulary: the eleven message types, the eight-key envelope and its optional members,
 * the payload shapes p2p_server understands, and the limits that bound them. Types and constants only (plus
 * two small type guards the codec and the payload checks share).
 *
 * @module
 */
/** The eleven message types, spelled as on the wire (PascalCase, case-sensitive). */
export const MESSAGE_TYPES = [
  "HandshakeRequest",
  "HandshakeResponse",
  "Ping",
  "Pong",
  "DiscoveryRequest",
  "DiscoveryResponse",
  "Data",
  "Error",
  "Disconnect",
  "Ack",
  "Retransmit",
] as const;

/** One of the eleven message types. */
export type MessageType = typeof MESSAGE_TYPES[number];

/** The message types as a set, for decoding. */
export const MESSAGE_TYPE_SET: ReadonlySet<string> = new Set(MESSAGE_TYPES);

/** Any JSON value. */
export type Json = null | boolean | number | string | Json[] | { [key: string]: Json };

/** A decoded or to-be-encoded envelope: every message on the wire has exactly these eight keys. */
export interface Message {
  /** UUID of this message; unique per message. */
  id: string;
  /** What the message is. */
  message_type: MessageType;
  /** Unix time of sending. We send seconds; on input seconds or milliseconds are accepted. */
  timestamp: number;
  /** The message body; its shape depends on `message_type`. */
  payload: Json;
  /** `"ip:port"` as the sender believes it is reachable. Informational only, never used for routing. */
  sender_addr: string | null;
  /** Per-sender counter (u32), used for duplicate suppression and Ack matching. */
  sequence_number: number | null;
  /** Whether the sender asks for an `Ack`. */
  requires_ack: boolean;
  /** On an `Ack`: the acknowledged message's `id` (we send this) or `sequence_number` (accepted on input). */
  ack_for: string | number | null;
  /**
   * Extension (after the eight keys; old parsers ignore it): on HandshakeRequest and HandshakeResponse, the
   * version of p2p_server's reliability extensions the sender speaks (`rel`, `ord`, `frag`, the Retransmit
   * shapes). Currently 1.
   */
  ext?: number;
  /** Extension: on a reliable message, its number (u32) in the sender's reliable stream to this receiver. */
  rel?: number;
  /** Extension: on ordered Data, its number (u32, from 1 per session) in the sender's ordered stream. */
  ord?: number;
  /** Extension: on a fragment, which whole message it belongs to; the payload is a base64 chunk. */
  frag?: FragmentRef;
  /** Extension: on a HandshakeRequest, the stateless cookie a busy server handed out (hex). */
  cookie?: string;
  /** Extension: on a keyed HandshakeRequest or HandshakeResponse, the sender's key, signature and DH key. */
  auth?: AuthFields;
  /** Extension: on every datagram of an authenticated session, its session id (16 hex digits). */
  sid?: string;
  /**
   * Set by {@linkcode decodeMessage} when the datagram ends in a `mac` member: the tag (32 hex digits) and
   * where the member starts, for the receiver to check with its session key. Never written by
   * {@linkcode encodeMessage}; see its `macKey` parameter.
   */
  mac?: { tag: string; end: number };
  /**
   * Set by {@linkcode decodeMessage} when the datagram ended in a `sum` field (a CRC-32 of the rest) and it
   * matched. Never written by {@linkcode encodeMessage}; see {@linkcode encodeMessage}'s `checksum` option.
   */
  summed?: true;
}

/** Where a fragment belongs: the whole message's id, its index and the fragment count. */
export interface FragmentRef {
  /** Id of the whole message. */
  of: string;
  /** Index, from 0. */
  i: number;
  /** Number of fragments, at most {@linkcode MAX_FRAGMENTS}. */
  n: number;
}

/** The `auth` extension of a keyed handshake message (every value unpadded base64url unless noted). */
export interface AuthFields {
  /** The sender's Ed25519 public key (32 bytes). */
  key: string;
  /** The sender's X25519 public key for this handshake (32 bytes). */
  dh: string;
  /** The Ed25519 signature (64 bytes) of the message's canonical claims. */
  sig: string;
  /** On a request: the server it is meant for (its node id, or `"*"`). */
  to?: string;
  /** On a response: the session id assigned (16 hex digits). */
  sid?: string;
}

/** The most fragments one message may be cut into. */
export const MAX_FRAGMENTS = 65_535;

/** The version of the extensions this implementation speaks (the `ext` envelope field). */
export const EXTENSIONS_VERSION = 1;

/** Description of a node, carried by `HandshakeRequest` and `HandshakeResponse`. */
export interface NodeInfo {
  /** The node's UUID. */
  id: string;
  /** Human-readable name; non-empty. */
  name: string;
  /** Software version; non-empty. */
  version: string;
  /** `"ip:port"` where the node says it listens. */
  listen_addr: string;
  /** Free-form capability names (the server adds `"server"`). */
  capabilities: string[];
  /** String key/value pairs; `network_id` isolates networks (default `"p2p_default"`). */
  metadata: Record<string, string>;
}

/** `HandshakeResponse.payload`. */
export interface HandshakeResponsePayload {
  /** The responder's own NodeInfo. */
  node_info: NodeInfo;
  /** Whether the handshake was accepted. */
  success: boolean;
  /** Why it was not, or `null`. */
  error_message: string | null;
}

/** One entry of a `DiscoveryResponse`. */
export interface PeerInfo {
  /** Node id. */
  id: string;
  /** The peer's declared `listen_addr`. */
  addr: string;
  /** Unix seconds when the server last heard from the peer. */
  last_seen: number;
  /** The peer's declared capabilities. */
  capabilities: string[];
  /** The peer's name (an extension; upstream parsers ignore it). */
  name: string;
  /**
   * The peer's address as the server sees it (its NAT's public mapping), `"ip:port"` (an extension, sent to
   * peers that speak p2p_server's extensions).
   */
  observed_addr?: string;
  /**
   * How the server classified the peer's NAT (an extension, sent to peers that speak p2p_server's
   * extensions, and only once something was measured): see {@linkcode NatInfo}.
   */
  nat?: NatInfo;
}

/**
 * A NAT classification on the wire: RFC 4787 mapping and filtering behaviour (`endpoint-independent`,
 * `address-dependent`, `address-and-port-dependent` or `unknown`), and when measured the step between the
 * ports a sequentially allocating NAT hands out and the shortest binding lifetime seen (ms).
 */
export interface NatInfo {
  /** Mapping behaviour: whether the NAT keeps one public address and port towards every remote. */
  mapping: string;
  /** Filtering behaviour: which unsolicited inbound datagrams the NAT lets through. */
  filtering: string;
  /** The step between the ports a sequentially allocating NAT gave towards successive remotes. */
  port_delta?: number;
  /** The shortest idle time (ms) after which the peer's binding was seen to expire. */
  binding_lifetime_ms?: number;
}

/** The default network when a NodeInfo's metadata carries no `network_id`. */
export const DEFAULT_NETWORK_ID = "p2p_default";

/** Largest value a `sequence_number` may take (u32). */
export const MAX_SEQUENCE = 0xffff_ffff;

/** Why a datagram was dropped before or while decoding. */
export type DecodeFailure =
  | "invalid_utf8"
  | "invalid_json"
  | "not_an_object"
  | "bad_field"
  | "unknown_type"
  | "bad_checksum"
  | "too_deep";

/** Deepest nesting of arrays and objects accepted in a datagram (the envelope counts as one level). */
export const MAX_JSON_DEPTH = 64;

/** Thrown by {@linkcode decodeMessage} for undecodable input; `reason` is the stats bucket. */
export class DecodeError extends SyntaxError {
  /** The stats bucket the drop is counted under. */
  readonly reason: DecodeFailure;
  /**
   * @param reason The stats bucket.
   * @param message Human-readable detail.
   */
  constructor(reason: DecodeFailure, message: string) {
    super(message);
    this.name = "DecodeError";
    this.reason = reason;
  }
}

/** Whether `value` is a plain object (not null, not an array). */
export function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

/** Whether `value` is a non-negative safe integer. */
export function isNonNegativeInteger(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Whether `value` is a u32 sequence number. */
export function isSequenceNumber(value: unknown): value is number {
  return isNonNegativeInteger(value) && value <= MAX_SEQUENCE;
}

/** A short, quoted rendering of an offending value for error messages. */
export function show(value: unknown): string {
  let text: string;
  try {
    text = value === undefined ? "undefined" : JSON.stringify(value) ?? String(value);
  } catch {
    text = String(value);
  }
  return text.length > 80 ? `${text.slice(0, 77)}...` : text;
}
