/**
 * The status page in a real browser (the system Chromium, driven by playwright-core in a helper process) at
 * 1280 x 900: it loads against a running server with live UDP traffic, reads the token from the URL
 * fragment, names the server (version, node id, listen address) at the top, draws the chart from the
 * server's history at once, lists the peer with every column whole (none cut off), and writes times in UTC.
 * Saves a screenshot to `test-output/status_page.png`.
 *
 * Skipped, with a message, when `/usr/bin/chromium` is not installed (`.ci/run` installs it when it can).
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "./deps/assert.ts";
import { formatSocketAddr } from "../src/wire/address.ts";
import { P2PClient } from "../src/client.ts";
import { P2PServer } from "../src/server.ts";
import { childEnv, PROJECT_ROOT, waitUntil } from "./helpers/server_process.ts";
import type { PageReport } from "./helpers/status_page_browser.ts";

const CHROMIUM = "/usr/bin/chromium";

function hasChromium(): boolean {
  try {
    return Deno.statSync(CHROMIUM).isFile;
  } catch {
    return false;
  }
}

const available = hasChromium();
if (!available) {
  console.warn(`status page browser test skipped: ${CHROMIUM} is not installed (apt-get install chromium)`);
}

Deno.test({
  name: "the status page shows live peers, a moving traffic chart and the join in Chromium",
  ignore: !available,
  async fn() {
    const token = "page-token";
    await using server = new P2PServer({
      listenAddress: "127.0.0.1:0",
      enableDiscovery: false,
      metricsAddress: "127.0.0.1:0",
      metricsToken: token,
    });
    await server.listen();
    await using peer = new P2PClient({ server: formatSocketAddr(server.addr), name: "browser-peer" });
    await peer.connect();
    await peer.ping();
    await Deno.mkdir(`${PROJECT_ROOT}test-output`, { recursive: true });
    const screenshot = `${PROJECT_ROOT}test-output/status_page.png`;

    // Live traffic while the page watches.
    let traffic = true;
    const pinging = (async () => {
      while (traffic) {
        await peer.ping();
        await new Promise((resolve) => setTimeout(resolve, 50));
      }
    })();
    let out: Deno.CommandOutput;
    try {
      // Five seconds of history on the server before the page opens: the chart must show it at once.
      const history = `http://${formatSocketAddr(server.metricsAddr!)}/api/history`;
      await waitUntil(
        async () => {
          const res = await fetch(history, { headers: { authorization: `Bearer ${token}` } });
          return (await res.json()).samples.length >= 6;
        },
        "five seconds of traffic history",
        20_000,
        250,
      );
      out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
          "--lock=tests/deno.lock", // playwright-core is locked with the tests, not with the server
          "tests/helpers/status_page_browser.ts",
          `http://${formatSocketAddr(server.metricsAddr!)}/#token=${token}`,
          screenshot,
          "browser-peer",
        ],
        cwd: PROJECT_ROOT,
        env: childEnv(),
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
    } finally {
      traffic = false;
      await pinging;
    }
    const decoder = new TextDecoder();
    assertStrictEquals(out.code, 0, decoder.decode(out.stderr));
    const report: PageReport = JSON.parse(decoder.decode(out.stdout).trim().split("\n").at(-1)!);
    assertStrictEquals(report.status, "ok");
    assertStrictEquals(report.error, "");
    assertStrictEquals(report.version, `p2p_server ${server.node.version}`);
    assertStrictEquals(report.nodeId, server.node.id);
    assertStrictEquals(report.listen, formatSocketAddr(server.addr));
    assertMatch(report.clock ?? "", /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC$/);
    assertStrictEquals(report.authenticated, "1");
    assert(report.firstSamples >= 4, `the chart's first drawing had ${report.firstSamples} samples`);
    assert(report.samples >= 3, `chart samples ${report.samples}`);
    assertEquals(report.columns, [
      "name",
      "node id",
      "endpoint",
      "NAT",
      "keyed",
      "state",
      "handshake",
      "last seen",
      "RTT",
      "in",
      "out",
    ]);
    assertStrictEquals(report.firstRow[0], "browser-peer");
    assertStrictEquals(report.firstRow[1], peer.node.id);
    assertStrictEquals(report.firstRow[2], server.peers()[0]!.addr);
    assertStrictEquals(report.firstRow[5], "authenticated");
    assertMatch(report.firstRow[6]!, /^\d+ s ago$/);
    assertMatch(report.firstRow[8]!, /^\d+\.\d ms$/);
    assertEquals(report.cut, [], "cut-off cells at 1280 px");
    assert(report.pageWidth <= 1280, `the page scrolls sideways: ${report.pageWidth} px`);
    const today = new Date().toISOString().slice(0, 10);
    assert(
      report.eventTimes.length > 0 && report.eventTimes.every((t) => t.startsWith(today)),
      `${report.eventTimes}`,
    );
    assert(Number(report.datagramsPerSecond) > 0, `datagrams/s ${report.datagramsPerSecond}`);
    assert(report.events?.includes("join"), `events: ${report.events}`);
    assert((await Deno.stat(screenshot)).size > 1000, "the screenshot was saved");
  },
});
