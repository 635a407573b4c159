/**
 * X25519 and HMAC-SHA-256 through the system's OpenSSL (`crypto_backend`, src/openssl.ts): the same shared
 * secrets as `node:crypto`'s for RFC 7748's vectors and for random keys, the same refusals (points of small
 * order, bad lengths), its contexts bounded; RFC 4231's tags and the same MACs as `node:crypto`'s; a keyed
 * session between an OpenSSL side and a `node:crypto` side; and the configuration's errors. Skipped, with the
 * reason printed, where OpenSSL 3 cannot be opened.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { generateX25519, HmacKey, type KeyObject, nodeMacKey, x25519 } from "../src/deps/crypto.ts";
import {
  chooseCrypto,
  CONTEXTS,
  opensslContexts,
  OpensslHmacKey,
  opensslHmacUnavailable,
  opensslMacKey,
  opensslX25519,
  opensslX25519Unavailable,
  releaseOpensslContexts,
} from "../src/openssl.ts";
import { ConfigError } from "../src/config_error.ts";
import { P2PClient, P2PServer } from "../mod.ts";
import { runScript, startServer } from "./helpers/server_process.ts";

const why = opensslX25519Unavailable();
if (why !== null) console.log(`openssl_test: OpenSSL's X25519 tests skipped: OpenSSL ${why}`);
const ignore = why !== null;

const hex = (h: string) => Uint8Array.fromHex(h);

/** An X25519 private key object from its raw 32 bytes. */
function privateKey(raw: Uint8Array): KeyObject {
  return createPrivateKey({
    key: { kty: "OKP", crv: "X25519", d: raw.toBase64({ alphabet: "base64url", omitPadding: true }), x: "" },
    format: "jwk",
  });
}

// RFC 7748 section 6.1.
const ALICE = "77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a";
const ALICE_PUBLIC = "8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a";
const BOB = "5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb";
const BOB_PUBLIC = "de9edb7d7b7dc1b4d35b61c2ece435373f8343c85b78674dadfc7e146f882b4f";
const SHARED = "4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742";

/** u-coordinates of small order (and their non-canonical forms), whose exchanges must be refused or agree. */
const SMALL_ORDER = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "edffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
  "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];

Deno.test({
  name: "OpenSSL's X25519 gives RFC 7748's shared secret, as node:crypto does, both ways",
  ignore,
  fn: () => {
    releaseOpensslContexts();
    const alice = privateKey(hex(ALICE)), bob = privateKey(hex(BOB));
    assertStrictEquals(opensslX25519(alice, hex(BOB_PUBLIC))?.toHex(), SHARED);
    assertStrictEquals(opensslX25519(bob, hex(ALICE_PUBLIC))?.toHex(), SHARED);
    assertStrictEquals(x25519(alice, hex(BOB_PUBLIC))?.toHex(), SHARED);
  },
});

Deno.test({
  name: "OpenSSL's X25519 agrees with node:crypto's over 300 random exchanges, keeping at most 4 contexts",
  ignore,
  fn: () => {
    releaseOpensslContexts();
    const mine = Array.from({ length: 6 }, () => generateX25519());
    for (let i = 0; i < 300; i++) {
      // Six private keys in turn, more than the contexts kept: every key is made again after eviction.
      const ours = mine[(i * 7) % mine.length]!;
      const theirs = generateX25519();
      const a = opensslX25519(ours.privateKey, theirs.publicKey);
      const b = x25519(ours.privateKey, theirs.publicKey);
      assert(a !== null && b !== null, `exchange ${i} refused`);
      assertStrictEquals(a.toHex(), b.toHex(), `exchange ${i}`);
      // And the other side gets the same secret from its own key.
      assertStrictEquals(opensslX25519(theirs.privateKey, ours.publicKey)?.toHex(), a.toHex());
      assert(opensslContexts() <= CONTEXTS, `${opensslContexts()} contexts kept`);
    }
    assertStrictEquals(opensslContexts(), CONTEXTS);
    releaseOpensslContexts();
    assertStrictEquals(opensslContexts(), 0);
  },
});

Deno.test({
  name: "OpenSSL's X25519 refuses what node:crypto refuses: points of small order and bad lengths",
  ignore,
  fn: () => {
    const ours = generateX25519();
    for (const point of SMALL_ORDER) {
      const a = opensslX25519(ours.privateKey, hex(point));
      const b = x25519(ours.privateKey, hex(point));
      assertStrictEquals(a?.toHex() ?? null, b?.toHex() ?? null, point);
    }
    assertStrictEquals(opensslX25519(ours.privateKey, new Uint8Array(32)), null);
    assertStrictEquals(opensslX25519(ours.privateKey, hex(SMALL_ORDER[1]!)), null);
    assertStrictEquals(opensslX25519(ours.privateKey, new Uint8Array(31)), null);
    assertStrictEquals(opensslX25519(ours.privateKey, new Uint8Array(33)), null);
    // A refusal leaves nothing behind: the next good exchange works.
    const theirs = generateX25519();
    assertStrictEquals(
      opensslX25519(ours.privateKey, theirs.publicKey)?.toHex(),
      x25519(ours.privateKey, theirs.publicKey)?.toHex(),
    );
  },
});

// RFC 4231's test cases with keys of at most 64 bytes (1 to 4; 5 is a truncated tag, 6 and 7 longer keys).
const RFC4231: [string, string, string][] = [
  [
    "0b".repeat(20),
    "4869205468657265",
    "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
  ],
  [
    "4a656665",
    "7768617420646f2079612077616e7420666f72206e6f7468696e673f",
    "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
  ],
  [
    "aa".repeat(20),
    "dd".repeat(50),
    "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
  ],
  [
    "0102030405060708090a0b0c0d0e0f10111213141516171819",
    "cd".repeat(50),
    "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
  ],
];

