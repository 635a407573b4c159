/**
 * What cluster mode costs: the same handshake load against one server alone and against one server in a
 * cluster, each in its own process with the load generator in a third. The cluster runs on real Redis started
 * here on loopback: one plain `redis-server`, the same over TLS (a throwaway CA made with `openssl`, client
 * certificates required), and a Redis Cluster of three masters; a row is skipped, with the reason printed,
 * where a binary it needs is missing. Reports handshakes/s, Redis round trips and commands per handshake (the
 * directory writes are batched), the server's and Redis's CPU per handshake, Redis memory per peer, and, on
 * the plain server, the steady refresh cost and the mirror's heap on another instance. Bounded in time.
 *
 *     deno run -A bench/cluster_cost.ts [--peers N] [--quick]
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import { openRedisLink, type RedisLink, type RedisTlsOptions } from "../src/deps/redis.ts";
import { type RedisServer, startRedis } from "../tests/helpers/redis_server.ts";
import {
  CLUSTER_SKIP_REASON,
  makeTls,
  startRedisCluster,
  TLS_SKIP_REASON,
} from "../tests/helpers/redis_topology.ts";
import { processCpuMs } from "./proc_stat.ts";
import { V8_FLAGS } from "../tools/compile.ts";

const { values } = parseArgs({
  args: Deno.args,
  options: { peers: { type: "string" }, quick: { type: "boolean", default: false } },
});
const PEERS = Number(values.peers ?? (values.quick ? 2_000 : 20_000));
const here = new URL(".", import.meta.url).pathname;
const deno = Deno.execPath();

const redis = await startRedis();
if (!redis) {
  console.log("cluster cost: skipped, redis-server is not installed");
  Deno.exit(0);
}

/** Plain links to every node of a Redis deployment, to read INFO from each. */
class Nodes {
  readonly #links: RedisLink[];
  constructor(links: RedisLink[]) {
    this.#links = links;
  }

  static async open(urls: string[], tls: RedisTlsOptions = {}): Promise<Nodes> {
    const links = await Promise.all(urls.map(async (url) => {
      const { promise, resolve } = Promise.withResolvers<void>();
      const link = openRedisLink(url, { onReady: resolve, onDown: () => {}, onMessage: () => {} }, { tls });
      await promise;
      return link;
    }));
    return new Nodes(links);
  }

  /** One INFO section of every node, as fields. */
  async info(section: string): Promise<Record<string, string>[]> {
    return await Promise.all(this.#links.map(async (link) => {
      const [text] = await link.exec([["INFO", section]]);
      const out: Record<string, string> = {};
      for (const line of String(text).split("\r\n")) {
        const i = line.indexOf(":");
        if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
      }
      return out;
    }));
  }

  /** Redis's CPU time, summed over the nodes. */
  async cpuMs(): Promise<number> {
    const cpu = await this.info("cpu");
    return cpu.reduce((sum, c) => sum + (Number(c.used_cpu_user) + Number(c.used_cpu_sys)) * 1000, 0);
  }

  /** Redis's memory in use, summed over the nodes. */
  async memory(): Promise<number> {
    return (await this.info("memory")).reduce((sum, m) => sum + Number(m.used_memory), 0);
  }

  async close(): Promise<void> {
    await Promise.all(this.#links.map((link) => link.close()));
  }
}

interface Server {
  child: Deno.ChildProcess;
  port: number;
  ask(command: string): Promise<string>;
  stop(): Promise<void>;
}

