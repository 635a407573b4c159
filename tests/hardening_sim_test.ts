/**
 * Attacks an outside tester found, each as a test in virtual time (the numbering in the names).
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { MAX_ECHOED_NONCE } from "../src/core/control.ts";
import { Sim, sock } from "./sim.ts";
import { keepAnswer, newConn, releaseAnswers } from "../src/core/peers.ts";
import { generateIdentity } from "../src/core/auth.ts";
import { TAKEOVER_RATE } from "../src/core/handshake.ts";
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

Deno.test("2: a flood of valid signed requests for one id from 100 addresses: takeovers are rate limited before any signature, and a legitimate client is served", () => {
  const sim = new Sim({ seed: 3, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const stolen = generateIdentity();
  // 100 addresses, each sending a fresh signed HandshakeRequest for the same key and id every 100 ms.
  const flood = Array.from(
    { length: 100 },
    (_, i) => sim.addEndpoint(`198.51.100.${1 + i}:7000`, { role: "client", identity: stolen }),
  );
  const start = sim.now;
  let round = 0;
  const tick = () => {
    for (const f of flood) sim.act(f, (ep, now) => ep.connect(now, sock(SERVER)));
    round++;
  };
  tick();
  sim.runFor(50);
  // The legitimate client arrives in the middle of the flood.
  const legit = sim.addEndpoint("203.0.113.7:5000", { role: "client", identity: generateIdentity() });
  sim.act(legit, (ep, now) => ep.connect(now, sock(SERVER)));
  let connectedAt = NaN;
  sim.observe({
    event: (host, e) => {
      if (host === legit && e.type === "connected" && Number.isNaN(connectedAt)) connectedAt = sim.now;
    },
  });
  const pings: number[] = [];
  for (let t = 0; t < 50; t++) {
    sim.runFor(100);
    if (round < 50) tick();
    if (!Number.isNaN(connectedAt) && pings.length < 20) {
      pings.push(sim.act(legit, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" })));
    }
  }
  sim.runFor(2_000);
  const seconds = (sim.now - start) / 1000;
  assert(connectedAt - start < 1_000, `the legitimate handshake took ${connectedAt - start} ms`);
  const answered = legit.events.filter((e) => e.type === "requestDone" && pings.includes(e.id)).length;
  assert(answered >= 0.8 * pings.length, `${answered} of ${pings.length} pings answered`);
  // Each takeover the server let through cost a signature check, X25519 and a signed response: at most the
  // burst plus one a second, however many were sent (the holder's own address may re-handshake, within its
  // IP's handshake limit, as any node may).
  const answeredAddrs = new Set(
    sim.trace.filter((t) =>
      t.from === SERVER && new TextDecoder().decode(t.bytes).includes('"HandshakeResponse"')
    )
      .map((t) => t.to).filter((to) => flood.some((f) => f.addr === to)),
  );
  const replaced = server.eventsOf("peerLeft").filter((e) => e.reason === "replaced").length;
  const sent = flood.reduce((n, f) => n + sim.sentBy(f.addr).length, 0);
  const bound = TAKEOVER_RATE.burst + TAKEOVER_RATE.perSecond * seconds;
  assert(sent >= 5_000, `${sent} flood datagrams`);
  assert(replaced <= bound, `${replaced} takeovers`);
  assert(answeredAddrs.size <= bound + 1, `${answeredAddrs.size} flood addresses answered`);
  console.log(
    `finding 2: ${sent} flood datagrams over ${seconds} s, ${replaced} takeovers, ${answeredAddrs.size} ` +
      `addresses answered; legitimate ` +
      `handshake ${connectedAt - start} ms, ${answered}/${pings.length} pings`,
  );
});

Deno.test("acking a 1 MB echo's fragments does not trip the per-node rate limit", () => {
  const sim = new Sim({ seed: 4, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, {
    config: { enableDiscovery: false, rateLimitExemptLoopback: false },
  });
  const c = sim.addEndpoint("198.51.100.40:5000", { role: "client" });
  sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(500);
  sim.act(
    c,
    (ep, now) => ep.send(now, sock(SERVER), "Data", { blob: "x".repeat(1_000_000) }, { reliable: true }),
  );
  sim.runFor(10_000);
  const echo = c.eventsOf("data").find((e) => JSON.stringify(e.payload).length > 1_000_000);
  assert(echo, "the 1 MB echo arrived");
  assertStrictEquals(server.endpoint.getStats(sim.now).drops.rate_limited, 0);
});

Deno.test("6: a captured signed HandshakeRequest replayed after the replay cache was flushed does not take the node over", () => {
  const sim = new Sim({ seed: 6, link: { latencyMs: 2 } });
  // A replay cache of 16 ids stands for the 65,536 a flood of ~68,000 newer signed requests flushed.
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false }, replayCacheSize: 16 });
  const victim = sim.addEndpoint("198.51.100.60:5000", { role: "client", identity: generateIdentity() });
  sim.act(victim, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(500);
  const captured = sim.trace.find((t) =>
    t.from === victim.addr && new TextDecoder().decode(t.bytes).includes('"HandshakeRequest"')
  )!;
  // 20 other signed registrations push the captured request's id out of the cache.
  for (let i = 0; i < 20; i++) {
    const other = sim.addEndpoint(`198.51.100.${70 + i}:5000`, {
      role: "client",
      identity: generateIdentity(),
    });
    sim.act(other, (ep, now) => ep.connect(now, sock(SERVER)));
  }
  sim.runFor(20_000);
  const attacker = sim.addRaw("203.0.113.66:6000");
  attacker.sendBytes(SERVER, captured.bytes);
  sim.runFor(500);
  assertStrictEquals(server.endpoint.peer(victim.id)?.addr, victim.addr, "the node stays where it is");
  assertEquals(server.eventsOf("peerLeft").filter((e) => e.reason === "replaced"), []);
  const refused = server.eventsOf("refused").find((e) => e.from.hostname === "203.0.113.66");
  assertEquals(refused?.code, "replay");
});

Deno.test("8: replays of a captured unreliable MAC'd datagram are dropped as replayed; the routed Data is delivered once", () => {
  const sim = new Sim({ seed: 8, link: { latencyMs: 2 } });
  const server = sim.addEndpoint(SERVER, {
    config: { enableDiscovery: false },
    identity: generateIdentity(),
  });
  const a = sim.addEndpoint("198.51.100.81:5000", { role: "client", identity: generateIdentity() });
  const b = sim.addEndpoint("198.51.100.82:5000", { role: "client", identity: generateIdentity() });
  for (const c of [a, b]) sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(500);
  const before = sim.trace.length;
  sim.act(a, (ep, now) => ep.send(now, sock(SERVER), "Data", { to: b.id, data: "once" }));
  sim.runFor(100);
  const captured = sim.trace.slice(before).find((t) => t.from === a.addr && t.to === SERVER)!;
  assert(new TextDecoder().decode(captured.bytes).includes('"mac"'), "a MAC'd datagram");
  // An on-path attacker sends it again three times, from A's address.
  for (let i = 0; i < 3; i++) sim.transmit(a.addr, SERVER, captured.bytes);
  sim.runFor(100);
  const got = b.eventsOf("data").filter((e) => JSON.stringify(e.payload).includes("once"));
  assertStrictEquals(got.length, 1);
  assertStrictEquals(server.endpoint.getStats(sim.now).drops.replayed, 3);
});

Deno.test("kept answers: a shared budget bounds them across all remotes, and a forgotten remote gives its share back", () => {
  const budget = { used: 0, limit: 1_000 };
  const conns = Array.from(
    { length: 5 },
    (_, i) => newConn(`198.51.100.${i}:1`, sock(`198.51.100.${i}:1`), 0),
  );
  for (const [i, c] of conns.entries()) {
    for (let n = 0; n < 4; n++) {
      keepAnswer(c, `seq:${n}`, { bytes: new Uint8Array(100), type: "Data" }, budget);
    }
    assert(budget.used <= budget.limit, `remote ${i}: ${budget.used}`);
  }
  assertStrictEquals(budget.used, 1_000, "full: the later remotes' answers are not kept");
  assertStrictEquals(conns[4]!.x?.answers?.size ?? 0, 0);
  releaseAnswers(conns[0]!, budget);
  assertStrictEquals(budget.used, 600);
  keepAnswer(conns[4]!, "seq:0", { bytes: new Uint8Array(100), type: "Data" }, budget);
  assertStrictEquals(conns[4]!.x?.answers?.size, 1);
});

Deno.test("a new session forgets the old one's kept answers: a repeated request never gets an answer to another", () => {
  const sim = new Sim({ seed: 12 });
  sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const p = sim.addRaw("198.51.100.30:5000");
  const q = sim.addRaw("198.51.100.31:5000");
  const info = (peer: typeof p) => ({
    id: peer.newId(),
    name: "deployed",
    version: "0.2.0",
    listen_addr: peer.addr,
    capabilities: [],
    metadata: {},
  });
  const pInfo = info(p);
  const qInfo = info(q);
  p.handshake(SERVER, pInfo);
  q.handshake(SERVER, qInfo);
  sim.runFor(50);
  p.send(SERVER, "Data", "echo me", { seq: 5, requiresAck: true });
  sim.runFor(50);
  assertStrictEquals(p.messages("Data").length, 1, "echoed, and the echo kept for a repeat");
  // The same node handshakes again: a new session, its numbers start afresh.
  p.handshake(SERVER, pInfo, { seq: 1 });
  sim.runFor(50);
  const routed = p.send(SERVER, "Data", { to: qInfo.id, data: "hi" }, { seq: 5, requiresAck: true });
  sim.runFor(50);
  p.sendBytes(SERVER, JSON.stringify(routed)); // its repeat: an Ack again, and no echo of the old request
  sim.runFor(50);
  assertStrictEquals(p.messages("Data").length, 1, "no answer of the old session's seq 5");
  assertStrictEquals(q.messages("Data").length, 1, "routed once");
});
