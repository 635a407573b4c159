/**
 * tests/helpers/netns_server.ts on the NAT test bed: `startPublicServer` starts main.ts in `pub` and reads
 * its stats, and leaves no process and no config file behind, whether the start succeeds, the program exits
 * without listening, or the wait for its line runs out. Needs root, `ip` and `nft`; skipped (with a note)
 * otherwise.
 *
 * @module
 */
import { assert, assertEquals, assertRejects, assertStrictEquals } from "./deps/assert.ts";
import { createTopology, type NatTopology, type NsProcess, unavailableReason } from "./helpers/netns.ts";
import { startPublicServer } from "./helpers/netns_server.ts";

const SKIP = unavailableReason();
if (SKIP !== null) console.log(`netns_server_test.ts: skipped: ${SKIP}`);

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** The config file's path and whether it exists, and the processes the topology still runs. */
async function leftovers(topo: NatTopology, name: string): Promise<{ config: boolean; processes: number }> {
  return { config: await exists(`${topo.tempDir}/${name}`), processes: topo.processes.length };
}

Deno.test({
  name: "startPublicServer leaves no process or config file behind: started, exited early, or timed out",
  ignore: SKIP !== null,
  async fn() {
    await using topo = await createTopology({ deadlineMs: 15_000 });

    const server = await startPublicServer(topo, { configName: "ok.json" });
    assert(server.addr.startsWith("203.0.113.1:") && server.port > 0, server.addr);
    assert(server.ops !== null && server.ops.startsWith("127.0.0.1:"), String(server.ops));
    assertStrictEquals((await server.stats()).droppedTotal, 0);
    assertEquals(await leftovers(topo, "ok.json"), { config: true, processes: 1 });
    await server.stop();
    assert(server.proc.exited !== null, "stopped");
    assertEquals(await leftovers(topo, "ok.json"), { config: false, processes: 0 });

    // 203.0.113.99 is no address of pub: the program cannot bind and exits without listening.
    await assertRejects(
      () =>
        startPublicServer(topo, { configName: "unbound.json", config: { listen_address: "203.0.113.99:0" } }),
      Error,
      "stdout ended without a line",
    );
    assertEquals(await leftovers(topo, "unbound.json"), { config: false, processes: 0 });

    // A 1 ms wait for the listening line runs out while the program still starts: it is stopped.
    let started: NsProcess | undefined;
    await assertRejects(
      () =>
        startPublicServer(topo, {
          configName: "late.json",
          deadline: () => {
            started = topo.processes[0];
            return 1;
          },
        }),
      Error,
      "within 1 ms",
    );
    assert(started !== undefined && started.exited !== null, "the late server was stopped");
    assertEquals(await leftovers(topo, "late.json"), { config: false, processes: 0 });

    const quiet = await startPublicServer(topo, { configName: "quiet.json", ops: false });
    try {
      assertStrictEquals(quiet.ops, null);
      await assertRejects(() => quiet.stats(), Error, "started without ops");
    } finally {
      await quiet.stop();
    }
    assertEquals(await leftovers(topo, "quiet.json"), { config: false, processes: 0 });
  },
});
