/**
 * Node authentication end to end: the real program (`main.ts` in a subprocess) and `P2PClient` over real UDP
 * on 127.0.0.1. Server key pinning (`serverKey`), `auth: "required"`, `auth_allow_keys`, and roaming: a keyed
 * client whose source address changes (a NAT rebinding, played by tests/helpers/rebinding_relay.ts) keeps its
 * session after the server's path check, while an unkeyed one does not. The server's counters and peers are
 * read from its operations routes (`--metrics-address`).
 *
 * @module
 */
import { assert, assertEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import {
  ConnectionTimeoutError,
  HandshakeError,
  type Json,
  P2PClient,
  P2PServer,
  type StatsSnapshot,
} from "../mod.ts";
import { generateIdentity, type Identity } from "../src/core/auth.ts";
import { loadOrCreateIdentity } from "../src/key_file.ts";
import { RebindingRelay } from "./helpers/rebinding_relay.ts";
import { type ServerProcess, startServer, waitUntil } from "./helpers/server_process.ts";

/** Generous: a small shared machine may be slow, and every wait ends as soon as its condition holds. */
const DEADLINE_MS = 20_000;

interface AuthServer extends AsyncDisposable {
  server: ServerProcess;
  /** The server's key, read from its identity file after it started (null with `auth: "off"`: no key). */
  identity: Identity | null;
  /** `http://ip:port` of the operations routes. */
  ops: string;
}

/**
 * Starts the program with its key in a fresh temp directory (`identity_file`), `config` merged in, and its
 * operations routes on loopback; returns it with the key it created. Disposing stops it and removes the
 * directory.
 */
async function startAuthServer(config: Record<string, unknown> = {}): Promise<AuthServer> {
  const dir = await Deno.makeTempDir({ prefix: "p2p_auth_e2e_" });
  const removeDir = () => Deno.remove(dir, { recursive: true });
  let server: ServerProcess;
  try {
    server = await startServer({
      config: { identity_file: `${dir}/identity.pem`, ...config },
      args: ["--metrics-address", "127.0.0.1:0"],
    });
  } catch (error) {
    await removeDir();
    throw error;
  }
  try {
    const ops = await waitUntil(
      () => /^metrics and status page on (http:\/\/\S+)\/$/m.exec(server.stdout)?.[1],
      "the metrics address on stdout",
    );
    const logged = await server.waitForStderr(/\bnode id [0-9a-f-]{36},/);
    let identity: Identity | null = null;
    if (config.auth !== "off") {
      // The program created the file; loading it (0600, so accepted) gives the key clients pin.
      identity = loadOrCreateIdentity(`${dir}/identity.pem`);
      assert(
        logged.includes(`node id ${identity.nodeId},`),
        `the logged id is not the key file's: ${logged}`,
      );
    }
    return {
      server,
      identity,
      ops,
      async [Symbol.asyncDispose]() {
        try {
          await server.stop();
        } finally {
          await removeDir();
        }
      },
    };
  } catch (error) {
    await server.stop();
    await removeDir();
    throw error;
  }
}

async function getJson<T>(url: string): Promise<T> {
  const res = await fetch(url);
  const body = await res.json();
  assertStrictEquals(res.status, 200, JSON.stringify(body));
  return body as T;
}

async function serverStats(s: AuthServer): Promise<StatsSnapshot> {
  return (await getJson<{ stats: StatsSnapshot }>(`${s.ops}/api/stats`)).stats;
}

interface OpsPeer {
  id: string;
  addr: string;
  state: string;
}

async function serverPeers(s: AuthServer): Promise<OpsPeer[]> {
  return (await getJson<{ peers: OpsPeer[] }>(`${s.ops}/peers`)).peers;
}

/** Rejects with what `promise` rejected with, or with a timeout error naming `what`. */
async function within<T>(promise: Promise<T>, what: string, ms = DEADLINE_MS): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

async function handshakeError(promise: Promise<unknown>, code: string): Promise<HandshakeError> {
  let caught: unknown = null;
  try {
    await within(promise, `a HandshakeError ${code}`);
  } catch (error) {
    caught = error;
  }
  assert(caught instanceof HandshakeError, `expected HandshakeError ${code}, got ${String(caught)}`);
  assertStrictEquals(caught.code, code, caught.message);
  return caught;
}

/** Collects the echoes a client receives (the server answers Data `x` with `{ echo: x, timestamp }`). */
function collectEchoes(client: P2PClient): Json[] {
  const echoes: Json[] = [];
  client.on("data", ({ payload, fromId }) => {
    if (fromId !== null) return;
    if (payload !== null && typeof payload === "object" && !Array.isArray(payload) && "echo" in payload) {
      echoes.push(payload.echo ?? null);
    }
  });
  return echoes;
}

/** Sends `data` reliably and waits for the Ack and for its echo. */
async function sendAndEcho(client: P2PClient, echoes: Json[], data: Json): Promise<void> {
  const text = JSON.stringify(data);
  await within(client.send(data), `the Ack of ${text}`);
  await waitUntil(() => echoes.some((e) => JSON.stringify(e) === text), `the echo of ${text}`, DEADLINE_MS);
}

function clientOptions(server: string, extra: Record<string, unknown> = {}) {
  return { server, bind: "127.0.0.1:0", ...extra };
}

/**
 * The options of a client behind a RebindingRelay: the relay carries one client socket, so the binding
 * lifetime measurement's second socket (which a real NAT maps apart) stays off.
 */
function relayedOptions(relay: string, extra: Record<string, unknown> = {}) {
  return clientOptions(relay, { measureBindingLifetime: false, ...extra });
}

// ------------------------------------------------------------------------------------------ (a) pinning

Deno.test("a client pinning the server's key connects and exchanges reliable Data; one pinning another key is refused", async () => {
  await using s = await startAuthServer();
  const identity = s.identity!;
  const serverKey = identity.publicKeyText;

  await using client = new P2PClient(clientOptions(s.server.addrText, { serverKey, name: "pinned" }));
  const echoes = collectEchoes(client);
  const info = await within(client.connect(), "the pinned client's handshake");
  assertStrictEquals(info.id, identity.nodeId, "the server's node id is its key's");
  assertStrictEquals(client.node.id[14], "8", "a keyed client has a key-derived (v8) node id");
  for (let i = 0; i < 5; i++) await sendAndEcho(client, echoes, { pinned: i });
  await within(client.ping(), "a Pong");
  assertEquals((await serverPeers(s)).map((p) => p.id), [client.node.id]);

  // Another key: the client signs its request for the server that key names, so this (honest) server
  // refuses it as meant for another server. (server_key_mismatch comes from a server that does answer with
  // another key; see the next test.)
  const wrongKey = generateIdentity().publicKeyText;
  await using other = new P2PClient(clientOptions(s.server.addrText, { serverKey: wrongKey }));
  await handshakeError(other.connect(), "wrong_server");
  assertStrictEquals(other.serverInfo, null);
  assertThrows(() => other.send("nope"), /not connected/);
  const stats = await serverStats(s);
  assertStrictEquals(stats.handshakesFailed.wrong_server, 1, JSON.stringify(stats.handshakesFailed));

  // The pinned client is unaffected.
  await sendAndEcho(client, echoes, { pinned: "after" });
  assertEquals((await serverPeers(s)).map((p) => p.id), [client.node.id]);
  await client.disconnect();
});

Deno.test("a client pinning a key refuses a server that answers with another key (server_key_mismatch)", async () => {
  // An impostor: it holds its own key but claims the pinned server's node id, so it accepts the request
  // signed for that server, and answers signing with its own key. Only the key check can catch it.
  await using s = await startAuthServer();
  const genuine = s.identity!;
  const own = generateIdentity();
  await using impostor = new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    identity: { ...own, nodeId: genuine.nodeId },
  });
  const { port } = await impostor.listen();
  await using client = new P2PClient(
    clientOptions(`127.0.0.1:${port}`, { serverKey: genuine.publicKeyText }),
  );
  await handshakeError(client.connect(), "server_key_mismatch");
  assertStrictEquals(client.serverInfo, null);
  // The genuine server, same pin, is fine.
  await using honest = new P2PClient(clientOptions(s.server.addrText, { serverKey: genuine.publicKeyText }));
  assertStrictEquals((await within(honest.connect(), "the genuine handshake")).id, genuine.nodeId);
  await honest.disconnect();
});

