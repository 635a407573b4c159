/**
 * The error of a bad setting, shared by the config file, the flags and the library options.
 *
 * @module
 */

/**
 * A bad configuration value; the message names the source, the key and the value.
 *
 * @example A server option out of range
 * ```ts
 * import { ConfigError, P2PServer } from "../mod.ts";
 * try {
 *   new P2PServer({ maxConnections: -1 });
 *   throw new Error("accepted");
 * } catch (error) {
 *   if (!(error instanceof ConfigError) || !error.message.includes("-1")) throw error;
 * }
 * ```
 */
export class ConfigError extends TypeError {
  /** The offending key, as written by the user (`max_connections`, `--address`, ...). */
  readonly key: string;
  /**
   * A bad value of `key`.
   *
   * @param message One line naming the key and the value.
   * @param key The offending key.
   */
  constructor(message: string, key: string) {
    super(message);
    this.name = "ConfigError";
    this.key = key;
  }
}
