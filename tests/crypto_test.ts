import { createHash, createHmac, generateKeyPairSync, sign } from "node:crypto";
import { assertEquals, assertStrictEquals } from "./deps/assert.ts";
import {
  generateEd25519,
  generateX25519,
  hkdf,
  hmac,
  HmacKey,
  hmacSha256,
  rawPublic,
  sha256,
  sha256Hex,
  signEd25519,
  verifyEd25519,
  x25519,
} from "../src/deps/crypto.ts";
import { fromBase64Url, nodeIdForKey } from "../src/core/auth.ts";

const utf8 = new TextEncoder();

function random(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(out.subarray(at, at + 65_536));
  return out;
}

const bytes = (b: ArrayLike<number>) => Array.from(b);

// Every padding case of the hash: empty, the 55/56-byte boundary of one block, whole blocks, several blocks.
const LENGTHS = [0, 1, 31, 32, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 300, 1000, 70_000];

Deno.test("sha256 gives the published answers (FIPS 180-2 examples)", () => {
  const cases: [string, string][] = [
    ["", "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"],
    ["abc", "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"],
    [
      "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq",
      "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1",
    ],
  ];
  for (const [text, digest] of cases) {
    assertEquals(bytes(sha256(utf8.encode(text))), bytes(Uint8Array.fromHex(digest)), JSON.stringify(text));
  }
});

Deno.test("HMAC matches node:crypto, with and without a trailing byte, for short and long keys", () => {
  for (const keyLength of [0, 16, 32, 64, 65, 73, 200]) {
    const key = random(keyLength);
    for (const n of LENGTHS) {
      const data = random(n);
      const expected = bytes(createHmac("sha256", key).update(data).digest());
      assertEquals(bytes(hmac(key, data)), expected, `key ${keyLength}, length ${n}`);
      if (n > 0) {
        assertEquals(bytes(hmac(key, data, n - 1, data[n - 1])), expected, `key ${keyLength}, length ${n}`);
      }
      if (keyLength <= 64) {
        const k = new HmacKey(key);
        assertEquals(bytes(k.digest(data)), expected);
        assertEquals(bytes(k.digest(data)), expected, "a key gives the same tag twice");
        const hex = Uint8Array.from(expected).toHex();
        assertStrictEquals(k.hex(data), hex, `hex, key ${keyLength}, length ${n}`);
        if (n > 0) assertStrictEquals(k.hex(data, n - 1, data[n - 1]), hex, `hex, last byte, length ${n}`);
      }
    }
  }
  const key = random(32);
  assertEquals(
    bytes(hmacSha256(key, "12|1.2.3.4:5")),
    bytes(createHmac("sha256", key).update("12|1.2.3.4:5").digest()),
  );
});

Deno.test("HKDF gives RFC 5869's answer (test case 3: no salt, no info)", () => {
  const ikm = new Uint8Array(22).fill(0x0b);
  assertEquals(
    bytes(hkdf(ikm, new Uint8Array(0), "", 42)),
    bytes(
      Uint8Array.fromHex(
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8",
      ),
    ),
  );
});

Deno.test("HKDF gives RFC 5869's answer with info as bytes (test case 1), and the same for info as text", () => {
  const ikm = new Uint8Array(22).fill(0x0b);
  const salt = Uint8Array.fromHex("000102030405060708090a0b0c");
  const info = Uint8Array.fromHex("f0f1f2f3f4f5f6f7f8f9");
  const okm = "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
  assertStrictEquals(hkdf(ikm, salt, info, 42).toHex(), okm);
  const text = "p2p_server session v1";
  assertStrictEquals(hkdf(ikm, salt, utf8.encode(text), 64).toHex(), hkdf(ikm, salt, text, 64).toHex());
});

Deno.test("sha256Hex is the hex SHA-256 of its two parts in order", () => {
  for (const [a, b] of [[0, 0], [22, 32], [64, 1], [55, 9]] as const) {
    const first = random(a), second = random(b);
    const both = new Uint8Array(a + b);
    both.set(first);
    both.set(second, a);
    assertStrictEquals(sha256Hex(first, second), createHash("sha256").update(both).digest("hex"));
  }
});

Deno.test("node ids of keys: fixed answers, and the version and variant bits of the UUID for any key", () => {
  assertStrictEquals(
    nodeIdForKey(Uint8Array.from({ length: 32 }, (_, i) => i)),
    "5ad32466-4318-819e-89cc-ada8c363667e",
  );
  assertStrictEquals(nodeIdForKey(new Uint8Array(32).fill(0xff)), "5ff06a34-5c1f-8a40-b0dd-6a53a4d421eb");
  const context = utf8.encode("p2p_server node id v1\n");
  for (let i = 0; i < 200; i++) {
    const key = random(32);
    const b = createHash("sha256").update(context).update(key).digest();
    b[6] = (b[6]! & 0x0f) | 0x80;
    b[8] = (b[8]! & 0x3f) | 0x80;
    const h = Uint8Array.from(b.subarray(0, 16)).toHex();
    const expected = `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${
      h.slice(20)
    }`;
    assertStrictEquals(nodeIdForKey(key), expected);
  }
});