Deno.test("a client pinning a key also refuses a server that runs with auth off (server_unauthenticated)", async () => {
  await using s = await startAuthServer({ auth: "off" });
  await using client = new P2PClient(
    clientOptions(s.server.addrText, { serverKey: generateIdentity().publicKeyText }),
  );
  await handshakeError(client.connect(), "server_unauthenticated");
});

// ------------------------------------------------------------------------------------------ (b) policy

Deno.test('with auth "required" an unkeyed client is refused (auth_required) and a keyed one connects', async () => {
  await using s = await startAuthServer({ auth: "required" });

  await using unkeyed = new P2PClient(clientOptions(s.server.addrText, { name: "unkeyed" }));
  await handshakeError(unkeyed.connect(), "auth_required");

  await using keyed = new P2PClient(
    clientOptions(s.server.addrText, { identity: "generate", name: "keyed" }),
  );
  const echoes = collectEchoes(keyed);
  await within(keyed.connect(), "the keyed client's handshake");
  await sendAndEcho(keyed, echoes, { keyed: true });

  // Pinning on top of the policy works too.
  await using pinned = new P2PClient(
    clientOptions(s.server.addrText, { serverKey: s.identity!.publicKeyText }),
  );
  await within(pinned.connect(), "the pinned client's handshake");

  const stats = await serverStats(s);
  assertStrictEquals(stats.handshakesFailed.auth_required, 1, JSON.stringify(stats.handshakesFailed));
  const ids = (await serverPeers(s)).map((p) => p.id).sort();
  assertEquals(ids, [keyed.node.id, pinned.node.id].sort());
  await keyed.disconnect();
  await pinned.disconnect();
});

