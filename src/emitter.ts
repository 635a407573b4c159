/**
 * A small typed event emitter for the library's public events.
 *
 * @module
 */

/** Listener registry keyed by event name. */
export class Emitter<Events extends Record<string, unknown>> {
  #listeners = new Map<keyof Events, Set<(value: never) => void>>();

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, listener: (value: Events[K]) => void): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener as (value: never) => void);
    return () => set.delete(listener as (value: never) => void);
  }

  /** Whether anyone listens for `type` (lets callers skip building an event nobody reads). */
  has<K extends keyof Events>(type: K): boolean {
    return (this.#listeners.get(type)?.size ?? 0) > 0;
  }

  /** Calls every listener of `type`. A throwing listener does not stop the others; its error is returned. */
  emit<K extends keyof Events>(type: K, value: Events[K]): unknown[] {
    const set = this.#listeners.get(type);
    if (!set) return [];
    const errors: unknown[] = [];
    for (const listener of [...set]) {
      try {
        (listener as (value: Events[K]) => void)(value);
      } catch (error) {
        errors.push(error);
      }
    }
    return errors;
  }
}
