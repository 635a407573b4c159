/**
 * The command line through the real program (`main.ts` in a subprocess): usage errors as two lines, the
 * nearest flag or config key suggested, `--check-config`, and `--instance-id` without cluster mode.
 *
 * @module
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { CONFIG_FILE_KEYS } from "../src/config.ts";
import { runScript } from "./helpers/server_process.ts";

const HINT = "run 'p2p_server --help' for usage";

/** The exact stderr of a usage error: the error line and the pointer to --help. */
function usageStderr(message: string): string {
  return `error: ${message}\n${HINT}\n`;
}

/** stderr lines without the logger's timestamp and level prefix. */
function warnings(stderr: string): string[] {
  const prefix = /^.*?\[WRN\] p2p_server\.main: /;
  return stderr.split("\n").filter((l) => prefix.test(l)).map((l) => l.replace(prefix, ""));
}

// ------------------------------------------------------------------ usage errors and suggestions

Deno.test("a mistyped flag exits 2 with the error, the nearest flag, and one line pointing at --help", async () => {
  const r = await runScript({ args: ["--max-conections", "5"] });
  assertStrictEquals(r.code, 2, r.stderr);
  assertStrictEquals(r.stdout, "");
  assertStrictEquals(
    r.stderr,
    usageStderr('Unknown option "--max-conections": did you mean --max-connections?'),
  );
});

Deno.test("a flag in the wrong case or with underscores is suggested as written in --help", async () => {
  for (
    const [flag, near] of [["--debug", "--DEBUG"], ["--instance_id", "--instance-id"], [
      "--confg",
      "--config",
    ]]
  ) {
    const r = await runScript({ args: [flag!, "x"] });
    assertStrictEquals(r.code, 2, r.stderr);
    assertStrictEquals(r.stderr, usageStderr(`Unknown option "${flag}": did you mean ${near}?`));
  }
});

Deno.test("a flag close to none gets no suggestion", async () => {
  const r = await runScript({ args: ["--port", "9000"] });
  assertStrictEquals(r.code, 2, r.stderr);
  assertStrictEquals(r.stderr, usageStderr('Unknown option "--port"'));
});

Deno.test("a bad flag value exits 2 with one error line naming flag and value, and the pointer to --help", async () => {
  const r = await runScript({ args: ["-m", "abc"] });
  assertStrictEquals(r.code, 2, r.stderr);
  assertStrictEquals(r.stdout, "");
  assertStrictEquals(
    r.stderr,
    usageStderr('Invalid value for --max-connections: "abc": expected an integer from 1 to 1000000'),
  );
});

Deno.test("an unknown config file key is warned about with the nearest key, a far one without", async () => {
  const r = await runScript({ config: { max_conections: 5, colour: "red" }, args: ["--check-config"] });
  assertStrictEquals(r.code, 0, r.stderr);
  assertEquals(warnings(r.stderr), [
    `unknown key "max_conections" in ${r.configPath} is ignored: did you mean "max_connections"?`,
    `unknown key "colour" in ${r.configPath} is ignored`,
  ]);
  assert(r.stdout.split("\n").includes("max_connections = 100"), "the mistyped key set nothing");
});

// ------------------------------------------------------------------ --instance-id without cluster mode

Deno.test("--instance-id without --cluster exits 2 naming the real problem in one line", async () => {
  for (const config of [{}, { cluster: null }]) {
    const r = await runScript({ config, args: ["--instance-id", "eu-1"] });
    assertStrictEquals(r.code, 2, r.stderr);
    assertStrictEquals(r.stdout, "");
    assertStrictEquals(
      r.stderr,
      usageStderr('--instance-id "eu-1" needs --cluster <REDIS_URL> (cluster mode is off)'),
    );
  }
});

