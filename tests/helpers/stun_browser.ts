/**
 * Gathers ICE candidates in the system Chromium against one STUN server, for `tests/stun_browser_test.ts`.
 * Runs as its own process with `-A` (playwright-core probes the OS in ways the test runner's permissions do
 * not cover), inside the client network namespace of the NAT test bed, so Chromium's UDP goes through the
 * NAT. The page is a `data:` URL: it makes an `RTCPeerConnection` with the server as its only ICE server,
 * creates a data channel and an offer, and collects every candidate until gathering completes (or a
 * deadline passes). Prints one JSON line: {@linkcode GatherReport}.
 *
 * Usage: `deno run -A tests/helpers/stun_browser.ts <stun-url> [deadline-ms]`
 *
 * @module
 */
import { chromium } from "../deps/playwright.ts";

/** What the page saw. */
export interface GatherReport {
  /** Every candidate line (`candidate:...`), in the order the browser gave them. */
  candidates: string[];
  /** The final ICE gathering state (`"complete"` unless the deadline passed first). */
  gatheringState: string;
  /** Errors the browser reported for the ICE server (`icecandidateerror`), if any. */
  errors: string[];
  /** Milliseconds from the offer to the end of gathering. */
  elapsedMs: number;
}

/** The page: runs on load, leaves its result as JSON in `<pre id="result">`. */
function page(stunUrl: string, deadlineMs: number): string {
  const script = `
(async () => {
  const candidates = [];
  const errors = [];
  const pc = new RTCPeerConnection({ iceServers: [{ urls: ${JSON.stringify(stunUrl)} }] });
  pc.createDataChannel("probe");
  pc.onicecandidate = (e) => { if (e.candidate && e.candidate.candidate) candidates.push(e.candidate.candidate); };
  pc.onicecandidateerror = (e) => errors.push(e.errorCode + " " + e.errorText + " " + e.url);
  const start = performance.now();
  const done = new Promise((resolve) => {
    pc.onicegatheringstatechange = () => { if (pc.iceGatheringState === "complete") resolve(); };
    setTimeout(resolve, ${deadlineMs});
  });
  await pc.setLocalDescription(await pc.createOffer());
  await done;
  const result = { candidates, gatheringState: pc.iceGatheringState, errors,
    elapsedMs: Math.round(performance.now() - start) };
  pc.close();
  document.getElementById("result").textContent = JSON.stringify(result);
})().catch((e) => { document.getElementById("result").textContent = JSON.stringify({ failure: String(e) }); });`;
  return `data:text/html,${
    encodeURIComponent(`<!doctype html><pre id="result"></pre><script>${script}</script>`)
  }`;
}

/** Loads the page in headless Chromium (a temp profile, no sandbox: this runs as root) and waits for it. */
export async function gather(stunUrl: string, deadlineMs: number): Promise<GatherReport> {
  const profile = await Deno.makeTempDir({ prefix: "p2p_chromium_stun_" });
  try {
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const tab = await browser.newPage();
      await tab.goto(page(stunUrl, deadlineMs));
      await tab.waitForFunction(
        () =>
          ((globalThis as unknown as { document: { getElementById(id: string): { textContent: string } } })
            .document.getElementById("result").textContent ?? "") !== "",
        null,
        { timeout: deadlineMs + 5_000 },
      );
      const text = (await tab.textContent("#result")) ?? "";
      const result = JSON.parse(text) as GatherReport | { failure: string };
      if ("failure" in result) throw new Error(`the page failed: ${result.failure}`);
      return result;
    } finally {
      await browser.close();
    }
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}

if (import.meta.main) {
  const [url, deadline] = Deno.args;
  if (!url) {
    console.error("usage: stun_browser.ts <stun-url> [deadline-ms]");
    Deno.exit(2);
  }
  console.log(JSON.stringify(await gather(url, Number(deadline ?? 10_000))));
  Deno.exit(0);
}
