/**
 * The operations HTTP server of a real in-process P2PServer (`metricsAddress` on 127.0.0.1 port 0) with real
 * UDP traffic from P2PClient; config and flag validation of the new keys; and the program's JSON log lines.
 */
import { assert, assertEquals, assertMatch, assertRejects, assertStrictEquals } from "./deps/assert.ts";
import { formatSocketAddr } from "../src/wire/address.ts";
import { parseCli, UsageError } from "../src/cli.ts";
import { ConfigError, parseConfigFile, resolveConfig } from "../src/config.ts";
import { P2PClient } from "../src/client.ts";
import { BindError } from "../src/errors.ts";
import { P2PServer, type ServerOptions } from "../src/server.ts";
import { type Family, parseExposition, sampleValue } from "./helpers/prom_parser.ts";
import { startServer, waitUntil } from "./helpers/server_process.ts";

function caught<E extends Error>(fn: () => unknown, type: new (...args: never[]) => E): E {
  try {
    fn();
  } catch (error) {
    assert(error instanceof type, `expected ${type.name}, got ${error}`);
    return error;
  }
  throw new Error("did not throw");
}

function opsServer(options: ServerOptions = {}): P2PServer {
  return new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    metricsAddress: "127.0.0.1:0",
    ...options,
  });
}

function base(server: P2PServer): string {
  return `http://${formatSocketAddr(server.metricsAddr!)}`;
}

async function get(
  server: P2PServer,
  path: string,
  token?: string,
): Promise<{ status: number; type: string; text: string }> {
  const headers: Record<string, string> = token === undefined ? {} : { authorization: `Bearer ${token}` };
  const res = await fetch(base(server) + path, { headers });
  return { status: res.status, type: res.headers.get("content-type") ?? "", text: await res.text() };
}

async function scrape(server: P2PServer): Promise<Map<string, Family>> {
  const res = await get(server, "/metrics");
  assertStrictEquals(res.status, 200);
  assertMatch(res.type, /^text\/plain; version=0\.0\.4/);
  return parseExposition(res.text);
}

function client(server: P2PServer, name: string): P2PClient {
  return new P2PClient({ server: formatSocketAddr(server.addr), name, bind: "127.0.0.1:0" });
}

Deno.test("/metrics counters move as the UDP traffic says", async () => {
  await using server = opsServer();
  await server.listen();
  assert(server.metricsAddr && server.metricsAddr.port > 0);
  const before = await scrape(server);
  assertStrictEquals(sampleValue(before, "p2p_datagrams_received_total"), 0);
  assertStrictEquals(sampleValue(before, "p2p_peers", { state: "authenticated" }), 0);

  await using peer = client(server, "metrics-peer");
  await peer.connect();
  for (let i = 0; i < 3; i++) await peer.ping();
  await peer.send({ hello: "metrics" });
  // Wait until every datagram the client sent has been counted by the server (acks may still be in flight).
  await waitUntil(
    () => server.getStats().datagramsReceived === peer.getStats().datagramsSent,
    "the server to count every datagram the client sent",
  );
  const after = await scrape(server);
  const c = peer.getStats();
  const s = server.getStats();
  const v = (name: string, labels: Record<string, string> = {}) => sampleValue(after, name, labels);
  assertStrictEquals(v("p2p_datagrams_received_total"), c.datagramsSent);
  assertStrictEquals(v("p2p_bytes_received_total"), c.bytesSent);
  assertStrictEquals(v("p2p_datagrams_sent_total"), s.datagramsSent);
  assert(v("p2p_datagrams_sent_total")! >= c.datagramsReceived);
  assertStrictEquals(v("p2p_messages_received_total", { type: "Ping" }), c.messagesSent.Ping);
  assert(c.messagesSent.Ping >= 3);
  assertStrictEquals(v("p2p_messages_received_total", { type: "HandshakeRequest" }), 1);
  assertStrictEquals(v("p2p_messages_received_total", { type: "Data" }), 1);
  assertStrictEquals(v("p2p_handshakes_total", { result: "ok" }), 1);
  assertStrictEquals(v("p2p_peers", { state: "authenticated" }), 1);
  assertStrictEquals(v("p2p_handshake_duration_seconds_count"), 1);
  assertStrictEquals(v("p2p_rtt_seconds_count"), s.rttSeconds.count);
  assertStrictEquals(v("p2p_acks_sent_total"), s.acksSent);
  assert(v("p2p_acks_sent_total")! >= 1, "the reliable Data was acked");

  await peer.disconnect();
  await waitUntil(() => server.getStats().peers.authenticated === 0, "the peer to leave");
  assertStrictEquals(sampleValue(await scrape(server), "p2p_disconnects_total"), 1);
});

