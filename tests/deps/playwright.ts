/**
 * Browser automation for the status page's browser test (`tests/status_page_browser_test.ts`), with the
 * system Chromium; never imported by the program or the library.
 * @module
 */
export { chromium } from "playwright-core";
export type { Browser, Page } from "playwright-core";
