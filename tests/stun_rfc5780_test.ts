/**
 * RFC 5780 NAT behaviour discovery through the core in virtual time: a server endpoint with alternate
 * sockets on the seeded network of `sim.ts` (A1:P1 its main one, then A1:P2, A2:P1, A2:P2), scripted peers
 * sending Binding requests to each. Checked from what came back and where it came from: RESPONSE-ORIGIN and
 * OTHER-ADDRESS (CHANGED-ADDRESS and SOURCE-ADDRESS for RFC 3489 clients), CHANGE-REQUEST answered from the
 * socket it asks for or refused with 420 when there is none, PADDING and RESPONSE-PORT refused, JSON on an
 * alternate socket dropped and counted, and the size of every answer (no amplification).
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { decodeAddress, encodeStun, parseStun, STUN_ATTR, type StunMessage } from "../src/wire/stun.ts";
import { Sim } from "./sim.ts";

const A1P1 = "198.51.100.1:3478";
const A1P2 = "198.51.100.1:3479";
const A2P1 = "198.51.100.2:3478";
const A2P2 = "198.51.100.2:3479";
const FOUR = [A1P2, A2P1, A2P2];

let txCounter = 0;
function request(
  attributes: { type: number; value: Uint8Array }[] = [],
  options: { fingerprint?: boolean; classic?: boolean } = {},
): Uint8Array {
  const id = Uint8Array.from([0x21, 0x12, 0xa4, 0x42, ...new Array(12).fill(0)]);
  new DataView(id.buffer).setUint32(12, ++txCounter);
  if (options.classic) id[0] = 0x77; // no magic cookie: an RFC 3489 client's 128-bit transaction id
  return encodeStun({
    method: 1,
    class: "request",
    id,
    attributes,
    fingerprint: options.fingerprint ?? true,
  });
}

/** A CHANGE-REQUEST asking for another IP address (`ip`) and/or port. */
function change(ip: boolean, port: boolean) {
  return { type: STUN_ATTR.CHANGE_REQUEST, value: Uint8Array.of(0, 0, 0, (ip ? 4 : 0) | (port ? 2 : 0)) };
}

function setup(alternates: string[], main = A1P1) {
  const sim = new Sim({ seed: 11 });
  const server = sim.addEndpoint(main, { alternates });
  return { sim, server };
}

let nextPort = 41000;
/** Sends `bytes` to `to` from a fresh peer and returns the one answer (parsed, with where it came from). */
function exchange(sim: Sim, to: string, bytes: Uint8Array, host = "192.0.2.10") {
  const peer = sim.addRaw(`${host}:${nextPort++}`);
  peer.sendBytes(to, bytes);
  sim.runFor(100);
  assert(peer.arrivals.length <= 1, "at most one answer");
  const got = peer.arrivals[0];
  return got ? { from: got.from, bytes: got.bytes, msg: parseStun(got.bytes), peer: peer.localAddr } : null;
}

function address(msg: StunMessage, type: number): string | undefined {
  const v = msg.attributes.find((a) => a.type === type)?.value;
  if (!v) return undefined;
  const a = decodeAddress(v, type === STUN_ATTR.XOR_MAPPED_ADDRESS, msg.id);
  return a.hostname.includes(":") ? `[${a.hostname}]:${a.port}` : `${a.hostname}:${a.port}`;
}

function errorCode(msg: StunMessage): number | null {
  const v = msg.attributes.find((a) => a.type === STUN_ATTR.ERROR_CODE)?.value;
  return v ? v[2]! * 100 + v[3]! : null;
}

function unknownAttributes(msg: StunMessage): number[] {
  const v = msg.attributes.find((a) => a.type === STUN_ATTR.UNKNOWN_ATTRIBUTES)?.value ?? new Uint8Array();
  return Array.from({ length: v.length / 2 }, (_, i) => (v[2 * i]! << 8) | v[2 * i + 1]!);
}

