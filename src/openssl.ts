/**
 * X25519 and HMAC-SHA-256 through the system's OpenSSL 3 (`libcrypto.so.3`, opened with `Deno.dlopen`; needs
 * `--allow-ffi`), chosen by `crypto_backend` (docs/configuration.md). Each computes what `node:crypto` does
 * in less CPU (docs/performance.md): an X25519 exchange in 25 against 43 µs, the peer's key object included;
 * a MAC in about 0.3 against 2 µs. Ed25519 stays with `node:crypto`: OpenSSL 3.0's measured slower.
 *
 * OpenSSL is used only when it gives the known answers: RFC 7748's (section 6.1) and a refused point of small
 * order for X25519, RFC 4231's for HMAC-SHA-256. An exchange that OpenSSL refuses (such a point, whose shared
 * secret is all zeros) is null, as with `node:crypto`.
 *
 * X25519: a private key is handed to OpenSSL once and used from an OpenSSL key-exchange context kept for it:
 * a server's response key serves up to 1,024 handshakes. At most {@linkcode CONTEXTS} contexts are kept, the
 * least recently used freed first, so OpenSSL's memory is bounded whatever the keys.
 *
 * HMAC: a MAC key is the two SHA-256 states after its padded key (`SHA256_Init` and `SHA256_Update` over the
 * inner and outer pads), 224 bytes in a `Uint32Array` of its own, garbage-collected as any value: OpenSSL
 * holds nothing per key. A MAC copies the inner state into a scratch area, hashes the message into it, then
 * the outer state over the inner digest.
 *
 * @module
 */
import type { KeyObject } from "node:crypto";
import { type MacKey, type MacKeyFactory, nodeMacKey, x25519 } from "./deps/crypto.ts";
import { ConfigError } from "./config_error.ts";
import type { CryptoBackend } from "./config_checks.ts";

const SYMBOLS = {
  OpenSSL_version_num: { parameters: [], result: "u64" },
  OpenSSL_version: { parameters: ["i32"], result: "pointer" },
  EVP_PKEY_new_raw_private_key: { parameters: ["i32", "pointer", "buffer", "usize"], result: "pointer" },
  EVP_PKEY_new_raw_public_key: { parameters: ["i32", "pointer", "buffer", "usize"], result: "pointer" },
  EVP_PKEY_free: { parameters: ["pointer"], result: "void" },
  EVP_PKEY_CTX_new: { parameters: ["pointer", "pointer"], result: "pointer" },
  EVP_PKEY_CTX_free: { parameters: ["pointer"], result: "void" },
  EVP_PKEY_derive_init: { parameters: ["pointer"], result: "i32" },
  EVP_PKEY_derive_set_peer: { parameters: ["pointer", "pointer"], result: "i32" },
  EVP_PKEY_derive: { parameters: ["pointer", "buffer", "buffer"], result: "i32" },
  ERR_clear_error: { parameters: [], result: "void" },
} as const;

type LibCrypto = Deno.DynamicLibrary<typeof SYMBOLS>["symbols"];

/** OpenSSL's identifier of X25519 keys (`NID_X25519`). */
const NID_X25519 = 1034;
/** Private keys kept in OpenSSL at once (each an `EVP_PKEY` and its context). */
export const CONTEXTS = 4;
/** The library's file name: OpenSSL 3's soname on Linux. */
const LIBRARY = "libcrypto.so.3";

interface Context {
  key: KeyObject;
  pkey: Deno.PointerValue;
  ctx: Deno.PointerValue;
}

let lib: LibCrypto | null = null;
let unavailable: string | null | undefined;
let version = "";
/** Contexts, most recently used last. */
const contexts: Context[] = [];
const out = new Uint8Array(32);
const outLength = new BigUint64Array(1);
const outLengthBytes = new Uint8Array(outLength.buffer);

/**
 * Why OpenSSL's X25519 cannot be used in this process (not Linux, no `--allow-ffi`, no `libcrypto.so.3`,
 * an OpenSSL older than 3, or wrong answers), or null when it can. The library is opened and checked on the
 * first call only.
 *
 * @example
 * ```ts
 * import { opensslX25519Unavailable, opensslVersion } from "./openssl.ts";
 * const why = opensslX25519Unavailable();
 * console.log(why === null ? `X25519 from ${opensslVersion()}` : `node:crypto's X25519: OpenSSL ${why}`);
 * ```
 */
