/**
 * Synchronous Ed25519, X25519, SHA-256, HMAC and HKDF from the built-in `node:crypto` module. The protocol core is synchronous and WebCrypto is not (and measured slower, see
 * docs/performance.md), so the core's cryptography goes through here; one module, so another implementation
 * is a one-file change. Keys cross this boundary as raw bytes; private keys stay
 * opaque `KeyObject`s and are never serialised here except by {@linkcode exportPrivateKeyPem}.
 *
 * @module
 */
import {
  createHash,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  type KeyObject,
  sign,
  verify,
} from "node:crypto";

export type { KeyObject };

/**
 * A public key object from a raw 32-byte key of curve `crv`. Made from a JWK: `node:crypto` hands its `x`
 * straight to the raw-key constructor, where a DER SubjectPublicKeyInfo would be parsed first (about 0.6 µs
 * less CPU per key, `bench/crypto_bench.ts`; an Ed25519 key's point decompression, some 5 µs, stays).
 */
function publicKeyObject(crv: "Ed25519" | "X25519", raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new RangeError(`Bad public key length: ${raw.length} bytes, need 32`);
  return createPublicKey({ key: jwk(crv, raw), format: "jwk" });
}

/** The JWK of a raw 32-byte public key of curve `crv`. */
function jwk(crv: "Ed25519" | "X25519", raw: Uint8Array): { kty: "OKP"; crv: string; x: string } {
  return { kty: "OKP", crv, x: raw.toBase64({ alphabet: "base64url", omitPadding: true }) };
}

/** A public key object from a raw 32-byte Ed25519 key. @throws {RangeError} for another length. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  return publicKeyObject("Ed25519", raw);
}

/** A public key object from a raw 32-byte X25519 key. @throws {RangeError} for another length. */
export function x25519PublicKey(raw: Uint8Array): KeyObject {
  return publicKeyObject("X25519", raw);
}

/** The raw 32 bytes of an Ed25519 or X25519 public key object. */
export function rawPublic(key: KeyObject): Uint8Array {
  const der = new Uint8Array(key.export({ format: "der", type: "spki" }));
  return der.slice(der.length - 32);
}

/** An Ed25519 or X25519 key pair: the raw 32-byte public key and the opaque private key. */
export interface KeyPair {
  /** Raw public key (32 bytes). */
  publicKey: Uint8Array;
  /** Private key. */
  privateKey: KeyObject;
}

/** A new Ed25519 key pair. */
export function generateEd25519(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("ed25519");
  return { publicKey: rawPublic(publicKey), privateKey };
}

/** A new X25519 key pair (one per handshake). */
export function generateX25519(): KeyPair {
  const { publicKey, privateKey } = generateKeyPairSync("x25519");
  return { publicKey: rawPublic(publicKey), privateKey };
}

/** Reads a PKCS#8 PEM Ed25519 private key. @throws {Error} when it is not one. */
export function importEd25519Pem(pem: string): KeyPair {
  const privateKey = createPrivateKey({ key: pem, format: "pem" });
  if (privateKey.asymmetricKeyType !== "ed25519") {
    throw new TypeError(`not an Ed25519 key (${privateKey.asymmetricKeyType ?? "unknown type"})`);
  }
  return { publicKey: rawPublic(createPublicKey(privateKey)), privateKey };
}

/** The private key as PKCS#8 PEM, for the key file only. */
export function exportPrivateKeyPem(key: KeyObject): string {
  return String(key.export({ format: "pem", type: "pkcs8" }));
}

/** An Ed25519 signature (64 bytes) of `data`. */
export function signEd25519(privateKey: KeyObject, data: Uint8Array): Uint8Array {
  return sign(null, data, privateKey); // a Buffer is a Uint8Array: no copy
}

/**
 * Whether `signature` is a valid Ed25519 signature of `data` by the raw public key `publicKey`. The key goes
 * to `node:crypto` as a JWK, which it turns into its native key without a `KeyObject` around it; a cache of
 * key objects (tried until 2026-12-04) saved less than it cost with distinct peers (docs/performance.md).
 */
export function verifyEd25519(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  try {
    return verify(null, data, { key: jwk("Ed25519", publicKey), format: "jwk" }, signature);
  } catch {
    return false;
  }
}

/** The X25519 shared secret of our private key and their raw public key, or null for a bad key. */
export function x25519(privateKey: KeyObject, theirPublic: Uint8Array): Uint8Array | null {
  try {
    return diffieHellman({ privateKey, publicKey: publicKeyObject("X25519", theirPublic) });
  } catch {
    return null;
  }
}

