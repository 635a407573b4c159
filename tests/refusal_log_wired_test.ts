// Refused handshakes are logged through the core's `refused` event: one line each while the window allows,
// then one summary line; and a real server logs them (the library as embedders run it).
import { assert, assertEquals, assertMatch } from "./deps/assert.ts";
import { RefusalLog } from "../src/datagram_log.ts";
import { captureLogs } from "./helpers/log_capture.ts";
import { P2PServer } from "../mod.ts";

const FROM = { hostname: "192.0.2.7", port: 4000 };

Deno.test("refused handshakes: the first 10 of a window one line each, the rest in one summary line", async () => {
  await using logs = await captureLogs("info");
  const log = new RefusalLog();
  for (let i = 0; i < 14; i++) {
    log.refused({
      type: "refused",
      from: FROM,
      nodeId: "6f9619ff-8b86-4011-b42d-00c04fc964ff",
      code: i < 12 ? "invalid_node_info" : "server_full",
      error: "no",
    }, i);
  }
  log.flush(5_000);
  assertEquals(
    logs.texts().filter((l) => l.includes("more refused")).length,
    0,
    "not before the window ends",
  );
  log.flush(10_000);
  const lines = logs.texts();
  assertEquals(
    lines.filter((l) =>
      l.includes("refused handshake from 192.0.2.7:4000 (node 6f9619ff-8b86-4011-b42d-00c04fc964ff): no (")
    ).length,
    10,
  );
  const summary = lines.filter((l) => l.includes("more refused handshakes"));
  assertEquals(summary.length, 1, lines.join("\n"));
  assertMatch(
    summary[0]!,
    /4 more refused handshakes in the last 10 s \(invalid_node_info 2, server_full 2\)/,
  );
});

Deno.test("a server logs a refused handshake with the remote's address, the reason and the code", async () => {
  await using logs = await captureLogs("info");
  await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
  const { port } = await server.listen();
  const sock = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const bad = JSON.stringify({
    id: crypto.randomUUID(),
    message_type: "HandshakeRequest",
    timestamp: 0,
    payload: { id: "not-a-uuid" },
    requires_ack: true,
  });
  await sock.send(new TextEncoder().encode(bad), { transport: "udp", hostname: "127.0.0.1", port });
  const deadline = Date.now() + 5_000;
  while (!logs.texts().some((l) => l.includes("refused handshake from")) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 20));
  }
  sock.close();
  const line = logs.texts().find((l) => l.includes("refused handshake from"));
  assert(line, logs.texts().join("\n"));
  assertMatch(
    line,
    /refused handshake from 127\.0\.0\.1:\d+ \(node not-a-uuid\): handshake failed: invalid node info: .* \(invalid_node_info\)/,
  );
});
