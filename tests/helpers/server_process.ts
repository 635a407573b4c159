/**
 * Runs the real program (`main.ts`) as a subprocess for end-to-end tests: starts it with `Deno.execPath()`,
 * waits for its one stdout line `p2p_server <version> listening on <ip:port>`, collects stderr, and stops it
 * with SIGTERM. Every process, stream and temp file it makes is cleaned up, also when a test fails, so
 * `deno test`'s sanitizers pass.
 *
 * @module
 */
import { PERMISSIONS, V8_FLAGS_ARG } from "../../tools/compile.ts";
import { type Addr, addrText, parseAddr } from "./raw_peer.ts";
import { Wakers } from "./wakers.ts";

/** The project root (where `main.ts` and `deno.json` live). */
export const PROJECT_ROOT: string = new URL("../../", import.meta.url).pathname;

/** Permissions and V8 flags the program runs with, as `deno task start` and the compiled binaries give them. */
export const RUN_FLAGS = ["run", ...PERMISSIONS, V8_FLAGS_ARG] as const;

/** Deno's arguments to run main.ts as `deno task start` does, with the config file `configPath`, then `extra`. */
export function mainArgs(configPath: string, ...extra: string[]): string[] {
  return [
    ...RUN_FLAGS,
    "--config",
    `${PROJECT_ROOT}deno.json`,
    `${PROJECT_ROOT}main.ts`,
    "-c",
    configPath,
    ...extra,
  ];
}

/** Deno's arguments to run one of the project's client scripts (net, read and env permissions), then `args`. */
export function clientScriptArgs(script: string, ...args: string[]): string[] {
  return [
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-env",
    "--config",
    `${PROJECT_ROOT}deno.json`,
    `${PROJECT_ROOT}${script}`,
    ...args,
  ];
}

/** A generous wait for a subprocess to start or exit on a small shared machine. */
export const PROCESS_DEADLINE_MS = 30_000;

/**
 * The config every test server starts from: port 0 on loopback, and no sibling discovery (which would probe
 * ports 8081-8090 of the machine). `P2P_TEST_IO_BACKEND=mmsg` in the environment runs every test server on
 * the batched socket backend (`io_backend`), to run the program's tests once over it.
 */
export const TEST_CONFIG: Readonly<Record<string, unknown>> = Object.freeze({
  listen_address: "127.0.0.1:0",
  enable_discovery: false,
  identity_file: null,
  ...(Deno.env.get("P2P_TEST_IO_BACKEND") ? { io_backend: Deno.env.get("P2P_TEST_IO_BACKEND") } : {}),
});

const LISTENING = /^p2p_server (\S+) listening on (\S+)$/;

/** The environment for a child: ours without the log-level variables (a test sets them explicitly). */
export function childEnv(extra: Record<string, string> = {}): Record<string, string> {
  const env = Deno.env.toObject();
  delete env.LOG_LEVEL;
  delete env.RUST_LOG;
  return { ...env, NO_COLOR: "1", ...extra };
}

