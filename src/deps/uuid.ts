/**
 * UUID validation. Generation uses the built-in `crypto.randomUUID()`; validation is one regular expression,
 * the same rule the npm `uuid` package's `validate` applies (measured equal speed, see docs/dependencies.md),
 * so the package is not a dependency.
 * @module
 */

/** RFC 9562 UUIDs: versions 1 to 8 with the variant bits 10, plus the nil and max UUIDs; any letter case. */
const UUID =
  /^(?:[0-9a-f]{8}-[0-9a-f]{4}-[1-8][0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}|00000000-0000-0000-0000-000000000000|ffffffff-ffff-ffff-ffff-ffffffffffff)$/i;

/**
 * Whether `value` is a UUID in its hyphenated text form (RFC 9562 versions 1 to 8, nil or max).
 * @example
 * ```ts
 * import { isUuid } from "./uuid.ts";
 * if (!isUuid(crypto.randomUUID()) || isUuid("not-a-uuid")) throw new Error("unexpected");
 * ```
 */
export function isUuid(value: string): boolean {
  return UUID.test(value);
}
