/**
 * End-to-end over an impaired network: the real program (`main.ts` in a subprocess) and `P2PClient`, with a
 * seeded lossy UDP proxy (tests/helpers/lossy_proxy.ts) between them that drops, duplicates and reorders
 * datagrams in both directions. The server's counters are read from its `/api/stats` route.
 *
 * The seed is in every test name; set `LOSSY_E2E_SEED` to run another one. A seed makes the proxy's sequence
 * of decisions reproducible, not the real sockets' timing, so a failing seed is likely, not certain, to fail
 * again (protocol timing proper is tested in virtual time by the simulator tests).
 *
 * @module
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { type Json, P2PClient, type StatsSnapshot } from "../mod.ts";
import { type Impairments, LossyProxy, type ProxyCounters } from "./helpers/lossy_proxy.ts";
import { type ServerProcess, startServer, waitUntil } from "./helpers/server_process.ts";
import { MALFORMED_DROP_REASONS } from "../src/core/stats.ts";

const SEED = (() => {
  const text = Deno.env.get("LOSSY_E2E_SEED");
  if (text === undefined || text === "") return 20_240_611;
  const seed = Number(text);
  if (!Number.isInteger(seed) || seed < 0 || seed > 0xffff_ffff) {
    throw new RangeError(`Invalid LOSSY_E2E_SEED "${text}": must be an integer from 0 to 4294967295`);
  }
  return seed;
})();

/** Reliable messages per test. */
const N = 200;
/** Sends awaiting their Ack at once (well below the core's per-peer outbox limit). */
const IN_FLIGHT = 32;
/** About 10% loss, 5% duplication and 5% reordering each way, plus a little jitter. */
const IMPAIRMENTS: Impairments = { drop: 0.1, duplicate: 0.05, reorder: 0.05, reorderHoldMs: 5, jitterMs: 2 };
/** How long no new echo may arrive before the missing ones are taken as lost. */
const QUIET_MS = 1_000;

type JsonObject = { [key: string]: Json };

function isObject(value: Json | undefined): value is JsonObject {
  return value !== null && typeof value === "object" && !Array.isArray(value);
}

/** The seed and the counters, for every failure message. */
function context(proxy: LossyProxy, extra: Record<string, unknown> = {}): string {
  return `seed ${SEED}; proxy ${JSON.stringify(proxy.counters)}; ${JSON.stringify(extra)}`;
}

/**
 * Starts the program with its default reliability (adaptive retransmission until the delivery deadline,
 * Retransmit for gaps) and its ops server on loopback; returns it and `/api/stats`.
 */
