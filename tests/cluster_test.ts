/**
 * Cluster mode against a real `redis-server` (started by the test on a free loopback port): several
 * P2PServer instances on loopback share one peer directory, clients on each. Skipped, with the reason, where
 * redis-server is not installed (`.ci/run` installs it).
 */
import { assert, assertEquals, assertRejects, assertStrictEquals } from "./deps/assert.ts";
import { P2PClient, P2PServer, RemoteError } from "../mod.ts";
import type { Json } from "../src/wire/mod.ts";
import { waitUntil } from "./helpers/server_process.ts";
import { generateIdentity } from "../src/core/auth.ts";
import { REDIS_SKIP_REASON, type RedisServer, startRedis } from "./helpers/redis_server.ts";
import { openRedisLink, type RedisLink } from "../src/deps/redis.ts";

if (REDIS_SKIP_REASON !== null) console.warn(`cluster tests skipped: ${REDIS_SKIP_REASON}`);

const ignore = REDIS_SKIP_REASON !== null;
/** Short enough for the expiry tests, long enough for a loaded CI machine. */
const PEER_TTL = 2;

interface Bed extends AsyncDisposable {
  redis: RedisServer;
  servers: P2PServer[];
  clients: P2PClient[];
  start(instanceId: string): Promise<P2PServer>;
  client(
    server: P2PServer,
    options?: { name?: string; nodeId?: string; keyed?: boolean },
  ): Promise<P2PClient>;
}

async function bed(instances: string[]): Promise<Bed> {
  const redis = (await startRedis())!;
  const servers: P2PServer[] = [];
  const clients: P2PClient[] = [];
  const b: Bed = {
    redis,
    servers,
    clients,
    async start(instanceId) {
      const server = new P2PServer({
        listenAddress: "127.0.0.1:0",
        enableDiscovery: false,
        statsInterval: 0,
        cluster: { redisUrl: redis.url, instanceId, peerTtl: PEER_TTL, keyPrefix: "test:" },
      });
      servers.push(server);
      await server.listen();
      await waitUntil(
        () => server.getStats().cluster?.state === "ok",
        `instance ${instanceId} in the cluster`,
      );
      return server;
    },
    async client(server, options = {}) {
      const c = new P2PClient({
        server: `127.0.0.1:${server.addr.port}`,
        bind: "127.0.0.1:0",
        name: options.name ?? "c",
        ...(options.nodeId !== undefined ? { nodeId: options.nodeId } : {}),
        ...(options.keyed ? { identity: "generate" as const } : {}),
      });
      clients.push(c);
      await c.connect();
      return c;
    },
    async [Symbol.asyncDispose]() {
      for (const c of clients) await c.close().catch(() => {});
      for (const s of servers) await s.close();
      await redis.stop();
    },
  };
  for (const id of instances) await b.start(id);
  return b;
}

/** Waits until `client` discovers exactly the ids in `want` (order free). */
async function discovers(client: P2PClient, want: string[], what: string): Promise<void> {
  const sorted = JSON.stringify([...want].sort());
  let last: string[] = [];
  try {
    await waitUntil(async () => {
      last = (await client.discover()).map((p) => p.id).sort();
      return JSON.stringify(last) === sorted;
    }, what);
  } catch (error) {
    throw new Error(`${(error as Error).message}; last saw ${last.length} of ${want.length}`);
  }
}

