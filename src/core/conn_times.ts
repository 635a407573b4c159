/**
 * The times (ms) a connection keeps, and its round-trip estimate, held in one shared `Float64Array` per
 * connection table instead of one field each. A time from the shell's clock is a Unix time in milliseconds with a fraction: not a small
 * integer, so as an object field each one would be a 16-byte boxed number besides its 8-byte slot. Here a
 * connection keeps {@linkcode TIMES_PER_CONN} doubles in its slot of a {@linkcode TimeSlab} (8 bytes each,
 * exact), and reads and writes them through accessors that look like fields.
 *
 * A connection in a table has a slot of the table's slab; one outside any table (made alone, or dropped)
 * keeps its times in a small array of its own ({@linkcode OwnTimes}), so a reference kept to a dropped
 * connection (a timer heap entry that has not surfaced yet) still reads its own times, at less cost than a
 * typed array of its own would have (whose backing store is allocated outside the heap).
 *
 * @module
 */

/**
 * Doubles kept per connection: last heard, next heartbeat, the timer heap's deadline and filed-at, and the
 * path's smoothed RTT and its variance.
 */
export const TIMES_PER_CONN = 6;

const LAST_HEARD = 0;
const HEARTBEAT_AT = 1;
const DEADLINE = 2;
const FILED_AT = 3;
const SRTT = 4;
const RTTVAR = 5;

/** Slots a table's slab starts with, and below which it never shrinks. */
export const MIN_SLOTS = 64;

/**
 * Slots of {@linkcode TIMES_PER_CONN} doubles. Freed slots are reused first; the array doubles when full and
 * is compacted to half (see {@linkcode TimeSlab.compact}) when less than a quarter is in use.
 */
export class TimeSlab {
  /** The doubles, slot after slot (replaced when the slab grows or is compacted). */
  f: Float64Array;
  /** Freed slots below the top (made on the first such free: a connection's own slab never needs it). */
  #free: number[] | null = null;
  #top = 0;

  /** @param slots Room to start with. */
  constructor(slots: number = MIN_SLOTS) {
    this.f = new Float64Array(slots * TIMES_PER_CONN);
  }

  /** Slots there is room for. */
  get capacity(): number {
    return this.f.length / TIMES_PER_CONN;
  }

  /** Slots in use. */
  get live(): number {
    return this.#top - (this.#free?.length ?? 0);
  }

  /** A free slot (its doubles are whatever was there: the caller writes them). */
  alloc(): number {
    const slot = this.#free?.pop();
    if (slot !== undefined) return slot;
    if (this.#top === this.capacity) {
      const f = new Float64Array(this.f.length * 2);
      f.set(this.f);
      this.f = f;
    }
    return this.#top++;
  }

