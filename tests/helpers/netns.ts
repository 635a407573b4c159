/**
 * A NAT test bed made of Linux network namespaces: a public network with the server, two NAT routers, and one
 * client behind each. Needs root, iproute2 (`ip`) and nftables (`nft`); {@linkcode available} says whether
 * they are there, and tests skip otherwise.
 *
 * ```
 *             pub (br0 203.0.113.1/24 and 203.0.113.2/24: the server and its alternate address)
 *                      /                                    \
 *   nat1: wan 203.0.113.11/24                          nat2: wan 203.0.113.12/24
 *         lan 192.0.2.1/24                                   lan 198.51.100.1/24
 *          |                                                  |
 *   c1: eth0 192.0.2.2/24 (default via 192.0.2.1)      c2: eth0 198.51.100.2/24 (default via 198.51.100.1)
 * ```
 *
 * Every namespace name is `<prefix>-<pid>-<random>-<node>`, so parallel runs never collide, and namespaces a
 * crashed run left behind (its pid no longer alive) are removed by the next {@linkcode createTopology}.
 * Interfaces are created directly inside their namespaces, so their names are namespace-local. The NAT rules
 * live in one nftables table per NAT (`ip p2pnat`), replaced atomically by {@linkcode NatTopology.setNatMode}.
 *
 * The API at a glance: {@linkcode TOPOLOGY} has every address (`TOPOLOGY.server`, `TOPOLOGY.serverAlt` for a
 * server's second address such as the `stun_alternate_address` of RFC 5780 NAT behaviour discovery, and each
 * NAT's `public`, `private` and `client` addresses); {@linkcode NatMode} names the NAT behaviours (mapping and
 * filtering in RFC 4787 terms: `endpoint-independent`, `full-cone`, `address-dependent`,
 * `address-dependent-mapping`, `address-and-port-dependent`), and {@linkcode NAT_BEHAVIOUR} says what each
 * one's mapping and filtering are, in the words an RFC 5780 client reports them with.
 *
 * {@linkcode NatTopology.destroy} (also `await using`) stops every process started in the topology (SIGTERM,
 * then SIGKILL), deletes the namespaces (which removes their interfaces and rules) and the temp directory;
 * a failure while building the topology tears down what was built. When this process dies without a
 * teardown (`deno test` exits on SIGINT without running `finally` blocks; a CI timeout kills it), two
 * safety nets apply: every spawned process carries a parent-death signal (`setpriv --pdeathsig KILL`), and a
 * watchdog shell, whose stdin is a pipe from this process, sees EOF, kills what is left in the namespaces
 * and deletes them and the temp directory. `deno run -A tests/helpers/netns.ts --sweep` removes namespaces
 * of dead runs by hand.
 *
 * @module
 */
import { childEnv } from "./server_process.ts";
import { Wakers } from "./wakers.ts";

/** The nodes of the topology. */
export type NodeName = "pub" | "nat1" | "nat2" | "c1" | "c2";

/** The NAT routers. */
export type NatName = "nat1" | "nat2";

/**
 * How a NAT maps and filters UDP (RFC 4787 terms; {@linkcode NAT_BEHAVIOUR} has each mode's two behaviours).
 *
 * - `"endpoint-independent"`: `masquerade` on the public interface. Linux keeps the client's source port when
 *   it is free, so one local port gets the same public `ip:port` towards every remote (endpoint-independent
 *   mapping); inbound packets are let in only when they match a conntrack entry (a reply to a flow the
 *   client opened: address-and-port-dependent filtering, i.e. a "port-restricted cone"); other inbound UDP
 *   to the NAT is dropped and counted, as a home router's firewall does.
 * - `"full-cone"`: as above plus a static DNAT of any unsolicited inbound UDP to the client (same port), so
 *   anyone who knows the mapping can reach the client (endpoint-independent filtering).
 * - `"address-dependent"`: the mapping of `"endpoint-independent"`, and address-dependent filtering (a
 *   "restricted cone"): every outbound packet records its remote IP and public port (a dynamic nftables map
 *   from `remote ip . public port` to the client's private port, entries expiring
 *   {@linkcode FILTER_MEMORY_S} s after the last packet), and an unsolicited inbound packet is DNATed to the
 *   client only when it comes from a recorded remote IP to that public port, from whatever remote port;
 *   other inbound UDP is dropped and counted.
 * - `"address-dependent-mapping"`: address-dependent mapping: `snat` to a public port that is a hash of the
 *   client's address and port and the remote IP (`jhash ... mod 20000 offset 30000`), so one local port gets
 *   one public port per remote IP, the same for every port of that IP (a different IP gets another port,
 *   except for a 1 in 20,000 hash collision); filtering is address-dependent as in `"address-dependent"`.
 * - `"address-and-port-dependent"`: `masquerade random` (a new random public port for every new flow, i.e.
 *   per remote `ip:port`: a "symmetric" NAT) and an explicit forward filter that accepts inbound packets
 *   only in `ct state established,related` and counts and drops every other inbound packet.
 *
 * Not built: address-dependent mapping with other filtering, sequential or port-range port allocation,
 * hairpinning, and mapping lifetimes other than conntrack's (docs/nat.md#the-nat-test-bed says which
 * nftables could build).
 */
