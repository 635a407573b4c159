/**
 * The NAT bed, pair by pair, before and after classification: for every pair of NAT kinds
 * tests/helpers/netns.ts builds (every mode in `NAT_MODES`, unordered pairs), two `P2PClient`s
 * (tests/fixtures/nat_client.ts) behind them, and the time from `introduce()` until they have a working path:
 * the direct one the punch found, or else the relay (a routed Data acknowledged end to end by the peer), with
 * the strategy `introduce()` reported.
 *
 * - before: the server runs without `stun_alternate_port`, so no peer is classified and every pair punches
 *   as it always did (`direct`);
 * - after: the server has `stun_alternate_port` (and `stun_alternate_address` when the bed has a second
 *   server address), the clients are given time to be classified, and the cards carry both classes. The
 *   symmetric pair runs first: when its strategy is not `relay`, classification is not available in this
 *   build and the after rows are skipped with a printed reason.
 *
 * Asserted: every pair gets a working path both times; after, no pair is slower than before (beyond
 * {@linkcode SLACK_MS} of noise) and the symmetric pair reaches the relay in under 1 s.
 *
 * `NAT_STRATEGY_RUNS=5 deno test -A tests/nat_strategy_test.ts` repeats each pair and prints every time and
 * the medians (the table in docs/nat.md); CI runs each pair once. Needs root, `ip` and `nft`; skipped (with a
 * note) otherwise.
 *
 * @module
 */
import { assert } from "./deps/assert.ts";
import {
  createTopology,
  NAT_MODES,
  type NatMode,
  type NatTopology,
  type NsProcess,
  TOPOLOGY,
  unavailableReason,
} from "./helpers/netns.ts";
import { type PublicServer, spawnNatClient, startPublicServer } from "./helpers/netns_server.ts";

const UNAVAILABLE = unavailableReason();
if (UNAVAILABLE !== null) console.log(`nat_strategy_test.ts: NAT tests skipped: ${UNAVAILABLE}`);

const RUNS = Math.max(1, Math.min(20, Number(Deno.env.get("NAT_STRATEGY_RUNS") ?? "1") || 1));
/** Noise allowed between a pair's before and after times (ms; one run each in CI). */
const SLACK_MS = 300;
/** How long clients get to be classified after connecting, in the after phase (ms). */
const CLASSIFY_MS = 1_500;
const SYMMETRIC: [NatMode, NatMode] = ["address-and-port-dependent", "address-and-port-dependent"];

/** Every unordered pair of the bed's modes, the symmetric pair first (nat1 is the initiator's). */
function pairs(): [NatMode, NatMode][] {
  const out: [NatMode, NatMode][] = [SYMMETRIC];
  for (let i = 0; i < NAT_MODES.length; i++) {
    for (let j = i; j < NAT_MODES.length; j++) {
      const p: [NatMode, NatMode] = [NAT_MODES[i]!, NAT_MODES[j]!];
      if (p.join() !== SYMMETRIC.join()) out.push(p);
    }
  }
  return out;
}

interface PathResult {
  event: string;
  via: "direct" | "relay";
  ms: number;
  strategy: string | null;
  failedAfterMs?: number;
  error?: string;
}

