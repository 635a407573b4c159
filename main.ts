/**
 * The p2p_server program: flags -> config -> server, exit codes and printing.
 *
 * Exit status: 0 after a clean shutdown (SIGINT/SIGTERM), `--help`/`--version`, or `--check-config` of a valid
 * configuration; 1 when the socket cannot be bound; 2 for a bad flag, config file or environment value, an
 * unreadable TLS file, (cluster mode) an instance id another live process holds, or when Deno runs without
 * `--unstable-net`. A bad flag prints one error line and one line pointing at `--help`.
 *
 * @module
 */
import { parseCli, usage, USAGE_HINT, UsageError } from "./src/cli.ts";
import { type Config, CONFIG_FILE_KEYS, ConfigError, parseConfigFile, resolveConfig } from "./src/config.ts";
import { describeConfig } from "./src/config_report.ts";
import { closest } from "./src/suggest.ts";
import { BindError, UnstableApiError } from "./src/errors.ts";
import { requireUdpSockets } from "./src/driver.ts";
import { KeyFileError } from "./src/key_file.ts";
import { VERSION } from "./src/identity.ts";
import { chooseLevel, setupLogging, teardownLogging } from "./src/logging.ts";
import { formatSocketAddr } from "./src/wire/address.ts";
import { P2PServer } from "./src/server.ts";
import { runStatus } from "./src/status_command.ts";
import { IDENTITY_FILE_NAME, type IdentityLocation, identityLocation } from "./src/identity_path.ts";
import { getLogger } from "./src/deps/log.ts";

const log = getLogger(["p2p_server", "main"]);

/** The program's identity file name in a state or working directory (see `src/identity_path.ts`). */
export const PROGRAM_IDENTITY_FILE: string = IDENTITY_FILE_NAME;

