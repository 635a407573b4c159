/**
 * HMAC-SHA-256, synchronous (the protocol core cannot await WebCrypto). The built-in `node:crypto` module;
 * one module so another implementation is a one-line change.
 * @module
 */
import { createHmac } from "node:crypto";

/** HMAC-SHA-256 of `data` under `key`. */
export function hmacSha256(key: Uint8Array, data: string): Uint8Array {
  return new Uint8Array(createHmac("sha256", key).update(data).digest());
}