/** SHA-1 of a text as 40 lowercase hex digits (the name Redis gives a Lua script; not for security). */
export function sha1Hex(text: string): string {
  return createHash("sha1").update(text).digest("hex");
}

/** SHA-256 of `first` followed by `second`, as 64 lowercase hex digits. */
export function sha256Hex(first: Uint8Array, second: Uint8Array): string {
  return createHash("sha256").update(first).update(second).digest("hex");
}

/** SHA-256 of `data`. */
export function sha256(data: Uint8Array): Uint8Array {
  return createHash("sha256").update(data).digest();
}

/**
 * HKDF-SHA-256 (`node:crypto`: for one derivation per handshake it measured a little faster than HKDF on top of
 * the JavaScript HMAC). An `info` given as bytes saves `node:crypto` encoding a text on every call.
 */
export function hkdf(
  ikm: Uint8Array,
  salt: Uint8Array,
  info: string | Uint8Array,
  length: number,
): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", ikm, salt, info, length));
}

/** HMAC-SHA-256 of `data[0, end)` followed by the byte `last` (when given). */
export function hmac(key: Uint8Array, data: Uint8Array, end = data.length, last?: number): Uint8Array {
  const h = createHmac("sha256", key).update(end === data.length ? data : data.subarray(0, end));
  if (last !== undefined) h.update(Uint8Array.of(last));
  return h.digest();
}

/**
 * HMAC-SHA-256 under one key, for many messages: what a session's send and receive keys are. Made by a
 * {@linkcode MacKeyFactory}: {@linkcode HmacKey} here, or OpenSSL's (src/openssl.ts).
 */
export interface MacKey {
  /** The HMAC of `data[0, end)` followed by the byte `last` (when given). */
  digest(data: Uint8Array, end?: number, last?: number): Uint8Array;
  /** {@linkcode MacKey.digest} as lowercase hex. */
  hex(data: Uint8Array, end?: number, last?: number): string;
}

/** Makes the {@linkcode MacKey} of a key of at most 64 bytes. */
export type MacKeyFactory = (key: Uint8Array) => MacKey;

/** `node:crypto`'s {@linkcode MacKey}s. */
export const nodeMacKey: MacKeyFactory = (key) => new HmacKey(key);

/** One-byte arrays of each byte value, for the trailing byte of an HMAC's message. */
const LAST_BYTE = Array.from({ length: 256 }, (_, i) => Uint8Array.of(i));

/**
 * HMAC-SHA-256 under one key, for many messages: the padded key is hashed once and its hash states copied per
 * message, about twice as fast as a fresh HMAC each time (`bench/crypto_bench.ts`).
 *
 * @example
 * ```ts
 * import { hmac, HmacKey } from "./crypto.ts";
 * const key = new Uint8Array(32).fill(1), data = new TextEncoder().encode("x");
 * if (new HmacKey(key).digest(data).join() !== hmac(key, data).join()) throw new Error("not HMAC");
 * ```
 */
export class HmacKey implements MacKey {
  readonly #inner: ReturnType<typeof createHash>;
  readonly #outer: ReturnType<typeof createHash>;

  /** @param key At most 64 bytes. */
  constructor(key: Uint8Array) {
    if (key.length > 64) throw new RangeError(`HMAC key too long: ${key.length} bytes, at most 64`);
    const pads = new Uint8Array(128);
    for (let i = 0; i < 64; i++) {
      const k = key[i] ?? 0;
      pads[i] = k ^ 0x36;
      pads[64 + i] = k ^ 0x5c;
    }
    this.#inner = createHash("sha256").update(pads.subarray(0, 64));
    this.#outer = createHash("sha256").update(pads.subarray(64));
  }

  /** The HMAC of `data[0, end)` followed by the byte `last` (when given). */
  digest(data: Uint8Array, end = data.length, last?: number): Uint8Array {
    return this.#outer.copy().update(this.#innerDigest(data, end, last)).digest();
  }

  /** {@linkcode HmacKey.digest} as lowercase hex (`node:crypto` writes it: no bytes to copy or format). */
  hex(data: Uint8Array, end = data.length, last?: number): string {
    return this.#outer.copy().update(this.#innerDigest(data, end, last)).digest("hex");
  }

  #innerDigest(data: Uint8Array, end: number, last: number | undefined): Uint8Array {
    const inner = this.#inner.copy().update(end === data.length ? data : data.subarray(0, end));
    if (last !== undefined) inner.update(LAST_BYTE[last]!);
    return inner.digest();
  }
}

/** HMAC-SHA-256 of a text under `key`. */
export function hmacSha256(key: Uint8Array, data: string): Uint8Array {
  return createHmac("sha256", key).update(data).digest();
}