async function startServer(config: Record<string, unknown>): Promise<Server> {
  const child = new Deno.Command(deno, {
    args: [
      "run",
      "-A",
      `--v8-flags=${[...V8_FLAGS, "--expose-gc"].join(",")}`,
      `${here}server_proc.ts`,
      JSON.stringify(config),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const writer = child.stdin.getWriter();
  let buffer = "";
  const line = async () => {
    for (;;) {
      const nl = buffer.indexOf("\n");
      if (nl >= 0) {
        const l = buffer.slice(0, nl);
        buffer = buffer.slice(nl + 1);
        return l;
      }
      const { value, done } = await lines.read();
      if (done) throw new Error("server ended");
      buffer += value;
    }
  };
  const port = Number(await line());
  return {
    child,
    port,
    async ask(command) {
      await writer.write(new TextEncoder().encode(`${command}\n`));
      return await line();
    },
    async stop() {
      await writer.close().catch(() => {});
      child.kill("SIGTERM");
      await lines.cancel().catch(() => {});
      await child.status;
    },
  };
}

async function handshakes(
  port: number,
): Promise<{ rate: number; ops: number; p99Ms: number }> {
  const out = await new Deno.Command(deno, {
    args: [
      "run",
      "-A",
      `${here}loadgen.ts`,
      "handshake",
      "--port",
      `${port}`,
      "--peers",
      `${PEERS}`,
      "--concurrency",
      "32",
      "--seconds",
      values.quick ? "10" : "40",
    ],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  return JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").pop()!);
}

const UNLIMITED = [100_000_000, 100_000_000];
const BASE = {
  maxConnections: 500_000,
  connectionTimeout: 3600,
  heartbeatInterval: 3600,
  identityFile: null,
  statsInterval: 0,
  rateLimitDatagramsPerNode: UNLIMITED,
  rateLimitDatagramsGlobal: UNLIMITED,
};

const rows: string[][] = [];

/** Runs the handshakes against a server and measures its CPU over them. */
async function measured(server: Server) {
  const cpuBefore = processCpuMs(server.child.pid);
  const r = await handshakes(server.port);
  const cpuAfter = processCpuMs(server.child.pid);
  const serverCpu = cpuBefore === null || cpuAfter === null
    ? ""
    : `${((cpuAfter - cpuBefore) / (r.ops / 1000)).toFixed(0)} ms per 1,000`;
  return { ...r, serverCpu };
}

/** Waits (bounded) until the server's cluster state is "ok". */
async function joined(server: Server): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (JSON.parse(await server.ask("stats")).cluster?.state === "ok") return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error("the bench instance did not join its cluster within 20 s");
}

/**
 * The same server in a cluster on `redisUrl` (peer_ttl 30 s: the refresh runs every 10 s): one row; returns
 * the server still running, for the rows that follow on the plain server.
 */
async function clusterRow(
  label: string,
  nodes: Nodes,
  cluster: Record<string, unknown>,
): Promise<{ server: Server; ops: number }> {
  const cpuBefore = await nodes.cpuMs();
  const memBefore = await nodes.memory();
  const server = await startServer({
    ...BASE,
    cluster: { instanceId: "bench", peerTtl: 30, keyPrefix: "bench:", ...cluster },
  });
  await joined(server);
  const before = JSON.parse(await server.ask("stats")).cluster;
  const r = await measured(server);
  await new Promise((r) => setTimeout(r, 500)); // the last batch written
  const after = JSON.parse(await server.ask("stats")).cluster;
  const cpuAfter = await nodes.cpuMs();
  const mem = await nodes.memory();
  const trips = after.roundTrips - before.roundTrips;
  const commands = after.commands - before.commands;
  rows.push([
    label,
    fmt(r.rate),
    `${r.p99Ms.toFixed(1)}`,
    `${trips} (${(trips / r.ops).toFixed(3)}/handshake)`,
    `${commands}`,
    `${((cpuAfter - cpuBefore) / (r.ops / 1000)).toFixed(1)} ms per 1,000`,
    r.serverCpu,
    `${fmt((mem - memBefore) / r.ops)} B/peer`,
  ]);
  console.error(`${label}: peers written: ${after.directoryWrites}`);
  return { server, ops: r.ops };
}

// 1. One server alone.
{
  const server = await startServer(BASE);
  const r = await measured(server);
  await server.stop();
  rows.push(["alone", fmt(r.rate), `${r.p99Ms.toFixed(1)}`, "", "", "", r.serverCpu, ""]);
}
// 2. The same server in a cluster on one plain redis-server, then its steady cost and the mirror's.
{
  const nodes = await Nodes.open([redis.url]);
  const { server, ops } = await clusterRow("in a cluster", nodes, { redisUrl: redis.url });
  // The steady cost: one refresh of every peer (every third of peer_ttl).
  const t0 = JSON.parse(await server.ask("stats")).cluster;
  const c0 = await nodes.cpuMs();
  await new Promise((r) => setTimeout(r, 10_500));
  const t1 = JSON.parse(await server.ask("stats")).cluster;
  const c1 = await nodes.cpuMs();
  rows.push([
    "refresh (one 10 s period, idle peers)",
    "",
    "",
    `${t1.roundTrips - t0.roundTrips}`,
    `${t1.commands - t0.commands}`,
    `${(c1 - c0).toFixed(0)} ms`,
    "",
    "",
  ]);
  // What the other instances hold: the mirror of these peers, in a second instance's heap (after a full GC),
  // against the same instance on an empty directory.
  const heap = async (keyPrefix: string) => {
    const other = await startServer({
      ...BASE,
      cluster: { redisUrl: redis.url, instanceId: `mirror-${keyPrefix.length}`, peerTtl: 30, keyPrefix },
    });
    let seen = 0;
    for (let i = 0; i < 100 && seen < (keyPrefix === "bench:" ? ops : 0); i++) {
      await new Promise((r) => setTimeout(r, 100));
      seen = JSON.parse(await other.ask("stats")).cluster.remotePeers;
    }
    const used = JSON.parse(await other.ask("mem")).heapUsed as number;
    await other.stop();
    return { used, seen };
  };
  const empty = await heap("empty:");
  const full = await heap("bench:");
  rows.push([
    `mirror on another instance (${full.seen} peers)`,
    "",
    "",
    "",
    "",
    "",
    "",
    `${fmt((full.used - empty.used) / Math.max(1, full.seen))} B/peer of heap`,
  ]);
  await server.stop();
  await nodes.close();
}
await redis.stop();
// 3. The same over TLS: a TLS-only redis-server requiring client certificates.
if (TLS_SKIP_REASON !== null) console.log(`cluster cost over TLS: skipped, ${TLS_SKIP_REASON}`);
else {
  await using tls = await makeTls();
  let server: RedisServer | null = null;
  try {
    server = await startRedis({ tls: { ...tls.server, clientAuth: true } });
    const files = { caFile: tls.ca, certFile: tls.clientCert, keyFile: tls.clientKey };
    const nodes = await Nodes.open([server!.url], files);
    const { server: instance } = await clusterRow("in a cluster, TLS (rediss, client certificate)", nodes, {
      redisUrl: server!.url,
      tlsCaFile: tls.ca,
      tlsCertFile: tls.clientCert,
      tlsKeyFile: tls.clientKey,
    });
    await instance.stop();
    await nodes.close();
  } finally {
    await server?.stop();
  }
}
// 4. The same on a Redis Cluster of three masters (no replicas: they do not serve this load).
if (CLUSTER_SKIP_REASON !== null) {
  console.log(`cluster cost on Redis Cluster: skipped, ${CLUSTER_SKIP_REASON}`);
} else {
  await using bed = await startRedisCluster({ masters: 3 });
  const nodes = await Nodes.open(bed.nodes.map((n) => n.url));
  const { server } = await clusterRow("in a cluster, Redis Cluster (3 masters)", nodes, {
    redisUrl: bed.url,
    redisCluster: true,
  });
  await server.stop();
  await nodes.close();
}

function fmt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

const head = [
  "run",
  "handshakes/s",
  "p99 ms",
  "Redis round trips",
  "commands",
  "Redis CPU",
  "server CPU",
  "memory",
];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
console.log(`cluster cost, ${PEERS} distinct peers, 32 concurrent handshakes`);
console.log(line(head));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const r of rows) console.log(line(r));
