/**
 * The library in-process over real UDP on 127.0.0.1: `P2PServer` and `P2PClient` from mod.ts.
 *
 * @module
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import {
  type ClientOptions,
  ConnectionTimeoutError,
  HandshakeError,
  type Json,
  P2PClient,
  P2PServer,
  type ServerEvents,
} from "../mod.ts";
import { waitUntil } from "./helpers/server_process.ts";

/** A server on 127.0.0.1, port 0, without sibling discovery. */
async function startLibServer(options: ConstructorParameters<typeof P2PServer>[0] = {}) {
  const server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false, ...options });
  const { port } = await server.listen();
  return { server, address: `127.0.0.1:${port}` };
}

/** A client bound to 127.0.0.1 (the library's default would bind every interface). */
function newClient(options: ClientOptions): P2PClient {
  return new P2PClient({ bind: "127.0.0.1:0", ...options });
}

/** Records every event of a server. */
function record(server: P2PServer) {
  const events: { [K in keyof ServerEvents]: ServerEvents[K][] } = {
    peerJoined: [],
    peerLeft: [],
    data: [],
    gaveUp: [],
    connected: [],
    error: [],
  };
  for (const type of Object.keys(events) as (keyof ServerEvents)[]) {
    server.on(type, (value) => (events[type] as unknown[]).push(value));
  }
  return events;
}

/** The reason `promise` rejects with. @throws {Error} when it resolves. */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error("Expected a rejection");
}

/** Two ports that are free right now and adjacent (so a discovery range covers just them). */
function freeAdjacentPorts(): [number, number] {
  for (let attempt = 0; attempt < 50; attempt++) {
    const a = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
    const port = (a.addr as Deno.NetAddr).port;
    try {
      if (port >= 65535) continue;
      try {
        Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: port + 1 }).close();
      } catch {
        continue;
      }
      return [port, port + 1];
    } finally {
      a.close();
    }
  }
  throw new Error("No two adjacent free UDP ports found");
}

Deno.test("a client connects, pings, discovers, sends and disconnects", async () => {
  const { server, address } = await startLibServer();
  await using _server = server;
  const events = record(server);
  await using client = newClient({ server: address, name: "lib_client", capabilities: ["data"] });

  const info = await client.connect();
  assertStrictEquals(info.id, server.node.id);
  assert(info.capabilities.includes("server"));
  assertStrictEquals(client.serverInfo?.id, server.node.id);
  await waitUntil(() => events.peerJoined.length === 1, "peerJoined");
  assertStrictEquals(events.peerJoined[0]!.id, client.node.id);
  assertStrictEquals(events.peerJoined[0]!.name, "lib_client");

  const rtt = await client.ping();
  assert(rtt >= 0 && rtt < 5_000, `rtt ${rtt}`);

  const peers = await client.discover();
  assertEquals(peers.map((p) => p.id), [client.node.id]);
  assertEquals(peers[0]!.capabilities, ["data"]);

  const echoed = new Promise<Json>((resolve) => {
    const off = client.on("data", ({ payload }) => {
      off();
      resolve(payload);
    });
  });
  await client.send({ hello: "server" });
  const echo = await echoed as { echo: Json; timestamp: number };
  assertEquals(echo.echo, { hello: "server" });
  assert(Number.isInteger(echo.timestamp));
  assertEquals(events.data.map((d) => d.payload), [{ hello: "server" }]);
  assertStrictEquals(events.data[0]!.fromId, client.node.id);

  await client.disconnect();
  await waitUntil(() => events.peerLeft.length === 1, "peerLeft");
  assertStrictEquals(events.peerLeft[0]!.reason, "disconnect");
  assertStrictEquals(events.peerLeft[0]!.peer.id, client.node.id);
  assertEquals(server.peers(), []);
});

Deno.test("a duplicate node id is refused with HandshakeError node_id_conflict", async () => {
  const { server, address } = await startLibServer();
  await using _server = server;
  const nodeId = crypto.randomUUID();
  await using first = newClient({ server: address, nodeId });
  await using second = newClient({ server: address, nodeId });
  await first.connect();
  const error = await rejection(second.connect());
  assert(error instanceof HandshakeError, `not a HandshakeError: ${error}`);
  assertStrictEquals(error.message, "handshake failed: node ID already exists");
  assertStrictEquals(error.code, "node_id_conflict");
  assertEquals(server.peers().map((p) => p.id), [nodeId]);
});

