/**
 * NAT classification over real sockets on loopback (issue 18): a P2PClient classifies itself right after
 * connecting to a P2PServer with an alternate port and address (127.0.0.2), and a server without them
 * answers unavailable. No NAT on loopback: the answer is endpoint-independent both ways. The NAT kinds are
 * told apart in the netns bed (tests/nat_test.ts).
 */
import { assertEquals, assertRejects, assertStrictEquals } from "./deps/assert.ts";
import { P2PClient, P2PServer, RemoteError } from "../mod.ts";

function freePort(): number {
  const l = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

Deno.test("P2PClient classifies its NAT after connecting when the server offers it; nat event and getter", async () => {
  await using server = new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    stunAlternatePort: freePort(),
    stunAlternateAddress: "127.0.0.2",
  });
  const { port } = await server.listen();
  await using client = new P2PClient({ server: `127.0.0.1:${port}`, name: "classify" });
  const event = new Promise((resolve) => client.on("nat", resolve));
  await client.connect();
  assertEquals(await event, {
    nat: { mapping: "endpoint-independent", filtering: "endpoint-independent" },
    suggestedKeepalive: 15,
    reason: null,
  });
  assertEquals(client.nat, { mapping: "endpoint-independent", filtering: "endpoint-independent" });
  await assertRejects(() => client.classifyNat(), RemoteError, "nat check refused");
  const stats = server.getStats().natChecks;
  assertStrictEquals(stats.completed, 1);
  assertStrictEquals(stats.refused, 1);
  const peers = await client.discover();
  assertEquals(peers.find((p) => p.id === client.node.id)?.nat, {
    mapping: "endpoint-independent",
    filtering: "endpoint-independent",
  });
});

Deno.test("classifyNat() against a server without alternate sockets resolves unknown", async () => {
  await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
  const { port } = await server.listen();
  await using client = new P2PClient({ server: `127.0.0.1:${port}`, name: "plain" });
  let errors = 0;
  client.on("error", () => errors++);
  await client.connect();
  assertEquals(await client.classifyNat(), { mapping: "unknown", filtering: "unknown" });
  assertStrictEquals(errors, 0, "the refusal settles classifyNat, it is no error event");
});
