/**
 * The per-pair connection strategy (src/core/strategy.ts): the table row by row, its symmetry over every
 * pair of classifications, the predicted probe targets and the shared start delay.
 *
 * @module
 */
import { assertEquals } from "./deps/assert.ts";
import { NAT_BEHAVIOURS, type NatClass, UNKNOWN_NAT } from "../src/core/nat_class.ts";
import {
  chooseStrategy,
  MAX_START_DELAY_MS,
  PREDICTED_PORTS,
  probeTargets,
  startDelay,
  STRATEGIES,
} from "../src/core/strategy.ts";

const EI = "endpoint-independent";
const AD = "address-dependent";
const APD = "address-and-port-dependent";

/** The NAT bed's kinds, as classification would report them. */
const PORT_RESTRICTED: NatClass = { mapping: EI, filtering: APD };
const FULL_CONE: NatClass = { mapping: EI, filtering: EI };
const RESTRICTED: NatClass = { mapping: EI, filtering: AD };
const SYMMETRIC: NatClass = { mapping: APD, filtering: APD };
const SEQUENTIAL: NatClass = { mapping: APD, filtering: APD, portDelta: 1 };

Deno.test("chooseStrategy: the table, row by row", () => {
  const rows: [NatClass, NatClass, string][] = [
    [UNKNOWN_NAT, SYMMETRIC, "direct"],
    [{ mapping: APD, filtering: "unknown" }, SYMMETRIC, "direct"],
    [PORT_RESTRICTED, PORT_RESTRICTED, "direct"],
    [FULL_CONE, PORT_RESTRICTED, "direct"],
    [FULL_CONE, SYMMETRIC, "direct"],
    [RESTRICTED, SYMMETRIC, "direct"],
    [PORT_RESTRICTED, SEQUENTIAL, "predict"],
    [PORT_RESTRICTED, SYMMETRIC, "relay"],
    [SEQUENTIAL, { ...SEQUENTIAL, portDelta: 2 }, "predict"],
    [{ mapping: AD, filtering: EI }, { mapping: APD, filtering: AD }, "simultaneous"],
    [{ mapping: AD, filtering: EI }, SYMMETRIC, "relay"],
    [SEQUENTIAL, SYMMETRIC, "relay"],
    [SYMMETRIC, SYMMETRIC, "relay"],
  ];
  for (const [a, b, want] of rows) {
    assertEquals(chooseStrategy(a, b), want, `${JSON.stringify(a)} / ${JSON.stringify(b)}`);
  }
});

Deno.test("chooseStrategy is symmetric over every pair of classifications, and only known pairs leave direct", () => {
  const all: NatClass[] = [];
  for (const mapping of NAT_BEHAVIOURS) {
    for (const filtering of NAT_BEHAVIOURS) {
      all.push({ mapping, filtering });
      if (mapping !== EI) all.push({ mapping, filtering, portDelta: 2 });
    }
  }
  const seen = new Set<string>();
  for (const a of all) {
    for (const b of all) {
      const s = chooseStrategy(a, b);
      assertEquals(chooseStrategy(b, a), s, `${JSON.stringify(a)} / ${JSON.stringify(b)}`);
      seen.add(s);
      const unknown = [a.mapping, a.filtering, b.mapping, b.filtering].includes("unknown");
      if (unknown) assertEquals(s, "direct");
    }
  }
  assertEquals([...seen].sort(), [...STRATEGIES].sort(), "every strategy is reachable");
});

Deno.test("probeTargets: predicted ports first under predict, the candidates unchanged otherwise", () => {
  const observed = { hostname: "203.0.113.7", port: 40_000 };
  const declared = { hostname: "10.0.0.2", port: 5_000 };
  assertEquals(probeTargets("direct", SEQUENTIAL, [observed, declared]), [observed, declared]);
  assertEquals(
    probeTargets("predict", SYMMETRIC, [observed]),
    [observed],
    "no step known: nothing predicted",
  );
  const got = probeTargets("predict", { ...SEQUENTIAL, portDelta: 2 }, [observed, declared]);
  assertEquals(got.length, PREDICTED_PORTS + 2);
  assertEquals(got.slice(0, PREDICTED_PORTS).map((a) => a.port), [40_002, 40_004, 40_006, 40_008]);
  assertEquals(got.slice(PREDICTED_PORTS), [observed, declared]);
  const top = probeTargets("predict", SEQUENTIAL, [{ hostname: "203.0.113.7", port: 65_534 }]);
  assertEquals(top.map((a) => a.port), [65_535, 65_534], "ports beyond 65,535 are left out");
  assertEquals(probeTargets("predict", SEQUENTIAL, []), []);
});

Deno.test("startDelay: only simultaneous and predict wait, cut to 0..MAX_START_DELAY_MS", () => {
  assertEquals(startDelay("direct", 300), 0);
  assertEquals(startDelay("relay", 300), 0);
  assertEquals(startDelay("simultaneous", 300), 300);
  assertEquals(startDelay("predict", 12.4), 12);
  assertEquals(startDelay("simultaneous", 1e9), MAX_START_DELAY_MS);
  assertEquals(startDelay("simultaneous", -5), 0);
  assertEquals(startDelay("simultaneous", "300"), 0);
  assertEquals(startDelay("predict", undefined), 0);
  assertEquals(startDelay("predict", NaN), 0);
});
