/**
 * The per-pair strategy in the client role, in virtual time (tests/sim.ts): introduction cards carrying
 * seeded NAT classifications (`introduction.peer.nat`, `introduction.you.nat`, `start_at_ms`, put on the
 * server's cards by a man in the middle, as the server's classification will), and what each side then does:
 * the same strategy on both sides, `relay` settling the introduction at once with nothing punched, `direct`
 * unchanged, `simultaneous` waiting for the shared start, `predict` probing the predicted ports first.
 *
 * @module
 */
import { assert, assertEquals } from "./deps/assert.ts";
import type { Json } from "../src/wire/mod.ts";
import { decode, Sim, type SimEndpoint, sock } from "./sim.ts";
import type { NatClass } from "../src/core/nat_class.ts";
import { PREDICTED_PORTS } from "../src/core/strategy.ts";
import { PUNCH_BUDGET_MS } from "../src/core/types.ts";

const SERVER = "192.0.2.1:8080";
const A = "198.51.100.1:5000";
const B = "198.51.100.2:6000";

const SYMMETRIC: NatClass = {
  mapping: "address-and-port-dependent",
  filtering: "address-and-port-dependent",
};
const PORT_RESTRICTED: NatClass = {
  mapping: "endpoint-independent",
  filtering: "address-and-port-dependent",
};
const FULL_CONE: NatClass = { mapping: "endpoint-independent", filtering: "endpoint-independent" };

/**
 * A server and two clients at `latencies` ms from it; the server has `nats[addr]` as the classification of
 * the client at `addr` (seeded, as the classification exchange would), so its cards carry them.
 */
