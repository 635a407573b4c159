/**
 * The binding lifetime exchange in virtual time (issue 18): a client measures, through a sacrificial socket
 * S behind a fake NAT that forgets S's binding after L ms without outbound traffic, how long its binding
 * lives; the server stores the result on the peer record, and the client adopts the keepalive it implies.
 * Also: packet loss does not read as expiry, forged, foreign and replayed datagrams are dropped and counted,
 * the bounds hold, and nothing sent to S exceeds 3x what S sent.
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import type { Json } from "../src/wire/mod.ts";
import { decode, Sim, type SimEndpoint, sock } from "./sim.ts";
import type { Config } from "../src/config.ts";
import type { EndpointEvent } from "../src/core/endpoint.ts";

const SERVER = "192.0.2.1:8080";
const A1P2 = "192.0.2.1:8081";
const A2P1 = "192.0.2.2:8080";
const A2P2 = "192.0.2.2:8081";
const LATENCY_MS = 5;

type Lifetime = Extract<EndpointEvent, { type: "natLifetime" }>;

/** The client at `198.51.100.<n>:5000`, its sacrificial socket S at port 5001 (its socket 1). */
function clientAt(sim: Sim, n: number): SimEndpoint {
  const addr = `198.51.100.${n}:5000`;
  const c = sim.addEndpoint(addr, { role: "client", alternates: [`198.51.100.${n}:5001`] });
  sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  return c;
}

/**
 * A NAT in front of S that keeps S's binding for `lifetimeMs` after S's last outbound datagram (inbound
 * traffic does not refresh it: RFC 4787 REQ-6's weakest NAT); an inbound datagram that arrives later is lost.
 */
function natBefore(sim: Sim, side: string, lifetimeMs: number): void {
  let lastOut = -Infinity;
  sim.observe({ transmit: (t) => t.from === side && (lastOut = t.at) });
  sim.gate((_from, to, now) => to !== side || now + LATENCY_MS - lastOut < lifetimeMs);
}

function setup(
  seed: number,
  options: { config?: Partial<Config>; clients?: number; alternates?: string[] } = {},
) {
  const sim = new Sim({ seed, link: { latencyMs: LATENCY_MS } });
  const server = sim.addEndpoint(SERVER, {
    config: { enableDiscovery: false, ...options.config },
    ...(options.alternates ? { alternates: options.alternates } : {}),
  });
  const clients: SimEndpoint[] = [];
  for (let i = 0; i < (options.clients ?? 1); i++) clients.push(clientAt(sim, i + 1));
  sim.runFor(1_000);
  return { sim, server, clients, c: clients[0]! };
}

function measure(sim: Sim, c: SimEndpoint): void {
  sim.act(c, (ep, now) => ep.measureLifetime(now, sock(SERVER), 1));
}

function lifetimeOf(c: SimEndpoint): Lifetime {
  const done = c.eventsOf("natLifetime");
  assertStrictEquals(done.length, 1, JSON.stringify(done));
  return done[0]!;
}

function payloadText(bytes: Uint8Array): string {
  return JSON.stringify(decode(bytes).payload);
}

const DEFAULT_GAPS = [5000, 10_000, 20_000, 30_000, 45_000, 60_000, 90_000, 120_000];

