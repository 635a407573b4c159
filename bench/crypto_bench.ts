/**
 * Micro-benchmarks of the primitives a keyed handshake needs (`deno bench bench/`), in the implementations
 * available to a synchronous core under Deno: `node:crypto`'s one-shot calls with cached or fresh key
 * objects (what `src/deps/crypto.ts` uses for Ed25519, X25519 and HKDF), WebCrypto (asynchronous, so unusable
 * in the core, measured for comparison), and HMAC one-shot against keyed once (`src/deps/crypto.ts`'s `HmacKey`). Results are in docs/performance.md.
 *
 * @module
 */
import {
  createHash,
  createHmac,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  sign,
  verify,
} from "node:crypto";
import {
  ed25519PublicKey,
  hmac,
  HmacKey,
  rawPublic as raw,
  sha256,
  verifyEd25519,
  x25519PublicKey,
} from "../src/deps/crypto.ts";
import { nodeIdForKey } from "../src/core/auth.ts";

/** The DER SubjectPublicKeyInfo of a raw key, after its 12-byte prefix (the other route to a key object). */
function spki(prefix: number[], rawKey: Uint8Array): Buffer {
  return Buffer.from([...prefix, ...rawKey]);
}
const ED25519_SPKI = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00];
const X25519_SPKI = [0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x6e, 0x03, 0x21, 0x00];

const ed = generateKeyPairSync("ed25519");
const edRaw = raw(ed.publicKey);
const x = generateKeyPairSync("x25519");
const peerRaw = raw(generateKeyPairSync("x25519").publicKey);
const peerKey = x25519PublicKey(peerRaw);
const edKey = ed25519PublicKey(edRaw);
const claims = new TextEncoder().encode("p2p_server handshake request v1\n".repeat(8)); // about a request's
const signature = new Uint8Array(sign(null, claims, ed.privateKey));
const datagram = new TextEncoder().encode("x".repeat(300)); // a MAC'd datagram's size
const secret = datagram.subarray(0, 32);
const salt = datagram.subarray(0, 73); // `<request id>|<response id>`

Deno.bench("X25519 key pair (generateKeyPairSync)", { group: "x25519" }, () => {
  generateKeyPairSync("x25519");
});
Deno.bench("X25519 exchange, public key object cached", { group: "x25519" }, () => {
  diffieHellman({ privateKey: x.privateKey, publicKey: peerKey });
});
Deno.bench("X25519 public key object from raw bytes (JWK, deps/crypto)", { group: "x25519" }, () => {
  x25519PublicKey(peerRaw);
});
Deno.bench("X25519 public key object from raw bytes (DER)", { group: "x25519" }, () => {
  createPublicKey({ key: spki(X25519_SPKI, peerRaw), format: "der", type: "spki" });
});
Deno.bench("Ed25519 sign (one-shot)", { group: "ed25519" }, () => {
  sign(null, claims, ed.privateKey);
});
Deno.bench("Ed25519 verify, key object cached", { group: "ed25519" }, () => {
  verify(null, claims, edKey, signature);
});
Deno.bench("Ed25519 verify, raw key as a JWK (deps/crypto's verifyEd25519)", { group: "ed25519" }, () => {
  verifyEd25519(edRaw, claims, signature);
});
Deno.bench("Ed25519 verify, key object made from DER first", { group: "ed25519" }, () => {
  verify(
    null,
    claims,
    createPublicKey({ key: spki(ED25519_SPKI, edRaw), format: "der", type: "spki" }),
    signature,
  );
});
Deno.bench("Ed25519 public key object from raw bytes (JWK, deps/crypto)", { group: "ed25519" }, () => {
  ed25519PublicKey(edRaw);
});
Deno.bench("Ed25519 public key object from raw bytes (DER)", { group: "ed25519" }, () => {
  createPublicKey({ key: spki(ED25519_SPKI, edRaw), format: "der", type: "spki" });
});

const webEd = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]) as CryptoKeyPair;
const webEdRaw = new Uint8Array(await crypto.subtle.exportKey("raw", webEd.publicKey));
const webSignature = await crypto.subtle.sign("Ed25519", webEd.privateKey, claims);
const webX = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]) as CryptoKeyPair;
const webPeerRaw = new Uint8Array(
  await crypto.subtle.exportKey(
    "raw",
    (await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]) as CryptoKeyPair).publicKey,
  ),
);

Deno.bench("WebCrypto X25519 key pair", { group: "x25519" }, async () => {
  await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
});
Deno.bench("WebCrypto X25519 import raw + exchange", { group: "x25519" }, async () => {
  const peer = await crypto.subtle.importKey("raw", webPeerRaw, { name: "X25519" }, false, []);
  await crypto.subtle.deriveBits({ name: "X25519", public: peer }, webX.privateKey, 256);
});
Deno.bench("WebCrypto Ed25519 sign", { group: "ed25519" }, async () => {
  await crypto.subtle.sign("Ed25519", webEd.privateKey, claims);
});
Deno.bench("WebCrypto Ed25519 import raw + verify", { group: "ed25519" }, async () => {
  const key = await crypto.subtle.importKey("raw", webEdRaw, { name: "Ed25519" }, false, ["verify"]);
  await crypto.subtle.verify("Ed25519", key, webSignature, claims);
});

Deno.bench("node:crypto SHA-256, 54 bytes (a node id)", { group: "sha256" }, () => {
  createHash("sha256").update(datagram.subarray(0, 54)).digest();
});
Deno.bench("deps/crypto sha256, 54 bytes (a node id)", { group: "sha256" }, () => {
  sha256(datagram.subarray(0, 54));
});
Deno.bench("auth nodeIdForKey (SHA-256 as hex, then the UUID)", { group: "sha256" }, () => {
  nodeIdForKey(edRaw);
});
const pad = (byte: number) => new Uint8Array(64).map((_, i) => (secret[i] ?? 0) ^ byte);
const nodeInner = createHash("sha256").update(pad(0x36));
const nodeOuter = createHash("sha256").update(pad(0x5c));
Deno.bench("node:crypto HMAC, 300 bytes (one-shot)", { group: "hmac" }, () => {
  createHmac("sha256", secret).update(datagram).digest();
});
Deno.bench("node:crypto HMAC, 300 bytes (keyed once: hash states copied)", { group: "hmac" }, () => {
  nodeOuter.copy().update(nodeInner.copy().update(datagram).digest()).digest();
});
const key = new HmacKey(secret);
Deno.bench("deps/crypto HmacKey, 300 bytes (keyed once)", { group: "hmac" }, () => {
  key.digest(datagram);
});
Deno.bench("deps/crypto HmacKey as hex, 300 bytes (a MAC tag)", { group: "hmac" }, () => {
  key.hex(datagram).slice(0, 32);
});
Deno.bench("deps/crypto hmac, 300 bytes (one-shot)", { group: "hmac" }, () => {
  hmac(secret, datagram);
});
Deno.bench("node:crypto HKDF, 64 bytes", { group: "hkdf" }, () => {
  hkdfSync("sha256", secret, salt, "p2p_server session v1", 64);
});
