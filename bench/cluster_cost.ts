/**
 * What cluster mode costs: the same handshake load against one server alone and against one server in a
 * cluster (a real `redis-server` on loopback, started here), each in its own process with the load generator
 * in a third. Reports handshakes/s, Redis round trips and commands per handshake (the directory writes are
 * batched), Redis's own CPU time and memory per peer, and the steady refresh cost. Bounded in time.
 *
 *     deno run -A bench/cluster_cost.ts [--peers N] [--quick]
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import { openRedisLink } from "../src/deps/redis.ts";
import { startRedis } from "../tests/helpers/redis_server.ts";

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

const { promise: ready, resolve: linkUp } = Promise.withResolvers<void>();
const link = openRedisLink(redis.url, { onReady: linkUp, onDown: () => {}, onMessage: () => {} });
await ready;

async function info(section: string): Promise<Record<string, string>> {
  const [text] = await link.exec([["INFO", section]]);
  const out: Record<string, string> = {};
  for (const line of String(text).split("\r\n")) {
    const i = line.indexOf(":");
    if (i > 0) out[line.slice(0, i)] = line.slice(i + 1);
  }
  return out;
}

const redisCpuMs = async () => {
  const cpu = await info("cpu");
  return (Number(cpu.used_cpu_user) + Number(cpu.used_cpu_sys)) * 1000;
};

interface Server {
  child: Deno.ChildProcess;
  port: number;
  ask(command: string): Promise<string>;
  stop(): Promise<void>;
}

async function startServer(config: Record<string, unknown>): Promise<Server> {
  const child = new Deno.Command(deno, {
    args: ["run", "-A", "--v8-flags=--expose-gc", `${here}server_proc.ts`, JSON.stringify(config)],
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
): Promise<{ rate: number; ops: number; p99Ms: number; cpuMs: number }> {
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
// 1. One server alone.
{
  const server = await startServer(BASE);
  const r = await handshakes(server.port);
  await server.stop();
  rows.push(["alone", fmt(r.rate), `${r.p99Ms.toFixed(1)}`, "", "", "", ""]);
}
// 2. The same server in a cluster (peer_ttl 30 s: the refresh runs every 10 s).
{
  const cpuBefore = await redisCpuMs();
  const memBefore = Number((await info("memory")).used_memory);
  const server = await startServer({
    ...BASE,
    cluster: { redisUrl: redis.url, instanceId: "bench", peerTtl: 30, keyPrefix: "bench:" },
  });
  await new Promise((r) => setTimeout(r, 500)); // joined
  const before = JSON.parse(await server.ask("stats")).cluster;
  const r = await handshakes(server.port);
  await new Promise((r) => setTimeout(r, 500)); // the last batch written
  const after = JSON.parse(await server.ask("stats")).cluster;
  const cpuAfter = await redisCpuMs();
  const mem = await info("memory");
  const keys = await info("keyspace");
  const trips = after.roundTrips - before.roundTrips;
  const commands = after.commands - before.commands;
  rows.push([
    "in a cluster",
    fmt(r.rate),
    `${r.p99Ms.toFixed(1)}`,
    `${trips} (${(trips / r.ops).toFixed(3)}/handshake)`,
    `${commands}`,
    `${((cpuAfter - cpuBefore) / (r.ops / 1000)).toFixed(1)} ms per 1,000`,
    `${fmt((Number(mem.used_memory) - memBefore) / r.ops)} B/peer`,
  ]);
  console.error(`redis keyspace: ${JSON.stringify(keys)}; peers written: ${after.directoryWrites}`);
  // The steady cost: one refresh of every peer (every third of peer_ttl).
  const t0 = JSON.parse(await server.ask("stats")).cluster;
  const c0 = await redisCpuMs();
  await new Promise((r) => setTimeout(r, 10_500));
  const t1 = JSON.parse(await server.ask("stats")).cluster;
  const c1 = await redisCpuMs();
  rows.push([
    "refresh (one 10 s period, idle peers)",
    "",
    "",
    `${t1.roundTrips - t0.roundTrips}`,
    `${t1.commands - t0.commands}`,
    `${(c1 - c0).toFixed(0)} ms`,
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
    for (let i = 0; i < 100 && seen < (keyPrefix === "bench:" ? r.ops : 0); i++) {
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
    `${fmt((full.used - empty.used) / Math.max(1, full.seen))} B/peer of heap`,
  ]);
  await server.stop();
}
await link.close();
await redis.stop();

function fmt(n: number): string {
  return Math.round(n).toLocaleString("en-US");
}

const head = ["run", "handshakes/s", "p99 ms", "Redis round trips", "commands", "Redis CPU", "memory"];
const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
const line = (cells: string[]) => `| ${cells.map((c, i) => c.padEnd(widths[i]!)).join(" | ")} |`;
console.log(`cluster cost, ${PEERS} distinct peers, 32 concurrent handshakes`);
console.log(line(head));
console.log(line(widths.map((w) => "-".repeat(w))));
for (const r of rows) console.log(line(r));