Deno.test("with auth_allow_keys the listed key connects; another keyed client gets not_allowed, an unkeyed one auth_required", async () => {
  const allowed = generateIdentity();
  const other = generateIdentity();
  await using s = await startAuthServer({ auth_allow_keys: [allowed.publicKeyText] });

  await using a = new P2PClient(clientOptions(s.server.addrText, { identity: allowed, name: "allowed" }));
  const echoes = collectEchoes(a);
  const info = await within(a.connect(), "the allowed client's handshake");
  assertStrictEquals(info.id, s.identity!.nodeId);
  assertStrictEquals(a.node.id, allowed.nodeId);
  await sendAndEcho(a, echoes, { allowed: true });

  await using b = new P2PClient(clientOptions(s.server.addrText, { identity: other, name: "other" }));
  await handshakeError(b.connect(), "not_allowed");

  await using unkeyed = new P2PClient(clientOptions(s.server.addrText, { name: "unkeyed" }));
  await handshakeError(unkeyed.connect(), "auth_required");

  assertEquals((await serverPeers(s)).map((p) => p.id), [allowed.nodeId]);
  const stats = await serverStats(s);
  assertStrictEquals(stats.handshakesFailed.not_allowed, 1, JSON.stringify(stats.handshakesFailed));
  await a.disconnect();
});

// ------------------------------------------------------------------------------------------ (c) roaming

/**
 * Waits until the server has received every datagram the relay (and the clients in `direct`, which talk to
 * it without the relay) sent it: nothing is in flight to it.
 */
