/**
 * Log setup for the program (`main.ts`): one line per event on stderr with time, level, category and
 * message. The library only logs through loggers; it never configures logging itself.
 *
 * @module
 */
import {
  configure,
  getJsonLinesFormatter,
  getTextFormatter,
  getThrottlingFilter,
  type LogLevel,
  type LogRecord,
  reset,
  type Sink,
} from "./deps/log.ts";

/** The level names the command line and the environment accept. */
export const LEVELS = ["trace", "debug", "info", "warn", "error"] as const;

/** One of {@linkcode LEVELS}. */
export type Level = typeof LEVELS[number];

/** Maps our level names to the logger's. */
export function toLogLevel(level: Level): LogLevel {
  return level === "warn" ? "warning" : level;
}

/**
 * Reads a level from `RUST_LOG`-style text: a bare level (`debug`) or directives (`p2p_server=debug,info`);
 * the first bare level wins, else the first directive's level. Returns undefined when there is none.
 */
export function parseRustLog(text: string): Level | undefined {
  const parts = text.split(",").map((p) => p.trim().toLowerCase()).filter((p) => p.length > 0);
  const bare = parts.find((p) => (LEVELS as readonly string[]).includes(p));
  if (bare) return bare as Level;
  for (const p of parts) {
    const level = p.split("=")[1];
    if (level !== undefined && (LEVELS as readonly string[]).includes(level)) return level as Level;
  }
  return undefined;
}

/** Where the log level came from, for the startup line. */
export interface LevelChoice {
  /** The level. */
  level: Level;
  /** `flag`, `LOG_LEVEL`, `RUST_LOG` or `default`. */
  source: string;
}

/**
 * Picks the log level: flag > `LOG_LEVEL` > `RUST_LOG` > info.
 *
 * @throws {TypeError} when `LOG_LEVEL` is set to something that is not a level.
 */
export function chooseLevel(
  flag: Level | undefined,
  env: { LOG_LEVEL?: string | undefined; RUST_LOG?: string | undefined },
): LevelChoice {
  if (flag) return { level: flag, source: "flag" };
  const fromEnv = env.LOG_LEVEL?.trim().toLowerCase();
  if (fromEnv) {
    const level = fromEnv === "warning" ? "warn" : fromEnv;
    if (!(LEVELS as readonly string[]).includes(level)) {
      throw new TypeError(`Invalid LOG_LEVEL "${env.LOG_LEVEL}": expected one of ${LEVELS.join(", ")}`);
    }
    return { level: level as Level, source: "LOG_LEVEL" };
  }
  const rust = env.RUST_LOG ? parseRustLog(env.RUST_LOG) : undefined;
  if (rust) return { level: rust, source: "RUST_LOG" };
  return { level: "info", source: "default" };
}

const encoder = new TextEncoder();

/** A sink writing formatted lines to stderr, synchronously (lines never interleave or get lost on exit). */
export function stderrSink(
  format: (record: LogRecord) => string = getTextFormatter({
    timestamp: "rfc3339",
    category: ".",
    value: "bare",
  }),
): Sink {
  return (record) => {
    Deno.stderr.writeSync(encoder.encode(format(record)));
  };
}

/** The line formatter for a log format: text lines, or one JSON object per line. */
export function formatterFor(format: "text" | "json"): (record: LogRecord) => string {
  return format === "json"
    ? getJsonLinesFormatter({ categorySeparator: ".", message: "rendered", properties: "nest:properties" })
    : getTextFormatter({ timestamp: "rfc3339", category: ".", value: "bare" });
}

/**
 * Configures logging for the program. Warnings about dropped datagrams are throttled (at most 10 a second
 * per kind; the rest are summarised) so a flood cannot turn into a log flood.
 *
 * @param level The lowest level logged.
 * @param format `"text"` lines or `"json"` lines. @default {"text"}
 */
export async function setupLogging(level: Level, format: "text" | "json" = "text"): Promise<void> {
  await configure({
    reset: true,
    sinks: { stderr: stderrSink(formatterFor(format)) },
    filters: {
      dropThrottle: getThrottlingFilter({ limit: 10, windowMs: 1000 }),
      remoteThrottle: getThrottlingFilter({ limit: 10, windowMs: 1000 }),
    },
    loggers: [
      { category: ["logtape", "meta"], sinks: ["stderr"], lowestLevel: "warning" },
      { category: ["p2p_server"], sinks: ["stderr"], lowestLevel: toLogLevel(level) },
      { category: ["p2p_server", "drops"], filters: ["dropThrottle"] },
      { category: ["p2p_server", "remote"], filters: ["remoteThrottle"] },
    ],
  });
}

/** Undoes {@linkcode setupLogging}. */
export async function teardownLogging(): Promise<void> {
  await reset();
}
