/**
 * Timers as data: a binary min-heap of `(deadline, item)` entries with lazy invalidation. Each item has one
 * current deadline and at most one live heap entry. Moving a deadline earlier files a new entry (the old one
 * goes stale and is discarded when it surfaces); moving it later costs nothing until the old entry surfaces,
 * when it is re-filed at the new deadline. The earliest live entry is the endpoint's next wake-up.
 *
 * @module
 */

/** Something with one scheduled deadline. */
export interface Timed {
  /** The deadline this item wants (`Infinity` for none). Written by {@linkcode TimerHeap}. */
  deadline: number;
  /** Deadline of the item's live heap entry (`Infinity` for none). Written by {@linkcode TimerHeap}. */
  filedAt: number;
  /** Token of the item's live heap entry. Written by {@linkcode TimerHeap}. */
  timerToken: number;
}

/** Options of {@linkcode TimerHeap}. */
export interface TimerHeapOptions {
  /**
   * Equal deadlines come out in the order they were filed (first in, first out). Without it their order is
   * the heap's own (deterministic, but not the filing order). @default {false}
   */
  fifo?: boolean;
}

/** Entries a heap has room for before it first grows, and below which it never shrinks. */
const MIN_CAPACITY = 16;
/** Stale entries a heap holds before it may drop them all at once (when they are half of its entries). */
const COMPACT_MIN = 1_024;

/**
 * A min-heap of deadlines. Its entries live in three parallel arrays (deadline, token, item) instead of one
 * object each: a deadline in milliseconds is not a small integer, so an entry object would also hold a boxed
 * number. The typed arrays grow by doubling and shrink by half when less than a quarter is in use.
 */
export class TimerHeap<T extends Timed> {
  #at = new Float64Array(MIN_CAPACITY);
  #token = new Float64Array(MIN_CAPACITY);
  #items: T[] = [];
  #tokens = 0;
  /** Entries whose token is no longer their item's (superseded by an earlier deadline, or forgotten). */
  #stale = 0;
  readonly #fifo: boolean;

  /** @param options See {@linkcode TimerHeapOptions}. */
  constructor(options: TimerHeapOptions = {}) {
    this.#fifo = options.fifo ?? false;
  }

  /** Number of entries, stale ones included. */
  get size(): number {
    return this.#items.length;
  }

  /** Sets the item's deadline to `at` (`Infinity` cancels it). */
  schedule(item: T, at: number): void {
    item.deadline = at;
    if (at < item.filedAt) this.#file(item, at);
  }

  /**
   * Cancels the item's deadline for good and lets go of it: its entry goes stale at once, and once stale
   * entries are half of the heap (and at least {@linkcode COMPACT_MIN}) they are all dropped, so an item that
   * is gone (a closed connection) is not kept alive by an entry whose deadline is far off.
   */
  forget(item: T): void {
    if (item.filedAt !== Infinity) {
      item.timerToken = -1;
      this.#stale++;
    }
    item.deadline = Infinity;
    item.filedAt = Infinity;
    if (this.#stale >= COMPACT_MIN && 2 * this.#stale > this.#items.length) this.#compact();
  }

  /** The earliest deadline, or `Infinity` when nothing is scheduled. */
  peek(): number {
    const items = this.#items;
    while (items.length > 0) {
      const item = items[0]!;
      if (this.#token[0] !== item.timerToken) {
        this.#pop();
        this.#stale--;
        continue;
      }
      const at = this.#at[0]!;
      if (item.deadline === at) return at;
      // The deadline moved later (or was cancelled): re-file it.
      this.#pop();
      item.filedAt = Infinity;
      if (item.deadline !== Infinity) this.#file(item, item.deadline);
    }
    return Infinity;
  }

  /** Removes and returns an item whose deadline is at or before `now`, or `undefined`. */
  popDue(now: number): T | undefined {
    if (this.peek() > now) return undefined;
    const item = this.#pop()!;
    item.deadline = Infinity;
    item.filedAt = Infinity;
    return item;
  }

  /** Removes every entry. */
  clear(): void {
    for (const item of this.#items) {
      item.deadline = Infinity;
      item.filedAt = Infinity;
    }
    this.#items = [];
    this.#stale = 0;
    this.#resize(MIN_CAPACITY);
  }

  #file(item: T, at: number): void {
    if (item.filedAt !== Infinity) this.#stale++; // its entry at the later deadline is superseded
    const token = ++this.#tokens;
    item.timerToken = token;
    item.filedAt = at;
    const items = this.#items;
    let i = items.length;
    if (i === this.#at.length) this.#resize(2 * i);
    const ats = this.#at;
    items.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (ats[parent]! <= at) break;
      this.#move(parent, i);
      i = parent;
    }
    ats[i] = at;
    this.#token[i] = token;
    items[i] = item;
  }