Deno.test("with an alternate address, every answer names its origin in RESPONSE-ORIGIN and A2:P2 in OTHER-ADDRESS", () => {
  const { sim, server } = setup(FOUR);
  const answer = exchange(sim, A1P1, request())!;
  assertStrictEquals(answer.msg.class, "success");
  assertStrictEquals(answer.from, A1P1);
  assertStrictEquals(address(answer.msg, STUN_ATTR.XOR_MAPPED_ADDRESS), answer.peer);
  assertStrictEquals(address(answer.msg, STUN_ATTR.RESPONSE_ORIGIN), A1P1);
  assertStrictEquals(address(answer.msg, STUN_ATTR.OTHER_ADDRESS), A2P2);
  // Each socket's other address is the one of the other IP and the other port.
  const others: Record<string, string> = { [A1P2]: A2P1, [A2P1]: A1P2, [A2P2]: A1P1 };
  for (const [socket, other] of Object.entries(others)) {
    const a = exchange(sim, socket, request())!;
    assertStrictEquals(a.from, socket);
    assertStrictEquals(address(a.msg, STUN_ATTR.RESPONSE_ORIGIN), socket);
    assertStrictEquals(address(a.msg, STUN_ATTR.OTHER_ADDRESS), other, `OTHER-ADDRESS of ${socket}`);
  }
  assertStrictEquals(server.endpoint.getStats(sim.now).stun.changeRequests, 0);
});

Deno.test("CHANGE-REQUEST is answered from the socket it asks for (RFC 5780 section 6.1's table)", () => {
  const { sim, server } = setup(FOUR);
  const cases: [string, boolean, boolean, string][] = [
    [A1P1, false, false, A1P1],
    [A1P1, false, true, A1P2],
    [A1P1, true, false, A2P1],
    [A1P1, true, true, A2P2],
    [A2P2, false, true, A2P1],
    [A2P2, true, false, A1P2],
    [A1P2, true, true, A2P1],
  ];
  for (const [to, ip, port, from] of cases) {
    const a = exchange(sim, to, request([change(ip, port)]))!;
    const what = `to ${to}, change ip ${ip} port ${port}`;
    assertStrictEquals(a.msg.class, "success", what);
    assertStrictEquals(a.from, from, what);
    assertStrictEquals(address(a.msg, STUN_ATTR.RESPONSE_ORIGIN), from, what);
    assertStrictEquals(address(a.msg, STUN_ATTR.XOR_MAPPED_ADDRESS), a.peer, what);
  }
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.stun.responses, 7);
  assertStrictEquals(s.stun.changeRequests, 6);
});

Deno.test("an alternate port alone: change port served, change IP refused with 420, no OTHER-ADDRESS", () => {
  const { sim, server } = setup([A1P2]);
  const plain = exchange(sim, A1P1, request())!;
  assertStrictEquals(address(plain.msg, STUN_ATTR.RESPONSE_ORIGIN), A1P1);
  assertStrictEquals(address(plain.msg, STUN_ATTR.OTHER_ADDRESS), undefined, "no other IP address: none");
  const port = exchange(sim, A1P1, request([change(false, true)]))!;
  assertEquals([port.msg.class, port.from], ["success", A1P2]);
  for (const ip of [change(true, false), change(true, true)]) {
    const refused = exchange(sim, A1P1, request([ip]))!;
    assertEquals([refused.msg.class, refused.from, errorCode(refused.msg)], ["error", A1P1, 420]);
    assertEquals(unknownAttributes(refused.msg), [STUN_ATTR.CHANGE_REQUEST]);
  }
  const s = server.endpoint.getStats(sim.now).stun;
  assertEquals([s.responses, s.changeRequests, s.errors.unknown_attribute], [2, 1, 2]);
});