export function opensslX25519Unavailable(): string | null {
  if (unavailable !== undefined) return unavailable;
  if (Deno.build.os !== "linux") return unavailable = `is used on Linux only (this is ${Deno.build.os})`;
  if (Deno.permissions.querySync({ name: "ffi" }).state !== "granted") {
    return unavailable = "needs --allow-ffi";
  }
  let opened: LibCrypto;
  try {
    opened = Deno.dlopen(LIBRARY, SYMBOLS).symbols;
  } catch (error) {
    return unavailable = `cannot be opened (${LIBRARY}): ${(error as Error).message}`;
  }
  const number = opened.OpenSSL_version_num();
  if (number < 0x30000000n) {
    return unavailable = `is older than 3.0 (version number 0x${number.toString(16)})`;
  }
  version = Deno.UnsafePointerView.getCString(opened.OpenSSL_version(0)!);
  lib = opened;
  const why = knownAnswers();
  lib = why === null ? opened : null;
  return unavailable = why;
}

/** The library's version text (`OpenSSL 3.0.19 27 Jan 2026`), once {@linkcode opensslX25519Unavailable} is null. */
export function opensslVersion(): string {
  return version;
}

/**
 * The X25519 shared secret of our private key and their raw 32-byte public key, or null for a key OpenSSL
 * refuses (a point of small order) or of another length. Call {@linkcode opensslX25519Unavailable} first.
 *
 * @throws {Error} when OpenSSL cannot be used here.
 */
export function opensslX25519(privateKey: KeyObject, theirPublic: Uint8Array): Uint8Array | null {
  const c = lib;
  if (c === null) throw new Error(`OpenSSL's X25519 ${opensslX25519Unavailable() ?? "is not loaded"}`);
  if (theirPublic.length !== 32) return null;
  const ctx = contextFor(c, privateKey);
  const peer = c.EVP_PKEY_new_raw_public_key(NID_X25519, null, theirPublic, 32n);
  if (peer === null) return failed(c);
  const set = c.EVP_PKEY_derive_set_peer(ctx, peer);
  c.EVP_PKEY_free(peer);
  if (set !== 1) return failed(c);
  outLength[0] = 32n;
  if (c.EVP_PKEY_derive(ctx, out, outLengthBytes) !== 1 || outLength[0] !== 32n) return failed(c);
  return out.slice();
}

/** An exchange OpenSSL refused: its error queue emptied (it keeps at most 16 entries anyway). */
function failed(c: LibCrypto): null {
  c.ERR_clear_error();
  return null;
}

/** The context kept for `key`, made (and the least recently used one freed) when there is none. */
function contextFor(c: LibCrypto, key: KeyObject): Deno.PointerValue {
  const last = contexts[contexts.length - 1];
  if (last?.key === key) return last.ctx;
  const i = contexts.findIndex((x) => x.key === key);
  if (i >= 0) {
    const found = contexts.splice(i, 1)[0]!;
    contexts.push(found);
    return found.ctx;
  }
  const raw = Uint8Array.fromBase64((key.export({ format: "jwk" }) as { d: string }).d, {
    alphabet: "base64url",
  });
  const pkey = c.EVP_PKEY_new_raw_private_key(NID_X25519, null, raw, BigInt(raw.length));
  raw.fill(0);
  if (pkey === null) {
    c.ERR_clear_error();
    throw new TypeError("OpenSSL refused an X25519 private key");
  }
  const ctx = c.EVP_PKEY_CTX_new(pkey, null);
  if (ctx === null || c.EVP_PKEY_derive_init(ctx) !== 1) {
    if (ctx !== null) c.EVP_PKEY_CTX_free(ctx);
    c.EVP_PKEY_free(pkey);
    c.ERR_clear_error();
    throw new Error("OpenSSL cannot start an X25519 exchange");
  }
  if (contexts.length >= CONTEXTS) {
    const old = contexts.shift()!;
    c.EVP_PKEY_CTX_free(old.ctx);
    c.EVP_PKEY_free(old.pkey);
  }
  contexts.push({ key, pkey, ctx });
  return ctx;
}

/** Frees every context kept (for tests: the next exchange makes its context again). */
export function releaseOpensslContexts(): void {
  const c = lib;
  for (const x of contexts.splice(0)) {
    if (c === null) continue;
    c.EVP_PKEY_CTX_free(x.ctx);
    c.EVP_PKEY_free(x.pkey);
  }
}

/** The number of contexts kept now (at most {@linkcode CONTEXTS}). */
export function opensslContexts(): number {
  return contexts.length;
}

/**
 * RFC 7748 section 6.1, both directions, and a point of small order refused; null when all hold. Uses raw
 * private keys directly, without a `KeyObject`.
 */
