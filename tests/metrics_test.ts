/**
 * The Prometheus exposition (`src/metrics.ts`) and the stats histograms, checked with a strict parser of the
 * text format written here: every sample belongs to a declared family, names and labels are valid, and
 * histogram buckets are cumulative with `+Inf` equal to `_count`.
 */
import { assert, assertEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import { formatMetrics, METRICS_CONTENT_TYPE } from "../src/metrics.ts";
import { Histogram, Stats } from "../src/core/stats.ts";
import { parseExposition, sampleValue } from "./helpers/prom_parser.ts";

function busyStats(): Stats {
  const stats = new Stats(1_000);
  stats.datagramsReceived = 12;
  stats.datagramsSent = 9;
  stats.bytesReceived = 3456;
  stats.bytesSent = 2100;
  stats.messagesReceived.Ping = 4;
  stats.messagesSent.Pong = 4;
  stats.acksSent = 3;
  stats.acksReceived = 2;
  stats.retransmissions = 1;
  stats.giveUp("deadline");
  stats.duplicates = 2;
  stats.drop("invalid_json");
  stats.drop("invalid_json");
  stats.drop("stun_indication");
  stats.stun.requests = 5;
  stats.stun.responses = 4;
  stats.stun.errors.unknown_attribute = 1;
  stats.handshakesOk = 3;
  stats.handshakeFailed("NODE_ID_EXISTS");
  stats.handshakeFailed('we"ird\\code');
  stats.timeouts = 1;
  stats.disconnects = 2;
  for (const ms of [0.2, 3, 3, 40, 9_000]) stats.rttSample(ms);
  for (const ms of [2, 700]) stats.handshakeDuration(ms);
  return stats;
}

Deno.test("the exposition of a busy snapshot parses strictly and carries every counter", () => {
  const text = formatMetrics(
    busyStats().snapshot(6_500, { handshaking: 1, authenticated: 3 }, {
      handshaking: 0,
      connected: 1,
    }),
  );
  const families = parseExposition(text);
  const v = (name: string, labels: Record<string, string> = {}) => sampleValue(families, name, labels);
  assertStrictEquals(v("p2p_datagrams_received_total"), 12);
  assertStrictEquals(v("p2p_datagrams_sent_total"), 9);
  assertStrictEquals(v("p2p_bytes_received_total"), 3456);
  assertStrictEquals(v("p2p_bytes_sent_total"), 2100);
  assertStrictEquals(v("p2p_messages_received_total", { type: "Ping" }), 4);
  assertStrictEquals(v("p2p_messages_sent_total", { type: "Pong" }), 4);
  assertStrictEquals(v("p2p_messages_sent_total", { type: "Ping" }), 0);
  assertStrictEquals(v("p2p_acks_sent_total"), 3);
  assertStrictEquals(v("p2p_acks_received_total"), 2);
  assertStrictEquals(v("p2p_retransmissions_total"), 1);
  assertStrictEquals(v("p2p_give_ups_total", { reason: "deadline" }), 1);
  assertStrictEquals(v("p2p_give_ups_total", { reason: "tries" }), 0);
  assertStrictEquals(v("p2p_duplicates_total"), 2);
  assertStrictEquals(v("p2p_dropped_total", { reason: "invalid_json" }), 2);
  assertStrictEquals(v("p2p_dropped_total", { reason: "oversize" }), 0);
  assertStrictEquals(v("p2p_dropped_total", { reason: "stun_indication" }), 1);
  assertStrictEquals(v("p2p_stun_requests_total"), 5);
  assertStrictEquals(v("p2p_stun_responses_total"), 4);
  assertStrictEquals(v("p2p_stun_errors_total", { reason: "unknown_attribute" }), 1);
  assertStrictEquals(v("p2p_stun_errors_total", { reason: "bad_request" }), 0);
  assertStrictEquals(v("p2p_handshakes_total", { result: "ok" }), 3);
  assertStrictEquals(v("p2p_handshakes_total", { result: "failed", code: "NODE_ID_EXISTS" }), 1);
  assertStrictEquals(v("p2p_handshakes_total", { result: "failed", code: 'we"ird\\code' }), 1);
  assertStrictEquals(v("p2p_timeouts_total"), 1);
  assertStrictEquals(v("p2p_disconnects_total"), 2);
  assertStrictEquals(v("p2p_peers", { state: "handshaking" }), 1);
  assertStrictEquals(v("p2p_peers", { state: "authenticated" }), 3);
  assertStrictEquals(v("p2p_uptime_seconds"), 5.5);
  assertEquals(families.get("p2p_peers")?.type, "gauge");
  assertEquals(families.get("p2p_rtt_seconds")?.type, "histogram");
  assertStrictEquals(v("p2p_rtt_seconds_count"), 5);
  assertStrictEquals(v("p2p_rtt_seconds_bucket", { le: "0.0005" }), 1);
  assertStrictEquals(v("p2p_rtt_seconds_bucket", { le: "0.005" }), 3);
  assertStrictEquals(v("p2p_rtt_seconds_bucket", { le: "2.5" }), 4);
  assertStrictEquals(v("p2p_rtt_seconds_bucket", { le: "+Inf" }), 5);
  assert(Math.abs(v("p2p_rtt_seconds_sum")! - 9.0462) < 1e-9);
  assertStrictEquals(v("p2p_handshake_duration_seconds_count"), 2);
  assertStrictEquals(v("p2p_handshake_duration_seconds_bucket", { le: "0.005" }), 1);
  for (const family of families.values()) assert(family.help.length > 0);
});

Deno.test("an idle snapshot has every family with zero values and empty histograms", () => {
  const families = parseExposition(
    formatMetrics(
      new Stats(0).snapshot(0, { handshaking: 0, authenticated: 0 }, { handshaking: 0, connected: 0 }),
    ),
  );
  for (
    const name of [
      "p2p_datagrams_received_total",
      "p2p_datagrams_sent_total",
      "p2p_bytes_received_total",
      "p2p_bytes_sent_total",
      "p2p_messages_received_total",
      "p2p_messages_sent_total",
      "p2p_acks_sent_total",
      "p2p_acks_received_total",
      "p2p_retransmissions_total",
      "p2p_give_ups_total",
      "p2p_duplicates_total",
      "p2p_dropped_total",
      "p2p_handshakes_total",
      "p2p_timeouts_total",
      "p2p_disconnects_total",
      "p2p_peers",
      "p2p_uptime_seconds",
      "p2p_rtt_seconds",
      "p2p_handshake_duration_seconds",
    ]
  ) assert(families.has(name), `missing family ${name}`);
  assertStrictEquals(sampleValue(families, "p2p_rtt_seconds_bucket", { le: "+Inf" }), 0);
  assertStrictEquals(sampleValue(families, "p2p_handshakes_total", { result: "ok" }), 0);
  assert(METRICS_CONTENT_TYPE.startsWith("text/plain; version=0.0.4"));
});

Deno.test("the test parser refuses expositions that break the rules", () => {
  const ok = "# HELP a_total A.\n# TYPE a_total counter\na_total 1\n";
  parseExposition(ok);
  assertThrows(() => parseExposition("a_total 1\n"), SyntaxError);
  assertThrows(() => parseExposition(ok + "b_total 2\n"), SyntaxError);
  assertThrows(() => parseExposition("# HELP a A.\n# TYPE a counter\na 1\n"), SyntaxError);
  assertThrows(() => parseExposition(ok.slice(0, -1)), SyntaxError);
  const hist = (b1: number, inf: number, count: number) =>
    `# HELP h H.\n# TYPE h histogram\nh_bucket{le="1"} ${b1}\nh_bucket{le="+Inf"} ${inf}\nh_sum 1\nh_count ${count}\n`;
  parseExposition(hist(1, 2, 2));
  assertThrows(() => parseExposition(hist(3, 2, 2)), SyntaxError);
  assertThrows(() => parseExposition(hist(1, 2, 3)), SyntaxError);
});

Deno.test("Histogram counts each sample in its first bucket and snapshots cumulatively", () => {
  const h = new Histogram([1, 2, 5]);
  for (const x of [0.5, 1, 1.5, 7]) h.observe(x);
  assertEquals(h.snapshot(), { bounds: [1, 2, 5, Infinity], cumulative: [2, 3, 3, 4], sum: 10, count: 4 });
});

Deno.test("cluster mode adds its families; a single instance has none", () => {
  const snapshot = new Stats(0).snapshot(1_000, { handshaking: 0, authenticated: 1 }, {
    handshaking: 0,
    connected: 0,
  });
  assert(!formatMetrics(snapshot).includes("p2p_cluster_"));
  snapshot.cluster = {
    state: "degraded",
    instance: "eu-1",
    remotePeers: 0,
    instances: 0,
    since: 0,
    lastError: "unreachable",
    roundTrips: 7,
    commands: 30,
    directoryWrites: 12,
    messagesOut: 5,
    messagesIn: 4,
    resyncs: 2,
    conflicts: 1,
    invalid: 3,
  };
  const families = parseExposition(formatMetrics(snapshot));
  const v = (name: string, labels: Record<string, string> = {}) => sampleValue(families, name, labels);
  assertStrictEquals(v("p2p_cluster_up"), 0);
  assertStrictEquals(v("p2p_cluster_redis_round_trips_total"), 7);
  assertStrictEquals(v("p2p_cluster_redis_commands_total"), 30);
  assertStrictEquals(v("p2p_cluster_messages_total", { direction: "out" }), 5);
  assertStrictEquals(v("p2p_cluster_messages_total", { direction: "in" }), 4);
  assertStrictEquals(v("p2p_cluster_conflicts_total"), 1);
  assertStrictEquals(v("p2p_cluster_invalid_total"), 3);
});

Deno.test("the process and build families: standard names and types, descriptor gauges only when known", () => {
  const snapshot = new Stats(0).snapshot(0, { handshaking: 0, authenticated: 0 }, {
    handshaking: 0,
    connected: 0,
  });
  const sample = {
    rss: 5_000_000,
    heapUsed: 1,
    heapTotal: 2,
    cpuSeconds: 1.25,
    startTimeSeconds: 1_700_000_000.5,
    openFds: 12,
    maxFds: 1024,
  };
  const families = parseExposition(formatMetrics(snapshot, { process: sample, build: { version: "9.9.9" } }));
  const types = Object.fromEntries(
    [
      "process_cpu_seconds_total",
      "process_resident_memory_bytes",
      "process_start_time_seconds",
      "process_open_fds",
    ]
      .map((n) => [n, families.get(n)?.type]),
  );
  assertEquals(types, {
    process_cpu_seconds_total: "counter",
    process_resident_memory_bytes: "gauge",
    process_start_time_seconds: "gauge",
    process_open_fds: "gauge",
  });
  assertStrictEquals(sampleValue(families, "process_cpu_seconds_total", {}), 1.25);
  assertStrictEquals(sampleValue(families, "process_start_time_seconds", {}), 1_700_000_000.5);
  assertStrictEquals(sampleValue(families, "process_open_fds", {}), 12);
  assertStrictEquals(sampleValue(families, "process_max_fds", {}), 1024);
  assertStrictEquals(sampleValue(families, "p2p_build_info", { version: "9.9.9" }), 1);
  const unknown = parseExposition(
    formatMetrics(snapshot, { process: { ...sample, openFds: null, maxFds: null } }),
  );
  assert(
    !unknown.has("process_open_fds") && !unknown.has("process_max_fds") && !unknown.has("p2p_build_info"),
  );
  assert(unknown.has("process_cpu_seconds_total"));
});
