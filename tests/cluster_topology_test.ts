/**
 * Cluster mode against production-shaped Redis, all real servers started by the tests on free loopback ports
 * (tests/helpers/redis_topology.ts): TLS with a test CA and client certificates, a Redis Cluster of three
 * masters with a replica each, and Sentinel with a master, a replica and three sentinels. Two P2PServer
 * instances share peers and route Data across each; the failover tests kill the master that holds the
 * directory and measure how long the instances take to recover. Each test is skipped, with the reason
 * printed, where a binary it needs is missing (`.ci/run` installs them).
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { P2PClient, P2PServer } from "../mod.ts";
import type { ClusterConfig } from "../src/config.ts";
import type { Json } from "../src/wire/mod.ts";
import { waitUntil } from "./helpers/server_process.ts";
import { startRedis } from "./helpers/redis_server.ts";
import { keySlot, openRedisLink } from "../src/deps/redis.ts";
import {
  CLUSTER_SKIP_REASON,
  makeTls,
  redisCli,
  SENTINEL_SKIP_REASON,
  type SentinelBed,
  startRedisCluster,
  startSentinels,
  TLS_SKIP_REASON,
} from "./helpers/redis_topology.ts";

for (
  const [what, reason] of [
    ["TLS", TLS_SKIP_REASON],
    ["Redis Cluster", CLUSTER_SKIP_REASON],
    ["Sentinel", SENTINEL_SKIP_REASON],
  ] as const
) {
  if (reason !== null) console.warn(`cluster ${what} tests skipped: ${reason}`);
}

const PREFIX = "test:";
/** The directory's slot is the slot of this hash tag. */
const TAG = `{${PREFIX}}`;

/** Instances and clients of one test, closed at its end. */
class Bed implements AsyncDisposable {
  readonly servers: P2PServer[] = [];
  readonly clients: P2PClient[] = [];

  /** An instance; waits until it joined unless `joined` is false. */
  async instance(
    instanceId: string,
    cluster: Omit<ClusterConfig, "instanceId" | "peerTtl" | "keyPrefix">,
    joined = true,
  ): Promise<P2PServer> {
    const server = new P2PServer({
      listenAddress: "127.0.0.1:0",
      enableDiscovery: false,
      statsInterval: 0,
      cluster: { instanceId, peerTtl: 3, keyPrefix: PREFIX, ...cluster },
    });
    this.servers.push(server);
    await server.listen();
    if (joined) {
      await waitUntil(() => server.getStats().cluster?.state === "ok", `instance ${instanceId} joined`);
    }
    return server;
  }

  async client(server: P2PServer, name: string): Promise<P2PClient> {
    const c = new P2PClient({
      server: `127.0.0.1:${server.addr.port}`,
      bind: "127.0.0.1:0",
      name,
      identity: "generate",
    });
    this.clients.push(c);
    await c.connect();
    return c;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    for (const c of this.clients) await c.close().catch(() => {});
    for (const s of this.servers) await s.close();
  }
}

/** The data of routed Data (`{from, data}`). */
function routed(payload: Json): Json {
  return payload !== null && typeof payload === "object" && "data" in payload && "from" in payload
    ? (payload as { data: Json }).data
    : payload;
}

/** Waits until `client` discovers exactly `want` (order free). */
async function discovers(client: P2PClient, want: string[], what: string, deadlineMs = 10_000) {
  const sorted = JSON.stringify([...want].sort());
  await waitUntil(
    async () => JSON.stringify((await client.discover()).map((p) => p.id).sort()) === sorted,
    what,
    deadlineMs,
  );
}

/** `x` and `y` (on different instances) see each other, and Data goes both ways, each once and in order. */
async function routesBothWays(x: P2PClient, y: P2PClient, tag: string): Promise<void> {
  await discovers(x, [x.node.id, y.node.id], `${tag}: x sees y`);
  await discovers(y, [x.node.id, y.node.id], `${tag}: y sees x`);
  const atY: Json[] = [];
  const atX: Json[] = [];
  const offY = y.on("data", ({ fromId, payload }) => fromId === x.node.id && atY.push(routed(payload)));
  const offX = x.on("data", ({ fromId, payload }) => fromId === y.node.id && atX.push(routed(payload)));
  try {
    for (let i = 0; i < 5; i++) await x.send(`${tag} ${i}`, { to: y.node.id });
    await Promise.all([0, 1, 2, 3, 4].map((i) => y.send(i, { to: x.node.id, ordered: true })));
    await waitUntil(() => atY.length >= 5 && atX.length >= 5, `${tag}: Data across instances`);
    assertEquals(atY, [0, 1, 2, 3, 4].map((i) => `${tag} ${i}`));
    assertEquals(atX, [0, 1, 2, 3, 4]);
  } finally {
    offX();
    offY();
  }
}

