import { createHash, createHmac, hkdfSync } from "node:crypto";
import { assertEquals } from "../src/deps/assert.ts";
import { hkdf, hmac, HmacKey, hmacSha256, sha256 } from "../src/deps/crypto.ts";

const utf8 = new TextEncoder();

function random(length: number): Uint8Array {
  const out = new Uint8Array(length);
  for (let at = 0; at < length; at += 65_536) crypto.getRandomValues(out.subarray(at, at + 65_536));
  return out;
}

const bytes = (b: ArrayLike<number>) => Array.from(b);

// Every padding case: empty, the 55/56-byte boundary of one block, whole blocks, and several blocks.
const LENGTHS = [0, 1, 31, 32, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 300, 1000, 70_000];

Deno.test("sha256 matches node:crypto for every padding case", () => {
  for (const n of LENGTHS) {
    const data = random(n);
    assertEquals(bytes(sha256(data)), bytes(createHash("sha256").update(data).digest()), `length ${n}`);
  }
  assertEquals(
    bytes(sha256(utf8.encode("abc"))),
    bytes(Uint8Array.fromHex("ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")),
  );
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

Deno.test("HKDF matches node:crypto", () => {
  for (const length of [1, 32, 33, 64, 100, 255 * 32]) {
    const ikm = random(32);
    const salt = random(73);
    const expected = new Uint8Array(hkdfSync("sha256", ikm, salt, "p2p_server session v1", length));
    assertEquals(
      bytes(hkdf(ikm, salt, "p2p_server session v1", length)),
      bytes(expected),
      `length ${length}`,
    );
  }
});