Deno.test("Ed25519 verification accepts the signer's signature and nothing altered", () => {
  const pair = generateEd25519();
  const data = utf8.encode("p2p_server handshake request v1\nclaims");
  const sig = signEd25519(pair.privateKey, data);
  assertStrictEquals(verifyEd25519(pair.publicKey, data, sig), true);
  const other = generateEd25519().publicKey;
  assertStrictEquals(verifyEd25519(other, data, sig), false, "another key");
  const flipped = Uint8Array.from(sig);
  flipped[10]! ^= 1;
  assertStrictEquals(verifyEd25519(pair.publicKey, data, flipped), false, "a changed signature");
  const changed = Uint8Array.from(data);
  changed[0]! ^= 1;
  assertStrictEquals(verifyEd25519(pair.publicKey, changed, sig), false, "changed data");
  assertStrictEquals(verifyEd25519(pair.publicKey.subarray(0, 31), data, sig), false, "a short key");
  assertStrictEquals(verifyEd25519(pair.publicKey, data, sig.subarray(0, 63)), false, "a short signature");
  const notAPoint = new Uint8Array(32);
  notAPoint[0] = 2; // y = 2 has no x on the curve
  assertStrictEquals(verifyEd25519(notAPoint, data, sig), false, "a key that is not a curve point");
  // node:crypto's own signer agrees with ours.
  const node = generateKeyPairSync("ed25519");
  assertStrictEquals(verifyEd25519(rawPublic(node.publicKey), data, sign(null, data, node.privateKey)), true);
});

Deno.test("X25519: both sides get the same secret, a low-order key gives none", () => {
  const a = generateX25519(), b = generateX25519();
  const ab = x25519(a.privateKey, b.publicKey), ba = x25519(b.privateKey, a.publicKey);
  assertEquals(ab === null ? null : bytes(ab), ba === null ? null : bytes(ba));
  assertStrictEquals(ab?.length, 32);
  assertStrictEquals(x25519(a.privateKey, new Uint8Array(32)), null, "the all-zero key (a low-order point)");
  assertStrictEquals(x25519(a.privateKey, new Uint8Array(31)), null, "a short key");
});

Deno.test("fromBase64Url takes unpadded base64url of the exact length and nothing else", () => {
  // The rule it replaced: only [A-Za-z0-9_-], then decoded to exactly the length.
  const reference = (text: string, length: number) => {
    if (!/^[A-Za-z0-9_-]*$/.test(text)) return null;
    try {
      const b = Uint8Array.fromBase64(text, { alphabet: "base64url" });
      return b.length === length ? b : null;
    } catch {
      return null;
    }
  };
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_+/= \t\n.";
  for (const length of [32, 64]) {
    const good = random(length).toBase64({ alphabet: "base64url", omitPadding: true });
    assertEquals(
      bytes(fromBase64Url(good, length)!),
      bytes(Uint8Array.fromBase64(good, { alphabet: "base64url" })),
    );
    const variants = [
      good + "=",
      good + "==",
      good.slice(0, -1) + "=",
      " " + good,
      good.slice(1) + " ",
      good + "A",
    ];
    variants.push(
      good.slice(0, -1),
      good.replace(/./, "+"),
      good.replace(/./, "/"),
      good.slice(0, -2) + "\n" + "A",
    );
    for (let i = 0; i < 3_000; i++) {
      // One to three characters of the text changed, dropped or added, from an alphabet with the bad ones.
      let t = good;
      for (let k = 0; k <= i % 3; k++) {
        const at = Math.floor(Math.random() * t.length);
        const c = alphabet[Math.floor(Math.random() * alphabet.length)]!;
        t = i % 5 === 0
          ? t.slice(0, at) + t.slice(at + 1)
          : i % 5 === 1
          ? t.slice(0, at) + c + t.slice(at)
          : t.slice(0, at) + c + t.slice(at + 1);
      }
      variants.push(t);
    }
    for (const t of variants) {
      const expected = reference(t, length);
      const got = fromBase64Url(t, length);
      assertEquals(
        got === null ? null : bytes(got),
        expected === null ? null : bytes(expected),
        JSON.stringify(t),
      );
    }
  }
  assertStrictEquals(fromBase64Url(42, 32), null);
  assertStrictEquals(fromBase64Url(undefined, 32), null);
});
