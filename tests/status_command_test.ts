/**
 * `p2p_server status`: the wg-show-like text from known data (exact), and the real command against a real
 * running program with a peer (its server block and its peer block), with and without the token, and
 * against nothing.
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "./deps/assert.ts";
import {
  formatBytes,
  formatDuration,
  formatStatus,
  formatStatusTable,
  type StatusData,
} from "../src/status_command.ts";
import { Stats } from "../src/core/stats.ts";
import { P2PClient } from "../src/client.ts";
import { runScript, startServer, waitUntil, writeTempConfig } from "./helpers/server_process.ts";
import type { OpsPeer } from "../src/ops_server.ts";

Deno.test("transfer amounts and ages read as wg show writes them", () => {
  assertEquals([0, 1023, 1024, 1536, 5 * 1024 ** 3].map(formatBytes), [
    "0 B",
    "1023 B",
    "1.00 KiB",
    "1.50 KiB",
    "5.00 GiB",
  ]);
  assertEquals([0, 1, 59.9, 61, 3600, 3661, 90_061].map(formatDuration), [
    "0 seconds",
    "1 second",
    "59 seconds",
    "1 minute, 1 second",
    "1 hour",
    "1 hour, 1 minute",
    "1 day, 1 hour",
  ]);
});

function peer(over: Partial<OpsPeer>): OpsPeer {
  return {
    id: "11111111-1111-4111-8111-111111111111",
    name: "alice",
    version: "0.1.0",
    addr: "203.0.113.5:40000",
    listen_addr: "192.168.1.5:9000",
    behind_nat: true,
    state: "authenticated",
    network: "p2p_default",
    keyed: true,
    extensions: true,
    joined_at: 0,
    handshake_age_seconds: 125,
    last_seen: 0,
    last_seen_age_seconds: 1,
    rtt_ms: 1.234,
    datagrams_in: 30,
    datagrams_out: 28,
    bytes_in: 12_595,
    bytes_out: 4608,
    capabilities: [],
    ...over,
  };
}

function sample(): StatusData {
  const stats = new Stats(0);
  stats.bytesReceived = 1_268_000;
  stats.bytesSent = 819_200;
  stats.datagramsReceived = 1234;
  stats.datagramsSent = 1200;
  stats.handshakesOk = 10;
  stats.handshakeFailed("server_full");
  stats.handshakeFailed("server_full");
  return {
    server: {
      version: "0.1.0",
      node_id: "22222222-2222-4222-8222-222222222222",
      name: "p2p_server",
      listen_addr: "0.0.0.0:8080",
      public_key: "KEY",
      started_at: 0,
      instance: null,
    },
    stats: stats.snapshot(7_384_000, { handshaking: 0, authenticated: 2 }, { handshaking: 0, connected: 0 }),
    peers: [
      peer({
        id: "33333333-3333-4333-8333-333333333333",
        name: "bob",
        handshake_age_seconds: 3,
        keyed: false,
      }),
      peer({}),
    ].map((p, i) =>
      i === 0
        ? {
          ...p,
          behind_nat: false,
          addr: "198.51.100.7:5000",
          listen_addr: "198.51.100.7:5000",
          rtt_ms: null,
        }
        : p
    ),
    serverTime: 0,
    url: "http://127.0.0.1:9100",
  };
}

Deno.test("the status text: the server block, then one block per peer, most recent handshake first", () => {
  assertStrictEquals(
    formatStatus(sample()),
    `server: p2p_server 0.1.0
  node id: 22222222-2222-4222-8222-222222222222
  public key: KEY
  listening on: 0.0.0.0:8080 (udp)
  operations: http://127.0.0.1:9100/
  uptime: 2 hours, 3 minutes
  peers: 2 authenticated, 0 handshaking
  transfer: 1.21 MiB received, 800.00 KiB sent (1234 / 1200 datagrams)
  handshakes: 10 ok, 2 refused (server_full 2)
  dropped: 0

peer: 33333333-3333-4333-8333-333333333333
  name: bob 0.1.0 (unkeyed, extensions)
  endpoint: 198.51.100.7:5000 (as declared)
  network: p2p_default
  latest handshake: 3 seconds ago
  last seen: 1 second ago
  rtt: no sample yet
  transfer: 12.30 KiB received, 4.50 KiB sent (30 / 28 datagrams)

peer: 11111111-1111-4111-8111-111111111111
  name: alice 0.1.0 (keyed, extensions)
  endpoint: 203.0.113.5:40000 (declared 192.168.1.5:9000: behind NAT)
  network: p2p_default
  latest handshake: 2 minutes, 5 seconds ago
  last seen: 1 second ago
  rtt: 1.23 ms
  transfer: 12.30 KiB received, 4.50 KiB sent (30 / 28 datagrams)`,
  );
});

Deno.test("the status table: one line per peer with every column", () => {
  const lines = formatStatusTable(sample()).split("\n");
  assertStrictEquals(lines.length, 4);
  assertMatch(lines[1]!, /^NAME +NODE ID +ENDPOINT +NAT +KEYED +HANDSHAKE +LAST SEEN +RTT +IN +OUT$/);
  assertMatch(
    lines[2]!,
    /^bob +3{8}-.* +198\.51\.100\.7:5000 +no +no +3s ago +1s ago +- +12\.30 KiB +4\.50 KiB$/,
  );
  assertMatch(lines[3]!, /^alice .* yes +yes +125s ago +1s ago +1\.23 ms +12\.30 KiB +4\.50 KiB$/);
});

Deno.test("p2p_server status against a running program lists the server and its peer", async () => {
  const token = "status-token";
  await using server = await startServer({
    args: ["--metrics-address", "127.0.0.1:0"],
    config: { metrics_token: token },
  });
  const m = await waitUntil(
    () => /metrics and status page on http:\/\/(\S+)\//.exec(server.stdout) ?? undefined,
    "the metrics line",
  );
  const ops = m[1]!;
  await using client = new P2PClient({ server: server.addrText, bind: "127.0.0.1:0", name: "status-peer" });
  await client.connect();
  await client.ping();
  await client.send({ hello: "status" });

  const run = await runScript({
    config: null,
    args: ["status", "--address", ops],
    env: { P2P_METRICS_TOKEN: token },
  });
  assertStrictEquals(run.code, 0, run.stderr);
  const text = run.stdout;
  assertMatch(text, /^server: p2p_server \d+\.\d+\.\d+\n {2}node id: [0-9a-f-]{36}\n/);
  assertMatch(text, new RegExp(`  listening on: ${server.addrText.replaceAll(".", "\\.")} \\(udp\\)\\n`));
  assertMatch(text, / {2}peers: 1 authenticated, 0 handshaking\n/);
  assertMatch(text, new RegExp(`\\npeer: ${client.node.id}\\n  name: status-peer \\S+ \\(`));
  assertMatch(
    text,
    / {2}latest handshake: \d+ seconds? ago\n {2}last seen: \d+ seconds? ago\n {2}rtt: \d+\.\d\d ms\n/,
  );
  assertMatch(text, / {2}transfer: [\d.]+ (B|KiB) received, [\d.]+ (B|KiB) sent \(\d+ \/ \d+ datagrams\)/);

  // The token from the config file; without any token, one line saying how to give it.
  const config = await writeTempConfig({ metrics_address: ops, metrics_token: token });
  try {
    const viaConfig = await runScript({ config: null, args: ["status", "-c", config, "--json"] });
    assertStrictEquals(viaConfig.code, 0, viaConfig.stderr);
    const json = JSON.parse(viaConfig.stdout);
    assertStrictEquals(json.peers[0].name, "status-peer");
    assertStrictEquals(json.server.listen_addr, server.addrText);
  } finally {
    await Deno.remove(config);
  }
  const refused = await runScript({ config: null, args: ["status", "--address", ops] });
  assertStrictEquals(refused.code, 1);
  assertMatch(refused.stderr, /^error: The operations endpoint "http:\/\/[^"]+" wants a token: pass --token/);
});

Deno.test("p2p_server status against nothing exits 1 with one line; a bad command line exits 2", async () => {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close(); // now nothing listens there
  const dead = await runScript({ config: null, args: ["status", "--address", `127.0.0.1:${port}`] });
  assertStrictEquals(dead.code, 1);
  assertEquals(dead.stderr.trim().split("\n"), [
    `error: Cannot reach the operations endpoint "http://127.0.0.1:${port}": Connection refused ` +
    "(is the server running with metrics_address set to it?)",
  ]);
  const bad = await runScript({ config: null, args: ["status"] });
  assertStrictEquals(bad.code, 2);
  assert(bad.stderr.includes("--address ip:port, or -c a config file with metrics_address"), bad.stderr);
});
