/**
 * The wire format, in one import: the message vocabulary (`message.ts`), the codec (`codec.ts`), the payload
 * checks (`payloads.ts`) and socket addresses (`address.ts`). The protocol core and the tools import from
 * here; the rooms behind it stay small.
 *
 * @module
 */
export * from "./message.ts";
export * from "./codec.ts";
export * from "./payloads.ts";
export * from "./address.ts";