Deno.test({ name: "cluster: discovery lists the peers of every instance, paged", ignore }, async () => {
  await using t = await bed(["a", "b", "c"]);
  const [a, b, c] = t.servers as [P2PServer, P2PServer, P2PServer];
  const clients: P2PClient[] = [];
  for (const s of [a, b, c]) for (let i = 0; i < 4; i++) clients.push(await t.client(s, { name: `n${i}` }));
  const ids = clients.map((x) => x.node.id);
  for (const x of [clients[0]!, clients[5]!, clients[11]!]) await discovers(x, ids, "all 12 peers");
  // Paging by cursor across local and mirrored peers: no repeats, no gaps.
  const seen: string[] = [];
  let cursor: string | null = null;
  do {
    const page = await clients[3]!.discoverPage({ limit: 5, ...(cursor ? { cursor } : {}) });
    seen.push(...page.peers.map((p) => p.id));
    cursor = page.nextCursor;
  } while (cursor);
  assertEquals(seen.sort(), [...ids].sort());
  const entry = (await clients[0]!.discover()).find((p) => p.id === clients[6]!.node.id)!;
  assertStrictEquals(entry.observed_addr, `127.0.0.1:${clients[6]!.localAddr.port}`, "observed address kept");
  assertEquals(b.getStats().cluster?.instances, 2);
  // A peer that leaves one instance leaves every instance's discovery.
  await clients[11]!.disconnect();
  await discovers(clients[0]!, ids.slice(0, 11), "11 peers after a Disconnect");
});

Deno.test(
  { name: "cluster: a node id registered on one instance is refused on another", ignore },
  async () => {
    await using t = await bed(["a", "b"]);
    const [a, b] = t.servers as [P2PServer, P2PServer];
    const first = await t.client(a);
    const other = await t.client(b);
    await discovers(other, [first.node.id, other.node.id], "both peers");
    const twin = new P2PClient({
      server: `127.0.0.1:${b.addr.port}`,
      bind: "127.0.0.1:0",
      nodeId: first.node.id,
    });
    t.clients.push(twin);
    const error = await rejection(twin.connect());
    assert(error.message.includes("node ID already exists"), String(error));
    assertEquals(b.getStats().handshakesFailed.node_id_conflict, 1);
    // A keyed node proves its id: registering on another instance moves it there, and the first lets go.
    const identity = generateIdentity();
    const before = new P2PClient({ server: `127.0.0.1:${a.addr.port}`, bind: "127.0.0.1:0", identity });
    t.clients.push(before);
    await before.connect();
    await waitUntil(() => b.getStats().cluster!.remotePeers === 2, "the keyed peer mirrored on b");
    const after = new P2PClient({ server: `127.0.0.1:${b.addr.port}`, bind: "127.0.0.1:0", identity });
    t.clients.push(after);
    await after.connect();
    await waitUntil(() => !a.peers().some((p) => p.id === identity.nodeId), "a lets go of the moved node");
    await discovers(other, [first.node.id, other.node.id, identity.nodeId], "the moved node listed once");
    assertStrictEquals(b.peers().filter((p) => p.id === identity.nodeId).length, 1);
  },
);

Deno.test({ name: "cluster: relayed Data and introductions across instances", ignore }, async () => {
  await using t = await bed(["a", "b"]);
  const [a, b] = t.servers as [P2PServer, P2PServer];
  const x = await t.client(a, { name: "x", keyed: true });
  const y = await t.client(b, { name: "y", keyed: true });
  await discovers(x, [x.node.id, y.node.id], "both peers");
  const got: Json[] = [];
  y.on("data", ({ fromId, payload }) => {
    if (fromId === x.node.id) got.push(routed(payload));
  });
  for (let i = 0; i < 20; i++) await x.send({ i }, { to: y.node.id });
  await waitUntil(() => got.length === 20, "20 relayed messages");
  assertEquals(got.map((g) => (g as { i: number }).i), [...Array(20).keys()], "each once, in order");
  // Ordered Data keeps its order through the other instance.
  const ordered: Json[] = [];
  x.on("data", ({ fromId, payload }) => {
    if (fromId === y.node.id) ordered.push(routed(payload));
  });
  await Promise.all([...Array(30).keys()].map((i) => y.send(i, { to: x.node.id, ordered: true })));
  await waitUntil(() => ordered.length === 30, "30 ordered messages");
  assertEquals(ordered, [...Array(30).keys()]);
  // An introduction across instances: both sides punch and connect directly.
  const direct = new Promise<{ nodeId: string }>((resolve) => y.on("direct", resolve));
  const peer = await x.introduce(y.node.id);
  assertStrictEquals(peer.nodeId, y.node.id);
  assertStrictEquals((await direct).nodeId, x.node.id);
  await x.sendDirect(y.node.id, "direct");
  await waitUntil(() => got.includes("direct"), "direct Data");
  assert(a.getStats().cluster!.messagesOut >= 21 && b.getStats().cluster!.messagesIn >= 21);
});

