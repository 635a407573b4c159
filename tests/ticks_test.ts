/**
 * Periodic work as core deadlines (`Endpoint.every`): named ticks in the timer table's `ticks` lane, reported
 * as `tick` events, without drift, skipping the periods a stalled process missed.
 */
import { assertEquals } from "./deps/assert.ts";
import { Endpoint } from "../src/core/endpoint.ts";
import { resolveConfig } from "../src/config.ts";
import { nodeInfo } from "./sim.ts";

const T0 = 1_800_000_000_000;

function endpoint(): Endpoint {
  return new Endpoint({
    role: "server",
    config: resolveConfig({}),
    node: nodeInfo(crypto.randomUUID()),
    newId: () => crypto.randomUUID(),
    now: T0,
  });
}

/** Runs the endpoint's deadlines up to `until` (each at its own time), returning the ticks as [ms, name]. */
function runTo(ep: Endpoint, until: number): [number, string][] {
  const out: [number, string][] = [];
  for (let at = ep.nextDeadline(); at <= until; at = ep.nextDeadline()) {
    ep.handleTimeout(at);
    for (const e of ep.takeEvents()) if (e.type === "tick") out.push([at - T0, e.name]);
  }
  return out;
}

Deno.test("ticks fire every period at their exact times, each name on its own, and wake the endpoint", () => {
  const ep = endpoint();
  ep.every(T0, "stats", 1_000);
  ep.every(T0, "history", 300);
  assertEquals(ep.nextDeadline(), T0 + 300);
  assertEquals(runTo(ep, T0 + 1_000), [
    [300, "history"],
    [600, "history"],
    [900, "history"],
    [1_000, "stats"],
  ]);
});

Deno.test("a tick can be replaced and cancelled; shutdown cancels every tick", () => {
  const ep = endpoint();
  ep.every(T0, "a", 1_000);
  ep.every(T0 + 500, "a", 200);
  assertEquals(runTo(ep, T0 + 1_000), [[700, "a"], [900, "a"]]);
  ep.every(T0 + 1_000, "a", 0);
  ep.every(T0 + 1_000, "b", Infinity);
  assertEquals(ep.nextDeadline(), Infinity);
  ep.every(T0 + 1_000, "c", 100);
  ep.shutdown(T0 + 1_000, "bye");
  assertEquals(ep.nextDeadline(), Infinity);
});

Deno.test("a process stalled past several periods gets one tick, and the next stays on the grid", () => {
  const ep = endpoint();
  ep.every(T0, "stats", 1_000);
  ep.handleTimeout(T0 + 3_500);
  assertEquals(ep.takeEvents().filter((e) => e.type === "tick").length, 1);
  assertEquals(ep.nextDeadline(), T0 + 4_000);
});