Deno.test("connecting to a silent address fails with ConnectionTimeoutError", async () => {
  // A bound socket that never answers.
  const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const port = (silent.addr as Deno.NetAddr).port;
    await using client = newClient({ server: `127.0.0.1:${port}`, retransmitSchedule: [50, 50] });
    const error = await rejection(client.connect());
    assert(error instanceof ConnectionTimeoutError, `not a ConnectionTimeoutError: ${error}`);
    assertStrictEquals(error.message, `connection timeout to 127.0.0.1:${port}`);
  } finally {
    silent.close();
  }
});

Deno.test("two clients exchange routed Data through the server", async () => {
  const { server, address } = await startLibServer();
  await using _server = server;
  const events = record(server);
  await using alice = newClient({ server: address, name: "alice" });
  await using bob = newClient({ server: address, name: "bob" });
  await alice.connect();
  await bob.connect();
  await waitUntil(() => events.peerJoined.length === 2, "two peerJoined events");

  const inbox = (client: P2PClient) =>
    new Promise<{ fromId: string | null; payload: Json }>((resolve) => {
      const off = client.on("data", ({ fromId, payload }) => {
        off();
        resolve({ fromId, payload });
      });
    });
  const toBob = inbox(bob);
  await alice.send({ note: "hi bob" }, { to: bob.node.id });
  assertEquals(await toBob, {
    fromId: alice.node.id,
    payload: { from: alice.node.id, data: { note: "hi bob" } },
  });

  const toAlice = inbox(alice);
  await bob.send("hi alice", { to: alice.node.id });
  assertEquals(await toAlice, { fromId: bob.node.id, payload: { from: bob.node.id, data: "hi alice" } });

  assertEquals(
    events.data.map((d) => [d.fromId, d.to]),
    [[alice.node.id, bob.node.id], [bob.node.id, alice.node.id]],
  );

  await bob.disconnect();
  await waitUntil(() => events.peerLeft.length === 1, "peerLeft");
  assertStrictEquals(events.peerLeft[0]!.peer.id, bob.node.id);
  assertEquals(server.peers().map((p) => p.id), [alice.node.id]);
});

Deno.test("connectToPeer between two servers: each lists the other with capability server", async () => {
  const a = await startLibServer({ name: "server_a" });
  const b = await startLibServer({ name: "server_b" });
  await using _a = a.server;
  await using _b = b.server;

  const bInfo = await a.server.connectToPeer(b.address);
  assertStrictEquals(bInfo.id, b.server.node.id);
  const aInfo = await b.server.connectToPeer(a.address);
  assertStrictEquals(aInfo.id, a.server.node.id);

  await waitUntil(
    () => a.server.peers().some((p) => p.id === b.server.node.id && p.state === "authenticated"),
    "server A to list server B",
  );
  await waitUntil(
    () => b.server.peers().some((p) => p.id === a.server.node.id && p.state === "authenticated"),
    "server B to list server A",
  );
  assert(a.server.peers().find((p) => p.id === b.server.node.id)!.capabilities.includes("server"));
  assert(b.server.peers().find((p) => p.id === a.server.node.id)!.capabilities.includes("server"));
});

Deno.test("sibling discovery: two servers whose discovery range covers both find each other", async () => {
  const [portA, portB] = freeAdjacentPorts();
  const range: [number, number] = [portA, portB];
  await using a = new P2PServer({
    listenAddress: `127.0.0.1:${portA}`,
    enableDiscovery: true,
    discoveryPortRange: range,
    name: "sibling_a",
  });
  await a.listen();
  await using b = new P2PServer({
    listenAddress: `127.0.0.1:${portB}`,
    enableDiscovery: true,
    discoveryPortRange: range,
    name: "sibling_b",
  });
  await b.listen();

  const lists = (server: P2PServer, other: P2PServer) =>
    server.peers().some((p) =>
      p.id === other.node.id && p.state === "authenticated" && p.capabilities.includes("server")
    );
  await waitUntil(() => lists(a, b) && lists(b, a), "both siblings to list each other", 15_000);
  assertStrictEquals(a.peers().find((p) => p.id === b.node.id)!.listenAddr, `127.0.0.1:${portB}`);
  assertStrictEquals(b.peers().find((p) => p.id === a.node.id)!.listenAddr, `127.0.0.1:${portA}`);
});

Deno.test("server close() sends Disconnect and the client reports disconnected", async () => {
  const { server, address } = await startLibServer();
  await using client = newClient({ server: address });
  await client.connect();
  const disconnected = new Promise<string>((resolve) => {
    client.on("disconnected", ({ reason }) => resolve(reason));
  });
  await server.close();
  await server.finished;
  assertStrictEquals(await disconnected, "disconnect");
  assertStrictEquals(client.serverInfo, null);
});
