/**
 * `/metrics` passes Prometheus's own linter (`promtool check metrics`, from Debian's prometheus package)
 * with no complaint: a live server's exposition after traffic, a busy snapshot with every label kind and
 * the cluster families, and the program's output with `/proc` readable (the descriptor gauges).
 *
 * Skipped, with a message, when promtool is not installed (`.ci/run` installs it when it can).
 */
import { assert, assertStrictEquals } from "./deps/assert.ts";
import { formatMetrics } from "../src/metrics.ts";
import { P2PClient } from "../src/client.ts";
import { P2PServer } from "../src/server.ts";
import { Stats } from "../src/core/stats.ts";
import { parseExposition, sampleValue } from "./helpers/prom_parser.ts";
import { startServer, waitUntil } from "./helpers/server_process.ts";
import denoJson from "../deno.json" with { type: "json" };

function findPromtool(): string | null {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin").split(":")) {
    try {
      if (Deno.statSync(`${dir}/promtool`).isFile) return `${dir}/promtool`;
    } catch {
      // not here
    }
  }
  return null;
}

const promtool = findPromtool();
if (!promtool) console.warn("promtool tests skipped: promtool is not installed (apt-get install prometheus)");

/** Runs `promtool check metrics` on `text`; returns its exit code and everything it printed. */
async function check(text: string): Promise<{ code: number; output: string }> {
  const child = new Deno.Command(promtool!, {
    args: ["check", "metrics"],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(30_000),
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(text));
  await writer.close();
  const out = await child.output();
  const d = new TextDecoder();
  return { code: out.code, output: (d.decode(out.stdout) + d.decode(out.stderr)).trim() };
}

Deno.test({
  name: "promtool finds nothing to lint in a live server's /metrics, process_* and build info included",
  ignore: !promtool,
  async fn() {
    await using server = new P2PServer({
      listenAddress: "127.0.0.1:0",
      enableDiscovery: false,
      metricsAddress: "127.0.0.1:0",
    });
    const { port } = await server.listen();
    await using client = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0", name: "prom" });
    await client.connect();
    await client.ping();
    const res = await fetch(`http://127.0.0.1:${server.metricsAddr!.port}/metrics`);
    const text = await res.text();
    assertStrictEquals(res.status, 200);
    const result = await check(text);
    assertStrictEquals(result.output, "");
    assertStrictEquals(result.code, 0);
    const families = parseExposition(text);
    const v = (name: string, labels: Record<string, string> = {}) => sampleValue(families, name, labels);
    assertStrictEquals(families.get("process_cpu_seconds_total")?.type, "counter");
    assert(v("process_cpu_seconds_total")! > 0);
    assert(v("process_resident_memory_bytes")! > 1_000_000);
    const start = v("process_start_time_seconds")!;
    assert(start <= Date.now() / 1000 && start > Date.now() / 1000 - 3600, `start ${start}`);
    assertStrictEquals(
      v("p2p_build_info", { version: denoJson.version, deno: Deno.version.deno }),
      1,
    );
  },
});

Deno.test({
  name: "promtool accepts a busy snapshot with odd label values and the cluster families",
  ignore: !promtool,
  async fn() {
    const stats = new Stats(0);
    stats.handshakeFailed('we"ird\\code\nline');
    stats.drop("invalid_json");
    stats.rttSample(3);
    const snapshot = stats.snapshot(5_000, { handshaking: 1, authenticated: 2 }, {
      handshaking: 0,
      connected: 1,
    });
    snapshot.cluster = {
      state: "ok",
      instance: "eu-1",
      remotePeers: 3,
      instances: 1,
      since: 0,
      lastError: null,
      roundTrips: 1,
      commands: 2,
      directoryWrites: 3,
      messagesOut: 4,
      messagesIn: 5,
      resyncs: 1,
      conflicts: 0,
      invalid: 0,
    } as unknown as NonNullable<typeof snapshot.cluster>;
    const text = formatMetrics(snapshot, {
      process: {
        rss: 1,
        heapUsed: 1,
        heapTotal: 2,
        cpuSeconds: 0.5,
        startTimeSeconds: 1.5,
        openFds: 9,
        maxFds: Infinity,
      },
      build: { version: "0.0.0-test" },
    });
    const result = await check(text);
    assertStrictEquals(result.output, "");
    assertStrictEquals(result.code, 0);
  },
});

Deno.test({
  name: "with /proc readable (deno run -A) the program's /metrics also has the descriptor gauges",
  ignore: !promtool || Deno.build.os !== "linux",
  async fn() {
    await using server = await startServer({
      args: ["--metrics-address", "127.0.0.1:0"],
      runFlags: ["run", "--allow-all"],
    });
    const m = await waitUntil(
      () => /metrics and status page on http:\/\/(\S+)\//.exec(server.stdout) ?? undefined,
      "the metrics line",
    );
    const text = await (await fetch(`http://${m[1]}/metrics`)).text();
    const families = parseExposition(text);
    const fds = sampleValue(families, "process_open_fds", {});
    assert(fds !== undefined && fds >= 3 && fds < 1000, `open fds ${fds}`);
    assert(sampleValue(families, "process_max_fds", {})! >= fds);
    const result = await check(text);
    assertStrictEquals(result.output, "");
    assertStrictEquals(result.code, 0);
  },
});
