/**
 * The NAT classification vocabulary (src/core/nat_class.ts): the wire's `nat` object written and read back,
 * and what a lenient read leaves out.
 *
 * @module
 */
import { assert, assertEquals } from "./deps/assert.ts";
import { isMeasured, natFromJson, natToJson, UNKNOWN_NAT } from "../src/core/nat_class.ts";

Deno.test("natToJson writes snake_case keys and leaves absent ones out; natFromJson reads it back", () => {
  const full = {
    mapping: "address-and-port-dependent",
    filtering: "address-dependent",
    portDelta: 2,
    bindingLifetimeMs: 30_000,
  } as const;
  assertEquals(natToJson(full), {
    mapping: "address-and-port-dependent",
    filtering: "address-dependent",
    port_delta: 2,
    binding_lifetime_ms: 30_000,
  });
  assertEquals(natFromJson(natToJson(full)), full);
  assertEquals(natToJson(UNKNOWN_NAT), { mapping: "unknown", filtering: "unknown" });
});

Deno.test("natFromJson reads unknown behaviours as unknown and drops out-of-range extras", () => {
  assertEquals(natFromJson({ mapping: "symmetric", filtering: 3 }), UNKNOWN_NAT);
  for (const port_delta of [0, 1.5, 70_000, -70_000, "2"]) {
    assertEquals(
      natFromJson({ mapping: "endpoint-independent", filtering: "unknown", port_delta }).portDelta,
      undefined,
    );
  }
  assertEquals(natFromJson({ mapping: "unknown", filtering: "unknown", port_delta: -3 }).portDelta, -3);
  for (const binding_lifetime_ms of [0, -1, 86_400_001, 2.5]) {
    const nat = natFromJson({ mapping: "unknown", filtering: "unknown", binding_lifetime_ms });
    assertEquals(nat.bindingLifetimeMs, undefined);
  }
  for (const value of [null, "nat", [], 7]) assertEquals(natFromJson(value), UNKNOWN_NAT);
});

Deno.test("isMeasured is true once either behaviour is known", () => {
  assert(!isMeasured(UNKNOWN_NAT));
  assert(isMeasured({ mapping: "unknown", filtering: "endpoint-independent" }));
  assert(isMeasured({ mapping: "address-dependent", filtering: "unknown" }));
});
