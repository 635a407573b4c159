import { assert, assertEquals } from "./deps/assert.ts";

Deno.test({
  name: "the load bench runs in quick mode and produces every row with a rate",
  sanitizeResources: false,
  sanitizeOps: false,
}, async () => {
  const out = await Deno.makeTempFile({ suffix: ".json" });
  try {
    const run = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", new URL("../bench/run.ts", import.meta.url).pathname, "--quick", "--out", out],
      stdout: "piped",
      stderr: "piped",
      env: { BENCH_QUICK: "1" },
      signal: AbortSignal.timeout(240_000),
    }).output();
    assertEquals(run.code, 0, new TextDecoder().decode(run.stderr));
    const results = JSON.parse(await Deno.readTextFile(out));
    const names = new Set(results.rows.map((r: { row: string; server: string }) => `${r.server}: ${r.row}`));
    for (
      const row of [
        "floor: Ping -> Pong, 1 in flight",
        "floor: Ping -> Pong, 64 in flight",
        "p2p_server: Ping -> Pong, 1 in flight",
        "p2p_server: Ping -> Pong, 64 in flight",
        "p2p_server: reliable Data round trip (requires_ack, echo), 64 in flight",
        "p2p_server: routed Data A -> B (B acks), 64 in flight",
        "p2p_server: Ping -> Pong paced at half of p2p_server's peak",
        "p2p_server: discovery, 64 registered peers, 8 in flight",
        "p2p_server: handshakes (distinct peers, 64 concurrent)",
        "p2p_server: keyed handshakes (distinct keyed peers, 64 concurrent)",
        "floor: STUN Binding request (20 B, no attributes), 64 in flight",
        "p2p_server: STUN Binding request (20 B, no attributes), 64 in flight",
        "p2p_server: STUN Binding request (52 B, SOFTWARE + FINGERPRINT), 64 in flight",
      ]
    ) assert(names.has(row), `missing row ${row}`);
    for (const r of results.rows) assert(r.rate > 0, `no operations in ${r.server}: ${r.row}`);
    const mem = results.memory.find((m: { server: string }) => m.server === "p2p_server");
    assert(mem && mem.peers > 0 && mem.heapAt > 0, "no memory row for p2p_server");
  } finally {
    await Deno.remove(out).catch(() => {});
  }
});