async function settled(
  s: AuthServer,
  relay: RebindingRelay,
  direct: P2PClient[] = [],
): Promise<StatsSnapshot> {
  return await waitUntil(
    async () => {
      const stats = await serverStats(s);
      const sent = relay.counters.upstream.reduce((n, u) => n + u.toServer, 0) +
        direct.reduce((n, c) => n + c.getStats().datagramsSent, 0);
      return stats.datagramsReceived === sent ? stats : undefined;
    },
    "the server to receive every datagram the relay sent",
    DEADLINE_MS,
    50,
  );
}

Deno.test("roaming: a keyed client whose source port changes keeps its session after the path check", async () => {
  await using s = await startAuthServer();
  await using relay = new RebindingRelay({ upstream: s.server.addr });
  await using client = new P2PClient(
    relayedOptions(relay.addrText, { serverKey: s.identity!.publicKeyText, name: "roamer" }),
  );
  const disconnects: string[] = [];
  client.on("disconnected", ({ reason }) => disconnects.push(reason));
  const echoes = collectEchoes(client);
  await within(client.connect(), "the handshake through the relay");
  for (let i = 0; i < 3; i++) await sendAndEcho(client, echoes, { before: i });
  const [first] = relay.upstreamAddrs;
  assertEquals((await serverPeers(s)).map((p) => p.addr), [`127.0.0.1:${first!.port}`]);
  await settled(s, relay);

  // The NAT forgets the mapping: from now on the client's datagrams leave from a new port.
  const atSwitch = relay.counters;
  const second = relay.rebind();
  assertEquals(relay.upstreamAddrs.map((a) => a.port), [first!.port, second.port]);
  assert(second.port !== first!.port);

  // The first Data from the new port is held back by the path check; its retransmission is acked.
  for (let i = 0; i < 5; i++) await sendAndEcho(client, echoes, { after: i });
  await within(client.ping(), "a Pong after the switch");

  const stats = await settled(s, relay);
  assertStrictEquals(stats.roamed, 1, "the session must move exactly once");
  assertStrictEquals(stats.peers.authenticated, 1, "still one peer");
  assertStrictEquals(stats.peers.handshaking, 0);
  assertStrictEquals(stats.drops.bad_mac, 0, JSON.stringify(stats.drops));
  assert(
    stats.drops.unexpected >= 1,
    `no datagram was held for the path check: ${JSON.stringify(stats.drops)}`,
  );
  assert(client.getStats().retransmissions >= 1, "the client never had to resend the held Data");
  const peers = await serverPeers(s);
  assertEquals(peers.map((p) => [p.id, p.addr]), [[client.node.id, `127.0.0.1:${second.port}`]]);
  const events = (await getJson<{ events: { type: string }[] }>(`${s.ops}/api/events`)).events;
  assertStrictEquals(events.filter((e) => e.type === "roamed").length, 1, JSON.stringify(events));

  // Everything the server sent since the switch went to socket #2 (the path check included).
  const now = relay.counters;
  assertStrictEquals(
    now.upstream[0]!.fromServer,
    atSwitch.upstream[0]!.fromServer,
    `the server still sent to socket #1: ${JSON.stringify(relay.fromServer)}`,
  );
  assertStrictEquals(now.upstream[0]!.toServer, atSwitch.upstream[0]!.toServer, "the relay used socket #1");
  assert(now.upstream[1]!.fromServer > 0, "nothing from the server on socket #2");
  const afterSwitch = relay.fromServer.slice(atSwitch.upstream[0]!.fromServer);
  assert(afterSwitch.every((d) => d.socket === 1), JSON.stringify(afterSwitch));
  assert(
    afterSwitch.some((d) => d.type === "Ping"),
    `no path check (Ping) reached socket #2: ${JSON.stringify(afterSwitch)}`,
  );

  // The server's own reliable Data reaches the new address and is acked from there: a peer that talks to
  // the server directly routes to the roamed client.
  await using other = new P2PClient(clientOptions(s.server.addrText, { name: "router" }));
  await within(other.connect(), "the second client's handshake");
  const routed: Json[] = [];
  client.on("data", ({ fromId, payload }) => {
    if (fromId === other.node.id) routed.push(payload);
  });
  for (let i = 0; i < 3; i++) await within(other.send({ routed: i }, { to: client.node.id }), "a routed Ack");
  await waitUntil(() => routed.length >= 3, "the routed Data at the roamed client", DEADLINE_MS);
  assertStrictEquals(relay.counters.upstream[0]!.fromServer, atSwitch.upstream[0]!.fromServer);

  // A second rebinding: the session follows again.
  const third = relay.rebind();
  for (let i = 0; i < 3; i++) await sendAndEcho(client, echoes, { third: i });
  const after = await settled(s, relay, [other]);
  assertStrictEquals(after.roamed, 2);
  assertStrictEquals(after.peers.authenticated, 2, "the roamer and the router");
  const roamer = (await serverPeers(s)).find((p) => p.id === client.node.id);
  assertStrictEquals(roamer?.addr, `127.0.0.1:${third.port}`);
  assertStrictEquals(after.giveUps, 0, JSON.stringify(after.giveUpsByReason));

  assertEquals(disconnects, [], "the client must not see a disconnect");
  assertEquals(relay.errors.map(String), []);
  assertStrictEquals(relay.counters.sendErrors, 0);
  assertStrictEquals(relay.counters.strays, 0);
  await other.disconnect();
  await client.disconnect();
  await waitUntil(
    async () => (await serverStats(s)).peers.authenticated === 0,
    "the Disconnect",
    DEADLINE_MS,
  );
});

