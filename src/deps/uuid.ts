/**
 * UUID validation. Generation uses the built-in `crypto.randomUUID()`; validation uses the npm `uuid`
 * package. One module so a switch to `jsr:@std/uuid` is a one-line change.
 * @module
 */
export { validate as isUuid } from "uuid";
