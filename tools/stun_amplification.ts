/**
 * STUN amplification, measured on the real program: for every kind of STUN request (and of STUN datagram
 * that is not one) a client can send, bytes the server sent back per byte it received, per source and for
 * the one IP all sources share.
 *
 * It starts `main.ts` as a subprocess (`startProbedServer`), and gives each kind its own loopback UDP socket
 * (a {@linkcode CountingSocket}, so each kind is one unvalidated source): the socket sends `count` datagrams
 * of its kind, each with a fresh transaction id, and counts every byte that comes back, from any port. The
 * server's `/api/stats` must account for each datagram as the kind expects (a Binding success, a 420 or 400
 * error response, or a drop by its `stun_*` reason) before the next kind starts. Nothing a source sends ever
 * validates it, so every source is under the 3x rule for unvalidated addresses; the Binding answers are
 * further held to their request plus the mapped address (docs/protocol.md#stun).
 *
 * ```sh
 * deno run -A tools/stun_amplification.ts            # prints the table (markdown) and the per-IP total
 * deno run -A tools/stun_amplification.ts --count 50
 * ```
 *
 * Exit status: 0 when every bound held, 1 when one did not, 2 for a bad flag. `tests/stun_amplification_test.ts`
 * runs it in the test suite; docs/security.md#stun-amplification has the table.
 *
 * @module
 */
import type { StatsSnapshot } from "../src/core/stats.ts";
import {
  attributeSize,
  encodeStun,
  fingerprint,
  parseStun,
  STUN_ATTR,
  type StunOutgoing,
} from "../src/wire/stun.ts";
import { waitUntil } from "../tests/helpers/server_process.ts";
import { CountingSocket, getApiStats, intFlag, startProbedServer, toolFlags } from "./server_probe.ts";

/** What the server does with a kind. */
export type StunOutcome =
  | "success"
  | "error 420"
  | "error 400"
  | "success or error 420"
  | "drop stun_malformed"
  | "drop stun_bad_fingerprint"
  | "drop stun_unknown_method"
  | "drop stun_indication"
  | "drop stun_response";

/** One kind of datagram: a name, what the server should do with it, and how to make one. */
export interface StunKind {
  /** A short name for the table. */
  name: string;
  /** The expected outcome. */
  expect: StunOutcome;
  /** Makes one datagram with transaction id `id` (12 bytes; the cookie is added unless `classic`). */
  make(id: Uint8Array): Uint8Array;
}

/** One row of the measurement. */
export interface AmplificationRow {
  /** The kind's name. */
  kind: string;
  /** The expected outcome (checked against the server's counters). */
  outcome: StunOutcome;
  /** What came back (`"success"`, `"error 420"`, ...; empty when nothing did). */
  answered: string[];
  /** Size of one datagram of the kind. */
  requestBytes: number;
  /** Datagrams sent. */
  sent: number;
  /** Datagrams that came back. */
  answers: number;
  /** Size of the largest answer, or 0. */
  answerBytes: number;
  /** Bytes sent, bytes received back. */
  bytesIn: number;
  bytesOut: number;
  /** `bytesOut / bytesIn`. */
  ratio: number;
  /**
   * Bytes out beyond the mapped-address attribute's size per answer, per byte in: what the Binding rule
   * ("never larger than the request plus the mapped address") holds to at most 1.
   */
  ratioBeyondAddress: number;
}

/** The measurement. */
export interface AmplificationReport {
  rows: AmplificationRow[];
  /** All kinds together: the one IP (127.0.0.1) every source shares. */
  perIp: { bytesIn: number; bytesOut: number; ratio: number };
  /** Bounds that did not hold (empty when all did). */
  failures: string[];
  /** The server's STUN counters at the end. */
  stun: StatsSnapshot["stun"];
}

/** The mapped-address attribute's size for an IPv4 source (4-byte header, 8-byte value). */
const MAPPED_V4 = attributeSize(8);
const COOKIE = [0x21, 0x12, 0xa4, 0x42];

function attr(type: number, length: number, fill = 0): { type: number; value: Uint8Array } {
  return { type, value: new Uint8Array(length).fill(fill) };
}