function knownAnswers(): string | null {
  const c = lib!;
  const hex = (h: string) => Uint8Array.fromHex(h);
  const alice = hex("77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a");
  const alicePublic = hex("8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a");
  const bob = hex("5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb");
  const bobPublic = hex("de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f");
  const shared = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";
  const exchange = (priv: Uint8Array, pub: Uint8Array): string | null => {
    const pkey = c.EVP_PKEY_new_raw_private_key(NID_X25519, null, priv, 32n);
    const peer = c.EVP_PKEY_new_raw_public_key(NID_X25519, null, pub, 32n);
    const ctx = pkey === null ? null : c.EVP_PKEY_CTX_new(pkey, null);
    let result: string | null = null;
    outLength[0] = 32n;
    if (
      ctx !== null && peer !== null && c.EVP_PKEY_derive_init(ctx) === 1 &&
      c.EVP_PKEY_derive_set_peer(ctx, peer) === 1 && c.EVP_PKEY_derive(ctx, out, outLengthBytes) === 1 &&
      outLength[0] === 32n
    ) result = out.toHex();
    if (ctx !== null) c.EVP_PKEY_CTX_free(ctx);
    if (peer !== null) c.EVP_PKEY_free(peer);
    if (pkey !== null) c.EVP_PKEY_free(pkey);
    c.ERR_clear_error();
    return result;
  };
  if (exchange(alice, bobPublic) !== shared || exchange(bob, alicePublic) !== shared) {
    return `gives wrong X25519 answers (${version})`;
  }
  if (exchange(alice, new Uint8Array(32)) !== null) return `accepts a point of small order (${version})`;
  return null;
}

const SHA256_SYMBOLS = {
  SHA256_Init: { parameters: ["buffer"], result: "i32" },
  SHA256_Update: { parameters: ["buffer", "buffer", "usize"], result: "i32" },
  SHA256_Final: { parameters: ["buffer", "buffer"], result: "i32" },
} as const;

type Sha256 = Deno.DynamicLibrary<typeof SHA256_SYMBOLS>["symbols"];

/** 32-bit words of OpenSSL's `SHA256_CTX` (112 bytes), the part of a state a MAC key keeps. */
const STATE_WORDS = 28;
let sha: Sha256 | null = null;
let hmacUnavailable: string | null | undefined;
/** Scratch state, larger than `SHA256_CTX`: a layout other than the one assumed fails the known answers. */
const work = new Uint8Array(256);
const work32 = new Uint32Array(work.buffer);
const innerDigest = new Uint8Array(32);
const digestOut = new Uint8Array(32);
const pad = new Uint8Array(64);
const oneByte = new Uint8Array(1);

/**
 * Why OpenSSL's HMAC-SHA-256 cannot be used here (OpenSSL itself cannot, or its `SHA256_*` functions are
 * missing, or wrong answers), or null when it can.
 */
export function opensslHmacUnavailable(): string | null {
  if (hmacUnavailable !== undefined) return hmacUnavailable;
  const why = opensslX25519Unavailable();
  if (why !== null) return hmacUnavailable = why;
  try {
    sha = Deno.dlopen(LIBRARY, SHA256_SYMBOLS).symbols;
  } catch (error) {
    return hmacUnavailable = `has no SHA256_Init, SHA256_Update or SHA256_Final: ${(error as Error).message}`;
  }
  // RFC 4231, test cases 1 and 2, and a key of 64 bytes over a message longer than a block.
  const text = new TextEncoder();
  const cases: [Uint8Array, Uint8Array, string][] = [
    [
      new Uint8Array(20).fill(0x0b),
      text.encode("Hi There"),
      "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
    ],
    [
      text.encode("Jefe"),
      text.encode("what do ya want for nothing?"),
      "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
    ],
  ];
  for (const [key, data, tag] of cases) {
    if (new OpensslHmacKey(key).hex(data) !== tag) {
      sha = null;
      return hmacUnavailable = `gives wrong HMAC-SHA-256 answers (${version})`;
    }
  }
  return hmacUnavailable = null;
}

/**
 * HMAC-SHA-256 under one key through OpenSSL's SHA-256 (see the module's description). Call
 * {@linkcode opensslHmacUnavailable} first.
 *
 * @example
 * ```ts
 * import { OpensslHmacKey, opensslHmacUnavailable } from "./openssl.ts";
 * if (opensslHmacUnavailable() === null) {
 *   const tag = new OpensslHmacKey(new TextEncoder().encode("Jefe")).hex(new TextEncoder().encode("x"));
 *   if (tag.length !== 64) throw new Error("not a SHA-256 HMAC");
 * }
 * ```
 */