export type NatMode =
  | "endpoint-independent"
  | "full-cone"
  | "address-dependent"
  | "address-dependent-mapping"
  | "address-and-port-dependent";

/** Every mode {@linkcode NatMode} allows. */
export const NAT_MODES: readonly NatMode[] = [
  "endpoint-independent",
  "full-cone",
  "address-dependent",
  "address-dependent-mapping",
  "address-and-port-dependent",
];

/** A mapping or filtering behaviour (RFC 4787 section 4.1 and 5). */
export type NatBehaviour = "endpoint-independent" | "address-dependent" | "address-and-port-dependent";

/** The mapping and filtering behaviour each {@linkcode NatMode} builds. */
export const NAT_BEHAVIOUR: Readonly<Record<NatMode, { mapping: NatBehaviour; filtering: NatBehaviour }>> = {
  "endpoint-independent": { mapping: "endpoint-independent", filtering: "address-and-port-dependent" },
  "full-cone": { mapping: "endpoint-independent", filtering: "endpoint-independent" },
  "address-dependent": { mapping: "endpoint-independent", filtering: "address-dependent" },
  "address-dependent-mapping": { mapping: "address-dependent", filtering: "address-dependent" },
  "address-and-port-dependent": {
    mapping: "address-and-port-dependent",
    filtering: "address-and-port-dependent",
  },
};

/**
 * How long (seconds) an address-dependent filter remembers a remote IP after the client's last packet to it
 * (conntrack's timeout for a UDP flow that has seen replies is 120 s too).
 */
export const FILTER_MEMORY_S = 120;

/** The fixed addressing of the topology. */
export const TOPOLOGY = {
  /** The server's address on the public network (`br0` in `pub`). */
  server: "203.0.113.1",
  /**
   * A second address of `pub` on the same bridge, for a server's `stun_alternate_address` (RFC 5780: the
   * server answers a CHANGE-REQUEST for another IP from it). Nothing listens on it unless a test starts it.
   */
  serverAlt: "203.0.113.2",
  /** Prefix length of the public network. */
  publicPrefix: 24,
  nat1: { public: "203.0.113.11", private: "192.0.2.1", client: "192.0.2.2", lanPrefix: 24 },
  nat2: { public: "203.0.113.12", private: "198.51.100.1", client: "198.51.100.2", lanPrefix: 24 },
} as const;

/** The private address of a client. */
export function clientAddress(client: "c1" | "c2"): string {
  return client === "c1" ? TOPOLOGY.nat1.client : TOPOLOGY.nat2.client;
}

/** The NAT a client sits behind. */
export function natOf(client: "c1" | "c2"): NatName {
  return client === "c1" ? "nat1" : "nat2";
}

const NODES: readonly NodeName[] = ["pub", "nat1", "nat2", "c1", "c2"];
const DEFAULT_PREFIX = "p2pnat";
const NFT_TABLE = "p2pnat";
const DROP_COUNTER = "inbound_dropped";
/** Deadline of one `ip` / `nft` command. */
const COMMAND_DEADLINE_MS = 10_000;
/** How long a process gets to exit after SIGTERM before SIGKILL. */
const STOP_GRACE_MS = 3_000;

// ---------------------------------------------------------------------------------------------------------
// Availability
// ---------------------------------------------------------------------------------------------------------

interface Tools {
  /** Why the test bed cannot run, or null. */
  reason: string | null;
  /** Absolute path of `ip`. */
  ip: string;
  /** Absolute path of `nft`. */
  nft: string;
  /**
   * The prefix that ties a spawned process's life to ours (`setpriv --pdeathsig KILL --`), or empty when
   * util-linux's setpriv is missing.
   */
  deathsig: string[];
}

let probed: Tools | undefined;

/** Whether the NAT test bed can run here: Linux, root, `ip` and `nft`, and namespaces work. Cached. */
export function available(): boolean {
  return unavailableReason() === null;
}

/** Why the test bed cannot run here (one line), or null when it can. Cached; probes once (about 50 ms). */
export function unavailableReason(): string | null {
  probed ??= probe();
  return probed.reason;
}

function tools(): Tools {
  probed ??= probe();
  if (probed.reason !== null) throw new Error(`network namespaces unavailable: ${probed.reason}`);
  return probed;
}