Deno.test({
  name: "OpenSSL's HMAC-SHA-256 gives RFC 4231's tags",
  ignore,
  fn: () => {
    assertStrictEquals(opensslHmacUnavailable(), null);
    for (const [key, data, tag] of RFC4231) {
      assertStrictEquals(new OpensslHmacKey(hex(key)).hex(hex(data)), tag);
      assertStrictEquals(new HmacKey(hex(key)).hex(hex(data)), tag);
    }
  },
});

Deno.test({
  name:
    "OpenSSL's HMAC-SHA-256 agrees with node:crypto's for keys of 0 to 64 bytes, prefixes and a last byte",
  ignore,
  fn: () => {
    const rand = (n: number) => crypto.getRandomValues(new Uint8Array(n));
    for (let i = 0; i < 400; i++) {
      const key = rand(i % 65);
      const data = rand((i * 37) % 3_000);
      const end = i % 3 === 0 ? data.length : Math.floor(data.length / 2);
      const last = i % 2 === 0 ? undefined : i % 256;
      const a = new OpensslHmacKey(key), b = new HmacKey(key);
      assertStrictEquals(a.hex(data, end, last), b.hex(data, end, last), `case ${i}`);
      // The same key again, and the bytes form: each tag is its own array, not the scratch area.
      const first = a.digest(data, end, last);
      a.digest(rand(10));
      assertStrictEquals(first.toHex(), b.digest(data, end, last).toHex(), `case ${i} (bytes)`);
    }
    assertThrows(() => new OpensslHmacKey(new Uint8Array(65)), RangeError);
  },
});

Deno.test({
  name: 'crypto_backend: "auto" takes OpenSSL where it runs, "node" never does, and each is named',
  ignore,
  fn: () => {
    const auto = chooseCrypto("auto");
    assertStrictEquals(auto.deriveX25519, opensslX25519);
    assertStrictEquals(auto.macKey, opensslMacKey);
    assertMatch(auto.name, /^OpenSSL 3\.\d+\.\d+.* \(libcrypto\.so\.3\): X25519, HMAC-SHA-256$/);
    assertStrictEquals(chooseCrypto("openssl").deriveX25519, opensslX25519);
    const node = chooseCrypto("node");
    assertStrictEquals(node.deriveX25519, x25519);
    assertStrictEquals(node.macKey, nodeMacKey);
    assertStrictEquals(node.name, "node:crypto");
  },
});

Deno.test({
  name:
    "a keyed client on node:crypto gets a working MAC'd session from a server on OpenSSL, and one on OpenSSL too",
  ignore,
  fn: async () => {
    await using server = new P2PServer({ listenAddress: "127.0.0.1:0", cryptoBackend: "openssl" });
    const addr = await server.listen();
    for (const backend of ["node", "openssl"] as const) {
      await using client = new P2PClient({
        server: `127.0.0.1:${addr.port}`,
        identity: "generate",
        cryptoBackend: backend,
      });
      await client.connect();
      // MAC'd both ways: a wrong session key on either side would drop these and the calls would time out.
      await client.ping();
      const peers = await client.discover();
      assert(peers.some((p) => p.id === client.node.id), `${backend}: itself not listed`);
      assertStrictEquals(server.getStats().peers.authenticated, 1, backend);
      await client.disconnect();
    }
  },
});

Deno.test("crypto_backend is checked: a value outside the three is a ConfigError naming the key", () => {
  const refused = (error: unknown) =>
    error instanceof ConfigError && /crypto_backend/.test(error.message) && /"fast"/.test(error.message);
  assertThrows(
    () => new P2PServer({ listenAddress: "127.0.0.1:0", cryptoBackend: "fast" as never }),
    refused,
  );
  assertThrows(() => new P2PClient({ cryptoBackend: "fast" as never }), refused);
});

Deno.test({
  name: 'crypto_backend "openssl" without --allow-ffi exits 2 with one line naming the key and the reason',
  fn: async () => {
    const out = await runScript({
      config: { crypto_backend: "openssl" },
      runFlags: ["run", "--allow-net", "--allow-read", "--allow-write", "--allow-env"],
    });
    assertStrictEquals(out.code, 2, out.stderr);
    const errors = out.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assertEquals(errors.length, 1, out.stderr);
    assertMatch(errors[0]!, /crypto_backend: "openssl": OpenSSL needs --allow-ffi/);
  },
});

Deno.test({
  name: 'crypto_backend "auto" without --allow-ffi falls back to node:crypto and says so in the log',
  fn: async () => {
    await using server = await startServer({
      config: { crypto_backend: "auto" },
      runFlags: ["run", "--allow-net", "--allow-read", "--allow-write", "--allow-env"],
    });
    assertMatch(
      await server.waitForStderr(/crypto: .*/),
      /crypto: node:crypto \(OpenSSL needs --allow-ffi\)/,
    );
  },
});

// A private key generated by node:crypto exports its raw bytes as OpenSSL needs them.
Deno.test("an X25519 private key object exports the 32 raw bytes OpenSSL's context is made from", () => {
  const { privateKey: key } = generateKeyPairSync("x25519");
  const d = (key.export({ format: "jwk" }) as { d: string }).d;
  assertStrictEquals(Uint8Array.fromBase64(d, { alphabet: "base64url" }).length, 32);
});
