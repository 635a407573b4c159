/**
 * The direct writer of a plain Binding success (`buildSuccess` in src/core/stun.ts) gives the same bytes as
 * the general answer builder (`build`) for every request kind, address family, SOFTWARE length and size
 * limit, and the endpoint's lane for plain Binding requests (`answerPlainBinding`) gives `buildSuccess`'s answer
 * and the same counts: the fast paths change no answer.
 *
 * @module
 */
import { assertEquals } from "./deps/assert.ts";
import { build, buildSuccess } from "../src/core/stun.ts";
import { addressValue, encodeStun, parseStun, STUN_ATTR } from "../src/wire/stun.ts";
import { Endpoint } from "../src/core/mod.ts";
import { resolveConfig } from "../src/config.ts";

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

Deno.test("the endpoint's plain Binding lane answers as buildSuccess does and counts the same", () => {
  const encoder = new TextEncoder();
  let cases = 0;
  for (const version of ["1", "0.4.2-rc.1", "v".repeat(130)]) {
    const server = new Endpoint({
      role: "server",
      config: resolveConfig({ identityFile: null }),
      node: {
        id: "00000000-0000-4000-8000-000000000001",
        name: "s",
        version,
        listen_addr: "198.51.100.1:3478",
        capabilities: [],
        metadata: {},
      },
      newId: () => crypto.randomUUID(),
      now: 0,
    });
    const software = encoder.encode(`p2p_server ${version}`.slice(0, 127));
    for (const hostname of ["192.0.2.7", "2001:db8::7", "::ffff:192.0.2.9"]) {
      for (const softwareLength of [-1, 0, 1, 3, 4, 5, 17, 40, 90]) {
        for (const fingerprint of [false, true]) {
          const id = Uint8Array.from({ length: 16 }, (_, i) => (i * 29 + softwareLength + cases) & 0xff);
          id.set([0x21, 0x12, 0xa4, 0x42]);
          const request = encodeStun({
            method: 1,
            class: "request",
            id,
            attributes: softwareLength < 0
              ? []
              : [{ type: STUN_ATTR.SOFTWARE, value: encoder.encode("c".repeat(softwareLength)) }],
            fingerprint,
          });
          const from = { hostname, port: 40_000 + cases };
          const msg = parseStun(request);
          const mapped = addressValue(from, true, msg.id)!;
          const limit = Math.min(request.length + 4 + mapped.length, 3 * request.length);
          const expected = buildSuccess(msg, mapped, software, limit);
          const before = server.getStats(cases * 1000).stun;
          const requests = before.requests, responses = before.responses;
          server.handleDatagram(cases * 1000, from, request);
          const out = server.takeTransmits();
          assertEquals(out.map((t) => t.bytes), expected ? [expected] : [], `${hostname} ${softwareLength}`);
          const after = server.getStats(cases * 1000).stun;
          assertEquals(after.requests, requests + 1);
          assertEquals(after.responses, responses + (expected ? 1 : 0));
          cases++;
        }
      }
    }
  }
  assertEquals(cases, 3 * 3 * 9 * 2);
});
