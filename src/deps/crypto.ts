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

const ED25519_SPKI = Uint8Array.from([
  0x30,
  0x2a,
  0x30,
  0x05,
  0x06,
  0x03,
  0x2b,
  0x65,
  0x70,
  0x03,
  0x21,
  0x00,
]);
const X25519_SPKI = Uint8Array.from([0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00]);

function spki(prefix: Uint8Array, raw: Uint8Array): KeyObject {
  if (raw.length !== 32) throw new RangeError(`Bad public key length: ${raw.length} bytes, need 32`);
  const der = new Uint8Array(prefix.length + 32);
  der.set(prefix);
  der.set(raw, prefix.length);
  return createPublicKey({ key: der as unknown as Buffer, format: "der", type: "spki" });
}

/** A public key object from a raw 32-byte Ed25519 key. @throws {RangeError} for another length. */
export function ed25519PublicKey(raw: Uint8Array): KeyObject {
  return spki(ED25519_SPKI, raw);
}

/** A public key object from a raw 32-byte X25519 key. @throws {RangeError} for another length. */
export function x25519PublicKey(raw: Uint8Array): KeyObject {
  return spki(X25519_SPKI, raw);
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

const verifiers = new Map<string, KeyObject>();

/** Whether `signature` is a valid Ed25519 signature of `data` by the raw public key `publicKey`. */
export function verifyEd25519(publicKey: Uint8Array, data: Uint8Array, signature: Uint8Array): boolean {
  if (publicKey.length !== 32 || signature.length !== 64) return false;
  const id = publicKey.toBase64();
  let key = verifiers.get(id);
  if (!key) {
    try {
      key = spki(ED25519_SPKI, publicKey);
    } catch {
      return false;
    }
    if (verifiers.size >= 4096) verifiers.delete(verifiers.keys().next().value!);
    verifiers.set(id, key);
  }
  try {
    return verify(null, data, key, signature);
  } catch {
    return false;
  }
}

/** The X25519 shared secret of our private key and their raw public key, or null for a bad key. */
export function x25519(privateKey: KeyObject, theirPublic: Uint8Array): Uint8Array | null {
  try {
    return diffieHellman({ privateKey, publicKey: spki(X25519_SPKI, theirPublic) });
  } catch {
    return null;
  }
}

/** SHA-1 of a text as 40 lowercase hex digits (the name Redis gives a Lua script; not for security). */
export function sha1Hex(text: string): string {
  return createHash("sha1").update(text).digest("hex");
}

/** SHA-256 of `data`. */
export function sha256(data: Uint8Array): Uint8Array {
  return createHash("sha256").update(data).digest();
}

/** HKDF-SHA-256 (`node:crypto`: for one derivation per handshake it measured a little faster than HKDF on top of the JavaScript HMAC). */
export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string, length: number): Uint8Array {
  return new Uint8Array(hkdfSync("sha256", ikm, salt, info, length));
}

/** HMAC-SHA-256 of `data[0, end)` followed by the byte `last` (when given). */
export function hmac(key: Uint8Array, data: Uint8Array, end = data.length, last?: number): Uint8Array {
  const h = createHmac("sha256", key).update(end === data.length ? data : data.subarray(0, end));
  if (last !== undefined) h.update(Uint8Array.of(last));
  return h.digest();
}

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
export class HmacKey {
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
    const inner = this.#inner.copy().update(end === data.length ? data : data.subarray(0, end));
    if (last !== undefined) inner.update(Uint8Array.of(last));
    return this.#outer.copy().update(inner.digest()).digest();
  }
}

/** HMAC-SHA-256 of a text under `key`. */
export function hmacSha256(key: Uint8Array, data: string): Uint8Array {
  return createHmac("sha256", key).update(data).digest();
}
