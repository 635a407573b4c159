/**
 * Introductions and hole punching over real UDP sockets on loopback (no NAT in the way, so the punch always
 * finds a path): the server introduces two clients, they probe each other, shake hands directly, and Data then
 * flows between them without the server.
 */
import { assert, assertEquals, assertRejects, assertStrictEquals } from "./deps/assert.ts";
import { P2PClient, P2PServer, RemoteError } from "../mod.ts";
import type { Json } from "../src/wire/mod.ts";
import { waitUntil } from "./helpers/server_process.ts";

async function setup() {
  const server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
  const { port } = await server.listen();
  const opts = { server: `127.0.0.1:${port}`, bind: "127.0.0.1:0", identity: "generate" as const };
  const a = new P2PClient({ ...opts, name: "a" });
  const b = new P2PClient({ ...opts, name: "b" });
  await a.connect();
  await b.connect();
  return { server, a, b, port };
}

Deno.test("introduce(): a direct, authenticated connection; Data then bypasses the server", async () => {
  const { server, a, b } = await setup();
  try {
    const joined = new Promise<{ nodeId: string }>((resolve) => b.on("direct", resolve));
    const direct = await a.introduce(b.node.id);
    assertStrictEquals(direct.nodeId, b.node.id);
    assertStrictEquals((await joined).nodeId, a.node.id, "the other side learns of it too");
    const before = server.getStats();
    const got: { fromId: string | null; payload: Json }[] = [];
    b.on("data", ({ fromId, payload }) => got.push({ fromId, payload }));
    const gotA: Json[] = [];
    a.on("data", ({ fromId, payload }) => {
      if (fromId === b.node.id) gotA.push(payload);
    });
    for (let i = 0; i < 20; i++) await a.sendDirect(b.node.id, { i });
    await b.sendDirect(a.node.id, "back");
    await waitUntil(() => got.length === 20 && gotA.length === 1, "the direct Data");
    assert(got.every((g) => g.fromId === a.node.id), "fromId is the direct peer");
    assertEquals(got.map((g) => (g.payload as { i: number }).i), [...Array(20).keys()]);
    const after = server.getStats();
    assertStrictEquals(
      after.messagesReceived.Data - before.messagesReceived.Data,
      0,
      "no Data through the server",
    );
    assertStrictEquals(after.introductions, 1);
  } finally {
    await a.close();
    await b.close();
    await server.close();
  }
});

Deno.test("introduce() an unknown peer is refused with cannot_introduce", async () => {
  const { server, a, b } = await setup();
  try {
    let error: unknown;
    try {
      await a.introduce(crypto.randomUUID());
    } catch (e) {
      error = e;
    }
    assert(error instanceof RemoteError, String(error));
    assertStrictEquals(error.code, "cannot_introduce");
  } finally {
    await a.close();
    await b.close();
    await server.close();
  }
});

Deno.test("an unkeyed client can be introduced too; sendDirect() without a direct connection rejects", async () => {
  const { server, a, b, port } = await setup();
  const plain = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0", name: "plain" });
  try {
    await plain.connect();
    await assertRejects(() => a.sendDirect(b.node.id, 1), Error, "introduce() first");
    // A client without a key still speaks the extensions: the direct handshake is just not signed.
    const direct = await a.introduce(plain.node.id);
    assertStrictEquals(direct.nodeId, plain.node.id);
  } finally {
    await plain.close();
    await a.close();
    await b.close();
    await server.close();
  }
});
