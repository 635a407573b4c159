/**
 * `p2p_server status`: reads a running server's operations endpoint (`/api/stats`, `/peers`) and prints
 * what `wg show` prints for WireGuard: the server, then one block per peer (where it is, its latest
 * handshake, when it was last heard from, its RTT and its transfer). `--table` prints one line per peer
 * instead, `--json` the raw answers.
 *
 *     p2p_server status [-c FILE | --address ADDR] [--token TOKEN] [--table | --json]
 *
 * The address and token come from `--address`/`--token`, else from the config file's `metrics_address` and
 * `metrics_token` (`-c`); the token also from `P2P_METRICS_TOKEN`. Exit status: 0 when the server answered,
 * 1 when it could not be reached or refused, 2 for a bad command line.
 *
 * @module
 */
import { formatSocketAddr, parseSocketAddr } from "./wire/address.ts";
import { ConfigError, parseConfigFile } from "./config.ts";
import type { OpsPeer, OpsServerInfo } from "./ops_server.ts";
import type { StatsSnapshot } from "./core/stats.ts";
import { parseArgs } from "./deps/flags.ts";

/** The usage text of `p2p_server status`. */
export const STATUS_USAGE =
  `Usage: p2p_server status [-c FILE | --address ADDR] [--token TOKEN] [--table | --json]

Prints a running server's state and its peers, read from its operations endpoint (metrics_address).
  -c, --config <FILE>    Read metrics_address and metrics_token from this config file
      --address <ADDR>   The operations endpoint, ip:port (overrides the config file)
      --token <TOKEN>    Bearer token, when metrics_token is set [default: $P2P_METRICS_TOKEN]
      --table            One line per peer instead of one block per peer
      --json             The server's answers as JSON (server, stats, peers)
  -h, --help             Print this help`;