function probe(): Tools {
  const none = (reason: string): Tools => ({ reason, ip: "", nft: "", deathsig: [] });
  if (Deno.build.os !== "linux") return none(`needs Linux (this is ${Deno.build.os})`);
  const uid = effectiveUid();
  if (uid === null) return none("cannot tell whether this runs as root (needs --allow-run or --allow-sys)");
  if (uid !== 0) return none(`needs root (effective uid ${uid})`);
  const ip = which("ip");
  if (!ip) return none("`ip` (iproute2) not found; apt-get install iproute2");
  const nft = which("nft");
  if (!nft) return none("`nft` (nftables) not found; apt-get install nftables");
  // Root is not enough inside an unprivileged container: try a namespace with an nftables table in it.
  const ns = `${DEFAULT_PREFIX}-${Deno.pid}-probe${randomHex(3)}`;
  try {
    const add = runSync([ip, "netns", "add", ns]);
    if (add) return none(`cannot create a network namespace: ${add}`);
    const table = runSync([ip, "netns", "exec", ns, nft, "add", "table", "ip", "probe"]);
    if (table) return none(`nftables does not work in a network namespace: ${table}`);
    const setpriv = which("setpriv");
    const deathsig = setpriv ? [setpriv, "--pdeathsig", "KILL", "--"] : [];
    if (setpriv && runSync([...deathsig, "true"])) deathsig.length = 0; // too old for --pdeathsig
    return { reason: null, ip, nft, deathsig };
  } catch (error) {
    return none(`cannot run ${ip}: ${(error as Error).message}`);
  } finally {
    try {
      runSync([ip, "netns", "del", ns]);
    } catch {
      // never created
    }
  }
}

/** The effective uid: `Deno.uid()` (needs --allow-sys), else `id -u` (needs --allow-run); null if neither. */
function effectiveUid(): number | null {
  try {
    const uid = Deno.uid();
    if (uid !== null) return uid;
  } catch {
    // no --allow-sys
  }
  try {
    const out = new Deno.Command("id", { args: ["-u"], stdin: "null", stdout: "piped", stderr: "null" })
      .outputSync();
    const text = new TextDecoder().decode(out.stdout).trim();
    return out.success && /^\d+$/.test(text) ? Number(text) : null;
  } catch {
    return null; // no --allow-run (then `ip` could not run either)
  }
}

/** Runs a command to completion; returns null on success, else its first stderr line (or exit code). */
function runSync(cmd: string[]): string | null {
  const out = new Deno.Command(cmd[0]!, {
    args: cmd.slice(1),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  })
    .outputSync();
  if (out.success) return null;
  const text = new TextDecoder().decode(out.stderr).trim().split("\n")[0];
  return text || `exit code ${out.code}`;
}

