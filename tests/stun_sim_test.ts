/**
 * STUN through the core in virtual time: scripted peers ({@linkcode RawPeer}) at TEST-NET addresses send
 * Binding requests (and everything that is not one) to a server endpoint on the seeded network of `sim.ts`.
 * Checked from what came back and from the counters: the mapped address for IPv4 and IPv6, FINGERPRINT,
 * the RFC 8489 error responses and silent drops, RFC 3489 clients, the per-IP limits, and the size of every
 * answer against its request (no amplification).
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import {
  addressValue,
  decodeAddress,
  encodeStun,
  fingerprintOk,
  parseStun,
  STUN_ATTR,
  type StunMessage,
} from "../src/wire/stun.ts";
import { parseSocketAddr } from "../src/wire/address.ts";
import { decode, Sim } from "./sim.ts";

const SERVER = "198.51.100.1:3478";

function hex(text: string): Uint8Array {
  const clean = text.replace(/\s+/g, "");
  return Uint8Array.from({ length: clean.length / 2 }, (_, i) => parseInt(clean.slice(2 * i, 2 * i + 2), 16));
}

/** RFC 5769 section 2.1's request: its PRIORITY (0x0024) is comprehension-required and unknown here. */
const RFC5769_REQUEST = hex(`
  00010058 2112a442 b7e7a701 bc34d686 fa87dfae
  80220010 5354554e 20746573 7420636c 69656e74
  00240004 6e0001ff
  80290008 932ff9b1 51263b36
  00060009 6576746a 3a683676 59202020
  00080014 9aeaa70c bfd8cb56 781ef2b5 b2d3f249 c1b571a2
  80280004 e57a3bcf`);

let txCounter = 0;
function txId(): Uint8Array {
  const id = Uint8Array.from([0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(0)]);
  new DataView(id.buffer).setUint32(12, ++txCounter);
  return id;
}

function request(
  attributes: { type: number; value: Uint8Array }[] = [],
  options: { fingerprint?: boolean; class?: StunMessage["class"]; method?: number } = {},
): Uint8Array {
  return encodeStun({
    method: options.method ?? 1,
    class: options.class ?? "request",
    id: txId(),
    attributes,
    fingerprint: options.fingerprint ?? false,
  });
}

function setup(config = {}) {
  const sim = new Sim({ seed: 7 });
  const server = sim.addEndpoint(SERVER, { config });
  return { sim, server };
}

/** Sends `bytes` from `peerAddr` and returns the one answer (parsed) or null. */
function exchange(sim: Sim, peerAddr: string, bytes: Uint8Array) {
  const peer = sim.addRaw(peerAddr);
  peer.sendBytes(SERVER, bytes);
  sim.runFor(100);
  assert(peer.arrivals.length <= 1, "at most one answer");
  const got = peer.arrivals[0]?.bytes;
  return got ? { bytes: got, msg: parseStun(got) } : null;
}

function attr(msg: StunMessage, type: number): Uint8Array | undefined {
  return msg.attributes.find((a) => a.type === type)?.value;
}

function errorCode(msg: StunMessage): number {
  const v = attr(msg, STUN_ATTR.ERROR_CODE)!;
  return v[2]! * 100 + v[3]!;
}

Deno.test("a bare Binding request gets its IPv4 source back in XOR-MAPPED-ADDRESS, within request + 12 bytes", () => {
  const { sim, server } = setup();
  const req = request();
  const answer = exchange(sim, "192.0.2.10:40000", req)!;
  assert(answer, "answered");
  assertEquals([answer.msg.class, answer.msg.method], ["success", 1]);
  assertEquals(answer.msg.id, req.subarray(4, 20), "same cookie and transaction id");
  const xma = attr(answer.msg, STUN_ATTR.XOR_MAPPED_ADDRESS)!;
  assertEquals(decodeAddress(xma, true, answer.msg.id), { hostname: "192.0.2.10", port: 40000 });
  // 20 bytes in: only the 12 of the mapped address may be added, so SOFTWARE and FINGERPRINT are left out.
  assertStrictEquals(answer.bytes.length, 32);
  assertEquals(answer.msg.attributes.map((a) => a.type), [STUN_ATTR.XOR_MAPPED_ADDRESS]);
  const s = server.endpoint.getStats(sim.now);
  assertEquals(s.stun, {
    requests: 1,
    responses: 1,
    changeRequests: 0,
    errors: { bad_request: 0, unknown_attribute: 0 },
  });
  assertStrictEquals(s.datagramsReceived, s.processed + s.duplicates + s.droppedTotal);
  assertStrictEquals(s.droppedTotal, 0);
  assertStrictEquals(s.bytesSent, 32);
});