Deno.test("roaming: a keyed client's datagram replayed from another address gets a path check and moves nothing", async () => {
  await using s = await startAuthServer();
  await using relay = new RebindingRelay({ upstream: s.server.addr });
  await using client = new P2PClient(
    relayedOptions(relay.addrText, { identity: "generate", name: "victim" }),
  );
  const echoes = collectEchoes(client);
  await within(client.connect(), "the handshake through the relay");
  await sendAndEcho(client, echoes, { victim: 1 });
  const [home] = relay.upstreamAddrs;
  const before = await settled(s, relay);
  const captured = relay.recentFromClient.find((b) => new TextDecoder().decode(b).includes('"victim":1'));
  assert(captured, "the client's Data was not captured");

  const attacker = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  try {
    const reply = attacker.receive();
    reply.catch(() => {}); // rejected by close() when nothing comes
    await attacker.send(captured, { transport: "udp", hostname: "127.0.0.1", port: s.server.addr.port });
    const [bytes, from] = await within(reply, "the server's answer to the replay");
    assertStrictEquals((from as Deno.NetAddr).port, s.server.addr.port);
    const text = new TextDecoder().decode(bytes);
    assert(text.includes('"Ping"') && text.includes("path_challenge"), `not a path check: ${text}`);
    // The attacker cannot answer it (no session key): the session stays where it is.
    const stats = await waitUntil(async () => {
      const st = await serverStats(s);
      return st.datagramsReceived > before.datagramsReceived ? st : undefined;
    }, "the server to receive the replay");
    assertStrictEquals(stats.roamed, 0);
    assertStrictEquals(stats.drops.unexpected, before.drops.unexpected + 1, JSON.stringify(stats.drops));
    assertEquals((await serverPeers(s)).map((p) => [p.id, p.addr]), [[
      client.node.id,
      `127.0.0.1:${home!.port}`,
    ]]);
    // A forged answer (the replayed Data again, and a Pong without a valid mac) moves nothing either.
    const forged = new TextEncoder().encode(
      text.replace('"Ping"', '"Pong"').replace("path_challenge", "path_response"),
    );
    await attacker.send(forged, { transport: "udp", hostname: "127.0.0.1", port: s.server.addr.port });
    await waitUntil(async () => {
      const st = await serverStats(s);
      return st.datagramsReceived >= before.datagramsReceived + 2 ? st : undefined;
    }, "the server to receive the forged Pong");
  } finally {
    attacker.close();
  }
  const stats = await serverStats(s);
  assertStrictEquals(stats.roamed, 0);
  // The replayed Data was not processed again: no second echo.
  await sendAndEcho(client, echoes, { victim: 2 });
  assertEquals(echoes.map((e) => JSON.stringify(e)), ['{"victim":1}', '{"victim":2}']);
  assertEquals((await serverPeers(s)).map((p) => p.addr), [`127.0.0.1:${home!.port}`]);
  await client.disconnect();
});

