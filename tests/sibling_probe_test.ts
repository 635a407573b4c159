// Sibling discovery reports its own status: probes of the port range that nothing answered are counted as
// unanswered probes, not as give-ups, and a sibling that answers is counted as found.
import { assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { Sim, sock } from "./sim.ts";

Deno.test("sibling probes nothing answers are not give-ups; a sibling that answers is found", () => {
  const sim = new Sim({ seed: 5, link: { latencyMs: 1 } });
  const a = sim.addEndpoint("127.0.0.1:8080", { config: { enableDiscovery: true } });
  sim.addEndpoint("127.0.0.1:8083", { config: { enableDiscovery: true } });
  sim.act(a, (ep, now) => ep.probeSiblings(now, sock("127.0.0.1:8080")));
  sim.runFor(30_000);
  const s = a.endpoint.getStats(sim.now);
  assertEquals(s.siblingProbes, { sent: 10, found: 1, unanswered: 9 });
  assertStrictEquals(s.giveUps, 0);
  assertEquals(a.eventsOf("gaveUp"), []);
  assertStrictEquals(a.eventsOf("connectFailed").filter((e) => e.probe).length, 9);
});

Deno.test("a sibling presenting this server's own node id is refused, saying so (a shared identity file)", () => {
  const sim = new Sim({ seed: 6, link: { latencyMs: 1 } });
  const a = sim.addEndpoint("127.0.0.1:8080", { config: { enableDiscovery: false } });
  const twin = sim.addEndpoint("127.0.0.1:8081", { config: { enableDiscovery: false }, node: { id: a.id } });
  sim.act(twin, (ep, now) => ep.connect(now, sock("127.0.0.1:8080")));
  sim.runFor(1_000);
  const [refused] = a.eventsOf("refused");
  assertEquals(refused?.code, "node_id_conflict");
  assertStrictEquals(
    refused?.error.startsWith("handshake failed: node ID already exists: it is this server's own"),
    true,
  );
  const [failed] = twin.eventsOf("connectFailed");
  assertEquals(failed?.code, "node_id_conflict");
});
