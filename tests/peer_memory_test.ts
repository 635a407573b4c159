/**
 * Memory per idle registered peer (docs/performance.md, "memory per idle peer"): the server core with 10,000
 * idle peers and a Unix-ms clock holds at most {@linkcode MAX_PER_PEER} bytes of heap and external memory
 * each after a full GC, and gives nearly all of it back once they leave. A subprocess, because measuring
 * needs `--expose-gc`. About 2 s.
 *
 * @module
 */
import { assert } from "./deps/assert.ts";

/** Bytes per idle peer at 10,000 peers (measured 912 on 2026-12-04; 1,104 before the cuts). */
const MAX_PER_PEER = 1_000;
/** Bytes per peer still held after all of them left (measured 51: fixed costs spread over 10,000 peers). */
const MAX_LEFT_PER_PEER = 200;

/** Runs the fixture: `peers` idle peers registered, all but the first `stay` of them then leave. */
async function fixture(peers: number, stay: number) {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--allow-read",
      "--v8-flags=--expose-gc",
      new URL("./fixtures/idle_peers_heap.ts", import.meta.url).pathname,
      `${peers}`,
      `${stay}`,
    ],
    stdout: "piped",
    stderr: "piped",
  }).output();
  const stderr = new TextDecoder().decode(out.stderr);
  assert(out.success, `fixture failed: ${stderr}`);
  return JSON.parse(new TextDecoder().decode(out.stdout)) as {
    perPeer: number;
    left: number;
    afterLeavingPerPeer: number;
  };
}

Deno.test("10,000 idle registered peers hold at most 1,000 bytes each, and leave nearly nothing behind", async () => {
  const m = await fixture(10_000, 0);
  assert(m.perPeer <= MAX_PER_PEER, `${m.perPeer.toFixed(0)} B per idle peer`);
  assert(m.left === 0, `${m.left} peers left`);
  assert(m.afterLeavingPerPeer <= MAX_LEFT_PER_PEER, `${m.afterLeavingPerPeer.toFixed(0)} B per peer left`);
});

// The first peers to register stay (their Disconnects lost): the timer entries of the 9,990 that left sort
// behind theirs. Those entries held the closed connections until their deadline (559 B per departed peer
// before TimerHeap.forget, an hour away with these settings); now they are dropped (59 B).
Deno.test("peers that stay registered do not keep the connections of the 9,990 that left", async () => {
  const m = await fixture(10_000, 10);
  assert(m.left === 10, `${m.left} peers left`);
  assert(
    m.afterLeavingPerPeer <= MAX_LEFT_PER_PEER,
    `${m.afterLeavingPerPeer.toFixed(0)} B per departed peer`,
  );
});