Deno.test("a request with room for them gets SOFTWARE (p2p_server and the version) and a FINGERPRINT", () => {
  const { sim } = setup();
  const software = { type: STUN_ATTR.SOFTWARE, value: new TextEncoder().encode("a test client 1.0") };
  const req = request([software], { fingerprint: true });
  const answer = exchange(sim, "192.0.2.11:40001", req)!;
  assertEquals(answer.msg.attributes.map((a) => a.type), [0x0020, 0x8022, 0x8028]);
  assertStrictEquals(new TextDecoder().decode(attr(answer.msg, STUN_ATTR.SOFTWARE)), "p2p_server 1.0.0");
  assert(fingerprintOk(answer.bytes, answer.msg.attributes[2]!), "its FINGERPRINT is right");
  assert(answer.bytes.length <= req.length + 12, `${answer.bytes.length} <= ${req.length} + 12`);
});

Deno.test("a request with only a FINGERPRINT gets one back (SOFTWARE is the first to go)", () => {
  const { sim } = setup();
  const req = request([], { fingerprint: true });
  const answer = exchange(sim, "192.0.2.12:40002", req)!;
  assertEquals(answer.msg.attributes.map((a) => a.type), [0x0020, 0x8028]);
  assertStrictEquals(answer.bytes.length, req.length + 12);
});

Deno.test("an IPv6 source gets its address back (24-byte XOR-MAPPED-ADDRESS, XORed with the transaction id)", () => {
  const { sim } = setup();
  const answer = exchange(sim, "[2001:db8::42]:40003", request())!;
  const xma = attr(answer.msg, STUN_ATTR.XOR_MAPPED_ADDRESS)!;
  assertStrictEquals(xma.length, 20);
  assertEquals(decodeAddress(xma, true, answer.msg.id), { hostname: "2001:db8::42", port: 40003 });
  assertStrictEquals(answer.bytes.length, 20 + 24);
});

Deno.test("an RFC 3489 request (no cookie, CHANGE-REQUEST asking no change) gets MAPPED-ADDRESS and its id back", () => {
  const { sim, server } = setup();
  // As the Debian `stun` client sends it: a 128-bit transaction id and CHANGE-REQUEST with no flags.
  const req = hex("00010008 01b8981d c6e2a700 a384744d c8fc3647 00030004 00000000");
  const answer = exchange(sim, "192.0.2.13:40004", req)!;
  assert(answer.msg.classic);
  assertEquals(answer.bytes.subarray(4, 20), req.subarray(4, 20));
  assertEquals(answer.msg.attributes.map((a) => a.type), [STUN_ATTR.MAPPED_ADDRESS]);
  const mapped = attr(answer.msg, STUN_ATTR.MAPPED_ADDRESS)!;
  assertEquals(decodeAddress(mapped, false, answer.msg.id), { hostname: "192.0.2.13", port: 40004 });
  assertStrictEquals(answer.bytes.length, 32);
  assertStrictEquals(server.endpoint.getStats(sim.now).stun.responses, 1);
});

Deno.test("CHANGE-REQUEST asking for another address or port gets 420 naming it (no alternate address yet)", () => {
  const { sim, server } = setup();
  const req = hex("00010008 01b8981d c6e2a700 a384744d c8fc3647 00030004 00000006");
  const answer = exchange(sim, "192.0.2.14:40005", req)!;
  assertEquals([answer.msg.class, errorCode(answer.msg)], ["error", 420]);
  // RFC 3489's form: an odd list has its last type repeated.
  assertEquals(attr(answer.msg, STUN_ATTR.UNKNOWN_ATTRIBUTES), new Uint8Array([0x00, 0x03, 0x00, 0x03]));
  assert(answer.bytes.length <= req.length + 12);
  assertStrictEquals(server.endpoint.getStats(sim.now).stun.errors.unknown_attribute, 1);
});