  /**
   * Drops every stale entry in one pass, keeping the live ones (with their deadlines and tokens) in array
   * order, then restores the heap order bottom-up (Floyd): linear in the heap's size (at most 5 ms measured
   * while 100,000 connections closed one after another), so a flood of Disconnects is not held up long.
   */
  #compact(): void {
    const items = this.#items;
    const ats = this.#at;
    const tokens = this.#token;
    let n = 0;
    for (let i = 0; i < items.length; i++) {
      const item = items[i]!;
      if (tokens[i] !== item.timerToken) continue;
      ats[n] = ats[i]!;
      tokens[n] = tokens[i]!;
      items[n++] = item;
    }
    items.length = n;
    this.#stale = 0;
    for (let i = (n >> 1) - 1; i >= 0; i--) this.#siftDown(i, n);
    if (n < ats.length >> 2 && ats.length > MIN_CAPACITY) {
      this.#resize(Math.max(MIN_CAPACITY, 1 << Math.ceil(Math.log2(Math.max(1, 2 * n)))));
    }
  }

  /** Moves entry `i` down until neither child comes out before it (the heap's first `n` entries). */
  #siftDown(i: number, n: number): void {
    const ats = this.#at;
    const at = ats[i]!;
    const token = this.#token[i]!;
    const item = this.#items[i]!;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.#before(r, ats[l]!, this.#token[l]!) ? r : l;
      if (!this.#before(c, at, token)) break;
      this.#move(c, i);
      i = c;
    }
    ats[i] = at;
    this.#token[i] = token;
    this.#items[i] = item;
  }

  /** Removes the top entry, returning its item. */
  #pop(): T | undefined {
    const items = this.#items;
    const top = items[0];
    const last = items.pop();
    const n = items.length;
    if (n === 0 || last === undefined) return top;
    const ats = this.#at;
    ats[0] = ats[n]!;
    this.#token[0] = this.#token[n]!;
    items[0] = last;
    this.#siftDown(0, n);
    if (n < ats.length >> 2 && ats.length > MIN_CAPACITY) this.#resize(ats.length >> 1);
    return top;
  }

  /** Copies entry `from` over entry `to`. */
  #move(from: number, to: number): void {
    this.#at[to] = this.#at[from]!;
    this.#token[to] = this.#token[from]!;
    this.#items[to] = this.#items[from]!;
  }

  /** Gives the typed arrays room for `capacity` entries, keeping those in use. */
  #resize(capacity: number): void {
    const n = this.#items.length;
    const at = new Float64Array(capacity);
    const token = new Float64Array(capacity);
    at.set(this.#at.subarray(0, n));
    token.set(this.#token.subarray(0, n));
    this.#at = at;
    this.#token = token;
  }

  /** Whether entry `a` comes out strictly before an entry filed at `at` with `token`. */
  #before(a: number, at: number, token: number): boolean {
    const aAt = this.#at[a]!;
    return aAt < at || (this.#fifo && aAt === at && this.#token[a]! < token);
  }
}