function stun(
  id: Uint8Array,
  attributes: StunOutgoing["attributes"],
  options: { fingerprint?: boolean; class?: StunOutgoing["class"]; method?: number } = {},
): Uint8Array {
  return encodeStun({
    method: options.method ?? 1,
    class: options.class ?? "request",
    id: Uint8Array.from([...COOKIE, ...id]),
    attributes,
    fingerprint: options.fingerprint ?? false,
  });
}

/** An RFC 3489 Binding request: no cookie (16 bytes of transaction id), CHANGE-REQUEST with `flags`. */
function classic(id: Uint8Array, flags: number): Uint8Array {
  const out = new Uint8Array(28);
  const v = new DataView(out.buffer);
  v.setUint16(0, 0x0001);
  v.setUint16(2, 8);
  out.set(id, 4);
  out.set(id.subarray(0, 4), 16);
  v.setUint16(20, STUN_ATTR.CHANGE_REQUEST);
  v.setUint16(22, 4);
  v.setUint32(24, flags);
  return out;
}

function changeRequest(flags: number): { type: number; value: Uint8Array } {
  return { type: STUN_ATTR.CHANGE_REQUEST, value: Uint8Array.from([0, 0, 0, flags]) };
}

/** Every kind measured, in the table's order. */
export const STUN_KINDS: readonly StunKind[] = [
  { name: "Binding, bare (RFC 8489)", expect: "success", make: (id) => stun(id, []) },
  { name: "Binding + FINGERPRINT", expect: "success", make: (id) => stun(id, [], { fingerprint: true }) },
  {
    name: "Binding + SOFTWARE (20 B) + FINGERPRINT",
    expect: "success",
    make: (id) => stun(id, [attr(STUN_ATTR.SOFTWARE, 20, 0x61)], { fingerprint: true }),
  },
  { name: "Binding, RFC 3489 (no cookie, no change)", expect: "success", make: (id) => classic(id, 0) },
  {
    name: "Binding, 1,400 B (optional attribute)",
    expect: "success",
    make: (id) => stun(id, [attr(0xc0ff, 1_372)], { fingerprint: true }),
  },
  {
    name: "Binding, 16,000 B (optional attribute)",
    expect: "success",
    make: (id) => stun(id, [attr(0xc0ff, 15_972)], { fingerprint: true }),
  },
  {
    name: "unknown comprehension-required attribute",
    expect: "error 420",
    make: (id) => stun(id, [attr(0x0024, 4)], { fingerprint: true }),
  },
  {
    name: "16 unknown comprehension-required attributes",
    expect: "error 420",
    make: (id) => stun(id, Array.from({ length: 16 }, (_, i) => attr(0x0040 + i, 0))),
  },
  {
    name: "CHANGE-REQUEST: change port (RFC 5780)",
    expect: "success or error 420",
    make: (id) => stun(id, [changeRequest(0x02)], { fingerprint: true }),
  },
  { name: "RFC 3489 change IP and port", expect: "success or error 420", make: (id) => classic(id, 0x06) },
  {
    name: "CHANGE-REQUEST of 8 bytes",
    expect: "error 400",
    make: (id) => stun(id, [attr(STUN_ATTR.CHANGE_REQUEST, 8)]),
  },
  {
    name: "FINGERPRINT not last",
    expect: "error 400",
    make: (id) => {
      // A correct FINGERPRINT (over what precedes it), then another attribute: it is no longer last.
      const out = stun(id, [attr(STUN_ATTR.FINGERPRINT, 4), attr(0xc0ff, 4)]);
      new DataView(out.buffer).setUint32(24, fingerprint(out, 20));
      return out;
    },
  },
  {
    name: "wrong FINGERPRINT",
    expect: "drop stun_bad_fingerprint",
    make: (id) => {
      const bytes = stun(id, [], { fingerprint: true });
      bytes[bytes.length - 1]! ^= 0xff;
      return bytes;
    },
  },
  {
    name: "malformed: length field too long",
    expect: "drop stun_malformed",
    make: (id) => {
      const bytes = stun(id, [attr(0xc0ff, 8)]);
      bytes[3] = bytes[3]! + 4;
      return bytes;
    },
  },
  {
    name: "malformed: attribute past the end",
    expect: "drop stun_malformed",
    make: (id) => {
      const bytes = stun(id, [attr(0xc0ff, 8)]);
      bytes[23] = 200;
      return bytes;
    },
  },
  {
    name: "Allocate request (TURN)",
    expect: "drop stun_unknown_method",
    make: (id) => stun(id, [attr(0x0019, 4)], { method: 0x003, fingerprint: true }),
  },
  {
    name: "Binding indication",
    expect: "drop stun_indication",
    make: (id) => stun(id, [], { class: "indication", fingerprint: true }),
  },
  {
    name: "Binding success response",
    expect: "drop stun_response",
    make: (id) => stun(id, [attr(STUN_ATTR.XOR_MAPPED_ADDRESS, 8)], { class: "success" }),
  },
];

