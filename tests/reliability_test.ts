import { assert, assertEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import type { FragmentRef, MessageType } from "../src/wire/mod.ts";
import {
  type Budget,
  EMPTY_OUTBOX,
  EMPTY_WINDOW,
  MAX_ORDERED_HELD,
  MAX_PARTIAL_PER_PEER,
  MAX_QUEUED_BYTES_PER_PEER,
  MAX_QUEUED_PER_PEER,
  MAX_REL_SPAN,
  OrderedInbox,
  Outbox,
  type Pending,
  type Queued,
  Reassembler,
  RECEIVE_WINDOW,
  ReceiveWindow,
  RTT_GRANULARITY_MS,
  RttEstimator,
  SEND_WINDOW,
  SendQueue,
  SharedWindow,
  windowAfter,
} from "../src/core/reliability.ts";
import { mulberry32 } from "./sim.ts";
import {
  newConn,
  outboxOf,
  recordingWindow,
  releaseOutbox,
  restartWindow,
  windowFor,
} from "../src/core/peers.ts";
import { FRAGMENT_COST, impliedSize, PARTIAL_COST } from "../src/core/reassembly.ts";

const U32 = 0x1_0000_0000;

/** A Pending with sensible defaults; `id`, `seq` and `rel` default to values derived from each other. */
function pending(fields: Partial<Pending> & { id: string }): Pending {
  const seq = fields.seq ?? 1;
  return {
    seq,
    rel: seq,
    type: "Data",
    bytes: new Uint8Array([1]),
    firstSentAt: 0,
    lastSentAt: 0,
    askedAt: -Infinity,
    tries: 1,
    nextAt: 500,
    giveUpAt: Infinity,
    schedule: null,
    parent: null,
    ord: null,
    ...fields,
  };
}

/** A queued message of `size` bytes. */
function queued(id: string, size = 10, type: MessageType = "Data"): Queued {
  return {
    id,
    type,
    payload: id,
    ord: null,
    frag: null,
    parentOrd: null,
    schedule: null,
    deadlineMs: 5_000,
    size,
  };
}

function freshBudget(limit = 1_000_000): Budget {
  return { used: 0, limit };
}

/** `n` bytes, every one equal to `value`. */
function fill(n: number, value: number): Uint8Array {
  return new Uint8Array(n).fill(value);
}

const MSG_A = "aaaaaaaa-aaaa-4aaa-8aaa-aaaaaaaaaaaa";
const MSG_B = "bbbbbbbb-bbbb-4bbb-8bbb-bbbbbbbbbbbb";

function ref(of: string, i: number, n: number): FragmentRef {
  return { of, i, n };
}

// --- ReceiveWindow ---------------------------------------------------------------------------------------

Deno.test("a shared window reads as a fresh one that saw the same number, is never written, and is copied to record", () => {
  for (const first of [null, 0, 1, 63, 64, 0xffffffff]) {
    const fresh = new ReceiveWindow();
    if (first !== null) fresh.accept(first);
    const shared = first === null ? EMPTY_WINDOW : windowAfter(first);
    assertStrictEquals(shared instanceof SharedWindow, first === null || first < 64, `${first}`);
    assertStrictEquals(shared.highest, fresh.highest);
    for (const probe of [0, 1, 2, 62, 63, 64, 65, 1_024, 0xffffffff, 0xfffffffe]) {
      assertStrictEquals(shared.isNew(probe), fresh.isNew(probe), `${first} isNew ${probe}`);
      assertStrictEquals(shared.has(probe), fresh.has(probe), `${first} has ${probe}`);
    }
  }
  assertStrictEquals(windowAfter(1), windowAfter(1), "one shared window per number");
  assertThrows(() => windowAfter(1).accept(2), Error, "shared receive window");
  assertThrows(() => EMPTY_WINDOW.reset(), Error, "shared receive window");
  const conn = newConn("192.0.2.1:1", { hostname: "192.0.2.1", port: 1 }, 0);
  assertStrictEquals(conn.window, EMPTY_WINDOW);
  restartWindow(conn, 1);
  assertStrictEquals(windowFor(conn, undefined), windowAfter(1), "a peer that only handshook shares it");
  const own = recordingWindow(conn, undefined);
  assert(!(own instanceof SharedWindow) && conn.window === own);
  assert(!own.accept(1), "the copy has seen 1");
  assert(own.accept(2));
  assertStrictEquals(windowAfter(1).highest, 1, "the shared one is unchanged");
  restartWindow(conn, null);
  assertStrictEquals(conn.window, EMPTY_WINDOW);
});

Deno.test("ReceiveWindow accepts a new sequence number once", () => {
  const w = new ReceiveWindow();
  assert(w.accept(5));
  assert(!w.accept(5));
  assert(w.accept(6));
  assert(!w.accept(6));
  assert(!w.accept(5));
});

Deno.test("ReceiveWindow accepts out-of-order numbers inside the window exactly once", () => {
  const w = new ReceiveWindow();
  assert(w.accept(100));
  assert(w.accept(90));
  assert(!w.accept(90));
  assert(w.accept(99));
  assert(w.accept(110));
  assert(w.accept(101));
  assert(!w.accept(101));
  assert(!w.accept(100));
});

Deno.test("ReceiveWindow treats numbers more than RECEIVE_WINDOW below the highest as duplicates", () => {
  const w = new ReceiveWindow();
  assert(w.accept(5_000));
  assert(!w.accept(5_000 - RECEIVE_WINDOW), "just beyond the window");
  assert(w.accept(5_000 - RECEIVE_WINDOW + 1), "the oldest slot inside the window");
  assert(!w.accept(5_000 - RECEIVE_WINDOW + 1));
  assert(!w.accept(0));
});

Deno.test("ReceiveWindow survives u32 wrap-around", () => {
  const w = new ReceiveWindow();
  assert(w.accept(0xffff_fffd));
  assert(w.accept(0xffff_ffff));
  assert(w.accept(0), "0 follows 0xffffffff");
  assert(w.accept(1));
  assert(w.accept(0xffff_fffe), "a late number from before the wrap is still new");
  assert(!w.accept(0xffff_ffff));
  assert(!w.accept(0xffff_fffd));
  assert(!w.accept(0));
  assert(!w.accept(1));
  assert(w.accept(2));
});

Deno.test("ReceiveWindow forgets slots it moved past: a jump clears stale bits", () => {
  const w = new ReceiveWindow();
  assert(w.accept(1));
  assert(w.accept(1 + RECEIVE_WINDOW), "the same bit slot, one window later");
  assert(w.accept(2 + RECEIVE_WINDOW));
  assert(w.accept(1 + 10 * RECEIVE_WINDOW), "a jump of many windows");
  assert(w.accept(2 + 9 * RECEIVE_WINDOW), "inside the window after the jump and never seen");
  assert(!w.accept(2 + RECEIVE_WINDOW), "far behind now");
});

Deno.test("ReceiveWindow.reset starts a new session", () => {
  const w = new ReceiveWindow();
  assert(w.accept(7));
  w.reset();
  assert(w.accept(7));
  assert(w.accept(1));
});

Deno.test("ReceiveWindow agrees with a reference model on seeded random streams", () => {
  for (const seed of [1, 2, 3]) {
    const rand = mulberry32(seed);
    const w = new ReceiveWindow();
    const seen = new Set<number>();
    let highest = Math.floor(rand() * U32);
    assert(w.accept(highest));
    seen.add(highest);
    for (let i = 0; i < 20_000; i++) {
      // Mostly forward, sometimes back inside the window, sometimes repeats; crosses the wrap often.
      const r = rand();
      const delta = r < 0.6 ? 1 + Math.floor(rand() * 8) : r < 0.95 ? -Math.floor(rand() * 1_100) : 0;
      const seq = (highest + delta + U32) % U32;
      const distance = ((seq - highest + U32 + U32 / 2) % U32) - U32 / 2;
      const expected = distance > 0 || (distance > -RECEIVE_WINDOW && !seen.has(seq));
      assertStrictEquals(w.accept(seq), expected, `seed ${seed} step ${i}: seq ${seq} highest ${highest}`);
      if (expected) seen.add(seq);
      if (distance > 0) highest = seq;
      assertStrictEquals(w.highest, highest, `seed ${seed} step ${i}: highest`);
    }
  }
});

Deno.test("ReceiveWindow.highest is -1 before the first number and follows the serial-number maximum", () => {
  const w = new ReceiveWindow();
  assertStrictEquals(w.highest, -1);
  assert(w.accept(10));
  assertStrictEquals(w.highest, 10);
  assert(w.accept(5));
  assertStrictEquals(w.highest, 10, "a late number does not move it");
  assert(w.accept(12));
  assertStrictEquals(w.highest, 12);
  assert(w.accept(0xffff_fff0));
  assertStrictEquals(w.highest, 12, "0xfffffff0 is behind 12 in serial arithmetic");
  w.reset();
  assertStrictEquals(w.highest, -1);
  assert(w.accept(0xffff_ffff));
  assert(w.accept(3));
  assertStrictEquals(w.highest, 3, "across the wrap");
});

Deno.test("ReceiveWindow.has reports exactly the accepted numbers inside the window", () => {
  const w = new ReceiveWindow();
  assert(!w.has(0));
  assert(!w.has(1));
  assert(w.accept(100));
  assert(w.has(100), "the only number, before the bitmap exists");
  assert(!w.has(99));
  assert(!w.has(101), "ahead of the highest");
  assert(w.accept(98));
  assert(w.has(98));
  assert(!w.has(99), "a gap");
  assert(w.has(100));
  assert(w.accept(103));
  assert(w.has(103));
  assert(!w.has(101));
  assert(!w.has(102));
  assert(w.has(100), "still remembered after the highest moved");
  assert(w.has(98));
  assert(!w.has(104));
  assert(!w.has(103 + 0x7fff_ffff), "far ahead");
  assert(!w.has(103 - RECEIVE_WINDOW), "outside the window");
  // Move the window past 98: it falls out even though it was accepted.
  assert(w.accept(98 + RECEIVE_WINDOW));
  assert(!w.has(98));
  assert(w.has(100));
  assert(w.has(98 + RECEIVE_WINDOW));
  w.reset();
  assert(!w.has(100));
  assert(!w.has(98 + RECEIVE_WINDOW));
});

Deno.test("ReceiveWindow.has across u32 wrap-around", () => {
  const w = new ReceiveWindow();
  assert(w.accept(0xffff_fffe));
  assert(w.accept(1));
  assert(w.has(0xffff_fffe));
  assert(!w.has(0xffff_ffff));
  assert(!w.has(0));
  assert(w.has(1));
  assert(!w.has(2));
  assert(w.accept(0));
  assert(w.has(0));
});

Deno.test("ReceiveWindow.has agrees with accept on a seeded random stream", () => {
  const rand = mulberry32(42);
  const w = new ReceiveWindow();
  const start = 0xffff_f000;
  assert(w.accept(start));
  for (let i = 0; i < 5_000; i++) {
    const seq = (start + Math.floor(rand() * 8_192) - 512 + U32) % U32;
    const before = w.has(seq);
    const accepted = w.accept(seq);
    if (accepted) assert(!before, `step ${i}: ${seq} accepted though has() said so`);
    // After accept, the number is known exactly when it is inside the window.
    const distance = (seq - w.highest) | 0;
    assertStrictEquals(w.has(seq), distance <= 0 && -distance < RECEIVE_WINDOW, `step ${i}: has(${seq})`);
    assertStrictEquals(w.accept(seq), false, `step ${i}: a second accept of ${seq}`);
  }
});

// --- RttEstimator ----------------------------------------------------------------------------------------

const BOUNDS = { initialMs: 500, minMs: 10, maxMs: 2_000 };

Deno.test("RttEstimator before any sample returns the initial timeout, clamped", () => {
  const rtt = new RttEstimator();
  assertStrictEquals(rtt.samples, 0);
  assertStrictEquals(rtt.srtt, 0);
  assertStrictEquals(rtt.rttvar, 0);
  assertStrictEquals(rtt.rto(BOUNDS), 500);
  assertStrictEquals(rtt.rto({ initialMs: 5_000, minMs: 10, maxMs: 2_000 }), 2_000, "clamped to max");
  assertStrictEquals(rtt.rto({ initialMs: 5, minMs: 10, maxMs: 2_000 }), 10, "clamped to min");
});

Deno.test("RttEstimator: the first sample sets srtt = R and rttvar = R/2", () => {
  const rtt = new RttEstimator();
  rtt.sample(100);
  assertStrictEquals(rtt.samples, 1);
  assertStrictEquals(rtt.srtt, 100);
  assertStrictEquals(rtt.rttvar, 50);
  assertStrictEquals(rtt.rto(BOUNDS), 300, "100 + 4 * 50");
});

Deno.test("RttEstimator: later samples use gains 1/8 (srtt) and 1/4 (rttvar), variance from the old srtt", () => {
  const rtt = new RttEstimator();
  rtt.sample(100);
  rtt.sample(200);
  // rttvar = 3/4 * 50 + 1/4 * |100 - 200| = 62.5; srtt = 7/8 * 100 + 1/8 * 200 = 112.5
  assertStrictEquals(rtt.rttvar, 62.5);
  assertStrictEquals(rtt.srtt, 112.5);
  assertStrictEquals(rtt.rto(BOUNDS), 362.5);
  rtt.sample(48.5);
  // rttvar = 3/4 * 62.5 + 1/4 * |112.5 - 48.5| = 46.875 + 16 = 62.875; srtt = 98.4375 + 6.0625 = 104.5
  assertStrictEquals(rtt.rttvar, 62.875);
  assertStrictEquals(rtt.srtt, 104.5);
  assertStrictEquals(rtt.rto(BOUNDS), 104.5 + 4 * 62.875);
  assertStrictEquals(rtt.samples, 3);
});

Deno.test("RttEstimator converges on a constant RTT and the variance term bottoms out at the granularity", () => {
  const rtt = new RttEstimator();
  for (let i = 0; i < 400; i++) rtt.sample(40);
  assertStrictEquals(rtt.srtt, 40);
  assert(rtt.rttvar < 1e-9, `rttvar ${rtt.rttvar}`);
  assertStrictEquals(rtt.rto({ initialMs: 500, minMs: 0, maxMs: 2_000 }), 40 + RTT_GRANULARITY_MS);
  assertStrictEquals(rtt.rto(BOUNDS), 41);
  assertStrictEquals(rtt.rto({ initialMs: 500, minMs: 100, maxMs: 2_000 }), 100, "clamped to min");
});

Deno.test("RttEstimator: a zero first sample gives srtt + G, then the floor", () => {
  const rtt = new RttEstimator();
  rtt.sample(0);
  assertStrictEquals(rtt.srtt, 0);
  assertStrictEquals(rtt.rttvar, 0);
  assertStrictEquals(rtt.rto({ initialMs: 500, minMs: 0, maxMs: 2_000 }), RTT_GRANULARITY_MS);
  assertStrictEquals(rtt.rto(BOUNDS), 10);
});

Deno.test("RttEstimator clamps a large timeout to the maximum", () => {
  const rtt = new RttEstimator();
  rtt.sample(1_000);
  assertStrictEquals(rtt.rto(BOUNDS), 2_000, "1000 + 4 * 500 = 3000, clamped");
  assertStrictEquals(rtt.rto({ initialMs: 500, minMs: 10, maxMs: 60_000 }), 3_000);
  assertStrictEquals(rtt.rto({ initialMs: 500, minMs: 10, maxMs: 3_000 }), 3_000, "exactly the max");
});

// --- Outbox ----------------------------------------------------------------------------------------------

Deno.test("Outbox starts empty", () => {
  const o = new Outbox();
  assertStrictEquals(o.size, 0);
  assertStrictEquals(o.nextDeadline(), Infinity);
  assertEquals(o.due(1e12), []);
  assertEquals(o.drain(), []);
  assertStrictEquals(o.acknowledge("x"), undefined);
  assertStrictEquals(o.acknowledge(1), undefined);
  assertStrictEquals(o.findType("Data"), undefined);
  assertStrictEquals(o.settleType("Data"), undefined);
  assertStrictEquals(o.bySeq(1), undefined);
  assertStrictEquals(o.byRel(1), undefined);
  assertEquals(o.byParent("p"), []);
  assert(o.hasRoom(0));
  o.remove("nothing");
  assertStrictEquals(o.size, 0);
});

Deno.test("a connection holds the shared empty outbox until a message waits, and gives its own back once none does", () => {
  const conn = newConn("192.0.2.1:1", { hostname: "192.0.2.1", port: 1 }, 0);
  assertStrictEquals(conn.outbox, EMPTY_OUTBOX);
  assertThrows(() => EMPTY_OUTBOX.add(pending({ id: "shared" })), Error, "shared empty outbox");
  assertStrictEquals(EMPTY_OUTBOX.size, 0);
  const own = outboxOf(conn);
  assert(own !== EMPTY_OUTBOX);
  own.add(pending({ id: "a", seq: 1 }));
  assertStrictEquals(outboxOf(conn), own, "the same one while it is in use");
  releaseOutbox(conn);
  assertStrictEquals(conn.outbox, own, "kept while a message waits");
  assertStrictEquals(conn.outbox.acknowledge("a")?.id, "a");
  releaseOutbox(conn);
  assertStrictEquals(conn.outbox, EMPTY_OUTBOX);
});

Deno.test("Outbox add, remove and size; remove of an unknown id is harmless", () => {
  const o = new Outbox();
  const a = pending({ id: "a", seq: 1 });
  o.add(a);
  o.add(pending({ id: "b", seq: 2 }));
  assertStrictEquals(o.size, 2);
  assertStrictEquals(o.bySeq(1), a, "the same object is held");
  o.remove("zzz");
  assertStrictEquals(o.size, 2);
  o.remove("a");
  assertStrictEquals(o.size, 1);
  assertStrictEquals(o.bySeq(1), undefined);
  o.remove("b");
  assertStrictEquals(o.size, 0);
  o.remove("b");
  assertStrictEquals(o.size, 0);
  o.add(pending({ id: "c", seq: 3 }));
  assertStrictEquals(o.size, 1, "usable again after emptying");
});

Deno.test("Outbox acknowledges by id (any case) or by sequence number, once", () => {
  const o = new Outbox();
  const id = "7d444840-9dc0-41d1-b245-5ffdce74fad2";
  o.add(pending({ id, seq: 1 }));
  o.add(pending({ id: "b", seq: 2 }));
  assertStrictEquals(o.acknowledge(id.toUpperCase())?.seq, 1);
  assertStrictEquals(o.acknowledge(id), undefined);
  assertStrictEquals(o.acknowledge(2)?.id, "b");
  assertStrictEquals(o.acknowledge(2), undefined);
  assertStrictEquals(o.acknowledge("b"), undefined);
  assertStrictEquals(o.size, 0);
});

Deno.test("Outbox settleType and findType take the first message of a type", () => {
  const o = new Outbox();
  o.add(pending({ id: "r", seq: 1, type: "HandshakeResponse" }));
  o.add(pending({ id: "d1", seq: 2, type: "Data" }));
  o.add(pending({ id: "d2", seq: 3, type: "Data" }));
  assertStrictEquals(o.findType("Data")?.id, "d1");
  assertStrictEquals(o.size, 3, "findType leaves it in place");
  assertStrictEquals(o.findType("Ping"), undefined);
  assertStrictEquals(o.settleType("HandshakeResponse")?.id, "r");
  assertStrictEquals(o.settleType("HandshakeResponse"), undefined);
  assertStrictEquals(o.settleType("Data")?.id, "d1");
  assertStrictEquals(o.findType("Data")?.id, "d2");
  assertStrictEquals(o.size, 1);
});

Deno.test("Outbox bySeq, byRel and byParent", () => {
  const o = new Outbox();
  o.add(pending({ id: "x", seq: 10, rel: 100 }));
  o.add(pending({ id: "f0", seq: 11, rel: 101, parent: "whole" }));
  o.add(pending({ id: "f1", seq: 12, rel: 102, parent: "whole" }));
  o.add(pending({ id: "g0", seq: 13, rel: 103, parent: "other" }));
  assertStrictEquals(o.bySeq(10)?.id, "x");
  assertStrictEquals(o.bySeq(100), undefined, "bySeq does not look at rel");
  assertStrictEquals(o.byRel(100)?.id, "x");
  assertStrictEquals(o.byRel(10), undefined, "byRel does not look at seq");
  assertStrictEquals(o.byRel(103)?.id, "g0");
  assertEquals(o.byParent("whole").map((p) => p.id), ["f0", "f1"]);
  assertEquals(o.byParent("other").map((p) => p.id), ["g0"]);
  assertEquals(o.byParent("none"), []);
  o.acknowledge(11);
  assertEquals(o.byParent("whole").map((p) => p.id), ["f1"]);
  assertStrictEquals(o.size, 3, "lookups leave messages in place");
});

Deno.test("Outbox nextDeadline and due follow nextAt; due leaves messages in place", () => {
  const o = new Outbox();
  o.add(pending({ id: "a", seq: 1, nextAt: 300 }));
  o.add(pending({ id: "b", seq: 2, nextAt: 100 }));
  o.add(pending({ id: "c", seq: 3, nextAt: 200 }));
  assertStrictEquals(o.nextDeadline(), 100);
  assertEquals(o.due(99), []);
  assertEquals(o.due(100).map((p) => p.id), ["b"]);
  assertEquals(o.due(250).map((p) => p.id).sort(), ["b", "c"]);
  assertEquals(o.due(300).map((p) => p.id).sort(), ["a", "b", "c"]);
  assertStrictEquals(o.size, 3);
  // The caller moves a resent message's deadline in place.
  o.bySeq(2)!.nextAt = 1_000;
  assertStrictEquals(o.nextDeadline(), 200);
  o.acknowledge("c");
  assertStrictEquals(o.nextDeadline(), 300);
  o.acknowledge("a");
  assertStrictEquals(o.nextDeadline(), 1_000);
  o.acknowledge("b");
  assertStrictEquals(o.nextDeadline(), Infinity);
});

Deno.test("Outbox drain removes and returns everything", () => {
  const o = new Outbox();
  o.add(pending({ id: "a", seq: 1 }));
  o.add(pending({ id: "b", seq: 2 }));
  assertEquals(o.drain().map((p) => p.id), ["a", "b"]);
  assertStrictEquals(o.size, 0);
  assertStrictEquals(o.nextDeadline(), Infinity);
  assertEquals(o.drain(), []);
  assert(o.hasRoom(1_000_000));
});

Deno.test("Outbox.hasRoom is false at SEND_WINDOW messages", () => {
  const o = new Outbox();
  for (let i = 0; i < SEND_WINDOW - 1; i++) o.add(pending({ id: `m${i}`, seq: i, rel: i }));
  assert(o.hasRoom(SEND_WINDOW - 1));
  o.add(pending({ id: "last", seq: SEND_WINDOW - 1, rel: SEND_WINDOW - 1 }));
  assertStrictEquals(o.size, SEND_WINDOW);
  assert(!o.hasRoom(SEND_WINDOW));
  o.acknowledge(5);
  assert(o.hasRoom(SEND_WINDOW), "room again after an Ack");
});

Deno.test("Outbox.hasRoom is false once nextRel runs MAX_REL_SPAN ahead of the oldest rel", () => {
  const o = new Outbox();
  o.add(pending({ id: "old", seq: 1, rel: 1_000 }));
  o.add(pending({ id: "new", seq: 2, rel: 1_400 }));
  assert(o.hasRoom(1_000 + MAX_REL_SPAN - 1));
  assert(!o.hasRoom(1_000 + MAX_REL_SPAN));
  assert(!o.hasRoom(1_000 + MAX_REL_SPAN + 50));
  o.acknowledge("old");
  assert(o.hasRoom(1_000 + MAX_REL_SPAN), "the oldest is now 1400");
  assert(o.hasRoom(1_400 + MAX_REL_SPAN - 1));
  assert(!o.hasRoom(1_400 + MAX_REL_SPAN));
});

Deno.test("Outbox.hasRoom measures the rel span across u32 wrap-around", () => {
  const o = new Outbox();
  const oldest = 0xffff_ff00;
  o.add(pending({ id: "old", seq: 1, rel: oldest }));
  o.add(pending({ id: "after-wrap", seq: 2, rel: 5 }));
  assert(o.hasRoom((oldest + MAX_REL_SPAN - 1) >>> 0));
  assert(!o.hasRoom((oldest + MAX_REL_SPAN) >>> 0));
  assertStrictEquals((oldest + MAX_REL_SPAN) >>> 0, 0x100, "the limit is past the wrap");
  assert(!o.hasRoom(0x200));
  o.remove("old");
  assert(o.hasRoom(0x100), "the oldest is now 5");
  assert(o.hasRoom(5 + MAX_REL_SPAN - 1));
  assert(!o.hasRoom(5 + MAX_REL_SPAN));
});

// --- SendQueue -------------------------------------------------------------------------------------------

Deno.test("SendQueue is FIFO with byte accounting", () => {
  const q = new SendQueue();
  assertStrictEquals(q.size, 0);
  assertStrictEquals(q.bytes, 0);
  assertStrictEquals(q.peek(), undefined);
  assertStrictEquals(q.shift(), undefined);
  q.push(queued("a", 10));
  q.push(queued("b", 20));
  q.push(queued("c", 30));
  assertStrictEquals(q.size, 3);
  assertStrictEquals(q.bytes, 60);
  assertStrictEquals(q.peek()?.id, "a");
  assertStrictEquals(q.size, 3, "peek leaves it in place");
  assertStrictEquals(q.shift()?.id, "a");
  assertStrictEquals(q.bytes, 50);
  assertStrictEquals(q.peek()?.id, "b");
  assertStrictEquals(q.shift()?.id, "b");
  assertStrictEquals(q.shift()?.id, "c");
  assertStrictEquals(q.size, 0);
  assertStrictEquals(q.bytes, 0);
  assertStrictEquals(q.shift(), undefined);
  assertStrictEquals(q.bytes, 0);
});

Deno.test("SendQueue keeps FIFO order and bytes across its internal compaction", () => {
  const q = new SendQueue();
  let pushed = 0;
  let shifted = 0;
  let bytes = 0;
  const push = () => {
    const size = 1 + (pushed % 7);
    q.push(queued(`m${pushed++}`, size));
    bytes += size;
  };
  for (let i = 0; i < 3_000; i++) push();
  // Shift well past 1024 (compaction happens), interleaving pushes.
  for (let round = 0; round < 5_000; round++) {
    const item = q.shift()!;
    assertStrictEquals(item.id, `m${shifted}`, `round ${round}`);
    bytes -= item.size;
    shifted++;
    if (round % 3 === 0) push();
    assertStrictEquals(q.size, pushed - shifted);
    assertStrictEquals(q.bytes, bytes);
    if (q.size > 0) assertStrictEquals(q.peek()?.id, `m${shifted}`);
    if (q.size === 0) break;
  }
  while (q.size > 0) assertStrictEquals(q.shift()?.id, `m${shifted++}`);
  assertStrictEquals(shifted, pushed);
  assertStrictEquals(q.bytes, 0);
  assertStrictEquals(q.peek(), undefined);
  // Usable after draining.
  q.push(queued("again", 4));
  assertStrictEquals(q.peek()?.id, "again");
  assertStrictEquals(q.bytes, 4);
});

Deno.test("SendQueue.fits bounds the count at MAX_QUEUED_PER_PEER", () => {
  const q = new SendQueue();
  assert(q.fits(MAX_QUEUED_PER_PEER, 0));
  assert(!q.fits(MAX_QUEUED_PER_PEER + 1, 0));
  for (let i = 0; i < MAX_QUEUED_PER_PEER - 1; i++) q.push(queued(`m${i}`, 0));
  assert(q.fits(1, 0));
  assert(!q.fits(2, 0));
  q.push(queued("last", 0));
  assert(!q.fits(1, 0));
  assert(q.fits(0, 0));
  q.shift();
  assert(q.fits(1, 0), "room again after a shift");
});

Deno.test("SendQueue.fits bounds the bytes at MAX_QUEUED_BYTES_PER_PEER", () => {
  const q = new SendQueue();
  assert(q.fits(1, MAX_QUEUED_BYTES_PER_PEER));
  assert(!q.fits(1, MAX_QUEUED_BYTES_PER_PEER + 1));
  q.push(queued("big", MAX_QUEUED_BYTES_PER_PEER - 100));
  assert(q.fits(1, 100));
  assert(!q.fits(1, 101));
  q.push(queued("rest", 100));
  assert(!q.fits(1, 1));
  assert(q.fits(1, 0));
  assertStrictEquals(q.shift()?.id, "big");
  assert(q.fits(1, MAX_QUEUED_BYTES_PER_PEER - 100));
  assert(!q.fits(1, MAX_QUEUED_BYTES_PER_PEER - 99));
});

Deno.test("SendQueue.removeWhere removes the selected messages, keeps order and bytes", () => {
  const q = new SendQueue();
  for (let i = 0; i < 10; i++) q.push(queued(`m${i}`, 10 + i));
  q.shift();
  q.shift(); // m0 and m1 gone: removeWhere must not see them
  const seen: string[] = [];
  const removed = q.removeWhere((item) => {
    seen.push(item.id);
    return Number(item.id.slice(1)) % 2 === 0;
  });
  assertEquals(seen, ["m2", "m3", "m4", "m5", "m6", "m7", "m8", "m9"]);
  assertEquals(removed.map((r) => r.id), ["m2", "m4", "m6", "m8"]);
  assertStrictEquals(q.size, 4);
  assertStrictEquals(q.bytes, 13 + 15 + 17 + 19);
  assertStrictEquals(q.removeWhere(() => false).length, 0);
  assertStrictEquals(q.size, 4);
  q.push(queued("late", 1));
  assertEquals([q.shift()?.id, q.shift()?.id, q.shift()?.id, q.shift()?.id, q.shift()?.id], [
    "m3",
    "m5",
    "m7",
    "m9",
    "late",
  ]);
  assertStrictEquals(q.bytes, 0);
  q.push(queued("x", 5));
  assertEquals(q.removeWhere(() => true).map((r) => r.id), ["x"]);
  assertStrictEquals(q.size, 0);
  assertStrictEquals(q.bytes, 0);
  assertStrictEquals(q.peek(), undefined);
});

Deno.test("SendQueue.removeWhere after a compaction", () => {
  const q = new SendQueue();
  for (let i = 0; i < 2_100; i++) q.push(queued(`m${i}`, 2));
  for (let i = 0; i < 1_500; i++) assertStrictEquals(q.shift()?.id, `m${i}`);
  const removed = q.removeWhere((item) => item.id.endsWith("0"));
  assertStrictEquals(removed.length, 60);
  assertStrictEquals(q.size, 540);
  assertStrictEquals(q.bytes, 540 * 2);
  assertStrictEquals(q.peek()?.id, "m1501");
});

// --- Reassembler -----------------------------------------------------------------------------------------

/** A reassembler for messages of at most `messageBytes`, with room for `peerBytes` counted per peer. */
function reassembler(budget: Budget, messageBytes = 1_000, peerBytes = 100_000): Reassembler {
  return new Reassembler({ messageBytes, peerBytes, budget });
}

/** Admits then adds a chunk (as its base64 text, as it arrives), asserting the admission. */
function admitAdd(r: Reassembler, now: number, fr: FragmentRef, chunk: Uint8Array) {
  assertStrictEquals(r.admit(fr, chunk.length), undefined, `admit ${fr.of} ${fr.i}`);
  return r.add(now, fr, chunk.toBase64(), chunk.length);
}

/** What a partial message of `chunks` (their sizes) is counted as. */
function counted(...chunks: number[]): number {
  return PARTIAL_COST + chunks.reduce((n, c) => n + c + FRAGMENT_COST, 0);
}

Deno.test("Reassembler completes a message fragmented in order with the exact bytes, counting what it holds", () => {
  const budget = freshBudget();
  const r = reassembler(budget);
  assertEquals(admitAdd(r, 0, ref(MSG_A, 0, 3), new Uint8Array([1, 2, 3])), { status: "stored" });
  assertStrictEquals(r.size, 1);
  assertStrictEquals(r.bytes, counted(3));
  assertStrictEquals(budget.used, counted(3));
  assertEquals(admitAdd(r, 1, ref(MSG_A, 1, 3), new Uint8Array([4, 5, 6])), { status: "stored" });
  assertStrictEquals(budget.used, counted(3, 3));
  const out = admitAdd(r, 2, ref(MSG_A, 2, 3), new Uint8Array([7]));
  assertEquals(out, { status: "complete", bytes: new Uint8Array([1, 2, 3, 4, 5, 6, 7]) });
  assertStrictEquals(r.size, 0);
  assertStrictEquals(r.bytes, 0);
  assertStrictEquals(budget.used, 0);
});

Deno.test("Reassembler completes a message whose fragments arrive out of order", () => {
  const budget = freshBudget();
  const r = reassembler(budget);
  const parts = [fill(4, 0xa0), fill(4, 0xa1), fill(4, 0xa2), fill(1, 0xa3)];
  let last;
  for (const i of [2, 0, 3, 1]) last = admitAdd(r, 0, ref(MSG_A, i, 4), parts[i]!);
  assert(last?.status === "complete");
  assertEquals(last.bytes, new Uint8Array([...parts[0]!, ...parts[1]!, ...parts[2]!, ...parts[3]!]));
  assertStrictEquals(budget.used, 0);
});

Deno.test("Reassembler: a one-fragment message completes at once; two messages are kept apart", () => {
  const budget = freshBudget();
  const r = reassembler(budget);
  assertEquals(admitAdd(r, 0, ref(MSG_A, 0, 1), new Uint8Array([9, 8])), {
    status: "complete",
    bytes: new Uint8Array([9, 8]),
  });
  const other = "cccccccc-cccc-4ccc-8ccc-cccccccccccc";
  assertStrictEquals(admitAdd(r, 0, ref(other, 1, 2), fill(2, 1)).status, "stored");
  assertStrictEquals(admitAdd(r, 0, ref(MSG_B, 0, 2), fill(3, 2)).status, "stored");
  assertStrictEquals(r.size, 2);
  assertEquals(admitAdd(r, 0, ref(MSG_B, 1, 2), fill(1, 3)), {
    status: "complete",
    bytes: new Uint8Array([2, 2, 2, 3]),
  });
  assertStrictEquals(budget.used, counted(2));
});

Deno.test("Reassembler: a repeated fragment is a duplicate and counts once; so is one of a completed message", () => {
  const budget = freshBudget();
  const r = reassembler(budget);
  assertStrictEquals(admitAdd(r, 0, ref(MSG_A, 0, 2), fill(3, 1)).status, "stored");
  assertStrictEquals(
    r.admit(ref(MSG_A, 0, 2), 3),
    undefined,
    "a duplicate is admitted (it is acknowledged again)",
  );
  assertEquals(r.add(1, ref(MSG_A, 0, 2), fill(3, 7).toBase64(), 3), { status: "duplicate" });
  assertStrictEquals(budget.used, counted(3));
  assertEquals(admitAdd(r, 2, ref(MSG_A, 1, 2), fill(1, 2)), {
    status: "complete",
    bytes: new Uint8Array([1, 1, 1, 2]),
  });
  assertStrictEquals(r.admit(ref(MSG_A, 1, 2), 50), undefined);
  assertEquals(r.add(5, ref(MSG_A, 1, 2), fill(1, 2).toBase64(), 1), { status: "duplicate" });
  assertStrictEquals(r.size, 0, "no partial message is recreated");
  assertStrictEquals(budget.used, 0);
});

Deno.test("Reassembler.admit refuses empty chunks, counts that disagree, and chunks of the wrong length", () => {
  const r = reassembler(freshBudget());
  assertStrictEquals(r.admit(ref(MSG_A, 0, 3), 0), "the fragment is empty");
  admitAdd(r, 0, ref(MSG_A, 0, 3), fill(4, 1));
  assertStrictEquals(r.admit(ref(MSG_A, 1, 4), 4), "fragment count 4 differs from 3");
  assertStrictEquals(r.admit(ref(MSG_A, 1, 3), 3), "fragment of 3 bytes where the others have 4");
  assertStrictEquals(r.admit(ref(MSG_A, 2, 3), 5), "last fragment of 5 bytes is longer than the others (4)");
  assertStrictEquals(r.admit(ref(MSG_A, 1, 3), 4), undefined);
});

Deno.test("Reassembler.admit refuses a count the message size cannot have: 65,535 fragments of 1 byte into 1,000", () => {
  const r = reassembler(freshBudget(), 1_000);
  assertStrictEquals(
    r.admit(ref(MSG_A, 0, 65_535), 1),
    "65535 fragments with fragment 0 of 1 bytes exceed 1000 bytes",
  );
  assertStrictEquals(
    r.admit(ref(MSG_A, 9, 10), 101),
    "10 fragments with fragment 9 of 101 bytes exceed 1000 bytes",
  );
  assertStrictEquals(r.admit(ref(MSG_A, 0, 10), 100), undefined);
  assertStrictEquals(impliedSize(ref(MSG_A, 0, 10), 100), 901);
  assertStrictEquals(impliedSize(ref(MSG_A, 9, 10), 100), 1_000);
});

Deno.test("Reassembler.admit refuses more than MAX_PARTIAL_PER_PEER partial messages", () => {
  const r = reassembler(freshBudget());
  for (let k = 0; k < MAX_PARTIAL_PER_PEER; k++) {
    assertStrictEquals(
      admitAdd(r, 0, ref(`0000000${k}-0000-4000-8000-000000000000`, 0, 2), fill(1, k)).status,
      "stored",
    );
  }
  assertStrictEquals(
    r.admit(ref(MSG_B, 0, 2), 1),
    `${MAX_PARTIAL_PER_PEER} messages are already in reassembly`,
  );
  assertStrictEquals(r.admit(ref("00000000-0000-4000-8000-000000000000", 1, 2), 1), undefined);
});

Deno.test("Reassembler.admit refuses past the peer's bound and the shared budget, both counting bookkeeping", () => {
  const peer = reassembler(freshBudget(), 1_000, counted(100, 100));
  admitAdd(peer, 0, ref(MSG_A, 0, 10), fill(100, 1));
  admitAdd(peer, 0, ref(MSG_A, 1, 10), fill(100, 1));
  assertStrictEquals(peer.admit(ref(MSG_A, 2, 10), 100), "the peer's reassembly buffer is full");
  const budget = freshBudget(counted(100));
  const shared = reassembler(budget);
  admitAdd(shared, 0, ref(MSG_A, 0, 10), fill(100, 1));
  assertStrictEquals(reassembler(budget).admit(ref(MSG_B, 0, 10), 1), "the reassembly buffers are full");
});

Deno.test("Reassembler: expiry and clear release the budget and forget", () => {
  const budget = freshBudget();
  const r = reassembler(budget);
  admitAdd(r, 0, ref(MSG_A, 0, 2), fill(2, 1));
  admitAdd(r, 500, ref(MSG_B, 0, 2), fill(2, 1));
  assertStrictEquals(r.nextExpiry(1_000), 1_000);
  assertStrictEquals(r.expire(1_000, 1_000), 1);
  assertStrictEquals(budget.used, counted(2));
  assertStrictEquals(r.nextExpiry(1_000), 1_500);
  r.clear();
  assertStrictEquals(r.size, 0);
  assertStrictEquals(budget.used, 0);
  assertStrictEquals(r.nextExpiry(1_000), Infinity);
});

Deno.test("Reassembler: budget.used returns to 0 over a seeded mix of completions, expiries and clears", () => {
  const rand = mulberry32(99);
  const budget = freshBudget();
  const peers = Array.from({ length: 4 }, () => reassembler(budget, 10_000));
  for (let round = 0; round < 200; round++) {
    const r = peers[Math.floor(rand() * peers.length)]!;
    const id = `00000000-0000-4000-8000-${String(round).padStart(12, "0")}`;
    const n = 1 + Math.floor(rand() * 4);
    const sent = 1 + Math.floor(rand() * n);
    for (let i = 0; i < sent; i++) {
      if (r.admit(ref(id, i, n), i === n - 1 ? 3 : 5) === undefined) {
        r.add(round, ref(id, i, n), fill(i === n - 1 ? 3 : 5, 1).toBase64(), i === n - 1 ? 3 : 5);
      }
    }
    if (rand() < 0.1) r.expire(round, 5);
  }
  for (const r of peers) r.clear();
  assertStrictEquals(budget.used, 0);
});

// --- OrderedInbox ----------------------------------------------------------------------------------------

Deno.test("OrderedInbox delivers in-order messages at once", () => {
  const inbox = new OrderedInbox<string>();
  assertStrictEquals(inbox.expected, 1);
  assertStrictEquals(inbox.stalledSince, Infinity);
  assertEquals(inbox.offer(0, 1, "a"), { status: "deliver", items: ["a"] });
  assertEquals(inbox.offer(0, 2, "b"), { status: "deliver", items: ["b"] });
  assertEquals(inbox.offer(0, 3, "c"), { status: "deliver", items: ["c"] });
  assertStrictEquals(inbox.expected, 4);
  assertStrictEquals(inbox.held, 0);
  assertStrictEquals(inbox.stalledSince, Infinity);
});

Deno.test("OrderedInbox holds later messages and flushes them in order when the gap fills", () => {
  const inbox = new OrderedInbox<string>();
  assertEquals(inbox.offer(10, 3, "c"), { status: "held" });
  assertStrictEquals(inbox.stalledSince, 10);
  assertEquals(inbox.offer(20, 2, "b"), { status: "held" });
  assertStrictEquals(inbox.stalledSince, 10, "the gap was first seen at 10");
  assertEquals(inbox.offer(25, 5, "e"), { status: "held" });
  assertStrictEquals(inbox.held, 3);
  assertEquals(inbox.offer(30, 1, "a"), { status: "deliver", items: ["a", "b", "c"] });
  assertStrictEquals(inbox.expected, 4);
  assertStrictEquals(inbox.held, 1);
  assertStrictEquals(inbox.stalledSince, 30, "a new gap (4) is seen now");
  assertEquals(inbox.offer(40, 4, "d"), { status: "deliver", items: ["d", "e"] });
  assertStrictEquals(inbox.expected, 6);
  assertStrictEquals(inbox.held, 0);
  assertStrictEquals(inbox.stalledSince, Infinity);
});

Deno.test("OrderedInbox.skip of the expected number delivers what was held behind it", () => {
  const inbox = new OrderedInbox<string>();
  inbox.offer(0, 2, "b");
  inbox.offer(0, 3, "c");
  inbox.offer(0, 5, "e");
  assertEquals(inbox.skip(1, 1), ["b", "c"]);
  assertStrictEquals(inbox.expected, 4);
  assertEquals(inbox.skip(2, 4), ["e"]);
  assertStrictEquals(inbox.expected, 6);
  assertEquals(inbox.skip(3, 6), [], "nothing held: just moves on");
  assertStrictEquals(inbox.expected, 7);
  assertEquals(inbox.skip(4, 3), [], "a number already passed is ignored");
  assertStrictEquals(inbox.expected, 7);
  assertStrictEquals(inbox.stalledSince, Infinity);
});

Deno.test("OrderedInbox.skip of a future number leaves a tombstone that flushes silently", () => {
  const inbox = new OrderedInbox<string>();
  inbox.offer(0, 2, "b");
  inbox.offer(0, 4, "d");
  assertEquals(inbox.skip(0, 3), [], "3 is ahead of the expected 1");
  assertStrictEquals(inbox.held, 3, "the tombstone is held");
  assertStrictEquals(inbox.expected, 1);
  assertEquals(inbox.offer(5, 1, "a"), { status: "deliver", items: ["a", "b", "d"] });
  assertStrictEquals(inbox.expected, 5);
  assertStrictEquals(inbox.held, 0);
  // Tombstones only, then the expected number is skipped too.
  assertEquals(inbox.skip(6, 6), []);
  assertEquals(inbox.skip(6, 7), []);
  assertEquals(inbox.offer(6, 8, "h"), { status: "held" });
  assertEquals(inbox.skip(7, 5), ["h"]);
  assertStrictEquals(inbox.expected, 9);
  assertStrictEquals(inbox.held, 0);
});

Deno.test("OrderedInbox.expire after the lifetime skips the gap to the lowest held number", () => {
  const inbox = new OrderedInbox<string>();
  assertEquals(inbox.expire(1_000_000, 100), [], "nothing held");
  inbox.offer(0, 5, "e");
  inbox.offer(10, 3, "c");
  inbox.offer(10, 8, "h");
  assertStrictEquals(inbox.stalledSince, 0);
  assertEquals(inbox.expire(99, 100), [], "not yet");
  assertStrictEquals(inbox.expected, 1);
  assertEquals(inbox.expire(100, 100), ["c"], "1 and 2 given up; 4 is a new gap");
  assertStrictEquals(inbox.expected, 4);
  assertStrictEquals(inbox.stalledSince, 100);
  assertEquals(inbox.expire(199, 100), []);
  assertEquals(inbox.expire(200, 100), ["e"]);
  assertStrictEquals(inbox.expected, 6);
  assertStrictEquals(inbox.stalledSince, 200);
  assertEquals(inbox.offer(250, 6, "f"), { status: "deliver", items: ["f"] });
  assertStrictEquals(inbox.stalledSince, 250, "the gap at 7 remains");
  assertEquals(inbox.expire(350, 100), ["h"]);
  assertStrictEquals(inbox.expected, 9);
  assertStrictEquals(inbox.held, 0);
  assertStrictEquals(inbox.stalledSince, Infinity);
});

Deno.test("OrderedInbox.expire skips past a lowest held tombstone", () => {
  const inbox = new OrderedInbox<string>();
  inbox.offer(0, 4, "d");
  inbox.skip(0, 3);
  assertEquals(inbox.expire(1_000, 100), ["d"]);
  assertStrictEquals(inbox.expected, 5);
  assertStrictEquals(inbox.held, 0);
});

Deno.test("OrderedInbox.wouldOverflow and offer report full at MAX_ORDERED_HELD", () => {
  const inbox = new OrderedInbox<number>();
  for (let ord = 2; ord < 2 + MAX_ORDERED_HELD - 1; ord++) {
    assert(!inbox.wouldOverflow(ord));
    assertEquals(inbox.offer(0, ord, ord), { status: "held" });
  }
  const last = 2 + MAX_ORDERED_HELD - 1;
  assert(!inbox.wouldOverflow(last));
  assertEquals(inbox.offer(0, last, last), { status: "held" });
  assertStrictEquals(inbox.held, MAX_ORDERED_HELD);
  assert(inbox.wouldOverflow(last + 1));
  assertEquals(inbox.offer(0, last + 1, last + 1), { status: "full" });
  assertStrictEquals(inbox.held, MAX_ORDERED_HELD);
  assert(!inbox.wouldOverflow(1), "the expected number is never refused");
  inbox.skip(0, last + 2);
  assertStrictEquals(inbox.held, MAX_ORDERED_HELD, "a tombstone is not held when full");
  const out = inbox.offer(0, 1, 1);
  assert(out.status === "deliver");
  assertStrictEquals(out.items.length, MAX_ORDERED_HELD + 1);
  assertEquals(out.items, Array.from({ length: MAX_ORDERED_HELD + 1 }, (_, i) => i + 1));
  assertStrictEquals(inbox.expected, last + 1);
  assert(!inbox.wouldOverflow(last + 1));
});

Deno.test("OrderedInbox: a new number below the expected one (skipped earlier) is delivered late", () => {
  const inbox = new OrderedInbox<string>();
  inbox.offer(0, 1, "a");
  inbox.skip(0, 2); // the sender gave 2 up
  inbox.offer(0, 3, "c");
  inbox.offer(0, 6, "f");
  assertStrictEquals(inbox.expected, 4);
  assertStrictEquals(inbox.stalledSince, 0);
  // 2 arrives after all: delivered at once, the rest of the state untouched.
  assertEquals(inbox.offer(5, 2, "b"), { status: "deliver", items: ["b"] });
  assertStrictEquals(inbox.expected, 4);
  assertStrictEquals(inbox.held, 1, "6 stays held");
  assertStrictEquals(inbox.stalledSince, 0);
  assertEquals(inbox.offer(6, 4, "d"), { status: "deliver", items: ["d"] });
  assertEquals(inbox.offer(6, 5, "e"), { status: "deliver", items: ["e", "f"] });
});

Deno.test("OrderedInbox: skip() of a number already held keeps the held message", () => {
  const inbox = new OrderedInbox<string>();
  assertEquals(inbox.offer(0, 2, "b"), { status: "held" });
  assertEquals(inbox.skip(0, 2), []);
  assertEquals(inbox.offer(0, 1, "a"), { status: "deliver", items: ["a", "b"] });
});

Deno.test("OrderedInbox.reset starts a new session", () => {
  const inbox = new OrderedInbox<string>();
  inbox.offer(0, 1, "a");
  inbox.offer(0, 3, "c");
  inbox.reset();
  assertStrictEquals(inbox.expected, 1);
  assertStrictEquals(inbox.held, 0);
  assertStrictEquals(inbox.stalledSince, Infinity);
  assertEquals(inbox.offer(1, 2, "b"), { status: "held" });
  assertEquals(inbox.offer(1, 1, "a"), { status: "deliver", items: ["a", "b"] });
});

Deno.test("OrderedInbox wraps from 0xffffffff to 0", () => {
  const inbox = new OrderedInbox<string>();
  inbox.expected = 0xffff_fffe;
  assertEquals(inbox.offer(0, 0xffff_fffe, "fe"), { status: "deliver", items: ["fe"] });
  assertStrictEquals(inbox.expected, 0xffff_ffff);
  assertEquals(inbox.offer(0, 1, "1"), { status: "held" }, "1 is ahead of 0xffffffff");
  assertEquals(inbox.offer(0, 0, "0"), { status: "held" });
  assert(!inbox.wouldOverflow(2));
  assertEquals(inbox.offer(0, 0xffff_ffff, "ff"), { status: "deliver", items: ["ff", "0", "1"] });
  assertStrictEquals(inbox.expected, 2);
  assertStrictEquals(inbox.held, 0);
});

Deno.test("OrderedInbox skip and expire across the wrap", () => {
  const inbox = new OrderedInbox<string>();
  inbox.expected = 0xffff_fffd;
  inbox.offer(0, 1, "1");
  inbox.offer(0, 0xffff_ffff, "ff");
  inbox.skip(0, 0);
  assertEquals(inbox.expire(100, 100), ["ff", "1"], "the lowest held is 0xffffffff, not 0 or 1");
  assertStrictEquals(inbox.expected, 2);
  inbox.expected = 0xffff_ffff;
  inbox.offer(200, 1, "one");
  assertEquals(inbox.skip(200, 0xffff_ffff), []);
  assertStrictEquals(inbox.expected, 0);
  assertEquals(inbox.skip(200, 0), ["one"]);
  assertStrictEquals(inbox.expected, 2);
});

Deno.test("OrderedInbox: numbering near the top of the u32 range wraps to 0", () => {
  const inbox = new OrderedInbox<number>();
  inbox.expected = 0xffff_fffe;
  const delivered: number[] = [];
  for (const ord of [0xffff_fffe, 0xffff_ffff, 0, 1, 2]) {
    const out = inbox.offer(0, ord, ord);
    assert(out.status === "deliver");
    delivered.push(...out.items);
  }
  assertEquals(delivered, [0xffff_fffe, 0xffff_ffff, 0, 1, 2]);
  assertStrictEquals(inbox.expected, 3);
  // 0xffffffff is "below" 3 in serial arithmetic: a late message, delivered without moving expected.
  assertEquals(inbox.offer(0, 0xffff_ffff, -1), { status: "deliver", items: [-1] });
  assertStrictEquals(inbox.expected, 3);
});

/** A seeded shuffle (Fisher-Yates). */
function shuffle<T>(items: T[], rand: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

Deno.test("OrderedInbox delivers exactly the non-skipped numbers in order for seeded permutations", () => {
  for (const seed of [1, 2, 3, 4, 5]) {
    const rand = mulberry32(seed);
    const N = 500;
    const skipped = new Set<number>();
    for (let ord = 1; ord <= N; ord++) if (rand() < 0.15) skipped.add(ord);
    // Every number arrives once, either as a message or as a skip, in random order. One refused for lack of
    // room (the endpoint does not acknowledge it) is sent again later: back to the end of the line.
    const arrivals = shuffle(Array.from({ length: N }, (_, i) => i + 1), rand);
    const inbox = new OrderedInbox<number>();
    const delivered: number[] = [];
    let now = 0;
    for (let k = 0; k < arrivals.length; k++) {
      const ord = arrivals[k]!;
      now++;
      if (inbox.wouldOverflow(ord)) {
        arrivals.push(ord);
        continue;
      }
      if (skipped.has(ord)) delivered.push(...inbox.skip(now, ord));
      else {
        const out = inbox.offer(now, ord, ord);
        assert(out.status !== "full", `seed ${seed}: ${ord} refused although wouldOverflow said no`);
        if (out.status === "deliver") delivered.push(...out.items);
      }
      assert(inbox.held <= MAX_ORDERED_HELD);
    }
    const expected = Array.from({ length: N }, (_, i) => i + 1).filter((ord) => !skipped.has(ord));
    assert(skipped.size > 0 && skipped.size < N);
    assertEquals(delivered, expected, `seed ${seed}`);
    assertStrictEquals(inbox.expected, N + 1);
    assertStrictEquals(inbox.held, 0);
    assertStrictEquals(inbox.stalledSince, Infinity);
  }
});
