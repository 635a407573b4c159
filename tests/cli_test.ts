import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { type CliRequest, parseCli, usage, UsageError } from "../src/cli.ts";

function usageError(args: string[]): UsageError {
  try {
    parseCli(args);
  } catch (error) {
    assert(error instanceof UsageError, `not a UsageError: ${error}`);
    assert(error instanceof TypeError, "UsageError is a TypeError");
    return error;
  }
  throw new Error(`accepted ${JSON.stringify(args)}`);
}

function run(args: string[]): Extract<CliRequest, { kind: "run" }> {
  const r = parseCli(args);
  assert(r.kind === "run", `not a run: ${JSON.stringify(r)}`);
  return r;
}

Deno.test("no flags runs with nothing overridden", () => {
  assertEquals(parseCli([]), { kind: "run", flags: {}, configFile: undefined, level: undefined });
});

Deno.test("long flags set address, max connections, config file and level", () => {
  assertEquals(
    run(["--address", "0.0.0.0:9000", "--max-connections", "5", "--config", "c.json", "--WARN"]),
    {
      kind: "run",
      flags: { listenAddress: "0.0.0.0:9000", maxConnections: 5 },
      configFile: "c.json",
      level: "warn",
    },
  );
});

Deno.test("short flags -a -m -c work, and --flag=value too", () => {
  const r = run(["-a", "127.0.0.1:1", "-m", "1000000", "-c", "x.json"]);
  assertEquals(r.flags, { listenAddress: "127.0.0.1:1", maxConnections: 1_000_000 });
  assertStrictEquals(r.configFile, "x.json");
  assertEquals(run(["--address=192.0.2.1:80"]).flags, { listenAddress: "192.0.2.1:80" });
});

Deno.test("each log level flag maps to its level", () => {
  const want = { TRACE: "trace", DEBUG: "debug", INFO: "info", WARN: "warn", ERROR: "error" };
  for (const [flag, level] of Object.entries(want)) assertStrictEquals(run([`--${flag}`]).level, level);
});

Deno.test("two log level flags are rejected, naming both", () => {
  const e = usageError(["--DEBUG", "--ERROR"]);
  assert(e.message.includes("--DEBUG") && e.message.includes("--ERROR"), e.message);
  usageError(["--TRACE", "--INFO", "--WARN"]);
});

Deno.test("-h, --help, -V and --version", () => {
  assertEquals(parseCli(["-h"]), { kind: "help" });
  assertEquals(parseCli(["--help"]), { kind: "help" });
  assertEquals(parseCli(["-V"]), { kind: "version" });
  assertEquals(parseCli(["--version"]), { kind: "version" });
});

Deno.test("unknown flags, lowercase level flags and positional arguments are rejected", () => {
  for (const args of [["--port", "1"], ["-x"], ["--debug"], ["serve"], ["-a", "127.0.0.1:1", "extra"]]) {
    const e = usageError(args);
    assert(!e.message.includes("\n"), "one line");
  }
});

Deno.test("an unknown flag names the nearest known flag when it is close", () => {
  assertStrictEquals(
    usageError(["--max-conections", "5"]).message,
    'Unknown option "--max-conections": did you mean --max-connections?',
  );
  assertStrictEquals(
    usageError(["--check-confg"]).message,
    'Unknown option "--check-confg": did you mean --check-config?',
  );
  assertStrictEquals(usageError(["--bogus"]).message, 'Unknown option "--bogus"');
  assertStrictEquals(usageError(["-x"]).message, 'Unknown option "-x"');
});

Deno.test("--check-config asks for a check with the same flags as a run", () => {
  assertEquals(parseCli(["--check-config", "-m", "5", "-c", "c.json", "--WARN"]), {
    kind: "check",
    flags: { maxConnections: 5 },
    configFile: "c.json",
    level: "warn",
  });
  assertEquals(parseCli(["--check-config", "--help"]), { kind: "help" });
});

Deno.test("a flag missing its value is rejected", () => {
  usageError(["-a"]);
  usageError(["--max-connections"]);
  usageError(["-c"]);
});

Deno.test("a bad -m is rejected, quoting the value", () => {
  for (const bad of ["0", "abc", "1.5", "1e3", "1000001", "-5", " 5", "", "0x10"]) {
    const e = usageError([`--max-connections=${bad}`]);
    assert(e.message.includes(`"${bad}"`), e.message);
    assert(e.message.includes("--max-connections"), e.message);
  }
});

Deno.test("a bad -a is rejected, quoting the value", () => {
  for (
    const bad of [
      "127.0.0.1",
      "localhost",
      "::1:80",
      "[::1]",
      "[::1]80",
      "999.1.1.1:80",
      "1.2.3.4:70000",
      "x:1",
    ]
  ) {
    const e = usageError([`--address=${bad}`]);
    assert(e.message.includes(`"${bad}"`), e.message);
    assert(e.message.includes("--address"), e.message);
  }
});

Deno.test("--cluster and --instance-id set the cluster settings; bad values name the flag, not the password", () => {
  const r = parseCli(["--cluster", "redis://127.0.0.1:6379/1", "--instance-id", "a.1"]);
  assert(r.kind === "run");
  assertEquals(r.flags.cluster, { redisUrl: "redis://127.0.0.1:6379/1", instanceId: "a.1" });
  for (
    const [args, flag] of [
      [["--cluster", "http://127.0.0.1:6379"], "--cluster"],
      [["--cluster", "redis://u:pw-secret@h:1/db"], "--cluster"],
      [["--instance-id", "no spaces please"], "--instance-id"],
    ] as const
  ) {
    let message = "";
    try {
      parseCli([...args]);
    } catch (error) {
      assert(error instanceof UsageError);
      message = error.message;
    }
    assert(message.startsWith(`Invalid value for ${flag}: `), message);
    assert(!message.includes("pw-secret"), message);
  }
});

Deno.test("IPv6 addresses are accepted in brackets", () => {
  assertStrictEquals(run(["-a", "[::1]:9000"]).flags.listenAddress, "[::1]:9000");
  assertStrictEquals(run(["-a", "[::]:0"]).flags.listenAddress, "[::]:0");
  assertStrictEquals(run(["-a", "[2001:db8::10]:8080"]).flags.listenAddress, "[2001:db8::10]:8080");
});

Deno.test("usage text lists every flag and the defaults", () => {
  const text = usage();
  for (
    const needle of [
      "-a, --address",
      "-m, --max-connections",
      "-c, --config",
      "-h, --help",
      "--check-config",
      "--TRACE",
      "127.0.0.1:8080",
      "100",
    ]
  ) {
    assert(text.includes(needle), needle);
  }
});
