/**
 * The recorder of the golden-trace test (tests/golden_trace_test.ts): one ordered log of every datagram put on
 * a {@linkcode Sim}'s wire (time, from, to, its fate at send time, the exact bytes) and every event of every
 * endpoint (time, host, the event as canonical JSON), folded into a SHA-256 digest as it goes, plus counts by
 * type for a human-readable summary and feature tags that prove a scenario touched what it claims.
 *
 * Keyed scenarios are recorded NORMALISED (see {@linkcode normaliseKeyed}): the values derived from the X25519
 * ephemeral keys the core draws from the OS (not injectable today) are replaced by placeholders of the same
 * length; every other byte is kept.
 *
 * @module
 */
import { createHash, type Hash } from "node:crypto";
import type { EndpointEvent } from "../../src/core/endpoint.ts";
import type { Sim, SimEndpoint, TraceEntry } from "../sim.ts";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder("utf-8", { fatal: true });

/** The placeholder character a normalised value is made of (its length is kept). */
export const PLACEHOLDER = "~";

/**
 * The exact fields a keyed scenario normalises, all derived from the X25519 key pairs the core draws with
 * `node:crypto` for every keyed handshake (and the server's key it reuses for up to 60 s):
 *
 * - `auth.dh` of a HandshakeRequest and of a HandshakeResponse: the X25519 public key itself (43 base64url).
 * - `auth.sig` of both: the Ed25519 signature; Ed25519 is deterministic and the identity keys are fixed, but
 *   the signed bytes include `dh` (86 base64url).
 * - `mac`, the last member of every datagram of an authenticated session: HMAC-SHA-256 under session keys that
 *   HKDF derives from the X25519 shared secret (32 hex).
 * - `sum` of a datagram that carries `auth` (the keyed HandshakeRequest and HandshakeResponse): the CRC-32 of
 *   the datagram, `dh` and `sig` included (8 hex). Sums of other datagrams are kept.
 *
 * Everything else is kept byte for byte: `sid` (taken from the request's message id), `auth.key` and
 * `auth.to` / `auth.sid`, node ids (derived from the fixed identity keys), sums, sequence numbers, payloads.
 */
export const NORMALISED_FIELDS = ["auth.dh", "auth.sig", "mac", "sum (with auth)"] as const;

/** A datagram with {@linkcode NORMALISED_FIELDS} replaced; throws when a field is not where it should be. */
export function normaliseKeyed(bytes: Uint8Array): Uint8Array {
  let text: string;
  let msg: Record<string, unknown>;
  try {
    text = fromUtf8.decode(bytes);
    msg = JSON.parse(text);
  } catch {
    return bytes; // Not JSON (a corrupted copy is never what was sent, so this is a raw peer's junk): as is.
  }
  if (typeof msg !== "object" || msg === null || Array.isArray(msg)) return bytes;
  const blank = (s: string) => PLACEHOLDER.repeat(s.length);
  const auth = msg.auth as Record<string, unknown> | undefined;
  if (auth && typeof auth === "object" && (typeof auth.dh === "string" || typeof auth.sig === "string")) {
    for (const key of ["dh", "sig"] as const) {
      const value = auth[key];
      if (typeof value !== "string") continue;
      const member = `"${key}":"${value}"`;
      const at = text.indexOf(member);
      if (at < 0 || text.indexOf(member, at + 1) >= 0) {
        throw new Error(`Cannot normalise "auth.${key}": not exactly once in ${text}`);
      }
      text = text.replace(member, `"${key}":"${blank(value)}"`);
    }
    if (typeof msg.sum === "string") {
      const m = /,"sum":"([0-9a-f]{8})"\}$/.exec(text);
      if (!m) throw new Error(`Cannot normalise "sum": not the last member in ${text}`);
      text = text.slice(0, m.index) + `,"sum":"${blank(m[1]!)}"}`;
    }
  }
  if (typeof msg.mac === "string") {
    const m = /,"mac":"([0-9a-f]{32})"\}$/.exec(text);
    if (!m) throw new Error(`Cannot normalise "mac": not the last member in ${text}`);
    text = text.slice(0, m.index) + `,"mac":"${blank(m[1]!)}"}`;
  }
  return utf8.encode(text);
}

/**
 * Canonical JSON of an event: object keys sorted (so a refactor that builds the same event in another key
 * order keeps the digest), `Uint8Array`s as hex, Maps and Sets as arrays. With `keyed`, the same fields as
 * {@linkcode normaliseKeyed} become placeholders (the decoded messages inside events carry them): strings
 * named `dh` or `sig`, every string inside a `mac` member (a decoded message keeps it as `{end, tag}`), and
 * the `sum` of an object that has an `auth` member.
 */
export function canonical(value: unknown, keyed: boolean): string {
  const walk = (v: unknown, key: string | null, secret = false): unknown => {
    if (typeof v === "string" && keyed && secret) return PLACEHOLDER.repeat(v.length);
    if (v instanceof Uint8Array) {
      return { hex: Array.from(v, (b) => b.toString(16).padStart(2, "0")).join("") };
    }
    if (v instanceof Map) {
      return [...v.entries()].map(([k, x]) => [walk(k, null, secret), walk(x, null, secret)]);
    }
    if (v instanceof Set) return [...v].map((x) => walk(x, null, secret));
    if (Array.isArray(v)) return v.map((x) => walk(x, null, secret));
    if (typeof v === "string" && keyed && (key === "dh" || key === "sig" || key === "mac")) {
      return PLACEHOLDER.repeat(v.length);
    }
    if (typeof v === "bigint") return `${v}n`;
    if (v !== null && typeof v === "object") {
      const out: Record<string, unknown> = {};
      const signed = keyed && "auth" in v;
      for (const k of Object.keys(v).sort()) {
        const x = (v as Record<string, unknown>)[k];
        const hide = secret || (keyed && k === "mac") || (signed && k === "sum");
        if (x !== undefined && typeof x !== "function") out[k] = walk(x, k, hide);
      }
      return out;
    }
    return v;
  };
  return JSON.stringify(walk(value, null));
}

/** Options of {@linkcode Recorder}. */
export interface RecorderOptions {
  /** Normalise keyed fields ({@linkcode normaliseKeyed}). */
  keyed: boolean;
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
    let bytes = this.#options.keyed ? normaliseKeyed(t.bytes) : t.bytes;
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
    const line = `E ${this.#sim.now} ${host.addr} ${canonical(event, this.#options.keyed)}\n`;
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
