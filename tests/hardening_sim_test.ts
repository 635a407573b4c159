/**
 * Attacks an outside tester found, each as a test in virtual time (the numbering in the names).
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { MAX_ECHOED_NONCE } from "../src/core/control.ts";
import { Sim } from "./sim.ts";
import { encodeMessage } from "../src/wire/codec.ts";
import type { Json, Message, MessageType } from "../src/wire/mod.ts";

const SERVER = "192.0.2.1:8080";

Deno.test("11: a Pong never grows with its Ping: a 2,000-byte Ping under max_message_size 2000 gets a small Pong", () => {
  const sim = new Sim({ seed: 1 });
  sim.addEndpoint(SERVER, { config: { enableDiscovery: false, maxMessageSize: 2_000 } });
  const peer = sim.addRaw("198.51.100.1:5000");
  const sizeOf = (nonce: string | number) => {
    const before = sim.trace.length;
    peer.send(SERVER, "Ping", { nonce }, { seq: null });
    sim.runFor(50);
    const ping = sim.trace.slice(before).find((t) => t.from === peer.addr)!;
    const pong = sim.trace.slice(before).find((t) => t.from === SERVER)!;
    return { ping: ping.bytes.length, pong: pong.bytes.length, payload: peer.last("Pong").payload };
  };
  const big = sizeOf("x".repeat(1_794)); // a 2,000-byte Ping
  assertStrictEquals(big.ping, 2_000);
  assert(big.pong < 250, `a ${big.ping}-byte Ping got a ${big.pong}-byte Pong`);
  assertEquals(big.payload, null);
  const edge = sizeOf("y".repeat(MAX_ECHOED_NONCE));
  assertEquals(edge.payload, { nonce: "y".repeat(MAX_ECHOED_NONCE) });
  assertEquals(sizeOf("z".repeat(MAX_ECHOED_NONCE + 1)).payload, null);
  assertEquals(sizeOf(7).payload, { nonce: 7 });
  assert(edge.pong <= big.pong + MAX_ECHOED_NONCE + 16, `${edge.pong} vs ${big.pong}`);
});

Deno.test("10: a rel number never collides with a sequence_number: Data rel 1 after a HandshakeRequest numbered 1 is processed", () => {
  const sim = new Sim({ seed: 2 });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  server.endpoint.reportDuplicates(true);
  const peer = sim.addRaw("198.51.100.2:5000");
  const info = {
    id: peer.newId(),
    name: "third-party",
    version: "1.0.0",
    listen_addr: peer.addr,
    capabilities: [],
    metadata: {},
  };
  // A client written from docs/protocol.md: extensions on, its HandshakeRequest numbered 1 without `rel`.
  const envelope = (type: MessageType, payload: Json, seq: number, rel?: number): Message => ({
    id: peer.newId(),
    message_type: type,
    timestamp: Math.floor(sim.now / 1000),
    payload,
    sender_addr: peer.addr,
    sequence_number: seq,
    requires_ack: true,
    ack_for: null,
    ext: 1,
    ...(rel === undefined ? {} : { rel }),
  });
  peer.sendBytes(SERVER, encodeMessage(envelope("HandshakeRequest", info, 1), true));
  sim.runFor(50);
  assertEquals(server.endpoint.peers().length, 1);
  const first = encodeMessage(envelope("Data", { text: "rel 1" }, 2, 1), true);
  peer.sendBytes(SERVER, first);
  sim.runFor(50);
  const echoes = () =>
    peer.messages("Data").filter((m) => JSON.stringify(m.payload).includes("rel 1")).length;
  assertStrictEquals(echoes(), 1, "the Data is processed (echoed), not taken for the handshake again");
  assertEquals(server.eventsOf("duplicate"), []);
  // The same datagram again is a duplicate: acknowledged again, reported in its own numbering space, and not
  // processed a second time.
  peer.sendBytes(SERVER, first);
  sim.runFor(50);
  assertEquals(server.eventsOf("duplicate").map((d) => [d.messageType, d.space, d.number]), [[
    "Data",
    "rel",
    1,
  ]]);
  assertStrictEquals(echoes(), 1);
});
