import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { type Timed, TimerHeap } from "../src/core/timers.ts";
import { mulberry32 } from "./sim.ts";

interface Item extends Timed {
  name: string;
}

function item(name: string): Item {
  return { name, deadline: Infinity, filedAt: Infinity, timerToken: 0 };
}

function drainAll(heap: TimerHeap<Item>, now: number): string[] {
  const out: string[] = [];
  for (let it = heap.popDue(now); it; it = heap.popDue(now)) out.push(it.name);
  return out;
}

Deno.test("an empty TimerHeap has no deadline and nothing due", () => {
  const heap = new TimerHeap<Item>();
  assertStrictEquals(heap.peek(), Infinity);
  assertStrictEquals(heap.popDue(1e15), undefined);
});

Deno.test("TimerHeap pops items in deadline order, only when due", () => {
  const heap = new TimerHeap<Item>();
  const names = ["c", "a", "d", "b"];
  const at: Record<string, number> = { a: 10, b: 20, c: 30, d: 40 };
  for (const n of names) heap.schedule(item(n), at[n]!);
  assertStrictEquals(heap.peek(), 10);
  assertStrictEquals(heap.popDue(9), undefined);
  assertEquals(drainAll(heap, 25), ["a", "b"]);
  assertStrictEquals(heap.peek(), 30);
  assertEquals(drainAll(heap, 100), ["c", "d"]);
  assertStrictEquals(heap.peek(), Infinity);
});

Deno.test("moving a deadline earlier takes effect at once", () => {
  const heap = new TimerHeap<Item>();
  const a = item("a");
  const b = item("b");
  heap.schedule(a, 100);
  heap.schedule(b, 50);
  heap.schedule(a, 10);
  assertStrictEquals(heap.peek(), 10);
  assertEquals(drainAll(heap, 60), ["a", "b"]);
  assertEquals(drainAll(heap, 1_000), [], "the stale entry of a does not fire again");
});

Deno.test("moving a deadline later delays it; the stale entry does not fire", () => {
  const heap = new TimerHeap<Item>();
  const a = item("a");
  const b = item("b");
  heap.schedule(a, 10);
  heap.schedule(b, 50);
  heap.schedule(a, 100);
  assertStrictEquals(heap.peek(), 50);
  assertEquals(drainAll(heap, 60), ["b"]);
  assertStrictEquals(heap.peek(), 100);
  assertEquals(drainAll(heap, 100), ["a"]);
});

Deno.test("scheduling Infinity cancels a timer", () => {
  const heap = new TimerHeap<Item>();
  const a = item("a");
  heap.schedule(a, 10);
  heap.schedule(a, Infinity);
  assertStrictEquals(heap.peek(), Infinity);
  assertStrictEquals(heap.popDue(1_000), undefined);
  heap.schedule(a, 20);
  assertEquals(drainAll(heap, 20), ["a"], "a cancelled item can be scheduled again");
});

Deno.test("a popped item can be re-armed and each item has at most one live entry", () => {
  const heap = new TimerHeap<Item>();
  const a = item("a");
  heap.schedule(a, 5);
  heap.schedule(a, 3);
  heap.schedule(a, 1);
  assertEquals(drainAll(heap, 10), ["a"]);
  heap.schedule(a, 15);
  assertEquals(drainAll(heap, 14), []);
  assertEquals(drainAll(heap, 15), ["a"]);
});

Deno.test("clear removes every entry", () => {
  const heap = new TimerHeap<Item>();
  const a = item("a");
  heap.schedule(a, 1);
  heap.schedule(item("b"), 2);
  heap.clear();
  assertStrictEquals(heap.size, 0);
  assertStrictEquals(heap.peek(), Infinity);
  heap.schedule(a, 3);
  assertEquals(drainAll(heap, 3), ["a"]);
});