Deno.test("without alternates nothing changes: no RESPONSE-ORIGIN, and a change asked for is a 420", () => {
  const { sim } = setup([]);
  const plain = exchange(sim, A1P1, request())!;
  assertEquals(plain.msg.attributes.map((a) => a.type), [
    STUN_ATTR.XOR_MAPPED_ADDRESS,
    STUN_ATTR.FINGERPRINT,
  ]);
  const refused = exchange(sim, A1P1, request([change(false, true)]))!;
  assertStrictEquals(errorCode(refused.msg), 420);
});

Deno.test("a socket bound to 0.0.0.0 is not named in RESPONSE-ORIGIN (it does not know its address)", () => {
  const { sim } = setup(["0.0.0.0:3479"], "0.0.0.0:3478");
  const a = exchange(sim, "0.0.0.0:3478", request([change(false, true)]))!;
  assertEquals([a.msg.class, a.from], ["success", "0.0.0.0:3479"]);
  assertStrictEquals(address(a.msg, STUN_ATTR.RESPONSE_ORIGIN), undefined);
  assertStrictEquals(address(a.msg, STUN_ATTR.OTHER_ADDRESS), undefined);
});

Deno.test("an RFC 3489 request gets SOURCE-ADDRESS and CHANGED-ADDRESS, the old names", () => {
  const { sim } = setup(FOUR);
  const a = exchange(sim, A1P1, request([change(true, true)], { classic: true, fingerprint: false }))!;
  assertStrictEquals(a.from, A2P2);
  assertEquals(a.msg.attributes.map((x) => x.type), [
    STUN_ATTR.MAPPED_ADDRESS,
    STUN_ATTR.SOURCE_ADDRESS,
    STUN_ATTR.CHANGED_ADDRESS,
  ]);
  assertStrictEquals(address(a.msg, STUN_ATTR.SOURCE_ADDRESS), A2P2);
  assertStrictEquals(address(a.msg, STUN_ATTR.CHANGED_ADDRESS), A2P2);
});

Deno.test("PADDING and RESPONSE-PORT are refused with 420 naming them (not served: amplification, reflection)", () => {
  const { sim } = setup(FOUR);
  const padding = { type: STUN_ATTR.PADDING, value: new Uint8Array(64) };
  const responsePort = { type: STUN_ATTR.RESPONSE_PORT, value: Uint8Array.of(0x13, 0x88, 0, 0) };
  for (const [attr, type] of [[padding, 0x0026], [responsePort, 0x0027]] as const) {
    const a = exchange(sim, A1P1, request([attr, change(true, true)]))!;
    assertEquals([a.msg.class, a.from, errorCode(a.msg)], ["error", A1P1, 420]);
    assertEquals(unknownAttributes(a.msg), [type]);
    assert(a.bytes.length <= 3 * request([attr]).length);
  }
});

Deno.test("the alternate sockets serve STUN only: JSON there is dropped and counted, on the main one answered", () => {
  const { sim, server } = setup(FOUR);
  const peer = sim.addRaw("192.0.2.20:42000");
  for (const socket of FOUR) peer.send(socket, "Ping", null);
  sim.runFor(100);
  assertStrictEquals(peer.arrivals.length, 0, "nothing answered from an alternate socket");
  peer.send(A1P1, "Ping", null);
  sim.runFor(100);
  assertStrictEquals(peer.arrivals.length, 1);
  assertStrictEquals(peer.arrivals[0]!.from, A1P1);
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.drops.alternate_socket, 3);
  assertStrictEquals(s.messagesSent.Pong, 1);
  assertStrictEquals(s.datagramsReceived, s.processed + s.duplicates + s.droppedTotal);
});

