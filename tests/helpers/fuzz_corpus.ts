/**
 * The seeded datagram generator of the fuzzer (`tools/fuzz.ts`, `deno task fuzz`) and of its bounded test
 * (`tests/fuzz_test.ts`). {@linkcode FuzzCorpus} yields one {@linkcode FuzzCase} at a time: the bytes of one
 * UDP datagram, the category it belongs to, and the source (a named socket of the fuzzer) it must be sent
 * from. The same seed gives the same sequence of cases, byte for byte, except for one documented input: Acks
 * that name "real" ids use the ids the fuzzer has seen in replies ({@linkcode FuzzCorpus.learn}), which the
 * server draws at random. The random draws do not depend on them, so every other case stays identical.
 *
 * Valid messages are built the way docs/protocol.md says (eight keys, in order: `id`, `message_type`,
 * `timestamp`, `payload`, `sender_addr`, `sequence_number`, `requires_ack`, `ack_for`); the categories then
 * break them in one way each. Nothing here does I/O or reads the clock.
 *
 * @module
 */

import { MESSAGE_TYPES, type MessageType } from "../../src/wire/mod.ts";
import { ENVELOPE_KEYS } from "./raw_peer.ts";

// ------------------------------------------------------------------ the PRNG

/** A small seeded PRNG (sfc32, seeded through splitmix32); the same seed gives the same stream. */
export class Rng {
  #a: number;
  #b: number;
  #c: number;
  #d: number;

  /** @param seed Any integer; only its low 32 bits matter. */
  constructor(seed: number) {
    let state = seed >>> 0;
    const mix = (): number => {
      state = (state + 0x9e3779b9) >>> 0;
      let z = state;
      z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
      z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
      return (z ^ (z >>> 16)) >>> 0;
    };
    this.#a = mix();
    this.#b = mix();
    this.#c = mix();
    this.#d = mix();
    for (let i = 0; i < 12; i++) this.u32();
  }

