/**
 * NAT classification in virtual time (issue 18): where a peer's `nat` travels once the server classified
 * it (discovery entries, the introduction card with `you` and `start_at_ms`, the HandshakeResponse), and
 * that deployed peers and unclassified peers never see any of it.
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import type { Json, PeerInfo } from "../src/wire/mod.ts";
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
