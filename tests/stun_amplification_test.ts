/**
 * STUN amplification on the real program (`tools/stun_amplification.ts`): every kind of STUN datagram the
 * tool knows, ten of each from its own loopback source, against `main.ts` in a subprocess. Every source stays
 * unvalidated, so every reply is to an unvalidated source: at most 3x the bytes it sent, and no answer larger
 * than its request plus the mapped address (what is left after the address is at most 1x), per source and
 * for their one IP; the server's counters account for every datagram as its kind expects (a success, a 420
 * or 400 error response, or a drop by its reason). The table docs/security.md#stun-amplification shows is
 * printed. About 2 s.
 *
 * @module
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { formatReport, measureStunAmplification, STUN_KINDS } from "../tools/stun_amplification.ts";

Deno.test("every STUN request kind: at most 3x back to an unvalidated source, and Binding answers within request + address", async () => {
  const report = await measureStunAmplification({ count: 10 });
  console.log(formatReport(report));
  assertEquals(report.failures, []);
  assertStrictEquals(report.rows.length, STUN_KINDS.length);
  for (const r of report.rows) {
    assertStrictEquals(r.sent, 10, r.kind);
    assert(r.ratio <= 3, `${r.kind}: ${r.ratio}x`);
    assert(r.ratioBeyondAddress <= 1, `${r.kind}: ${r.ratioBeyondAddress}x beyond the address`);
    if (r.outcome.startsWith("drop")) assertStrictEquals(r.bytesOut, 0, `${r.kind} is dropped unanswered`);
    else assertStrictEquals(r.answers, 10, `${r.kind} is answered`);
  }
  const big = report.rows.filter((r) => r.requestBytes > 1_000 && r.answers > 0);
  assert(big.length >= 2 && big.every((r) => r.answerBytes <= 100), "a big request gets a small answer");
  assert(report.perIp.ratio <= 3, `per IP ${report.perIp.ratio}x`);
  const outcomes = new Set(report.rows.map((r) => r.outcome));
  for (const o of ["success", "error 420", "error 400", "drop stun_malformed", "drop stun_unknown_method"]) {
    assert(outcomes.has(o as never), `no kind answered ${o}`);
  }
  assertStrictEquals(
    report.stun.requests,
    report.stun.responses + report.stun.errors.bad_request +
      report.stun.errors.unknown_attribute +
      10 * report.rows.filter((r) =>
          r.outcome === "drop stun_unknown_method" ||
          r.outcome === "drop stun_bad_fingerprint"
        ).length,
    JSON.stringify(report.stun),
  );
});
