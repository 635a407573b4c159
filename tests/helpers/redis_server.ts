/**
 * A real `redis-server` for tests: started on 127.0.0.1 on a free port with no persistence, in its own temp
 * directory, and stopped (or killed, or restarted on the same port with empty data) by the test. Tests that
 * need it skip when `redis-server` is not installed:
 *
 * ```ts ignore
 * Deno.test({ name: "...", ignore: REDIS_SKIP_REASON !== null }, async () => {
 *   await using redis = (await startRedis())!; // non-null when not ignored
 *   const link = openRedisLink(redis.url, events);
 *   // ... redis.kill(), redis.restart(), and the server is stopped when the test ends
 * });
 * ```
 *
 * @module
 */

/** A running `redis-server`. */
export interface RedisServer extends AsyncDisposable {
  /** `redis://127.0.0.1:<port>`, without credentials (also when a password is set). */
  readonly url: string;
  readonly port: number;
  /** The password it requires, if started with one. */
  readonly password: string | undefined;
  /** SIGTERM, then waits for the process to exit and removes its directory. Idempotent. */
  stop(): Promise<void>;
  /** SIGKILL (an abrupt outage: connections are reset), then waits for the process to exit. */
  kill(): Promise<void>;
  /** Starts it again on the same port, with empty data (stopping it first if it still runs). */
  restart(): Promise<void>;
}

/** Files of a TLS server: its certificate and key, and the CA its clients (and the ping here) trust. */
export interface RedisTlsFiles {
  ca: string;
  cert: string;
  key: string;
  /** Require client certificates signed by `ca` (mutual TLS). */
  clientAuth?: boolean;
}

/** Options of {@linkcode startRedis}. */
export interface StartRedisOptions {
  /** Makes the server require this password (`requirepass`). */
  password?: string;
  /** Serve TLS only (`--tls-port`, no plain port): `url` is then `rediss://127.0.0.1:<port>`. */
  tls?: RedisTlsFiles;
  /** More arguments for the server (`--cluster-enabled yes`, `--replicaof ...`). */
  args?: string[];
  /** A config file, given first (a sentinel needs one it can rewrite). */
  configFile?: string;
}

const CANDIDATE_DIRS = ["/usr/bin", "/usr/sbin", "/usr/local/bin"];
/** How long a starting server may take to answer PING on a small shared machine. */
const START_DEADLINE_MS = 15_000;

function isExecutable(path: string): boolean {
  try {
    const info = Deno.statSync(path);
    return info.isFile && (info.mode === null || (info.mode & 0o111) !== 0);
  } catch {
    return false;
  }
}

/** `REDIS_SERVER_BIN` names the binary to use instead of searching (a missing one skips the tests). */
function findRedisServer(): string | null {
  let dirs = CANDIDATE_DIRS;
  try {
    const named = Deno.env.get("REDIS_SERVER_BIN");
    if (named !== undefined) return isExecutable(named) ? named : null;
    dirs = [...(Deno.env.get("PATH") ?? "").split(":").filter((d) => d !== ""), ...CANDIDATE_DIRS];
  } catch {
    // No --allow-env: the usual directories only.
  }
  for (const dir of dirs) {
    const path = `${dir}/redis-server`;
    if (isExecutable(path)) return path;
  }
  return null;
}

/** The `redis-server` binary used, or null when none is installed. */
export const REDIS_SERVER_PATH: string | null = findRedisServer();

/** Why Redis tests are skipped, or null when `redis-server` is available. */
export const REDIS_SKIP_REASON: string | null = REDIS_SERVER_PATH === null
  ? "redis-server is not installed (looked in REDIS_SERVER_BIN, or PATH, /usr/bin, /usr/sbin): `apt-get install redis-server`"
  : null;

/** A TCP port that was free a moment ago on 127.0.0.1. */
export function freeTcpPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0, transport: "tcp" });
  const { port } = listener.addr;
  listener.close();
  return port;
}

/** True when something on the port answers a RESP PING (PONG, or NOAUTH from a password-protected server). */
async function answersPing(port: number): Promise<boolean> {
  let conn: Deno.TcpConn | undefined;
  try {
    conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(new TextEncoder().encode("*1\r\n$4\r\nPING\r\n"));
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    const reply = new TextDecoder().decode(buf.subarray(0, n ?? 0));
    return reply.startsWith("+PONG") || reply.startsWith("-NOAUTH");
  } catch {
    return false;
  } finally {
    conn?.close();
  }
}

/** True when a TLS server on the port answers a RESP PING (over TLS, trusting `ca`). */
async function answersTlsPing(port: number, tls: RedisTlsFiles): Promise<boolean> {
  let conn: Deno.TlsConn | undefined;
  try {
    conn = await Deno.connectTls({
      hostname: "127.0.0.1",
      port,
      caCerts: [await Deno.readTextFile(tls.ca)],
      ...(tls.clientAuth
        ? { cert: await Deno.readTextFile(tls.cert), key: await Deno.readTextFile(tls.key) }
        : {}),
    });
    await conn.write(new TextEncoder().encode("*1\r\n$4\r\nPING\r\n"));
    const buf = new Uint8Array(64);
    const n = await conn.read(buf);
    const reply = new TextDecoder().decode(buf.subarray(0, n ?? 0));
    return reply.startsWith("+PONG") || reply.startsWith("-NOAUTH");
  } catch {
    return false;
  } finally {
    try {
      conn?.close();
    } catch {
      // closed by the server
    }
  }
}