function which(name: string): string | null {
  let path = "";
  try {
    path = Deno.env.get("PATH") ?? "";
  } catch {
    // no --allow-env: the usual places only
  }
  const dirs = [...path.split(":").filter((d) => d !== ""), "/usr/sbin", "/sbin", "/usr/bin", "/bin"];
  for (const dir of dirs) {
    try {
      const info = Deno.statSync(`${dir}/${name}`);
      if (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return null;
}

function randomHex(bytes: number): string {
  return [...crypto.getRandomValues(new Uint8Array(bytes))].map((b) => b.toString(16).padStart(2, "0")).join(
    "",
  );
}

// ---------------------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------------------

/** Options of {@linkcode NatTopology.spawn}. */
export interface SpawnOptions {
  /** Extra environment variables (over the test's environment without LOG_LEVEL/RUST_LOG). */
  env?: Record<string, string>;
  /** Working directory. @default {the topology's temp directory} */
  cwd?: string;
  /** Whether the process gets a stdin pipe ({@linkcode NsProcess.writeLine}). @default {true} */
  stdin?: boolean;
}

/** Collects a text stream by lines and lets callers wait for a line. */
class LineCollector {
  #partial = "";
  #done = false;
  readonly lines: string[] = [];
  readonly #wakers = new Wakers();
  readonly #abort = new AbortController();
  readonly finished: Promise<void>;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.finished = this.#read(stream);
  }

  /** Stops reading (cancels the stream), e.g. when a grandchild keeps the pipe open past the exit. */
  cancel(): void {
    this.#abort.abort();
  }

  get done(): boolean {
    return this.#done;
  }

  get text(): string {
    return this.lines.map((l) => `${l}\n`).join("") + this.#partial;
  }

  async #read(stream: ReadableStream<Uint8Array>): Promise<void> {
    try {
      const text = stream.pipeThrough(new TextDecoderStream(), { signal: this.#abort.signal });
      for await (const chunk of text) {
        const parts = (this.#partial + chunk).split("\n");
        this.#partial = parts.pop()!;
        if (parts.length > 0) {
          this.lines.push(...parts);
          this.#wakers.wakeAll();
        }
      }
    } catch {
      // the stream was cancelled or errored: what arrived so far stays readable
    } finally {
      if (this.#partial !== "") this.lines.push(this.#partial);
      this.#partial = "";
      this.#done = true;
      this.#wakers.wakeAll();
    }
  }

  /**
   * The first line at index >= `from` satisfying `match`, or null when the stream ended without one.
   *
   * @throws {DeadlineError} when `deadlineMs` passes first.
   */
  async waitFor(
    match: (line: string) => boolean,
    from: number,
    deadlineMs: number,
  ): Promise<{ line: string; index: number } | null> {
    const end = performance.now() + deadlineMs;
    for (let i = from;;) {
      for (; i < this.lines.length; i++) {
        if (match(this.lines[i]!)) return { line: this.lines[i]!, index: i };
      }
      if (this.#done) return null;
      const left = end - performance.now();
      if (left <= 0) throw new DeadlineError(deadlineMs);
      await this.#wakers.wait(left);
    }
  }
}

class DeadlineError extends Error {
  constructor(ms: number) {
    super(`deadline of ${ms} ms passed`);
    this.name = "DeadlineError";
  }
}

/** A process running inside one namespace of a {@linkcode NatTopology}. */
export class NsProcess {
  /** The namespace's node. */
  readonly node: NodeName;
  /** The command (without the `ip netns exec <ns>` prefix). */
  readonly command: readonly string[];
  /** The process id (`ip netns exec` replaces itself with the command, so this is the command's). */
  readonly pid: number;
  /** Resolves with the exit status. */
  readonly status: Promise<Deno.CommandStatus>;
  readonly #child: Deno.ChildProcess;
  readonly #stdout: LineCollector;
  readonly #stderr: LineCollector;
  readonly #stdin: WritableStreamDefaultWriter<Uint8Array> | null;
  readonly #encoder = new TextEncoder();
  #exited: Deno.CommandStatus | null = null;
  #stopping: Promise<Deno.CommandStatus> | null = null;

  /** @internal Use {@linkcode NatTopology.spawn}. */
  constructor(node: NodeName, command: readonly string[], child: Deno.ChildProcess, stdin: boolean) {
    this.node = node;
    this.command = command;
    this.#child = child;
    this.pid = child.pid;
    this.#stdout = new LineCollector(child.stdout);
    this.#stderr = new LineCollector(child.stderr);
    this.#stdin = stdin ? child.stdin.getWriter() : null;
    this.status = child.status.then((s) => this.#exited = s);
  }

  /** The exit status, once exited. */
  get exited(): Deno.CommandStatus | null {
    return this.#exited;
  }

  /** Complete stdout lines so far. */
  get stdoutLines(): readonly string[] {
    return this.#stdout.lines;
  }

  /** All of stdout so far. */
  get stdout(): string {
    return this.#stdout.text;
  }

  /** All of stderr so far. */
  get stderr(): string {
    return this.#stderr.text;
  }

  /** The number of complete stdout lines so far: pass it as `after` to wait only for newer lines. */
  mark(): number {
    return this.#stdout.lines.length;
  }

  /**
   * Waits for a stdout line matching `match` (at index >= `after`). `what` names it in the error message.
   *
   * @throws {Error} with the process's stderr when the deadline passes or stdout ends without a match.
   */
  async waitForLine(
    match: RegExp | ((line: string) => boolean),
    options: { after?: number; deadlineMs?: number; what?: string } = {},
  ): Promise<{ line: string; index: number }> {
    const what = options.what ??
      (typeof match === "function" ? "matching the predicate" : `matching ${match}`);
    const test = typeof match === "function" ? match : (line: string) => match.test(line);
    const deadlineMs = options.deadlineMs ?? 10_000;
    let found: { line: string; index: number } | null | undefined;
    try {
      found = await this.#stdout.waitFor(test, options.after ?? 0, deadlineMs);
    } catch (error) {
      if (!(error instanceof DeadlineError)) throw error;
      throw new Error(`${this.#describe()}: no stdout line ${what} within ${deadlineMs} ms${this.#tail()}`);
    }
    if (!found) {
      await this.wait(1_000).catch(() => {}); // for the exit code in the message
      throw new Error(`${this.#describe()}: stdout ended without a line ${what}${this.#tail()}`);
    }
    return found;
  }

  /** Writes one line to the process's stdin. */
  async writeLine(line: string): Promise<void> {
    if (!this.#stdin) throw new Error(`${this.#describe()} has no stdin pipe`);
    await this.#stdin.write(this.#encoder.encode(`${line}\n`));
  }

  /** Closes stdin (the process sees EOF). Idempotent. */
  async closeStdin(): Promise<void> {
    if (!this.#stdin) return;
    try {
      await this.#stdin.close();
    } catch {
      // already closed, or the process is gone
    }
  }

  /**
   * Stops the process: closes stdin, sends `signal`, SIGKILL after `graceMs`; waits for the exit and both
   * output streams. Idempotent.
   */
  stop(signal: Deno.Signal = "SIGTERM", graceMs = STOP_GRACE_MS): Promise<Deno.CommandStatus> {
    this.#stopping ??= (async () => {
      void this.closeStdin();
      if (!this.#exited) this.#signal(signal);
      await this.wait(graceMs).catch(() => this.#signal("SIGKILL"));
      return await this.#drain();
    })();
    return this.#stopping;
  }

  /** Waits for the process to exit by itself within `deadlineMs`; throws (without killing) otherwise. */
  async wait(deadlineMs: number): Promise<Deno.CommandStatus> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), deadlineMs));
    const first = await Promise.race([this.status, late]);
    clearTimeout(timer);
    if (first === "late") throw new Error(`${this.#describe()} did not exit within ${deadlineMs} ms`);
    return first;
  }

  /** Waits for the exit, then for stdout and stderr to end (cancelling them after the grace time). */
  async #drain(): Promise<Deno.CommandStatus> {
    const status = await this.status;
    await this.closeStdin();
    const streams = Promise.all([this.#stdout.finished, this.#stderr.finished]);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), STOP_GRACE_MS));
    if (await Promise.race([streams, late]) === "late") {
      this.#stdout.cancel();
      this.#stderr.cancel();
    }
    clearTimeout(timer);
    await streams;
    return status;
  }

  #signal(signal: Deno.Signal): void {
    try {
      this.#child.kill(signal);
    } catch {
      // it exited in the meantime
    }
  }

  /** @internal SIGKILL now, when a graceful stop failed. */
  killNow(): void {
    if (!this.#exited) this.#signal("SIGKILL");
  }

  #describe(): string {
    const what = this.command.map((a) => a.split("/").pop()).join(" ");
    return `[${this.node}] ${what.length > 120 ? `${what.slice(0, 117)}...` : what} (pid ${this.pid})`;
  }

  #tail(): string {
    const exited = this.#exited ? `\nexit code ${this.#exited.code}` : "";
    const err = this.#stderr.text.split("\n").slice(-30).join("\n");
    const out = this.#stdout.text.split("\n").slice(-10).join("\n");
    return `${exited}\nstdout (tail):\n${out}\nstderr (tail):\n${err}`;
  }
}

// ---------------------------------------------------------------------------------------------------------
// The topology
// ---------------------------------------------------------------------------------------------------------

/** Options of {@linkcode createTopology}. */
export interface TopologyOptions {
  /** Namespace name prefix (letters, digits, `_`). @default {"p2pnat"} */
  prefix?: string;
  /** nat1's behaviour. @default {"endpoint-independent"} */
  nat1?: NatMode;
  /** nat2's behaviour. @default {"endpoint-independent"} */
  nat2?: NatMode;
  /** Most time building may take (it usually takes 0.2-0.5 s). @default {15_000} */
  deadlineMs?: number;
}

/** The result of {@linkcode NatTopology.exec}. */
export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** A built topology. Create with {@linkcode createTopology}; always {@linkcode destroy} (or `await using`). */
export class NatTopology implements AsyncDisposable {
  /** This run's id (`<prefix>-<pid>-<random>`), the common part of every namespace name. */
  readonly id: string;
  /** The namespace name of each node. */
  readonly ns: Readonly<Record<NodeName, string>>;
  /** A temp directory for config files and process working directories, removed on destroy. */
  readonly tempDir: string;
  readonly #modes: Record<NatName, NatMode> = {
    nat1: "endpoint-independent",
    nat2: "endpoint-independent",
  };
  readonly #processes = new Set<NsProcess>();
  readonly #created: string[] = [];
  #watchdog: Deno.ChildProcess | null = null;
  #destroying: Promise<void> | null = null;

  /** @internal Use {@linkcode createTopology}. */
  constructor(id: string, tempDir: string) {
    this.id = id;
    this.tempDir = tempDir;
    this.ns = Object.freeze(
      Object.fromEntries(NODES.map((n) => [n, `${id}-${n}`])) as Record<NodeName, string>,
    );
  }

  /** The current mode of a NAT. */
  natMode(nat: NatName): NatMode {
    return this.#modes[nat];
  }

  /** Processes started and not yet stopped. */
  get processes(): readonly NsProcess[] {
    return [...this.#processes];
  }

  /**
   * Runs a command to completion inside a namespace (`ip netns exec <ns> ...cmd`).
   *
   * @throws {Error} when it fails (unless `allowFailure`) or runs past `deadlineMs`.
   */
  async exec(
    node: NodeName,
    cmd: string[],
    options: { stdin?: string; allowFailure?: boolean; deadlineMs?: number } = {},
  ): Promise<ExecResult> {
    return await run([tools().ip, "netns", "exec", this.ns[node], ...cmd], options);
  }

  /** Starts a long-running command inside a namespace; it is stopped by {@linkcode destroy} at the latest. */
  spawn(node: NodeName, cmd: string[], options: SpawnOptions = {}): NsProcess {
    if (this.#destroying) throw new Error("topology is torn down");
    const stdin = options.stdin ?? true;
    const { ip, deathsig } = tools();
    const child = new Deno.Command(ip, {
      // `ip netns exec` and setpriv exec in place: the pid is the command's. The parent-death signal kills it
      // should this process die without a teardown (deno test exits on SIGINT without running listeners).
      args: ["netns", "exec", this.ns[node], ...deathsig, ...cmd],
      cwd: options.cwd ?? this.tempDir,
      env: childEnv(options.env),
      clearEnv: true,
      stdin: stdin ? "piped" : "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const proc = new NsProcess(node, cmd, child, stdin);
    this.#processes.add(proc);
    return proc;
  }

  /** {@linkcode spawn} of `deno <args>` (this test's Deno binary). */
  spawnDeno(node: NodeName, args: string[], options: SpawnOptions = {}): NsProcess {
    return this.spawn(node, [Deno.execPath(), ...args], options);
  }

  /** Stops a process started here (SIGTERM, SIGKILL after the grace time) and forgets it. */
  async stop(proc: NsProcess, signal: Deno.Signal = "SIGTERM"): Promise<Deno.CommandStatus> {
    try {
      return await proc.stop(signal);
    } finally {
      this.#processes.delete(proc);
    }
  }

  /** Replaces a NAT's rules (atomically; existing conntrack entries and their mappings stay). */
  async setNatMode(nat: NatName, mode: NatMode): Promise<void> {
    if (!NAT_MODES.includes(mode)) throw new TypeError(`unknown NAT mode ${JSON.stringify(mode)}`);
    const rules = natRules(mode, nat);
    // Declaring the table first makes the delete valid when it does not exist yet; one transaction.
    await this.exec(nat, [tools().nft, "-f", "-"], {
      stdin: `table ip ${NFT_TABLE}\ndelete table ip ${NFT_TABLE}\n${rules}`,
    });
    this.#modes[nat] = mode;
  }

  /** The NAT's current ruleset (`nft list ruleset`), for diagnostics. */
  async ruleset(nat: NatName): Promise<string> {
    return (await this.exec(nat, [tools().nft, "list", "ruleset"])).stdout;
  }

  /**
   * Unsolicited inbound UDP packets the NAT dropped so far (0 in `"full-cone"`, which lets every one in).
   */
  async droppedInbound(nat: NatName): Promise<number> {
    const out = await this.exec(nat, [tools().nft, "-j", "list", "counter", "ip", NFT_TABLE, DROP_COUNTER], {
      allowFailure: true,
    });
    if (out.code !== 0) return 0;
    const parsed = JSON.parse(out.stdout) as { nftables: { counter?: { packets: number } }[] };
    return parsed.nftables.find((e) => e.counter)?.counter?.packets ?? 0;
  }

  /** Stops every process, deletes the namespaces and the temp directory. Idempotent; never throws. */
  destroy(): Promise<void> {
    this.#destroying ??= (async () => {
      await Promise.all([...this.#processes].map((p) => p.stop().catch(() => p.killNow())));
      this.#processes.clear();
      const { ip } = tools();
      for (const ns of [...this.#created].reverse()) {
        // Anything still in the namespace was started by this topology (the name is unique to this run):
        // e.g. a grandchild of a process above. Kill it by pid before the namespace goes.
        const pids = await run([ip, "netns", "pids", ns], { allowFailure: true });
        for (const pid of pids.stdout.split(/\s+/).filter((p) => /^\d+$/.test(p))) {
          try {
            Deno.kill(Number(pid), "SIGKILL");
          } catch {
            // gone
          }
        }
        await run([ip, "netns", "del", ns], { allowFailure: true });
      }
      this.#created.length = 0;
      await Deno.remove(this.tempDir, { recursive: true }).catch(() => {});
      await this.#stopWatchdog();
    })();
    return this.#destroying;
  }

  /** Same as {@linkcode destroy}. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.destroy();
  }

  /** @internal Builds the topology; the caller destroys on failure. */
  async build(nat1: NatMode, nat2: NatMode, deadlineMs: number): Promise<void> {
    const { ip } = tools();
    const end = performance.now() + deadlineMs;
    const left = () => {
      const ms = end - performance.now();
      if (ms <= 0) throw new Error(`building the topology took longer than ${deadlineMs} ms`);
      return Math.min(ms, COMMAND_DEADLINE_MS);
    };
    this.#startWatchdog();
    for (const node of NODES) {
      await run([ip, "netns", "add", this.ns[node]], { deadlineMs: left() });
      this.#created.push(this.ns[node]);
    }
    const ipn = (node: NodeName, ...args: string[]) =>
      run([ip, "-n", this.ns[node], ...args], { deadlineMs: left() });
    for (const node of NODES) await ipn(node, "link", "set", "lo", "up");
    // pub: a bridge with the server's address; one port per NAT.
    await ipn("pub", "link", "add", "br0", "type", "bridge");
    await ipn("pub", "addr", "add", `${TOPOLOGY.server}/${TOPOLOGY.publicPrefix}`, "dev", "br0");
    await ipn("pub", "addr", "add", `${TOPOLOGY.serverAlt}/${TOPOLOGY.publicPrefix}`, "dev", "br0");
    await ipn("pub", "link", "set", "br0", "up");
    for (const nat of ["nat1", "nat2"] as const) {
      const port = `to-${nat}`;
      const t = TOPOLOGY[nat];
      const client = nat === "nat1" ? "c1" : "c2";
      await ipn("pub", "link", "add", port, "type", "veth", "peer", "name", "wan", "netns", this.ns[nat]);
      await ipn("pub", "link", "set", port, "master", "br0");
      await ipn("pub", "link", "set", port, "up");
      await ipn(nat, "addr", "add", `${t.public}/${TOPOLOGY.publicPrefix}`, "dev", "wan");
      await ipn(nat, "link", "set", "wan", "up");
      await ipn(nat, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns", this.ns[client]);
      await ipn(nat, "addr", "add", `${t.private}/${t.lanPrefix}`, "dev", "lan");
      await ipn(nat, "link", "set", "lan", "up");
      // sysctl lives in /usr/sbin, which a CI's PATH may lack: write the setting directly instead.
      await this.exec(nat, ["/bin/sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"], {
        deadlineMs: left(),
      });
      await ipn(client, "addr", "add", `${t.client}/${t.lanPrefix}`, "dev", "eth0");
      await ipn(client, "link", "set", "eth0", "up");
      await ipn(client, "route", "add", "default", "via", t.private);
    }
    left();
    await this.setNatMode("nat1", nat1);
    left();
    await this.setNatMode("nat2", nat2);
  }

  /**
   * Starts the watchdog: a shell that waits for EOF on its stdin (a pipe only this process writes to), then
   * kills whatever still runs in the topology's namespaces and deletes them and the temp directory. EOF
   * comes from {@linkcode destroy} (then it finds nothing left to do) or from this process dying.
   */
  #startWatchdog(): void {
    const script = `trap '' INT HUP TERM QUIT
ip="$1"; tmp="$2"; shift 2
while read -r _; do :; done
for ns in "$@"; do
  for pid in $("$ip" netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null; done
  "$ip" netns del "$ns" 2>/dev/null
done
rm -rf "$tmp"
exit 0`;
    this.#watchdog = new Deno.Command("/bin/sh", {
      args: ["-c", script, "p2pnat-watchdog", tools().ip, this.tempDir, ...NODES.map((n) => this.ns[n])],
      stdin: "piped",
      stdout: "null",
      stderr: "null",
    }).spawn();
  }

  async #stopWatchdog(): Promise<void> {
    const dog = this.#watchdog;
    if (!dog) return;
    this.#watchdog = null;
    await dog.stdin.close().catch(() => {});
    let timer: ReturnType<typeof setTimeout> | undefined;
    const late = new Promise<"late">((resolve) => timer = setTimeout(() => resolve("late"), STOP_GRACE_MS));
    if (await Promise.race([dog.status, late]) === "late") {
      try {
        dog.kill("SIGKILL");
      } catch {
        // gone
      }
    }
    clearTimeout(timer);
    await dog.status;
  }
}

/** The nftables table of a NAT in `mode` (the public interface is `wan`, the LAN `lan`). */
function natRules(mode: NatMode, nat: NatName): string {
  const { public: pub, client } = TOPOLOGY[nat];
  const addressFiltering = NAT_BEHAVIOUR[mode].filtering === "address-dependent";
  const snat = mode === "address-and-port-dependent"
    ? `    oifname "wan" masquerade random`
    : mode === "address-dependent-mapping"
    // One public port per (client address and port, remote IP): the same for every port of that IP.
    ? `    oifname "wan" meta l4proto udp snat to ${pub} : jhash ip saddr . udp sport . ip daddr mod 20000 offset 30000`
    : `    oifname "wan" masquerade`;
  const lines = [
    `table ip ${NFT_TABLE} {`,
    `  counter ${DROP_COUNTER} {`,
    `  }`,
    `  chain postrouting {`,
    `    type nat hook postrouting priority srcnat; policy accept;`,
    snat,
    ...(mode === "address-dependent-mapping" ? [`    oifname "wan" masquerade`] : []),
    `  }`,
  ];
  if (addressFiltering) {
    // Address-dependent filtering: each outbound packet, seen after the source NAT (priority srcnat + 10, so
    // its source port is the public one), records "remote IP . public port -> private port"; an unsolicited
    // inbound packet from that IP to that port, from any of its ports, is DNATed to the client's port.
    lines.push(
      `  map remotes {`,
      `    type ipv4_addr . inet_service : inet_service`,
      `    size 65535`,
      `    flags dynamic,timeout`,
      `    timeout ${FILTER_MEMORY_S}s`,
      `  }`,
      `  chain record {`,
      `    type filter hook postrouting priority srcnat + 10; policy accept;`,
      `    oifname "wan" meta l4proto udp update @remotes { ip daddr . udp sport : ct original proto-src }`,
      `  }`,
      `  chain prerouting {`,
      `    type nat hook prerouting priority dstnat; policy accept;`,
      `    iifname "wan" meta l4proto udp dnat to ${client} : ip saddr . udp dport map @remotes`,
      `  }`,
    );
  }
  if (mode === "full-cone") {
    lines.push(
      `  chain prerouting {`,
      `    type nat hook prerouting priority dstnat; policy accept;`,
      `    iifname "wan" meta l4proto udp dnat to ${client}`,
      `  }`,
    );
  }
  if (mode === "endpoint-independent" || addressFiltering) {
    // Like a home router's firewall: unsolicited inbound UDP to the NAT itself is dropped before its conntrack
    // entry is confirmed. Otherwise a punch packet arriving first leaves an entry that takes the client's
    // public port, and masquerade then picks another one for the client's own punch (the mapping changes).
    lines.push(
      `  chain input {`,
      `    type filter hook input priority filter; policy accept;`,
      `    iifname "wan" ct state established,related accept`,
      `    iifname "wan" meta l4proto udp counter name "${DROP_COUNTER}" drop`,
      `  }`,
    );
  }
  if (mode === "address-and-port-dependent") {
    lines.push(
      `  chain forward {`,
      `    type filter hook forward priority filter; policy accept;`,
      `    iifname "wan" ct state established,related accept`,
      `    iifname "wan" counter name "${DROP_COUNTER}" drop`,
      `  }`,
      `  chain input {`,
      `    type filter hook input priority filter; policy accept;`,
      `    iifname "wan" ct state established,related accept`,
      `    iifname "wan" meta l4proto udp counter name "${DROP_COUNTER}" drop`,
      `  }`,
    );
  }
  lines.push(`}`, ``);
  return lines.join("\n");
}

async function run(
  cmd: string[],
  options: { stdin?: string; allowFailure?: boolean; deadlineMs?: number } = {},
): Promise<ExecResult> {
  const deadlineMs = options.deadlineMs ?? COMMAND_DEADLINE_MS;
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), deadlineMs);
  try {
    const child = new Deno.Command(cmd[0]!, {
      args: cmd.slice(1),
      stdin: options.stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
      signal: controller.signal,
    }).spawn();
    if (options.stdin !== undefined) {
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode(options.stdin)).catch(() => {});
      await writer.close().catch(() => {});
    }
    const out = await child.output();
    const decoder = new TextDecoder();
    const result = { code: out.code, stdout: decoder.decode(out.stdout), stderr: decoder.decode(out.stderr) };
    if (controller.signal.aborted) {
      throw new Error(`${cmd.join(" ")} did not finish within ${deadlineMs} ms`);
    }
    if (result.code !== 0 && !options.allowFailure) {
      throw new Error(`${cmd.join(" ")} failed (exit ${result.code}): ${result.stderr.trim()}`);
    }
    return result;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Removes namespaces named `<prefix>-<pid>-...` whose creating process is gone (left behind by a run that
 * was killed). Namespaces of live processes (parallel runs) are left alone. Returns the names removed.
 */
export async function sweepStale(prefix = DEFAULT_PREFIX): Promise<string[]> {
  const { ip } = tools();
  const list = await run([ip, "netns", "list"], { allowFailure: true });
  const pattern = new RegExp(`^${prefix}-(\\d+)-[0-9a-z]+-`);
  const removed: string[] = [];
  for (const line of list.stdout.split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const m = pattern.exec(name);
    if (!m || Number(m[1]) === Deno.pid || processAlive(Number(m[1]))) continue;
    const pids = await run([ip, "netns", "pids", name], { allowFailure: true });
    if (pids.stdout.trim() !== "") continue; // something still runs there: not ours to judge
    const del = await run([ip, "netns", "del", name], { allowFailure: true });
    if (del.code === 0) removed.push(name);
  }
  return removed;
}

/** Whether `pid` runs; true unless it is positively gone (a wrong "gone" would delete a live run's namespaces). */
function processAlive(pid: number): boolean {
  try {
    Deno.statSync(`/proc/${pid}`);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    // Without --allow-all, Deno refuses /proc paths (NotCapable): ask the shell instead.
  }
  try {
    const out = new Deno.Command("/bin/sh", {
      args: ["-c", 'kill -0 "$1" 2>/dev/null', "sh", String(pid)],
      stdin: "null",
      stdout: "null",
      stderr: "null",
    }).outputSync();
    return out.success;
  } catch {
    return true;
  }
}

/**
 * Builds the topology (about 0.2 s): five namespaces, the bridge and veths, addresses, routes, forwarding
 * and the NAT rules. Stale namespaces of dead runs with the same prefix are swept first.
 *
 * @throws {Error} when the test bed is unavailable or a command fails (what was built is torn down).
 */
export async function createTopology(options: TopologyOptions = {}): Promise<NatTopology> {
  const prefix = options.prefix ?? DEFAULT_PREFIX;
  if (!/^[A-Za-z0-9_]{1,16}$/.test(prefix)) throw new TypeError(`bad namespace prefix ${prefix}`);
  tools();
  await sweepStale(prefix);
  const tempDir = await Deno.makeTempDir({ prefix: "p2p_nat_test_" });
  const topology = new NatTopology(`${prefix}-${Deno.pid}-${randomHex(4)}`, tempDir);
  try {
    await topology.build(
      options.nat1 ?? "endpoint-independent",
      options.nat2 ?? "endpoint-independent",
      options.deadlineMs ?? 15_000,
    );
  } catch (error) {
    await topology.destroy();
    throw error;
  }
  return topology;
}

if (import.meta.main) {
  if (Deno.args[0] !== "--sweep") {
    console.error("usage: deno run -A tests/helpers/netns.ts --sweep [PREFIX]");
    Deno.exit(2);
  }
  const reason = unavailableReason();
  if (reason !== null) {
    console.error(`cannot sweep: ${reason}`);
    Deno.exit(1);
  }
  for (const name of await sweepStale(Deno.args[1])) console.log(`removed ${name}`);
}
