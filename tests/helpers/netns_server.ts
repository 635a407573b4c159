/**
 * The real program (`main.ts`) in the public namespace (`pub`) of the NAT test bed (tests/helpers/netns.ts):
 * {@linkcode startPublicServer} writes its config file into the topology's temp directory, spawns it in `pub`
 * (by default with its metrics and status server on pub's loopback), waits for the listening line and the
 * ops line, and {@linkcode PublicServer.stats} reads `/api/stats` from inside `pub`. When starting fails
 * the process is stopped (SIGKILL after the grace time) and the config file removed before the error is
 * rethrown; {@linkcode PublicServer.stop} (or `await using`) does the same once the test is done.
 * {@linkcode ensureCached} fills Deno's cache for main.ts and the client fixture first, and
 * {@linkcode spawnNatClient} starts the client fixture (tests/fixtures/nat_client.ts) behind a NAT.
 *
 * @module
 */
import type { StatsSnapshot } from "../../src/core/stats.ts";
import { clientAddress, type NatTopology, type NsProcess, TOPOLOGY } from "./netns.ts";
import { clientScriptArgs, mainArgs, PROJECT_ROOT } from "./server_process.ts";

const LISTENING = /^p2p_server \S+ listening on (\S+)$/;
const OPS = /^metrics and status page on http:\/\/(\S+)\/$/;

/** How long to wait for the listening line, for the ops line and for a stats read (ms, before `deadline`). */
export const PUBLIC_SERVER_DEADLINES = Object.freeze({ listening: 20_000, ops: 5_000, stats: 10_000 });

/**
 * The config every server in `pub` starts from: an ephemeral port on the bed's server address, no sibling
 * discovery, no identity file.
 */
export const PUBLIC_SERVER_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  listen_address: `${TOPOLOGY.server}:0`,
  enable_discovery: false,
  identity_file: null,
});

/** Options of {@linkcode startPublicServer}. */
export interface PublicServerOptions {
  /** Config keys over {@linkcode PUBLIC_SERVER_CONFIG}. @default {{}} */
  config?: Record<string, unknown>;
  /** The config file's name in the topology's temp directory. @default {"server.json"} */
  configName?: string;
  /** Extra arguments for main.ts, after `-c <config>` and the metrics address. @default {[]} */
  args?: string[];
  /**
   * Whether the metrics and status server runs (`--metrics-address 127.0.0.1:0`, pub's loopback) and its
   * line is waited for.
   * @default {true}
   */
  ops?: boolean;
  /**
   * Maps each wait's own deadline ({@linkcode PUBLIC_SERVER_DEADLINES}, in ms) to the one used, e.g. to what
   * the test's budget has left. Called when the wait starts.
   * @default {the deadline unchanged}
   */
  deadline?: (ms: number) => number;
}

/** main.ts running in `pub`; made by {@linkcode startPublicServer}. */
export class PublicServer implements AsyncDisposable {
  /** The process (its stdout and stderr stay readable after the stop). */
  readonly proc: NsProcess;
  /** The config file it was started with (removed by {@linkcode stop}). */
  readonly configPath: string;
  /** The bound address from the listening line, `"ip:port"` (empty until it listens). */
  addr = "";
  /** The ops server's address, `"ip:port"` on pub's loopback, or null without `ops`. */
  ops: string | null = null;
  readonly #topo: NatTopology;
  readonly #deadline: (ms: number) => number;
  #stopping: Promise<void> | null = null;

  /** @internal Use {@linkcode startPublicServer}. */
  constructor(topo: NatTopology, proc: NsProcess, configPath: string, deadline: (ms: number) => number) {
    this.#topo = topo;
    this.proc = proc;
    this.configPath = configPath;
    this.#deadline = deadline;
  }

  /** The bound port. */
  get port(): number {
    return Number(this.addr.slice(this.addr.lastIndexOf(":") + 1));
  }

  /** @internal Waits for the listening line, then (with `ops`) the ops line. */
  async ready(ops: boolean): Promise<void> {
    const listening = await this.proc.waitForLine(LISTENING, {
      deadlineMs: this.#deadline(PUBLIC_SERVER_DEADLINES.listening),
    });
    this.addr = LISTENING.exec(listening.line)![1]!;
    if (!ops) return;
    const line = await this.proc.waitForLine(OPS, {
      deadlineMs: this.#deadline(PUBLIC_SERVER_DEADLINES.ops),
    });
    this.ops = OPS.exec(line.line)![1]!;
  }

