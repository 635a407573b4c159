/**
 * A client's requests in the core (`Endpoint.request`): Ping, discovery pages and introductions are sent,
 * retried on the retransmit policy in virtual time, matched to their answers and reported once, as a
 * `requestDone` or `requestFailed` event.
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import type { EndpointEvent } from "../src/core/types.ts";
import { Sim, type SimEndpoint, sock } from "./sim.ts";

const SERVER = "192.0.2.1:8080";
const SCHEDULE = { retransmitPolicy: "schedule" as const, retransmitSchedule: [500, 1000, 2000] };

function setup(seed = 1, clients = 1, config = {}) {
  const sim = new Sim({ seed, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const list: SimEndpoint[] = [];
  for (let i = 0; i < clients; i++) {
    const c = sim.addEndpoint(`198.51.100.${10 + i}:5000`, { role: "client", config });
    sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
    list.push(c);
  }
  sim.runFor(500);
  for (const c of list) assertEquals(c.eventsOf("connected").length, 1);
  return { sim, server, clients: list };
}

function outcomes(c: SimEndpoint, id: number): EndpointEvent[] {
  return c.events.filter((e) => (e.type === "requestDone" || e.type === "requestFailed") && e.id === id);
}

function pingsSent(sim: Sim, from: string, after: number): number[] {
  return sim.sentBy(from).filter((t) => t.at >= after && t.msg.message_type === "Ping").map((t) => t.at);
}

Deno.test("a ping is answered once, as requestDone with the round trip of the answered try, not as a raw pong", () => {
  const { sim, clients: [c] } = setup();
  const pongsBefore = c!.eventsOf("pong").length;
  const id = sim.act(c!, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" }));
  sim.runFor(100);
  const done = outcomes(c!, id);
  assertEquals(done.length, 1);
  assertEquals(done[0], { type: "requestDone", id, kind: "ping", rttMs: 10 });
  assertStrictEquals(c!.eventsOf("pong").length, pongsBefore);
});

Deno.test("a lost ping is retried in virtual time on the schedule; the round trip is that of the try answered", () => {
  const { sim, clients: [c] } = setup(2, 1, SCHEDULE);
  const start = sim.now;
  // The first two tries are lost on the way out; the third (at +1,500 ms) gets through.
  sim.blackhole(c!.addr, SERVER, start, start + 1_200);
  const id = sim.act(c!, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" }));
  sim.runFor(3_000);
  assertEquals(pingsSent(sim, c!.addr, start).map((t) => t - start), [0, 500, 1_500]);
  assertEquals(outcomes(c!, id), [{ type: "requestDone", id, kind: "ping", rttMs: 10 }]);
});

Deno.test("a ping to a silent server fails with timeout when the schedule is used up, at its exact time", () => {
  const { sim, clients: [c] } = setup(3, 1, SCHEDULE);
  const start = sim.now;
  sim.blackhole(c!.addr, SERVER, start);
  let failedAt = NaN;
  sim.observe({
    event: (host, event) => {
      if (host === c && event.type === "requestFailed") failedAt = sim.now;
    },
  });
  const id = sim.act(c!, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" }));
  sim.runFor(10_000);
  assertEquals(pingsSent(sim, c!.addr, start).map((t) => t - start).slice(0, 3), [0, 500, 1_500]);
  const [failed] = outcomes(c!, id);
  assert(failed?.type === "requestFailed");
  assertEquals([failed.kind, failed.reason], ["ping", "timeout"]);
  assertStrictEquals(failedAt - start, 3_500);
});

Deno.test("under the adaptive policy a ping gives up at delivery_timeout, every seed alike", () => {
  for (const seed of [4, 5, 6]) {
    const { sim, clients: [c] } = setup(seed);
    const start = sim.now;
    sim.blackhole(c!.addr, SERVER, start);
    const id = sim.act(c!, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" }));
    sim.runFor(60_000);
    const tries = pingsSent(sim, c!.addr, start);
    const [failed] = outcomes(c!, id);
    assert(failed?.type === "requestFailed" && failed.reason === "timeout", `seed ${seed}`);
    assert(tries.length >= 5, `seed ${seed}: ${tries.length} tries`);
    // Each wait grows or stays (backoff with jitter inside the cap).
    const waits = tries.slice(1).map((t, i) => t - tries[i]!);
    assert(waits[waits.length - 1]! >= waits[0]!, `seed ${seed}: waits ${waits}`);
  }
});

Deno.test("a discovery page is answered as requestDone; a refused query fails as refused with the server's code", () => {
  const { sim, clients: [a, b] } = setup(7, 2);
  const id = sim.act(a!, (ep, now) => ep.request(now, sock(SERVER), { kind: "discovery", query: null }));
  sim.runFor(100);
  const [done] = outcomes(a!, id);
  assert(done?.type === "requestDone" && done.kind === "discovery");
  assertEquals(done.page.peers.map((p) => p.id).sort(), [a!.id, b!.id].sort());
  assertEquals(a!.eventsOf("discovery").length, 0);
  const bad = sim.act(
    a!,
    (ep, now) => ep.request(now, sock(SERVER), { kind: "discovery", query: { offset: -1 } }),
  );
  sim.runFor(100);
  const [refused] = outcomes(a!, bad);
  assert(refused?.type === "requestFailed");
  assertEquals([refused.kind, refused.reason, refused.code], ["discovery", "refused", "bad_request"]);
  assertEquals(a!.eventsOf("error").length, 0);
});

Deno.test("an introduction is done once the direct handshake is up; one to nobody is refused", () => {
  const { sim, clients: [a, b] } = setup(8, 2);
  const id = sim.act(a!, (ep, now) => ep.request(now, sock(SERVER), { kind: "introduce", peerId: b!.id }));
  sim.runFor(1_000);
  assertEquals(outcomes(a!, id), [{
    type: "requestDone",
    id,
    kind: "introduce",
    nodeId: b!.id,
    addr: b!.addr,
    strategy: "direct",
  }]);
  const nobody = "00000000-0000-4000-8000-000000000000";
  const refused = sim.act(
    a!,
    (ep, now) => ep.request(now, sock(SERVER), { kind: "introduce", peerId: nobody }),
  );
  sim.runFor(500);
  const [failed] = outcomes(a!, refused);
  assert(failed?.type === "requestFailed");
  assertEquals([failed.reason, failed.code], ["refused", "cannot_introduce"]);
});

Deno.test("an introduction fails as punch_failed when no path answers, and as timeout at its own time limit", () => {
  const { sim, clients: [a, b] } = setup(9, 2);
  sim.link(a!.addr, b!.addr, { loss: 1 });
  sim.link(b!.addr, a!.addr, { loss: 1 });
  const id = sim.act(a!, (ep, now) => ep.request(now, sock(SERVER), { kind: "introduce", peerId: b!.id }));
  sim.runFor(10_000);
  const [failed] = outcomes(a!, id);
  assert(failed?.type === "requestFailed");
  assertEquals(failed.reason, "punch_failed");
  // A time limit shorter than the punch: it ends the request first, at its exact time.
  const start = sim.now;
  let failedAt = NaN;
  sim.observe({
    event: (host, event) => {
      if (host === a && event.type === "requestFailed") failedAt = sim.now;
    },
  });
  const short = sim.act(
    a!,
    (ep, now) => ep.request(now, sock(SERVER), { kind: "introduce", peerId: b!.id, timeoutMs: 800 }),
  );
  sim.runFor(10_000);
  const [timedOut] = outcomes(a!, short);
  assert(timedOut?.type === "requestFailed");
  assertEquals(timedOut.reason, "timeout");
  assertStrictEquals(failedAt - start, 800);
});

Deno.test("answers nobody asked for pass as raw events while a request waits; closing the link fails requests", () => {
  const { sim, clients: [c] } = setup(10, 1, SCHEDULE);
  sim.blackhole(SERVER, c!.addr, sim.now, sim.now + 300);
  const before = c!.eventsOf("pong").length;
  const id = sim.act(c!, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" }));
  sim.runFor(400);
  sim.act(c!, (ep, now) => ep.send(now, sock(SERVER), "Ping", { nonce: "mine" }));
  sim.runFor(50);
  const raw = c!.eventsOf("pong").slice(before);
  assertEquals(raw.map((e) => (e.payload as { nonce: string }).nonce), ["mine"]);
  assertEquals(outcomes(c!, id), []);
  sim.act(c!, (ep, now) => ep.disconnect(now, sock(SERVER), "bye"));
  const [closed] = outcomes(c!, id);
  assert(closed?.type === "requestFailed");
  assertEquals(closed.reason, "closed");
  // Nothing more: the request is gone, so its retry never goes out.
  const at = sim.now;
  sim.runFor(5_000);
  assertEquals(pingsSent(sim, c!.addr, at + 1), []);
});
