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

interface Entry<T> {
  at: number;
  token: number;
  item: T;
}

/** Options of {@linkcode TimerHeap}. */
export interface TimerHeapOptions {
  /**
   * Equal deadlines come out in the order they were filed (first in, first out). Without it their order is
   * the heap's own (deterministic, but not the filing order). @default {false}
   */
  fifo?: boolean;
}

/** A min-heap of deadlines. */
export class TimerHeap<T extends Timed> {
  #heap: Entry<T>[] = [];
  #tokens = 0;
  readonly #fifo: boolean;

  /** @param options See {@linkcode TimerHeapOptions}. */
  constructor(options: TimerHeapOptions = {}) {
    this.#fifo = options.fifo ?? false;
  }

  /** Number of entries, stale ones included. */
  get size(): number {
    return this.#heap.length;
  }

  /** Sets the item's deadline to `at` (`Infinity` cancels it). */
  schedule(item: T, at: number): void {
    item.deadline = at;
    if (at < item.filedAt) this.#file(item, at);
  }

  /** The earliest deadline, or `Infinity` when nothing is scheduled. */
  peek(): number {
    const heap = this.#heap;
    while (heap.length > 0) {
      const top = heap[0]!;
      const item = top.item;
      if (top.token !== item.timerToken) {
        this.#pop();
        continue;
      }
      if (item.deadline === top.at) return top.at;
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
    const { item } = this.#pop()!;
    item.deadline = Infinity;
    item.filedAt = Infinity;
    return item;
  }

  /** Removes every entry. */
  clear(): void {
    for (const { item } of this.#heap) {
      item.deadline = Infinity;
      item.filedAt = Infinity;
    }
    this.#heap = [];
  }

  #file(item: T, at: number): void {
    const token = ++this.#tokens;
    item.timerToken = token;
    item.filedAt = at;
    const entry = { at, token, item };
    const heap = this.#heap;
    heap.push(entry);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.at <= at) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = entry;
  }

  #pop(): Entry<T> | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (heap.length === 0 || last === undefined) return top;
    let i = 0;
    const n = heap.length;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= n) break;
      const r = l + 1;
      const c = r < n && this.#before(heap[r]!, heap[l]!) ? r : l;
      if (!this.#before(heap[c]!, last)) break;
      heap[i] = heap[c]!;
      i = c;
    }
    heap[i] = last;
    return top;
  }

  /** Whether entry `a` comes out strictly before entry `b`. */
  #before(a: Entry<T>, b: Entry<T>): boolean {
    return a.at < b.at || (this.#fifo && a.at === b.at && a.token < b.token);
  }
}
