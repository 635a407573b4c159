/**
 * Key-based node identity and authenticated sessions: node ids derived from Ed25519 public keys, the
 * canonical bytes a HandshakeRequest and a HandshakeResponse sign, the X25519 session keys, the bounded
 * replay cache of signed requests, and the per-datagram MAC. Pure apart from the cryptography of
 * `deps/crypto.ts`; no I/O.
 *
 * @module
 */
import { generateEd25519, type KeyObject, type KeyPair, sha256Hex } from "../deps/crypto.ts";

/** The auth policies a server can run. */
export const AUTH_POLICIES = ["off", "optional", "required"] as const;

/** One of {@linkcode AUTH_POLICIES}. */
export type AuthPolicy = typeof AUTH_POLICIES[number];

/** A node's key-based identity. Its private key never leaves this object except into the key file. */
export interface Identity {
  /** Raw Ed25519 public key (32 bytes). */
  readonly publicKey: Uint8Array;
  /** The public key as unpadded base64url, the form it takes on the wire and in config. */
  readonly publicKeyText: string;
  /** The node id derived from the public key ({@linkcode nodeIdForKey}). */
  readonly nodeId: string;
  /** The private key (opaque). */
  readonly privateKey: KeyObject;
}

/** An identity for a key pair. */
export function identityFrom(pair: KeyPair): Identity {
  return {
    publicKey: pair.publicKey,
    publicKeyText: toBase64Url(pair.publicKey),
    nodeId: nodeIdForKey(pair.publicKey),
    privateKey: pair.privateKey,
  };
}

/**
 * A new random identity.
 *
 * @example
 * ```ts
 * import { generateIdentity, nodeIdForKey } from "./auth.ts";
 * const id = generateIdentity();
 * if (id.nodeId !== nodeIdForKey(id.publicKey)) throw new Error("the id comes from the key");
 * ```
 */
export function generateIdentity(): Identity {
  return identityFrom(generateEd25519());
}

const ID_CONTEXT = new TextEncoder().encode("p2p_server node id v1\n");

/**
 * The node id of a public key: the first 16 bytes of SHA-256("p2p_server node id v1\n" || key), written as
 * a UUID of version 8 (RFC 9562's custom version: 0x80 in byte 6's high nibble) and variant 10.
 */
export function nodeIdForKey(publicKey: Uint8Array): string {
  const h = sha256Hex(ID_CONTEXT, publicKey);
  // Byte 6 is hex digits 12-13 (its high nibble becomes 8), byte 8 digits 16-17 (its top two bits become 10).
  return h.slice(0, 8) + "-" + h.slice(8, 12) + "-8" + h.slice(13, 16) + "-" +
    VARIANT_DIGIT[Number.parseInt(h[16]!, 16) & 3] + h.slice(17, 20) + "-" + h.slice(20, 32);
}

/** The hex digit of a byte's high nibble with its top two bits set to 10, by the nibble's low two bits. */
const VARIANT_DIGIT = ["8", "9", "a", "b"];

/** Unpadded base64url. */
export function toBase64Url(bytes: Uint8Array): string {
  return bytes.toBase64({ alphabet: "base64url", omitPadding: true });
}

/** Decodes unpadded base64url of exactly `length` bytes, or returns null. */
export function fromBase64Url(text: unknown, length: number): Uint8Array | null {
  // Unpadded, `length` bytes take exactly this many characters. The decoder skips white space and takes
  // padding, but either one in a text of that length leaves fewer characters of data, so fewer bytes:
  // checking both lengths is as strict as matching the text against [A-Za-z0-9_-]*, without the pattern.
  if (typeof text !== "string" || text.length !== Math.ceil(length * 4 / 3)) return null;
  try {
    const bytes = Uint8Array.fromBase64(text, { alphabet: "base64url" });
    return bytes.length === length ? bytes : null;
  } catch {
    return null;
  }
}

const utf8 = new TextEncoder();

/** What a HandshakeRequest's signature covers. */
export interface RequestClaims {
  /** The requester's node id. */
  nodeId: string;
  /** Its network. */
  networkId: string;
  /** Its declared listen address. */
  listenAddr: string;
  /** The server it is meant for: that server's node id, or `"*"` when the requester does not know it. */
  to: string;
  /** The envelope timestamp (Unix seconds). */
  timestamp: number;
  /** The request's message id. */
  messageId: string;
  /** The requester's X25519 public key for this handshake (base64url). */
  dh: string;
}

/** The exact bytes a HandshakeRequest signs: a context line, then each claim on its own line. */
export function requestSignedBytes(c: RequestClaims): Uint8Array {
  return utf8.encode(
    [
      "p2p_server handshake request v1",
      c.nodeId,
      c.networkId,
      c.listenAddr,
      c.to,
      String(c.timestamp),
      c.messageId,
      c.dh,
    ].join("\n"),
  );
}

/** What a HandshakeResponse's signature covers. */
export interface ResponseClaims {
  /** The server's node id. */
  serverId: string;
  /** The network it accepted the requester into. */
  networkId: string;
  /** The requester's node id. */
  requesterId: string;
  /** The id of the request it answers. */
  requestId: string;
  /** The envelope timestamp (Unix seconds). */
  timestamp: number;
  /** The response's message id. */
  messageId: string;
  /** The server's X25519 public key for this handshake (base64url). */
  dh: string;
  /** The session id it assigns. */
  sid: string;
}

/** The exact bytes a HandshakeResponse signs. */
export function responseSignedBytes(c: ResponseClaims): Uint8Array {
  return utf8.encode(
    [
      "p2p_server handshake response v1",
      c.serverId,
      c.networkId,
      c.requesterId,
      c.requestId,
      String(c.timestamp),
      c.messageId,
      c.dh,
      c.sid,
    ].join("\n"),
  );
}

/** The two MAC keys of a session. */
export interface SessionKeys {
  /** Key of the requester's datagrams (client to server). */
  c2s: Uint8Array;
  /** Key of the responder's datagrams (server to client). */
  s2c: Uint8Array;
}

/** How many signed request ids a server remembers at most. */
export const REPLAY_CACHE_SIZE = 65_536;

/**
 * The ids of signed HandshakeRequests seen within the freshness window, so none is accepted twice. Bounded:
 * when full, the oldest entry is forgotten (its timestamp is by then likely out of the window anyway).
 */
export class ReplayCache {
  readonly #seen = new Map<string, number>();
  readonly #capacity: number;

  /** @param capacity Most ids remembered. @default {REPLAY_CACHE_SIZE} */
  constructor(capacity: number = REPLAY_CACHE_SIZE) {
    this.#capacity = capacity;
  }

  /** Entries held. */
  get size(): number {
    return this.#seen.size;
  }

  /** Records `id` until `expiresAt` (ms); returns false when it was already recorded and not expired. */
  add(id: string, expiresAt: number, now: number): boolean {
    const seen = this.#seen.get(id);
    if (seen !== undefined && seen > now) return false;
    this.#seen.delete(id);
    for (const [key, expiry] of this.#seen) {
      if (expiry > now && this.#seen.size < this.#capacity) break;
      this.#seen.delete(key);
    }
    this.#seen.set(id, expiresAt);
    return true;
  }
}