Deno.test("the RFC 5769 sample request gets 420 Unknown Attribute for PRIORITY, with the reason, SOFTWARE and FINGERPRINT", () => {
  const { sim, server } = setup();
  const answer = exchange(sim, "192.0.2.15:40006", RFC5769_REQUEST)!;
  assertEquals([answer.msg.class, errorCode(answer.msg)], ["error", 420]);
  assertEquals(answer.msg.id, RFC5769_REQUEST.subarray(4, 20));
  assertEquals(attr(answer.msg, STUN_ATTR.UNKNOWN_ATTRIBUTES), new Uint8Array([0x00, 0x24]));
  assertStrictEquals(
    new TextDecoder().decode(attr(answer.msg, STUN_ATTR.ERROR_CODE)!.subarray(4)),
    "Unknown Attribute",
  );
  assertEquals(answer.msg.attributes.map((a) => a.type), [0x0009, 0x000a, 0x8022, 0x8028]);
  assert(fingerprintOk(answer.bytes, answer.msg.attributes[3]!));
  assert(answer.bytes.length <= RFC5769_REQUEST.length, "an error answer is no larger than its request");
  const s = server.endpoint.getStats(sim.now);
  assertEquals(s.stun, {
    requests: 1,
    responses: 0,
    changeRequests: 0,
    errors: { bad_request: 0, unknown_attribute: 1 },
  });
});

Deno.test("unknown comprehension-optional attributes and attributes after MESSAGE-INTEGRITY are ignored", () => {
  const { sim } = setup();
  const req = request([
    { type: 0x8029, value: new Uint8Array(8) }, // ICE-CONTROLLED: optional
    { type: STUN_ATTR.MESSAGE_INTEGRITY, value: new Uint8Array(20) }, // known, no credentials here: ignored
    { type: 0x0024, value: new Uint8Array(4) }, // after MESSAGE-INTEGRITY: ignored
  ], { fingerprint: true });
  const answer = exchange(sim, "192.0.2.16:40007", req)!;
  assertStrictEquals(answer.msg.class, "success");
});

Deno.test("an attribute after FINGERPRINT or a CHANGE-REQUEST of the wrong size is 400 Bad Request", () => {
  const { sim, server } = setup();
  const good = request([], { fingerprint: true });
  // A SOFTWARE after the FINGERPRINT (whose value stays right for the bytes before it).
  const after = new Uint8Array(good.length + 8);
  after.set(good);
  after.set([0x80, 0x22, 0, 4, 0x61, 0x62, 0x63, 0x64], good.length);
  after[3] = after.length - 20;
  const a = exchange(sim, "192.0.2.17:40008", after)!;
  assertEquals([a.msg.class, errorCode(a.msg)], ["error", 400]);
  const b = exchange(
    sim,
    "192.0.2.18:40009",
    request([{ type: STUN_ATTR.CHANGE_REQUEST, value: new Uint8Array(8) }]),
  )!;
  assertEquals([b.msg.class, errorCode(b.msg)], ["error", 400]);
  assert(a.bytes.length <= after.length + 12 && b.bytes.length <= 32 + 12);
  assertStrictEquals(server.endpoint.getStats(sim.now).stun.errors.bad_request, 2);
});

Deno.test("dropped and counted, never answered: wrong FINGERPRINT, other methods, indications, responses, bad framing", () => {
  const { sim, server } = setup();
  const badFp = request([], { fingerprint: true });
  badFp[badFp.length - 1] = badFp[badFp.length - 1]! ^ 0xff;
  const cases: [Uint8Array, string][] = [
    [badFp, "stun_bad_fingerprint"],
    [request([], { method: 0x003 }), "stun_unknown_method"], // an Allocate request (TURN)
    [request([], { class: "indication" }), "stun_indication"],
    [request([], { class: "success" }), "stun_response"],
    [request([], { class: "error" }), "stun_response"],
    [hex("00010004 2112a442 000000000000000000000000"), "stun_malformed"], // length past the end
    [hex("00010000 2112a442 00000000"), "stun_malformed"], // shorter than a header
    [hex("00010004 2112a442 000000000000000000000000 80220008"), "stun_malformed"], // attribute past the end
  ];
  let port = 41000;
  for (const [bytes, reason] of cases) {
    const before = server.endpoint.getStats(sim.now).drops as Record<string, number>;
    assertStrictEquals(exchange(sim, `192.0.2.20:${port++}`, bytes), null, reason);
    const after = server.endpoint.getStats(sim.now).drops as Record<string, number>;
    assertStrictEquals(after[reason]! - before[reason]!, 1, reason);
  }
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.datagramsSent, 0);
  assertStrictEquals(
    s.stun.requests,
    2,
    "the bad FINGERPRINT and the Allocate (what does not frame is no request)",
  );
  assertStrictEquals(s.datagramsReceived, s.processed + s.duplicates + s.droppedTotal);
  const dropped = server.events.filter((e) => e.type === "dropped").map((e) =>
    e.type === "dropped" && e.reason
  );
  assertEquals(dropped, cases.map(([, reason]) => reason));
});

