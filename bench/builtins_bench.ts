/**
 * Hand-written code against the built-in that could replace it (`deno bench bench/builtins_bench.ts`):
 * a table-driven CRC-32 in JavaScript (what the codec used until 2026-12-03) against `node:zlib`'s `crc32`
 * (what it uses now, through src/deps/crc32.ts), at a typical datagram (200 bytes), the
 * fragment size (1,200 bytes) and the largest datagram (65,507 bytes); and the UUID check of
 * `src/deps/uuid.ts` against `crypto.randomUUID()`'s cost for scale. docs/dependencies.md reads the results.
 *
 * @module
 */
import { crc32 as zlibCrc32 } from "node:zlib";

const TABLE = (() => {
  const table = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    table[n] = c;
  }
  return table;
})();

/** A table-driven CRC-32 of `bytes[0, end)`. */
function crc32(bytes: Uint8Array, end: number): number {
  let c = -1;
  for (let i = 0; i < end; i++) c = TABLE[(c ^ bytes[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}
import { isUuid } from "../src/deps/uuid.ts";

for (const size of [200, 1200, 65_507]) {
  const bytes = new Uint8Array(size + 16);
  for (let i = 0; i < bytes.length; i++) bytes[i] = (i * 31 + 7) & 0xff;
  // The codec sums the first `size` bytes of its scratch buffer, so the built-in gets a subarray.
  const group = `crc32 ${size} B`;
  Deno.bench(`hand-written table CRC-32, ${size} B`, { group, baseline: true }, () => {
    crc32(bytes, size);
  });
  Deno.bench(`node:zlib crc32, ${size} B`, { group }, () => {
    zlibCrc32(bytes.subarray(0, size));
  });
}

const ids: string[] = Array.from({ length: 64 }, () => crypto.randomUUID());
ids.push("6F9619FF-8B86-4011-B42D-00C04FC964FF", "not-a-uuid", "");
let i = 0;
Deno.bench("isUuid (src/deps/uuid.ts)", { group: "uuid" }, () => {
  isUuid(ids[i++ % ids.length]!);
});
