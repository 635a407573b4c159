/**
 * Rendezvous groundwork in virtual time: observed (reflexive) addresses, the suggested keepalive, and
 * discovery paging by cursor with a capability filter, each answer within one datagram.
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import type { Json, PeerInfo } from "../src/wire/mod.ts";
import { Sim, type SimEndpoint, sock } from "./sim.ts";
import { isPrivateIp, PROBES_BEFORE_ANSWER } from "../src/core/introductions.ts";

const SERVER = "192.0.2.1:8080";

function setup(count: number, seed = 1, capability = (i: number) => (i % 2 === 0 ? ["even"] : ["odd"])) {
  const sim = new Sim({ seed, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false, maxConnections: 1_000 } });
  const clients: SimEndpoint[] = [];
  for (let i = 0; i < count; i++) {
    const c = sim.addEndpoint(`198.51.100.${1 + (i % 200)}:${5000 + Math.floor(i / 200)}`, {
      role: "client",
      node: { capabilities: capability(i), name: `client-${i}-${"n".repeat(40)}` },
    });
    sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
    clients.push(c);
  }
  sim.runFor(1_000);
  return { sim, server, clients };
}

/** Pages through discovery from `client` with `query`, collecting every page's ids. */
function pageAll(
  sim: Sim,
  client: SimEndpoint,
  query: Record<string, Json>,
): { pages: PeerInfo[][]; sizes: number[] } {
  const pages: PeerInfo[][] = [];
  const sizes: number[] = [];
  let cursor: string | null = null;
  for (let i = 0; i < 200; i++) {
    const before = client.eventsOf("discovery").length;
    const payload: Json = cursor === null ? { ...query } : { ...query, cursor };
    sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", payload));
    sim.runFor(50);
    const event = client.eventsOf("discovery")[before]!;
    pages.push(event.peers);
    const answer = sim.trace.filter((t) => t.from === SERVER && t.to === client.addr).at(-1)!;
    sizes.push(answer.bytes.length);
    if (event.nextCursor === null) break;
    cursor = event.nextCursor;
  }
  return { pages, sizes };
}

Deno.test("a client learns its public address from the HandshakeResponse and from Pongs", () => {
  const { sim, clients } = setup(1);
  const c = clients[0]!;
  assertStrictEquals(c.eventsOf("connected")[0]!.observedAddr, c.addr);
  const response = c.inbox.find((r) => r.msg.message_type === "HandshakeResponse")!;
  const payload = response.msg.payload as { observed_addr: string; keepalive_interval: number };
  assertStrictEquals(payload.observed_addr, c.addr);
  assertStrictEquals(payload.keepalive_interval, 15);
  sim.act(c, (ep, now) => ep.send(now, sock(SERVER), "Ping", { nonce: 1 }));
  sim.runFor(50);
  const pong = c.inbox.filter((r) => r.msg.message_type === "Pong").at(-1)!;
  assertEquals(pong.msg.payload, { nonce: 1, observed_addr: c.addr });
});

Deno.test("after a NAT rebinding the server's Pong shows the new public address (keyed clients roam there)", () => {
  const { sim, server, clients } = setup(1);
  void server;
  const c = clients[0]!;
  sim.rebind(c.addr, "198.51.100.99:7000");
  sim.act(c, (ep, now) => ep.send(now, sock(SERVER), "Ping", { nonce: 2 }));
  sim.runFor(50);
  const pong = c.inbox.filter((r) => r.msg.message_type === "Pong").at(-1)!;
  assertStrictEquals(
    (pong.msg.payload as { observed_addr: string }).observed_addr,
    undefined,
    "unkeyed: a stateless Pong",
  );
});

Deno.test("deployed peers get the spec's payloads: a null Pong and an array without observed_addr", () => {
  const { sim } = setup(2);
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
  raw.send(SERVER, "Ping", null);
  raw.send(SERVER, "DiscoveryRequest", null);
  sim.runFor(50);
  assertStrictEquals(raw.last("Pong").payload, null);
  const list = raw.last("DiscoveryResponse").payload as unknown as PeerInfo[];
  assert(Array.isArray(list) && list.length === 3);
  assert(list.every((p) => p.observed_addr === undefined));
});

