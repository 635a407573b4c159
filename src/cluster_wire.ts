/**
 * Cluster mode, what goes over the wire to Redis: the key and channel names, the Lua scripts (sent by
 * `EVALSHA`, with `EVAL` when Redis answers `NOSCRIPT`), and the checks of what comes back from Redis or from
 * another instance, and the full read of the directory (over a pipeline function it is given). No state
 * here; `src/cluster.ts` runs the commands.
 *
 * Every key and channel of one deployment carries the same hash tag, `{<key_prefix>}`, so that they all live
 * in one slot of a Redis Cluster: a script may touch any of them, a pipeline goes to one node, and sharded
 * pub/sub (`SPUBLISH`/`SSUBSCRIBE`) stays on that node's shard. See docs/cluster.md.
 *
 * @module
 */
import { type ClusterMessage, type DirectoryRecord, INSTANCE_ID, parseRecord } from "./core/directory.ts";
import { isJsonObject, type Json, parsePeerInfo } from "./wire/mod.ts";
import { type ClusterConfig, ConfigError } from "./config.ts";
import { sha1Hex } from "./deps/crypto.ts";

/** A Redis command: its name, then its arguments. */
export type RedisCommand = readonly (string | number)[];

/** Key and channel names of one deployment (one `key_prefix`). */
export class ClusterKeys {
  /** The hash tag every name starts with. */
  readonly tag: string;
  /** The set of node ids that have (or recently had) a directory entry: what a full read walks. */
  readonly index: string;
  /** The channel of joins, leaves and goodbyes. */
  readonly events: string;
  /** `PUBLISH`, or `SPUBLISH` on Redis Cluster (sharded pub/sub, kept on the directory's shard). */
  readonly publish: "PUBLISH" | "SPUBLISH";

  /**
   * @param prefix The deployment's `key_prefix` (printable ASCII without spaces, possibly empty).
   * @param sharded True on Redis Cluster: messages go out with `SPUBLISH`.
   */
  constructor(prefix: string, sharded: boolean) {
    // An empty tag ("{}") would not be a hash tag at all; a space cannot occur in a prefix, so "{ }" is no
    // other deployment's tag.
    this.tag = `{${prefix === "" ? " " : prefix}}`;
    this.index = `${this.tag}peers`;
    this.events = `${this.tag}events`;
    this.publish = sharded ? "SPUBLISH" : "PUBLISH";
  }

  /** The directory entry of one node: `"<instance> <record JSON>"`. */
  peer(id: string): string {
    return `${this.tag}peer:${id}`;
  }

  /** An instance's liveness entry. */
  instance(instance: string): string {
    return `${this.tag}instance:${instance}`;
  }

  /** An instance's own channel (relays, their answers, introductions, evictions). */
  channel(instance: string): string {
    return `${this.tag}to:${instance}`;
  }
}

/** A Lua script, sent by its SHA-1. */
export class Script {
  readonly source: string;
  readonly sha: string;

  constructor(source: string) {
    this.source = source.trim();
    this.sha = sha1Hex(this.source);
  }

  /** The `EVALSHA` command running the script on `keys` with `args`. */
  call(keys: readonly string[], args: readonly (string | number)[]): RedisCommand {
    return ["EVALSHA", this.sha, keys.length, ...keys, ...args];
  }
}

/**
 * Claims peers. KEYS: the index, then one entry per peer. ARGV: instance, ttl ms, channel ('' for none),
 * publish command, then per peer: force ('1' for a keyed peer: its key proves the id), id, record. Sets each
 * entry to `"<instance> <record>"` unless another instance holds it (and the claim is not forced), adds the
 * ids set to the index and announces their records. Returns the 1-based positions of the claims refused.
 */
export const CLAIM = new Script(`
local me, ttl, channel, pub = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local joined, lost, ids = {}, {}, {}
for i = 2, #KEYS do
  local j = 5 + 3 * (i - 2)
  local cur = redis.call('GET', KEYS[i])
  local owner = cur and string.match(cur, '^(%S+) ')
  if owner and owner ~= me and ARGV[j] ~= '1' then
    lost[#lost + 1] = i - 1
  else
    redis.call('SET', KEYS[i], me .. ' ' .. ARGV[j + 2], 'PX', ttl)
    joined[#joined + 1] = ARGV[j + 2]
    ids[#ids + 1] = ARGV[j + 1]
  end
end
if #ids > 0 then redis.call('SADD', KEYS[1], unpack(ids)) end
if channel ~= '' and #joined > 0 then
  redis.call(pub, channel, '{"from":"' .. me .. '","joined":[' .. table.concat(joined, ',') .. ']}')
end
return lost
`);

