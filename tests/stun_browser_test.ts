/**
 * A real browser as the STUN client: Debian's headless Chromium, run inside a client network namespace of the
 * NAT test bed (tests/helpers/netns.ts), gathers ICE candidates with the running program (`main.ts` in
 * `pub`) as its only ICE server, through `RTCPeerConnection` with a data channel and an offer
 * (tests/helpers/stun_browser.ts drives it). Two browsers at once: c1 behind nat1 (endpoint-independent,
 * port-preserving) and c2 behind nat2 (address-and-port-dependent, a random port per flow). Each must report
 * a server-reflexive candidate whose address is its NAT's public address, and the server's STUN counters
 * (read from `/api/stats` inside `pub`) must show the Binding requests it answered, every one of them.
 * Chromium hides host addresses behind mDNS names; only the srflx candidates are checked.
 *
 * Skipped, with a printed reason, when the test bed cannot run (not root, no `ip` or `nft`) or
 * `/usr/bin/chromium` is missing. Bounded: 30 s for the whole test, teardown included.
 *
 * @module
 */
import { assert, assertStrictEquals } from "./deps/assert.ts";
import { createTopology, TOPOLOGY, unavailableReason } from "./helpers/netns.ts";
import { startPublicServer } from "./helpers/netns_server.ts";
import { PROJECT_ROOT } from "./helpers/server_process.ts";
import type { GatherReport } from "./helpers/stun_browser.ts";

const CHROMIUM = "/usr/bin/chromium";

function skipReason(): string | null {
  const bed = unavailableReason();
  if (bed !== null) return bed;
  try {
    if (Deno.statSync(CHROMIUM).isFile) return null;
  } catch {
    // missing
  }
  return `${CHROMIUM} is not installed (apt-get install chromium)`;
}

const SKIP = skipReason();
if (SKIP !== null) console.log(`stun_browser_test.ts: browser STUN test skipped: ${SKIP}`);

/** How long the page waits for gathering to complete. */
const GATHER_MS = 10_000;

/** One parsed `candidate:` line (RFC 8839 section 5.1). */
interface Candidate {
  protocol: string;
  address: string;
  port: number;
  type: string;
}

function parseCandidate(line: string): Candidate | null {
  const f = line.replace(/^a=/, "").split(" ");
  const typ = f.indexOf("typ");
  if (f.length < 8 || typ !== 6) return null;
  return { protocol: f[2]!.toLowerCase(), address: f[4]!, port: Number(f[5]), type: f[7]! };
}

Deno.test({
  name: "headless Chromium behind either NAT gathers a srflx candidate at that NAT's public address",
  ignore: SKIP !== null,
  async fn() {
    const end = performance.now() + 30_000;
    const left = (ms: number) => Math.max(1, Math.min(ms, end - performance.now() - 5_000));
    await using topo = await createTopology({
      nat1: "endpoint-independent",
      nat2: "address-and-port-dependent",
      deadlineMs: left(15_000),
    });
    await using server = await startPublicServer(topo, { deadline: left });

    // Both browsers at once: c1 behind nat1 (port-preserving), c2 behind nat2 (a new random port per flow).
    const reports = await Promise.all((["c1", "c2"] as const).map(async (client) => {
      const browser = topo.spawnDeno(client, [
        "run",
        "-A",
        `--lock=${PROJECT_ROOT}tests/deno.lock`,
        "--config",
        `${PROJECT_ROOT}deno.json`,
        `${PROJECT_ROOT}tests/helpers/stun_browser.ts`,
        `stun:${TOPOLOGY.server}:${server.port}`,
        String(GATHER_MS),
      ], { stdin: false });
      const { line } = await browser.waitForLine(/^\{/, {
        deadlineMs: left(GATHER_MS + 10_000),
        what: "the report",
      });
      await topo.stop(browser);
      const report = JSON.parse(line) as GatherReport;
      console.log(`${client}: candidates (${report.elapsedMs} ms, gathering ${report.gatheringState}):`);
      for (const c of report.candidates) console.log(`  ${c}`);
      for (const e of report.errors) console.log(`  icecandidateerror: ${e}`);
      return report;
    }));

    let srflxTotal = 0;
    for (const [i, nat] of (["nat1", "nat2"] as const).entries()) {
      const report = reports[i]!;
      const srflx = report.candidates.map(parseCandidate).filter((c) => c?.type === "srflx");
      assert(srflx.length > 0, `${nat}: no srflx candidate: ${JSON.stringify(report)}`);
      for (const c of srflx) {
        assertStrictEquals(c!.protocol, "udp");
        assertStrictEquals(c!.address, TOPOLOGY[nat].public, `${nat}: srflx ${JSON.stringify(c)}`);
        assert(c!.port > 0 && c!.port < 65536, `${nat}: srflx port ${c!.port}`);
      }
      assertStrictEquals(report.errors.length, 0, `${nat}: ICE server errors: ${report.errors.join("; ")}`);
      srflxTotal += srflx.length;
    }

    // The server's own account, read inside `pub` (its ops server listens on pub's loopback).
    const stats = await server.stats();
    console.log(
      `server stun counters: ${JSON.stringify(stats.stun)}; ${stats.bytesReceived} B received, ` +
        `${stats.bytesSent} B sent`,
    );
    assert(stats.bytesSent <= 3 * stats.bytesReceived, "at most 3x back to the unvalidated browsers");
    assert(stats.stun.requests >= 1, JSON.stringify(stats.stun));
    assert(stats.stun.responses >= srflxTotal, JSON.stringify(stats.stun));
    assertStrictEquals(stats.stun.responses, stats.stun.requests, JSON.stringify(stats.stun));
  },
});
