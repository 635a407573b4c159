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
 * Slots of {@linkcode TIMES_PER_CONN} doubles, always dense: the slots in use are the first {@linkcode live},
 * because freeing a slot moves the last one into it (its owner is renumbered). So nothing ever walks the
 * connections: growing doubles the array, and it is halved (a copy of what is in use) as soon as less than a
 * quarter is in use, one step per free.
 */
export class TimeSlab {
  /** The doubles, slot after slot (replaced when the slab grows or shrinks). */
  f: Float64Array;
  /** The owner of each slot in use. */
  readonly #owners: ConnTimes[] = [];

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
    return this.#owners.length;
  }

  /** A slot for `owner` (its doubles are whatever was there: the caller writes them). */
  alloc(owner: ConnTimes): number {
    const slot = this.#owners.length;
    if (slot === this.capacity) this.#resize(2 * slot);
    this.#owners.push(owner);
    return slot;
  }

  /** Gives `slot` back: the last slot's owner moves into it. */
  free(slot: number): void {
    const owners = this.#owners;
    const last = owners.length - 1;
    if (slot !== last) {
      const moved = owners[last]!;
      const f = this.f;
      const dst = slot * TIMES_PER_CONN;
      const src = last * TIMES_PER_CONN;
      for (let k = 0; k < TIMES_PER_CONN; k++) f[dst + k] = f[src + k]!;
      owners[slot] = moved;
      moved.slot = slot;
    }
    owners.pop();
    const capacity = this.capacity;
    if (capacity > MIN_SLOTS && owners.length < capacity / 4) this.#resize(capacity / 2);
  }

  #resize(slots: number): void {
    const f = new Float64Array(slots * TIMES_PER_CONN);
    f.set(this.f.subarray(0, this.#owners.length * TIMES_PER_CONN));
    this.f = f;
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
      this.slot = slab.alloc(this);
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
