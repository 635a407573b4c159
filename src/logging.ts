/**
 * Log setup for the program (`main.ts`): one line per event on stderr with time, level, category and
 * message. The library only logs through loggers; it never configures logging itself.
 *
 * @module
 */
import {
  configure,
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

/**
 * How a value reads inside a log message: strings as they are (never quoted), numbers and booleans as
 * text, an error as `Name: message`, objects and arrays as compact JSON, and a missing value as `-` (never
 * `undefined`).
 */
export function renderValue(value: unknown): string {
  if (value === undefined) return "-";
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean" || typeof value === "bigint") {
    return String(value);
  }
  if (value === null) return "null";
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value, (_k, v) => typeof v === "bigint" ? String(v) : v) ?? String(value);
  } catch {
    return String(value);
  }
}

/** The message of a record as plain text: the template with each value rendered by {@linkcode renderValue}. */
export function renderMessage(record: LogRecord): string {
  let text = "";
  record.message.forEach((part, i) => {
    text += i % 2 === 0 ? String(part) : renderValue(part);
  });
  return text;
}

/** A record's properties as JSON fields: undefined values left out, errors as `{name, message}`. */
function fields(properties: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(properties)) {
    if (value === undefined) continue;
    out[key] = value instanceof Error
      ? { name: value.name, message: value.message }
      : typeof value === "bigint"
      ? String(value)
      : value;
  }
  return out;
}

const LEVEL_TAGS: Record<LogLevel, string> = {
  trace: "TRC",
  debug: "DBG",
  info: "INF",
  warning: "WRN",
  error: "ERR",
  fatal: "FTL",
};

const LEVEL_NAMES: Record<LogLevel, string> = {
  trace: "TRACE",
  debug: "DEBUG",
  info: "INFO",
  warning: "WARN",
  error: "ERROR",
  fatal: "FATAL",
};

/**
 * One text line: `2026-01-02T03:04:05.678Z [INF] p2p_server.main: message`, the time in UTC. A `stack`
 * property (a listener's error) follows on indented lines.
 */
export function formatTextLine(record: LogRecord): string {
  let line = `${new Date(record.timestamp).toISOString()} [${LEVEL_TAGS[record.level]}] ` +
    `${record.category.join(".")}: ${renderMessage(record)}\n`;
  const stack = record.properties.stack;
  if (typeof stack === "string") {
    line += stack.split("\n").slice(1).map((l) => `    ${l.trim()}\n`).join("");
  }
  return line;
}

/**
 * One JSON line: `{"@timestamp":"…Z","level":"INFO","message":"…","logger":"p2p_server.main",
 * "properties":{…}}`. The message is plain text (values unquoted, as in the text format); the values are
 * fields under `properties` with their JSON types; a value that is undefined is left out.
 */
export function formatJsonLine(record: LogRecord): string {
  return JSON.stringify({
    "@timestamp": new Date(record.timestamp).toISOString(),
    level: LEVEL_NAMES[record.level],
    message: renderMessage(record),
    logger: record.category.join("."),
    properties: fields(record.properties),
  }) + "\n";
}

/** A sink writing formatted lines to stderr, synchronously (lines never interleave or get lost on exit). */
export function stderrSink(format: (record: LogRecord) => string = formatTextLine): Sink {
  return (record) => {
    Deno.stderr.writeSync(encoder.encode(format(record)));
  };
}

/** The line formatter for a log format: text lines, or one JSON object per line. */
export function formatterFor(format: "text" | "json"): (record: LogRecord) => string {
  return format === "json" ? formatJsonLine : formatTextLine;
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
