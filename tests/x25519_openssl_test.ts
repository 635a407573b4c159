/**
 * X25519 through the system's OpenSSL (`x25519_backend`, src/x25519_openssl.ts): the same shared secrets as
 * `node:crypto`'s for RFC 7748's vectors and for random keys, the same refusals (points of small order, bad
 * lengths), its contexts bounded, a keyed handshake between an OpenSSL side and a `node:crypto` side, and
 * the configuration's errors. Skipped, with the reason printed, where OpenSSL 3 cannot be opened.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import { createPrivateKey, generateKeyPairSync } from "node:crypto";
import { generateX25519, type KeyObject, x25519 } from "../src/deps/crypto.ts";
import {
  chooseX25519,
  CONTEXTS,
  opensslContexts,
  opensslX25519,
  opensslX25519Unavailable,
  releaseOpensslContexts,
} from "../src/x25519_openssl.ts";
import { ConfigError } from "../src/config_error.ts";
import { P2PClient, P2PServer } from "../mod.ts";
import { runScript, startServer } from "./helpers/server_process.ts";

const why = opensslX25519Unavailable();
if (why !== null) console.log(`x25519_openssl_test: OpenSSL's X25519 tests skipped: OpenSSL ${why}`);
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

Deno.test({
  name: 'x25519_backend: "auto" takes OpenSSL where it runs, "node" never does, and each is named',
  ignore,
  fn: () => {
    const auto = chooseX25519("auto");
    assertStrictEquals(auto.derive, opensslX25519);
    assertMatch(auto.name, /^OpenSSL 3\.\d+\.\d+.* \(libcrypto\.so\.3\)$/);
    assertStrictEquals(chooseX25519("openssl").derive, opensslX25519);
    const node = chooseX25519("node");
    assertStrictEquals(node.derive, x25519);
    assertStrictEquals(node.name, "node:crypto");
  },
});

Deno.test({
  name: "a keyed client on node:crypto's X25519 gets a working session from a server on OpenSSL's",
  ignore,
  fn: async () => {
    await using server = new P2PServer({ listenAddress: "127.0.0.1:0", x25519Backend: "openssl" });
    const addr = await server.listen();
    for (const backend of ["node", "openssl"] as const) {
      await using client = new P2PClient({
        server: `127.0.0.1:${addr.port}`,
        identity: "generate",
        x25519Backend: backend,
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

Deno.test("x25519_backend is checked: a value outside the three is a ConfigError naming the key", () => {
  const refused = (error: unknown) =>
    error instanceof ConfigError && /x25519_backend/.test(error.message) && /"fast"/.test(error.message);
  assertThrows(
    () => new P2PServer({ listenAddress: "127.0.0.1:0", x25519Backend: "fast" as never }),
    refused,
  );
  assertThrows(() => new P2PClient({ x25519Backend: "fast" as never }), refused);
});

Deno.test({
  name: 'x25519_backend "openssl" without --allow-ffi exits 2 with one line naming the key and the reason',
  fn: async () => {
    const out = await runScript({
      config: { x25519_backend: "openssl" },
      runFlags: ["run", "--allow-net", "--allow-read", "--allow-write", "--allow-env"],
    });
    assertStrictEquals(out.code, 2, out.stderr);
    const errors = out.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assertEquals(errors.length, 1, out.stderr);
    assertMatch(errors[0]!, /x25519_backend: "openssl": OpenSSL needs --allow-ffi/);
  },
});

Deno.test({
  name: 'x25519_backend "auto" without --allow-ffi falls back to node:crypto and says so in the log',
  fn: async () => {
    await using server = await startServer({
      config: { x25519_backend: "auto" },
      runFlags: ["run", "--allow-net", "--allow-read", "--allow-write", "--allow-env"],
    });
    assertMatch(
      await server.waitForStderr(/x25519: .*/),
      /x25519: node:crypto \(OpenSSL needs --allow-ffi\)/,
    );
  },
});

// A private key generated by node:crypto exports its raw bytes as OpenSSL needs them.
Deno.test("an X25519 private key object exports the 32 raw bytes OpenSSL's context is made from", () => {
  const { privateKey: key } = generateKeyPairSync("x25519");
  const d = (key.export({ format: "jwk" }) as { d: string }).d;
  assertStrictEquals(Uint8Array.fromBase64(d, { alphabet: "base64url" }).length, 32);
});
