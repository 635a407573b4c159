/**
 * Browser automation for the status page's browser test (`tests/status_page_browser_test.ts`), with the
 * system Chromium; never imported by the program or the library.
 * @module
 */
export { chromium } from "npm:playwright-core@1.65.1";
export type { Browser, Page } from "npm:playwright-core@1.65.1";