Deno.test("--instance-id completes the config file's cluster.redis_url", async () => {
  const r = await runScript({
    config: { cluster: { redis_url: "redis://10.0.0.5:6379/2" } },
    args: ["--instance-id", "eu-1", "--check-config"],
  });
  assertStrictEquals(r.code, 0, r.stderr);
  const lines = r.stdout.split("\n");
  assert(lines.includes('cluster.redis_url = "redis://10.0.0.5:6379/2"'), r.stdout);
  assert(lines.includes('cluster.instance_id = "eu-1"'), r.stdout);
});

// ------------------------------------------------------------------ --check-config

Deno.test("--check-config prints every setting once with secrets redacted, and exits 0", async () => {
  const r = await runScript({
    config: {
      metrics_token: "tok-s3cret",
      cluster: { redis_url: "redis://app:pw-s3cret@10.0.0.5:6379/2", peer_ttl: 20 },
    },
    args: ["--check-config", "-m", "7", "--DEBUG"],
  });
  assertStrictEquals(r.code, 0, r.stderr);
  assertStrictEquals(r.stderr, "");
  assert(!r.stdout.includes("s3cret"), r.stdout);
  const lines = r.stdout.trimEnd().split("\n");
  for (const key of Object.keys(CONFIG_FILE_KEYS).filter((k) => k !== "cluster")) {
    assertStrictEquals(lines.filter((l) => l.startsWith(`${key} = `)).length, 1, `${key}:\n${r.stdout}`);
  }
  for (
    const line of [
      'listen_address = "127.0.0.1:0"', // from the file
      "max_connections = 7", // from the flag
      "heartbeat_interval = 30", // the default
      "discovery_port_range = [8081, 8090]",
      "enable_discovery = false",
      "identity_file = null",
      "metrics_token = <redacted>",
      'cluster.redis_url = "redis://<redacted>@10.0.0.5:6379/2"',
      "cluster.peer_ttl = 20",
      "cluster.instance_id = null",
      'log_level = "debug"',
    ]
  ) {
    assert(lines.includes(line), `no line ${JSON.stringify(line)}:\n${r.stdout}`);
  }
  assert(lines.every((l) => / = /.test(l)), r.stdout);
});

Deno.test("--check-config shows cluster mode off as one line", async () => {
  const r = await runScript({ args: ["--check-config"] });
  assertStrictEquals(r.code, 0, r.stderr);
  const lines = r.stdout.split("\n");
  assert(lines.includes("cluster = null"), r.stdout);
  assert(lines.includes("metrics_token = null"), r.stdout);
});

Deno.test("--check-config binds nothing: it passes with addresses in use that a real start cannot bind", async () => {
  const udp = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
  using tcp = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const address = `127.0.0.1:${(udp.addr as Deno.NetAddr).port}`;
    const metrics = `127.0.0.1:${tcp.addr.port}`;
    const args = ["-a", address, "--metrics-address", metrics];
    const check = await runScript({ args: ["--check-config", ...args] });
    assertStrictEquals(check.code, 0, check.stderr);
    assert(check.stdout.split("\n").includes(`listen_address = "${address}"`), check.stdout);
    assert(!check.stdout.includes("listening"), check.stdout);
    // The same flags without --check-config try to bind, and fail: the check above would have noticed.
    const start = await runScript({ args });
    assertStrictEquals(start.code, 1, start.stderr);
  } finally {
    udp.close();
  }
});

Deno.test("--check-config with a bad config file exits 2 with the one error line and prints nothing else", async () => {
  const r = await runScript({ config: { max_connections: -1 }, args: ["--check-config"] });
  assertStrictEquals(r.code, 2, r.stderr);
  assertStrictEquals(r.stdout, "");
  assertStrictEquals(
    r.stderr,
    `error: ${r.configPath}: "max_connections" must be an integer from 1 to 1000000, got -1\n`,
  );
});

Deno.test("--check-config with a bad flag exits 2 with the usage error", async () => {
  const r = await runScript({ args: ["--check-config", "--log-format", "xml"] });
  assertStrictEquals(r.code, 2, r.stderr);
  assertStrictEquals(r.stdout, "");
  assertStrictEquals(
    r.stderr,
    usageStderr('Invalid value for --log-format: "xml": expected one of text, json'),
  );
});
