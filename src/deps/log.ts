/**
 * Logging. Every logger in p2p_server comes from here so the backend (`@logtape/logtape`) is one import away
 * from a switch.
 * @module
 */
export {
  configure,
  getConsoleSink,
  getJsonLinesFormatter,
  getLogger,
  getTextFormatter,
  getThrottlingFilter,
  reset,
} from "@logtape/logtape";
export type { Logger, LogLevel, LogRecord, Sink } from "@logtape/logtape";