function pair(nats: { [addr: string]: NatClass }, latencies: [number, number] = [5, 5]) {
  const sim = new Sim({ seed: 7, link: { latencyMs: 5 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const a = sim.addEndpoint(A, { role: "client" });
  const b = sim.addEndpoint(B, { role: "client" });
  for (const [addr, latencyMs] of [[A, latencies[0]], [B, latencies[1]]] as const) {
    sim.link(SERVER, addr, { latencyMs });
    sim.link(addr, SERVER, { latencyMs });
  }
  for (const c of [a, b]) sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(1_000);
  // A few round trips, so the server knows both (start_at_ms comes from them).
  for (let i = 0; i < 3; i++) {
    for (const c of [a, b]) sim.act(c, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" }));
    sim.runFor(500);
  }
  for (const [c, addr] of [[a, A], [b, B]] as const) {
    if (nats[addr]) assert(server.endpoint.setPeerNat(c.id, nats[addr]));
  }
  return { sim, a, b };
}

/** a asks to be introduced to b; returns the request id and when it was asked. */
function introduce(sim: Sim, a: SimEndpoint, b: SimEndpoint): { id: number; at: number } {
  const at = sim.now;
  const id = sim.act(a, (ep, now) => ep.request(now, sock(SERVER), { kind: "introduce", peerId: b.id }));
  return { id, at };
}

/** The punch Pings `from` sent since `since`: when, and where to. */
function probes(sim: Sim, from: string, since: number): { at: number; to: string }[] {
  return sim.trace.filter((t) => t.from === from && t.at >= since).flatMap((t) => {
    try {
      const m = decode(t.bytes);
      const p = m.payload as { [key: string]: Json } | null;
      return m.message_type === "Ping" && p !== null && typeof p.punch === "string"
        ? [{ at: t.at, to: t.to }]
        : [];
    } catch {
      return [];
    }
  });
}

function strategies(a: SimEndpoint, b: SimEndpoint): string[] {
  return [a, b].map((c) => c.eventsOf("introduced").map((e) => e.strategy).join(","));
}

Deno.test("relay (two symmetric NATs): both sides choose it, nothing is punched, introduce() fails at once", () => {
  const { sim, a, b } = pair({ [A]: SYMMETRIC, [B]: SYMMETRIC });
  const { id, at } = introduce(sim, a, b);
  sim.runFor(PUNCH_BUDGET_MS + 1_000);
  assertEquals(strategies(a, b), ["relay", "relay"]);
  const failed = a.eventsOf("requestFailed").filter((e) => e.id === id);
  assertEquals(failed.length, 1);
  assertEquals(failed[0]!.reason, "punch_failed");
  assertEquals(failed[0]!.strategy, "relay");
  assert(/send\(data, \{ to \}\)/.test(failed[0]!.error), failed[0]!.error);
  const card = a.eventsOf("introduced")[0]!;
  assert(card !== undefined);
  // Settled as the card arrived: one request and one card latency, no punch budget.
  const settledAt = sim.trace.filter((t) => t.from === SERVER && t.to === A).at(-1)!.at;
  assert(settledAt - at <= 50, `settled ${settledAt - at} ms after asking`);
  assertEquals(probes(sim, A, at), [], "a punched nothing");
  assertEquals(probes(sim, B, at), [], "b punched nothing");
  assertEquals(b.eventsOf("punchFailed").map((e) => e.strategy), ["relay"]);
  // The relay works at once.
  sim.act(
    a,
    (ep, now) => ep.send(now, sock(SERVER), "Data", { to: b.id, data: "via relay" }, { reliable: true }),
  );
  sim.runFor(200);
  assert(b.eventsOf("data").some((e) => JSON.stringify(e.payload).includes("via relay")));
});

Deno.test("direct when nothing is known (no nat on the card) or when both map endpoint-independently", () => {
  for (const nats of [{}, { [A]: PORT_RESTRICTED, [B]: FULL_CONE }, { [A]: SYMMETRIC }]) {
    const { sim, a, b } = pair(nats, [5, 105]);
    const { id, at } = introduce(sim, a, b);
    sim.runFor(1_000);
    assertEquals(strategies(a, b), ["direct", "direct"], JSON.stringify(nats));
    const done = a.eventsOf("requestDone").find((e) => e.id === id) as { strategy?: string } | undefined;
    assertEquals(done?.strategy, "direct");
    const first = probes(sim, A, at)[0]!;
    const cardAt = a.eventsOf("introduced")[0]!;
    assert(cardAt.startAtMs > 0, "a, the nearer, is asked to wait");
    assert(first.at - at <= 20, `direct probes at once, whatever start_at_ms says (${first.at - at} ms)`);
  }
});

Deno.test("simultaneous: the nearer side waits the card's start_at_ms, so both sides start probing together", () => {
  const ad: NatClass = { mapping: "address-dependent", filtering: "endpoint-independent" };
  const apd: NatClass = { mapping: "address-and-port-dependent", filtering: "address-dependent" };
  const { sim, a, b } = pair({ [A]: ad, [B]: apd }, [5, 105]);
  const { id, at } = introduce(sim, a, b);
  sim.runFor(1_500);
  assertEquals(strategies(a, b), ["simultaneous", "simultaneous"]);
  const waits = [a, b].map((c) => c.eventsOf("introduced")[0]!.startAtMs);
  assert(waits[0]! >= 90 && waits[0]! <= 110 && waits[1] === 0, `start_at_ms ${waits}`);
  const cardSent = sim.trace.find((t) => t.from === SERVER && t.to === A && t.at >= at + 5)!.at;
  const [fa, fb] = [probes(sim, A, at)[0]!, probes(sim, B, at)[0]!];
  assertEquals(fa.at, cardSent + 5 + Math.round(waits[0]!), "a waits start_at_ms after its card");
  assertEquals(fb.at, cardSent + 105, "b, the farther, starts as its card arrives");
  assert(Math.abs(fa.at - fb.at) <= 5, `both start together: ${fa.at - fb.at} ms apart`);
  const done = a.eventsOf("requestDone").find((e) => e.id === id) as { strategy?: string } | undefined;
  assertEquals(done?.strategy, "simultaneous");
});

Deno.test("predict: the side facing a NAT with a port step probes its next ports first, in order", () => {
  const stepped: NatClass = { ...SYMMETRIC, portDelta: 2 };
  const { sim, a, b } = pair({ [A]: PORT_RESTRICTED, [B]: stepped });
  const { id, at } = introduce(sim, a, b);
  sim.runFor(1_000);
  assertEquals(strategies(a, b), ["predict", "predict"]);
  const firstRound = probes(sim, A, at).slice(0, PREDICTED_PORTS + 1).map((p) => p.to);
  assertEquals(firstRound, [
    "198.51.100.2:6002",
    "198.51.100.2:6004",
    "198.51.100.2:6006",
    "198.51.100.2:6008",
    B,
  ]);
  assertEquals(new Set(probes(sim, B, at).map((p) => p.to)), new Set([A]), "a's NAT keeps its mapping");
  const done = a.eventsOf("requestDone").find((e) => e.id === id) as { strategy?: string } | undefined;
  assertEquals(done?.strategy, "predict", "connected over the observed address here (no NAT in the sim)");
});
