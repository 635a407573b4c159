/**
 * The ops server's ring of recent events (`EventRing`): oldest first, bounded, the oldest overwritten once
 * full, and a drop merged into the newest entry even after the ring has wrapped.
 *
 * @module
 */
import { assertEquals } from "./deps/assert.ts";
import { EventRing } from "../src/ops_server.ts";

Deno.test("EventRing keeps the newest `capacity` events, oldest first, across wrap-arounds", () => {
  const ring = new EventRing(3);
  assertEquals(ring.list(), []);
  for (let i = 0; i < 7; i++) ring.push({ time: i * 2000, type: "join", addr: `a${i}` });
  assertEquals(ring.list().map((e) => e.addr), ["a4", "a5", "a6"]);
  ring.push({ time: 20_000, type: "drop", addr: "x", detail: "malformed" });
  ring.push({ time: 20_500, type: "drop", addr: "x", detail: "malformed" });
  ring.push({ time: 20_900, type: "drop", addr: "x", detail: "malformed" });
  assertEquals(ring.list().map((e) => [e.addr, e.count]), [["a5", 1], ["a6", 1], ["x", 3]]);
  ring.push({ time: 22_000, type: "drop", addr: "x", detail: "malformed" }); // over 1 s after: a new entry
  assertEquals(ring.list().map((e) => [e.addr, e.count]), [["a6", 1], ["x", 3], ["x", 1]]);
  const copy = ring.list();
  copy[0]!.count = 99;
  assertEquals(ring.list()[0]!.count, 1, "list() returns copies");
});
