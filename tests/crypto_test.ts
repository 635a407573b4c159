import { createHmac } from "node:crypto";
import { assertEquals } from "./deps/assert.ts";
import { hkdf, hmac, HmacKey, hmacSha256, sha256 } from "../src/deps/crypto.ts";

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