Deno.test("a keyed-out client keeps its NAT mapping with the server's suggested keepalive (15 s, not 30 s)", () => {
  const { sim, clients } = setup(1);
  const c = clients[0]!;
  const start = sim.now;
  sim.runFor(61_000);
  const pings = sim.sentBy(c.addr).filter((s) => s.msg.message_type === "Ping" && s.at > start);
  assert(pings.length >= 3, `${pings.length} keepalive Pings in 61 s`);
  const gaps = pings.slice(1).map((p, i) => p.at - pings[i]!.at);
  assert(gaps.every((g) => g >= 14_999 && g <= 15_001), `gaps ${gaps}`);
});

Deno.test("cursor paging walks every peer exactly once, each answer within one 1,200-byte datagram", () => {
  const { sim, clients } = setup(60);
  const { pages, sizes } = pageAll(sim, clients[0]!, {});
  const ids = pages.flat().map((p) => p.id);
  assertStrictEquals(ids.length, 60);
  assertStrictEquals(new Set(ids).size, 60);
  assert(sizes.every((n) => n <= 1_200), `answer sizes ${sizes}`);
  assert(pages.length > 5, "a 1,200-byte datagram holds a few peers, so it took many pages");
  assert(pages.flat().every((p) => p.observed_addr !== undefined));
});

Deno.test("cursor paging neither skips nor repeats peers while others join and leave between pages", () => {
  const { sim, server, clients } = setup(40);
  const c = clients[0]!;
  const seen: string[] = [];
  let cursor: string | null = null;
  let page = 0;
  const stable = new Set(clients.slice(0, 20).map((x) => x.id));
  for (;;) {
    const before = c.eventsOf("discovery").length;
    const q: Json = cursor === null ? { limit: 3 } : { limit: 3, cursor };
    sim.act(c, (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", q));
    sim.runFor(50);
    const event = c.eventsOf("discovery")[before]!;
    seen.push(...event.peers.map((p) => p.id));
    // Churn among the last 20 between pages: one leaves, one more joins.
    const leaver = clients[20 + page];
    if (leaver) sim.act(leaver, (ep, now) => ep.disconnect(now, sock(SERVER), "bye"));
    sim.runFor(50);
    page++;
    if (event.nextCursor === null) break;
    cursor = event.nextCursor;
  }
  assertStrictEquals(new Set(seen).size, seen.length, "no peer twice");
  for (const id of stable) assert(seen.includes(id), `stable peer ${id} listed`);
  void server;
});

Deno.test("a capability filter pages through matching peers only", () => {
  const { sim, clients } = setup(30);
  const { pages } = pageAll(sim, clients[1]!, { capability: "even" });
  const listed = pages.flat();
  assertStrictEquals(listed.length, 15);
  assert(listed.every((p) => p.capabilities.includes("even")));
});

Deno.test("a bad cursor or capability is a bad_request", () => {
  const { sim, clients } = setup(1);
  const c = clients[0]!;
  for (const payload of [{ cursor: "nope" }, { cursor: 5 }, { capability: 7 }] as Json[]) {
    const before = c.eventsOf("error").length;
    sim.act(c, (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", payload));
    sim.runFor(50);
    assertStrictEquals(c.eventsOf("error")[before]?.error.code, "bad_request", JSON.stringify(payload));
  }
});

// ------------------------------------------------------------------ relay

function relayPair(seed: number, config: Record<string, Json> = {}) {
  const sim = new Sim({ seed, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false, ...config } });
  const a = sim.addEndpoint("198.51.100.1:5000", { role: "client" });
  const b = sim.addEndpoint("198.51.100.2:5000", { role: "client" });
  for (const c of [a, b]) sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(1_000);
  return { sim, server, a, b };
}

Deno.test("relayed Data is acknowledged end to end: the sender's Ack waits for the recipient's", () => {
  const { sim, a, b } = relayPair(3);
  sim.link(SERVER, b.addr, { loss: 1 }); // the recipient hears nothing for a while
  const msg = sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "Data", { to: b.id, data: "hi" }, { reliable: true }),
  );
  sim.runFor(3_000);
  assertEquals(a.eventsOf("delivered").filter((e) => e.id === msg.id), [], "not delivered yet: no Ack");
  sim.link(SERVER, b.addr, { loss: 0 });
  sim.runFor(5_000);
  assertStrictEquals(
    a.eventsOf("delivered").filter((e) => e.id === msg.id).length,
    1,
    "acknowledged once delivered",
  );
  const got = b.eventsOf("data").filter((e) => (e.payload as { data: string }).data === "hi");
  assertStrictEquals(got.length, 1, "the sender's retransmissions were not relayed again");
});

Deno.test("a relayed message the recipient never acknowledges is answered with undeliverable, naming it", () => {
  const { sim, a, b } = relayPair(4, { deliveryTimeout: 3 });
  sim.link(SERVER, b.addr, { loss: 1 });
  const msg = sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "Data", { to: b.id, data: "x" }, { reliable: true }),
  );
  sim.runFor(5_000);
  const errors = a.eventsOf("error").filter((e) => e.error.code === "undeliverable");
  assert(errors.length >= 1, "told (again for each retransmission after)");
  assert(errors.every((e) => (e.message.payload as { id: string }).id === msg.id));
  assertEquals(a.eventsOf("delivered").filter((e) => e.id === msg.id), []);
});

