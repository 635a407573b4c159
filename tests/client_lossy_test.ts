/**
 * The example client at 30 % loss each way, as a user would run it: 10 runs of `examples/simple_client.ts`
 * through a seeded lossy UDP proxy in front of the real server program, every one of them completing every
 * step, printing each retry as it happens. Set `LOSSY_CLIENT_SEED` to run another seed.
 *
 * @module
 */
import { assert, assertStrictEquals } from "./deps/assert.ts";
import { LossyProxy } from "./helpers/lossy_proxy.ts";
import { runScript, startServer } from "./helpers/server_process.ts";

const SEED = Number(Deno.env.get("LOSSY_CLIENT_SEED") ?? 20261203);
const RUNS = 10;

Deno.test(`simple_client completes ${RUNS} of ${RUNS} runs at 30 % loss each way (seed ${SEED}), printing each retry`, async () => {
  await using server = await startServer();
  await using proxy = new LossyProxy({
    upstream: server.addr,
    seed: SEED,
    toServer: { drop: 0.3 },
    toClient: { drop: 0.3 },
  });
  const runs = await Promise.all(
    Array.from({ length: RUNS }, (_, i) =>
      runScript({
        script: "examples/simple_client.ts",
        config: null,
        args: ["--server", proxy.addrText, "--name", `lossy-${i}`, "--timeout", "40"],
        deadlineMs: 60_000,
      })),
  );
  let retries = 0;
  for (const [i, r] of runs.entries()) {
    const out = `run ${i}: exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
    assertStrictEquals(r.code, 0, out);
    for (const step of ["handshake ok", "data sent and acknowledged", "echo received", "ping/pong ok"]) {
      assert(r.stdout.includes(step), `${step} missing in ${out}`);
    }
    assert(/discovery ok: \d+ peer\(s\)/.test(r.stdout) && r.stdout.trimEnd().endsWith("disconnected"), out);
    retries += r.stdout.split("\n").filter((l) => /retrying \w+ \(try \d+\)$/.test(l)).length;
  }
  const c = proxy.counters;
  assert(c.toServer.dropped > 0 && c.toClient.dropped > 0, JSON.stringify(c));
  assert(retries > 0, "no retry was printed although 30 % of the datagrams were lost");
  console.log(
    `seed ${SEED}: ${RUNS}/${RUNS} runs completed, ${retries} retries printed; proxy ${JSON.stringify(c)}`,
  );
});