Deno.test(
  { name: "cluster: Data for a peer that left another instance is undeliverable", ignore },
  async () => {
    await using t = await bed(["a", "b"]);
    const [a, b] = t.servers as [P2PServer, P2PServer];
    const x = await t.client(a, { keyed: true });
    const y = await t.client(b, { keyed: true });
    await discovers(x, [x.node.id, y.node.id], "both peers");
    // y vanishes without a Disconnect (its socket closes): the relay reaches b, which cannot deliver.
    await waitUntil(() => a.getStats().cluster!.remotePeers === 1, "y mirrored on a");
    const yId = y.node.id;
    await y.close();
    const error = await rejection(x.send("lost", { to: yId }));
    assert(error instanceof RemoteError, String(error));
    assert(["undeliverable", "unknown_recipient"].includes(error.code ?? ""), String(error));
  },
);

Deno.test(
  { name: "cluster: a killed instance's peers vanish from the others within peer_ttl", ignore },
  async () => {
    await using t = await bed(["a", "b"]);
    const [a] = t.servers as [P2PServer, P2PServer];
    const watcher = await t.client(a);
    // An instance in its own process, killed without a goodbye.
    const child = program([
      "--cluster",
      t.redis.url,
      "--instance-id",
      "doomed",
      "--config",
      await configFile({ cluster: { peer_ttl: PEER_TTL, key_prefix: "test:" }, enable_discovery: false }),
    ]);
    const port = await listeningPort(child);
    const victim = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0", name: "victim" });
    t.clients.push(victim);
    await victim.connect();
    await discovers(watcher, [watcher.node.id, victim.node.id], "the victim on the other instance");
    child.kill("SIGKILL");
    await child.status;
    const killedAt = performance.now();
    await discovers(watcher, [watcher.node.id], "the victim gone");
    const took = performance.now() - killedAt;
    assert(took < (PEER_TTL + 2) * 1000, `gone after ${took.toFixed(0)} ms`);
    await child.stderr.cancel().catch(() => {});
    // Data for a peer of a killed instance fails at once: nobody listens on that instance's channel.
    const second = program([
      "--cluster",
      t.redis.url,
      "--instance-id",
      "doomed-too",
      "--config",
      await configFile({ cluster: { peer_ttl: 30, key_prefix: "test:" }, enable_discovery: false }),
    ]);
    const port2 = await listeningPort(second);
    const victim2 = new P2PClient({
      server: `127.0.0.1:${port2}`,
      bind: "127.0.0.1:0",
      identity: "generate",
    });
    t.clients.push(victim2);
    await victim2.connect();
    await discovers(watcher, [watcher.node.id, victim2.node.id], "the second victim");
    second.kill("SIGKILL");
    await second.status;
    await second.stderr.cancel().catch(() => {});
    const sentAt = performance.now();
    const error = await rejection(watcher.send("anyone there?", { to: victim2.node.id }));
    assert(error instanceof RemoteError && error.code === "undeliverable", String(error));
    const waited = performance.now() - sentAt;
    assert(waited < 2_000, `refused after ${waited.toFixed(0)} ms, not at the 30 s expiry`);
    await discovers(watcher, [watcher.node.id], "the second victim gone with its instance");
  },
);