Deno.test("the measured lifetime brackets the NAT's for several lifetimes; the client adopts the keepalive", () => {
  const rows: string[] = [];
  for (const [i, L] of [3_000, 7_000, 25_000, 50_000, 100_000, 200_000].entries()) {
    const { sim, server, c } = setup(100 + i);
    const side = c.alternates[0]!;
    natBefore(sim, side, L);
    const hello = c.inbox.find((r) => r.msg.message_type === "HandshakeResponse")!.msg.payload as {
      nat_lifetime?: boolean;
    };
    assertStrictEquals(hello.nat_lifetime, true, "the server offers it");
    assertStrictEquals(c.eventsOf("connected")[0]!.natLifetime, true);
    measure(sim, c);
    sim.runFor(500_000);
    const e = lifetimeOf(c);
    assertStrictEquals(e.reason, null);
    assertStrictEquals(e.socket, 1);
    const passed = e.passedMs;
    const failed = e.failedMs;
    // Each probe reaches S gap + 10 ms after S's last datagram: a gap passes exactly when that is below L.
    assert(passed === null || passed + 10 < L, `L ${L}: passed ${passed}`);
    assert(failed === null || failed + 10 >= L, `L ${L}: failed ${failed}`);
    // The failed gap is the one after the longest that passed (none after the last).
    const next = passed === null ? 0 : DEFAULT_GAPS.indexOf(passed) + 1;
    assertStrictEquals(failed, DEFAULT_GAPS[next] ?? null);
    const lifetime = passed ?? DEFAULT_GAPS[0]! / 2;
    assertStrictEquals(e.nat.bindingLifetimeMs, lifetime);
    assertEquals(e.nat.mapping, "unknown", "not classified: only the lifetime is known");
    const k = Math.max(1, Math.min(15, Math.floor(lifetime / 2000)));
    assertStrictEquals(e.suggestedKeepalive, k);
    assert(k * 1000 < L, `keepalive ${k} s below the lifetime ${L} ms`);
    const path = c.endpoint.path(sock(SERVER))!;
    assertStrictEquals(path.keepaliveMs, Math.min(15, k) * 1000, "adopted: min(current 15 s, suggested)");
    // The server stored it, and says so in its own event.
    const se = server.eventsOf("natLifetime")[0]!;
    assertEquals([se.peerId, se.passedMs, se.failedMs], [c.id, passed, failed]);
    assertStrictEquals(server.endpoint.getStats(sim.now).natLifetimes.expired, failed === null ? 0 : 1);
    rows.push(`L ${L} ms -> passed ${passed} failed ${failed} -> lifetime ${lifetime} ms, keepalive ${k} s`);
  }
  console.log(rows.join("\n"));
});

Deno.test("the main socket's keepalive follows the adopted interval: heartbeats every 2 s after a 7 s lifetime", () => {
  const { sim, c } = setup(120);
  natBefore(sim, c.alternates[0]!, 7_000);
  measure(sim, c);
  sim.runFor(40_000);
  assertStrictEquals(lifetimeOf(c).suggestedKeepalive, 2);
  const from = sim.now;
  sim.runFor(20_000);
  const pings = sim.sentBy(c.addr).filter((s) =>
    s.at > from && s.to === SERVER && s.msg.message_type === "Ping"
  );
  assert(pings.length >= 9 && pings.length <= 11, `${pings.length} keepalives in 20 s`);
});

