/**
 * Reliable delivery's data structures in one import: the receive window and RTT estimator (`window.ts`), the
 * outbox and send queue (`outbox.ts`), fragment reassembly (`reassembly.ts`) and ordered delivery
 * (`ordered.ts`). Each is pure and driven with `now` by the core.
 *
 * @module
 */
export * from "./window.ts";
export * from "./outbox.ts";
export * from "./reassembly.ts";
export * from "./ordered.ts";