Deno.test("the relay quota refuses the excess with relay_quota (unacknowledged) and refills over the minute", () => {
  const { sim, a, b } = relayPair(5, { relayQuota: [5, 1_000_000] });
  const ids: string[] = [];
  for (let i = 0; i < 7; i++) {
    ids.push(
      sim.act(a, (ep, now) => ep.send(now, sock(SERVER), "Data", { to: b.id, data: i }, { reliable: true }))
        .id,
    );
  }
  sim.runFor(100);
  assertStrictEquals(b.eventsOf("data").length, 5);
  const refused = a.eventsOf("error").filter((e) => e.error.code === "relay_quota");
  assert(refused.length >= 2, `${refused.length} refusals`);
  const named = new Set(refused.map((e) => (e.message.payload as { id: string }).id));
  assert(named.has(ids[5]!) && named.has(ids[6]!));
  assertStrictEquals(a.eventsOf("delivered").filter((e) => ids.slice(0, 5).includes(e.id)).length, 5);
  sim.runFor(30_000); // half a minute refills 2.5 messages: the sender's retries of the two get through
  assertStrictEquals(b.eventsOf("data").length, 7);
});

// ------------------------------------------------------------------ introductions

Deno.test("an introduction reaches both peers at the same moment, with each other's candidates and one nonce", () => {
  const { sim, a, b } = relayPair(6);
  sim.link(SERVER, b.addr, { latencyMs: 5 });
  sim.link(SERVER, a.addr, { latencyMs: 5 });
  const sentAt = sim.now;
  sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: b.id }, { reliable: true }),
  );
  sim.runFor(100);
  const ia = a.eventsOf("introduced");
  const ib = b.eventsOf("introduced");
  assertStrictEquals(ia.length, 1);
  assertStrictEquals(ib.length, 1);
  assertStrictEquals(ia[0]!.nonce, ib[0]!.nonce, "one shared nonce");
  assertStrictEquals(ia[0]!.initiator, true);
  assertStrictEquals(ib[0]!.initiator, false);
  assertEquals(
    ia[0]!.candidates.map((c) => `${c.hostname}:${c.port}`)[0],
    b.addr,
    "b's observed address first",
  );
  assertEquals(ib[0]!.candidates.map((c) => `${c.hostname}:${c.port}`)[0], a.addr);
  // Sent in the same instant, both arrive one latency later (the server does not wait between them).
  const arrivals = [a, b].map((c) =>
    c.inbox.find((r) =>
      r.msg.message_type === "DiscoveryResponse" && JSON.stringify(r.msg.payload).includes("introduction")
    )!.at
  );
  assertStrictEquals(arrivals[0], arrivals[1]);
  assert(arrivals[0]! - sentAt <= 15, "within a round trip of the request");
});

Deno.test("after an introduction both sides punch, the initiator shakes hands directly, and Data bypasses the server", () => {
  const { sim, a, b, server } = relayPair(7);
  sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: b.id }, { reliable: true }),
  );
  sim.runFor(500);
  assertStrictEquals(a.eventsOf("punched").length, 1, "a's probe was answered");
  assertStrictEquals(
    a.eventsOf("connected").filter((e) => e.node.id === b.id).length,
    1,
    "a shook hands with b",
  );
  const before = server.endpoint.getStats(sim.now).messagesReceived.Data;
  sim.act(a, (ep, now) => ep.send(now, sock(b.addr), "Data", "direct", { reliable: true }));
  sim.runFor(100);
  const got = b.eventsOf("data").filter((e) => e.payload === "direct");
  assertStrictEquals(got.length, 1);
  assertStrictEquals(got[0]!.fromId, a.id);
  assertStrictEquals(
    server.endpoint.getStats(sim.now).messagesReceived.Data,
    before,
    "nothing through the server",
  );
  // A stranger's handshake to b is refused: a client accepts only the peer it was introduced to.
  const stranger = sim.addEndpoint("203.0.113.9:5000", { role: "client" });
  sim.act(stranger, (ep, now) => ep.connect(now, sock(b.addr)));
  sim.runFor(11_000);
  assertEquals(stranger.eventsOf("connected"), []);
});

