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

/** The viewport the page is checked at (a common laptop width). */
export const VIEWPORT = { width: 1280, height: 900 } as const;

/** A table cell whose text does not fit its box, or a column past the viewport's right edge. */
export interface CutCell {
  /** The column's header text. */
  column: string;
  /** The cell's text. */
  text: string;
  /** Why it counts as cut. */
  why: string;
}

/** What the page showed. */
export interface PageReport {
  status: string | null;
  version: string | null;
  nodeId: string | null;
  listen: string | null;
  clock: string | null;
  authenticated: string | null;
  datagramsPerSecond: string | null;
  events: string | null;
  eventTimes: string[];
  error: string | null;
  /** Rate samples in the chart now, and at its first drawing (right after the page opened). */
  samples: number;
  firstSamples: number;
  /** The peers table: header texts and the first row's cell texts. */
  columns: string[];
  firstRow: string[];
  /** Cells of the peers table that are cut off (should be none at {@linkcode VIEWPORT}). */
  cut: CutCell[];
  /** The page's scroll width (no horizontal scrolling at {@linkcode VIEWPORT} when <= its width). */
  pageWidth: number;
}

/**
 * Runs in the page: the peers table's header and first row, every cell whose text is wider than its box
 * or that ends past the viewport's right edge, the page's scroll width, and the event times.
 */
const LAYOUT_SCRIPT = `(() => {
  const table = document.getElementById("peer-table");
  const columns = [...table.querySelectorAll("thead th")].map((th) => th.textContent || "");
  const cut = [];
  const right = document.documentElement.clientWidth;
  for (const row of table.querySelectorAll("tr")) {
    [...row.children].forEach((el, i) => {
      const column = columns[i] || "?";
      const text = el.textContent || "";
      if (el.scrollWidth > el.clientWidth + 1) cut.push({ column, text, why: "text wider than its cell" });
      if (el.getBoundingClientRect().right > right + 1) cut.push({ column, text, why: "past the right edge" });
    });
  }
  const first = table.querySelector("tbody tr");
  return {
    columns,
    firstRow: first ? [...first.children].map((td) => td.textContent || "") : [],
    cut,
    pageWidth: document.documentElement.scrollWidth,
    eventTimes: [...document.querySelectorAll("#event-rows tr td:first-child")].map((td) => td.textContent || ""),
  };
})()`;

/** The page's document, as the predicates see it (they run in the browser: nothing from here is in scope). */
type PageElement = { dataset: Record<string, string | undefined>; textContent: string | null };
type PageGlobal = { document: { getElementById(id: string): PageElement } };

/** Loads `url`, waits for the chart and the peer, checks the layout, and takes a screenshot. */
export async function checkPage(url: string, screenshot: string, peerName: string): Promise<PageReport> {
  const profile = await Deno.makeTempDir({ prefix: "p2p_chromium_" });
  try {
    // A temp profile directory (playwright passes it as --user-data-dir).
    const browser = await chromium.launchPersistentContext(profile, {
      executablePath: "/usr/bin/chromium",
      headless: true,
      viewport: VIEWPORT,
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
      // The first drawing: the server's history is there at once (no waiting for the page to collect it).
      // Predicates as functions, not strings: a string is run through eval, which the page's CSP forbids.
      await page.waitForFunction(
        () =>
          (globalThis as unknown as PageGlobal).document.getElementById("chart").dataset.firstSamples !==
            undefined,
        null,
        {
          timeout: 20_000,
        },
      );
      await page.waitForFunction(
        (name) =>
          ((globalThis as unknown as PageGlobal).document.getElementById("peers").textContent ?? "").includes(
            name,
          ),
        peerName,
        { timeout: 10_000 },
      );
      await page.waitForFunction(
        () =>
          Number(
            (globalThis as unknown as PageGlobal).document.getElementById("chart").dataset.samples || 0,
          ) >= 3,
        null,
        {
          timeout: 20_000,
        },
      );
      await page.screenshot({ path: screenshot, fullPage: true });
      const layout = await page.evaluate(LAYOUT_SCRIPT) as Pick<
        PageReport,
        "columns" | "firstRow" | "cut" | "pageWidth" | "eventTimes"
      >;
      const chart = {
        samples: Number(await page.getAttribute("#chart", "data-samples")),
        firstSamples: Number(await page.getAttribute("#chart", "data-first-samples")),
      };
      return {
        status: await page.textContent("#status"),
        version: await page.textContent("#version"),
        nodeId: await page.textContent("#node-id"),
        listen: await page.textContent("#listen"),
        clock: await page.textContent("#clock"),
        authenticated: await page.textContent("#t-auth"),
        datagramsPerSecond: await page.textContent("#t-dps"),
        events: await page.textContent("#event-rows"),
        error: await page.textContent("#error"),
        ...chart,
        ...layout,
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
