import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import {
  chooseLevel,
  formatJsonLine,
  formatTextLine,
  parseRustLog,
  renderValue,
  toLogLevel,
} from "../src/logging.ts";
import type { LogRecord } from "../src/deps/log.ts";
import { startServer } from "./helpers/server_process.ts";

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

/** A record as the logger makes it for `template` with `values` (no tagged-template form needed here). */
function record(
  template: string,
  values: Record<string, unknown>,
  level: LogRecord["level"] = "info",
): LogRecord {
  const message: unknown[] = [];
  let rest = template;
  for (;;) {
    const m = /\{(\w+)\}/.exec(rest);
    if (!m) break;
    message.push(rest.slice(0, m.index), values[m[1]!]);
    rest = rest.slice(m.index + m[0].length);
  }
  message.push(rest);
  return {
    category: ["p2p_server", "main"],
    level,
    message,
    rawMessage: template,
    timestamp: Date.UTC(2026, 0, 2, 3, 4, 5, 678),
    properties: values,
  };
}

Deno.test("a JSON log line has a plain-text message and the values as typed fields, exactly", () => {
  assertStrictEquals(
    formatJsonLine(record("{signal} received, disconnecting peers", { signal: "SIGINT" })),
    '{"@timestamp":"2026-01-02T03:04:05.678Z","level":"INFO","message":"SIGINT received, disconnecting peers",' +
      '"logger":"p2p_server.main","properties":{"signal":"SIGINT"}}\n',
  );
  assertStrictEquals(
    formatJsonLine(
      record('unknown key "{key}" in {file}: {n} peers, {flag}, {list}', {
        key: "colour",
        file: undefined,
        n: 3,
        flag: false,
        list: ["a", 1],
      }, "warning"),
    ),
    '{"@timestamp":"2026-01-02T03:04:05.678Z","level":"WARN",' +
      '"message":"unknown key \\"colour\\" in -: 3 peers, false, [\\"a\\",1]","logger":"p2p_server.main",' +
      '"properties":{"key":"colour","n":3,"flag":false,"list":["a",1]}}\n',
  );
});

Deno.test("log values render bare: no quotes around strings, never undefined, errors as name and message", () => {
  assertStrictEquals(renderValue("SIGINT"), "SIGINT");
  assertStrictEquals(renderValue(undefined), "-");
  assertStrictEquals(renderValue(null), "null");
  assertStrictEquals(renderValue(12.5), "12.5");
  assertStrictEquals(renderValue(new RangeError("bad")), "RangeError: bad");
  assertStrictEquals(renderValue({ a: "b" }), '{"a":"b"}');
  const json = JSON.parse(formatJsonLine(record("{e}", { e: new TypeError("x"), gone: undefined })));
  assertEquals(json.properties, { e: { name: "TypeError", message: "x" } });
  assertStrictEquals(json.message, "TypeError: x");
});

Deno.test("a text log line: UTC time, level tag, category and the plain message", () => {
  assertStrictEquals(
    formatTextLine(record("{signal} received, disconnecting peers", { signal: "SIGTERM" })),
    "2026-01-02T03:04:05.678Z [INF] p2p_server.main: SIGTERM received, disconnecting peers\n",
  );
  assertStrictEquals(
    formatTextLine(record("peer {id} {x}", { id: "abc", x: undefined }, "warning")),
    "2026-01-02T03:04:05.678Z [WRN] p2p_server.main: peer abc -\n",
  );
});

Deno.test("the program's JSON lines: no quoted values in messages, no undefined, no quoted keys in fields", async () => {
  await using server = await startServer({ args: ["--log-format", "json"], config: { colour: "blue" } });
  await server.stop();
  const lines = server.stderr.split("\n").filter((l) => l.length > 0);
  assert(lines.length >= 3, server.stderr);
  for (const l of lines) {
    assert(!l.includes("undefined"), l);
    const r = JSON.parse(l);
    assertEquals(Object.keys(r), ["@timestamp", "level", "message", "logger", "properties"], l);
    assertMatch(r["@timestamp"], /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    for (const value of Object.values(r.properties)) {
      if (typeof value === "string") assert(!/^".*"$/.test(value), `a quoted field value in ${l}`);
    }
  }
  const stop = lines.map((l) => JSON.parse(l)).find((r) => r.properties.signal !== undefined);
  assertEquals(stop && { message: stop.message, logger: stop.logger, properties: stop.properties }, {
    message: "SIGTERM received, disconnecting peers",
    logger: "p2p_server.main",
    properties: { signal: "SIGTERM" },
  });
  const unknown = lines.map((l) => JSON.parse(l)).find((r) => r.properties.key === "colour");
  assert(unknown, server.stderr);
  assertStrictEquals(unknown.properties.key, "colour");
});