Deno.test("amplification: within request + address attributes and 3x, RESPONSE-ORIGIN then OTHER-ADDRESS given up", () => {
  const rows: string[] = [];
  const v6 = ["[2001:db8::1]:3478", "[2001:db8::1]:3479", "[2001:db8::2]:3478", "[2001:db8::2]:3479"];
  const families = [["v4", "192.0.2.30", A1P1, FOUR], ["v6", "[2001:db8::30]", v6[0]!, v6.slice(1)]] as const;
  const requests: [string, () => Uint8Array][] = [
    ["bare 20 B", () => request([], { fingerprint: false })],
    ["FINGERPRINT 28 B", () => request()],
    ["CHANGE-REQUEST 28 B", () => request([change(true, true)], { fingerprint: false })],
    ["CHANGE-REQUEST+FP 36 B", () => request([change(true, true)])],
  ];
  for (const [family, host, main, alternates] of families) {
    const { sim } = setup([...alternates], main);
    for (const [name, make] of requests) {
      const req = make();
      const a = exchange(sim, main, req, host)!;
      assert(a, `${name} ${family} answered`);
      const each = family === "v4" ? 12 : 24;
      const addresses = a.msg.attributes.filter((x) =>
        [STUN_ATTR.XOR_MAPPED_ADDRESS, STUN_ATTR.RESPONSE_ORIGIN, STUN_ATTR.OTHER_ADDRESS].includes(
          x.type as never,
        )
      ).length;
      assert(a.bytes.length <= req.length + addresses * each, `${name} ${family}: ${a.bytes.length}`);
      assert(a.bytes.length <= 3 * req.length, `${name} ${family}: ${a.bytes.length} > 3x`);
      const names = a.msg.attributes.map((x) =>
        x.type.toString(16)
      ).join(",");
      rows.push(
        `${family} ${name}: ${a.bytes.length} B (${(a.bytes.length / req.length).toFixed(2)}x) [${names}]`,
      );
    }
  }
  console.log(`RFC 5780 answer sizes: ${rows.join("; ")}`);
});

Deno.test("an answer from another socket spends the unproven connection's 3x budget like any other", () => {
  const { sim, server } = setup(FOUR);
  const addr = "192.0.2.50:44000";
  const peer = sim.addRaw(addr);
  // A HandshakeRequest makes an unvalidated connection (its answers are limited to 3x what came from there).
  peer.handshake(A1P1, { ...server.endpoint.node, id: peer.newId(), listen_addr: addr, name: "p" });
  sim.runFor(20);
  for (let i = 0; i < 100; i++) peer.sendBytes(A1P1, request([change(true, true)], { fingerprint: false }));
  sim.runFor(50);
  const s = server.endpoint.getStats(sim.now);
  assert(s.bytesSent <= 3 * s.bytesReceived, `${s.bytesSent} sent for ${s.bytesReceived} received`);
  assertStrictEquals(s.stun.changeRequests, 100);
  assert(peer.arrivals.filter((a) => a.from === A2P2).length === 100, "each answered from A2:P2");
});

Deno.test("the worked example of docs/protocol.md#stun: a change-port request and its 64-byte answer", () => {
  const hex = (text: string) =>
    Uint8Array.from(text.replace(/\s+/g, "").match(/../g)!, (b) => parseInt(b, 16));
  const sim = new Sim({ seed: 1 });
  const alternates = ["203.0.113.1:3479", "203.0.113.2:3478", "203.0.113.2:3479"];
  sim.addEndpoint("203.0.113.1:3478", { alternates, node: { version: "0.1.0" } });
  const peer = sim.addRaw("192.0.2.10:40000");
  peer.sendBytes(
    "203.0.113.1:3478",
    hex("00010010 2112a442 b7e7a701 bc34d686 fa87dfae 00030004 00000002 80280004 eb84cb1c"),
  );
  sim.runFor(100);
  assertStrictEquals(peer.arrivals[0]!.from, "203.0.113.1:3479");
  assertEquals(
    peer.arrivals[0]!.bytes,
    hex(`0101002c 2112a442 b7e7a701 bc34d686 fa87dfae 00200008 0001bd52 e112a648
      802b0008 00010d97 cb007101 802c0008 00010d97 cb007102 80280004 757308df`),
  );
});