/** Runs the program with `args`; resolves to the exit status. */
export async function main(args: string[]): Promise<number> {
  // `p2p_server status`: read a running server's operations endpoint (src/status_command.ts).
  const command = args[0] === "--" ? args.slice(1) : args;
  if (command[0] === "status") return await runStatus(command.slice(1));
  let request;
  try {
    // `deno task start -- --flag` forwards the `--` separator; it carries no meaning here.
    request = parseCli(args[0] === "--" ? args.slice(1) : args);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    return usageFailure(error.message);
  }
  if (request.kind === "help") {
    console.log(usage());
    return 0;
  }
  if (request.kind === "version") {
    console.log(`p2p_server ${VERSION}`);
    return 0;
  }

  let level;
  try {
    level = chooseLevel(request.level, { LOG_LEVEL: env("LOG_LEVEL"), RUST_LOG: env("RUST_LOG") });
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 2;
  }

  let fileConfig: Partial<Config> = {};
  let unknownKeys: string[] = [];
  if (request.configFile !== undefined) {
    let text: string;
    try {
      text = await Deno.readTextFile(request.configFile);
    } catch (error) {
      console.error(`error: cannot read config file "${request.configFile}": ${(error as Error).message}`);
      return 2;
    }
    try {
      ({ config: fileConfig, unknownKeys } = parseConfigFile(text, request.configFile));
    } catch (error) {
      if (!(error instanceof ConfigError)) throw error;
      console.error(`error: ${error.message}`);
      return 2;
    }
  }
  let config: Config;
  let identity: IdentityLocation | null = null;
  try {
    // The program keeps its identity across restarts; the library's default is a new key each run.
    // Cluster flags complete the file's cluster settings rather than replace them.
    const cluster = request.flags.cluster !== undefined
      ? { ...fileConfig.cluster, ...request.flags.cluster } as Config["cluster"]
      : fileConfig.cluster;
    const instanceId = request.flags.cluster?.instanceId;
    if (instanceId !== undefined && cluster?.redisUrl === undefined) {
      return usageFailure(`--instance-id "${instanceId}" needs --cluster <REDIS_URL> (cluster mode is off)`);
    }
    // The key lives where an operator expects state (src/identity_path.ts); `identity_file: null` keeps none.
    identity = fileConfig.identityFile === null ? null : identityLocation({
      identityFile: fileConfig.identityFile,
      configFile: request.configFile,
      env: { STATE_DIRECTORY: env("STATE_DIRECTORY"), XDG_STATE_HOME: env("XDG_STATE_HOME") },
      cwd: Deno.cwd(),
    });
    config = resolveConfig({
      ...fileConfig,
      identityFile: identity?.path ?? null,
      ...request.flags,
      ...(cluster !== undefined ? { cluster } : {}),
    });
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`error: ${error.message}`);
    return 2;
  }

  await setupLogging(level.level, config.logFormat);
  try {
    for (const key of unknownKeys) {
      const near = closest(key, Object.keys(CONFIG_FILE_KEYS));
      log.warn('unknown key "{key}" in {file} is ignored{hint}', {
        key,
        file: request.configFile,
        hint: near === undefined ? "" : `: did you mean "${near}"?`,
      });
    }
    if (request.kind === "check") {
      // Nothing is bound, created or read beyond the config file: the settings as the server would use them.
      for (const line of describeConfig(config, { extra: { log_level: level.level } })) console.log(line);
      return 0;
    }
    let server: P2PServer;
    try {
      // Before anything is created on disk: without --unstable-net the server could not bind anyway.
      requireUdpSockets();
      if (identity?.createDir && config.auth !== "off") makeStateDir(identity.createDir);
      server = new P2PServer(config);
    } catch (error) {
      if (
        !(error instanceof KeyFileError) && !(error instanceof UnstableApiError) &&
        !(error instanceof ConfigError)
      ) throw error;
      console.error(`error: ${error.message}`);
      return 2;
    }
    try {
      await server.listen();
    } catch (error) {
      if (!(error instanceof BindError)) throw error;
      console.error(`error: ${error.message}`);
      return 1;
    }
    // Signal handlers first: whoever waits for the "listening" line may stop the program right after it.
    const stop = (signal: Deno.Signal) => {
      log.info("{signal} received, disconnecting peers", { signal });
      void server.close();
    };
    const signals: Deno.Signal[] = Deno.build.os === "windows" ? ["SIGINT"] : ["SIGINT", "SIGTERM"];
    const handlers = signals.map((s) => {
      const handler = () => stop(s);
      Deno.addSignalListener(s, handler);
      return [s, handler] as const;
    });
    console.log(`p2p_server ${VERSION} listening on ${formatSocketAddr(server.addr)}`);
    if (server.metricsAddr) {
      console.log(`metrics and status page on http://${formatSocketAddr(server.metricsAddr)}/`);
    }
    log.info(
      "node id {id}, public key {key}, identity file {file} ({rule}), log level {level} (from {source})",
      {
        id: server.node.id,
        key: server.publicKey ?? "none (auth off)",
        file: server.publicKey !== null ? config.identityFile ?? "none (a new key each run)" : "none",
        rule: server.publicKey !== null && identity !== null ? identity.rule.replaceAll("_", " ") : "-",
        level: level.level,
        source: level.source,
      },
    );
    await server.finished;
    for (const [s, handler] of handlers) Deno.removeSignalListener(s, handler);
    if (server.stoppedBy) {
      // The server could not go on as configured (another process holds its cluster instance id).
      console.error(`error: ${server.stoppedBy.message}`);
      return 2;
    }
    return 0;
  } finally {
    await teardownLogging();
  }
}

/** Prints a usage error and the pointer to `--help` (not the whole usage, which would scroll it away). */
function usageFailure(message: string): number {
  console.error(`error: ${message}\n${USAGE_HINT}`);
  return 2;
}

/** Creates the XDG state directory for the key (0700). @throws {KeyFileError} naming it when it cannot. */
function makeStateDir(dir: string): void {
  try {
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  } catch (error) {
    throw new KeyFileError(dir, `Cannot create state directory "${dir}": ${(error as Error).message}`);
  }
}

function env(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined; // no --allow-env: behave as if unset
  }
}

if (import.meta.main) Deno.exit(await main(Deno.args));