Deno.test("roaming: an unkeyed client whose source port changes does not roam; its sends fail and it learns it is not registered", async () => {
  await using s = await startAuthServer();
  await using relay = new RebindingRelay({ upstream: s.server.addr });
  await using client = new P2PClient(
    relayedOptions(relay.addrText, { name: "unkeyed-roamer", reliability: { deliveryTimeout: 3 } }),
  );
  const disconnects: string[] = [];
  client.on("disconnected", ({ reason }) => disconnects.push(reason));
  const errors: string[] = [];
  client.on("error", (e) => errors.push(e.code ?? e.error));
  const echoes = collectEchoes(client);
  await within(client.connect(), "the handshake through the relay");
  assert(client.node.id[14] !== "8", "an unkeyed client has no key-derived id");
  await sendAndEcho(client, echoes, { before: 1 });
  const [first] = relay.upstreamAddrs;
  const before = await settled(s, relay);

  relay.rebind();
  // A small Data from the unknown address: the server drops it (not_registered) and may not even answer
  // (an Error to an address without state is never larger than what caused it), so the send is never
  // acked and fails at the 3 s delivery deadline.
  const started = performance.now();
  let failure: unknown = null;
  try {
    await within(client.send({ after: 1 }), "the send after the switch to settle");
  } catch (error) {
    failure = error;
  }
  assert(failure !== null, "a send from the new address was acked: an unkeyed session roamed");
  assert(failure instanceof ConnectionTimeoutError, `unexpected failure: ${String(failure)}`);
  assert(performance.now() - started < 15_000, "the failure took longer than the delivery timeout allows");

  let stats = await settled(s, relay);
  assertStrictEquals(stats.roamed, 0);
  assert(
    stats.drops.not_registered > before.drops.not_registered,
    `the new address is unknown to the server: ${JSON.stringify(stats.drops)}`,
  );
  assertStrictEquals(stats.peers.authenticated, 1);
  // The server still holds the client at its old address (until connection_timeout).
  assertEquals((await serverPeers(s)).map((p) => [p.id, p.addr]), [[
    client.node.id,
    `127.0.0.1:${first!.port}`,
  ]]);

  // A Data large enough that the server's not_registered Error may answer it: the client drops its link.
  const big = client.send({ after: 2, pad: "x".repeat(300) });
  big.catch(() => {}); // settled below
  await waitUntil(() => disconnects.length > 0, "the client to report disconnected", DEADLINE_MS);
  assertEquals(disconnects, ["disconnect"]);
  assert(errors.includes("not_registered"), JSON.stringify(errors));
  assertStrictEquals(client.serverInfo, null);
  assertThrows(() => client.send("more"), /not connected/);
  let bigFailure: unknown = null;
  try {
    await within(big, "the send the server answered with not_registered to settle");
  } catch (error) {
    bigFailure = error;
  }
  assert(bigFailure instanceof ConnectionTimeoutError, `unexpected: ${String(bigFailure)}`);

  const from1 = relay.fromServer.filter((d) => d.socket === 1).map((d) => d.type);
  assert(from1.every((t) => t === "Error"), `the server sent more than Errors to socket #2: ${from1}`);
  stats = await settled(s, relay);
  assertStrictEquals(stats.roamed, 0);
  assertEquals(relay.errors.map(String), []);
  assertEquals(
    echoes.map((e) => JSON.stringify(e)),
    ['{"before":1}'],
    "only the send before the switch echoed",
  );
});