Deno.test("/health answers 200 while serving and 503 once close() began; the HTTP server stops on close", async () => {
  const server = opsServer();
  await server.listen();
  const url = base(server);
  const ok = await get(server, "/health");
  assertStrictEquals(ok.status, 200);
  const body = JSON.parse(ok.text);
  assertStrictEquals(body.status, "ok");
  assertStrictEquals(body.peers, 0);
  assert(typeof body.uptime_seconds === "number");
  const closing = server.close();
  const during = server.fetch(new Request("http://ops/health"));
  assertStrictEquals(during.status, 503);
  assertEquals(await during.json(), { status: "shutting_down" });
  await closing;
  await assertRejects(() => fetch(url + "/health"));
});

Deno.test("with metrics_token every route but /health and the page needs the bearer token", async () => {
  await using server = opsServer({ metricsToken: "s3cret-token" });
  await server.listen();
  for (const path of ["/metrics", "/peers", "/api/stats", "/api/events"]) {
    assertStrictEquals((await get(server, path)).status, 401, path);
    assertStrictEquals((await get(server, path, "wrong")).status, 401, path);
    assertStrictEquals((await get(server, path, "s3cret-token-")).status, 401, path);
    assertStrictEquals((await get(server, path, "s3cret-token")).status, 200, path);
  }
  assertStrictEquals((await get(server, "/health")).status, 200);
  const page = await get(server, "/");
  assertStrictEquals(page.status, 200);
  assertMatch(page.type, /^text\/html/);
  assertMatch(page.text, /<canvas/);
  assertMatch(page.text, /#token=|location\.hash/);
  assert(!/<script[^>]+src=|<link[^>]+href=/.test(page.text), "the page loads nothing from elsewhere");
});

Deno.test("/peers pages with offset and limit; /api/events shows the joins; /api/stats has the snapshot", async () => {
  await using server = opsServer();
  await server.listen();
  await using a = client(server, "peer-a");
  await using b = client(server, "peer-b");
  await using c = client(server, "peer-c");
  for (const p of [a, b, c]) await p.connect();
  await waitUntil(() => server.getStats().peers.authenticated === 3, "three authenticated peers");

  const first = JSON.parse((await get(server, "/peers?limit=2")).text);
  assertStrictEquals(first.total, 3);
  assertStrictEquals(first.peers.length, 2);
  assertStrictEquals(first.next_offset, 2);
  const second = JSON.parse((await get(server, "/peers?offset=2&limit=2")).text);
  assertStrictEquals(second.peers.length, 1);
  assertStrictEquals(second.next_offset, null);
  const all = JSON.parse((await get(server, "/peers")).text);
  assertEquals(all.peers.map((p: { name: string }) => p.name).sort(), ["peer-a", "peer-b", "peer-c"]);
  const one = all.peers.find((p: { id: string }) => p.id === a.node.id);
  assertEquals(Object.keys(one).sort(), [
    "addr",
    "behind_nat",
    "bytes_in",
    "bytes_out",
    "capabilities",
    "datagrams_in",
    "datagrams_out",
    "extensions",
    "handshake_age_seconds",
    "id",
    "joined_at",
    "keyed",
    "last_seen",
    "last_seen_age_seconds",
    "listen_addr",
    "name",
    "network",
    "rtt_ms",
    "state",
    "version",
  ]);
  assertStrictEquals(one.state, "authenticated");
  assertStrictEquals(one.keyed, false, "P2PClient without a key");
  assertStrictEquals(one.extensions, true);
  assertStrictEquals(one.behind_nat, false, "loopback, as declared");
  assert(one.handshake_age_seconds >= 0 && one.handshake_age_seconds < 60, `${one.handshake_age_seconds}`);
  assert(one.last_seen_age_seconds >= 0 && one.last_seen_age_seconds < 60);
  assert(Math.abs(one.joined_at - Date.now() / 1000) < 60, `joined_at ${one.joined_at} is unix seconds`);
  assertStrictEquals(one.addr, formatSocketAddr(a.localAddr));
  assert(Math.abs(one.last_seen - Date.now() / 1000) < 60, `last_seen ${one.last_seen} is unix seconds`);
  for (const bad of ["limit=0", "limit=1001", "offset=-1", "limit=x"]) {
    assertStrictEquals((await get(server, `/peers?${bad}`)).status, 400, bad);
  }
  assertStrictEquals((await get(server, "/peers?limit=1000")).status, 200);

  const events = JSON.parse((await get(server, "/api/events")).text).events;
  const joins = events.filter((e: { type: string }) => e.type === "join");
  assertEquals(joins.map((e: { id: string }) => e.id).sort(), [a.node.id, b.node.id, c.node.id].sort());

  const stats = JSON.parse((await get(server, "/api/stats")).text);
  assert(Math.abs(stats.server_time - Date.now()) < 60_000);
  assertStrictEquals(stats.stats.peers.authenticated, 3);
  assertEquals(
    { ...stats.server, started_at: typeof stats.server.started_at },
    {
      version: server.node.version,
      node_id: server.node.id,
      name: "p2p_server",
      listen_addr: formatSocketAddr(server.addr),
      public_key: server.publicKey,
      started_at: "number",
      instance: null,
    },
  );
  const history = JSON.parse((await get(server, "/api/history")).text);
  assert(history.samples.length >= 1, "a sample from listen() on");
  assertEquals(Object.keys(history.samples[0]).sort(), [
    "bytes_in",
    "bytes_out",
    "datagrams_in",
    "datagrams_out",
    "time",
  ]);
  assertStrictEquals((await get(server, "/nope")).status, 404);
});

Deno.test("a metrics address already in use fails listen() with a BindError and leaves nothing open", async () => {
  await using first = opsServer();
  await first.listen();
  const second = opsServer({ metricsAddress: formatSocketAddr(first.metricsAddr!) });
  const error = caught(() => second.listen(), BindError);
  assertMatch(error.message, /^failed to bind 127\.0\.0\.1:\d+: /);
  await second.close();
});

Deno.test("bad metrics_address, metrics_token, log_format and stats_interval name the key and the value", () => {
  const cases: [Record<string, unknown>, string, string][] = [
    [{ metrics_address: "localhost" }, "metrics_address", '"localhost"'],
    [{ metrics_address: 9100 }, "metrics_address", "9100"],
    [{ metrics_token: "" }, "metrics_token", '""'],
    [{ log_format: "xml" }, "log_format", '"xml"'],
    [{ stats_interval: -1 }, "stats_interval", "-1"],
    [{ stats_interval: "60" }, "stats_interval", '"60"'],
  ];
  for (const [file, key, shown] of cases) {
    const e = caught(() => parseConfigFile(JSON.stringify(file), "c.json"), ConfigError);
    assertStrictEquals(e.key, key);
    assert(e.message.includes(`"${key}"`) && e.message.includes(shown), e.message);
  }
  const e = caught(() => resolveConfig({ statsInterval: 100_000 }), ConfigError);
  assertMatch(e.message, /"stats_interval".*100000/);
  const ok = parseConfigFile(
    '{"metrics_address":"[::1]:9100","log_format":"json","stats_interval":0}',
    "c.json",
  );
  assertEquals(ok.config, { metricsAddress: "[::1]:9100", logFormat: "json", statsInterval: 0 });

  const flag = caught(() => parseCli(["--metrics-address", "nope"]), UsageError);
  assertMatch(flag.message, /--metrics-address: "nope"/);
  const format = caught(() => parseCli(["--log-format", "xml"]), UsageError);
  assertMatch(format.message, /--log-format: "xml"/);
  const r = parseCli(["--metrics-address", "127.0.0.1:9100", "--log-format", "json"]);
  assert(r.kind === "run");
  assertEquals(r.flags, { metricsAddress: "127.0.0.1:9100", logFormat: "json" });
});

Deno.test("--log-format json writes JSON lines, including the periodic stats line", async () => {
  await using server = await startServer({
    args: ["--log-format", "json", "--metrics-address", "127.0.0.1:0"],
    config: { stats_interval: 0.2 },
  });
  const line = await server.waitForStderr(/"stats: /);
  const stats = JSON.parse(line);
  assertStrictEquals(stats.level, "INFO");
  assertStrictEquals(typeof stats.properties.authenticated, "number");
  const m = /metrics and status page on http:\/\/(\S+)\//.exec(server.stdout);
  assert(m, server.stdout);
  const res = await fetch(`http://${m[1]}/health`);
  assertStrictEquals(res.status, 200);
  assertStrictEquals((await res.json()).status, "ok");
  await server.stop();
  const lines = server.stderr.split("\n").filter((l) => l.length > 0);
  assert(lines.length >= 3);
  for (const l of lines) {
    const record = JSON.parse(l);
    assert(typeof record["@timestamp"] === "string" && typeof record.message === "string", l);
  }
});
