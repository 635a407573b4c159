/**
 * The direct writer of a plain Binding success (`buildSuccess` in src/core/stun.ts) gives the same bytes as
 * the general answer builder (`build`) for every request kind, address family, SOFTWARE length and size
 * limit: the fast path changes no answer.
 *
 * @module
 */
import { assertEquals } from "./deps/assert.ts";
import { build, buildSuccess } from "../src/core/stun.ts";
import { addressValue, encodeStun, parseStun } from "../src/wire/stun.ts";

Deno.test("buildSuccess matches build byte for byte (RFC 8489 and 3489 requests, IPv4 and IPv6, every limit)", () => {
  let cases = 0;
  let answered = 0;
  for (const classic of [false, true]) {
    for (const host of ["192.0.2.7", "2001:db8::7"]) {
      for (const softwareLength of [0, 1, 3, 4, 5, 17, 22, 40]) {
        const id = Uint8Array.from({ length: 16 }, (_, i) => (i * 37 + softwareLength) & 0xff);
        if (!classic) id.set([0x21, 0x12, 0xa4, 0x42]);
        else id[0] = 0x77;
        const request = encodeStun({
          method: 1,
          class: "request",
          id,
          attributes: [],
          fingerprint: !classic,
        });
        const msg = parseStun(request);
        const mapped = addressValue({ hostname: host, port: 40_000 + softwareLength }, !msg.classic, msg.id)!;
        const software = new TextEncoder().encode("p".repeat(softwareLength));
        for (let limit = 0; limit <= 120; limit++) {
          const general = build(
            msg,
            { mapped, origin: null, other: null },
            { kind: "ok", change: 0 },
            software,
            limit,
          );
          const direct = buildSuccess(msg, mapped, software, limit);
          assertEquals(
            direct,
            general,
            `classic ${classic}, ${host}, software ${softwareLength}, limit ${limit}`,
          );
          cases++;
          if (direct) answered++;
        }
      }
    }
  }
  assertEquals(cases, 2 * 2 * 8 * 121);
  assertEquals(answered > cases / 2, true, "most limits leave room for an answer");
});