  /** A uniform 32-bit unsigned integer. */
  u32(): number {
    const t = (((this.#a + this.#b) | 0) + this.#d) | 0;
    this.#d = (this.#d + 1) | 0;
    this.#a = this.#b ^ (this.#b >>> 9);
    this.#b = (this.#c + (this.#c << 3)) | 0;
    this.#c = (this.#c << 21) | (this.#c >>> 11);
    this.#c = (this.#c + t) | 0;
    return t >>> 0;
  }

  /** A uniform float in [0, 1). */
  float(): number {
    return this.u32() / 4_294_967_296;
  }

  /** A uniform integer from `min` to `max`, both included. */
  int(min: number, max: number): number {
    return min + Math.floor(this.float() * (max - min + 1));
  }

  /** True with probability `p`. */
  chance(p: number): boolean {
    return this.float() < p;
  }

  /** One element of a non-empty list. */
  pick<T>(items: readonly T[]): T {
    return items[this.int(0, items.length - 1)]!;
  }

  /** `n` random bytes. */
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i += 4) {
      let v = this.u32();
      for (let j = i; j < Math.min(n, i + 4); j++) {
        out[j] = v & 0xff;
        v >>>= 8;
      }
    }
    return out;
  }

  /** A random UUID v4, lowercase and hyphenated. */
  uuid(): string {
    const b = this.bytes(16);
    b[6] = (b[6]! & 0x0f) | 0x40;
    b[8] = (b[8]! & 0x3f) | 0x80;
    const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${
      hex.slice(20)
    }`;
  }

  /** Shuffles `items` in place (Fisher-Yates) and returns it. */
  shuffle<T>(items: T[]): T[] {
    for (let i = items.length - 1; i > 0; i--) {
      const j = this.int(0, i);
      [items[i], items[j]] = [items[j]!, items[i]!];
    }
    return items;
  }
}

// ------------------------------------------------------------------ JSON text with holes

/** JSON text inserted verbatim: values `JSON.stringify` cannot write (`-0`, `2^53+1`, `1e309`, bad JSON). */
export class Raw {
  /** @param text Inserted as is. */
  constructor(readonly text: string) {}
}

/** A JSON-like tree whose leaves may be {@linkcode Raw} text. */
export type Node = Raw | null | boolean | number | string | Node[] | { [key: string]: Node };

/** Writes a {@linkcode Node} as JSON text (compact, keys in insertion order). */
export function render(node: Node): string {
  if (node instanceof Raw) return node.text;
  if (Array.isArray(node)) return `[${node.map(render).join(",")}]`;
  if (node !== null && typeof node === "object") {
    return `{${Object.entries(node).map(([k, v]) => `${JSON.stringify(k)}:${render(v)}`).join(",")}}`;
  }
  return JSON.stringify(node);
}

/** An envelope as an ordered list of entries, so keys can repeat, go missing or move. */
export type Entries = [string, Node][];

function renderEntries(entries: Entries): string {
  return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${render(v)}`).join(",")}}`;
}

/** Returns a copy of `node` with the value at `path` replaced (`undefined` removes the key). */
export function setPath(node: Node, path: readonly (string | number)[], value: Node | undefined): Node {
  if (path.length === 0) return value === undefined ? null : value;
  const [head, ...rest] = path;
  if (Array.isArray(node) && typeof head === "number") {
    const copy = [...node];
    if (value === undefined && rest.length === 0) copy.splice(head, 1);
    else copy[head] = setPath(node[head] ?? null, rest, value);
    return copy;
  }
  if (node !== null && typeof node === "object" && !(node instanceof Raw) && !Array.isArray(node)) {
    const copy: { [key: string]: Node } = {};
    for (const [k, v] of Object.entries(node)) Object.defineProperty(copy, k, own(v));
    const key = String(head);
    if (value === undefined && rest.length === 0) delete copy[key];
    else Object.defineProperty(copy, key, own(setPath(copy[key] ?? null, rest, value)));
    return copy;
  }
  return node; // the path does not exist in this shape: leave it
}

function own(value: Node): PropertyDescriptor {
  return { value, enumerable: true, writable: true, configurable: true };
}

// ------------------------------------------------------------------ the protocol's vocabulary

/** A fixed Unix time in seconds, so that the same seed gives the same bytes on any day. */
const BASE_TIMESTAMP = 1_795_539_789;

/** The `sender_addr` the generator writes (informational only; the server never uses it). */
const SENDER_ADDR = "127.0.0.1:40000";

/** A payload path of each message type: every field the server reads, and `[]` for the whole payload. */
export const PAYLOAD_PATHS: Readonly<Record<MessageType, readonly (readonly (string | number)[])[]>> = {
  HandshakeRequest: [
    [],
    ["id"],
    ["name"],
    ["version"],
    ["listen_addr"],
    ["capabilities"],
    ["capabilities", 0],
    ["metadata"],
    ["metadata", "network_id"],
    ["metadata", "role"],
  ],
  HandshakeResponse: [
    [],
    ["node_info"],
    ["node_info", "id"],
    ["node_info", "name"],
    ["node_info", "listen_addr"],
    ["node_info", "metadata", "network_id"],
    ["success"],
    ["error_message"],
  ],
  Ping: [[], ["nonce"]],
  Pong: [[], ["nonce"]],
  DiscoveryRequest: [[], ["offset"], ["limit"]],
  DiscoveryResponse: [
    [],
    ["peers"],
    ["peers", 0],
    ["peers", 0, "id"],
    ["peers", 0, "addr"],
    ["peers", 0, "last_seen"],
    ["peers", 0, "capabilities"],
    ["peers", 0, "name"],
    ["offset"],
    ["total"],
    ["next_offset"],
  ],
  Data: [[], ["to"], ["data"], ["data", "n"]],
  Error: [[], ["error"], ["code"]],
  Disconnect: [[], ["reason"]],
  Ack: [[]],
  Retransmit: [[], ["sequence_numbers"], ["sequence_numbers", 0]],
};

/** Values of the wrong type, or at the edges of the right one, put in place of a field. */
export const CONFUSED_VALUES: readonly Node[] = [
  "1",
  "",
  "NaN",
  "Infinity",
  "-0",
  "null",
  "true",
  [],
  [1, "a", null],
  {},
  { a: [{}] },
  null,
  true,
  false,
  0,
  1.5,
  -1,
  new Raw("-0"),
  new Raw("0.0"),
  new Raw("1.0"),
  new Raw("1E2"),
  new Raw("5e-324"),
  new Raw("9007199254740993"),
  new Raw("-9007199254740993"),
  new Raw("18446744073709551616"),
  new Raw("1e308"),
  new Raw("-1e308"),
  new Raw("1e309"),
  new Raw("4294967295"),
  new Raw("4294967296"),
  new Raw("123456789012345678901234567890"),
  "\u0000",
  new Raw('"\\ud800"'),
  new Raw('"\\udfff\\ud800"'),
  "7D444840-9DC0-41D1-B245-5FFDCE74FAD2",
  "7d4448409dc041d1b2455ffdce74fad2",
  "00000000-0000-0000-0000-000000000000",
  "127.0.0.1:99999",
  "[::1]:0",
  "localhost:65535",
  "__proto__",
  new Raw('{"__proto__":{"polluted":1}}'),
  new Raw('{"constructor":{"prototype":{"polluted":1}}}'),
  { toString: 1, valueOf: "x" },
  "x".repeat(300),
  "\u00e9".repeat(200),
  "\u{1F600}".repeat(100),
  new Raw("NaN"),
  new Raw("Infinity"),
  new Raw("undefined"),
  new Raw("'single'"),
  new Raw("0x10"),
  new Raw("01"),
  new Raw("+1"),
  new Raw(".5"),
];

/** Numbers too big, too long or too precise for any field. */
const HUGE_NUMBER_TEXTS = (rng: Rng): string => {
  switch (rng.int(0, 9)) {
    case 0:
      return "9".repeat(rng.int(20, 60_000));
    case 1:
      return `-${"9".repeat(rng.int(20, 10_000))}`;
    case 2:
      return `1e${rng.int(309, 100_000_000)}`;
    case 3:
      return `1e-${rng.int(324, 100_000_000)}`;
    case 4:
      return `0.${"0".repeat(rng.int(10, 30_000))}1`;
    case 5:
      return `${"1".repeat(rng.int(16, 40))}.${"5".repeat(rng.int(1, 40))}`;
    case 6:
      return rng.pick(["9007199254740993", "9007199254740992", "18446744073709551615", "4294967296"]);
    case 7:
      return rng.pick(["1e308", "-1e308", "1.7976931348623157e308", "2.2250738585072014e-308", "-0"]);
    case 8:
      return `${rng.int(1, 9)}${"0".repeat(rng.int(300, 400))}`;
    default:
      return `${rng.u32()}${rng.u32()}${rng.u32()}`;
  }
};

/** Every reporting category, in the order the summary lists them. */
export const CATEGORIES = [
  "probe",
  "setup",
  "random_bytes",
  "truncated",
  "bit_flip",
  "envelope_confusion",
  "payload_confusion",
  "huge_numbers",
  "deep_nesting",
  "long_strings",
  "invalid_utf8",
  "bom",
  "unknown_type",
  "wrong_case",
  "duplicate_keys",
  "valid_flow",
  "retransmit_huge",
  "discovery_odd",
  "ack_ids",
] as const;

/** One of {@linkcode CATEGORIES}. */
export type Category = typeof CATEGORIES[number];

/** How many source sockets each category sends from (`probe` uses one per probe). */
export const SOURCES_PER_CATEGORY: Readonly<Record<Category, number>> = {
  probe: 0,
  setup: 0,
  random_bytes: 16,
  truncated: 4,
  bit_flip: 4,
  envelope_confusion: 4,
  payload_confusion: 4,
  huge_numbers: 4,
  deep_nesting: 4,
  long_strings: 4,
  invalid_utf8: 4,
  bom: 4,
  unknown_type: 4,
  wrong_case: 4,
  duplicate_keys: 4,
  valid_flow: 16,
  retransmit_huge: 4,
  discovery_odd: 4,
  ack_ids: 4,
};

/** Relative weights of the categories drawn after the probes and the setup handshakes. */
const WEIGHTS: readonly [Category, number][] = [
  ["random_bytes", 8],
  ["truncated", 8],
  ["bit_flip", 8],
  ["envelope_confusion", 12],
  ["payload_confusion", 14],
  ["huge_numbers", 4],
  ["deep_nesting", 1],
  ["long_strings", 3],
  ["invalid_utf8", 5],
  ["bom", 2],
  ["unknown_type", 4],
  ["wrong_case", 4],
  ["duplicate_keys", 5],
  ["valid_flow", 3],
  ["retransmit_huge", 2],
  ["discovery_odd", 4],
  ["ack_ids", 5],
];

/** One datagram to send. */
export interface FuzzCase {
  /** Position in the sequence (0-based); with the seed it identifies the case. */
  index: number;
  /** What kind of input this is. */
  category: Category;
  /** The fuzzer socket to send it from, `"<category>/<n>"` (probes: `"probe/<name>"`). */
  source: string;
  /** The datagram. */
  bytes: Uint8Array;
  /** The message type it started from (before it was broken), or null for random bytes. */
  messageType: string | null;
  /** One line saying what was done to it. */
  label: string;
}

/** Envelope fields a builder may set; the rest get valid defaults. */
interface EntryFields {
  /** `sequence_number`; the source's next number when not given. */
  seq?: number | null;
  /** `requires_ack`. */
  ack?: boolean;
  /** `ack_for`. */
  ackFor?: Node;
  /** `id`; a fresh UUID when not given. */
  id?: string;
}

/** What a valid message is made of before a category breaks it. */
interface Draft {
  type: MessageType;
  payload: Node;
  entries: Entries;
}

const utf8 = new TextEncoder();

/** The most recent ids and sequence numbers the server sent to one source, for Acks of "real" ids. */
interface Learned {
  ids: string[];
  seqs: number[];
}

const LEARNED_KEEP = 32;

/**
 * The seeded generator. See the module documentation.
 *
 * @example
 * ```ts
 * import { FuzzCorpus } from "./fuzz_corpus.ts";
 * const a = new FuzzCorpus(7);
 * const b = new FuzzCorpus(7);
 * for (let i = 0; i < 100; i++) {
 *   const x = a.next();
 *   const y = b.next();
 *   if (x.source !== y.source || x.bytes.join() !== y.bytes.join()) throw new Error("not reproducible");
 * }
 * ```
 */
export class FuzzCorpus {
  readonly seed: number;
  readonly #rng: Rng;
  #index = 0;
  readonly #queue: Omit<FuzzCase, "index">[] = [];
  readonly #nodeIds = new Map<string, string>();
  readonly #seqs = new Map<string, number>();
  readonly #learned = new Map<string, Learned>();
  readonly #totalWeight: number;
  readonly #exclude: ReadonlySet<Category>;
  readonly #envelopeCombos: [MessageType, number, number][] = [];
  readonly #payloadCombos: [MessageType, number, number][] = [];
  #envelopeCursor = 0;
  #payloadCursor = 0;

  /**
   * @param seed The seed; the same seed gives the same cases.
   * @param options `exclude`: categories never drawn (for instance one whose known crash would end every run
   * early); the draws stay the same, so the other cases keep their bytes. @default {{ exclude: [] }}
   */
  constructor(seed: number, options: { exclude?: readonly Category[] } = {}) {
    this.seed = seed >>> 0;
    this.#rng = new Rng(this.seed);
    this.#exclude = new Set(options.exclude ?? []);
    this.#totalWeight = WEIGHTS.reduce((sum, [, w]) => sum + w, 0);
    for (const type of MESSAGE_TYPES) {
      for (let v = 0; v < CONFUSED_VALUES.length; v++) {
        for (let k = 0; k < ENVELOPE_KEYS.length; k++) this.#envelopeCombos.push([type, k, v]);
        for (let p = 0; p < PAYLOAD_PATHS[type].length; p++) this.#payloadCombos.push([type, p, v]);
      }
    }
    this.#rng.shuffle(this.#envelopeCombos);
    this.#rng.shuffle(this.#payloadCombos);
    this.#queueProbes();
    this.#queueSetup();
  }

  /** How many (type, field, value) combinations the confusion categories cycle through: envelope, payload. */
  get combinations(): { envelope: number; payload: number } {
    return { envelope: this.#envelopeCombos.length, payload: this.#payloadCombos.length };
  }

  /** How many of those combinations have been generated so far. */
  get covered(): { envelope: number; payload: number } {
    return {
      envelope: Math.min(this.#envelopeCursor, this.#envelopeCombos.length),
      payload: Math.min(this.#payloadCursor, this.#payloadCombos.length),
    };
  }

  /** The next datagram. */
  next(): FuzzCase {
    if (this.#queue.length === 0) this.#generate();
    const c = this.#queue.shift()!;
    return { index: this.#index++, ...c };
  }

  /**
   * Tells the generator about a message the server sent to `source`, so later Acks from there can name a
   * real id or sequence number. The random draws do not depend on it.
   */
  learn(source: string, id: string, sequenceNumber: number | null): void {
    let l = this.#learned.get(source);
    if (!l) this.#learned.set(source, l = { ids: [], seqs: [] });
    l.ids.push(id);
    if (l.ids.length > LEARNED_KEEP) l.ids.shift();
    if (sequenceNumber !== null) {
      l.seqs.push(sequenceNumber);
      if (l.seqs.length > LEARNED_KEEP) l.seqs.shift();
    }
  }

  // ---------------------------------------------------------------- building blocks

  #push(category: Category, source: string, text: string | Uint8Array, type: string | null, label: string) {
    const bytes = typeof text === "string" ? utf8.encode(text) : text;
    this.#queue.push({ category, source, bytes, messageType: type, label });
  }

  #nodeId(source: string): string {
    let id = this.#nodeIds.get(source);
    if (!id) this.#nodeIds.set(source, id = this.#rng.uuid());
    return id;
  }

  #nextSeq(source: string): number {
    const seq = (this.#seqs.get(source) ?? 0) + 1;
    this.#seqs.set(source, seq);
    return seq;
  }

  #source(category: Category): string {
    // Half the traffic comes from the category's first socket, which registered at the start (setup), so
    // broken messages also reach the code paths of registered peers.
    const n = SOURCES_PER_CATEGORY[category];
    return `${category}/${this.#rng.chance(0.5) ? 0 : this.#rng.int(0, n - 1)}`;
  }

  /** A learned id of `source` if there is one, else `fallback` (the draws are made either way). */
  #realId(source: string, fallback: string): string {
    const r = this.#rng.u32();
    const ids = this.#learned.get(source)?.ids ?? [];
    return ids.length > 0 ? ids[r % ids.length]! : fallback;
  }

  #realSeq(source: string, fallback: number): number {
    const r = this.#rng.u32();
    const seqs = this.#learned.get(source)?.seqs ?? [];
    return seqs.length > 0 ? seqs[r % seqs.length]! : fallback;
  }

  #nodeInfo(id: string, overrides: { [key: string]: Node } = {}): { [key: string]: Node } {
    return {
      id,
      name: "fuzz",
      version: "0.0.1",
      listen_addr: SENDER_ADDR,
      capabilities: ["data"],
      metadata: { network_id: "p2p_default", role: "fuzz" },
      ...overrides,
    };
  }

  /** A payload with every field the server reads present (so each can be broken). */
  #fullPayload(type: MessageType, source: string): Node {
    const rng = this.#rng;
    switch (type) {
      case "HandshakeRequest":
        return this.#nodeInfo(this.#nodeId(source));
      case "HandshakeResponse":
        return { node_info: this.#nodeInfo(rng.uuid()), success: true, error_message: null };
      case "Ping":
      case "Pong":
        return { nonce: rng.uuid() };
      case "DiscoveryRequest":
        return { offset: 0, limit: rng.int(1, 64) };
      case "DiscoveryResponse":
        return {
          peers: [{
            id: rng.uuid(),
            addr: SENDER_ADDR,
            last_seen: BASE_TIMESTAMP,
            capabilities: ["data"],
            name: "x",
          }],
          offset: 0,
          total: 1,
          next_offset: null,
        };
      case "Data":
        return { to: rng.uuid(), data: { n: rng.int(0, 1000), text: "fuzz" } };
      case "Error":
        return { error: "fuzz error", code: "fuzz" };
      case "Disconnect":
        return { reason: "fuzz" };
      case "Ack":
        return null;
      case "Retransmit":
        return { sequence_numbers: [1, 2, 3] };
    }
  }

  /** The payload a well-behaved peer would send. */
  #validPayload(type: MessageType, source: string): Node {
    const rng = this.#rng;
    switch (type) {
      case "Ping":
        return rng.chance(0.5) ? null : { nonce: rng.uuid() };
      case "Pong":
        return null;
      case "DiscoveryRequest":
        return rng.chance(0.5) ? null : { offset: 0, limit: rng.int(1, 64) };
      case "DiscoveryResponse":
        return [];
      case "Data":
        return { n: rng.int(0, 1_000_000), text: "hello" };
      default:
        return this.#fullPayload(type, source);
    }
  }

  #entries(
    type: MessageType,
    payload: Node,
    source: string,
    fields: EntryFields = {},
  ): Entries {
    return [
      ["id", fields.id ?? this.#rng.uuid()],
      ["message_type", type],
      ["timestamp", BASE_TIMESTAMP + this.#index],
      ["payload", payload],
      ["sender_addr", SENDER_ADDR],
      ["sequence_number", fields.seq === undefined ? this.#nextSeq(source) : fields.seq],
      ["requires_ack", fields.ack ?? false],
      ["ack_for", fields.ackFor ?? null],
    ];
  }

  #draft(source: string, full: boolean, type: MessageType = this.#rng.pick(MESSAGE_TYPES)): Draft {
    const payload = full ? this.#fullPayload(type, source) : this.#validPayload(type, source);
    const ack = type !== "Ack" && this.#rng.chance(0.3);
    const ackFor = type === "Ack" ? this.#rng.uuid() : null;
    return { type, payload, entries: this.#entries(type, payload, source, { ack, ackFor }) };
  }

  #valid(source: string, type: MessageType, payload: Node, fields: EntryFields = {}): string {
    return renderEntries(this.#entries(type, payload, source, fields));
  }

  // ---------------------------------------------------------------- fixed openings

  /**
   * One minimal message of each type from a fresh address each (only the required keys), with and without
   * `requires_ack`: what a single datagram from an unknown address gets back is then read per type.
   */
  #queueProbes(): void {
    const rng = this.#rng;
    for (const type of MESSAGE_TYPES) {
      for (const ack of [false, true]) {
        const source = `probe/${type}${ack ? "+ack" : ""}`;
        const extra: Entries = [];
        if (type === "HandshakeRequest") extra.push(["payload", this.#nodeInfo(this.#nodeId(source))]);
        if (type === "Ack") extra.push(["ack_for", rng.uuid()]);
        const entries: Entries = [
          ["id", rng.uuid()],
          ["message_type", type],
          ["timestamp", 0],
          ...extra,
          ["requires_ack", ack],
        ];
        if (ack) entries.push(["sequence_number", 1]);
        this.#push(
          "probe",
          source,
          renderEntries(entries),
          type,
          `minimal ${type}${ack ? " requires_ack" : ""}`,
        );
      }
    }
    // A sibling-server handshake makes the server handshake back.
    for (const ack of [false, true]) {
      const source = `probe/HandshakeRequest(server)${ack ? "+ack" : ""}`;
      const info = this.#nodeInfo(this.#nodeId(source), { capabilities: ["server"] });
      this.#push(
        "probe",
        source,
        renderEntries([
          ["id", rng.uuid()],
          ["message_type", "HandshakeRequest"],
          ["timestamp", 0],
          ["payload", info],
          ["requires_ack", ack],
          ["sequence_number", 1],
        ]),
        "HandshakeRequest",
        `minimal HandshakeRequest with capability "server"${ack ? " requires_ack" : ""}`,
      );
    }
  }

  /** Every category's first socket registers, so that its later traffic also reaches registered paths. */
  #queueSetup(): void {
    for (const category of CATEGORIES) {
      if (SOURCES_PER_CATEGORY[category] === 0) continue;
      const source = `${category}/0`;
      const text = this.#valid(source, "HandshakeRequest", this.#nodeInfo(this.#nodeId(source)), {
        ack: true,
      });
      this.#push("setup", source, text, "HandshakeRequest", "setup handshake");
    }
  }

  // ---------------------------------------------------------------- categories

  #generate(): void {
    let category: Category;
    do {
      let r = this.#rng.float() * this.#totalWeight;
      category = WEIGHTS[0]![0];
      for (const [c, w] of WEIGHTS) {
        category = c;
        if ((r -= w) < 0) break;
      }
    } while (this.#exclude.has(category));
    switch (category) {
      case "random_bytes":
        return this.#randomBytes();
      case "truncated":
        return this.#truncated();
      case "bit_flip":
        return this.#bitFlip();
      case "envelope_confusion":
        return this.#envelopeConfusion();
      case "payload_confusion":
        return this.#payloadConfusion();
      case "huge_numbers":
        return this.#hugeNumbers();
      case "deep_nesting":
        return this.#deepNesting();
      case "long_strings":
        return this.#longStrings();
      case "invalid_utf8":
        return this.#invalidUtf8();
      case "bom":
        return this.#bom();
      case "unknown_type":
        return this.#messageTypeText("unknown_type");
      case "wrong_case":
        return this.#messageTypeText("wrong_case");
      case "duplicate_keys":
        return this.#duplicateKeys();
      case "valid_flow":
        return this.#validFlow();
      case "retransmit_huge":
        return this.#retransmitHuge();
      case "discovery_odd":
        return this.#discoveryOdd();
      case "ack_ids":
        return this.#ackIds();
      default:
        throw new Error(`Unreachable category "${category}"`);
    }
  }

  /** Lengths 0 to 70,000, most of them small (longer than 65,507 cannot be sent over IPv4 UDP). */
  #randomBytes(): void {
    const rng = this.#rng;
    const bucket = rng.float();
    const length = bucket < 0.6
      ? rng.int(0, 256)
      : bucket < 0.85
      ? rng.int(257, 4096)
      : bucket < 0.97
      ? rng.int(4097, 65_507)
      : rng.int(65_508, 70_000);
    const source = `random_bytes/${rng.int(0, SOURCES_PER_CATEGORY.random_bytes - 1)}`;
    let bytes = rng.bytes(length);
    let label = `${length} random bytes`;
    if (length > 0 && rng.chance(0.3)) {
      // Random bytes that start like JSON get further into the parser.
      bytes[0] = rng.pick([0x7b, 0x5b, 0x22]); // { [ "
      label += ` starting with ${String.fromCharCode(bytes[0]!)}`;
    } else if (rng.chance(0.1)) {
      bytes = utf8.encode(new TextDecoder().decode(bytes)); // valid UTF-8 garbage
      label = `${bytes.length} bytes of valid UTF-8 garbage`;
    }
    this.#push("random_bytes", source, bytes, null, label);
  }

  #truncated(): void {
    const source = this.#source("truncated");
    const draft = this.#draft(source, this.#rng.chance(0.5));
    const bytes = utf8.encode(renderEntries(draft.entries));
    const at = this.#rng.int(0, bytes.length - 1);
    this.#push(
      "truncated",
      source,
      bytes.slice(0, at),
      draft.type,
      `${draft.type} cut at ${at}/${bytes.length}`,
    );
  }

  #bitFlip(): void {
    const rng = this.#rng;
    const source = this.#source("bit_flip");
    const draft = this.#draft(source, rng.chance(0.5));
    const bytes = utf8.encode(renderEntries(draft.entries));
    const flips = rng.int(1, 8);
    const where: number[] = [];
    for (let i = 0; i < flips; i++) {
      const at = rng.int(0, bytes.length - 1);
      if (rng.chance(0.8)) bytes[at] = bytes[at]! ^ (1 << rng.int(0, 7));
      else bytes[at] = rng.int(0, 255);
      where.push(at);
    }
    this.#push("bit_flip", source, bytes, draft.type, `${draft.type} with bytes ${where.join(",")} changed`);
  }

  /**
   * Every (message type, envelope key, confused value) combination in turn, in a seeded order, so a long
   * enough run covers them all; one in ten instead leaves the key out.
   */
  #envelopeConfusion(): void {
    const rng = this.#rng;
    const source = this.#source("envelope_confusion");
    const [type, keyIndex, valueIndex] = this
      .#envelopeCombos[this.#envelopeCursor++ % this.#envelopeCombos.length]!;
    const draft = this.#draft(source, false, type);
    const key = ENVELOPE_KEYS[keyIndex]!;
    const i = draft.entries.findIndex(([k]) => k === key);
    let label: string;
    if (rng.chance(0.1)) {
      draft.entries.splice(i, 1);
      label = `${draft.type} without "${key}"`;
    } else {
      const value = CONFUSED_VALUES[valueIndex]!;
      draft.entries[i] = [key, value];
      label = `${draft.type} with "${key}" = ${shortText(render(value))}`;
    }
    this.#push("envelope_confusion", source, renderEntries(draft.entries), draft.type, label);
  }

  /** Every (message type, payload field, confused value) combination in turn, as for the envelope. */
  #payloadConfusion(): void {
    const rng = this.#rng;
    const source = this.#source("payload_confusion");
    const [type, pathIndex, valueIndex] = this
      .#payloadCombos[this.#payloadCursor++ % this.#payloadCombos.length]!;
    const draft = this.#draft(source, true, type);
    const path = PAYLOAD_PATHS[type][pathIndex]!;
    const remove = path.length > 0 && rng.chance(0.1);
    const value = CONFUSED_VALUES[valueIndex]!;
    const payload = setPath(draft.payload, path, remove ? undefined : value);
    draft.entries[3] = ["payload", payload];
    const where = ["payload", ...path].join(".");
    const label = remove
      ? `${draft.type} without ${where}`
      : `${draft.type} with ${where} = ${shortText(render(value))}`;
    this.#push("payload_confusion", source, renderEntries(draft.entries), draft.type, label);
  }

  #hugeNumbers(): void {
    const rng = this.#rng;
    const source = this.#source("huge_numbers");
    const draft = this.#draft(source, true);
    const number = new Raw(HUGE_NUMBER_TEXTS(rng));
    let where: string;
    if (rng.chance(0.4)) {
      const key = rng.pick(["timestamp", "sequence_number", "ack_for"] as const);
      draft.entries[draft.entries.findIndex(([k]) => k === key)] = [key, number];
      where = key;
    } else {
      const path = rng.pick(PAYLOAD_PATHS[draft.type]);
      draft.entries[3] = ["payload", setPath(draft.payload, path, number)];
      where = ["payload", ...path].join(".");
    }
    const label = `${draft.type} with ${where} = ${shortText(number.text)} (${number.text.length} chars)`;
    this.#push("huge_numbers", source, renderEntries(draft.entries), draft.type, label);
  }

  /**
   * Deeply nested payloads. A datagram holds at most 65,507 bytes, so balanced nesting stops near 32,700
   * levels; the 100,000-level case is generated anyway (the OS refuses to send it) and unbalanced openers
   * fill a whole datagram.
   */
  #deepNesting(): void {
    const rng = this.#rng;
    const source = this.#source("deep_nesting");
    const type = rng.pick(["Data", "Ping", "Data", "DiscoveryRequest", "Error", "Retransmit"] as const);
    const shape = rng.int(0, 4);
    let inner: string;
    let label: string;
    if (shape === 0) {
      const depth = rng.int(1_000, 32_600);
      inner = "[".repeat(depth) + "]".repeat(depth);
      label = `${depth} levels of [[...]]`;
    } else if (shape === 1) {
      const depth = rng.int(1_000, 12_900);
      inner = '{"a":'.repeat(depth) + "1" + "}".repeat(depth);
      label = `${depth} levels of {"a":...}`;
    } else if (shape === 2) {
      const depth = rng.int(10_000, 65_000);
      inner = "[".repeat(depth);
      label = `${depth} unclosed [`;
    } else if (shape === 3) {
      const depth = 100_000;
      inner = "[".repeat(depth) + "]".repeat(depth);
      label = `${depth} levels of [[...]] (larger than a datagram)`;
    } else {
      const depth = rng.int(1_000, 21_000);
      inner = "[".repeat(depth) + "{}" + "]".repeat(depth);
      label = `${depth} levels of [[...{}]]`;
    }
    const payload = type === "Ping"
      ? new Raw(`{"nonce":${inner}}`)
      : type === "Retransmit"
      ? new Raw(`{"sequence_numbers":${inner}}`)
      : type === "DiscoveryRequest"
      ? new Raw(`{"offset":${inner}}`)
      : type === "Error"
      ? new Raw(`{"error":${inner}}`)
      : new Raw(inner);
    const text = this.#valid(source, type, payload, { ack: rng.chance(0.3) });
    this.#push("deep_nesting", source, text, type, `${type} whose payload has ${label}`);
  }

  #longStrings(): void {
    const rng = this.#rng;
    const source = this.#source("long_strings");
    const draft = this.#draft(source, true);
    const length = rng.pick([257, 1_000, 4_096, 20_000, rng.int(30_000, 64_000)]);
    const char = rng.pick(["a", "\u00e9", "\u{1F600}", "\\", '"', "\u0000"]);
    const long = char.repeat(Math.max(1, Math.floor(length / utf8.encode(JSON.stringify(char)).length)));
    let where: string;
    if (rng.chance(0.3)) {
      const key = rng.pick(["id", "message_type", "sender_addr", "ack_for"] as const);
      draft.entries[draft.entries.findIndex(([k]) => k === key)] = [key, long];
      where = key;
    } else if (rng.chance(0.1)) {
      draft.entries.push([long.slice(0, 20_000), 1]); // an unknown, long key
      where = "an unknown key";
    } else {
      const path = rng.pick(PAYLOAD_PATHS[draft.type]);
      draft.entries[3] = ["payload", setPath(draft.payload, path, long)];
      where = ["payload", ...path].join(".");
    }
    const label = `${draft.type} with ${where} = ${long.length} x ${JSON.stringify(char)}`;
    this.#push("long_strings", source, renderEntries(draft.entries), draft.type, label);
  }

  #invalidUtf8(): void {
    const rng = this.#rng;
    const source = this.#source("invalid_utf8");
    const draft = this.#draft(source, true);
    const marker = "\u0001MARK\u0001";
    const at = rng.pick(["payload", "sender_addr", "id", "message_type"] as const);
    const i = draft.entries.findIndex(([k]) => k === at);
    if (at === "payload") {
      const path = PAYLOAD_PATHS[draft.type].filter((p) => p.length > 0);
      const target = path.length > 0 ? rng.pick(path) : [];
      draft.entries[i] = ["payload", setPath(draft.payload, target, `ab${marker}cd`)];
    } else {
      const value = draft.entries[i]![1];
      draft.entries[i] = [at, `${typeof value === "string" ? value : ""}${marker}`];
    }
    const text = utf8.encode(renderEntries(draft.entries));
    const needle = utf8.encode(JSON.stringify(marker).slice(1, -1));
    const bad = rng.pick([
      [0xff],
      [0xfe],
      [0xc0, 0xaf],
      [0xe0, 0x80, 0xaf],
      [0xed, 0xa0, 0x80],
      [0xed, 0xbf, 0xbf],
      [0xf4, 0x90, 0x80, 0x80],
      [0xf8, 0x88, 0x80, 0x80, 0x80],
      [0x80],
      [0xe2, 0x82],
      [0xc3],
    ]);
    const pos = indexOf(text, needle);
    const bytes = pos < 0
      ? concat(text, new Uint8Array(bad))
      : concat(text.slice(0, pos), new Uint8Array(bad), text.slice(pos + needle.length));
    const hex = bad.map((b) => b.toString(16).padStart(2, "0")).join(" ");
    this.#push("invalid_utf8", source, bytes, draft.type, `${draft.type} with bytes ${hex} in "${at}"`);
  }

  #bom(): void {
    const rng = this.#rng;
    const source = this.#source("bom");
    const draft = this.#draft(source, false);
    const text = utf8.encode(renderEntries(draft.entries));
    const variant = rng.int(0, 4);
    let bytes: Uint8Array;
    let label: string;
    if (variant === 0) {
      bytes = concat(new Uint8Array([0xef, 0xbb, 0xbf]), text);
      label = "UTF-8 BOM before";
    } else if (variant === 1) {
      bytes = concat(new Uint8Array([0xef, 0xbb, 0xbf, 0xef, 0xbb, 0xbf]), text);
      label = "two UTF-8 BOMs before";
    } else if (variant === 2) {
      bytes = concat(text, new Uint8Array([0xef, 0xbb, 0xbf]));
      label = "UTF-8 BOM after";
    } else if (variant === 3) {
      const s = renderEntries(draft.entries);
      bytes = new Uint8Array(2 + s.length * 2);
      bytes.set([0xff, 0xfe]);
      for (let k = 0; k < s.length; k++) {
        const c = s.charCodeAt(k);
        bytes[2 + 2 * k] = c & 0xff;
        bytes[3 + 2 * k] = c >> 8;
      }
      label = "UTF-16LE with its BOM:";
    } else {
      bytes = concat(utf8.encode(" \t\r\n"), text, utf8.encode("\n"));
      label = "JSON whitespace around";
    }
    this.#push("bom", source, bytes, draft.type, `${label} ${draft.type}`);
  }

  #messageTypeText(category: "unknown_type" | "wrong_case"): void {
    const rng = this.#rng;
    const source = this.#source(category);
    const draft = this.#draft(source, false);
    let type: string;
    if (category === "wrong_case") {
      const t = draft.type as string;
      type = rng.pick([
        t.toLowerCase(),
        t.toUpperCase(),
        t[0]!.toLowerCase() + t.slice(1),
        [...t].map((c, k) => (k % 2 ? c.toUpperCase() : c.toLowerCase())).join(""),
        t.replace(/([a-z])([A-Z])/g, "$1_$2"),
        t.replace(/([a-z])([A-Z])/g, "$1_$2").toLowerCase(),
        ` ${t}`,
        `${t} `,
        `${t}\u0000`,
        t.replace("i", "\u0131"),
      ]);
    } else {
      type = rng.pick([
        "Foo",
        "",
        "Unknown",
        "__proto__",
        "constructor",
        "hasOwnProperty",
        "toString",
        "valueOf",
        "Ping2",
        "Handshake",
        "HandshakeRequests",
        "x".repeat(rng.int(100, 5000)),
        "\u0130",
        "Pin\u0121",
        "0",
      ]);
    }
    draft.entries[1] = ["message_type", type];
    const label = `${draft.type} sent as "${shortText(type)}"`;
    this.#push(category, source, renderEntries(draft.entries), draft.type, label);
  }

  #duplicateKeys(): void {
    const rng = this.#rng;
    const source = this.#source("duplicate_keys");
    const draft = this.#draft(source, false);
    const variant = rng.int(0, 5);
    let label: string;
    if (variant === 0) {
      const other = rng.pick([...MESSAGE_TYPES, "Foo", "ping"]);
      draft.entries.splice(rng.int(0, draft.entries.length), 0, ["message_type", other]);
      label = `${draft.type} with a second "message_type" ${JSON.stringify(other)}`;
    } else if (variant === 1) {
      const key = rng.pick(ENVELOPE_KEYS);
      const value = rng.pick(CONFUSED_VALUES);
      draft.entries.splice(rng.int(0, draft.entries.length), 0, [key, value]);
      label = `${draft.type} with a second "${key}" = ${shortText(render(value))}`;
    } else if (variant === 2) {
      draft.entries.push(...draft.entries.map(([k, v]): [string, Node] => [k, v]));
      label = `${draft.type} with every key twice`;
    } else if (variant === 3) {
      draft.entries.push(["__proto__", { message_type: "Ping", requires_ack: true }]);
      label = `${draft.type} with a "__proto__" key`;
    } else if (variant === 4) {
      const text = render(draft.payload);
      const dup = text.startsWith("{") && text.length > 2 ? `${text.slice(0, -1)},${text.slice(1)}` : text;
      draft.entries[3] = ["payload", new Raw(dup)];
      label = `${draft.type} whose payload repeats its keys`;
    } else {
      draft.entries.push(["id", rng.uuid()], ["timestamp", new Raw("-1")], ["timestamp", 1]);
      label = `${draft.type} with "id" and "timestamp" repeated (last one valid)`;
    }
    this.#push("duplicate_keys", source, renderEntries(draft.entries), draft.type, label);
  }

  #retransmitHuge(): void {
    const rng = this.#rng;
    const source = this.#source("retransmit_huge");
    const n = rng.pick([65, 1_000, 5_000, rng.int(1, 6_000)]);
    const list: Node[] = [];
    for (let i = 0; i < n; i++) list.push(rng.chance(0.5) ? rng.int(0, 100) : rng.u32());
    let label = `Retransmit of ${n} sequence numbers`;
    if (rng.chance(0.2)) {
      list.push(rng.pick([-1, 1.5, "1", null, new Raw("4294967296")]));
      label += " ending with a bad one";
    }
    const text = this.#valid(source, "Retransmit", { sequence_numbers: list }, { ack: rng.chance(0.3) });
    this.#push("retransmit_huge", source, text, "Retransmit", label);
  }

  #discoveryOdd(): void {
    const rng = this.#rng;
    const source = this.#source("discovery_odd");
    const odd: Node[] = [
      -1,
      0,
      1,
      1.5,
      new Raw("-0"),
      new Raw("9007199254740991"),
      new Raw("9007199254740993"),
      new Raw("1e308"),
      new Raw("1e309"),
      new Raw("2147483648"),
      new Raw("4294967296"),
      new Raw("1e-7"),
      "1",
      null,
      [],
      {},
      true,
    ];
    const payload: { [key: string]: Node } = {};
    if (rng.chance(0.8)) payload.offset = rng.pick(odd);
    if (rng.chance(0.8)) payload.limit = rng.pick(odd);
    const whole = rng.chance(0.1) ? rng.pick<Node>([[], "all", 0, true, { peers: [] }]) : payload;
    const text = this.#valid(source, "DiscoveryRequest", whole, { ack: rng.chance(0.3) });
    this.#push(
      "discovery_odd",
      source,
      text,
      "DiscoveryRequest",
      `DiscoveryRequest ${shortText(render(whole))}`,
    );
  }

  #ackIds(): void {
    const rng = this.#rng;
    const source = this.#source("ack_ids");
    const random = rng.uuid();
    const real = this.#realId(source, random);
    const realSeq = this.#realSeq(source, rng.int(1, 10));
    const variant = rng.int(0, 7);
    let ackFor: Node;
    let seq: number | null = null;
    let label: string;
    switch (variant) {
      case 0:
        ackFor = random;
        label = "Ack for a random id";
        break;
      case 1:
        ackFor = real;
        label = "Ack for an id the server sent";
        break;
      case 2:
        ackFor = real.toUpperCase();
        label = "Ack for an id the server sent, upper case";
        break;
      case 3:
        ackFor = rng.u32();
        label = "Ack for a random sequence number";
        break;
      case 4:
        ackFor = realSeq;
        label = "Ack for a sequence number the server used";
        break;
      case 5:
        ackFor = null;
        seq = realSeq;
        label = "Ack by its own sequence_number";
        break;
      case 6:
        ackFor = null;
        seq = null;
        label = "Ack naming nothing";
        break;
      default:
        ackFor = rng.int(0, 3);
        label = "Ack for a small sequence number";
    }
    const entries = this.#entries("Ack", rng.chance(0.1) ? rng.pick(CONFUSED_VALUES) : null, source, {
      seq,
      ackFor,
      ack: rng.chance(0.1),
    });
    this.#push("ack_ids", source, renderEntries(entries), "Ack", label);
  }

  // ---------------------------------------------------------------- valid flows

  /**
   * A valid conversation from one or two flow sockets, then replayed (some messages twice) and reordered
   * (some shuffled), as a network would: handshakes, Data, Acks, discovery, Retransmit, Disconnect.
   */
  #validFlow(): void {
    const rng = this.#rng;
    const n = SOURCES_PER_CATEGORY.valid_flow;
    const a = rng.int(0, n - 1);
    const b = (a + rng.int(1, n - 1)) % n;
    const src = `valid_flow/${a}`;
    const dst = `valid_flow/${b}`;
    if (rng.chance(0.05)) this.#nodeIds.delete(src); // a new node on an old address: "replaced"
    const kind = rng.pick([
      "session",
      "session",
      "replay",
      "rehandshake",
      "sibling",
      "routing",
      "after_disconnect",
    ]);
    const msgs: [string, string, string][] = []; // source, text, label
    const add = (
      source: string,
      type: MessageType,
      payload: Node,
      label: string,
      fields: EntryFields = {},
    ) => {
      msgs.push([source, this.#valid(source, type, payload, fields), `${kind}: ${label}`]);
    };
    const handshake = (source: string, info = this.#nodeInfo(this.#nodeId(source))) => {
      this.#seqs.set(source, 0);
      add(source, "HandshakeRequest", info, "HandshakeRequest", { ack: true });
    };
    const ackFor = (source: string) => {
      const fallback = rng.uuid();
      return rng.chance(0.5) ? this.#realId(source, fallback) : this.#realSeq(source, 1);
    };
    switch (kind) {
      case "session": {
        handshake(src);
        if (rng.chance(0.7)) add(src, "Ack", null, "Ack of the response", { ackFor: ackFor(src), seq: null });
        add(src, "Ping", { nonce: rng.uuid() }, "Ping", { ack: rng.chance(0.3) });
        add(src, "Data", { n: rng.int(0, 1e6), text: "x".repeat(rng.int(0, 2000)) }, "Data echo", {
          ack: true,
        });
        add(src, "DiscoveryRequest", null, "DiscoveryRequest null");
        add(src, "DiscoveryRequest", { offset: rng.int(0, 5), limit: rng.int(1, 70) }, "paged discovery");
        add(src, "Data", { to: this.#nodeId(dst), data: { n: 1 } }, "routed Data", { ack: true });
        add(src, "Retransmit", { sequence_numbers: [1, 2, 3, 4, 5] }, "Retransmit");
        add(src, "Ack", null, "Ack of a real id", { ackFor: ackFor(src), seq: null });
        if (rng.chance(0.3)) {
          add(src, "Disconnect", { reason: "done" }, "Disconnect", { ack: rng.chance(0.5) });
        }
        break;
      }
      case "replay": {
        handshake(src);
        for (let k = rng.int(1, 4); k > 0; k--) {
          const text = this.#valid(src, "Data", { replay: k }, { ack: true });
          for (let r = rng.int(2, 5); r > 0; r--) msgs.push([src, text, `replay: Data sent again (${r})`]);
        }
        break;
      }
      case "rehandshake": {
        const info = this.#nodeInfo(this.#nodeId(src));
        const first = this.#valid(src, "HandshakeRequest", info, { ack: true, seq: 1 });
        msgs.push([src, first, "rehandshake: HandshakeRequest"], [src, first, "rehandshake: the same again"]);
        add(src, "HandshakeRequest", info, "new request, same node", { ack: true, seq: 1 });
        add(
          src,
          "HandshakeRequest",
          { ...info, metadata: { network_id: `net-${rng.int(0, 3)}` } },
          "same node, other network",
          { ack: true },
        );
        add(src, "HandshakeRequest", this.#nodeInfo(this.#nodeId(dst)), "another flow's node id", {
          ack: true,
        });
        add(src, "HandshakeRequest", this.#nodeInfo(rng.uuid()), "a new node on this address", { ack: true });
        add(src, "Data", { after: "rehandshake" }, "Data", { ack: true });
        break;
      }
      case "sibling": {
        handshake(src, this.#nodeInfo(this.#nodeId(src), { capabilities: ["server", "discovery"] }));
        const response = {
          node_info: this.#nodeInfo(this.#nodeId(src), { capabilities: ["server"] }),
          success: rng.chance(0.8),
          error_message: null,
        };
        add(src, "HandshakeResponse", response, "HandshakeResponse to the server's probe", {
          ack: rng.chance(0.5),
        });
        add(src, "Data", { pushed: true }, "Data as a sibling", { ack: true });
        add(src, "DiscoveryResponse", [], "DiscoveryResponse");
        add(src, "Error", { error: "sibling error", code: "x" }, "Error");
        if (rng.chance(0.5)) add(src, "Disconnect", { reason: "sibling leaves" }, "Disconnect");
        break;
      }
      case "routing": {
        handshake(src);
        handshake(dst);
        add(dst, "Ack", null, "Ack", { ackFor: 1, seq: null });
        const size = rng.chance(0.1) ? rng.int(20_000, 60_000) : rng.int(10, 3_000);
        for (let k = rng.int(1, 8); k > 0; k--) {
          add(
            src,
            "Data",
            { to: this.#nodeId(dst), data: "d".repeat(size) },
            `routed Data of ${size} bytes`,
            {
              ack: true,
            },
          );
        }
        const seqs: Node[] = [];
        for (let s = 1; s <= 64; s++) seqs.push(s);
        for (let k = rng.int(1, 3); k > 0; k--) {
          add(dst, "Retransmit", { sequence_numbers: seqs }, "Retransmit of 1..64 by the recipient");
        }
        break;
      }
      default: {
        handshake(src);
        add(src, "Disconnect", { reason: "bye" }, "Disconnect", { ack: true });
        add(src, "Data", { late: true }, "Data after Disconnect", { ack: rng.chance(0.5) });
        add(src, "Ack", null, "Ack after Disconnect", { ackFor: ackFor(src), seq: null });
        add(src, "Retransmit", { sequence_numbers: [1] }, "Retransmit after Disconnect");
        add(src, "DiscoveryRequest", null, "DiscoveryRequest after Disconnect");
      }
    }
    // Replay and reorder, as a network may: a few messages twice, a window shuffled.
    if (rng.chance(0.3)) {
      for (let k = rng.int(1, 3); k > 0; k--) {
        const m = rng.pick(msgs);
        msgs.splice(rng.int(0, msgs.length), 0, [m[0], m[1], `${m[2]} (replayed)`]);
      }
    }
    if (rng.chance(0.3) && msgs.length > 2) {
      const start = rng.int(1, msgs.length - 2);
      const window = msgs.splice(start, rng.int(2, Math.min(4, msgs.length - start + 1)));
      msgs.splice(
        start,
        0,
        ...rng.shuffle(window).map(([s, t, l]): [string, string, string] => [s, t, `${l} (reordered)`]),
      );
    }
    for (const [source, text, label] of msgs) {
      this.#push("valid_flow", source, text, /"message_type":"(\w+)"/.exec(text)?.[1] ?? null, label);
    }
  }
}

// ------------------------------------------------------------------ small helpers

function shortText(text: string): string {
  let oneLine = "";
  for (const c of text.slice(0, 200)) {
    oneLine += c.charCodeAt(0) < 0x20 ? `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}` : c;
  }
  return oneLine.length > 48 ? `${oneLine.slice(0, 45)}... (${text.length} chars)` : oneLine;
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}
