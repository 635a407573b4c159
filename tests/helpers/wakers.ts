/**
 * Waiting for "something new arrived, or a deadline passed" without polling: waiters sleep until `wakeAll()`
 * or their own timeout, whichever comes first. Used by the raw peer and the server-process helpers.
 *
 * @module
 */

/** A set of sleepers woken together. */
export class Wakers {
  readonly #wakers = new Set<() => void>();

  /** Sleeps until {@linkcode wakeAll} or `ms` milliseconds, whichever comes first. */
  wait(ms: number): Promise<void> {
    const { promise, resolve } = Promise.withResolvers<void>();
    const timer = setTimeout(resolve, ms);
    this.#wakers.add(resolve);
    return promise.finally(() => {
      clearTimeout(timer);
      this.#wakers.delete(resolve);
    });
  }

  /** Wakes every sleeper. */
  wakeAll(): void {
    for (const wake of [...this.#wakers]) wake();
  }
}