/** What the status command read from the server. */
export interface StatusData {
  /** Who the server is (absent from servers older than this command). */
  server: OpsServerInfo | null;
  /** The stats snapshot. */
  stats: StatsSnapshot;
  /** Every peer. */
  peers: OpsPeer[];
  /** Server time of the answer, unix ms. */
  serverTime: number;
  /** The operations endpoint's base URL. */
  url: string;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB"];

/** `1536` -> `1.50 KiB`, as `wg show` writes transfer amounts. */
export function formatBytes(n: number): string {
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(2)} ${UNITS[unit]}`;
}

/** `125` -> `2 minutes, 5 seconds`, as `wg show` writes ages (at most the two largest units). */
export function formatDuration(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const parts: [number, string][] = [
    [Math.floor(s / 86_400), "day"],
    [Math.floor((s % 86_400) / 3600), "hour"],
    [Math.floor((s % 3600) / 60), "minute"],
    [s % 60, "second"],
  ];
  const first = parts.findIndex(([v]) => v > 0);
  if (first === -1) return "0 seconds";
  return parts.slice(first, first + 2).filter(([v]) => v > 0).map(([v, unit]) =>
    `${v} ${unit}${v === 1 ? "" : "s"}`
  )
    .join(", ");
}

function transfer(p: OpsPeer): string {
  if (p.bytes_in === null || p.bytes_out === null) return "not counted by this server";
  return `${formatBytes(p.bytes_in)} received, ${formatBytes(p.bytes_out)} sent ` +
    `(${p.datagrams_in} / ${p.datagrams_out} datagrams)`;
}

function rtt(p: OpsPeer): string {
  return p.rtt_ms === null ? "no sample yet" : `${p.rtt_ms.toFixed(2)} ms`;
}

function byLatestHandshake(peers: OpsPeer[]): OpsPeer[] {
  return [...peers].sort((a, b) => a.handshake_age_seconds - b.handshake_age_seconds);
}

function counts(values: Record<string, number>): string {
  const entries = Object.entries(values).filter(([, n]) => n > 0);
  return entries.length === 0 ? "" : ` (${entries.map(([k, n]) => `${k} ${n}`).join(", ")})`;
}

/**
 * The `wg show`-like text: the server block, then one block per peer, most recent handshake first.
 *
 * @example
 * ```ts
 * import { formatBytes, formatDuration } from "./status_command.ts";
 * if (formatBytes(1536) !== "1.50 KiB" || formatDuration(125) !== "2 minutes, 5 seconds") throw new Error();
 * ```
 */
export function formatStatus(data: StatusData): string {
  const s = data.stats;
  const info = data.server;
  const lines: string[] = [];
  lines.push(info ? `server: ${info.name} ${info.version}` : "server: p2p_server");
  if (info) {
    lines.push(`  node id: ${info.node_id}`);
    lines.push(`  public key: ${info.public_key ?? "none (auth off)"}`);
    lines.push(`  listening on: ${info.listen_addr} (udp)`);
    if (info.instance !== null) lines.push(`  cluster instance: ${info.instance}`);
  }
  lines.push(`  operations: ${data.url}/`);
  lines.push(`  uptime: ${formatDuration(s.uptimeSeconds)}`);
  lines.push(`  peers: ${s.peers.authenticated} authenticated, ${s.peers.handshaking} handshaking`);
  lines.push(
    `  transfer: ${formatBytes(s.bytesReceived)} received, ${formatBytes(s.bytesSent)} sent ` +
      `(${s.datagramsReceived} / ${s.datagramsSent} datagrams)`,
  );
  const failed = Object.values(s.handshakesFailed).reduce((a, b) => a + b, 0);
  lines.push(`  handshakes: ${s.handshakesOk} ok, ${failed} refused${counts(s.handshakesFailed)}`);
  lines.push(`  dropped: ${s.droppedTotal}${counts(s.drops)}`);
  const stun = s.stun;
  if (stun && stun.requests > 0) {
    const changed = stun.changeRequests ? ` (${stun.changeRequests} from another socket)` : "";
    lines.push(
      `  stun: ${stun.requests} requests, ${stun.responses} answered${changed}${counts(stun.errors)}`,
    );
  }
  if (s.rttMs) lines.push(`  rtt: ${s.rttMs.smoothed.toFixed(2)} ms smoothed`);
  for (const p of byLatestHandshake(data.peers)) {
    lines.push("");
    lines.push(`peer: ${p.id}`);
    const traits = [p.keyed ? "keyed" : "unkeyed", ...(p.extensions ? ["extensions"] : [])].join(", ");
    lines.push(`  name: ${p.name} ${p.version} (${traits})`);
    lines.push(
      `  endpoint: ${p.addr}` +
        (p.behind_nat ? ` (declared ${p.listen_addr}: behind NAT)` : ` (as declared)`),
    );
    lines.push(`  network: ${p.network}`);
    if (p.state !== "authenticated") lines.push(`  state: ${p.state}`);
    lines.push(`  latest handshake: ${formatDuration(p.handshake_age_seconds)} ago`);
    lines.push(`  last seen: ${formatDuration(p.last_seen_age_seconds)} ago`);
    lines.push(`  rtt: ${rtt(p)}`);
    lines.push(`  transfer: ${transfer(p)}`);
  }
  return lines.join("\n");
}

/** One line per peer under a header, columns padded to fit. */
export function formatStatusTable(data: StatusData): string {
  const header = [
    "NAME",
    "NODE ID",
    "ENDPOINT",
    "NAT",
    "KEYED",
    "HANDSHAKE",
    "LAST SEEN",
    "RTT",
    "IN",
    "OUT",
  ];
  const rows = byLatestHandshake(data.peers).map((p) => [
    p.name,
    p.id,
    p.addr,
    p.behind_nat ? "yes" : "no",
    p.keyed ? "yes" : "no",
    `${Math.floor(p.handshake_age_seconds)}s ago`,
    `${Math.floor(p.last_seen_age_seconds)}s ago`,
    p.rtt_ms === null ? "-" : `${p.rtt_ms.toFixed(2)} ms`,
    p.bytes_in === null ? "-" : formatBytes(p.bytes_in),
    p.bytes_out === null ? "-" : formatBytes(p.bytes_out),
  ]);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ").trimEnd();
  const info = data.server;
  const title = info
    ? `${info.name} ${info.version} ${info.node_id} on ${info.listen_addr}: ${data.peers.length} peer(s)`
    : `p2p_server: ${data.peers.length} peer(s)`;
  return [title, line(header), ...rows.map(line)].join("\n");
}

class StatusError extends Error {
  constructor(message: string, readonly code: number) {
    super(message);
  }
}

/** Most `/peers` pages read (1000 peers each). */
const MAX_PAGES = 1000;

async function getJson(url: string, token: string | null): Promise<unknown> {
  let res: Response;
  try {
    res = await fetch(url, {
      headers: token !== null ? { authorization: `Bearer ${token}` } : {},
      signal: AbortSignal.timeout(5_000),
    });
  } catch (error) {
    const reason = error instanceof DOMException && error.name === "TimeoutError"
      ? "no answer within 5 s"
      : networkReason(error);
    throw new StatusError(
      `Cannot reach the operations endpoint "${new URL(url).origin}": ${reason} ` +
        `(is the server running with metrics_address set to it?)`,
      1,
    );
  }
  if (res.status === 401) {
    await res.body?.cancel();
    throw new StatusError(
      `The operations endpoint "${new URL(url).origin}" wants a token: pass --token, set ` +
        `P2P_METRICS_TOKEN, or -c the config file with metrics_token`,
      1,
    );
  }
  if (!res.ok) {
    await res.body?.cancel();
    throw new StatusError(`"${url}" answered HTTP ${res.status}`, 1);
  }
  return await res.json();
}

/** The operating system's words from a failed fetch (`Connection refused`), else its message. */
function networkReason(error: unknown): string {
  const cause = (error as { cause?: unknown }).cause;
  const text = cause instanceof Error ? cause.message : (error as Error).message;
  const m = /: ([^:]*?)(?: \(os error \d+\))?$/.exec(text);
  return m?.[1] ? m[1] : text;
}

/** Reads everything the status needs from the operations endpoint at `base` (`http://ip:port`). */
export async function readStatus(base: string, token: string | null): Promise<StatusData> {
  const stats = await getJson(`${base}/api/stats`, token) as {
    server?: OpsServerInfo;
    stats: StatsSnapshot;
    server_time: number;
  };
  const peers: OpsPeer[] = [];
  let offset: number | null = 0;
  for (let page = 0; offset !== null && page < MAX_PAGES; page++) {
    const body = await getJson(`${base}/peers?offset=${offset}&limit=1000`, token) as {
      peers: OpsPeer[];
      next_offset: number | null;
    };
    peers.push(...body.peers);
    offset = body.next_offset;
  }
  return {
    server: stats.server ?? null,
    stats: stats.stats,
    peers,
    serverTime: stats.server_time,
    url: base,
  };
}

/** An address to connect to: an unspecified listen host (`0.0.0.0`, `::`) means this machine's loopback. */
function connectable(address: string): string {
  const parsed = parseSocketAddr(address);
  if (typeof parsed === "string") {
    throw new StatusError(`Invalid operations address "${address}": ${parsed}`, 2);
  }
  const hostname = parsed.hostname === "0.0.0.0"
    ? "127.0.0.1"
    : parsed.hostname === "::"
    ? "::1"
    : parsed.hostname;
  return `http://${formatSocketAddr({ hostname, port: parsed.port })}`;
}

function envToken(): string | null {
  try {
    return Deno.env.get("P2P_METRICS_TOKEN") ?? null;
  } catch {
    return null;
  }
}

/**
 * Runs `p2p_server status` with `args` (after the word `status`); prints to stdout, errors to stderr.
 *
 * @returns The exit status.
 */
export async function runStatus(args: string[]): Promise<number> {
  try {
    let values;
    try {
      ({ values } = parseArgs({
        args: args[0] === "--" ? args.slice(1) : args,
        strict: true,
        allowPositionals: false,
        options: {
          config: { type: "string", short: "c" },
          address: { type: "string" },
          token: { type: "string" },
          table: { type: "boolean" },
          json: { type: "boolean" },
          help: { type: "boolean", short: "h" },
        },
      }));
    } catch (error) {
      throw new StatusError(`${(error as Error).message.split("\n")[0]}`, 2);
    }
    if (values.help) {
      console.log(STATUS_USAGE);
      return 0;
    }
    let address = values.address;
    let token = values.token ?? envToken();
    if (values.config !== undefined) {
      let text: string;
      try {
        text = await Deno.readTextFile(values.config);
      } catch (error) {
        throw new StatusError(`Cannot read config file "${values.config}": ${(error as Error).message}`, 2);
      }
      try {
        const { config } = parseConfigFile(text, values.config);
        address ??= config.metricsAddress ?? undefined;
        token ??= config.metricsToken ?? null;
      } catch (error) {
        if (error instanceof ConfigError) throw new StatusError(error.message, 2);
        throw error;
      }
      if (address === undefined) {
        throw new StatusError(
          `Config file "${values.config}" sets no metrics_address: the server has no operations endpoint to read`,
          2,
        );
      }
    }
    if (address === undefined) {
      throw new StatusError(
        "p2p_server status needs the operations endpoint: --address ip:port, or -c a config file with metrics_address",
        2,
      );
    }
    const data = await readStatus(connectable(address), token);
    if (values.json) {
      console.log(JSON.stringify({ server: data.server, stats: data.stats, peers: data.peers }, null, 2));
    } else console.log(values.table ? formatStatusTable(data) : formatStatus(data));
    return 0;
  } catch (error) {
    if (!(error instanceof StatusError)) throw error;
    console.error(`error: ${error.message}`);
    if (error.code === 2) console.error("run 'p2p_server status --help' for usage");
    return error.code;
  }
}
