/**
 * The effective configuration as text, for `p2p_server --check-config`: one `key = value` line per setting,
 * in the config file's keys, with secrets shown as `<redacted>`. Pure; `main.ts` prints the lines.
 *
 * @module
 */
import { type Config, toConfigFile } from "./config.ts";
import { redactRedisUrl } from "./redis_url.ts";

/** What a secret is shown as. */
export const REDACTED = "<redacted>";

/** Keys whose value is a secret as a whole (metrics_token, and any later token, password or secret). */
const SECRET_KEY = /token|password|secret|passphrase/i;

/** Options of {@linkcode describeConfig}. */
export interface DescribeConfigOptions {
  /**
   * Settings that live outside {@linkcode Config} (such as the log level), printed after it in this order.
   * @default {{}}
   */
  extra?: Record<string, unknown>;
}

/**
 * The lines describing `config`: every setting, `cluster.<key>` for each cluster setting (or
 * `cluster = null` when cluster mode is off), values as JSON. A secret key's value is `<redacted>` unless it is
 * null, and a URL's credentials (`redis://user:password@host`) are `<redacted>`.
 *
 * @example
 * ```ts
 * import { describeConfig } from "./config_report.ts";
 * import { resolveConfig } from "./config.ts";
 * const lines = describeConfig(resolveConfig({ metricsToken: "s3cret", maxConnections: 5 }));
 * if (!lines.includes("max_connections = 5")) throw new Error(lines.join("\n"));
 * if (!lines.includes("metrics_token = <redacted>")) throw new Error(lines.join("\n"));
 * if (lines.some((line) => line.includes("s3cret"))) throw new Error("the token is shown");
 * ```
 */
export function describeConfig(config: Config, options: DescribeConfigOptions = {}): string[] {
  const lines: string[] = [];
  const settings = Object.entries({ ...toConfigFile(config), ...options.extra });
  for (const [key, value] of settings) {
    if (key === "cluster" && value !== null && typeof value === "object") {
      for (const [sub, v] of Object.entries(value)) lines.push(`cluster.${sub} = ${shown(sub, v)}`);
    } else {
      lines.push(`${key} = ${shown(key, value)}`);
    }
  }
  return lines;
}

function shown(key: string, value: unknown): string {
  if (value === null || value === undefined) return "null";
  if (SECRET_KEY.test(key)) return REDACTED;
  if (Array.isArray(value)) return `[${value.map((v) => shown(key, v)).join(", ")}]`;
  if (typeof value === "string" && /^[a-z][a-z0-9+.-]*:\/\/[^/?#]*@/i.test(value)) {
    // redactRedisUrl replaces the whole userinfo (user and password) and changes nothing else.
    return JSON.stringify(redactRedisUrl(value)).replace("//***@", `//${REDACTED}@`);
  }
  return JSON.stringify(value);
}
