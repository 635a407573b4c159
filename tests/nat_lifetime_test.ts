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

/**
 * Records the UDP sockets bound while `body` runs (a spy on `Deno.listenDatagram`, restored afterwards):
 * what the client binds besides its main socket is the sacrificial one.
 */
async function withBoundSockets<T>(body: (bound: Deno.DatagramConn[]) => Promise<T>): Promise<T> {
  const deno = Deno as unknown as { listenDatagram: typeof Deno.listenDatagram };
  const original = deno.listenDatagram;
  const bound: Deno.DatagramConn[] = [];
  deno.listenDatagram = ((options: Deno.UdpListenOptions & { transport: "udp" }) => {
    const socket = original(options);
    bound.push(socket);
    return socket;
  }) as typeof Deno.listenDatagram;
  try {
    return await body(bound);
  } finally {
    deno.listenDatagram = original;
  }
}

/**
 * Whether `port` on 127.0.0.1 is free again, waiting at most 3 s (polling every 10 ms): a closed socket's
 * port is released once its pending receive has ended.
 */
async function portFreed(port: number): Promise<boolean> {
  const end = performance.now() + 3_000;
  for (;;) {
    try {
      Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port }).close();
      return true;
    } catch (error) {
      if (!(error instanceof Deno.errors.AddrInUse) || performance.now() > end) return false;
      await new Promise((r) => setTimeout(r, 10));
    }
  }
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
  const event = new Promise<ClientEvents["natLifetime"]>((resolve) => client.on("natLifetime", resolve));
  const [nat, side] = await withBoundSockets(async (bound) => {
    const measuring = client.measureBindingLifetime();
    assertStrictEquals(bound.length, 1, "the sacrificial socket");
    return [await measuring, (bound[0]!.addr as Deno.NetAddr).port] as const;
  });
  assertEquals(nat, { mapping: "unknown", filtering: "unknown", bindingLifetimeMs: 400 });
  assertEquals(await event, {
    lifetimeMs: 400,
    passedMs: 400,
    failedMs: null,
    suggestedKeepalive: 1,
    keepalive: 1,
    reason: null,
  });
  assert(side !== client.localAddr.port);
  assert(await portFreed(side), "the sacrificial socket is closed at the end");
  assertStrictEquals(client.keepaliveInterval, 1);
  assertEquals(client.nat, nat);
  await withBoundSockets(async (bound) => {
    await assertRejects(() => client.measureBindingLifetime(), RemoteError, "nat lifetime refused");
    assertStrictEquals(bound.length, 1);
    assert(await portFreed((bound[0]!.addr as Deno.NetAddr).port), "closed after the refusal too");
  });
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
