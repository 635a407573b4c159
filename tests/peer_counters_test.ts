// Per-peer transfer counters (`peers()`, `/peers`, `p2p_server status`): every datagram received from a
// peer's address and sent to it, with their bytes, as the wire saw them.
import { assertEquals } from "./deps/assert.ts";
import { Sim, sock } from "./sim.ts";

const SERVER = "192.0.2.1:8080";

Deno.test("a peer's datagrams and bytes in and out match what went over the wire", () => {
  const sim = new Sim({ seed: 9, link: { latencyMs: 2 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const c = sim.addEndpoint("198.51.100.9:5000", { role: "client" });
  sim.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(200);
  for (let i = 0; i < 3; i++) sim.act(c, (ep, now) => ep.request(now, sock(SERVER), { kind: "ping" }));
  sim.act(c, (ep, now) => ep.send(now, sock(SERVER), "Data", { n: 1 }, { reliable: true }));
  sim.runFor(200);
  const wire = (from: string, to: string) => sim.trace.filter((t) => t.from === from && t.to === to);
  const up = wire(c.addr, SERVER);
  const down = wire(SERVER, c.addr);
  const p = server.endpoint.peer(c.id)!;
  assertEquals(
    [p.datagramsIn, p.bytesIn, p.datagramsOut, p.bytesOut],
    [
      up.length,
      up.reduce((n, t) => n + t.bytes.length, 0),
      down.length,
      down.reduce((n, t) => n + t.bytes.length, 0),
    ],
  );
});