/** A redis-server process (also the way tests/helpers/redis_topology.ts starts cluster nodes and replicas). */
export class RedisProcess implements RedisServer {
  readonly url: string;
  readonly port: number;
  readonly password: string | undefined;
  /** The directory it runs in (its config and cluster state files). */
  readonly dir: string;
  readonly #binary: string;
  readonly #options: StartRedisOptions;
  #child: Deno.ChildProcess | undefined;
  #output: Promise<string> = Promise.resolve("");
  #removed = false;

  constructor(binary: string, dir: string, port: number, options: StartRedisOptions = {}) {
    this.#binary = binary;
    this.dir = dir;
    this.port = port;
    this.password = options.password;
    this.#options = options;
    this.url = `${options.tls ? "rediss" : "redis"}://127.0.0.1:${port}`;
  }

  /** True between a successful start and the next stop or kill. */
  get running(): boolean {
    return this.#child !== undefined;
  }

  /** The server's output so far (after it stopped: all of it). */
  output(): Promise<string> {
    return this.#output;
  }

  /** Starts the process and waits until it answers PING; throws (after cleaning up) when it does not. */
  async start(): Promise<void> {
    const tls = this.#options.tls;
    const args = [
      ...(this.#options.configFile !== undefined ? [this.#options.configFile] : []),
      "--port",
      tls ? "0" : String(this.port),
      ...(tls
        ? [
          "--tls-port",
          String(this.port),
          "--tls-cert-file",
          tls.cert,
          "--tls-key-file",
          tls.key,
          "--tls-ca-cert-file",
          tls.ca,
          "--tls-auth-clients",
          tls.clientAuth ? "yes" : "no",
          "--tls-replication",
          "yes",
          "--tls-cluster",
          "yes",
        ]
        : []),
      "--bind",
      "127.0.0.1",
      "--save",
      "",
      "--appendonly",
      "no",
      "--daemonize",
      "no",
      "--dir",
      this.dir,
      ...(this.password !== undefined ? ["--requirepass", this.password] : []),
      ...(this.#options.args ?? []),
    ];
    const child = new Deno.Command(this.#binary, { args, stdin: "null", stdout: "piped", stderr: "piped" })
      .spawn();
    this.#child = child;
    // Both streams are read to the end so that no resource outlives the process.
    const decode = (stream: ReadableStream<Uint8Array>) => new Response(stream).text().catch(() => "");
    this.#output = Promise.all([decode(child.stdout), decode(child.stderr)]).then(([a, b]) => a + b);
    let exited = false;
    child.status.then(() => exited = true);
    const end = performance.now() + START_DEADLINE_MS;
    while (!exited && performance.now() < end) {
      if (tls ? await answersTlsPing(this.port, tls) : await answersPing(this.port)) return;
      await new Promise((resolve) => setTimeout(resolve, 25));
    }
    await this.#signal("SIGKILL");
    const output = await this.#output;
    throw new Error(
      `redis-server on port ${this.port} did not answer PING within ${START_DEADLINE_MS} ms:\n${output}`,
    );
  }

  async #signal(signal: Deno.Signal): Promise<void> {
    const child = this.#child;
    if (child === undefined) return;
    this.#child = undefined;
    try {
      child.kill(signal);
    } catch {
      // Already exited.
    }
    await child.status;
    await this.#output;
  }

  kill(): Promise<void> {
    return this.#signal("SIGKILL");
  }

  async stop(): Promise<void> {
    await this.#signal("SIGTERM");
    if (!this.#removed) {
      this.#removed = true;
      await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    }
  }

  async restart(): Promise<void> {
    await this.#signal("SIGTERM");
    await this.start();
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * Starts `redis-server` on 127.0.0.1 on a free port and waits until it answers PING; null when
 * `redis-server` is not installed ({@linkcode REDIS_SKIP_REASON} says why). Retries on another port if the
 * chosen one was taken in the meantime.
 */
export async function startRedis(options: StartRedisOptions = {}): Promise<RedisServer | null> {
  if (REDIS_SERVER_PATH === null) return null;
  let lastError: unknown;
  for (let attempt = 0; attempt < 3; attempt++) {
    const dir = await Deno.makeTempDir({ prefix: "p2p_server_redis_" });
    const server = new RedisProcess(REDIS_SERVER_PATH, dir, freeTcpPort(), options);
    try {
      await server.start();
      return server;
    } catch (error) {
      lastError = error;
      await server.stop();
    }
  }
  throw lastError;
}
