/**
 * Captures the library's log records in memory for a test: `await using logs = await captureLogs()`, then
 * read `logs.records` (and `logs.lines(format)` for formatted text). Resets logging when disposed.
 *
 * @module
 */
import { configure, type LogRecord, reset } from "../../src/deps/log.ts";

/** Log records captured while it is alive. */
export interface LogCapture extends AsyncDisposable {
  /** Every record of category `p2p_server` (and below), oldest first. */
  readonly records: LogRecord[];
  /** The records rendered as plain text (`level category: message`), for assertions. */
  texts(): string[];
}

/** Starts capturing at `lowest` level and above. */
export async function captureLogs(lowest: "debug" | "info" | "trace" = "debug"): Promise<LogCapture> {
  const records: LogRecord[] = [];
  await configure({
    reset: true,
    sinks: { memory: (record) => void records.push(record) },
    loggers: [
      { category: ["logtape", "meta"], sinks: [], lowestLevel: "warning" },
      { category: ["p2p_server"], sinks: ["memory"], lowestLevel: lowest },
    ],
  });
  return {
    records,
    texts: () =>
      records.map((r) =>
        `${r.level} ${r.category.join(".")}: ${r.message.map((part) => String(part)).join("")}`
      ),
    [Symbol.asyncDispose]: () => reset(),
  };
}
