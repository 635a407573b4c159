/**
 * Assertions for tests and doc examples (`node:assert/strict`, built into Deno). One module so a switch to
 * `jsr:@std/assert` is a one-line change.
 * @module
 */
export {
  deepStrictEqual as assertEquals,
  match as assertMatch,
  notStrictEqual as assertNotEquals,
  ok as assert,
  rejects as assertRejects,
  strictEqual as assertStrictEquals,
  throws as assertThrows,
} from "node:assert/strict";
