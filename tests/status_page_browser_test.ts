/**
 * The status page in a real browser (the system Chromium, driven by playwright-core in a helper process):
 * it loads against a running server with live UDP traffic, reads the token from the URL fragment, updates
 * the chart and lists the peer and its join. Saves a screenshot to `test-output/status_page.png`.
 *
 * Skipped, with a message, when `/usr/bin/chromium` is not installed (`.ci/run` installs it when it can).
 */
import { assert, assertStrictEquals } from "./deps/assert.ts";
import { formatSocketAddr } from "../src/wire/address.ts";
import { P2PClient } from "../src/client.ts";
import { P2PServer } from "../src/server.ts";
import { childEnv, PROJECT_ROOT } from "./helpers/server_process.ts";
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
      out = await new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "-A",
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
    assertStrictEquals(report.authenticated, "1");
    assert(report.samples >= 3, `chart samples ${report.samples}`);
    assert(Number(report.datagramsPerSecond) > 0, `datagrams/s ${report.datagramsPerSecond}`);
    assert(report.events?.includes("join"), `events: ${report.events}`);
    assert((await Deno.stat(screenshot)).size > 1000, "the screenshot was saved");
  },
});
