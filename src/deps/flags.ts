/**
 * Command-line flag parsing. One module so the parser can be swapped (for example back to `jsr:@std/cli`)
 * in one place.
 * @module
 */
export { parseArgs } from "node:util";
