/**
 * The sharing of registered peers' capability lists and metadata (src/core/intern.ts): equal values are one
 * frozen object, the original is never changed, and what is kept for sharing is bounded.
 *
 * @module
 */
import { assert, assertEquals, assertNotEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import { Interner, MAX_SHARED } from "../src/core/intern.ts";
import type { NodeInfo } from "../src/wire/mod.ts";

function node(capabilities: string[], metadata: Record<string, string>): NodeInfo {
  return {
    id: crypto.randomUUID(),
    name: "n",
    version: "1",
    listen_addr: "192.0.2.1:1",
    capabilities,
    metadata,
  };
}

Deno.test("equal capability lists and metadata are shared, frozen, and equal to what was declared", () => {
  const interner = new Interner();
  const a = node(["relay", "chat"], { network_id: "game" });
  const b = node(["relay", "chat"], { network_id: "game" });
  const sa = interner.node(a);
  const sb = interner.node(b);
  assertStrictEquals(sa.capabilities, sb.capabilities);
  assertStrictEquals(sa.metadata, sb.metadata);
  assertEquals(sa, a);
  assertStrictEquals(sa.id, a.id);
  assert(Object.isFrozen(sa.capabilities) && Object.isFrozen(sa.metadata));
  assertThrows(() => sa.capabilities.push("x"), TypeError);
  assertEquals(a.capabilities, ["relay", "chat"], "the declared value is left as it was");
  const other = interner.node(node(["chat", "relay"], { network_id: "game" }));
  assertNotEquals(other.capabilities, sa.capabilities, "another order is another list");
  assertStrictEquals(interner.node(node([], {})).capabilities, interner.node(node([], {})).capabilities);
});

Deno.test("at most MAX_SHARED distinct values are kept; past that each peer keeps its own", () => {
  const interner = new Interner();
  for (let i = 0; i < MAX_SHARED; i++) interner.node(node([`c${i}`], { network_id: `n${i}` }));
  const late = node(["late"], { network_id: "late" });
  const a = interner.node(late);
  const b = interner.node(node(["late"], { network_id: "late" }));
  assertNotEquals(a.capabilities, b.capabilities);
  assertStrictEquals(a.capabilities, late.capabilities, "not copied either");
  assertStrictEquals(interner.node(node(["c0"], { network_id: "n0" })).capabilities[0], "c0");
});
