/**
 * The example client (`examples/simple_client.ts`) as users run it, in a subprocess: against the real
 * server program, against a stand-in for the deployed upstream server, and against a port where nothing
 * listens.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "./deps/assert.ts";
import { UpstreamServer } from "./fixtures/upstream_server.ts";
import { type RunResult, runScript, startServer } from "./helpers/server_process.ts";

const CLIENT = "examples/simple_client.ts";

function runClient(server: string, deadlineMs?: number, extra: string[] = []): Promise<RunResult> {
  return runScript({
    script: CLIENT,
    config: null,
    args: ["--server", server, "--name", "compat_test", ...extra],
    ...(deadlineMs === undefined ? {} : { deadlineMs }),
  });
}

/** Checks that every step of the example was printed, in order, and returns the client's node id. */
function assertAllSteps(r: RunResult, server: string, peers: number): string {
  assertStrictEquals(r.code, 0, `client failed:\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  const steps = [
    new RegExp(`connecting to ${server.replace(/[[\].]/g, "\\$&")} as ([0-9a-f-]{36})`),
    /handshake ok: server p2p_server \S+ \([0-9a-f-]{36}\)/,
    /data sent and acknowledged: \{"text":"hello from simple_client"/,
    /echo received: \{"echo":\{"text":"hello from simple_client","sent_at":\d+\},"timestamp":\d+\}/,
    /ping\/pong ok: rtt \d+\.\d\d ms/,
    new RegExp(`discovery ok: ${peers} peer\\(s\\)`),
    /disconnected$/,
  ];
  const lines = r.stdout.trimEnd().split("\n");
  let at = 0;
  let id = "";
  for (const step of steps) {
    const found = lines.findIndex((line, i) => i >= at && step.test(line));
    assert(found >= 0, `step ${step} missing or out of order in:\n${r.stdout}`);
    if (at === 0) id = step.exec(lines[found]!)![1]!;
    at = found + 1;
  }
  assert(lines.some((l) => l.includes(`${id} at `)), `the client is not in its own discovery:\n${r.stdout}`);
  return id;
}

Deno.test("simple_client completes every step against the real server", async () => {
  await using server = await startServer();
  const r = await runClient(server.addrText);
  const id = assertAllSteps(r, server.addrText, 1);
  await server.waitForStderr(new RegExp(`peer joined: "?${id}`));
  await server.waitForStderr(new RegExp(`peer left: "?${id}.*disconnect`));
});

Deno.test("simple_client completes every step against the upstream stand-in", async () => {
  await using upstream = UpstreamServer.start();
  const r = await runClient(upstream.addrText);
  const id = assertAllSteps(r, upstream.addrText, 1);
  assertEquals(upstream.received.map((m) => m.message_type).filter((t) => t !== "Ack"), [
    "HandshakeRequest",
    "Ping", // the client confirms its handshake at once (a reliable Ping the Pong settles)
    "Data",
    "Ping",
    "DiscoveryRequest",
    "Disconnect",
  ]);
  assertStrictEquals((upstream.received[0]!.payload as { id: string }).id, id);
  assertEquals(upstream.peerIds, [], "the Disconnect did not reach the stand-in");
});

Deno.test("simple_client exits 1 with connection timeout when nothing listens", async () => {
  // A port that was free a moment ago; nothing listens on it while the client runs.
  const probe = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const r = await runClient(`127.0.0.1:${port}`);
  assertStrictEquals(r.code, 1, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assertMatch(r.stderr, new RegExp(`connection timeout to 127\\.0\\.0\\.1:${port}\\b`));
  assert(!r.stdout.includes("handshake ok"), r.stdout);
});

Deno.test("simple_client shows its progress while nothing answers, and --timeout bounds the whole run", async () => {
  const probe = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const started = performance.now();
  const r = await runClient(`127.0.0.1:${port}`, undefined, ["--timeout", "2.5"]);
  const elapsed = (performance.now() - started) / 1000;
  assertStrictEquals(r.code, 1, `stdout:\n${r.stdout}\nstderr:\n${r.stderr}`);
  assertEquals(r.stderr.trim().split("\n"), [
    `error: connection timeout to 127.0.0.1:${port}: no answer within 2.5 s (--timeout)`,
  ]);
  const progress = r.stdout.split("\n").filter((l) => l.includes("still waiting for the handshake"));
  assert(progress.length >= 2, `no progress lines:\n${r.stdout}`);
  assertMatch(progress[0]!, /no answer for 1\.\d s, \d+ datagram\(s\) sent; 1\.\d of 2\.5 s$/);
  // 2.5 s of waiting plus the subprocess's start; far below the library's 10 s handshake_timeout.
  assert(elapsed >= 2.5 && elapsed < 2.5 + 6, `the run took ${elapsed.toFixed(1)} s`);
});