/** A source socket: sends datagrams to the server, remembers the largest answer. */
class Source extends CountingSocket {
  largest = 0;
  /** What came back, by kind of answer ("success", "error 420", ...). */
  readonly seen = new Set<string>();
  send(bytes: Uint8Array, to: Deno.NetAddr): Promise<void> {
    return this.sendDatagram(bytes, to);
  }
  protected onDatagram(bytes: Uint8Array): void {
    this.largest = Math.max(this.largest, bytes.length);
    this.seen.add(answerKind(bytes));
  }
}

/** "success", "error NNN", or what else the datagram is. */
function answerKind(bytes: Uint8Array): string {
  try {
    const msg = parseStun(bytes);
    if (msg.class !== "error") return msg.class;
    const v = msg.attributes.find((a) => a.type === STUN_ATTR.ERROR_CODE)?.value;
    return v && v.length >= 4 ? `error ${(v[2]! & 7) * 100 + v[3]!}` : "error";
  } catch {
    return "not STUN";
  }
}

/** The counter of `stats` that one datagram of `outcome` moves. */
function counter(stats: StatsSnapshot, outcome: StunOutcome): number {
  if (outcome === "success") return stats.stun.responses;
  if (outcome === "error 420") return stats.stun.errors.unknown_attribute;
  if (outcome === "error 400") return stats.stun.errors.bad_request;
  if (outcome === "success or error 420") return stats.stun.responses + stats.stun.errors.unknown_attribute;
  const reason = outcome.slice("drop ".length) as keyof StatsSnapshot["drops"];
  return stats.drops[reason];
}

/** Options of {@linkcode measureStunAmplification}. */
export interface MeasureOptions {
  /** Datagrams of each kind. @default {20} */
  count?: number;
  /** Most time one kind may take to be accounted for. @default {10_000} */
  deadlineMs?: number;
}

/**
 * Runs the measurement against a fresh server (stopped before this returns).
 *
 * @throws {Error} when the server does not start or does not account for a kind's datagrams in time.
 */