  /**
   * The server's `/api/stats` snapshot, fetched by a `deno eval` inside `pub` (the ops server listens on
   * pub's loopback).
   *
   * @throws {Error} when it was started without `ops`, or the read fails or runs past its deadline.
   */
  async stats(): Promise<StatsSnapshot> {
    if (this.ops === null) throw new Error(`${this.addr}: started without ops, no /api/stats to read`);
    const code = `const r = await fetch("http://${this.ops}/api/stats"); ` +
      `console.log(JSON.stringify((await r.json()).stats));`;
    const out = await this.#topo.exec("pub", [Deno.execPath(), "eval", code], {
      deadlineMs: this.#deadline(PUBLIC_SERVER_DEADLINES.stats),
    });
    return JSON.parse(out.stdout.trim()) as StatsSnapshot;
  }

  /** Stops the process (SIGTERM, SIGKILL after the grace time) and removes the config file. Idempotent. */
  stop(): Promise<void> {
    this.#stopping ??= (async () => {
      try {
        await this.#topo.stop(this.proc).catch(() => this.proc.killNow());
      } finally {
        await Deno.remove(this.configPath).catch(() => {});
      }
    })();
    return this.#stopping;
  }

  /** Same as {@linkcode stop}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.stop();
  }
}

/**
 * Starts main.ts in `topo`'s `pub` namespace with {@linkcode PUBLIC_SERVER_CONFIG} and `options.config`,
 * and waits until it listens (and, with `ops`, until its ops server does).
 *
 * @example
 * ```ts ignore
 * await using topo = await createTopology();
 * await using server = await startPublicServer(topo, { config: { stun_alternate_port: 3479 } });
 * console.log(server.addr, (await server.stats()).stun.requests);
 * ```
 *
 * @throws {Error} (after stopping the process and removing the config file) when it does not listen in time.
 */
export async function startPublicServer(
  topo: NatTopology,
  options: PublicServerOptions = {},
): Promise<PublicServer> {
  const ops = options.ops ?? true;
  const configPath = `${topo.tempDir}/${options.configName ?? "server.json"}`;
  let proc: NsProcess;
  try {
    await Deno.writeTextFile(configPath, JSON.stringify({ ...PUBLIC_SERVER_CONFIG, ...options.config }));
    const args = mainArgs(
      configPath,
      ...(ops ? ["--metrics-address", "127.0.0.1:0"] : []),
      ...options.args ?? [],
    );
    proc = topo.spawnDeno("pub", args, { stdin: false });
  } catch (error) {
    await Deno.remove(configPath).catch(() => {});
    throw error;
  }
  const server = new PublicServer(topo, proc, configPath, options.deadline ?? ((ms) => ms));
  try {
    await server.ready(ops);
  } catch (error) {
    await server.stop();
    throw error;
  }
  return server;
}

let cached: Promise<void> | undefined;

/**
 * Makes sure the server's and the client fixture's (tests/fixtures/nat_client.ts) dependencies are in
 * Deno's cache: the namespaces have no route to a registry. Once per process, in the host's network
 * namespace (~50 ms when already cached).
 *
 * @throws {Error} with deno's stderr when `deno cache` fails or runs past 15 s.
 */
export function ensureCached(): Promise<void> {
  cached ??= (async () => {
    const out = await new Deno.Command(Deno.execPath(), {
      args: [
        "cache",
        "--config",
        `${PROJECT_ROOT}deno.json`,
        `${PROJECT_ROOT}main.ts`,
        `${PROJECT_ROOT}tests/fixtures/nat_client.ts`,
      ],
      stdin: "null",
      stdout: "null",
      stderr: "piped",
      signal: AbortSignal.timeout(15_000),
    }).output();
    if (!out.success) throw new Error(`deno cache failed: ${new TextDecoder().decode(out.stderr)}`);
  })();
  return cached;
}

/**
 * Starts the client fixture (tests/fixtures/nat_client.ts) in `client`'s namespace, bound to its private
 * address (port 0), named after it and connecting to `server` (`"ip:port"`); `extra` follows (e.g.
 * `--heartbeat 1`). Its stdin is a pipe for commands; the topology stops it at the latest.
 */
export function spawnNatClient(
  topo: NatTopology,
  client: "c1" | "c2",
  server: string,
  ...extra: string[]
): NsProcess {
  return topo.spawnDeno(
    client,
    clientScriptArgs(
      "tests/fixtures/nat_client.ts",
      "--server",
      server,
      "--bind",
      `${clientAddress(client)}:0`,
      "--name",
      client,
      ...extra,
    ),
  );
}