Deno.test(
  { name: "cluster: Redis down degrades to local service; back up, it resynchronises", ignore },
  async () => {
    await using t = await bed(["a", "b"]);
    const [a, b] = t.servers as [P2PServer, P2PServer];
    const x = await t.client(a, { keyed: true });
    const y = await t.client(b, { keyed: true });
    const x2 = await t.client(a);
    await discovers(x, [x.node.id, y.node.id, x2.node.id], "three peers");
    await t.redis.kill();
    await waitUntil(() => a.getStats().cluster?.state === "degraded", "a degraded");
    const health = await (await a.fetch(new Request("http://x/health"))).json();
    assertStrictEquals(health.status, "degraded");
    assertStrictEquals(health.cluster.state, "degraded");
    // Local service goes on: ping, local discovery, local relay.
    await x.ping();
    await discovers(x, [x.node.id, x2.node.id], "local peers only");
    const got: Json[] = [];
    x2.on("data", ({ payload }) => got.push(routed(payload)));
    await x.send("local", { to: x2.node.id });
    await waitUntil(() => got.includes("local"), "local relay");
    await assertRejects(() => x.send("far", { to: y.node.id }), RemoteError);
    // Redis returns (empty): both instances claim their peers again and the directory is whole again.
    await t.redis.restart();
    await waitUntil(() => a.getStats().cluster?.state === "ok" && b.getStats().cluster?.state === "ok", "ok");
    await discovers(x, [x.node.id, y.node.id, x2.node.id], "three peers again");
    const fromY: Json[] = [];
    y.on("data", ({ payload }) => fromY.push(routed(payload)));
    await x.send("again", { to: y.node.id });
    await waitUntil(() => fromY.includes("again"), "relay across instances again");
  },
);

/** The data of routed Data (`{from, data}`); direct Data as it came. */
function routed(payload: Json): Json {
  return payload !== null && typeof payload === "object" && "data" in payload && "from" in payload
    ? (payload as { data: Json }).data
    : payload;
}

async function rejection(promise: Promise<unknown>): Promise<Error> {
  try {
    await promise;
  } catch (error) {
    return error as Error;
  }
  throw new Error("expected a rejection");
}

/** The program (main.ts) on a free loopback port, its log on a pipe. */
function program(args: string[]): Deno.ChildProcess {
  const main = new URL("../main.ts", import.meta.url).pathname;
  return new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", main, "--address", "127.0.0.1:0", ...args],
    stdout: "null",
    stderr: "piped",
  }).spawn();
}

async function configFile(value: unknown): Promise<string> {
  const path = await Deno.makeTempFile({ suffix: ".json" });
  await Deno.writeTextFile(path, JSON.stringify(value));
  return path;
}

/** Reads the child's log until it says where it listens. */
async function listeningPort(child: Deno.ChildProcess): Promise<number> {
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + 15_000;
  while (Date.now() < deadline) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
    const m = /listening on 127\.0\.0\.1:(\d+)/.exec(text);
    if (m && /cluster: joined/.test(text)) {
      reader.releaseLock();
      return Number(m[1]);
    }
  }
  throw new Error(`the instance did not start: ${text}`);
}

Deno.test({ name: "cluster: Redis credentials never reach the logs, /health or stats", ignore }, async () => {
  await using redis = (await startRedis({ password: "s3cret-Pa55word" }))!;
  const wrong = redis.url.replace("redis://", "redis://:wrong-Pa55word@");
  const right = redis.url.replace("redis://", "redis://:s3cret-Pa55word@");
  // The program with a wrong password, debug logs on: it reports the outage, never the password.
  const child = program([
    "--cluster",
    wrong,
    "--metrics-address",
    "127.0.0.1:0",
    "--DEBUG",
    "--config",
    await configFile({ enable_discovery: false, identity_file: null }),
  ]);
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const until = Date.now() + 15_000;
  while (Date.now() < until && !/Redis unreachable/.test(text)) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  child.kill("SIGTERM");
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    text += value;
  }
  await child.status;
  assert(/Redis unreachable/.test(text), text);
  assert(!text.includes("wrong-Pa55word") && !text.includes("s3cret"), text);
  // The library: degraded with a wrong password (stats and /health without it), then fine with the right one.
  const server = new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    statsInterval: 0,
    cluster: { redisUrl: wrong, instanceId: "x", peerTtl: PEER_TTL, keyPrefix: "test:" },
  });
  await server.listen();
  try {
    await waitUntil(() => server.getStats().cluster?.state === "degraded", "degraded");
    const shown = JSON.stringify(server.getStats()) +
      await (await server.fetch(new Request("http://x/health"))).text();
    assert(shown.includes("WRONGPASS") || shown.includes("unreachable"), shown);
    assert(!shown.includes("wrong-Pa55word"), shown);
  } finally {
    await server.close();
  }
  await using ok = new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    statsInterval: 0,
    cluster: { redisUrl: right, instanceId: "y", peerTtl: PEER_TTL, keyPrefix: "test:" },
  });
  await ok.listen();
  await waitUntil(() => ok.getStats().cluster?.state === "ok", "joined with the right password");
});