  /** Gives `slot` back. */
  free(slot: number): void {
    if (slot === this.#top - 1) this.#top--;
    else (this.#free ??= []).push(slot);
  }

  /** Whether less than a quarter of a slab larger than the minimum is in use. */
  get sparse(): boolean {
    return this.capacity > MIN_SLOTS && this.live < this.capacity / 4;
  }

  /**
   * Moves the slots of `owners` (which must be every connection with a slot here) to the front of an array
   * of half the size at most, and renumbers them. Does nothing when `owners` does not account for every
   * slot in use: a slot must never be handed out twice.
   */
  compact(owners: Iterable<object>): void {
    const held: ConnTimes[] = [];
    for (const owner of owners) if (owner instanceof ConnTimes && owner.times === this) held.push(owner);
    if (held.length !== this.live) return;
    let slots = MIN_SLOTS;
    while (slots < 2 * held.length) slots *= 2;
    const from = this.f;
    const f = new Float64Array(slots * TIMES_PER_CONN);
    for (let i = 0; i < held.length; i++) {
      const owner = held[i]!;
      const src = owner.slot * TIMES_PER_CONN;
      const dst = i * TIMES_PER_CONN;
      for (let k = 0; k < TIMES_PER_CONN; k++) f[dst + k] = from[src + k]!;
      owner.slot = i;
    }
    this.f = f;
    this.#free = null;
    this.#top = held.length;
  }
}

/** The times of a connection in no table: {@linkcode TIMES_PER_CONN} doubles in a plain array, slot 0. */
export class OwnTimes {
  /** The doubles. */
  readonly f: number[];

  /** @param f The doubles to start with. */
  constructor(f: number[]) {
    this.f = f;
  }
}

/** A connection's times, kept in a slot of a {@linkcode TimeSlab} or in {@linkcode OwnTimes}. */
export class ConnTimes {
  /** Where its times are: the table's slab, or its own while it is in no table. */
  times: TimeSlab | OwnTimes;
  /** Its slot there (0 in its own). */
  slot: number;

  /**
   * Starts in a slot of `slab` (in times of its own without one), every time `Infinity` but `lastHeard`,
   * which is `now`, and the round-trip estimate 0.
   */
  constructor(now: number, slab?: TimeSlab) {
    if (slab) {
      this.times = slab;
      this.slot = slab.alloc();
      this.lastHeard = now;
      this.heartbeatAt = Infinity;
      this.deadline = Infinity;
      this.filedAt = Infinity;
      this.srtt = 0;
      this.rttvar = 0;
    } else {
      this.times = new OwnTimes([now, Infinity, Infinity, Infinity, 0, 0]);
      this.slot = 0;
    }
  }

  /** Takes its times out of the table's slab into times of its own, giving the slot back. */
  detach(): void {
    const times = this.times;
    if (!(times instanceof TimeSlab)) return;
    const f = times.f;
    const base = this.slot * TIMES_PER_CONN;
    this.times = new OwnTimes(Array.from({ length: TIMES_PER_CONN }, (_, i) => f[base + i]!));
    times.free(this.slot);
    this.slot = 0;
  }

  /** When anything was last heard from this address (ms). */
  get lastHeard(): number {
    return this.times.f[this.slot * TIMES_PER_CONN + LAST_HEARD]!;
  }
  set lastHeard(ms: number) {
    this.times.f[this.slot * TIMES_PER_CONN + LAST_HEARD] = ms;
  }

  /** When the next heartbeat Ping is due (ms). */
  get heartbeatAt(): number {
    return this.times.f[this.slot * TIMES_PER_CONN + HEARTBEAT_AT]!;
  }
  set heartbeatAt(ms: number) {
    this.times.f[this.slot * TIMES_PER_CONN + HEARTBEAT_AT] = ms;
  }

  /** The deadline the connection wants (`Infinity` for none). Written by the timer heap. */
  get deadline(): number {
    return this.times.f[this.slot * TIMES_PER_CONN + DEADLINE]!;
  }
  set deadline(ms: number) {
    this.times.f[this.slot * TIMES_PER_CONN + DEADLINE] = ms;
  }

  /** Deadline of its live timer heap entry (`Infinity` for none). Written by the timer heap. */
  get filedAt(): number {
    return this.times.f[this.slot * TIMES_PER_CONN + FILED_AT]!;
  }
  set filedAt(ms: number) {
    this.times.f[this.slot * TIMES_PER_CONN + FILED_AT] = ms;
  }

  /** The path's smoothed RTT (ms); 0 before the first sample. */
  get srtt(): number {
    return this.times.f[this.slot * TIMES_PER_CONN + SRTT]!;
  }
  set srtt(ms: number) {
    this.times.f[this.slot * TIMES_PER_CONN + SRTT] = ms;
  }

  /** The path's RTT variance (ms); 0 before the first sample. */
  get rttvar(): number {
    return this.times.f[this.slot * TIMES_PER_CONN + RTTVAR]!;
  }
  set rttvar(ms: number) {
    this.times.f[this.slot * TIMES_PER_CONN + RTTVAR] = ms;
  }
}