export class OpensslHmacKey implements MacKey {
  /** The inner state after the inner pad, then the outer state after the outer pad. */
  readonly #states = new Uint32Array(2 * STATE_WORDS);

  /**
   * @param key At most 64 bytes.
   * @throws {RangeError} for a longer key.
   */
  constructor(key: Uint8Array) {
    if (key.length > 64) throw new RangeError(`HMAC key too long: ${key.length} bytes, at most 64`);
    const c = sha;
    if (c === null) throw new Error(`OpenSSL's HMAC ${opensslHmacUnavailable() ?? "is not loaded"}`);
    const states = this.#states;
    for (const [mask, at] of [[0x36, 0], [0x5c, STATE_WORDS]] as const) {
      for (let i = 0; i < 64; i++) pad[i] = (key[i] ?? 0) ^ mask;
      c.SHA256_Init(work);
      c.SHA256_Update(work, pad, 64n);
      for (let i = 0; i < STATE_WORDS; i++) states[at + i] = work32[i]!;
    }
  }

  /** The HMAC of `data[0, end)` followed by the byte `last` (when given). */
  digest(data: Uint8Array, end: number = data.length, last?: number): Uint8Array {
    return this.#mac(data, end, last).slice();
  }

  /** {@linkcode OpensslHmacKey.digest} as lowercase hex. */
  hex(data: Uint8Array, end: number = data.length, last?: number): string {
    return this.#mac(data, end, last).toHex();
  }

  /** The MAC in a scratch array, valid until the next one. */
  #mac(data: Uint8Array, end: number, last: number | undefined): Uint8Array {
    const c = sha!;
    const states = this.#states;
    for (let i = 0; i < STATE_WORDS; i++) work32[i] = states[i]!;
    c.SHA256_Update(work, end === data.length ? data : data.subarray(0, end), BigInt(end));
    if (last !== undefined) {
      oneByte[0] = last;
      c.SHA256_Update(work, oneByte, 1n);
    }
    c.SHA256_Final(innerDigest, work);
    for (let i = 0; i < STATE_WORDS; i++) work32[i] = states[STATE_WORDS + i]!;
    c.SHA256_Update(work, innerDigest, 32n);
    c.SHA256_Final(digestOut, work);
    return digestOut;
  }
}

/** OpenSSL's {@linkcode MacKey}s. */
export const opensslMacKey: MacKeyFactory = (key) => new OpensslHmacKey(key);

/** An X25519 exchange: our private key and their raw public key to the shared secret, or null. */
export type DeriveX25519 = (privateKey: KeyObject, theirPublic: Uint8Array) => Uint8Array | null;

/** The implementations chosen for a configured `crypto_backend`, and what they are, for the log. */
export interface ChosenCrypto {
  /** The X25519 exchange. */
  deriveX25519: DeriveX25519;
  /** Makes a session's MAC keys. */
  macKey: MacKeyFactory;
  /**
   * `OpenSSL 3.0.19 27 Jan 2026 (libcrypto.so.3): X25519, HMAC-SHA-256`, or `node:crypto` with why OpenSSL
   * is not used.
   */
  name: string;
}

/**
 * X25519 and HMAC-SHA-256 for `backend`: OpenSSL's for `"openssl"`, and for `"auto"` where it can run (HMAC
 * from `node:crypto` where OpenSSL's SHA-256 functions alone are missing); `node:crypto`'s otherwise.
 *
 * @throws {ConfigError} naming `crypto_backend` and why, for `"openssl"` where it cannot run.
 * @example
 * ```ts
 * import { chooseCrypto } from "./openssl.ts";
 * console.log(chooseCrypto("auto").name);
 * ```
 */
export function chooseCrypto(backend: CryptoBackend): ChosenCrypto {
  const why = backend === "node" ? 'crypto_backend is "node"' : opensslX25519Unavailable();
  if (why === null) {
    const hmac = opensslHmacUnavailable();
    return {
      deriveX25519: opensslX25519,
      macKey: hmac === null ? opensslMacKey : nodeMacKey,
      name: `${version} (${LIBRARY}): X25519, ${
        hmac === null ? "HMAC-SHA-256" : `HMAC-SHA-256 from node:crypto (OpenSSL ${hmac})`
      }`,
    };
  }
  if (backend === "openssl") {
    throw new ConfigError(`Invalid value for crypto_backend: "openssl": OpenSSL ${why}`, "crypto_backend");
  }
  return {
    deriveX25519: x25519,
    macKey: nodeMacKey,
    name: backend === "node" ? "node:crypto" : `node:crypto (OpenSSL ${why})`,
  };
}
