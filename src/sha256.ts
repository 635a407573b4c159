/**
 * SHA-256 (FIPS 180-4) and HMAC-SHA-256 (RFC 2104) in plain JavaScript, for the short inputs of the protocol
 * core: node ids, session MACs and HKDF. For a few hundred bytes it is several times cheaper than a
 * `node:crypto` hash object under Deno (no native call, no `Buffer` per step, no allocation but the 32-byte
 * result), and an HMAC key keeps its two padded-key states as eight words each, so a MAC costs only the
 * message's blocks plus one. Used through `deps/crypto.ts` only; its tests compare it with `node:crypto`.
 *
 * @module
 */

/** The first `count` primes. */
function primes(count: number): number[] {
  const out: number[] = [];
  for (let n = 2; out.length < count; n++) {
    if (out.every((p) => n % p !== 0)) out.push(n);
  }
  return out;
}

/** floor(n^(1/k)) for a positive bigint, by Newton's method from above. */
function integerRoot(n: bigint, k: bigint): bigint {
  let x = 1n << (BigInt(n.toString(2).length) / k + 1n);
  for (;;) {
    const y = ((k - 1n) * x + n / x ** (k - 1n)) / k;
    if (y >= x) return x;
    x = y;
  }
}

/** The first 32 bits of the fractional part of the k-th root of each prime, computed exactly. */
function fractionBits(count: number, k: bigint): Int32Array {
  return Int32Array.from(primes(count), (p) => Number(integerRoot(BigInt(p) << (32n * k), k) & 0xffff_ffffn));
}

/** The round constants (cube roots of the first 64 primes). */
const K = fractionBits(64, 3n);
/** The initial hash value (square roots of the first 8 primes). */
const IV = fractionBits(8, 2n);

// Scratch space, reused by every call (the module is synchronous, so calls never interleave).
const W = new Int32Array(64);
const TAIL = new Uint8Array(128);
const INNER = new Uint8Array(32);

/** Runs the compression function over the 64-byte block at `bytes[at]` into `state`. */
function compress(state: Int32Array, bytes: Uint8Array, at: number): void {
  const w = W;
  for (let t = 0; t < 16; t++, at += 4) {
    w[t] = (bytes[at]! << 24) | (bytes[at + 1]! << 16) | (bytes[at + 2]! << 8) | bytes[at + 3]!;
  }
  for (let t = 16; t < 64; t++) {
    const x = w[t - 15]!;
    const y = w[t - 2]!;
    const s0 = ((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3);
    const s1 = ((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10);
    w[t] = (w[t - 16]! + s0 + w[t - 7]! + s1) | 0;
  }
  let a = state[0]!, b = state[1]!, c = state[2]!, d = state[3]!;
  let e = state[4]!, f = state[5]!, g = state[6]!, h = state[7]!;
  for (let t = 0; t < 64; t++) {
    const s1 = ((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7));
    const t1 = (h + s1 + ((e & f) ^ (~e & g)) + K[t]! + w[t]!) | 0;
    const s0 = ((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10));
    const t2 = (s0 + ((a & b) ^ (a & c) ^ (b & c))) | 0;
    h = g;
    g = f;
    f = e;
    e = (d + t1) | 0;
    d = c;
    c = b;
    b = a;
    a = (t1 + t2) | 0;
  }
  state[0] = (state[0]! + a) | 0;
  state[1] = (state[1]! + b) | 0;
  state[2] = (state[2]! + c) | 0;
  state[3] = (state[3]! + d) | 0;
  state[4] = (state[4]! + e) | 0;
  state[5] = (state[5]! + f) | 0;
  state[6] = (state[6]! + g) | 0;
  state[7] = (state[7]! + h) | 0;
}

const STATE = new Int32Array(8);

/**
 * Continues a hash whose state after `prefix` bytes (a multiple of 64) is `from`, over `data[0, end)` and
 * then the byte `last` when it is not -1, and writes the 32-byte digest to `out`.
 */
function finish(
  from: Int32Array,
  prefix: number,
  data: Uint8Array,
  end: number,
  last: number,
  out: Uint8Array,
): void {
  const state = STATE;
  state.set(from);
  let at = 0;
  for (; at + 64 <= end; at += 64) compress(state, data, at);
  const tail = TAIL;
  tail.fill(0);
  let n = 0;
  while (at < end) tail[n++] = data[at++]!;
  if (last !== -1) tail[n++] = last;
  tail[n++] = 0x80;
  const blocks = n + 8 <= 64 ? 1 : 2;
  const bits = (prefix + end + (last !== -1 ? 1 : 0)) * 8;
  const lengthAt = blocks * 64 - 8;
  const high = Math.floor(bits / 0x1_0000_0000);
  tail[lengthAt] = high >>> 24;
  tail[lengthAt + 1] = high >>> 16;
  tail[lengthAt + 2] = high >>> 8;
  tail[lengthAt + 3] = high;
  tail[lengthAt + 4] = bits >>> 24;
  tail[lengthAt + 5] = bits >>> 16;
  tail[lengthAt + 6] = bits >>> 8;
  tail[lengthAt + 7] = bits;
  compress(state, tail, 0);
  if (blocks === 2) compress(state, tail, 64);
  for (let i = 0; i < 8; i++) {
    const v = state[i]!;
    out[4 * i] = v >>> 24;
    out[4 * i + 1] = v >>> 16;
    out[4 * i + 2] = v >>> 8;
    out[4 * i + 3] = v;
  }
}

/** SHA-256 of `data[0, end)`. */
export function sha256(data: Uint8Array, end: number = data.length): Uint8Array {
  const out = new Uint8Array(32);
  finish(IV, 0, data, end, -1, out);
  return out;
}

/** Writes to `state` the hash state after one block of the key padded and XORed with `pad`. */
function padState(key: Uint8Array, pad: number, state: Int32Array): void {
  const block = TAIL;
  for (let i = 0; i < 64; i++) block[i] = i < key.length ? key[i]! ^ pad : pad;
  state.set(IV);
  compress(state, block, 0);
}

/** An HMAC-SHA-256 key: its inner and outer hash states after the padded key. */
export class Sha256Hmac {
  readonly #inner: Int32Array;
  readonly #outer: Int32Array;

  /** @param key Any length (longer than 64 bytes is hashed first, as HMAC says). */
  constructor(key: Uint8Array) {
    const k = key.length > 64 ? sha256(key) : key;
    // Typed arrays are costly to allocate under Deno (about 0.5 µs each): one holds both states.
    const states = new Int32Array(16);
    this.#inner = states.subarray(0, 8);
    this.#outer = states.subarray(8);
    padState(k, 0x36, this.#inner);
    padState(k, 0x5c, this.#outer);
  }

  /** The HMAC (32 bytes) of `data[0, end)` followed by the byte `last` when it is not -1. */
  digest(data: Uint8Array, end: number = data.length, last = -1): Uint8Array {
    finish(this.#inner, 64, data, end, last, INNER);
    const out = new Uint8Array(32);
    finish(this.#outer, 64, INNER, 32, -1, out);
    return out;
  }
}