Deno.test("the wire: token to the main address, S opens, probes and answers, the result stored and offered", () => {
  const { sim, server, c } = setup(121, { config: { natLifetimeGapsMs: [1_000, 2_000] } });
  const side = c.alternates[0]!;
  natBefore(sim, side, 1_500);
  const start = sim.now;
  measure(sim, c);
  sim.runFor(20_000);
  const mine = sim.trace.filter((t) => t.at >= start && (t.from === side || t.to === side));
  const lines = mine.map((t) =>
    `${t.from} -> ${t.to} ${decode(t.bytes).message_type} ${payloadText(t.bytes)}`
  );
  const token = (c.inbox.find((r) => payloadText(r.bytes).includes("gaps_ms"))!.msg.payload as {
    nat_lifetime: { token: string; gaps_ms: number[] };
  }).nat_lifetime;
  assertEquals(token.gaps_ms, [1_000, 2_000]);
  const t = token.token;
  assertEquals(lines, [
    `${side} -> ${SERVER} Ping {"nat_life":"${t}"}`,
    `${SERVER} -> ${side} Pong {"nat_life":"${t}","seq":0}`,
    `${side} -> ${SERVER} Ping {"nat_life":"${t}","seq":0}`,
    `${SERVER} -> ${side} Pong {"nat_life":"${t}","seq":1}`,
    `${SERVER} -> ${side} Pong {"nat_life":"${t}","seq":1}`,
  ]);
  const result = c.inbox.filter((r) => payloadText(r.bytes).includes('"suggested_keepalive"')).at(-1)!;
  assertEquals(result.msg.payload, {
    nat: { mapping: "unknown", filtering: "unknown", binding_lifetime_ms: 1_000 },
    suggested_keepalive: 1,
    nat_lifetime: { token: t, passed_ms: 1_000, failed_ms: 2_000 },
  });
  // Discovery entries and a later HandshakeResponse carry it.
  sim.act(c, (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", {}));
  sim.runFor(50);
  assertEquals(c.eventsOf("discovery").at(-1)!.peers.find((p) => p.id === c.id)!.nat, {
    mapping: "unknown",
    filtering: "unknown",
    binding_lifetime_ms: 1_000,
  });
  sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(200);
  const again = c.inbox.filter((r) => r.msg.message_type === "HandshakeResponse").at(-1)!.msg.payload as {
    nat?: Json;
    suggested_keepalive?: number;
  };
  assertEquals(again.nat, { mapping: "unknown", filtering: "unknown", binding_lifetime_ms: 1_000 });
  assertStrictEquals(again.suggested_keepalive, 1);
  const stats = server.endpoint.getStats(sim.now).natLifetimes;
  assertEquals(stats, {
    requested: 1,
    refused: 0,
    opened: 1,
    completed: 1,
    expired: 1,
    probes: 3,
    resent: 1,
    answered: 1,
  });
});

Deno.test("one lost probe and one lost answer are resent, not read as expiry", () => {
  const { sim, server, c } = setup(122);
  const side = c.alternates[0]!;
  natBefore(sim, side, 25_000);
  let lostProbe = false;
  let lostAnswer = false;
  // Loses the first probe of gap 2 (20 s) and the first answer of gap 1 (10 s).
  sim.gate((from, to, _now, bytes) => {
    if (!lostProbe && to === side && payloadText(bytes).includes('"seq":2')) return !(lostProbe = true);
    if (!lostAnswer && from === side && payloadText(bytes).includes('"seq":1')) return !(lostAnswer = true);
    return true;
  });
  measure(sim, c);
  sim.runFor(200_000);
  const e = lifetimeOf(c);
  assertEquals([e.passedMs, e.failedMs], [20_000, 30_000]);
  assert(lostProbe && lostAnswer);
  const stats = server.endpoint.getStats(sim.now).natLifetimes;
  assertStrictEquals(stats.resent, 3, "the two losses and the expired gap");
});

Deno.test("unknown tokens, foreign addresses and replays are dropped and counted; nothing answers them", () => {
  const { sim, server, c } = setup(123, { config: { natLifetimeGapsMs: [2_000, 4_000] } });
  const side = c.alternates[0]!;
  const stranger = sim.addRaw("203.0.113.9:4000");
  const neighbour = sim.addRaw("198.51.100.1:5002"); // the client's IP, another port
  stranger.send(SERVER, "Ping", { nat_life: "00000000-0000-4000-8000-000000000000" }, { seq: null });
  sim.runFor(50);
  measure(sim, c);
  sim.runFor(30);
  const t = (c.inbox.find((r) => payloadText(r.bytes).includes("gaps_ms"))!.msg.payload as {
    nat_lifetime: { token: string };
  }).nat_lifetime.token;
  // Opens with the real token from another IP and, once S opened, from another port of the client's IP.
  stranger.send(SERVER, "Ping", { nat_life: t }, { seq: null });
  sim.runFor(50);
  neighbour.send(SERVER, "Ping", { nat_life: t }, { seq: null });
  neighbour.send(SERVER, "Ping", { nat_life: t, seq: 0 }, { seq: null });
  sim.runFor(2_100);
  // A replay of S's answer to probe 0 (from S's own address): it restarts gap 1, changes nothing else.
  const answer = sim.trace.find((x) => x.from === side && payloadText(x.bytes).includes('"seq":0'))!;
  sim.transmit(side, SERVER, answer.bytes.slice());
  sim.runFor(20_000);
  const drops = server.endpoint.getStats(sim.now).drops;
  assertStrictEquals(drops.nat_life_token, 1, "the unknown token");
  assertStrictEquals(drops.nat_life_address, 3, "the other IP and the other port (open and answer)");
  assertStrictEquals(drops.nat_life_repeat, 1, "the replayed answer");
  assertStrictEquals(stranger.inbox.length, 0);
  assertStrictEquals(neighbour.inbox.length, 0);
  const e = lifetimeOf(c);
  assertEquals([e.passedMs, e.failedMs, e.reason], [4_000, null, null], "no NAT here: every gap passes");
  // The replay came 2.1 s into gap 1 (4 s): that gap was restarted from it.
  const probes = sim.trace.filter((x) => x.to === side && payloadText(x.bytes).includes('"seq":1'));
  assertStrictEquals(probes.length, 1);
  const replayAt = sim.trace.find((x) =>
    x.from === side && x.bytes.length === answer.bytes.length && x !== answer
  )!;
  assert(
    probes[0]!.at >= replayAt.at + 4_000,
    `probe 1 at ${probes[0]!.at - replayAt.at} ms after the replay`,
  );
  // A client that receives a foreign datagram on S drops it and answers nothing.
  const before = sim.sentBy(side).length;
  stranger.send(side, "Pong", { nat_life: t, seq: 0 }, { seq: null });
  sim.runFor(50);
  assertStrictEquals(sim.sentBy(side).length, before);
  assertStrictEquals(c.endpoint.getStats(sim.now).drops.nat_life_token, 1);
});

Deno.test("everything sent to S stays within 3x what S sent, each probe within 3x the datagram before it", () => {
  const { sim, c } = setup(124);
  const side = c.alternates[0]!;
  natBefore(sim, side, 50_000);
  measure(sim, c);
  sim.runFor(500_000);
  assertStrictEquals(lifetimeOf(c).passedMs, 45_000);
  let sentByS = 0;
  let sentToS = 0;
  let last = 0;
  const rows: string[] = [];
  for (const t of sim.trace) {
    if (t.from === side) {
      sentByS += t.bytes.length;
      last = t.bytes.length;
    } else if (t.to === side) {
      sentToS += t.bytes.length;
      assert(t.bytes.length <= 3 * last, `a probe of ${t.bytes.length} bytes after ${last}`);
      rows.push(`${t.bytes.length}/${last}`);
    }
  }
  assert(sentToS <= 3 * sentByS, `${sentToS} bytes to S, ${sentByS} from it`);
  console.log(
    `to S ${sentToS} B, from S ${sentByS} B (${(sentToS / sentByS).toFixed(2)}x); probe/before: ${rows}`,
  );
});

Deno.test("bounds: 32 measurements at once, one per peer every 10 minutes, none when the gaps are []", () => {
  const { sim, server, clients } = setup(125, { clients: 40, config: { natLifetimeGapsMs: [1_000] } });
  for (const c of clients) measure(sim, c);
  sim.runFor(100);
  let stats = server.endpoint.getStats(sim.now).natLifetimes;
  assertStrictEquals(stats.requested, 40);
  assertStrictEquals(stats.refused, 8);
  sim.runFor(10_000);
  stats = server.endpoint.getStats(sim.now).natLifetimes;
  assertStrictEquals(stats.completed, 32);
  const reasons = clients.map((c) => lifetimeOf(c).reason);
  assertStrictEquals(reasons.filter((r) => r === "rate_limited").length, 8);
  assertStrictEquals(reasons.filter((r) => r === null).length, 32);
  // Again within 10 minutes: refused; after them: measured.
  const c = clients.find((x) => x.eventsOf("natLifetime")[0]!.reason === null)!;
  measure(sim, c);
  sim.runFor(500);
  assertEquals(c.eventsOf("natLifetime").map((e) => e.reason), [null, "rate_limited"]);
  sim.runFor(600_000);
  measure(sim, c);
  sim.runFor(5_000);
  assertEquals(c.eventsOf("natLifetime").map((e) => e.reason), [null, "rate_limited", null]);
  // A server whose gaps are [] offers nothing and refuses.
  const off = setup(126, { config: { natLifetimeGapsMs: [] } });
  assertStrictEquals(off.c.eventsOf("connected")[0]!.natLifetime, undefined, "not offered");
  measure(off.sim, off.c);
  off.sim.runFor(500);
  assertEquals(off.c.eventsOf("natLifetime").map((e) => e.reason), ["unavailable"]);
  assertStrictEquals(off.sim.sentBy(off.c.alternates[0]!).length, 0, "S sent nothing");
});

Deno.test("the peer leaving ends its measurement: no probe goes to S after its Disconnect", () => {
  const { sim, server, c } = setup(127, { config: { natLifetimeGapsMs: [5_000, 10_000] } });
  const side = c.alternates[0]!;
  measure(sim, c);
  sim.runFor(6_000);
  sim.act(c, (ep, now) => ep.disconnect(now, sock(SERVER), "bye"));
  const left = sim.now;
  sim.runFor(100);
  // S's answer again, after the peer left: dropped, the measurement ended, nothing sent.
  const answer = sim.trace.find((x) => x.from === side && payloadText(x.bytes).includes('"seq":0'))!;
  sim.transmit(side, SERVER, answer.bytes.slice());
  sim.runFor(30_000);
  assertStrictEquals(server.endpoint.getStats(sim.now).drops.nat_life_token, 1);
  assert(sim.trace.some((t) => t.to === side && t.at < left), "probe 0 went out");
  assertStrictEquals(sim.trace.filter((t) => t.to === side && t.at > left).length, 0);
  assertStrictEquals(server.endpoint.getStats(sim.now).natLifetimes.completed, 0);
  assertStrictEquals(server.eventsOf("natLifetime").length, 0);
});

Deno.test("after classification: the result keeps the class, and the client adopts both suggested keepalives", () => {
  const { sim, server, c } = setup(128, {
    alternates: [A1P2, A2P1, A2P2],
    config: { natLifetimeGapsMs: [2_000, 4_000, 8_000] },
  });
  natBefore(sim, c.alternates[0]!, 6_000);
  // Seeded: the server knows a 9 s lifetime already, so the classification result suggests 4 s.
  server.endpoint.setPeerNat(c.id, { mapping: "unknown", filtering: "unknown", bindingLifetimeMs: 9_000 });
  sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(3_000);
  const checked = c.eventsOf("natChecked")[0]!;
  assertEquals(checked.nat, {
    mapping: "endpoint-independent",
    filtering: "endpoint-independent",
    bindingLifetimeMs: 9_000,
  });
  assertStrictEquals(checked.suggestedKeepalive, 4);
  assertStrictEquals(c.endpoint.path(sock(SERVER))!.keepaliveMs, 4_000, "adopted from the classification");
  measure(sim, c);
  sim.runFor(60_000);
  const e = lifetimeOf(c);
  assertEquals(e.nat, {
    mapping: "endpoint-independent",
    filtering: "endpoint-independent",
    bindingLifetimeMs: 4_000,
  });
  assertStrictEquals(e.suggestedKeepalive, 2);
  assertStrictEquals(c.endpoint.path(sock(SERVER))!.keepaliveMs, 2_000, "adopted from the lifetime result");
  // A larger suggestion never lengthens the keepalive in use.
  server.endpoint.setPeerNat(c.id, { ...e.nat, bindingLifetimeMs: 60_000 });
  sim.runFor(30_000);
  sim.act(c, (ep, now) => ep.checkNat(now, sock(SERVER)));
  sim.runFor(3_000);
  assertStrictEquals(c.eventsOf("natChecked")[1]!.suggestedKeepalive, 15);
  assertStrictEquals(c.endpoint.path(sock(SERVER))!.keepaliveMs, 2_000);
});

Deno.test("a client without an answer gives up: reason timeout, and S may be closed", () => {
  const { sim, c } = setup(129);
  sim.link(c.addr, SERVER, { loss: 1 });
  measure(sim, c);
  sim.runFor(10_000);
  assertEquals(lifetimeOf(c).reason, "timeout");
});
