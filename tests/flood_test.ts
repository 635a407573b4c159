/**
 * A bounded run of the flood tool (`tools/flood.ts`; `deno task flood` runs 5 s per scenario): the real
 * program in a subprocess takes 20,000 HandshakeRequests a second for 4 s from 64 ports on 127.0.0.1 that
 * never answer, while a `P2PClient` on 127.0.0.2 connects during the flood and sends 100 reliable Data
 * messages. Two configurations:
 *
 * - rate-limit: `rate_limit_exempt_loopback` false, so the per-IP buckets apply to the flood;
 * - cookies: the default loopback exemption and `cookie_threshold` 16, so the flood's half-open handshakes
 *   pass the threshold and cookies are required.
 *
 * Both must keep the legitimate client whole (every Ack and echo), the server's counters adding up (and
 * matching what was sent, less what the kernel dropped at its socket), every flood source at most 3x the
 * bytes it sent, and the server's memory within the bounds `runFlood` documents (RSS +256 MiB, heap in use
 * +96 MiB, heap after a GC +16 MiB over the pre-flood values). A flood slower than 20,000/s (a slow or busy
 * machine) is reported, not failed: no check depends on reaching the rate.
 *
 * The server's `handshake_timeout` is 2 s here (10 s by default) so that its last retransmissions to the
 * flood sockets, which the amplification count waits for, end soon after the flood: each scenario takes
 * about 7 s.
 *
 * @module
 */
import { assert, assertEquals } from "./deps/assert.ts";
import {
  type FloodCheck,
  type FloodReport,
  type FloodScenario,
  formatFloodReport,
  runFlood,
} from "../tools/flood.ts";

const RATE = 20_000;
const SECONDS = 4;
const LEGIT_MESSAGES = 100;
const COOKIE_THRESHOLD = 16;

/**
 * Checks a scenario may fail without failing its main test (none now: the two bugs the flood found, a
 * challenged request that still registered and re-registrations that skipped the handshake limit, are fixed
 * and asserted by the last two tests).
 */
const KNOWN_BUGS: Record<FloodScenario, FloodCheck[]> = {
  "rate-limit": [],
  cookies: [],
};

const runs = new Map<FloodScenario, Promise<FloodReport>>();

/** One flood per scenario, shared by the tests that look at it. */
function flood(scenario: FloodScenario): Promise<FloodReport> {
  let run = runs.get(scenario);
  if (!run) {
    run = runFlood({
      scenario,
      rate: RATE,
      seconds: SECONDS,
      sockets: 64,
      legitMessages: LEGIT_MESSAGES,
      cookieThreshold: COOKIE_THRESHOLD,
      handshakeTimeout: 2,
    });
    runs.set(scenario, run);
  }
  return run;
}

/**
 * Asserts that no check but the scenario's {@linkcode KNOWN_BUGS} failed; prints the whole summary when one
 * did, and a hint when a known bug's check held.
 */
function assertPassed(report: FloodReport): void {
  const known = KNOWN_BUGS[report.scenario];
  const failed = report.failures.filter((f) => !known.includes(f.check));
  if (failed.length > 0) console.log(formatFloodReport(report));
  assertEquals(failed, [], `flood ${report.scenario} failed:\n${formatFloodReport(report)}`);
  const held = known.filter((c) => !report.failures.some((f) => f.check === c));
  if (held.length > 0) {
    console.log(
      `${
        held.join(", ")
      } held in this run: once its bug is fixed, take it out of KNOWN_BUGS and un-ignore its test`,
    );
  }
}

