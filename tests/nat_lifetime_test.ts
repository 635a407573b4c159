/**
 * The binding lifetime measurement over real sockets on loopback (issue 18): a P2PClient measures through a
 * second socket it binds for that alone and closes at the end, after the classification when the server
 * offers both, and adopts the keepalive the result implies. No NAT on loopback: every gap passes, so the
 * lifetime is the longest gap (a lower bound). Real NAT timeouts are measured in the netns bed
 * (tests/nat_lifetime_netns_test.ts).
 */
import { assert, assertEquals, assertRejects, assertStrictEquals } from "./deps/assert.ts";
import { P2PClient, P2PServer, RemoteError } from "../mod.ts";
import type { ClientEvents } from "../src/client_options.ts";

function freePort(): number {
  const l = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** The UDP and TCP sockets this process holds open (Linux: the socket links in /proc/self/fd). */
function openSockets(): number {
  let n = 0;
  for (const e of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${e.name}`).startsWith("socket:")) n++;
    } catch {
      // closed meanwhile
    }
  }
  return n;
}

/** Waits (at most 3 s, polling every 10 ms) until the open sockets number `n`: a closed socket's descriptor goes
 * once its pending receive has ended. */
async function socketsBecome(n: number): Promise<number> {
  const end = performance.now() + 3_000;
  while (openSockets() !== n && performance.now() < end) await new Promise((r) => setTimeout(r, 10));
  return openSockets();
}

Deno.test("measureBindingLifetime(): a socket opens for it and closes after; the keepalive is adopted", async () => {
  await using server = new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    natLifetimeGapsMs: [200, 400],
  });
  const { port } = await server.listen();
  await using client = new P2PClient({
    server: `127.0.0.1:${port}`,
    name: "lifetime",
    measureBindingLifetime: false,
  });
  await client.connect();
  assertStrictEquals(client.keepaliveInterval, 15, "the server's keepalive_interval");
  const before = openSockets();
  const event = new Promise<ClientEvents["natLifetime"]>((resolve) => client.on("natLifetime", resolve));
  const measuring = client.measureBindingLifetime();
  assertStrictEquals(openSockets(), before + 1, "the sacrificial socket");
  const nat = await measuring;
  assertEquals(nat, { mapping: "unknown", filtering: "unknown", bindingLifetimeMs: 400 });
  assertEquals(await event, {
    lifetimeMs: 400,
    passedMs: 400,
    failedMs: null,
    suggestedKeepalive: 1,
    keepalive: 1,
    reason: null,
  });
  assertStrictEquals(await socketsBecome(before), before, "closed at the end");
  assertStrictEquals(client.keepaliveInterval, 1);
  assertEquals(client.nat, nat);
  await assertRejects(() => client.measureBindingLifetime(), RemoteError, "nat lifetime refused");
  assertStrictEquals(await socketsBecome(before), before, "closed after the refusal too");
  const stats = server.getStats().natLifetimes;
  assertEquals([stats.requested, stats.refused, stats.completed, stats.answered], [2, 1, 1, 2]);
  const peers = await client.discover();
  assertEquals(peers.find((p) => p.id === client.node.id)?.nat, {
    mapping: "unknown",
    filtering: "unknown",
    binding_lifetime_ms: 400,
  });
});

Deno.test("after connecting, the client classifies, then measures; the nat keeps both", async () => {
  await using server = new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    stunAlternatePort: freePort(),
    stunAlternateAddress: "127.0.0.2",
    natLifetimeGapsMs: [300],
  });
  const { port } = await server.listen();
  await using client = new P2PClient({ server: `127.0.0.1:${port}`, name: "both" });
  const order: string[] = [];
  client.on("nat", (e) => order.push(`nat ${e.reason}`));
  const done = new Promise<void>((resolve) =>
    client.on("natLifetime", (e) => {
      order.push(`natLifetime ${e.reason} ${e.lifetimeMs}`);
      resolve();
    })
  );
  await client.connect();
  await done;
  assertEquals(order, ["nat null", "natLifetime null 300"]);
  assertEquals(client.nat, {
    mapping: "endpoint-independent",
    filtering: "endpoint-independent",
    bindingLifetimeMs: 300,
  });
  assert(client.keepaliveInterval <= 1);
});

Deno.test("a server with nat_lifetime_gaps_ms [] offers nothing, so the client measures nothing by itself", async () => {
  await using server = new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    natLifetimeGapsMs: [],
  });
  const { port } = await server.listen();
  await using client = new P2PClient({ server: `127.0.0.1:${port}`, name: "off" });
  await client.connect();
  await client.ping();
  assertStrictEquals(server.getStats().natLifetimes.requested, 0);
  assertEquals(await client.measureBindingLifetime(), { mapping: "unknown", filtering: "unknown" });
  assertStrictEquals(server.getStats().natLifetimes.refused, 1);
});
