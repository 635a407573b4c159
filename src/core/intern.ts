/**
 * Sharing of the parts of registered peers' NodeInfo that most peers have in common: the capability list
 * and the metadata object (an application's peers usually declare the same capabilities and the same
 * `network_id`). Equal values are kept once, frozen, for every peer that declares them; what is kept is
 * bounded ({@linkcode MAX_SHARED} of each), and a value beyond that is kept per peer as before. Frozen, so a
 * shared value cannot be changed through one peer's record.
 *
 * @module
 */
import type { NodeInfo } from "../wire/mod.ts";

/** Most distinct capability lists, and most distinct metadata objects, kept for sharing. */
export const MAX_SHARED = 1_024;
/** Longest text of a value that is shared (longer ones are rare and kept per peer). */
const MAX_KEY = 512;

const EMPTY_LIST: readonly string[] = Object.freeze([]);

/** Shares equal capability lists and metadata objects between NodeInfo records. */
export class Interner {
  readonly #lists = new Map<string, readonly string[]>();
  readonly #records = new Map<string, Readonly<Record<string, string>>>();

  /** `info` with its capabilities and metadata replaced by the shared equal values (a new object). */
  node(info: NodeInfo): NodeInfo {
    return {
      ...info,
      capabilities: this.#list(info.capabilities) as string[],
      metadata: this.#record(info.metadata) as Record<string, string>,
    };
  }

  #list(list: readonly string[]): readonly string[] {
    if (list.length === 0) return EMPTY_LIST;
    return share(this.#lists, JSON.stringify(list), list);
  }

  #record(record: Readonly<Record<string, string>>): Readonly<Record<string, string>> {
    return share(this.#records, JSON.stringify(record), record);
  }
}

function share<T extends object>(map: Map<string, T>, key: string, value: T): T {
  const kept = map.get(key);
  if (kept !== undefined) return kept;
  if (key.length > MAX_KEY || map.size >= MAX_SHARED) return value;
  const frozen = Object.freeze(Array.isArray(value) ? [...value] : { ...value }) as T;
  map.set(key, frozen);
  return frozen;
}