Deno.test("a single instance never loads the Redis client: the library runs without --allow-env", async () => {
  const script = await Deno.makeTempFile({ suffix: ".ts" });
  const mod = new URL("../mod.ts", import.meta.url).href;
  await Deno.writeTextFile(
    script,
    `import { P2PServer } from ${JSON.stringify(mod)};
const s = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false, identityFile: null });
await s.listen();
await s.close();
console.log("served");
`,
  );
  const config = new URL("../deno.json", import.meta.url).pathname;
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", config, "--allow-net", "--allow-read", script],
    stdout: "piped",
    stderr: "piped",
  }).output();
  await Deno.remove(script);
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assert(out.success && text.includes("served"), text);
});

/** A plain link to the test's Redis, for poking at it directly. */
async function rawLink(url: string): Promise<RedisLink> {
  const { promise, resolve } = Promise.withResolvers<void>();
  const link = openRedisLink(url, { onReady: resolve, onDown: () => {}, onMessage: () => {} });
  await promise;
  return link;
}

/** Waits for a child's exit and returns its status and everything it wrote on stderr. */
async function outcome(child: Deno.ChildProcess): Promise<{ code: number; text: string }> {
  const [status, text] = await Promise.all([child.status, new Response(child.stderr).text()]);
  return { code: status.code, text };
}