/** One line of numbers per run, for the test log. */
function summary(r: FloodReport): string {
  const s = r.server.stats!;
  const m = r.memory;
  const l = r.legit;
  const rise = (a: number, b: number) => `+${((a - b) / 1024 / 1024).toFixed(0)} MiB`;
  const slow = r.flood.slow ? " (SLOW)" : "";
  const rss = rise(m.peak.rss, m.baseline!.rss);
  const heap = rise(m.peak.heapUsed, m.baseline!.heapUsed);
  const afterGc = rise(m.heapAfterGc!.after, m.heapAfterGc!.before);
  return [
    `${r.scenario}: flood ${r.flood.sent} at ${Math.round(r.flood.achievedRate)}/s${slow}`,
    `generator CPU ${r.flood.cpu.percentOfCore.toFixed(0)}%`,
    `server received ${s.datagramsReceived}, kernel drops ${r.server.kernelDrops}`,
    `rate_limited ${s.drops.rate_limited} of ${s.droppedTotal} drops, challenges ${s.cookieChallenges}`,
    `peers max ${r.peers.maxTotal}, amplification max ${r.amplification.maxRatio.toFixed(2)}`,
    `RSS ${rss}, heap ${heap}, heap after GC ${afterGc}`,
    `legit handshake ${l.handshakeMs?.toFixed(0)} ms, ${l.acked} acked, ${l.echoed} echoed, ` +
    `${l.retransmissions} retransmissions, done ${l.doneAtMs} ms into the flood`,
    `known failures: ${[...new Set(r.failures.map((f) => f.check))].join(", ") || "none"}`,
  ].join("; ");
}

Deno.test({
  name:
    `flood with per-IP limits on loopback: ${RATE}/s HandshakeRequests for ${SECONDS} s are mostly dropped ` +
    "as rate_limited; a client on 127.0.0.2 gets every Ack and echo; counters add up; at most 3x back; " +
    "memory bounded",
  fn: async () => {
    const report = await flood("rate-limit");
    console.log(summary(report));
    assertPassed(report);
    const s = report.server.stats!;
    assert(s.drops.rate_limited > 0, "nothing was rate limited");
    assertEquals([report.legit.acked, report.legit.echoed], [LEGIT_MESSAGES, LEGIT_MESSAGES]);
    assert(report.amplification.maxRatio <= 3, `amplification ${report.amplification.maxRatio}`);
  },
});

Deno.test({
  name:
    `flood past cookie_threshold ${COOKIE_THRESHOLD}: cookies are required; a client on 127.0.0.2 still ` +
    "gets in and gets every Ack and echo; counters add up; at most 3x back; memory bounded",
  fn: async () => {
    const report = await flood("cookies");
    console.log(summary(report));
    assertPassed(report);
    const s = report.server.stats!;
    assert(s.cookieChallenges > 0, "no cookie challenge");
    assertEquals([report.legit.acked, report.legit.echoed], [LEGIT_MESSAGES, LEGIT_MESSAGES]);
    assert(report.amplification.maxRatio <= 3, `amplification ${report.amplification.maxRatio}`);
  },
});

// Regression: a challenged HandshakeRequest once went on to be acknowledged and registered, so every flood
// source registered. Sources that never answer a challenge must never register.
Deno.test({
  name: `flood past cookie_threshold ${COOKIE_THRESHOLD}: sources that never answer a challenge never ` +
    "register, so the peer table stays at the threshold; the client comes in with its cookie",
  fn: async () => {
    const report = await flood("cookies");
    assertEquals(report.failures.filter((f) => f.check === "cookie-wall"), [], formatFloodReport(report));
    assert(report.peers.registeredSources <= COOKIE_THRESHOLD);
    assert(report.server.stats!.cookiesAccepted >= 1);
  },
});

// Regression: a HandshakeRequest from an address that already held a half-open peer once skipped the per-IP
// handshake bucket (and the cookie check) and replaced that peer, 11,000-14,000 registrations in 4-5 s from
// one IP. Every new request must count against rate_limit_handshakes_per_ip.
Deno.test({
  name: "flood with per-IP limits on loopback: registrations answered to one IP stay within " +
    "rate_limit_handshakes_per_ip",
  fn: async () => {
    const report = await flood("rate-limit");
    assertEquals(report.failures.filter((f) => f.check === "handshake-limit"), [], formatFloodReport(report));
  },
});
