import { assert, assertEquals, assertStrictEquals } from "../src/deps/assert.ts";
import { MAX_PENDING_PER_PEER, Outbox, RECEIVE_WINDOW, ReceiveWindow } from "../src/reliability.ts";
import { mulberry32 } from "./sim.ts";

const U32 = 0x1_0000_0000;
const bytes = new Uint8Array([1]);

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
    }
  }
});

Deno.test("Outbox resends on the schedule [500, 1000, 2000] and gives up at 3.5 s", () => {
  const o = new Outbox();
  o.add(0, "a", 1, "Data", bytes, [500, 1_000, 2_000]);
  assertStrictEquals(o.nextDeadline(), 500);
  assertEquals(o.poll(499), []);
  const first = o.poll(500);
  assertEquals(first.map((d) => [d.action, d.pending.tries]), [["resend", 2]]);
  assertStrictEquals(o.nextDeadline(), 1_500);
  assertEquals(o.poll(1_499), []);
  assertEquals(o.poll(1_500).map((d) => [d.action, d.pending.tries]), [["resend", 3]]);
  assertStrictEquals(o.nextDeadline(), 3_500);
  assertEquals(o.poll(3_499), []);
  const last = o.poll(3_500);
  assertEquals(last.map((d) => [d.action, d.pending.id, d.pending.tries]), [["give_up", "a", 3]]);
  assertStrictEquals(o.size, 0);
  assertStrictEquals(o.nextDeadline(), Infinity);
});

Deno.test("Outbox with a one-wait schedule gives up after the wait without resending", () => {
  const o = new Outbox();
  o.add(10, "p", 3, "HandshakeRequest", bytes, [1_000]);
  assertEquals(o.poll(1_010).map((d) => d.action), ["give_up"]);
});

Deno.test("Outbox acknowledges by id (any case) or by sequence number, once", () => {
  const o = new Outbox();
  const id = "7d444840-9dc0-41d1-b245-5ffdce74fad2";
  o.add(0, id, 1, "Data", bytes, [500]);
  o.add(0, "b", 2, "Data", bytes, [500]);
  assertStrictEquals(o.acknowledge(id.toUpperCase())?.seq, 1);
  assertStrictEquals(o.acknowledge(id), undefined);
  assertStrictEquals(o.acknowledge(2)?.id, "b");
  assertStrictEquals(o.acknowledge(2), undefined);
  assertStrictEquals(o.size, 0);
});

Deno.test("Outbox settleType, findType, bySeq and drain", () => {
  const o = new Outbox();
  o.add(0, "r", 1, "HandshakeResponse", bytes, [500]);
  o.add(0, "d", 2, "Data", bytes, [300]);
  assertStrictEquals(o.findType("Data")?.id, "d");
  assertStrictEquals(o.size, 2, "findType leaves it in place");
  assertStrictEquals(o.bySeq(1)?.id, "r");
  assertStrictEquals(o.bySeq(9), undefined);
  assertStrictEquals(o.nextDeadline(), 300);
  assertStrictEquals(o.settleType("HandshakeResponse")?.id, "r");
  assertStrictEquals(o.settleType("HandshakeResponse"), undefined);
  assertEquals(o.drain().map((p) => p.id), ["d"]);
  assertStrictEquals(o.size, 0);
});

Deno.test("Outbox reports full at MAX_PENDING_PER_PEER", () => {
  const o = new Outbox();
  for (let i = 0; i < MAX_PENDING_PER_PEER - 1; i++) o.add(0, `m${i}`, i, "Data", bytes, [500]);
  assert(!o.full);
  o.add(0, "last", 9_999, "Data", bytes, [500]);
  assert(o.full);
});

Deno.test("Outbox polls several due messages at once, each on its own schedule", () => {
  const o = new Outbox();
  o.add(0, "a", 1, "Data", bytes, [100, 100]);
  o.add(50, "b", 2, "Data", bytes, [50]);
  const due = o.poll(100);
  assertEquals(due.map((d) => [d.pending.id, d.action]).sort(), [["a", "resend"], ["b", "give_up"]]);
  assertStrictEquals(o.nextDeadline(), 200);
});