Deno.test(
  {
    name: "cluster: a second process with the same instance id exits 2; a crashed one's id is taken over",
    ignore,
  },
  async () => {
    await using t = await bed(["twin"]);
    const config = await configFile({
      cluster: { peer_ttl: PEER_TTL, key_prefix: "test:" },
      enable_discovery: false,
    });
    // The id is held by a live instance that renews it: the second process is refused at start.
    const second = program(["--cluster", t.redis.url, "--instance-id", "twin", "--config", config]);
    const started = performance.now();
    const refused = await outcome(second);
    assertStrictEquals(refused.code, 2, refused.text);
    assert(
      /error: Instance id "twin" is in use by another process \(listening on "127\.0\.0\.1:\d+"/.test(
        refused.text,
      ),
      refused.text,
    );
    // It waited one renewal period plus the margin at most (and the first instance is untouched).
    assert(performance.now() - started < 15_000);
    assertStrictEquals(t.servers[0]!.getStats().cluster?.state, "ok");
    // A process killed without a goodbye leaves its entry behind; a restart with its id takes it over.
    const first = program(["--cluster", t.redis.url, "--instance-id", "phoenix", "--config", config]);
    await listeningPort(first);
    first.kill("SIGKILL");
    await first.status;
    await first.stderr.cancel().catch(() => {});
    const again = program(["--cluster", t.redis.url, "--instance-id", "phoenix", "--config", config]);
    // It joins (listeningPort waits for "cluster: joined") after one renewal period without a renewal.
    assert(await listeningPort(again) > 0);
    again.kill("SIGTERM");
    assertStrictEquals((await again.status).code, 0);
    await again.stderr.cancel().catch(() => {});
  },
);

Deno.test(
  { name: "cluster: an instance whose id another process takes later goes degraded and says so", ignore },
  async () => {
    await using t = await bed(["held"]);
    const [held] = t.servers as [P2PServer];
    const link = await rawLink(t.redis.url);
    try {
      // Another process claims the id (as if it found the entry expired during a long pause here).
      await link.exec([[
        "SET",
        "{test:}instance:held",
        JSON.stringify({ address: "10.0.0.9:1", started: 1, token: "x" }),
      ]]);
      await waitUntil(() => held.getStats().cluster?.state === "degraded", "held degraded", PEER_TTL * 2000);
      const health = await (await held.fetch(new Request("http://x/health"))).json();
      assertStrictEquals(health.status, "degraded");
      assert(
        /^Instance id "held" is in use by another process/.test(health.cluster.last_error),
        health.cluster.last_error,
      );
      // The other process goes away: this one claims its id again and rejoins.
      await link.exec([["DEL", "{test:}instance:held"]]);
      await waitUntil(
        () => held.getStats().cluster?.state === "ok",
        "held back in the cluster",
        PEER_TTL * 3000,
      );
    } finally {
      await link.close();
    }
  },
);

Deno.test(
  { name: "cluster: scripts go out by EVALSHA; after SCRIPT FLUSH they are sent again", ignore },
  async () => {
    await using t = await bed(["a", "b"]);
    const [a, b] = t.servers as [P2PServer, P2PServer];
    const link = await rawLink(t.redis.url);
    try {
      const stats = async () => {
        const [text] = await link.exec([["INFO", "commandstats"]]);
        const calls = (name: string) =>
          Number(new RegExp(`cmdstat_${name}:calls=(\\d+)`).exec(String(text))?.[1] ?? 0);
        return { evalsha: calls("evalsha"), eval: calls("eval") };
      };
      const x = await t.client(a);
      const y = await t.client(b);
      await discovers(x, [x.node.id, y.node.id], "both peers");
      const before = await stats();
      assert(before.evalsha > 0, JSON.stringify(before));
      await link.exec([["SCRIPT", "FLUSH"]]);
      const z = await t.client(b);
      await discovers(x, [x.node.id, y.node.id, z.node.id], "a peer joined after the flush");
      const after = await stats();
      assert(after.eval > before.eval, `the script was sent again: ${JSON.stringify([before, after])}`);
      assertEquals(a.getStats().cluster?.state, "ok");
    } finally {
      await link.close();
    }
  },
);

Deno.test(
  { name: "cluster: a peer's measured NAT reaches the other instances' discovery entries", ignore },
  async () => {
    const redis = (await startRedis())!;
    const servers: P2PServer[] = [];
    const clients: P2PClient[] = [];
    try {
      for (const instanceId of ["a", "b"]) {
        const server = new P2PServer({
          listenAddress: "127.0.0.1:0",
          enableDiscovery: false,
          statsInterval: 0,
          natLifetimeGapsMs: [200, 400],
          cluster: { redisUrl: redis.url, instanceId, peerTtl: 30, keyPrefix: "test:" },
        });
        servers.push(server);
        await server.listen();
        await waitUntil(
          () => server.getStats().cluster?.state === "ok",
          `instance ${instanceId} in the cluster`,
        );
      }
      const [a, b] = servers as [P2PServer, P2PServer];
      const client = (s: P2PServer, measure: boolean) => {
        const c = new P2PClient({
          server: `127.0.0.1:${s.addr.port}`,
          bind: "127.0.0.1:0",
          name: "n",
          measureBindingLifetime: measure,
        });
        clients.push(c);
        return c;
      };
      const x = client(a, false);
      const y = client(b, false);
      await x.connect();
      await y.connect();
      await discovers(y, [x.node.id, y.node.id], "both peers");
      const before = (await y.discover()).find((p) => p.id === x.node.id)!;
      assertStrictEquals(before.nat, undefined, "nothing is known of x's NAT yet");
      // x's binding lifetime is measured on a (its entry is written again then, well before the 10 s renewal).
      assertEquals((await x.measureBindingLifetime()).bindingLifetimeMs, 400);
      await waitUntil(async () => {
        const entry = (await y.discover()).find((p) => p.id === x.node.id);
        return entry?.nat?.binding_lifetime_ms === 400;
      }, "x's nat in b's discovery entry");
    } finally {
      for (const c of clients) await c.close().catch(() => {});
      for (const s of servers) await s.close();
      await redis.stop();
    }
  },
);
