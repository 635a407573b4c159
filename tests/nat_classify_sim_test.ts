/**
 * NAT classification in virtual time (issue 18): where a peer's `nat` travels once the server classified
 * it (discovery entries, the introduction card with `you` and `start_at_ms`, the HandshakeResponse), and
 * that deployed peers and unclassified peers never see any of it.
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { encodeMessage, type Json, type PeerInfo } from "../src/wire/mod.ts";
import { Sim, sock } from "./sim.ts";
import { MAX_START_AT_MS, startDelays } from "../src/core/introductions.ts";
import type { NatClass } from "../src/core/nat_class.ts";

const SERVER = "192.0.2.1:8080";

const CONE: NatClass = { mapping: "endpoint-independent", filtering: "address-dependent" };
const SYMMETRIC: NatClass = {
  mapping: "address-and-port-dependent",
  filtering: "address-and-port-dependent",
  portDelta: 1,
};

function trio(seed: number) {
  const sim = new Sim({ seed, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const a = sim.addEndpoint("198.51.100.1:5000", { role: "client" });
  const b = sim.addEndpoint("198.51.100.2:5000", { role: "client" });
  for (const c of [a, b]) sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(1_000);
  return { sim, server, a, b };
}

function cardOf(inbox: { msg: { message_type: string; payload: Json } }[]): { [key: string]: Json } {
  const r = inbox.find((r) =>
    r.msg.message_type === "DiscoveryResponse" && JSON.stringify(r.msg.payload).includes("introduction")
  )!;
  return (r.msg.payload as { introduction: { [key: string]: Json } }).introduction;
}

Deno.test("discovery entries carry a classified peer's nat to extension requesters only", () => {
  const { sim, server, a, b } = trio(1);
  assert(server.endpoint.setPeerNat(b.id, SYMMETRIC));
  assert(!server.endpoint.setPeerNat("00000000-0000-4000-8000-000000000000", CONE), "no such peer");
  sim.act(a, (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", {}));
  sim.runFor(50);
  const peers = a.eventsOf("discovery").at(-1)!.peers;
  const entryB = peers.find((p) => p.id === b.id)!;
  assertEquals(entryB.nat, {
    mapping: "address-and-port-dependent",
    filtering: "address-and-port-dependent",
    port_delta: 1,
  });
  assertStrictEquals(peers.find((p) => p.id === a.id)?.nat, undefined, "unmeasured: no nat");
  // A deployed peer sees the spec's entries: no nat (and no observed_addr).
  const raw = sim.addRaw("203.0.113.7:4000", { autoAck: true });
  raw.handshake(SERVER, {
    id: raw.newId(),
    name: "old",
    version: "0.2.0",
    listen_addr: raw.addr,
    capabilities: [],
    metadata: { network_id: "p2p_default" },
  });
  sim.runFor(50);
  raw.send(SERVER, "DiscoveryRequest", null);
  sim.runFor(50);
  const list = raw.last("DiscoveryResponse").payload as unknown as PeerInfo[];
  assert(list.length >= 2 && list.every((p) => p.nat === undefined && p.observed_addr === undefined));
});

Deno.test("an introduction card carries peer.nat, you.nat and start_at_ms; the event exposes them", () => {
  const { sim, server, a, b } = trio(2);
  server.endpoint.setPeerNat(a.id, CONE);
  server.endpoint.setPeerNat(b.id, SYMMETRIC);
  sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: b.id }, { reliable: true }),
  );
  sim.runFor(100);
  const ca = cardOf(a.inbox);
  const cb = cardOf(b.inbox);
  assertEquals((ca.peer as { nat: Json }).nat, {
    mapping: "address-and-port-dependent",
    filtering: "address-and-port-dependent",
    port_delta: 1,
  });
  assertEquals(ca.you, { nat: { mapping: "endpoint-independent", filtering: "address-dependent" } });
  assertEquals((cb.peer as { nat: Json }).nat, {
    mapping: "endpoint-independent",
    filtering: "address-dependent",
  });
  assertEquals((cb.you as { nat: Json }).nat, {
    mapping: "address-and-port-dependent",
    filtering: "address-and-port-dependent",
    port_delta: 1,
  });
  // Equal round trips: both start at once.
  assertStrictEquals(ca.start_at_ms, 0);
  assertStrictEquals(cb.start_at_ms, 0);
  const ea = a.eventsOf("introduced")[0]!;
  assertEquals(ea.you, CONE);
  assertEquals(ea.peer.nat?.mapping, "address-and-port-dependent");
  assertStrictEquals(ea.startAtMs, 0);
  assertEquals(b.eventsOf("introduced")[0]!.you, SYMMETRIC);
});

Deno.test("an unclassified peer's card has no you and no peer.nat, but start_at_ms", () => {
  const { sim, a, b } = trio(3);
  sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: b.id }, { reliable: true }),
  );
  sim.runFor(100);
  const ca = cardOf(a.inbox);
  assertStrictEquals(ca.you, undefined);
  assertStrictEquals((ca.peer as { nat?: Json }).nat, undefined);
  assertStrictEquals(typeof ca.start_at_ms, "number");
  assertEquals(a.eventsOf("introduced")[0]!.you, { mapping: "unknown", filtering: "unknown" });
});

Deno.test("start_at_ms: the nearer peer waits out the difference of the one-way times, at most 1 s", () => {
  assertEquals(startDelays(10, 10), [0, 0]);
  assertEquals(startDelays(20, 100), [40, 0]);
  assertEquals(startDelays(100, 20), [0, 40]);
  assertEquals(startDelays(0, 10_000), [MAX_START_AT_MS, 0]);
});

Deno.test("the HandshakeResponse of an already classified peer carries nat and suggested_keepalive", () => {
  const { sim, server, a } = trio(4);
  const first = a.inbox.find((r) => r.msg.message_type === "HandshakeResponse")!.msg.payload as {
    nat?: Json;
  };
  assertStrictEquals(first.nat, undefined, "not classified yet");
  server.endpoint.setPeerNat(a.id, { ...CONE, bindingLifetimeMs: 20_000 });
  sim.act(a, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(200);
  const answers = a.inbox.filter((r) => r.msg.message_type === "HandshakeResponse");
  const last = answers.at(-1)!.msg.payload as { nat?: Json; suggested_keepalive?: number };
  assert(answers.length >= 2, `${answers.length} answers`);
  assertEquals(last.nat, {
    mapping: "endpoint-independent",
    filtering: "address-dependent",
    binding_lifetime_ms: 20_000,
  });
  assertStrictEquals(last.suggested_keepalive, 10, "below half the binding lifetime");
});

// ------------------------------------------------------------------ the classification exchange

const A1P2 = "192.0.2.1:8081";
const A2P1 = "192.0.2.2:8080";
const A2P2 = "192.0.2.2:8081";

function rfc5780(seed: number, alternates = [A1P2, A2P1, A2P2], clients = 1) {
  const sim = new Sim({ seed, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false }, alternates });
  const cs = [];
  for (let i = 0; i < clients; i++) {
    const c = sim.addEndpoint(`198.51.100.${1 + i}:5000`, { role: "client" });
    sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
    cs.push(c);
  }
  sim.runFor(1_000);
  return { sim, server, clients: cs, c: cs[0]! };
}

Deno.test("exchange: an open peer is endpoint-independent both ways; the wire follows the spec", () => {
  const { sim, server, c } = rfc5780(10);
  const hello = c.inbox.find((r) => r.msg.message_type === "HandshakeResponse")!.msg.payload as {
    nat_check?: boolean;
  };
  assertStrictEquals(hello.nat_check, true, "the server offers the exchange");
  assertStrictEquals(c.eventsOf("connected")[0]!.natCheck, true);
  const start = sim.now;
  sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(3_000);
  const done = c.eventsOf("natChecked");
  assertStrictEquals(done.length, 1);
  assertEquals(done[0]!.nat, { mapping: "endpoint-independent", filtering: "endpoint-independent" });
  assertStrictEquals(done[0]!.reason, null);
  assertStrictEquals(done[0]!.suggestedKeepalive, 15);
  assertEquals(server.eventsOf("natChecked")[0]!.peerId, c.id);
  // Filtering probes: 3 from A2:P2 ("address") and 3 from A1:P2 ("port"), all to the registered address.
  const probes = sim.trace.filter((t) =>
    t.to === c.addr && new TextDecoder().decode(t.bytes).includes("nat_probe")
  );
  assertEquals(probes.map((t) => t.from).sort(), [A1P2, A1P2, A1P2, A2P2, A2P2, A2P2]);
  // The client reported each to the main address and answered none of them.
  const fromClient = sim.sentBy(c.addr).filter((s) => s.at > start);
  assert(fromClient.every((s) => s.to !== A2P2 || JSON.stringify(s.msg.payload).includes("nat_map")));
  assertStrictEquals(
    fromClient.filter((s) => s.to === SERVER && JSON.stringify(s.msg.payload).includes("nat_seen")).length,
    6,
  );
  // Mapping: one Ping to each target, each answered from the socket it came to with the observed address.
  const maps = fromClient.filter((s) => JSON.stringify(s.msg.payload).includes("nat_map"));
  assertEquals(maps.map((s) => s.to).sort(), [A1P2, A2P1, A2P2]);
  const pongs = c.inbox.filter((r) => r.msg.message_type === "Pong" && r.from !== SERVER);
  assertEquals(pongs.map((t) => t.from).sort(), [A1P2, A2P1, A2P2]);
  for (const p of pongs) {
    assertStrictEquals((p.msg.payload as { observed: string }).observed, c.addr);
    const ping = maps.find((m) => m.to === p.from)!;
    assert(p.bytes.length <= 3 * ping.bytes.length, "within 3x");
  }
  // The peer record holds it: discovery shows it, the stats and counters count it.
  const stats = server.endpoint.getStats(sim.now).natChecks;
  assertEquals(stats, { requested: 1, refused: 0, completed: 1, probes: 6, seen: 6, mapAnswers: 3 });
  const result = c.inbox.filter((r) => JSON.stringify(r.msg.payload).includes('"suggested_keepalive"')).at(
    -1,
  )!;
  assertEquals(result.msg.payload, {
    nat: { mapping: "endpoint-independent", filtering: "endpoint-independent" },
    suggested_keepalive: 15,
  });
});

Deno.test("exchange: probes from the other address filtered -> address-dependent filtering", () => {
  const { sim, c } = rfc5780(11);
  sim.link(A2P2, c.addr, { loss: 1 });
  sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(3_000);
  assertEquals(c.eventsOf("natChecked")[0]!.nat.filtering, "address-dependent");
  sim.link(A1P2, c.addr, { loss: 1 });
  sim.runFor(30_000);
  sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(3_000);
  assertEquals(c.eventsOf("natChecked")[1]!.nat.filtering, "address-and-port-dependent");
});

Deno.test("exchange: without an alternate address only what the port test decides is reported", () => {
  const { sim, c } = rfc5780(12, [A1P2]);
  sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(3_000);
  assertEquals(c.eventsOf("natChecked")[0]!.nat, { mapping: "unknown", filtering: "unknown" });
});

Deno.test("exchange: a server without alternate sockets says nat_check_unavailable; one check per 30 s", () => {
  const { sim, a } = trio(13);
  assertStrictEquals(a.eventsOf("connected")[0]!.natCheck, undefined, "not offered");
  sim.act(a, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(500);
  assertEquals(a.eventsOf("natChecked").map((e) => e.reason), ["unavailable"]);
  const { sim: s2, c } = rfc5780(14);
  s2.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  s2.runFor(3_000);
  s2.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  s2.runFor(500);
  assertEquals(c.eventsOf("natChecked").map((e) => e.reason), [null, "rate_limited"]);
});

Deno.test("exchange: forged reports and mapping Pings with unknown tokens are dropped and counted", () => {
  const { sim, server, c } = rfc5780(15);
  const raw = sim.addRaw("203.0.113.9:4000");
  raw.send(A2P1, "Ping", { nat_map: "00000000-0000-4000-8000-000000000000" }, { seq: null });
  raw.send(A2P1, "Data", { hi: 1 }, { seq: null });
  sim.link(A2P2, c.addr, { loss: 1 });
  sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(50);
  // A spoofer claims c saw the address probe, with a guessed token, from c's own address (summed, as c's
  // datagrams are).
  const forged = encodeMessage({
    id: raw.newId(),
    message_type: "Ping",
    timestamp: 0,
    payload: { nat_seen: "11111111-1111-4111-8111-111111111111", via: "address" },
    sender_addr: c.addr,
    sequence_number: null,
    requires_ack: false,
    ack_for: null,
  }, true).slice();
  sim.transmit(c.addr, SERVER, forged);
  sim.runFor(3_000);
  assertStrictEquals(raw.inbox.length, 0, "nothing answered to the unknown token or the Data");
  const drops = server.endpoint.getStats(sim.now).drops;
  assertStrictEquals(drops.nat_check_token, 2, "the unknown mapping token and the forged report");
  assertStrictEquals(drops.alternate_socket, 1);
  assertEquals(
    c.eventsOf("natChecked")[0]!.nat.filtering,
    "address-dependent",
    "the forgery changed nothing",
  );
});

Deno.test("exchange: checks in progress are bounded server-wide", () => {
  const { sim, server, clients } = rfc5780(16, [A1P2, A2P1, A2P2], 40);
  for (const c of clients) sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(100);
  const stats = server.endpoint.getStats(sim.now).natChecks;
  assertStrictEquals(stats.requested, 40);
  assertStrictEquals(stats.refused, 8);
  sim.runFor(3_000);
  assertStrictEquals(server.endpoint.getStats(sim.now).natChecks.completed, 32);
  const reasons = clients.flatMap((c) => c.eventsOf("natChecked").map((e) => e.reason));
  assertStrictEquals(reasons.filter((r) => r === "rate_limited").length, 8);
});
