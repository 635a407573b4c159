/**
 * STUN clients nobody here wrote, against the real program on loopback: coturn's `turnutils_stunclient`
 * (RFC 5389/8489, IPv4 and IPv6) and the `stun` client of Debian's stun-client package (RFC 3489: no magic
 * cookie, CHANGE-REQUEST in every request). Each client's output lines are printed; the server's counters are
 * read from `/api/stats`. A JSON Ping right after gets its Pong.
 *
 * Skipped, with a message, when a client is not installed (`.ci/run` installs coturn and stun-client when it
 * can).
 */
import { assert, assertMatch, assertStrictEquals } from "./deps/assert.ts";
import type { StatsSnapshot } from "../src/core/stats.ts";
import { RawPeer } from "./helpers/raw_peer.ts";
import { type ServerProcess, startServer, waitUntil } from "./helpers/server_process.ts";

function findBinary(name: string): string | null {
  for (const dir of [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/bin", "/usr/local/bin"]) {
    try {
      if (dir && Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return null;
}

const TURNUTILS = findBinary("turnutils_stunclient");
const STUN = findBinary("stun");
if (!TURNUTILS) {
  console.warn(
    "turnutils_stunclient tests skipped: turnutils_stunclient is not installed (apt-get install coturn)",
  );
}
if (!STUN) console.warn("stun client tests skipped: stun is not installed (apt-get install stun-client)");

/** The program on `listen` (port 0) with its ops server on loopback; returns it and its `/api/stats` URL. */
async function start(listen: string): Promise<{ server: ServerProcess; statsUrl: string }> {
  const server = await startServer({
    config: { listen_address: listen },
    args: ["--metrics-address", "127.0.0.1:0"],
  });
  try {
    const ops = await waitUntil(
      () => /^metrics and status page on http:\/\/(\S+)\/$/m.exec(server.stdout)?.[1],
      "the metrics address on stdout",
    );
    return { server, statsUrl: `http://${ops}/api/stats` };
  } catch (error) {
    await server.stop();
    throw error;
  }
}

async function stats(statsUrl: string): Promise<StatsSnapshot> {
  const res = await fetch(statsUrl);
  return ((await res.json()) as { stats: StatsSnapshot }).stats;
}

/** Runs a client to completion (20 s at most); returns its exit code and output. */
async function run(binary: string, args: string[]): Promise<{ code: number; output: string }> {
  const out = await new Deno.Command(binary, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).output();
  const d = new TextDecoder();
  const output = (d.decode(out.stdout) + d.decode(out.stderr)).trim();
  console.log(`$ ${binary.split("/").pop()} ${args.join(" ")} -> exit ${out.code}\n${output}`);
  return { code: out.code, output };
}

async function pingPong(server: ServerProcess): Promise<void> {
  await using peer = new RawPeer(server.addr.hostname);
  await peer.send(server.addr, peer.envelope("Ping"));
  const got = await peer.receive();
  assertStrictEquals(got.message.message_type, "Pong");
}

for (const [family, listen, host] of [["IPv4", "127.0.0.1:0", "127.0.0.1"], ["IPv6", "[::1]:0", "::1"]]) {
  Deno.test({
    name: `turnutils_stunclient (coturn) over ${family} gets its own address back from the running server`,
    ignore: !TURNUTILS,
    async fn() {
      const { server, statsUrl } = await start(listen!);
      await using _server = server;
      const { code, output } = await run(TURNUTILS!, ["-p", String(server.addr.port), host!]);
      assertStrictEquals(code, 0, output);
      const escaped = host!.replaceAll(".", "\\.");
      assertMatch(output, new RegExp(`${family}\\. UDP reflexive addr: ${escaped}:\\d+`));
      const s = await stats(statsUrl);
      assert(s.stun.requests >= 1 && s.stun.responses === s.stun.requests, JSON.stringify(s.stun));
      assertStrictEquals(s.droppedTotal, 0, JSON.stringify(s.drops));
      await pingPong(server);
    },
  });
}

Deno.test({
  name: "the stun client (RFC 3489) finds the server: MAPPED-ADDRESS for test I, 420 for the change requests",
  ignore: !STUN,
  async fn() {
    const { server, statsUrl } = await start("127.0.0.1:0");
    await using _server = server;
    const { output } = await run(STUN!, [`127.0.0.1:${server.addr.port}`, "-v"]);
    // The exit code is the client's NAT classification, not a failure: "Open" on loopback.
    assertMatch(output, /^Primary: Open/m);
    assertMatch(output, /MappedAddress = 127\.0\.0\.1:\d+/);
    assert(!/problem parsing/.test(output), "every answer parses");
    const s = await stats(statsUrl);
    assert(s.stun.responses >= 1, JSON.stringify(s.stun));
    assert(
      s.stun.errors.unknown_attribute >= 2,
      `tests II and III ask for a change: ${JSON.stringify(s.stun)}`,
    );
    assertStrictEquals(s.droppedTotal, 0, JSON.stringify(s.drops));
    await pingPong(server);
  },
});
