/**
 * End-to-end tests of the program: the real `main.ts` in a subprocess, spoken to over real UDP sockets on
 * 127.0.0.1 and [::1] with hand-crafted envelopes (tests/helpers/raw_peer.ts), and its command line, exit
 * statuses and log output.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "./deps/assert.ts";
import { VERSION } from "../src/identity.ts";
import { type Addr, ENVELOPE_KEYS, EXTENSION_KEYS, RawPeer, type Received } from "./helpers/raw_peer.ts";
import { runScript, startServer, waitUntil } from "./helpers/server_process.ts";

const NODE_ID_EXISTS = "handshake failed: node ID already exists";

/** Whether this machine can bind [::1] (IPv6 loopback may be disabled in containers). */
const HAS_IPV6 = (() => {
  try {
    Deno.listenDatagram({ transport: "udp", hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

interface PeerEntry {
  id: string;
  addr: string;
  last_seen: number;
  capabilities: string[];
}

function assertEnvelope(r: Received): void {
  const keys = Object.keys(r.message);
  assertEquals(keys.slice(0, 8), [...ENVELOPE_KEYS], `not an eight-key envelope: ${r.text}`);
  for (const extra of keys.slice(8)) {
    assert((EXTENSION_KEYS as readonly string[]).includes(extra), `undocumented field ${extra}: ${r.text}`);
  }
  assertMatch(r.message.id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert(Number.isInteger(r.message.timestamp) && r.message.timestamp > 1_600_000_000, r.text);
  assert(r.message.timestamp < 10_000_000_000, `timestamp is not in seconds: ${r.text}`);
}

/** Sends a DiscoveryRequest and returns the listed peers (heartbeat Pings in between are skipped). */
async function discover(peer: RawPeer, server: { addr: Addr }) {
  await peer.sendMessage(server.addr, "DiscoveryRequest", null);
  const r = await peer.expect("DiscoveryResponse");
  assert(Array.isArray(r.message.payload), `payload is not an array: ${r.text}`);
  return r.message.payload as PeerEntry[];
}

function errorLines(stderr: string): string[] {
  return stderr.split("\n").filter((l) => l.startsWith("error:"));
}

// ------------------------------------------------------------------ protocol over UDP

Deno.test("handshake: Ack (ack_for = request id, same sequence number) comes before the HandshakeResponse", async () => {
  await using server = await startServer();
  await using peer = new RawPeer();
  assertMatch(server.stdout, new RegExp(`^p2p_server ${VERSION} listening on 127\\.0\\.0\\.1:\\d+\\n$`));

  const request = await peer.sendMessage(server.addr, "HandshakeRequest", peer.nodeInfo(), {
    requires_ack: true,
    sequence_number: 1,
  });
  const first = await peer.receive();
  assertEnvelope(first);
  assertStrictEquals(first.message.message_type, "Ack", `expected the Ack first, got ${first.text}`);
  assertStrictEquals(first.message.ack_for, request.id);
  assertStrictEquals(first.message.sequence_number, 1);
  assertStrictEquals(first.message.requires_ack, false);
  assertStrictEquals(first.from.port, server.addr.port);

  const second = await peer.receive();
  assertEnvelope(second);
  assertStrictEquals(second.message.message_type, "HandshakeResponse", second.text);
  assertStrictEquals(second.message.requires_ack, true);
  assert(typeof second.message.sequence_number === "number", second.text);
  const payload = second.message.payload as {
    node_info: { id: string; name: string; metadata: Record<string, string>; capabilities: string[] };
    success: boolean;
    error_message: string | null;
  };
  assertStrictEquals(payload.success, true);
  assertStrictEquals(payload.error_message, null);
  assertStrictEquals(payload.node_info.metadata.network_id, "p2p_default");
  assert(payload.node_info.capabilities.includes("server"), second.text);

  // Our Ack alone completes the handshake: the server reports the peer as joined.
  await peer.ack(server.addr, second.message);
  await server.waitForStderr(new RegExp(`peer joined: "?${peer.nodeId}`));
});

Deno.test("handshake: a repeated HandshakeRequest (same id and sequence number) is re-acked and registers one peer", async () => {
  await using server = await startServer();
  await using peer = new RawPeer();
  const { request } = await peer.handshake(server.addr);

  await peer.send(server.addr, request);
  const again = await peer.expect("Ack");
  assertStrictEquals(again.message.ack_for, request.id);
  assertStrictEquals(again.message.sequence_number, request.sequence_number);

  const peers = await discover(peer, server);
  assertEquals(peers.map((p) => p.id), [peer.nodeId]);
  assertEquals(peer.skipped.map((r) => r.message.message_type), [], "nothing but the Ack was expected");
});

Deno.test("handshake: a peer that never acks the HandshakeResponse is authenticated by its next message", async () => {
  // Deployed (upstream) clients send no Acks at all.
  await using server = await startServer();
  await using peer = new RawPeer();
  await peer.handshake(server.addr, { ackResponse: false });
  const peers = await discover(peer, server);
  assertEquals(peers.map((p) => p.id), [peer.nodeId]);
  await server.waitForStderr(new RegExp(`peer joined: "?${peer.nodeId}`));
});

Deno.test("handshake: the same node may register again from the same address after Disconnect", async () => {
  await using server = await startServer();
  await using peer = new RawPeer();
  await peer.handshake(server.addr);
  await peer.sendMessage(server.addr, "Disconnect", { reason: "brb" }, { requires_ack: true });
  await peer.expect("Ack");
  await server.waitForStderr(new RegExp(`peer left: "?${peer.nodeId}.*disconnect`));

  const { response } = await peer.handshake(server.addr);
  assertStrictEquals((response.message.payload as { success: boolean }).success, true);
  assertEquals((await discover(peer, server)).map((p) => p.id), [peer.nodeId]);
});

Deno.test("a silent peer is dropped after connection_timeout and leaves the discovery list", async () => {
  await using server = await startServer({ config: { heartbeat_interval: 0.5, connection_timeout: 2 } });
  await using silent = new RawPeer();
  await using active = new RawPeer();
  await silent.handshake(server.addr);
  await active.handshake(server.addr);
  const before = (await discover(active, server)).map((p) => p.id);
  assert(before.includes(silent.nodeId), `the silent peer was never listed: ${before}`);

  // The server heartbeats the silent peer with plain Pings (no Ack asked) before it gives up on it.
  const heartbeat = await silent.expect("Ping");
  assertStrictEquals(heartbeat.message.requires_ack, false);

  // The active peer keeps talking (each DiscoveryRequest proves it alive) until the silent one is gone.
  await waitUntil(
    async () => !(await discover(active, server)).some((p) => p.id === silent.nodeId),
    "the silent peer to leave the discovery list",
    15_000,
    100,
  );
  await server.waitForStderr(new RegExp(`peer left: "?${silent.nodeId}.*timeout`));
  const after = await discover(active, server);
  assertEquals(after.map((p) => p.id), [active.nodeId]);
});

Deno.test("two peers discover each other with their declared listen addresses", async () => {
  await using server = await startServer();
  await using a = new RawPeer();
  await using b = new RawPeer();
  await a.handshake(server.addr, { info: { capabilities: ["alpha"] } });
  await b.handshake(server.addr, { info: { capabilities: ["beta"] } });

  for (const [self, other] of [[a, b], [b, a]] as const) {
    const peers = await discover(self, server);
    assertEquals(peers.length, 2);
    const entry = peers.find((p) => p.id === other.nodeId);
    assert(entry, `${other.nodeId} is not listed: ${JSON.stringify(peers)}`);
    assertStrictEquals(entry.addr, other.addrText);
    assert(Number.isInteger(entry.last_seen) && entry.last_seen > 1_600_000_000, JSON.stringify(entry));
    assertEquals(entry.capabilities, [other === a ? "alpha" : "beta"]);
  }
});

Deno.test("routed Data reaches the other peer as {from, data} and asks for an Ack", async () => {
  await using server = await startServer();
  await using a = new RawPeer();
  await using b = new RawPeer();
  await a.handshake(server.addr);
  await b.handshake(server.addr);

  const data = { text: "hello b", n: [1, 2, 3] };
  const sent = await a.sendMessage(server.addr, "Data", { to: b.nodeId, data }, { requires_ack: true });
  const ack = await a.expect("Ack");
  assertStrictEquals(ack.message.ack_for, sent.id);

  const routed = await b.expect("Data");
  assertEnvelope(routed);
  assertEquals(routed.message.payload, { from: a.nodeId, data });
  assertStrictEquals(routed.message.requires_ack, true);
  assertStrictEquals(routed.from.port, server.addr.port);
  await b.ack(server.addr, routed.message);

  // Without "to", Data is echoed back to the sender.
  await a.sendMessage(server.addr, "Data", "ping-data");
  const echo = await a.expect("Data");
  const p = echo.message.payload as { echo: unknown; timestamp: number };
  assertStrictEquals(p.echo, "ping-data");
  assert(Number.isInteger(p.timestamp) && p.timestamp > 1_600_000_000, echo.text);
});

Deno.test("-m 1 refuses a second peer with Error code server_full", async () => {
  await using server = await startServer({ args: ["-m", "1"] });
  await using a = new RawPeer();
  await using b = new RawPeer();
  await a.handshake(server.addr);

  await b.sendMessage(server.addr, "HandshakeRequest", b.nodeInfo(), { requires_ack: true });
  const refused = await b.expect("Error");
  assertEnvelope(refused);
  const payload = refused.message.payload as { error: string; code: string };
  assertStrictEquals(payload.code, "server_full");
  assertMatch(payload.error, /^handshake failed: /);
  assertEquals((await discover(a, server)).map((p) => p.id), [a.nodeId]);
});

Deno.test("a node id already held by another address is refused with node_id_conflict", async () => {
  await using server = await startServer();
  await using holder = new RawPeer();
  await using intruder = new RawPeer();
  await holder.handshake(server.addr);

  await intruder.sendMessage(server.addr, "HandshakeRequest", intruder.nodeInfo({ id: holder.nodeId }), {
    requires_ack: true,
  });
  const refused = await intruder.expect("Error");
  assertEquals(refused.message.payload, { error: NODE_ID_EXISTS, code: "node_id_conflict" });
  // The holder keeps its registration.
  const peers = await discover(holder, server);
  assertEquals(peers.map((p) => p.id), [holder.nodeId]);
  assertStrictEquals(peers[0]!.addr, holder.addrText);
});

Deno.test("malformed datagrams get no reply and the server keeps serving", async () => {
  await using server = await startServer();
  await using peer = new RawPeer();
  const good = peer.envelope("Ping", null, { requires_ack: true });
  const garbage: (string | Uint8Array)[] = [
    "this is not JSON",
    "",
    "[1, 2, 3]",
    '"a string"',
    new Uint8Array([0xff, 0xfe, 0xfd, 0x7b, 0x7d]), // not UTF-8
    JSON.stringify({ ...good, id: crypto.randomUUID(), sequence_number: "7" }),
    JSON.stringify({ ...good, id: crypto.randomUUID(), timestamp: 1.5 }),
    JSON.stringify({ ...good, id: crypto.randomUUID(), requires_ack: "yes" }),
    JSON.stringify({ ...good, id: "not-a-uuid" }),
    JSON.stringify({ ...good, id: crypto.randomUUID(), message_type: "ping" }),
    JSON.stringify({ ...good, id: crypto.randomUUID(), message_type: "Teleport" }),
    JSON.stringify({ ...good, id: crypto.randomUUID(), ack_for: true }),
  ];
  for (const g of garbage) await peer.send(server.addr, g);

  // Datagrams from one socket are handled in order: had any garbage been answered, that answer would
  // arrive before the replies to this Ping.
  const ping = await peer.sendMessage(server.addr, "Ping", null);
  const first = await peer.receive();
  assertStrictEquals(first.message.message_type, "Pong", `unexpected reply: ${first.text}`);
  assertStrictEquals(first.message.payload, null);
  assertEnvelope(first);
  assert(ping.id !== first.message.id);
  await server.waitForStderr(/dropped datagram .*invalid_utf8/);
  await server.waitForStderr(/dropped datagram .*unknown_type/);
});

Deno.test({
  name: "the server listens and answers on IPv6 loopback [::1]",
  ignore: !HAS_IPV6,
  async fn() {
    await using server = await startServer({ config: { listen_address: "[::1]:0" } });
    assertStrictEquals(server.addr.hostname, "::1");
    assertMatch(server.stdout, /listening on \[::1\]:\d+\n$/);
    await using peer = new RawPeer("::1");
    const { response } = await peer.handshake(server.addr);
    const payload = response.message.payload as { success: boolean };
    assertStrictEquals(payload.success, true);
    const peers = await discover(peer, server);
    assertEquals(peers.map((p) => p.addr), [peer.addrText]);
    assertMatch(peer.addrText, /^\[::1\]:\d+$/);
  },
});
if (!HAS_IPV6) console.warn("e2e_test: skipping the IPv6 test: [::1] cannot be bound on this machine");

Deno.test("SIGTERM sends Disconnect to every authenticated peer and exits 0", async () => {
  await using server = await startServer();
  await using a = new RawPeer();
  await using b = new RawPeer();
  await a.handshake(server.addr);
  await b.handshake(server.addr);

  const status = await server.stop("SIGTERM");
  assertStrictEquals(status.code, 0, server.stderr);
  for (const peer of [a, b]) {
    const bye = await peer.expect("Disconnect");
    assertEnvelope(bye);
    const payload = bye.message.payload as { reason: unknown };
    assert(typeof payload.reason === "string" && payload.reason.length > 0, bye.text);
  }
  assertMatch(server.stderr, /SIGTERM/);
});

// ------------------------------------------------------------------ command line and configuration

Deno.test("an unknown flag exits 2 with one error line and a pointer to --help, not the usage", async () => {
  const r = await runScript({ args: ["--bogus"] });
  assertStrictEquals(r.code, 2, r.stderr);
  assertStrictEquals(r.stdout, "");
  assertStrictEquals(r.stderr, `error: Unknown option "--bogus"\nrun 'p2p_server --help' for usage\n`);
});

Deno.test("two log level flags (--DEBUG --INFO) exit 2 with one error line naming both", async () => {
  const r = await runScript({ args: ["--DEBUG", "--INFO"] });
  assertStrictEquals(r.code, 2, r.stderr);
  const errors = errorLines(r.stderr);
  assertStrictEquals(errors.length, 1, r.stderr);
  assertMatch(errors[0]!, /--DEBUG/);
  assertMatch(errors[0]!, /--INFO/);
});

Deno.test('-m abc exits 2 naming --max-connections and "abc"', async () => {
  const r = await runScript({ args: ["-m", "abc"] });
  assertStrictEquals(r.code, 2, r.stderr);
  const errors = errorLines(r.stderr);
  assertStrictEquals(errors.length, 1, r.stderr);
  assertMatch(errors[0]!, /--max-connections/);
  assertMatch(errors[0]!, /"abc"/);
});

Deno.test("-a with a value that is not an address exits 2 naming it", async () => {
  const r = await runScript({ args: ["-a", "nonsense"] });
  assertStrictEquals(r.code, 2, r.stderr);
  const errors = errorLines(r.stderr);
  assertStrictEquals(errors.length, 1, r.stderr);
  assertMatch(errors[0]!, /--address/);
  assertMatch(errors[0]!, /"nonsense"/);
});

Deno.test("--help exits 0 and prints the usage with the defaults", async () => {
  for (const flag of ["--help", "-h"]) {
    const r = await runScript({ args: [flag] });
    assertStrictEquals(r.code, 0, r.stderr);
    for (
      const text of [
        "Usage: p2p_server",
        "--address",
        "--max-connections",
        "--config",
        "--TRACE",
        "--ERROR",
        "127.0.0.1:8080",
        "[default: 100]",
        "heartbeat_interval 30 s",
        "connection_timeout 60 s",
        "[8081, 8090]",
      ]
    ) {
      assert(r.stdout.includes(text), `${flag}: usage lacks ${JSON.stringify(text)}:\n${r.stdout}`);
    }
    assertStrictEquals(errorLines(r.stderr).length, 0, r.stderr);
  }
});

Deno.test("-V and --version print the version and exit 0", async () => {
  for (const flag of ["-V", "--version"]) {
    const r = await runScript({ args: [flag] });
    assertStrictEquals(r.code, 0, r.stderr);
    assertStrictEquals(r.stdout, `p2p_server ${VERSION}\n`);
  }
});

Deno.test("a config file with a bad value exits 2 naming the file, the key and the value", async () => {
  const r = await runScript({ config: { max_connections: -1 } });
  assertStrictEquals(r.code, 2, r.stderr);
  assertStrictEquals(r.stdout, "");
  const errors = errorLines(r.stderr);
  assertStrictEquals(errors.length, 1, r.stderr);
  assert(errors[0]!.includes(r.configPath!), `the file is not named: ${errors[0]}`);
  assertMatch(errors[0]!, /max_connections/);
  assertMatch(errors[0]!, /-1/);
});

Deno.test("a config file that is not JSON exits 2 naming the file", async () => {
  const r = await runScript({ config: "{ this is not json" });
  assertStrictEquals(r.code, 2, r.stderr);
  const errors = errorLines(r.stderr);
  assertStrictEquals(errors.length, 1, r.stderr);
  assert(errors[0]!.includes(r.configPath!), errors[0]);
});

Deno.test("a missing config file exits 2 naming the file", async () => {
  const missing = `${await Deno.makeTempDir({ prefix: "p2p_server_test_" })}/no_such_config.json`;
  try {
    const r = await runScript({ config: null, args: ["-c", missing, "-a", "127.0.0.1:0"] });
    assertStrictEquals(r.code, 2, r.stderr);
    const errors = errorLines(r.stderr);
    assertStrictEquals(errors.length, 1, r.stderr);
    assert(errors[0]!.includes(missing), errors[0]);
  } finally {
    await Deno.remove(missing.slice(0, missing.lastIndexOf("/")), { recursive: true });
  }
});

Deno.test("an unknown config key is warned about by name and the server still runs", async () => {
  await using server = await startServer({ config: { favourite_colour: "teal" } });
  await server.waitForStderr(/WRN.*favourite_colour/);
  await using peer = new RawPeer();
  await peer.sendMessage(server.addr, "Ping", null);
  await peer.expect("Pong");
});

Deno.test("binding a port already in use exits 1 with failed to bind <addr>", async () => {
  await using holder = new RawPeer();
  const port = holder.addr.port;
  const r = await runScript({ args: ["-a", `127.0.0.1:${port}`] });
  assertStrictEquals(r.code, 1, r.stderr);
  assertStrictEquals(r.stdout, "");
  const errors = errorLines(r.stderr);
  assertStrictEquals(errors.length, 1, r.stderr);
  assert(errors[0]!.startsWith(`error: failed to bind 127.0.0.1:${port}: `), errors[0]);
});

/** Registers a raw peer and has Data echoed, which the server logs at debug level. */
async function exchangeData(server: { addr: Addr }): Promise<void> {
  await using peer = new RawPeer();
  await peer.handshake(server.addr);
  await peer.sendMessage(server.addr, "Data", { n: 1 });
  const echo = await peer.expect("Data");
  assertEquals((echo.message.payload as { echo: unknown }).echo, { n: 1 });
}

Deno.test("LOG_LEVEL=debug in the environment enables debug lines", async () => {
  await using server = await startServer({ env: { LOG_LEVEL: "debug" } });
  await server.waitForStderr(/log level "?debug"? \(from "?LOG_LEVEL"?\)/);
  await exchangeData(server);
  await server.waitForStderr(/\[DBG\].*data from/);
});

Deno.test("a level flag beats LOG_LEVEL in the environment", async () => {
  const server = await startServer({ env: { LOG_LEVEL: "debug" }, args: ["--INFO"] });
  try {
    await server.waitForStderr(/log level "?info"? \(from "?flag"?\)/);
    await exchangeData(server);
  } finally {
    const status = await server.stop();
    assertStrictEquals(status.code, 0, server.stderr);
  }
  assert(!server.stderr.includes("[DBG]"), `debug lines despite --INFO:\n${server.stderr}`);
});

Deno.test("an invalid LOG_LEVEL exits 2 naming the value", async () => {
  const r = await runScript({ env: { LOG_LEVEL: "chatty" } });
  assertStrictEquals(r.code, 2, r.stderr);
  const errors = errorLines(r.stderr);
  assertStrictEquals(errors.length, 1, r.stderr);
  assertMatch(errors[0]!, /LOG_LEVEL/);
  assertMatch(errors[0]!, /"chatty"/);
});