/**
 * Releases peers this instance holds and announces them gone. KEYS: the index, then the entries. ARGV:
 * instance, channel, publish command, then the ids. An entry another instance holds now is left alone.
 */
export const RELEASE = new Script(`
local me, channel, pub = ARGV[1], ARGV[2], ARGV[3]
local left = {}
for i = 2, #KEYS do
  local cur = redis.call('GET', KEYS[i])
  local owner = cur and string.match(cur, '^(%S+) ')
  if owner == me then redis.call('DEL', KEYS[i]) end
  if not cur or owner == me then redis.call('SREM', KEYS[1], ARGV[2 + i]) end
  left[#left + 1] = '"' .. ARGV[2 + i] .. '"'
end
if #left > 0 then
  redis.call(pub, channel, '{"from":"' .. me .. '","left":[' .. table.concat(left, ',') .. ']}')
end
return #left
`);

/** Drops ids whose entries expired from the index. KEYS: the index, then the entries; ARGV: the ids. */
export const PRUNE = new Script(`
local n = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then n = n + redis.call('SREM', KEYS[1], ARGV[i - 1]) end
end
return n
`);

/**
 * Claims an instance's liveness entry. KEYS: the entry. ARGV: this process's value (with its token), ttl ms.
 * Sets it when it is absent or already this process's; returns 'ok', or the value another process holds.
 */
export const CLAIM_INSTANCE = new Script(`
local cur = redis.call('GET', KEYS[1])
if not cur or cur == ARGV[1] then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 'ok'
end
return cur
`);

/**
 * Renews an instance's liveness entry by its token. KEYS: the entry. ARGV: this process's value, ttl ms.
 * Returns 1 (renewed), 2 (it had expired: set again) or 0 (another process holds the id now).
 */
