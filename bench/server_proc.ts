/**
 * The server under test for `deno task bench`: a `P2PServer` in its own process, configured from a JSON
 * argument, logging as the program does at `--ERROR` (the level the upstream server runs at in the bench; the
 * level is the second argument). Prints its port, then answers commands on stdin, one per line:
 * `mem` -> one JSON line with RSS, heap used, external memory (typed arrays' contents) and peer count (after a
 * full GC when `--expose-gc` is set);
 * `stats` -> the stats snapshot as one JSON line.
 *
 * @module
 */
import { P2PServer } from "../mod.ts";
import { type Level, setupLogging } from "../src/logging.ts";

await setupLogging((Deno.args[1] ?? "error") as Level);

const server = new P2PServer({
  listenAddress: "127.0.0.1:0",
  enableDiscovery: false,
  ...JSON.parse(Deno.args[0] ?? "{}"),
});
const { port } = await server.listen();
console.log(port);
const gc = (globalThis as { gc?: () => void }).gc;
const decoder = new TextDecoder();
let pending = "";
for await (const chunk of Deno.stdin.readable) {
  pending += decoder.decode(chunk);
  let nl;
  while ((nl = pending.indexOf("\n")) >= 0) {
    const command = pending.slice(0, nl).trim();
    pending = pending.slice(nl + 1);
    if (command === "mem") {
      gc?.();
      gc?.();
      const m = Deno.memoryUsage();
      const stats = server.getStats();
      console.log(JSON.stringify({
        rss: m.rss,
        heapUsed: m.heapUsed,
        external: m.external,
        peers: stats.peers.handshaking + stats.peers.authenticated,
      }));
    } else if (command === "stats") {
      console.log(JSON.stringify(server.getStats()));
    }
  }
}
await server.close();