/** `x` asks its instance to introduce it to `y` (on another instance): both punch and talk directly. */
async function introducesAcross(x: P2PClient, y: P2PClient, tag: string): Promise<void> {
  const atY: Json[] = [];
  const offY = y.on("data", ({ fromId, payload }) => fromId === x.node.id && atY.push(routed(payload)));
  const { promise: direct, resolve } = Promise.withResolvers<string>();
  const offDirect = y.on("direct", ({ nodeId }) => resolve(nodeId));
  try {
    const peer = await x.introduce(y.node.id);
    assertStrictEquals(peer.nodeId, y.node.id, `${tag}: x connected to y`);
    assertStrictEquals(await direct, x.node.id, `${tag}: y connected to x`);
    await x.sendDirect(y.node.id, `${tag} direct`);
    await waitUntil(() => atY.includes(`${tag} direct`), `${tag}: direct Data after the introduction`);
  } finally {
    offDirect();
    offY();
  }
}

/**
 * Samples the instances' cluster state every 10 ms until all are "ok" after having been seen "degraded":
 * returns when each went degraded (ms after `from`) and when the last was ok again.
 */
async function outage(servers: P2PServer[], from: number, deadlineMs: number) {
  const degradedAt: (number | null)[] = servers.map(() => null);
  const end = from + deadlineMs;
  for (;;) {
    const now = performance.now();
    const states = servers.map((s) => s.getStats().cluster?.state);
    states.forEach((state, i) => {
      if (state === "degraded" && degradedAt[i] === null) degradedAt[i] = now - from;
    });
    if (degradedAt.every((d) => d !== null) && states.every((s) => s === "ok")) {
      return { degradedAt: degradedAt as number[], recoveredAt: now - from };
    }
    if (now > end) {
      throw new Error(
        `no recovery within ${deadlineMs} ms: states ${JSON.stringify(states)}, degraded at ${
          JSON.stringify(degradedAt)
        }, last errors ${JSON.stringify(servers.map((s) => s.getStats().cluster?.lastError))}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

Deno.test({
  name:
    "cluster over TLS: discovery, relays and introductions with a test CA and client certificates; a wrong CA is refused clearly",
  ignore: TLS_SKIP_REASON !== null,
}, async () => {
  await using tls = await makeTls();
  // TLS only (no plain port), and client certificates required.
  await using redis = (await startRedis({ tls: { ...tls.server, clientAuth: true } }))!;
  assert(redis.url.startsWith("rediss://"), redis.url);
  await using t = new Bed();
  const files = { tlsCaFile: tls.ca, tlsCertFile: tls.clientCert, tlsKeyFile: tls.clientKey };
  const a = await t.instance("a", { redisUrl: redis.url, ...files });
  // By "localhost" with the certificate's other name checked instead.
  const b = await t.instance("b", {
    redisUrl: redis.url.replace("127.0.0.1", "localhost"),
    ...files,
    tlsServerName: "redis.test",
  });
  const x = await t.client(a, "x");
  const y = await t.client(b, "y");
  await routesBothWays(x, y, "tls");
  await introducesAcross(x, y, "tls");
  // Another CA: the instance says why, in stats and /health, and serves its own peers all the same.
  const c = await t.instance("c", { redisUrl: redis.url, ...files, tlsCaFile: tls.otherCa }, false);
  await waitUntil(() => c.getStats().cluster?.state === "degraded", "c degraded");
  const error = c.getStats().cluster?.lastError ?? "";
  assert(/TLS: the server's certificate was not accepted .*cluster\.tls_ca_file/.test(error), error);
  const health = await (await c.fetch(new Request("http://x/health"))).json();
  assertStrictEquals(health.status, "degraded");
  assert(String(health.cluster.last_error).includes("TLS"), JSON.stringify(health));
  const z = await t.client(c, "z");
  const z2 = await t.client(c, "z2");
  await z.ping();
  await discovers(z, [z.node.id, z2.node.id], "c's own peers");
  const got: Json[] = [];
  z2.on("data", ({ payload }) => got.push(routed(payload)));
  await z.send("local", { to: z2.node.id });
  await waitUntil(() => got.includes("local"), "a local relay on c");
  // No client certificate where the server requires one: refused too, never joined.
  // The line names the server (credentials hidden) and says what it wants.
  const withCredentials = redis.url.replace("rediss://", "rediss://app:s3cret@");
  const d = await t.instance("d", { redisUrl: withCredentials, tlsCaFile: tls.ca }, false);
  await waitUntil(() => d.getStats().cluster?.state === "degraded", "d degraded");
  const refused = d.getStats().cluster?.lastError ?? "";
  const shown = `Redis at "rediss://***@127.0.0.1:${redis.port}" is unreachable: `;
  assert(refused.startsWith(`${shown}TLS: the server requires a client certificate (`), refused);
  assert(refused.endsWith("set cluster.tls_cert_file and cluster.tls_key_file"), refused);
  assert(!/app|s3cret/.test(refused), refused);
  // Neither c nor d got into the directory: a and b still see only x and y.
  assertEquals(a.getStats().cluster?.instances, 1);
  assertStrictEquals(b.getStats().cluster?.state, "ok");
});

/** Waits until the node on `live` knows that the master on `port` failed and another took its slots. */
async function failedOver(live: number, port: number): Promise<void> {
  await waitUntil(
    async () => {
      const nodes = await redisCli(live, "CLUSTER", "NODES").catch(() => "");
      const lines = nodes.trim().split("\n").map((l) => l.split(" "));
      const dead = lines.find((l) => l[1]?.startsWith(`127.0.0.1:${port}@`));
      const masters = lines.filter((l) => /master/.test(l[2] ?? "") && !/fail/.test(l[2] ?? ""));
      return dead !== undefined && /(^|,)fail(,|$)/.test(dead[2] ?? "") && masters.length === 3;
    },
    `the master on ${port} failed over`,
    15_000,
  );
}

Deno.test({
  name: "cluster on a Redis Cluster: shared peers across masters; the directory's master killed, recovered",
  ignore: CLUSTER_SKIP_REASON !== null,
}, async () => {
  // 3 masters + 3 replicas; a master is failed over after 2 node timeouts or so.
  await using bed = await startRedisCluster({ masters: 3, replicas: 1, nodeTimeoutMs: 1000 });
  await using t = new Bed();
  const a = await t.instance("a", { redisUrl: bed.url, redisCluster: true });
  const b = await t.instance("b", { redisUrl: bed.url, redisCluster: true });
  const x = await t.client(a, "x");
  const y = await t.client(b, "y");
  await routesBothWays(x, y, "before");
  // A plain link beside them, to count what the link reports.
  const counts = { ready: 0, down: 0, messages: 0 };
  const { promise: linkReady, resolve } = Promise.withResolvers<void>();
  const link = openRedisLink(bed.url, {
    onReady: () => {
      counts.ready++;
      resolve();
    },
    onDown: () => counts.down++,
    onMessage: () => counts.messages++,
  }, { cluster: true });
  try {
    await link.subscribe(`${TAG}link-test`);
    await linkReady;
    // Ready means subscribed: the first message published reaches it.
    assertEquals(await link.exec([["SPUBLISH", `${TAG}link-test`, "first"]]), [1]);
    const owner = await bed.masterOf(`${TAG}peers`);
    // The link computes the slot of its probe as Redis does.
    const slot = Number((await redisCli(owner, "CLUSTER", "KEYSLOT", `${TAG}link-probe:x`)).trim());
    assertStrictEquals(keySlot(`${TAG}link-probe:x`), slot);
    // Another master fails (its replica takes over): the directory's slot is not concerned, and the
    // instances stay in the cluster all along (they do not flap through degraded and rejoin).
    const masters = await Promise.all(
      bed.nodes.map(async (n) => (await redisCli(n.port, "ROLE")).startsWith("master")),
    );
    const other = bed.nodes.find((n, i) => masters[i] && n.port !== owner)!;
    await other.kill();
    const states = new Set<string>();
    let stop = false;
    const sampling = (async () => {
      while (!stop) {
        for (const s of [a, b]) states.add(s.getStats().cluster?.state ?? "none");
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const otherAt = performance.now();
    await failedOver(owner, other.port);
    await bed.healthy(`${TAG}peers`);
    console.log(`another master failed over in ${(performance.now() - otherAt).toFixed(0)} ms`);
    stop = true;
    await sampling;
    assertEquals([...states], ["ok"], "the instances stayed ok while another shard failed over");
    assertEquals({ ready: counts.ready, down: counts.down }, { ready: 1, down: 0 });
    // Now the directory's master.
    const victim = bed.nodes.find((n) => n.port === owner)!;
    const killedAt = performance.now();
    await victim.kill();
    // Both go degraded, while they keep serving their own peers; then the replica takes over and both rejoin.
    const seen = outage([a, b], killedAt, 20_000);
    await x.ping();
    const { degradedAt, recoveredAt } = await seen;
    // One outage, one return: not a flap for every rebuild of the client's subscribers during the failover.
    await waitUntil(() => counts.ready >= 2, "the link ready again");
    assertEquals({ ready: counts.ready, down: counts.down }, { ready: 2, down: 1 });
    assertEquals(await link.exec([["SPUBLISH", `${TAG}link-test`, "again"]]), [1]);
    await waitUntil(() => counts.messages === 2, "both messages on the link");
    const promoted = await bed.masterOf(`${TAG}peers`);
    assert(promoted !== owner, `the slot moved from ${owner}`);
    console.log(
      `Redis Cluster failover: degraded after ${degradedAt.map((d) => d.toFixed(0)).join("/")} ms, ` +
        `both instances ok ${recoveredAt.toFixed(0)} ms after the kill`,
    );
    assert(recoveredAt < 15_000, `recovered after ${recoveredAt.toFixed(0)} ms`);
  } finally {
    await link.close();
  }
  await routesBothWays(x, y, "after");
  // A peer joining after the failover is seen across instances too.
  const w = await t.client(b, "w");
  await discovers(x, [x.node.id, y.node.id, w.node.id], "a peer that joined after the failover");
});

Deno.test({
  name:
    "cluster on a Redis Cluster over TLS: rediss seeds with client certificates, peers shared and introduced",
  ignore: (CLUSTER_SKIP_REASON ?? TLS_SKIP_REASON) !== null,
}, async () => {
  await using tls = await makeTls();
  // TLS only on every node, the cluster bus included, and client certificates required.
  await using bed = await startRedisCluster({ masters: 3, tls: { ...tls.server, clientAuth: true } });
  assert(bed.url.startsWith("rediss://"), bed.url);
  await using t = new Bed();
  const files = { tlsCaFile: tls.ca, tlsCertFile: tls.clientCert, tlsKeyFile: tls.clientKey };
  const a = await t.instance("a", { redisUrl: bed.url, redisCluster: true, ...files });
  const b = await t.instance("b", { redisUrl: bed.url, redisCluster: true, ...files });
  const x = await t.client(a, "x");
  const y = await t.client(b, "y");
  await routesBothWays(x, y, "cluster tls");
  await introducesAcross(x, y, "cluster tls");
  // The directory is on the cluster, in its slot's master.
  const owner = await bed.masterOf(`${TAG}peers`);
  assertStrictEquals((await redisCli(owner, "SCARD", `${TAG}peers`)).trim(), "2");
});

/** Two instances on the sentinels' master; the master killed; both follow the promoted replica. */
async function sentinelFailover(
  bed: SentinelBed,
  cluster: Omit<ClusterConfig, "instanceId" | "peerTtl" | "keyPrefix" | "redisUrl">,
  what: string,
): Promise<void> {
  await using t = new Bed();
  const a = await t.instance("a", { redisUrl: bed.url, ...cluster });
  const b = await t.instance("b", { redisUrl: bed.url, ...cluster });
  const x = await t.client(a, "x");
  const y = await t.client(b, "y");
  await routesBothWays(x, y, "before");
  await introducesAcross(x, y, "before");
  const killedAt = performance.now();
  await bed.master.kill();
  const seen = outage([a, b], killedAt, 20_000);
  await x.ping();
  const { degradedAt, recoveredAt } = await seen;
  // The instances may follow the promotion before every sentinel answers with it (the first one asked can
  // lag behind the one that led the failover by a moment on a loaded machine).
  await waitUntil(
    async () => await bed.currentMaster() === bed.replica.port,
    "the sentinels promoted the replica",
    5_000,
    100,
  );
  console.log(
    `${what} failover: degraded after ${degradedAt.map((d) => d.toFixed(0)).join("/")} ms, ` +
      `both instances ok ${recoveredAt.toFixed(0)} ms after the kill`,
  );
  assert(recoveredAt < 15_000, `recovered after ${recoveredAt.toFixed(0)} ms`);
  await routesBothWays(x, y, "after");
  const w = await t.client(b, "w");
  await discovers(x, [x.node.id, y.node.id, w.node.id], "a peer that joined after the failover");
}

Deno.test({
  name: "cluster with Sentinel: the master killed, the replica promoted, the instances follow",
  ignore: SENTINEL_SKIP_REASON !== null,
}, async () => {
  await using bed = await startSentinels({ downAfterMs: 1000, failoverTimeoutMs: 5000 });
  await sentinelFailover(bed, {}, "Sentinel");
});

Deno.test({
  name:
    "cluster with Sentinel over TLS: rediss-sentinel to TLS sentinels and master, the instances follow a failover",
  ignore: (SENTINEL_SKIP_REASON ?? TLS_SKIP_REASON) !== null,
}, async () => {
  await using tls = await makeTls();
  // The master, the replica and the sentinels serve TLS only and require client certificates.
  await using bed = await startSentinels({
    downAfterMs: 1000,
    failoverTimeoutMs: 5000,
    tls: { ...tls.server, clientAuth: true },
  });
  assert(bed.url.startsWith("rediss-sentinel://"), bed.url);
  const files = { tlsCaFile: tls.ca, tlsCertFile: tls.clientCert, tlsKeyFile: tls.clientKey };
  await sentinelFailover(bed, files, "Sentinel over TLS");
});
