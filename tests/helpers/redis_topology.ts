/**
 * Production-shaped Redis for tests, built from real `redis-server` processes on 127.0.0.1 free ports: TLS
 * certificates made with `openssl`, a Redis Cluster (masters and replicas, created with `redis-cli --cluster
 * create`), and Sentinel (a master, a replica and three `redis-sentinel`s). Everything is stopped and its
 * directories removed on dispose. Each kind names why it cannot run ({@linkcode TLS_SKIP_REASON}, ...).
 *
 * @module
 */
import {
  freeTcpPort,
  REDIS_SERVER_PATH,
  REDIS_SKIP_REASON,
  RedisProcess,
  type RedisTlsFiles,
  type StartRedisOptions,
} from "./redis_server.ts";

function findBinary(name: string): string | null {
  for (const dir of ["/usr/bin", "/usr/sbin", "/usr/local/bin"]) {
    try {
      if (Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return null;
}

const OPENSSL = findBinary("openssl");
const REDIS_CLI = findBinary("redis-cli");
const REDIS_SENTINEL = findBinary("redis-sentinel");

/** Whether this redis-server was built with TLS (Debian's is). */
function serverHasTls(): boolean {
  if (REDIS_SERVER_PATH === null) return false;
  const out = new Deno.Command(REDIS_SERVER_PATH, {
    args: ["--port", "0", "--tls-port", "0"],
    stdout: "piped",
    stderr: "piped",
  }).outputSync();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  return !/not supported|Bad directive|unrecognized/i.test(text);
}

/** Why the TLS tests are skipped, or null. */
export const TLS_SKIP_REASON: string | null = REDIS_SKIP_REASON ??
  (OPENSSL === null
    ? "openssl is not installed: `apt-get install openssl`"
    : !serverHasTls()
    ? "this redis-server was built without TLS"
    : null);

/** Why the Redis Cluster tests are skipped, or null. */
export const CLUSTER_SKIP_REASON: string | null = REDIS_SKIP_REASON ??
  (REDIS_CLI === null ? "redis-cli is not installed: `apt-get install redis-tools`" : null);

/** Why the Sentinel tests are skipped, or null. */
export const SENTINEL_SKIP_REASON: string | null = REDIS_SKIP_REASON ??
  (REDIS_SENTINEL === null ? "redis-sentinel is not installed: `apt-get install redis-sentinel`" : null);

async function run(binary: string, args: string[], what: string): Promise<string> {
  const out = await new Deno.Command(binary, { args, stdin: "null", stdout: "piped", stderr: "piped" })
    .output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  if (!out.success) throw new Error(`${what} failed (${binary} ${args.join(" ")}):\n${text}`);
  return text;
}

/** The TLS files of the nodes started here with TLS, by port: `redisCli` speaks TLS to them. */
const TLS_BY_PORT = new Map<number, RedisTlsFiles>();

/** redis-cli's TLS arguments (with the files' client certificate) for a node started with `tls`. */
function cliTls(tls: RedisTlsFiles | undefined): string[] {
  return tls ? ["--tls", "--cacert", tls.ca, "--cert", tls.cert, "--key", tls.key] : [];
}

/** Runs `redis-cli -p <port> <args>` (over TLS for a node started here with TLS) and returns its output. */
export function redisCli(port: number, ...args: string[]): Promise<string> {
  return run(
    REDIS_CLI!,
    [...cliTls(TLS_BY_PORT.get(port)), "-h", "127.0.0.1", "-p", String(port), ...args],
    "redis-cli",
  );
}

/** A test CA, a server certificate for 127.0.0.1/localhost, a client certificate, and an unrelated CA. */
export interface TlsSet extends AsyncDisposable {
  dir: string;
  /** The files a server started with this set uses (server cert and key, trusting `ca`). */
  server: RedisTlsFiles;
  ca: string;
  clientCert: string;
  clientKey: string;
  /** A CA that signed nothing here. */
  otherCa: string;
}

/** Makes a fresh CA and certificates with `openssl` in a temporary directory. */
export async function makeTls(): Promise<TlsSet> {
  const dir = await Deno.makeTempDir({ prefix: "p2p_server_tls_" });
  const f = (name: string) => `${dir}/${name}`;
  const ssl = (...args: string[]) => run(OPENSSL!, args, "openssl");
  const ca = async (name: string) => {
    await ssl(
      "req",
      "-x509",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-days",
      "2",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      f(`${name}.key`),
      "-out",
      f(`${name}.crt`),
    );
  };
  await ca("test-ca");
  await ca("other-ca");
  const leaf = async (name: string, ext: string) => {
    await Deno.writeTextFile(f(`${name}.ext`), ext);
    await ssl(
      "req",
      "-newkey",
      "rsa:2048",
      "-nodes",
      "-subj",
      `/CN=${name}`,
      "-keyout",
      f(`${name}.key`),
      "-out",
      f(`${name}.csr`),
    );
    await ssl(
      "x509",
      "-req",
      "-in",
      f(`${name}.csr`),
      "-CA",
      f("test-ca.crt"),
      "-CAkey",
      f("test-ca.key"),
      "-CAcreateserial",
      "-days",
      "2",
      "-extfile",
      f(`${name}.ext`),
      "-out",
      f(`${name}.crt`),
    );
  };
  await leaf(
    "server",
    "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:redis.test\nextendedKeyUsage=serverAuth,clientAuth\n",
  );
  await leaf("client", "extendedKeyUsage=clientAuth\n");
  return {
    dir,
    server: { ca: f("test-ca.crt"), cert: f("server.crt"), key: f("server.key") },
    ca: f("test-ca.crt"),
    clientCert: f("client.crt"),
    clientKey: f("client.key"),
    otherCa: f("other-ca.crt"),
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  };
}

/** Starts one redis-server (or sentinel) on a free port in its own directory. */
async function startNode(options: StartRedisOptions & { binary?: string }): Promise<RedisProcess> {
  let last: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = await Deno.makeTempDir({ prefix: "p2p_server_redis_" });
    const node = new RedisProcess(options.binary ?? REDIS_SERVER_PATH!, dir, freeTcpPort(), options);
    try {
      await node.start();
      if (options.tls) TLS_BY_PORT.set(node.port, options.tls);
      return node;
    } catch (error) {
      last = error;
      await node.stop();
    }
  }
  throw last;
}

/** A Redis Cluster on loopback. */
export interface RedisClusterBed extends AsyncDisposable {
  nodes: RedisProcess[];
  /** `redis://127.0.0.1:<port>,...` naming every node as a seed (`rediss://` with `tls`). */
  url: string;
  /** The port of the master that serves the slot of `key` now. */
  masterOf(key: string): Promise<number>;
  /** Waits until every live node reports `cluster_state:ok` and `key`'s slot has a master on a live node. */
  healthy(key: string, deadlineMs?: number): Promise<void>;
}

/**
 * Creates a Redis Cluster of `masters` masters with `replicas` replicas each (node timeout `nodeTimeoutMs`,
 * so a failover takes about twice that). With `tls`, every node serves TLS only, on the cluster bus too.
 */
export async function startRedisCluster(
  options: { masters?: number; replicas?: number; nodeTimeoutMs?: number; tls?: RedisTlsFiles } = {},
): Promise<RedisClusterBed> {
  const masters = options.masters ?? 3;
  const replicas = options.replicas ?? 0;
  const nodes: RedisProcess[] = [];
  const bed: RedisClusterBed = {
    nodes,
    url: "",
    async masterOf(key) {
      const live = nodes.filter((n) => n.running);
      for (const n of live) {
        try {
          const slot = Number((await redisCli(n.port, "CLUSTER", "KEYSLOT", key)).trim());
          const slots = await redisCli(n.port, "CLUSTER", "NODES");
          for (const line of slots.split("\n")) {
            const parts = line.split(" ");
            if (!parts[2]?.includes("master") || parts[2].includes("fail")) continue;
            for (const range of parts.slice(8)) {
              const [a, b] = range.split("-").map(Number);
              if (slot >= a! && slot <= (b ?? a)!) return Number(parts[1]!.split(":")[1]!.split("@")[0]);
            }
          }
        } catch {
          // try another node
        }
      }
      throw new Error(`no master serves the slot of "${key}"`);
    },
    async healthy(key, deadlineMs = 20_000) {
      const end = performance.now() + deadlineMs;
      let why = "";
      while (performance.now() < end) {
        try {
          const live = nodes.filter((n) => n.running);
          const states = await Promise.all(live.map((n) => redisCli(n.port, "CLUSTER", "INFO")));
          const master = await bed.masterOf(key);
          if (states.every((s) => s.includes("cluster_state:ok")) && live.some((n) => n.port === master)) {
            return;
          }
          why = "cluster_state not ok everywhere";
        } catch (error) {
          why = (error as Error).message;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error(`the Redis Cluster did not become healthy within ${deadlineMs} ms: ${why}`);
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.map((n) => n.stop()));
      for (const n of nodes) TLS_BY_PORT.delete(n.port);
    },
  };
  try {
    for (let i = 0; i < masters * (1 + replicas); i++) {
      nodes.push(
        await startNode({
          ...(options.tls ? { tls: options.tls } : {}),
          args: [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            String(options.nodeTimeoutMs ?? 1000),
            "--cluster-replica-validity-factor",
            "0",
          ],
        }),
      );
    }
    await run(REDIS_CLI!, [
      ...cliTls(options.tls),
      "--cluster",
      "create",
      ...nodes.map((n) => `127.0.0.1:${n.port}`),
      "--cluster-replicas",
      String(replicas),
      "--cluster-yes",
    ], "redis-cli --cluster create");
    bed.url = `${options.tls ? "rediss" : "redis"}://${nodes.map((n) => `127.0.0.1:${n.port}`).join(",")}`;
    // Every node must know the whole layout before clients come.
    const end = performance.now() + 20_000;
    for (;;) {
      const infos = await Promise.all(nodes.map((n) => redisCli(n.port, "CLUSTER", "INFO")));
      if (
        infos.every((s) =>
          s.includes("cluster_state:ok") && s.includes(`cluster_known_nodes:${nodes.length}`)
        )
      ) break;
      if (performance.now() > end) throw new Error(`the new Redis Cluster is not ok:\n${infos.join("\n")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  } catch (error) {
    await bed[Symbol.asyncDispose]();
    throw error;
  }
  return bed;
}

/** A master, a replica and three sentinels watching them as `mymaster`. */
export interface SentinelBed extends AsyncDisposable {
  master: RedisProcess;
  replica: RedisProcess;
  sentinels: RedisProcess[];
  /** `redis-sentinel://127.0.0.1:<s1>,127.0.0.1:<s2>,127.0.0.1:<s3>/mymaster` (`rediss-sentinel://` with `tls`). */
  url: string;
  downAfterMs: number;
  failoverTimeoutMs: number;
  /** The master's port as the sentinels report it now. */
  currentMaster(): Promise<number>;
}

/** The master name the sentinels watch. */
export const SENTINEL_MASTER = "mymaster";

/**
 * Starts a master, its replica and three sentinels (quorum 2) with short failure detection. With `tls`, all
 * five serve TLS only, and replication and the sentinels' own connections speak TLS too.
 */
export async function startSentinels(
  options: { downAfterMs?: number; failoverTimeoutMs?: number; tls?: RedisTlsFiles } = {},
): Promise<SentinelBed> {
  const downAfterMs = options.downAfterMs ?? 1000;
  const failoverTimeoutMs = options.failoverTimeoutMs ?? 5000;
  const started: RedisProcess[] = [];
  const confDir = await Deno.makeTempDir({ prefix: "p2p_server_sentinel_" });
  const tls = options.tls ? { tls: options.tls } : {};
  const dispose = async () => {
    await Promise.all(started.map((n) => n.stop()));
    for (const n of started) TLS_BY_PORT.delete(n.port);
    await Deno.remove(confDir, { recursive: true }).catch(() => {});
  };
  try {
    const master = await startNode({ ...tls });
    started.push(master);
    const replica = await startNode({ ...tls, args: ["--replicaof", "127.0.0.1", String(master.port)] });
    started.push(replica);
    const sentinels: RedisProcess[] = [];
    for (let i = 0; i < 3; i++) {
      const conf = `${confDir}/sentinel-${i}.conf`;
      await Deno.writeTextFile(
        conf,
        [
          `sentinel monitor ${SENTINEL_MASTER} 127.0.0.1 ${master.port} 2`,
          `sentinel down-after-milliseconds ${SENTINEL_MASTER} ${downAfterMs}`,
          `sentinel failover-timeout ${SENTINEL_MASTER} ${failoverTimeoutMs}`,
          `sentinel parallel-syncs ${SENTINEL_MASTER} 1`,
          "",
        ].join("\n"),
      );
      const s = await startNode({ ...tls, binary: REDIS_SENTINEL!, configFile: conf, args: ["--sentinel"] });
      started.push(s);
      sentinels.push(s);
    }
    const bed: SentinelBed = {
      master,
      replica,
      sentinels,
      url: `${options.tls ? "rediss" : "redis"}-sentinel://${
        sentinels.map((s) => `127.0.0.1:${s.port}`).join(",")
      }/${SENTINEL_MASTER}`,
      downAfterMs,
      failoverTimeoutMs,
      async currentMaster() {
        for (const s of sentinels.filter((x) => x.running)) {
          try {
            const out = await redisCli(s.port, "SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER);
            return Number(out.trim().split("\n")[1]);
          } catch {
            // ask another
          }
        }
        throw new Error("no sentinel answers");
      },
      [Symbol.asyncDispose]: dispose,
    };
    // The sentinels must know the replica and each other before a failover can happen.
    const end = performance.now() + 20_000;
    for (;;) {
      const out = await Promise.all(
        sentinels.map((s) => redisCli(s.port, "SENTINEL", "master", SENTINEL_MASTER)),
      );
      const ok = out.every((text) => {
        const lines = text.trim().split("\n");
        const field = (name: string) => lines[lines.indexOf(name) + 1];
        return field("num-slaves") === "1" && field("num-other-sentinels") === "2";
      });
      if (ok) break;
      if (performance.now() > end) {
        throw new Error(`the sentinels did not find each other:\n${out.join("\n")}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    return bed;
  } catch (error) {
    await dispose();
    throw error;
  }
}
