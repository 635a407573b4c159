/**
 * Drives the system Chromium with playwright-core against a status page URL, for
 * `tests/status_page_browser_test.ts`. Runs as its own process with `-A` (playwright-core probes the OS in
 * ways the test runner's permissions do not cover). Prints one JSON line with what the page showed.
 *
 * Usage: `deno run -A tests/helpers/status_page_browser.ts <url> <screenshot.png> <peer-name>`
 *
 * @module
 */
import { chromium } from "../deps/playwright.ts";

/** What the page showed. */
export interface PageReport {
  status: string | null;
  authenticated: string | null;
  datagramsPerSecond: string | null;
  events: string | null;
  error: string | null;
  samples: number;
}

/** Loads `url`, waits for the chart to have updated and the peer to be listed, and takes a screenshot. */
export async function checkPage(url: string, screenshot: string, peerName: string): Promise<PageReport> {
  const profile = await Deno.makeTempDir({ prefix: "p2p_chromium_" });
  try {
    // A temp profile directory (playwright passes it as --user-data-dir).
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      viewport: { width: 1200, height: 900 },
      args: [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
      ],
    });
    try {
      const page = await browser.newPage();
      await page.goto(url);
      // At least three rate samples: the chart has updated while we watched.
      await page.waitForFunction('Number(document.getElementById("chart").dataset.samples || 0) >= 3', null, {
        timeout: 20_000,
      });
      await page.waitForFunction(
        `document.getElementById("peers").textContent.includes(${JSON.stringify(peerName)})`,
        null,
        { timeout: 10_000 },
      );
      await page.screenshot({ path: screenshot, fullPage: true });
      return {
        status: await page.textContent("#status"),
        authenticated: await page.textContent("#t-auth"),
        datagramsPerSecond: await page.textContent("#t-dps"),
        events: await page.textContent("#event-rows"),
        error: await page.textContent("#error"),
        samples: Number(await page.getAttribute("#chart", "data-samples")),
      };
    } finally {
      await browser.close();
    }
  } finally {
    await Deno.remove(profile, { recursive: true });
  }
}

if (import.meta.main) {
  const [url, screenshot, peerName] = Deno.args;
  if (!url || !screenshot || !peerName) {
    console.error("usage: status_page_browser.ts <url> <screenshot.png> <peer-name>");
    Deno.exit(2);
  }
  console.log(JSON.stringify(await checkPage(url, screenshot, peerName)));
  Deno.exit(0);
}
