/**
 * The STUN codec (`src/wire/stun.ts`): the RFC 5769 sample messages (their XOR-MAPPED-ADDRESS and
 * FINGERPRINT values are the RFC's), the demultiplexing rule against JSON, bounds checks, and encoding.
 */
import { assert, assertEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import {
  addressValue,
  decodeAddress,
  encodeStun,
  fingerprint,
  fingerprintOk,
  isStunDatagram,
  parseStun,
  STUN_ATTR,
  StunDecodeError,
} from "../src/wire/stun.ts";
import { formatIp, ipBytes } from "../src/wire/address.ts";

function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  return Uint8Array.from({ length: clean.length / 2 }, (_, i) => parseInt(clean.slice(2 * i, 2 * i + 2), 16));
}

// RFC 5769 section 2.1: the sample request (SOFTWARE, PRIORITY, ICE-CONTROLLED, USERNAME, MESSAGE-INTEGRITY,
// FINGERPRINT).
const REQUEST = hex(`
  00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);
// Section 2.2: the sample IPv4 response (192.0.2.1:32853).
const RESPONSE_V4 = hex(`
  0101003c 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200008 0001a147 e112a643
  00080014 2b91f599 fd9e90c3 8c7489f9 2af9ba53 f06be7d7
  80280004 c07d4c96`);
// Section 2.3: the sample IPv6 response ([2001:db8:1234:5678:11:2233:4455:6677]:32853).
const RESPONSE_V6 = hex(`
  01010048 2112a442 b7e7a701 bc34d686 fa87dfae
  8022000b 74657374 20766563 746f7220
  00200014 0002a147 0113a9fa a5d3f179 bc25f4b5 bed2b9d9
  00080014 a382954e 4be67bf1 1784c97c 8292c275 bfe3ed41
  80280004 c8fb0b4c`);
const ID = hex("2112a442 b7e7a701 bc34d686 fa87dfae");

function attr(bytes: Uint8Array, type: number) {
  const found = parseStun(bytes).attributes.find((a) => a.type === type);
  assert(found, `attribute 0x${type.toString(16)} is there`);
  return found;
}

Deno.test("RFC 5769 request: parsed with its six attributes, its FINGERPRINT checks out", () => {
  const m = parseStun(REQUEST);
  assertEquals([m.class, m.method, m.classic], ["request", 1, false]);
  assertEquals(m.id, ID);
  assertEquals(m.attributes.map((a) => a.type), [0x8022, 0x0024, 0x8029, 0x0006, 0x0008, 0x8028]);
  assertEquals(new TextDecoder().decode(attr(REQUEST, STUN_ATTR.USERNAME).value), "evtj:h6vY");
  assert(fingerprintOk(REQUEST, attr(REQUEST, STUN_ATTR.FINGERPRINT)));
});

Deno.test("RFC 5769 IPv4 response: XOR-MAPPED-ADDRESS is 192.0.2.1:32853 and FINGERPRINT is 0xc07d4c96", () => {
  const m = parseStun(RESPONSE_V4);
  assertEquals([m.class, m.method], ["success", 1]);
  const xma = attr(RESPONSE_V4, STUN_ATTR.XOR_MAPPED_ADDRESS);
  assertEquals(decodeAddress(xma.value, true, m.id), { hostname: "192.0.2.1", port: 32853 });
  assertEquals(addressValue({ hostname: "192.0.2.1", port: 32853 }, true, m.id), xma.value);
  const fp = attr(RESPONSE_V4, STUN_ATTR.FINGERPRINT);
  assertStrictEquals(fingerprint(RESPONSE_V4, fp.offset), 0xc07d4c96);
  assert(fingerprintOk(RESPONSE_V4, fp));
});

Deno.test("RFC 5769 IPv6 response: XOR-MAPPED-ADDRESS is [2001:db8:1234:5678:11:2233:4455:6677]:32853, FINGERPRINT 0xc8fb0b4c", () => {
  const m = parseStun(RESPONSE_V6);
  const xma = attr(RESPONSE_V6, STUN_ATTR.XOR_MAPPED_ADDRESS);
  const addr = { hostname: "2001:db8:1234:5678:11:2233:4455:6677", port: 32853 };
  assertEquals(decodeAddress(xma.value, true, m.id), addr);
  assertEquals(addressValue(addr, true, m.id), xma.value);
  assertStrictEquals(fingerprint(RESPONSE_V6, attr(RESPONSE_V6, STUN_ATTR.FINGERPRINT).offset), 0xc8fb0b4c);
});

Deno.test("a changed byte makes a FINGERPRINT wrong", () => {
  const bad = RESPONSE_V4.slice();
  bad[30] = bad[30]! ^ 1;
  assert(!fingerprintOk(bad, attr(bad, STUN_ATTR.FINGERPRINT)));
});

Deno.test("encodeStun: header, zero padding and a FINGERPRINT that parses back", () => {
  const bytes = encodeStun({
    method: 1,
    class: "success",
    id: ID,
    attributes: [
      {
        type: STUN_ATTR.XOR_MAPPED_ADDRESS,
        value: addressValue({ hostname: "192.0.2.1", port: 32853 }, true, ID)!,
      },
      { type: STUN_ATTR.SOFTWARE, value: new TextEncoder().encode("abcde") },
    ],
    fingerprint: true,
  });
  assertStrictEquals(bytes.length, 20 + 12 + 12 + 8);
  assertEquals(Array.from(bytes.subarray(0, 4)), [0x01, 0x01, 0x00, 0x20]);
  assertEquals(Array.from(bytes.subarray(20, 32)), Array.from(hex("00200008 0001a147 e112a643")));
  assertEquals(Array.from(bytes.subarray(41, 44)), [0, 0, 0], "padding is zero bytes");
  const m = parseStun(bytes);
  assertEquals(m.attributes.map((a) => a.type), [0x0020, 0x8022, 0x8028]);
  assert(fingerprintOk(bytes, m.attributes[2]!));
  // The class bits of an error response (0x0111) and an indication (0x0011).
  const err = encodeStun({ method: 1, class: "error", id: ID, attributes: [], fingerprint: false });
  assertEquals([err[0], err[1]], [0x01, 0x11]);
  assertEquals(parseStun(hex("00110000 2112a442 000000000000000000000000")).class, "indication");
});

Deno.test("isStunDatagram: the cookie or an RFC 3489 Binding header, never JSON", () => {
  assert(isStunDatagram(REQUEST));
  assert(isStunDatagram(RESPONSE_V6));
  assert(isStunDatagram(hex("00010000 2112a442")), "a truncated STUN header is STUN (and malformed)");
  assert(isStunDatagram(hex("00010008 01b8981d c6e2a700 a384744d c8fc3647 00030004 00000000")), "RFC 3489");
  const text = new TextEncoder();
  for (
    const json of [
      "{}",
      ' {"id":1}',
      '\n\t{"message_type":"Ping"}',
      '{"id":"7d444840-9dc0-11d1-b245-5ffdce74fad2","message_type":"Ping","timestamp":1}',
    ]
  ) assert(!isStunDatagram(text.encode(json)), json);
  assert(!isStunDatagram(hex("40010000 2112a442 000000000000000000000000")), "first two bits not 0");
  assert(!isStunDatagram(hex("00010004 01b8981d c6e2a700 a384744d c8fc3647")), "no cookie, length wrong");
  assert(!isStunDatagram(hex("00010000 2112")), "too short");
});

Deno.test("parseStun refuses what does not frame: length field, alignment, attributes past the end, no cookie", () => {
  const bad = [
    hex("00010000 2112a442 0000000000000000"), // shorter than the header
    hex("00010004 2112a442 000000000000000000000000"), // length counts 4 bytes that are not there
    hex("00010004 2112a442 000000000000000000000000 8022"), // length 4 for 2 bytes
    hex("00010002 2112a442 000000000000000000000000 8022"), // not a multiple of 4
    hex("00010004 2112a442 000000000000000000000000 80220004"), // value runs past the end
    hex("00010008 2112a442 000000000000000000000000 80220005 61626364"), // padding runs past the end
    hex("01030000 00000000 000000000000000000000000"), // a message without the cookie not of Binding
  ];
  for (const bytes of bad) assertThrows(() => parseStun(bytes), StunDecodeError);
  const ok = parseStun(hex("00010008 2112a442 000000000000000000000000 80220001 61000000"));
  assertEquals(ok.attributes[0]!.value, new Uint8Array([0x61]));
});

Deno.test("ip literals to bytes and back, IPv4-mapped sources reported as IPv4", () => {
  for (
    const [text, canonical] of [
      ["::1", "::1"],
      ["::", "::"],
      ["2001:DB8:0:0:1:0:0:1", "2001:db8::1:0:0:1"],
      ["fe80::1%eth0", "fe80::1"],
      ["1:0:0:2:0:0:0:3", "1:0:0:2::3"],
      ["10.1.2.3", "10.1.2.3"],
    ]
  ) assertEquals(formatIp(ipBytes(text!)!), canonical);
  assertStrictEquals(ipBytes("localhost"), null);
  const mapped = addressValue({ hostname: "::ffff:127.0.0.1", port: 9 }, false, ID)!;
  assertEquals(decodeAddress(mapped, false, ID), { hostname: "127.0.0.1", port: 9 });
});