function json(line: string): Record<string, unknown> | null {
  try {
    const v = JSON.parse(line);
    return v !== null && typeof v === "object" ? v : null;
  } catch {
    return null;
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = Math.floor(s.length / 2);
  return s.length % 2 === 1 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function startServer(topo: NatTopology, classify: boolean): Promise<PublicServer> {
  const config: Record<string, unknown> = {};
  if (classify) {
    config.stun_alternate_port = 0;
    const alt = (TOPOLOGY as { serverAlt?: string }).serverAlt;
    if (alt !== undefined) config.stun_alternate_address = alt;
  }
  return startPublicServer(topo, {
    config,
    configName: `server-${classify ? "after" : "before"}.json`,
    ops: false,
  });
}

async function startClient(
  topo: NatTopology,
  name: "c1" | "c2",
  server: string,
): Promise<{ proc: NsProcess; nodeId: string }> {
  const proc = spawnNatClient(topo, name, server);
  try {
    const { line } = await proc.waitForLine((l) => {
      const e = json(l);
      return e?.event === "ready" || e?.event === "connectFailed";
    }, { deadlineMs: 20_000, what: `${name}'s ready line` });
    const ready = json(line)!;
    if (ready.event !== "ready") throw new Error(`${name}: ${line}`);
    return { proc, nodeId: ready.nodeId as string };
  } catch (error) {
    await topo.stop(proc);
    throw error;
  }
}

/** One pair: set the modes, start two fresh clients (new ports, no conntrack state), time c1's path to c2. */
async function measure(
  topo: NatTopology,
  server: string,
  modes: [NatMode, NatMode],
  settleMs: number,
): Promise<PathResult> {
  await topo.setNatMode("nat1", modes[0]);
  await topo.setNatMode("nat2", modes[1]);
  const [c1, c2] = await Promise.all([startClient(topo, "c1", server), startClient(topo, "c2", server)]);
  try {
    if (settleMs > 0) await new Promise((r) => setTimeout(r, settleMs));
    const mark = c1.proc.mark();
    await c1.proc.writeLine(`@m path ${c2.nodeId}`);
    const { line } = await c1.proc.waitForLine((l) => json(l)?.tag === "m", {
      after: mark,
      deadlineMs: 15_000,
      what: "the path result",
    });
    const result = json(line) as unknown as PathResult;
    assert(result.event === "path", line);
    return result;
  } finally {
    await Promise.all([topo.stop(c1.proc), topo.stop(c2.proc)]);
  }
}

/** Runs `RUNS` measurements of every pair in `list` against a fresh server; the results by pair. */
async function phase(
  topo: NatTopology,
  classify: boolean,
  list: [NatMode, NatMode][],
  stopEarly?: (pair: [NatMode, NatMode], r: PathResult) => boolean,
): Promise<Map<string, PathResult[]>> {
  const server = await startServer(topo, classify);
  const out = new Map<string, PathResult[]>();
  try {
    for (const pair of list) {
      const key = pair.join(" / ");
      for (let i = 0; i < RUNS; i++) {
        const r = await measure(topo, server.addr, pair, classify ? CLASSIFY_MS : 0);
        out.set(key, [...out.get(key) ?? [], r]);
        if (stopEarly?.(pair, r)) return out;
      }
    }
  } finally {
    await server.stop();
  }
  return out;
}

function rows(label: string, results: Map<string, PathResult[]>): string[] {
  return [...results].map(([key, rs]) => {
    const ms = rs.map((r) => Math.round(r.ms));
    const strategies = [...new Set(rs.map((r) => r.strategy ?? "-"))].join(", ");
    const via = [...new Set(rs.map((r) => r.via))].join(", ");
    return `| ${label} | ${key} | ${strategies} | ${via} | ${Math.round(median(ms))} | ${ms.join(", ")} |`;
  });
}

Deno.test({
  name:
    "NAT bed: every pair of NAT kinds gets a working path, before and after classification; time and strategy",
  ignore: UNAVAILABLE !== null,
  async fn() {
    const topo = await createTopology({ deadlineMs: 15_000 });
    try {
      const list = pairs();
      const before = await phase(topo, false, list);
      const symmetricKey = SYMMETRIC.join(" / ");
      let notClassified: string | null = null;
      const after = await phase(topo, true, list, (pair, r) => {
        if (pair.join(" / ") !== symmetricKey || r.strategy === "relay") return false;
        notClassified = `the symmetric pair chose ${r.strategy ?? "nothing"}, not relay`;
        return true;
      });
      const table = [
        `| phase | nat1 / nat2 | strategy | path | median ms | ms (${RUNS} runs) |`,
        `| --- | --- | --- | --- | --- | --- |`,
        ...rows("before", before),
        ...(notClassified === null ? rows("after", after) : []),
      ];
      console.log(`\n${table.join("\n")}`);
      for (const [key, rs] of before) {
        for (const r of rs) {
          assert(r.via === "direct" || r.via === "relay", `before ${key}: ${JSON.stringify(r)}`);
        }
        for (const r of rs) {
          assert(r.strategy === "direct", `before ${key}: nothing is classified: ${r.strategy}`);
        }
      }
      if (notClassified !== null) {
        console.log(
          `nat_strategy_test.ts: the after rows are skipped: classification is not available (${notClassified})`,
        );
        return;
      }
      for (const [key, rs] of after) {
        for (const r of rs) {
          assert(r.via === "direct" || r.via === "relay", `after ${key}: ${JSON.stringify(r)}`);
        }
        const was = median(before.get(key)!.map((r) => r.ms));
        const now = median(rs.map((r) => r.ms));
        assert(
          now <= was + SLACK_MS,
          `after ${key}: ${Math.round(now)} ms, slower than before (${Math.round(was)} ms)`,
        );
      }
      const sym = after.get(symmetricKey)!;
      for (const r of sym) {
        assert(
          r.strategy === "relay" && r.via === "relay" && r.ms < 1_000,
          `symmetric pair: ${JSON.stringify(r)}`,
        );
      }
    } finally {
      await topo.destroy();
    }
  },
});