Deno.test("STUN goes through the per-IP rate limit like everything else", () => {
  const { sim, server } = setup({ rateLimitDatagramsPerIp: [1, 3] });
  const peer = sim.addRaw("192.0.2.30:42000");
  for (let i = 0; i < 10; i++) peer.sendBytes(SERVER, request());
  sim.runFor(50);
  assertStrictEquals(peer.arrivals.length, 3);
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.stun.requests, 3);
  assertStrictEquals(s.drops.rate_limited, 7);
});

Deno.test("amplification: every answer is at most its request plus the mapped address, and at most 3x", () => {
  const rows: string[] = [];
  const sources = [["v4", "192.0.2.40"], ["v6", "[2001:db8::40]"]] as const;
  const software = (n: number) => ({ type: STUN_ATTR.SOFTWARE, value: new Uint8Array(n).fill(0x61) });
  const requests: [string, () => Uint8Array][] = [
    ["bare 20 B", () => request()],
    ["FINGERPRINT 28 B", () => request([], { fingerprint: true })],
    ["SOFTWARE+FP 60 B", () => request([software(28)], { fingerprint: true })],
    ["RFC 5769 (420) 108 B", () => RFC5769_REQUEST],
    ["RFC 3489 28 B", () => hex("00010008 01b8981d c6e2a700 a384744d c8fc3647 00030004 00000000")],
  ];
  let port = 43000;
  for (const [family, host] of sources) {
    for (const [name, make] of requests) {
      const { sim } = setup();
      const req = make();
      const answer = exchange(sim, `${host}:${port++}`, req);
      assert(answer, `${name} from ${family} is answered`);
      const mapped = family === "v4" ? 12 : 24;
      assert(answer.bytes.length <= req.length + mapped, `${name} ${family}: ${answer.bytes.length}`);
      assert(answer.bytes.length <= 3 * req.length);
      rows.push(
        `${family} ${name}: ${answer.bytes.length} B (${(answer.bytes.length / req.length).toFixed(2)}x)`,
      );
    }
  }
  console.log(`STUN answer sizes: ${rows.join("; ")}`);
});

Deno.test("an answer to an address with an unproven connection spends that connection's 3x budget too", () => {
  const { sim, server } = setup();
  const addr = "192.0.2.50:44000";
  const peer = sim.addRaw(addr);
  // A HandshakeRequest makes an unvalidated connection (its answers are limited to 3x what came from there).
  peer.handshake(SERVER, { ...server.endpoint.node, id: peer.newId(), listen_addr: addr, name: "p" });
  sim.runFor(20);
  const before = server.endpoint.getStats(sim.now);
  for (let i = 0; i < 200; i++) peer.sendBytes(SERVER, request());
  sim.runFor(50);
  const after = server.endpoint.getStats(sim.now);
  const received = after.bytesReceived;
  assert(after.bytesSent <= 3 * received, `${after.bytesSent} sent for ${received} received`);
  assertStrictEquals(after.stun.requests - before.stun.requests, 200);
  assertStrictEquals(after.stun.responses, 200, "each 20-byte request earns its 32-byte answer");
});

Deno.test("JSON from the same address is unaffected by STUN before and after it", () => {
  const { sim, server } = setup();
  const peer = sim.addRaw("192.0.2.60:45000");
  peer.sendBytes(SERVER, request());
  peer.send(SERVER, "Ping", null);
  peer.sendBytes(SERVER, request());
  sim.runFor(100);
  assertStrictEquals(peer.arrivals.length, 3);
  assertStrictEquals(parseStun(peer.arrivals[0]!.bytes).class, "success");
  assertStrictEquals(decode(peer.arrivals[1]!.bytes).message_type, "Pong");
  assertStrictEquals(parseStun(peer.arrivals[2]!.bytes).class, "success");
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.messagesReceived.Ping, 1);
  assertStrictEquals(s.messagesSent.Pong, 1);
  assertStrictEquals(s.droppedTotal, 0);
});

Deno.test("a client endpoint does not answer STUN", () => {
  const sim = new Sim({ seed: 8 });
  const client = sim.addEndpoint("192.0.2.70:5000", { role: "client" });
  const peer = sim.addRaw("192.0.2.71:5001");
  peer.sendBytes("192.0.2.70:5000", request());
  sim.runFor(50);
  assertStrictEquals(peer.arrivals.length, 0);
  assertStrictEquals(client.endpoint.getStats(sim.now).drops.unexpected, 1);
});

Deno.test("addressValue and the mapped address agree for the sim's addresses", () => {
  const addr = parseSocketAddr("[2001:db8::42]:40003");
  assert(typeof addr !== "string");
  const id = txId();
  assertEquals(decodeAddress(addressValue(addr, true, id)!, true, id), addr);
});
