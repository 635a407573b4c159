import { assertEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import { chooseLevel, parseRustLog, toLogLevel } from "../src/logging.ts";

Deno.test("the level flag beats LOG_LEVEL and RUST_LOG", () => {
  assertEquals(chooseLevel("error", { LOG_LEVEL: "debug", RUST_LOG: "trace" }), {
    level: "error",
    source: "flag",
  });
});

Deno.test("LOG_LEVEL beats RUST_LOG", () => {
  assertEquals(chooseLevel(undefined, { LOG_LEVEL: "warn", RUST_LOG: "trace" }), {
    level: "warn",
    source: "LOG_LEVEL",
  });
});

Deno.test("RUST_LOG is used when neither flag nor LOG_LEVEL is set", () => {
  assertEquals(chooseLevel(undefined, { RUST_LOG: "debug" }), { level: "debug", source: "RUST_LOG" });
  assertEquals(chooseLevel(undefined, { LOG_LEVEL: "", RUST_LOG: "debug" }), {
    level: "debug",
    source: "RUST_LOG",
  });
});

Deno.test("the default level is info", () => {
  assertEquals(chooseLevel(undefined, {}), { level: "info", source: "default" });
  assertEquals(chooseLevel(undefined, { RUST_LOG: "nonsense" }), { level: "info", source: "default" });
});

Deno.test("LOG_LEVEL is case-insensitive, trimmed, and accepts warning", () => {
  assertStrictEquals(chooseLevel(undefined, { LOG_LEVEL: " DeBuG " }).level, "debug");
  assertStrictEquals(chooseLevel(undefined, { LOG_LEVEL: "WARNING" }).level, "warn");
});

Deno.test("an invalid LOG_LEVEL is a TypeError quoting it", () => {
  assertThrows(
    () => chooseLevel(undefined, { LOG_LEVEL: "loud" }),
    (e: unknown) => e instanceof TypeError && e.message.includes('"loud"') && e.message.includes("trace"),
  );
  assertEquals(chooseLevel("info", { LOG_LEVEL: "loud" }).level, "info", "a flag makes LOG_LEVEL irrelevant");
});

Deno.test("parseRustLog reads a bare level, directives, and mixes of both", () => {
  const cases: [string, string | undefined][] = [
    ["debug", "debug"],
    ["TRACE", "trace"],
    ["p2p_server=debug", "debug"],
    ["p2p_server::net=trace", "trace"],
    ["p2p_server=debug,warn", "warn"],
    ["info,p2p_server=trace", "info"],
    ["tokio=error,p2p_server=debug", "error"],
    [" debug , ", "debug"],
    ["p2p_server", undefined],
    ["verbose", undefined],
    ["", undefined],
  ];
  for (const [text, want] of cases) assertStrictEquals(parseRustLog(text), want, JSON.stringify(text));
});

Deno.test("warn maps to the logger's warning level", () => {
  assertStrictEquals(toLogLevel("warn"), "warning");
  assertStrictEquals(toLogLevel("trace"), "trace");
});