export async function measureStunAmplification(options: MeasureOptions = {}): Promise<AmplificationReport> {
  const count = options.count ?? 20;
  const deadlineMs = options.deadlineMs ?? 10_000;
  const server = await startProbedServer();
  const rows: AmplificationRow[] = [];
  const failures: string[] = [];
  const to: Deno.NetAddr = { transport: "udp", hostname: "127.0.0.1", port: server.process.addr.port };
  let stunStats: StatsSnapshot["stun"];
  try {
    for (const kind of STUN_KINDS) {
      const source = new Source();
      try {
        const before = (await getApiStats(server.base)).stats;
        const counted = (n: number) =>
          waitUntil(
            async () => {
              const s = (await getApiStats(server.base)).stats;
              return counter(s, kind.expect) - counter(before, kind.expect) >= n ? s : undefined;
            },
            `${n} datagrams of "${kind.name}" counted as ${kind.expect}`,
            deadlineMs,
          );
        let size = 0;
        let unconfirmed = 0;
        for (let i = 0; i < count; i++) {
          const bytes = kind.make(crypto.getRandomValues(new Uint8Array(12)));
          size = bytes.length;
          await source.send(bytes, to);
          // Big datagrams in bursts would overflow the server's socket buffer: the kernel would drop them.
          unconfirmed += bytes.length;
          if (unconfirmed > 32_768) {
            await counted(i + 1);
            unconfirmed = 0;
          }
        }
        const after = await counted(count);
        const answered = kind.expect.startsWith("drop") ? 0 : count;
        await waitUntil(
          () => source.received >= answered,
          `${answered} answers to "${kind.name}"`,
          deadlineMs,
        );
        await new Promise((resolve) => setTimeout(resolve, 50)); // anything more would show now
        if (after.droppedTotal - before.droppedTotal !== (answered === 0 ? count : 0)) {
          failures.push(`${kind.name}: other drops ${JSON.stringify(after.drops)}`);
        }
        const bytesOut = source.receivedBytes;
        const bytesIn = source.sentBytes;
        const row: AmplificationRow = {
          kind: kind.name,
          outcome: kind.expect,
          answered: [...source.seen].sort(),
          requestBytes: size,
          sent: source.sent,
          answers: source.received,
          answerBytes: source.largest,
          bytesIn,
          bytesOut,
          ratio: bytesOut / bytesIn,
          ratioBeyondAddress: Math.max(0, bytesOut - source.received * MAPPED_V4) / bytesIn,
        };
        rows.push(row);
        if (row.answers !== answered) {
          failures.push(`${kind.name}: ${row.answers} answers, expected ${answered}`);
        }
        const allowed = kind.expect === "success or error 420" ? ["success", "error 420"] : [kind.expect];
        if (answered > 0 && !row.answered.every((a) => allowed.includes(a))) {
          failures.push(`${kind.name}: answered ${row.answered.join(", ")}, expected ${kind.expect}`);
        }
        if (row.ratio > 3) failures.push(`${kind.name}: ${row.ratio.toFixed(2)}x is over 3x`);
        if (row.ratioBeyondAddress > 1) {
          failures.push(`${kind.name}: ${row.ratioBeyondAddress.toFixed(2)}x beyond the mapped address`);
        }
      } finally {
        await source.close();
      }
    }
    stunStats = (await getApiStats(server.base)).stats.stun;
  } finally {
    await server.process.stop();
  }
  const bytesIn = rows.reduce((n, r) => n + r.bytesIn, 0);
  const bytesOut = rows.reduce((n, r) => n + r.bytesOut, 0);
  if (bytesOut > 3 * bytesIn) failures.push(`per IP: ${bytesOut} B out for ${bytesIn} B in`);
  return { rows, perIp: { bytesIn, bytesOut, ratio: bytesOut / bytesIn }, failures, stun: stunStats };
}

/** The report as a markdown table and a per-IP line. */
export function formatReport(report: AmplificationReport): string {
  const lines = [
    "| request | server's answer | request B | answer B | out / in | (out - 12 B per answer) / in |",
    "|---|---|--:|--:|--:|--:|",
  ];
  for (const r of report.rows) {
    const answer = r.outcome.startsWith("drop") ? `none (${r.outcome.slice(5)})` : r.answered.join(", ");
    lines.push(
      `| ${r.kind} | ${answer} | ${r.requestBytes.toLocaleString("en")} | ${r.answerBytes || "-"} | ` +
        `${r.ratio.toFixed(2)}x | ${r.ratioBeyondAddress.toFixed(2)}x |`,
    );
  }
  const p = report.perIp;
  lines.push(
    "",
    `All kinds from one IP: ${p.bytesIn.toLocaleString("en")} B in, ${
      p.bytesOut.toLocaleString("en")
    } B out ` +
      `(${p.ratio.toFixed(2)}x).`,
  );
  return lines.join("\n");
}

if (import.meta.main) {
  const usage = "usage: deno run -A tools/stun_amplification.ts [--count N]";
  const flags = toolFlags(Deno.args, { count: "20" }, usage);
  if (typeof flags === "number") Deno.exit(flags);
  let count: number;
  try {
    count = intFlag(flags.count, "--count", 1, 1_000);
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    Deno.exit(2);
  }
  const report = await measureStunAmplification({ count });
  console.log(formatReport(report));
  for (const f of report.failures) console.log(`FAILED: ${f}`);
  Deno.exit(report.failures.length === 0 ? 0 : 1);
}