async function startLossyServer(): Promise<{ server: ServerProcess; statsUrl: string }> {
  const server = await startServer({ args: ["--metrics-address", "127.0.0.1:0"] });
  try {
    const ops = await waitUntil(
      () => /^metrics and status page on http:\/\/(\S+)\/$/m.exec(server.stdout)?.[1],
      "the metrics address on stdout",
    );
    return { server, statsUrl: `http://${ops}/api/stats` };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

async function serverStats(statsUrl: string): Promise<StatsSnapshot> {
  const res = await fetch(statsUrl);
  const body = await res.json();
  assertStrictEquals(res.status, 200, JSON.stringify(body));
  return (body as { stats: StatsSnapshot }).stats;
}

/**
 * Sends `count` reliable messages with at most {@linkcode IN_FLIGHT} awaiting their Ack; returns the indices
 * of the sends that failed.
 */
async function sendAll(client: P2PClient, count: number, to: string | null): Promise<number[]> {
  const failed: number[] = [];
  let next = 0;
  const worker = async () => {
    while (next < count) {
      const i = next++;
      try {
        await client.send({ i, seed: SEED }, { to, reliable: true });
      } catch {
        failed.push(i);
      }
    }
  };
  await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  return failed.sort((a, b) => a - b);
}

/** Waits until the server has received every datagram the proxy handed it (loopback loses nothing). */
async function settledServerStats(statsUrl: string, proxy: LossyProxy): Promise<StatsSnapshot> {
  return await waitUntil(
    async () => {
      const stats = await serverStats(statsUrl);
      return stats.datagramsReceived === proxy.counters.toServer.forwarded ? stats : undefined;
    },
    `the server to count every datagram the proxy forwarded (${context(proxy)})`,
    10_000,
    100,
  );
}

function assertImpaired(counters: ProxyCounters, proxy: LossyProxy): void {
  for (const [direction, c] of Object.entries(counters)) {
    assert(c.dropped > 0, `${direction}: nothing was dropped (${context(proxy)})`);
    assert(c.duplicated > 0, `${direction}: nothing was duplicated (${context(proxy)})`);
    assert(c.reordered > 0, `${direction}: nothing was reordered (${context(proxy)})`);
    assertStrictEquals(c.sendErrors, 0, `${direction}: the proxy failed to send (${context(proxy)})`);
  }
  assertEquals(proxy.errors.map(String), [], `the proxy's sockets failed (${context(proxy)})`);
}

function assertNoMalformedDrops(stats: StatsSnapshot, proxy: LossyProxy): void {
  // The server got bytes it could not decode (a damaged datagram): none may occur.
  const malformed = MALFORMED_DROP_REASONS.filter((reason) => stats.drops[reason] > 0);
  assertEquals(
    malformed,
    [],
    `the server dropped malformed datagrams: ${JSON.stringify(stats.drops)} (${context(proxy)})`,
  );
}

Deno.test(`lossy link (seed ${SEED}): every reliable Data is acked through 10% loss, duplication and reordering; echoes arrive; the server counts duplicates`, async () => {
  const started = performance.now();
  const { server, statsUrl } = await startLossyServer();
  await using _server = server;
  await using proxy = new LossyProxy({
    upstream: server.addr,
    seed: SEED,
    toServer: IMPAIRMENTS,
    toClient: IMPAIRMENTS,
  });
  await using client = new P2PClient({
    server: proxy.addrText,
    bind: "127.0.0.1:0",
    name: "lossy-echo",
    // The proxy counts client sockets (asserted below); the binding lifetime measurement would add one.
    measureBindingLifetime: false,
  });
  const echoes = new Map<number, number>(); // index -> times echoed
  const echoIds = new Map<string, number>(); // message id -> times seen
  const reliableIds = new Set<string>();
  const strays: Json[] = []; // data that is not an echo of ours (asserted on below, not in the listener)
  let lastDataAt = performance.now();
  client.on("data", ({ payload, message }) => {
    lastDataAt = performance.now();
    echoIds.set(message.id, (echoIds.get(message.id) ?? 0) + 1);
    if (message.requires_ack) reliableIds.add(message.id);
    const echo = isObject(payload) ? payload.echo : undefined;
    if (!isObject(echo) || typeof echo.i !== "number" || echo.seed !== SEED) {
      strays.push(payload);
      return;
    }
    echoes.set(echo.i, (echoes.get(echo.i) ?? 0) + 1);
  });

  const info = await client.connect();
  assertStrictEquals(info.id, client.serverInfo?.id, "the handshake did not complete");
  assertStrictEquals(proxy.clientCount, 1);

  const failed = await sendAll(client, N, null);
  assertEquals(
    failed,
    [],
    `${failed.length} of ${N} reliable sends were never acked (${context(proxy, { failed })})`,
  );

  // Echoes are reliable to a client with the extensions: all of them arrive (wait, bounded).
  await waitUntil(
    () => echoes.size === N || performance.now() - lastDataAt > QUIET_MS,
    "the echoes to settle",
    15_000,
  );
  assertEquals(strays, [], "the client got data that is not an echo of ours");
  const missingEchoes = N - echoes.size;
  for (const i of echoes.keys()) assert(i >= 0 && i < N, `echo of an index never sent: ${i}`);
  // Echoes are reliable to a client with the extensions: a lost one is sent again, so none is missing.
  assertStrictEquals(missingEchoes, 0, `${missingEchoes} of ${N} echoes missing (${context(proxy)})`);

  const stats = await settledServerStats(statsUrl, proxy);
  assert(stats.duplicates > 0, `the server counted no duplicates (${context(proxy)})`);
  assertNoMalformedDrops(stats, proxy);
  assertStrictEquals(stats.peers.authenticated, 1, context(proxy));
  assert(stats.messagesReceived.Data >= N, context(proxy, { received: stats.messagesReceived }));
  // One echo per distinct Data: duplicates are re-acked, not re-processed; what is sent beyond N is the
  // echoes' own retransmissions (reliable now) and kept answers sent again for repeated requests.
  assert(
    stats.messagesSent.Data >= N &&
      stats.messagesSent.Data <= N + stats.retransmissions + stats.nackResends + stats.answersReplayed,
    `the server sent ${stats.messagesSent.Data} echoes for ${N} messages (retransmissions ${stats.retransmissions}, replayed ${stats.answersReplayed}, resent on request ${stats.nackResends}; ${
      context(proxy)
    })`,
  );

  const counters = proxy.counters;
  assertImpaired(counters, proxy);
  const clientStats = client.getStats();
  // Echoes are unreliable Data today, which the core does not deduplicate: a datagram the proxy duplicated
  // reaches the application twice. Reliable ones (should echoes become reliable) must not.
  const repeated = [...echoIds].filter(([, n]) => n > 1).map(([id]) => id);
  assertEquals(repeated.filter((id) => reliableIds.has(id)), [], "a reliable echo was delivered twice");
  const duplicateEchoes = repeated.length;
  console.log(
    `seed ${SEED}: ${N} acked, ${missingEchoes} echoes missing, ${duplicateEchoes} echo ids seen twice; ` +
      `server duplicates ${stats.duplicates}, drops ${JSON.stringify(stats.drops)}; client retransmissions ` +
      `${clientStats.retransmissions}; proxy ${JSON.stringify(counters)}; ` +
      `${Math.round(performance.now() - started)} ms`,
  );
});

Deno.test(`lossy link (seed ${SEED}): routed reliable Data reaches the other peer exactly once; the core drops duplicates`, async () => {
  const started = performance.now();
  const { server, statsUrl } = await startLossyServer();
  await using _server = server;
  await using proxy = new LossyProxy({
    upstream: server.addr,
    seed: SEED,
    toServer: IMPAIRMENTS,
    toClient: IMPAIRMENTS,
  });
  const options = { server: proxy.addrText, bind: "127.0.0.1:0", measureBindingLifetime: false };
  await using sender = new P2PClient({ ...options, name: "lossy-sender" });
  await using receiver = new P2PClient({ ...options, name: "lossy-receiver" });
  const ids: string[] = [];
  const indices: number[] = [];
  const strays: Json[] = []; // asserted on below, not in the listener
  let unreliable = 0;
  receiver.on("data", ({ fromId, payload, message }) => {
    const data = isObject(payload) ? payload.data : undefined;
    if (fromId !== sender.node.id || !isObject(data) || typeof data.i !== "number" || data.seed !== SEED) {
      strays.push(payload);
      return;
    }
    if (!message.requires_ack) unreliable++;
    ids.push(message.id);
    indices.push(data.i);
  });
  const senderErrors: unknown[] = [];
  sender.on("error", (error) => senderErrors.push(error));
  // One after the other, so each keeps the same PRNG streams in the proxy from run to run.
  await sender.connect();
  await receiver.connect();
  assertStrictEquals(proxy.clientCount, 2);
  // No wait for the server to see the receiver authenticated: it routes to a peer whose handshake it
  // answered even before that answer is confirmed.
  const upstreamPorts = new Set([...proxy.mappings.values()].map((a) => a.port));
  assertStrictEquals(upstreamPorts.size, 2, "the server must see each client at its own address");

  const failed = await sendAll(sender, N, receiver.node.id);
  assertEquals(
    failed,
    [],
    `${failed.length} of ${N} routed sends were never acked (${context(proxy, { failed })})`,
  );
  // The server forwards each message reliably (its own retransmissions), so every one must arrive.
  await waitUntil(
    () => new Set(indices).size === N || senderErrors.length > 0,
    `all ${N} routed messages at the receiver`,
    20_000,
  ).catch((error) => {
    throw new Error(`${error.message} (have ${new Set(indices).size}; ${context(proxy)})`);
  });
  assertEquals(senderErrors, [], `the server refused routed messages (${context(proxy)})`);

  assertEquals(strays, [], "the receiver got data that is not routed from the sender");
  assertStrictEquals(unreliable, 0, "routed Data must ask for an Ack");
  const repeatedIds = ids.filter((id, k) => ids.indexOf(id) !== k);
  assertEquals(repeatedIds, [], `the receiver saw message ids twice (${context(proxy)})`);
  assertEquals(
    [...indices].sort((a, b) => a - b),
    Array.from({ length: N }, (_, i) => i),
    `each index must arrive exactly once (${context(proxy)})`,
  );
  const receiverStats = receiver.getStats();
  assert(
    receiverStats.duplicates > 0,
    `the receiver's core saw no duplicates, so dedup was not exercised (${context(proxy)})`,
  );

  const stats = await settledServerStats(statsUrl, proxy);
  assertNoMalformedDrops(stats, proxy);
  assertStrictEquals(stats.peers.authenticated, 2, context(proxy));
  const counters = proxy.counters;
  assertImpaired(counters, proxy);
  console.log(
    `seed ${SEED}: ${N} routed and delivered once; receiver dropped ${receiverStats.duplicates} duplicates; ` +
      `server duplicates ${stats.duplicates}, retransmissions ${stats.retransmissions}, giveUps ` +
      `${stats.giveUps}, drops ${JSON.stringify(stats.drops)}; proxy ${JSON.stringify(counters)}; ` +
      `${Math.round(performance.now() - started)} ms`,
  );
});

Deno.test(`lossy link (seed ${SEED}): ordered messages up to 300 KB, fragmented, arrive whole and in order`, async () => {
  const { server, statsUrl } = await startLossyServer();
  await using _server = server;
  await using proxy = new LossyProxy({
    upstream: server.addr,
    seed: SEED + 1,
    toServer: IMPAIRMENTS,
    toClient: IMPAIRMENTS,
  });
  const options = { server: proxy.addrText, bind: "127.0.0.1:0", measureBindingLifetime: false };
  await using sender = new P2PClient({ ...options, name: "lossy-big-sender" });
  await using receiver = new P2PClient({ ...options, name: "lossy-big-receiver" });
  const got: { i: number; text: string }[] = [];
  receiver.on("data", ({ payload }) => {
    const data = isObject(payload) ? payload.data : undefined;
    if (isObject(data) && typeof data.i === "number" && typeof data.text === "string") {
      got.push({ i: data.i, text: data.text });
    }
  });
  await sender.connect();
  await receiver.connect();
  // Sizes from a few bytes to 300 KB: small ones travel whole, the rest as 1,200-byte fragments.
  const sizes = [10, 5_000, 300_000, 40, 60_000, 1_500, 120_000, 7];
  const texts = sizes.map((n, i) => String.fromCharCode(97 + i).repeat(n));
  await Promise.all(
    texts.map((text, i) => sender.send({ i, text }, { to: receiver.node.id, ordered: true })),
  );
  await waitUntil(
    () => got.length === sizes.length,
    `all ${sizes.length} ordered messages (${context(proxy)})`,
    20_000,
  );
  assertEquals(got.map((g) => g.i), sizes.map((_, i) => i), `in the order sent (${context(proxy)})`);
  for (const g of got) assert(g.text === texts[g.i], `message ${g.i} intact`);
  const stats = await settledServerStats(statsUrl, proxy);
  assertNoMalformedDrops(stats, proxy);
  assert(
    stats.messagesReassembled >= 5,
    `the server reassembled the large ones (${stats.messagesReassembled})`,
  );
  assert(stats.messagesFragmented >= 5, `and fragmented them again towards the receiver`);
  const largest = Math.max(...got.map((g) => g.text.length));
  assertStrictEquals(largest, 300_000);
});