/** Polls `condition` until it holds (returns a non-undefined, non-false value) or `deadlineMs` passes. */
export async function waitUntil<T>(
  condition: () => T | false | undefined | Promise<T | false | undefined>,
  what: string,
  deadlineMs = 10_000,
  intervalMs = 25,
): Promise<T> {
  const end = performance.now() + deadlineMs;
  for (;;) {
    const value = await condition();
    if (value !== undefined && value !== false) return value;
    if (performance.now() >= end) throw new Error(`Timed out after ${deadlineMs} ms waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, intervalMs));
  }
}

/** Collects a text stream and lets callers wait for a pattern in it. */
class TextCollector {
  #text = "";
  #done = false;
  readonly #wakers = new Wakers();
  readonly finished: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.finished = this.#read(stream);
  }

  get text(): string {
    return this.#text;
  }

  get done(): boolean {
    return this.#done;
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      for await (const chunk of stream.pipeThrough(new TextDecoderStream())) {
        this.#text += chunk;
        this.#wakers.wakeAll();
      }
    } finally {
      this.#done = true;
      this.#wakers.wakeAll();
    }
  }

  /** Waits until a complete line matches `pattern`; returns the match, or null when the stream ends. */
  async waitForLine(pattern: RegExp, deadlineMs: number): Promise<RegExpExecArray | null> {
    const end = performance.now() + deadlineMs;
    for (;;) {
      const lines = this.#text.split("\n");
      if (!this.#done) lines.pop(); // the last piece may be an incomplete line
      for (const line of lines) {
        const m = pattern.exec(line);
        if (m) return m;
      }
      if (this.#done) return null;
      const left = end - performance.now();
      if (left <= 0) {
        throw new Error(`Timed out after ${deadlineMs} ms waiting for a line matching ${pattern}`);
      }
      await this.#wakers.wait(left);
    }
  }
}

/** Options of {@linkcode startServer} and {@linkcode runMain}. */
export interface ServerProcessOptions {
  /** Extra command-line arguments (after `-c <temp config>` when a config is written). */
  args?: string[];
  /**
   * Config file contents, merged over {@linkcode TEST_CONFIG} and written to a temp file passed with `-c`;
   * a string is written as is. `null` passes no config file at all (then `args` must keep the test safe).
   * @default {{}}
   */
  config?: Record<string, unknown> | string | null;
  /** Extra environment variables (`LOG_LEVEL` and `RUST_LOG` are otherwise unset). */
  env?: Record<string, string>;
  /** How long to wait for the listening line. @default {PROCESS_DEADLINE_MS} */
  readyDeadlineMs?: number;
  /** The script to run, relative to the project root. @default {"main.ts"} */
  script?: string;
  /** Deno's run flags. @default {RUN_FLAGS (as `deno task start`)} */
  runFlags?: readonly string[];
}

/** A running p2p_server subprocess. */
export class ServerProcess implements AsyncDisposable {
  readonly #child: Deno.ChildProcess;
  readonly #stdout: TextCollector;
  readonly #stderr: TextCollector;
  readonly #tempFiles: string[];
  #status: Promise<Deno.CommandStatus>;
  #exited: Deno.CommandStatus | null = null;
  #stopped: Promise<Deno.CommandStatus> | null = null;
  /** The version from the listening line. */
  version = "";
  /** The bound address from the listening line. */
  addr: Addr = { hostname: "", port: 0 };
  /** The config file passed with `-c`, if any. */
  readonly configPath: string | undefined;

  /** Use {@linkcode startServer}. */
  constructor(child: Deno.ChildProcess, tempFiles: string[], configPath: string | undefined) {
    this.#child = child;
    this.#tempFiles = tempFiles;
    this.configPath = configPath;
    this.#stdout = new TextCollector(child.stdout);
    this.#stderr = new TextCollector(child.stderr);
    this.#status = child.status.then((s) => (this.#exited = s));
  }

  /** The bound address as `"ip:port"`. */
  get addrText(): string {
    return addrText(this.addr);
  }

  /** Everything written to stdout so far. */
  get stdout(): string {
    return this.#stdout.text;
  }

  /** Everything written to stderr so far. */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** The exit status, once the process has exited. */
  get exited(): Deno.CommandStatus | null {
    return this.#exited;
  }

  /** @internal Waits for the listening line; kills the process if it does not come. */
  async ready(deadlineMs: number): Promise<void> {
    let m: RegExpExecArray | null;
    try {
      m = await this.#stdout.waitForLine(LISTENING, deadlineMs);
    } catch (error) {
      await this.#kill();
      throw new Error(`${(error as Error).message}\nstderr:\n${this.stderr}`);
    }
    if (!m) {
      const status = await this.#kill();
      throw new Error(`p2p_server exited (code ${status.code}) without listening\nstderr:\n${this.stderr}`);
    }
    this.version = m[1]!;
    this.addr = parseAddr(m[2]!);
  }

  /** Waits for a stderr line matching `pattern` and returns it. */
  async waitForStderr(pattern: RegExp, deadlineMs = 10_000): Promise<string> {
    const m = await this.#stderr.waitForLine(pattern, deadlineMs);
    if (!m) throw new Error(`stderr ended without a line matching ${pattern}:\n${this.stderr}`);
    return m.input;
  }

  /** Sends `signal` (SIGTERM by default), waits for the exit, and cleans up. Idempotent. */
  stop(signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    this.#stopped ??= (async () => {
      if (!this.#exited) {
        try {
          this.#child.kill(signal);
        } catch {
          // it exited in the meantime
        }
      }
      return await this.#settle(PROCESS_DEADLINE_MS);
    })();
    return this.#stopped;
  }

  /** Stops the process (SIGTERM) if it still runs. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.stop();
  }

  /** Kills the process outright and cleans up. */
  async #kill(): Promise<Deno.CommandStatus> {
    this.#stopped ??= (async () => {
      if (!this.#exited) {
        try {
          this.#child.kill("SIGKILL");
        } catch {
          // already gone
        }
      }
      return await this.#settle(PROCESS_DEADLINE_MS);
    })();
    return await this.#stopped;
  }

  /** Waits for the exit (SIGKILL after `deadlineMs`), both streams and the temp files. */
  async #settle(deadlineMs: number): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), deadlineMs));
    const first = await Promise.race([this.#status, late]);
    clearTimeout(timer);
    if (first === "late") {
      try {
        this.#child.kill("SIGKILL");
      } catch {
        // gone
      }
    }
    const status = await this.#status;
    await Promise.all([this.#stdout.finished, this.#stderr.finished]);
    await removeAll(this.#tempFiles);
    if (first === "late") throw new Error(`p2p_server did not exit within ${deadlineMs} ms; killed`);
    return status;
  }
}

/** Writes `content` to a fresh temp `.json` file and returns its path. */
export async function writeTempConfig(content: Record<string, unknown> | string): Promise<string> {
  const path = await Deno.makeTempFile({ prefix: "p2p_server_test_", suffix: ".json" });
  await Deno.writeTextFile(path, typeof content === "string" ? content : JSON.stringify(content));
  return path;
}

async function removeAll(paths: string[]): Promise<void> {
  for (const path of paths.splice(0)) {
    try {
      await Deno.remove(path, { recursive: true });
    } catch {
      // already gone
    }
  }
}

async function prepare(
  options: ServerProcessOptions,
): Promise<{ args: string[]; tempFiles: string[]; configPath: string | undefined; cwd: string }> {
  const config = options.config === undefined ? {} : options.config;
  const tempFiles: string[] = [];
  let configPath: string | undefined;
  // Each process runs in a fresh directory, so files it creates there (the program's identity key when no
  // config file names one) never land in the project.
  const cwd = await Deno.makeTempDir({ prefix: "p2p_server_run_" });
  tempFiles.push(cwd);
  const args: string[] = [
    ...(options.runFlags ?? RUN_FLAGS),
    "--config",
    `${PROJECT_ROOT}deno.json`,
    `${PROJECT_ROOT}${options.script ?? "main.ts"}`,
  ];
  if (config !== null) {
    configPath = await writeTempConfig(typeof config === "string" ? config : { ...TEST_CONFIG, ...config });
    tempFiles.push(configPath);
    args.push("-c", configPath);
  }
  args.push(...(options.args ?? []));
  return { args, tempFiles, configPath, cwd };
}

/**
 * Starts `main.ts` (with a temp config that binds 127.0.0.1:0 without discovery, unless `config` says
 * otherwise) and waits until it listens.
 *
 * @throws {Error} (after killing it) when the process exits or does not listen within the deadline.
 */
export async function startServer(options: ServerProcessOptions = {}): Promise<ServerProcess> {
  const { args, tempFiles, configPath, cwd } = await prepare(options);
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      env: childEnv(options.env),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    await removeAll(tempFiles);
    throw error;
  }
  const server = new ServerProcess(child, tempFiles, configPath);
  await server.ready(options.readyDeadlineMs ?? PROCESS_DEADLINE_MS);
  return server;
}

/** The outcome of a program run to completion. */
export interface RunResult {
  /** Exit code. */
  code: number;
  /** All of stdout. */
  stdout: string;
  /** All of stderr. */
  stderr: string;
  /** Wall-clock run time in milliseconds. */
  elapsedMs: number;
  /** The config file passed with `-c`, if any (already removed). */
  configPath: string | undefined;
}

/**
 * Runs a script (default `main.ts`) to completion and returns its exit code and output. Killed after
 * `deadlineMs` (then the call throws).
 */
export async function runScript(
  options: ServerProcessOptions & { deadlineMs?: number } = {},
): Promise<RunResult> {
  const { args, tempFiles, configPath, cwd } = await prepare(options);
  const started = performance.now();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), options.deadlineMs ?? PROCESS_DEADLINE_MS);
  try {
    const out = await new Deno.Command(Deno.execPath(), {
      args,
      cwd,
      env: childEnv(options.env),
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
    }).output();
    const decoder = new TextDecoder();
    if (controller.signal.aborted) {
      throw new Error(`${args.join(" ")} did not exit in time; stderr:\n${decoder.decode(out.stderr)}`);
    }
    return {
      code: out.code,
      stdout: decoder.decode(out.stdout),
      stderr: decoder.decode(out.stderr),
      elapsedMs: performance.now() - started,
      configPath,
    };
  } finally {
    clearTimeout(timer);
    await removeAll(tempFiles);
  }
}