export const RENEW_INSTANCE = new Script(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if not cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 2
end
return 0
`);

/**
 * Replaces a liveness entry whose holder stopped renewing it. KEYS: the entry. ARGV: the value seen, this
 * process's value, ttl ms. Returns 1 when replaced, 0 when the entry changed meanwhile.
 */
export const TAKE_OVER_INSTANCE = new Script(`
local cur = redis.call('GET', KEYS[1])
if cur == ARGV[1] or not cur then
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
  return 1
end
return 0
`);

/**
 * Leaves: deletes the liveness entry if this process holds it and says goodbye. KEYS: the entry. ARGV: this
 * process's value, channel, publish command, the goodbye.
 */
export const LEAVE_INSTANCE = new Script(`
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
redis.call(ARGV[3], ARGV[2], ARGV[4])
return 1
`);

/** True when a reply is Redis's refusal of an `EVALSHA` whose script it does not hold. */
export function isNoScript(reply: unknown): boolean {
  return reply instanceof Error && reply.message.startsWith("NOSCRIPT");
}

/** The `EVAL` form of an `EVALSHA` command of one of the scripts here (null for any other command). */
export function asEval(command: RedisCommand): RedisCommand | null {
  if (command[0] !== "EVALSHA") return null;
  const script = SCRIPTS.get(String(command[1]));
  return script ? ["EVAL", script.source, ...command.slice(2)] : null;
}

const SCRIPTS = new Map(
  [CLAIM, RELEASE, PRUNE, CLAIM_INSTANCE, RENEW_INSTANCE, TAKE_OVER_INSTANCE, LEAVE_INSTANCE].map((s) => [
    s.sha,
    s,
  ]),
);

/** What a full read of the directory found. */
export interface DirectoryRead {
  /** The entries of other instances. */
  records: DirectoryRecord[];
  /** The ids whose entries name the reading instance. */
  mine: Set<string>;
  /** Malformed entries skipped. */
  invalid: number;
}

/**
 * Reads the whole directory: walks the index (`SSCAN`, 1,000 at a time), reads the entries (`MGET`) and
 * prunes the ids whose entries expired from the index (unless claimed again meanwhile).
 */
export async function readDirectory(
  exec: (commands: readonly RedisCommand[]) => Promise<unknown[]>,
  keys: ClusterKeys,
  instance: string,
): Promise<DirectoryRead> {
  const out: DirectoryRead = { records: [], mine: new Set(), invalid: 0 };
  let cursor = "0";
  do {
    const [scan] = await exec([["SSCAN", keys.index, cursor, "COUNT", 1000]]);
    if (scan instanceof Error) throw scan;
    const [next, ids] = scan as [string, string[]];
    cursor = String(next);
    if (ids.length === 0) continue;
    const [values] = await exec([["MGET", ...ids.map((id) => keys.peer(id))]]);
    if (values instanceof Error) throw values;
    const expired: string[] = [];
    (values as (string | null)[]).forEach((value, i) => {
      if (value === null) {
        expired.push(ids[i]!);
        return;
      }
      const record = parseEntry(value);
      if (!record) out.invalid++;
      else if (record.instance === instance) out.mine.add(record.id);
      else out.records.push(record);
    });
    if (expired.length > 0) {
      const [pruned] = await exec([PRUNE.call([keys.index, ...expired.map((id) => keys.peer(id))], expired)]);
      if (pruned instanceof Error) throw pruned;
    }
  } while (cursor !== "0");
  return out;
}

/** Parses a directory entry (`"<instance> <record JSON>"`); null when it is malformed. */
export function parseEntry(value: string): DirectoryRecord | null {
  const space = value.indexOf(" ");
  if (space <= 0) return null;
  let record: DirectoryRecord | string;
  try {
    record = parseRecord(JSON.parse(value.slice(space + 1)));
  } catch {
    return null;
  }
  return typeof record === "string" || record.instance !== value.slice(0, space) ? null : record;
}

const UUID_TEXT = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Checks the shape of a message from another instance (the core trusts the types it is given). */
export function checkMessage(value: unknown): ClusterMessage | null {
  if (typeof value !== "object" || value === null || Array.isArray(value)) return null;
  const m = value as Record<string, unknown>;
  const id = (v: unknown) => typeof v === "string" && UUID_TEXT.test(v);
  switch (m.t) {
    case "relay":
      return (m.rid === null || typeof m.rid === "string") && id(m.from) && id(m.to) &&
          typeof m.network === "string" && typeof m.ordered === "boolean" && m.data !== undefined
        ? m as ClusterMessage
        : null;
    case "relayed":
      return typeof m.rid === "string" && typeof m.ok === "boolean" ? m as ClusterMessage : null;
    case "introduce": {
      const peer = parsePeerInfo(m.peer as Json);
      const candidates = m.candidates;
      return id(m.target) && typeof peer !== "string" && typeof m.nonce === "string" &&
          Array.isArray(candidates) && candidates.length <= 8 &&
          candidates.every((c) => typeof c === "string")
        ? {
          t: "introduce",
          target: m.target as string,
          peer,
          candidates: candidates as string[],
          nonce: m.nonce,
        }
        : null;
    }
    case "evict":
      return id(m.id) ? m as ClusterMessage : null;
    default:
      return null;
  }
}

/** Parses a pub/sub message: a JSON object naming the instance it is from; null when malformed. */
export function parseBody(text: string): { from: string; body: Record<string, unknown> } | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (!isJsonObject(value as Json)) return null;
  const body = value as Record<string, unknown>;
  const from = body.from;
  return typeof from === "string" && INSTANCE_ID.test(from) ? { from, body } : null;
}

/**
 * Reads the TLS files once at construction, so that a missing or unreadable one stops the program at start
 * (exit 2, naming the key) rather than showing up later as an outage.
 */
export function checkTlsFiles(c: ClusterConfig): void {
  const files = [["tls_ca_file", c.tlsCaFile], ["tls_cert_file", c.tlsCertFile], [
    "tls_key_file",
    c.tlsKeyFile,
  ]];
  for (const [key, path] of files) {
    if (path === null || path === undefined) continue;
    try {
      Deno.readTextFileSync(path);
    } catch (error) {
      throw new ConfigError(
        `Cannot read "cluster.${key}" "${path}": ${(error as Error).message}`,
        `cluster.${key}`,
      );
    }
  }
}
