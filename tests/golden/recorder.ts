/**
 * The recorder of the golden-trace test (tests/golden_trace_test.ts): one ordered log of every datagram put on
 * a {@linkcode Sim}'s wire (time, from, to, its fate at send time, the exact bytes) and every event of every
 * endpoint (time, host, the event as canonical JSON), folded into a SHA-256 digest as it goes, plus counts by
 * type for a human-readable summary and feature tags that prove a scenario touched what it claims.
 *
 * Every byte is recorded as sent, keyed scenarios included: the golden world injects the X25519 key pairs
 * (`generateX25519`) as well as ids, randomness and identities, so signatures, session keys and MACs are the
 * same on every run.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import type { EndpointEvent } from "../../src/core/endpoint.ts";
import type { Sim, SimEndpoint, TraceEntry } from "../sim.ts";

const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Canonical JSON of an event: object keys sorted (so a refactor that builds the same event in another key
 * order keeps the digest), `Uint8Array`s as hex, Maps and Sets as arrays.
 */
export function canonical(value: unknown): string {
  const walk = (v: unknown): unknown => {
    if (v instanceof Uint8Array) {
      return { hex: Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("") };
    }
    if (v instanceof Map) {
      return [...v.entries()].map(([k, x]) => [walk(k), walk(x)]);
    }
    if (v instanceof Set) return [...v].map((x) => walk(x));
    if (Array.isArray(v)) return v.map((x) => walk(x));
    if (typeof v === "bigint") return `${v}n`;
    if (v !== null && typeof v === "object") {
      const out: Record<string, unknown> = {};
      for (const k of Object.keys(v).sort()) {
        const x = (v as Record<string, unknown>)[k];
        if (x !== undefined && typeof x !== "function") out[k] = walk(x);
      }
      return out;
    }
    return v;
  };
  return JSON.stringify(walk(value));
}

/** Options of {@linkcode Recorder}. */
export interface RecorderOptions {
  /** Keep a human-readable log ({@linkcode Recorder.log}) for GOLDEN_DUMP. @default {false} */
  keepLog?: boolean;
  /**
   * Test hook: may return different bytes for the `index`-th transmit (from 0) before it is digested, to
   * prove that one changed byte changes the digest. @default {none}
   */
  mutate?: (index: number, bytes: Uint8Array) => Uint8Array;
}

/** Records one scenario on one {@linkcode Sim}. */
export class Recorder {
  /** Transmits by message type (`"?"` when the datagram is not a JSON object). */
  readonly transmits = new Map<string, number>();
  /** Events by type. */
  readonly events = new Map<string, number>();
  /** What the scenario touched: message types, extension keys on the wire, event types, network fates. */
  readonly tags = new Set<string>();
  /** The human-readable log, when `keepLog`. */
  readonly log: string[] = [];
  /** Datagrams lost at send time. */
  lost = 0;
  readonly #hash: Hash = createHash("sha256");
  readonly #options: RecorderOptions;
  readonly #sim: Sim;
  #index = 0;
  #digest: string | null = null;

  constructor(sim: Sim, options: RecorderOptions) {
    this.#sim = sim;
    this.#options = options;
    sim.observe({
      transmit: (entry) => this.#transmit(entry),
      event: (host, event) => this.#event(host, event),
    });
  }

  #transmit(t: TraceEntry): void {
    let bytes = t.bytes;
    if (this.#options.mutate) bytes = this.#options.mutate(this.#index, bytes);
    this.#index++;
    const fate = `copies=${t.copies} lost=${t.lost ?? "-"} corrupted=${t.corrupted} reordered=${t.reordered}`;
    const head = `T ${t.at} ${t.from} > ${t.to} ${fate} len=${bytes.length}\n`;
    this.#update(head, bytes);
    let type = "?";
    try {
      const msg = JSON.parse(fromUtf8.decode(t.bytes));
      if (msg && typeof msg === "object" && !Array.isArray(msg)) {
        type = String(msg.message_type);
        for (const k of ["ext", "rel", "ord", "frag", "cookie", "auth", "sid", "mac", "sum"]) {
          if (k in msg) this.tags.add(`wire:${k}`);
        }
        for (const k of Object.keys(msg.payload ?? {})) {
          if (typeof msg.payload === "object" && !Array.isArray(msg.payload)) this.tags.add(`${type}.${k}`);
        }
      }
    } catch {
      // Raw junk: counted as "?".
    }
    this.tags.add(`type:${type}`);
    if (t.lost) this.tags.add(`lost:${t.lost}`);
    if (t.corrupted) this.tags.add("corrupted");
    if (t.reordered) this.tags.add("reordered");
    if (t.copies > 1) this.tags.add("duplicated");
    if (t.lost) this.lost++;
    this.transmits.set(type, (this.transmits.get(type) ?? 0) + 1);
    if (this.#options.keepLog) {
      let text: string;
      try {
        text = fromUtf8.decode(bytes);
      } catch {
        text = `hex:${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
      }
      this.log.push(head.trimEnd() + " " + text);
    }
  }

  #event(host: SimEndpoint, event: EndpointEvent): void {
    const line = `E ${this.#sim.now} ${host.addr} ${canonical(event)}\n`;
    this.#update(line, null);
    this.events.set(event.type, (this.events.get(event.type) ?? 0) + 1);
    this.tags.add(`event:${event.type}`);
    if (this.#options.keepLog) this.log.push(line.trimEnd());
  }

  #update(head: string, bytes: Uint8Array | null): void {
    if (this.#digest !== null) throw new Error("The recorder was already digested");
    this.#hash.update(head);
    if (bytes) {
      this.#hash.update(bytes);
      this.#hash.update("\n");
    }
  }

  /** The SHA-256 (hex) of everything recorded; recording ends here. */
  digest(): string {
    this.#digest ??= this.#hash.digest("hex");
    return this.#digest;
  }

  /** One line: transmits and events, each by type (sorted), and datagrams lost at send time. */
  summary(): string {
    const part = (m: Map<string, number>) => {
      const total = [...m.values()].reduce((a, b) => a + b, 0);
      const each = [...m.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, n]) =>
        `${k} ${n}`
      );
      return `${total} (${each.join(", ")})`;
    };
    return `transmits ${part(this.transmits)}; events ${part(this.events)}; lost at send ${this.lost}`;
  }
}
