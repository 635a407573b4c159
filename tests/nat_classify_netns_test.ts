/**
 * NAT classification in the netns test bed (issue 18): the real server (`main.ts`) with
 * `stun_alternate_port` and `stun_alternate_address` (TOPOLOGY.serverAlt), and two `P2PClient`s
 * (tests/fixtures/nat_client.ts) behind the bed's NATs, which classify themselves right after connecting.
 * Every NAT mode of the bed is classified as NAT_BEHAVIOUR says it was built, in three rounds on one
 * topology. Needs root, `ip` and `nft`; skipped (with a note) otherwise.
 *
 * @module
 */
import { assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { createTopology, NAT_BEHAVIOUR, type NatMode, TOPOLOGY, unavailableReason } from "./helpers/netns.ts";
import { ensureCached, spawnNatClient, startPublicServer } from "./helpers/netns_server.ts";

const SKIP = unavailableReason();
if (SKIP !== null) console.log(`nat_classify_netns_test.ts: skipped: ${SKIP}`);

const PORT = 3478;
const ALT_PORT = 3479;

/** Both NATs' modes per round: every mode of the bed once (and endpoint-independent twice). */
const ROUNDS: readonly [NatMode, NatMode][] = [
  ["endpoint-independent", "full-cone"],
  ["address-dependent", "address-dependent-mapping"],
  ["address-and-port-dependent", "endpoint-independent"],
];

Deno.test({
  name: "P2PClients behind every NAT mode of the bed get the class it builds from the real server",
  ignore: SKIP !== null,
  async fn() {
    const end = performance.now() + 40_000;
    const left = (ms: number) => Math.max(1, Math.min(ms, end - performance.now() - 3_000));
    await ensureCached();
    await using topo = await createTopology({ deadlineMs: left(15_000) });
    await using server = await startPublicServer(topo, {
      config: {
        listen_address: `${TOPOLOGY.server}:${PORT}`,
        stun_alternate_port: ALT_PORT,
        stun_alternate_address: TOPOLOGY.serverAlt,
      },
      deadline: left,
    });
    const got: string[] = [];
    const want: string[] = [];
    for (const round of ROUNDS) {
      await topo.setNatMode("nat1", round[0]);
      await topo.setNatMode("nat2", round[1]);
      const t0 = performance.now();
      await Promise.all((["c1", "c2"] as const).map(async (name, i) => {
        const mode = round[i]!;
        const proc = spawnNatClient(topo, name, `${TOPOLOGY.server}:${PORT}`);
        try {
          const { line } = await proc.waitForLine((l) => l.startsWith('{"event":"nat"'), {
            deadlineMs: left(15_000),
            what: `${name}'s nat line`,
          });
          const e = JSON.parse(line) as {
            nat: { mapping: string; filtering: string };
            reason: string | null;
          };
          got.push(
            `${mode}: ${e.nat.mapping} mapping, ${e.nat.filtering} filtering (${e.reason ?? "measured"})`,
          );
          want.push(
            `${mode}: ${NAT_BEHAVIOUR[mode].mapping} mapping, ${
              NAT_BEHAVIOUR[mode].filtering
            } filtering (measured)`,
          );
        } finally {
          await proc.writeLine("quit").catch(() => {});
          await proc.stop().catch(() => proc.killNow());
        }
      }));
      console.log(`round ${round.join(" / ")}: ${Math.round(performance.now() - t0)} ms`);
    }
    console.log(got.join("\n"));
    assertEquals(got.sort(), want.sort());
    const stats = await server.stats();
    console.log(`server natChecks: ${JSON.stringify(stats.natChecks)}`);
    assertStrictEquals(stats.droppedTotal, 0, JSON.stringify(stats.drops));
    assertStrictEquals(stats.natChecks.completed, 6);
    assertStrictEquals(stats.natChecks.refused, 0);
  },
});
