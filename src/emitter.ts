/**
 * A small typed event emitter for the library's public events.
 *
 * A listener that throws (or returns a promise that rejects) never stops the other listeners and is never
 * lost: the error is logged at error level (category `p2p_server.events`) and emitted as an `error` event
 * ({@linkcode ListenerError}) when the emitter's events have one. An error thrown by an `error` listener
 * itself is logged only, so a broken error handler cannot loop.
 *
 * @module
 */
import { getLogger } from "./deps/log.ts";

const log = getLogger(["p2p_server", "events"]);

/** What `error` listeners receive when another event's listener threw. */
export interface ListenerError {
  /** Always `listener_error`: tells this apart from other `error` events. */
  code: "listener_error";
  /** One line: which event's listener threw, and its message. */
  error: string;
  /** The event whose listener threw. */
  event: string;
  /** What was thrown. */
  cause: unknown;
}

function describe(thrown: unknown): string {
  if (thrown instanceof Error) return `${thrown.name}: ${thrown.message}`;
  try {
    return typeof thrown === "string" ? thrown : JSON.stringify(thrown) ?? String(thrown);
  } catch {
    return String(thrown);
  }
}

/**
 * Listener registry keyed by event name.
 *
 * @example
 * ```ts
 * import { Emitter, type ListenerError } from "./emitter.ts";
 * const events = new Emitter<{ tick: number; error: ListenerError }>();
 * const seen: string[] = [];
 * events.on("error", (e) => seen.push(e.event));
 * events.on("tick", () => {
 *   throw new Error("boom");
 * });
 * events.emit("tick", 1);
 * if (seen[0] !== "tick") throw new Error("the listener's error was lost");
 * ```
 */
export class Emitter<Events extends Record<string, unknown>> {
  #listeners = new Map<keyof Events, Set<(value: never) => unknown>>();
  #reporting = false;
  readonly #onListenerError: ((report: ListenerError) => void) | undefined;

  /**
   * @param onListenerError Also told of every listener error, `error` listeners' own included (the server
   * lists them in its recent events). @default {none}
   */
  constructor(onListenerError?: (report: ListenerError) => void) {
    this.#onListenerError = onListenerError;
  }

  /** Adds a listener; returns a function that removes it. */
  on<K extends keyof Events>(type: K, listener: (value: Events[K]) => unknown): () => void {
    let set = this.#listeners.get(type);
    if (!set) this.#listeners.set(type, set = new Set());
    set.add(listener as (value: never) => unknown);
    return () => set.delete(listener as (value: never) => unknown);
  }

  /** Whether anyone listens for `type` (lets callers skip building an event nobody reads). */
  has<K extends keyof Events>(type: K): boolean {
    return (this.#listeners.get(type)?.size ?? 0) > 0;
  }

  /**
   * Calls every listener of `type`, in the order they were added. A listener that throws, or whose promise
   * rejects, does not stop the others: its error is logged and reported to `error` listeners.
   *
   * @returns How many listeners threw synchronously.
   */
  emit<K extends keyof Events>(type: K, value: Events[K]): number {
    const set = this.#listeners.get(type);
    if (!set) return 0;
    let failed = 0;
    for (const listener of [...set]) {
      let result: unknown;
      try {
        result = (listener as (value: Events[K]) => unknown)(value);
      } catch (error) {
        failed++;
        this.#report(String(type), error);
        continue;
      }
      if (result instanceof Promise) result.catch((error) => this.#report(String(type), error));
    }
    return failed;
  }

  #report(type: string, thrown: unknown): void {
    const text = describe(thrown);
    const stack = thrown instanceof Error && thrown.stack ? thrown.stack : null;
    const report: ListenerError = {
      code: "listener_error",
      error: `event listener for "${type}" threw: ${text}`,
      event: type,
      cause: thrown,
    };
    try {
      this.#onListenerError?.(report);
    } catch {
      // the hook is ours and does not throw; if it did, the log below still says what happened
    }
    // While an `error` listener runs, or when one itself threw, only the log hears of it: no loop.
    if (type === "error" || this.#reporting || !this.has("error")) {
      log.error("event listener for {event} threw: {error}", {
        event: type,
        error: text,
        ...(stack !== null ? { stack } : {}),
      });
      return;
    }
    log.error("event listener for {event} threw: {error} (reported to error listeners)", {
      event: type,
      error: text,
      ...(stack !== null ? { stack } : {}),
    });
    this.#reporting = true;
    try {
      this.emit("error", report as Events[keyof Events]);
    } finally {
      this.#reporting = false;
    }
  }
}
