/**
 * Periodic work the shell asks the core to schedule: a named tick every `periodMs` (the server's stats line,
 * its traffic history, the cluster's liveness refresh). Each is one entry of the timer table's `ticks` lane,
 * so the shell's one timer serves it, the simulator runs it in virtual time, and no shell keeps an interval.
 * A due tick is reported as a `tick` event; its next deadline is the previous one plus the period (no drift),
 * skipping the periods that passed while the process was stalled.
 *
 * @module
 */
import type { Core } from "./context.ts";
import type { Timed } from "./timers.ts";

interface Tick extends Timed {
  readonly name: string;
  readonly periodMs: number;
  /** When it is next due (the heap clears `deadline` when it pops the entry). */
  dueAt: number;
}

/** Named periodic ticks. */
export class Ticks {
  readonly #core: Core;
  readonly #ticks = new Map<string, Tick>();

  constructor(core: Core) {
    this.#core = core;
  }

  /**
   * Reports a `tick` event named `name` every `periodMs` from `now` on, replacing an earlier tick of that
   * name. A period that is not a positive finite number cancels it.
   */
  every(now: number, name: string, periodMs: number): void {
    const old = this.#ticks.get(name);
    if (old) {
      this.#core.timers.ticks.schedule(old, Infinity);
      this.#ticks.delete(name);
    }
    if (!(periodMs > 0) || !Number.isFinite(periodMs)) return;
    const tick: Tick = {
      name,
      periodMs,
      dueAt: now + periodMs,
      deadline: Infinity,
      filedAt: Infinity,
      timerToken: 0,
    };
    this.#ticks.set(name, tick);
    this.#core.timers.ticks.schedule(tick, tick.dueAt);
  }

  /** Reports every tick due at `now` and files its next deadline. */
  run(now: number): void {
    const lane = this.#core.timers.ticks;
    for (;;) {
      const tick = lane.popDue(now) as Tick | undefined;
      if (!tick) return;
      if (this.#ticks.get(tick.name) !== tick) continue;
      this.#core.emit({ type: "tick", name: tick.name });
      let next = tick.dueAt + tick.periodMs;
      if (next <= now) next += Math.ceil((now - next + 1) / tick.periodMs) * tick.periodMs;
      tick.dueAt = next;
      lane.schedule(tick, next);
    }
  }

  /** Cancels every tick (shutdown). */
  clear(): void {
    for (const tick of this.#ticks.values()) this.#core.timers.ticks.schedule(tick, Infinity);
    this.#ticks.clear();
  }
}