Deno.test("a punch survives the initiator's NAT rebinding mid-punch: the peer probes back where the probes come from", () => {
  for (const seed of [11, 12, 13]) {
    const { sim, a, b } = relayPair(seed);
    // a's probes cannot reach b until a's NAT mapping changes (as if b's NAT filtered a's old mapping).
    sim.link(a.addr, b.addr, { loss: 1 });
    sim.link(b.addr, a.addr, { loss: 1 });
    sim.act(
      a,
      (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: b.id }, { reliable: true }),
    );
    sim.runFor(300);
    assertEquals(a.eventsOf("punched"), []);
    sim.rebind(a.addr, `198.51.100.${50 + seed}:7000`); // a new mapping, never reported by the server
    sim.runFor(1_000);
    assertStrictEquals(a.eventsOf("punched").length, 1, `seed ${seed}: a path was found after the rebinding`);
    assertStrictEquals(a.eventsOf("connected").filter((e) => e.node.id === b.id).length, 1);
  }
});

Deno.test("a punch into silence gives up after its budget with punchFailed on both sides", () => {
  const { sim, a, b } = relayPair(9);
  sim.link(a.addr, b.addr, { loss: 1 });
  sim.link(b.addr, a.addr, { loss: 1 });
  const start = sim.now;
  sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: b.id }, { reliable: true }),
  );
  sim.runFor(2_900);
  assertEquals(a.eventsOf("punchFailed"), []);
  sim.runFor(1_000);
  assertEquals(a.eventsOf("punchFailed").map((e) => e.initiator), [true]);
  assertEquals(b.eventsOf("punchFailed").map((e) => e.initiator), [false]);
  const probes = sim.sentBy(a.addr).filter((s) => s.msg.message_type === "Ping" && s.at >= start);
  // In the simulation a peer's declared and observed addresses are one: one candidate, which never answers,
  // so it gets the probes allowed before an answer and no more (finding 7 of the outside review).
  assertStrictEquals(probes.length, PROBES_BEFORE_ANSWER);
  assertEquals(probes.map((p) => p.at - probes[0]!.at), [0, 100, 200, 300, 400]);
});

Deno.test("7: introduction candidates are observed addresses; a declared public listen_addr is never handed out", () => {
  const sim = new Sim({ seed: 31, link: { latencyMs: 5 } });
  sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const victim = "203.0.113.66:9999";
  const attacker = sim.addEndpoint("198.51.100.61:5000", { role: "client", node: { listen_addr: victim } });
  const client = sim.addEndpoint("198.51.100.62:5000", { role: "client" });
  for (const c of [attacker, client]) sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(500);
  sim.act(
    attacker,
    (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: client.id }, { reliable: true }),
  );
  sim.runFor(5_000);
  const card = client.eventsOf("introduced")[0]!;
  assertEquals(card.candidates.map((c) => `${c.hostname}:${c.port}`), [attacker.addr]);
  assertEquals(
    sim.trace.filter((t) => t.to === victim).length,
    0,
    "nothing ever goes to the declared address",
  );
  // Behind one NAT (the same public IP) a private declared address is a LAN path and is handed out.
  assertEquals(isPrivateIp("192.168.1.20"), true);
  assertEquals(isPrivateIp("203.0.113.66"), false);
  assertEquals(isPrivateIp("fd00::1"), true);
});

Deno.test("introductions are rate-limited per peer (bursts of 10, then one a second)", () => {
  const { sim, a, b, server } = relayPair(8);
  for (let i = 0; i < 12; i++) {
    sim.act(
      a,
      (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", { introduce: b.id }, { reliable: true }),
    );
  }
  sim.runFor(200);
  assertStrictEquals(server.endpoint.getStats(sim.now).introductions, 10);
  assertStrictEquals(a.eventsOf("error").filter((e) => e.error.code === "cannot_introduce").length, 2);
});