Deno.test("TimerHeap matches a reference model under seeded random reschedules", () => {
  const rand = mulberry32(99);
  const heap = new TimerHeap<Item>();
  const items = Array.from({ length: 200 }, (_, i) => item(`i${i}`));
  const want = new Map<Item, number>();
  let now = 0;
  for (let round = 0; round < 5_000; round++) {
    const it = items[Math.floor(rand() * items.length)]!;
    const r = rand();
    const at = r < 0.1 ? Infinity : now + Math.floor(rand() * 1_000);
    heap.schedule(it, at);
    if (at === Infinity) want.delete(it);
    else want.set(it, at);
    if (round % 10 === 0) {
      now += Math.floor(rand() * 200);
      const popped = new Set<Item>();
      for (let p = heap.popDue(now); p; p = heap.popDue(now)) popped.add(p);
      const due = new Set([...want].filter(([, t]) => t <= now).map(([i]) => i));
      assertEquals(popped, due, `round ${round}`);
      for (const p of popped) want.delete(p);
      const earliest = Math.min(...want.values());
      assertStrictEquals(heap.peek(), earliest);
    }
  }
  assert(heap.size <= 2 * items.length + 10, `stale entries are bounded: ${heap.size}`);
});

Deno.test("TimerHeap keeps exact Unix-ms deadlines and filing order on ties while it grows and shrinks", () => {
  const heap = new TimerHeap<Item>({ fifo: true });
  const base = 1_796_000_000_000.123; // a Unix time in ms with a fraction, as the shell's clock gives
  const deadlineOf = new Map<Item, number>();
  let filed = 0;
  // Grows from 16 entries to 8,192, shrinks while it drains, grows again: every pop is in (deadline, filing) order.
  for (const [count, keep] of [[1_000, 10], [5_000, 3], [40, 0]] as const) {
    for (let i = 0; i < count; i++) {
      const it = item(`${filed++}`);
      // Three distinct deadlines, filed interleaved: ties must come out in filing order.
      deadlineOf.set(it, base + (i % 3) * 0.25);
      heap.schedule(it, deadlineOf.get(it)!);
    }
    let prev: Item | undefined;
    while (heap.size > keep) {
      const it = heap.popDue(base + 1)!;
      const at = deadlineOf.get(it)!;
      assert([base, base + 0.25, base + 0.5].includes(at));
      if (prev) {
        const prevAt = deadlineOf.get(prev)!;
        assert(
          prevAt < at || (prevAt === at && Number(prev.name) < Number(it.name)),
          `${prev.name} ${it.name}`,
        );
      }
      prev = it;
    }
  }
  assertStrictEquals(heap.size, 0);
  assertStrictEquals(heap.peek(), Infinity);
});

Deno.test("forget lets go of items at once: stale entries are dropped when they are half of the heap", () => {
  for (const fifo of [false, true]) {
    const heap = new TimerHeap<Item>({ fifo });
    const rand = mulberry32(fifo ? 5 : 6);
    const base = 1_764_000_000_000;
    const items = Array.from({ length: 6_000 }, (_, i) => item(`i${i}`));
    // Ties on purpose: 300 distinct deadlines for 6,000 items, some moved earlier (superseded entries).
    for (const it of items) heap.schedule(it, base + 1_000 * Math.floor(rand() * 300));
    for (const it of items) if (rand() < 0.2) heap.schedule(it, it.deadline - 500);
    const kept = items.filter(() => rand() < 0.1);
    const keep = new Set(kept);
    const before = heap.size;
    let forgotten = 0;
    for (const it of items) {
      if (keep.has(it)) continue;
      heap.forget(it);
      forgotten++;
      assertStrictEquals(it.deadline, Infinity);
    }
    assert(forgotten > 5_000);
    assert(heap.size < before / 2, `compacted: ${heap.size} entries of ${before}`);
    assert(heap.size <= 2 * kept.length + 1_024, `what is left is bounded: ${heap.size}`);
    // What stays comes out exactly as it would have: by deadline, and in filing order on ties when fifo.
    const order = [...kept].sort((a, b) =>
      a.deadline - b.deadline || (fifo ? a.timerToken - b.timerToken : 0)
    );
    const deadlines = new Map(kept.map((i) => [i, i.deadline]));
    const out: Item[] = [];
    for (let it = heap.popDue(base + 1e9); it; it = heap.popDue(base + 1e9)) out.push(it);
    assertStrictEquals(out.length, kept.length);
    if (fifo) assertEquals(out.map((i) => i.name), order.map((i) => i.name));
    else assertEquals(out.map((i) => deadlines.get(i)), order.map((i) => deadlines.get(i)));
    assertEquals(new Set(out), keep);
    assertStrictEquals(heap.size, 0);
  }
});
