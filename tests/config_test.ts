import { assert, assertEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import {
  type Config,
  CONFIG_FILE_KEYS,
  ConfigError,
  DEFAULT_CONFIG,
  parseConfigFile,
  resolveConfig,
  toConfigFile,
} from "../src/config.ts";

const FILE = "conf/p2p.json";

function configError(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (error) {
    assert(error instanceof ConfigError, `not a ConfigError: ${error}`);
    assert(error instanceof TypeError, "ConfigError is a TypeError");
    return error;
  }
  throw new Error("did not throw");
}

Deno.test("the defaults are the spec's config.json values", () => {
  assertEquals(resolveConfig(), {
    listenAddress: "127.0.0.1:8080",
    maxConnections: 100,
    heartbeatInterval: 30,
    connectionTimeout: 60,
    discoveryPortRange: [8081, 8090],
    enableDiscovery: true,
    maxMessageSize: 1_048_576,
    retransmitPolicy: "adaptive",
    retransmitSchedule: [500, 1_000, 2_000],
    rtoInitialMs: 500,
    rtoMinMs: 100,
    rtoMaxMs: 2_000,
    handshakeTimeout: 10,
    deliveryTimeout: 30,
    maxDatagramSize: 1_200,
    reassemblyBufferBytes: 67_108_864,
    cookieMode: "auto",
    cookieThreshold: 64,
    halfOpenTimeout: 60,
    rateLimitDatagramsPerIp: [2_000, 4_000],
    rateLimitHandshakesPerIp: [50, 100],
    rateLimitDatagramsPerNode: [1_000, 2_000],
    rateLimitDatagramsGlobal: [200_000, 200_000],
    banSeconds: 0,
    rateLimitExemptLoopback: true,
    auth: "optional",
    authAllowKeys: null,
    authMaxSkew: 60,
    identityFile: null,
    suggestedKeepalive: 15,
    relayQuota: [1_000, 1_048_576],
    discoveryPageSize: 64,
    metricsAddress: null,
    metricsToken: null,
    metricsAllowedHosts: [],
    metricsMaxConnections: 64,
    logFormat: "text",
    statsInterval: 60,
    cluster: null,
    stunAlternatePort: null,
    stunAlternateAddress: null,
    natLifetimeGapsMs: [5_000, 10_000, 20_000, 30_000, 45_000, 60_000, 90_000, 120_000],
    ioBackend: "deno",
    cryptoBackend: "auto",
  });
});

Deno.test("nat_lifetime_gaps_ms: increasing gaps from 200 ms to 10 min, at most 12; [] turns it off", () => {
  assertEquals(resolveConfig({ natLifetimeGapsMs: [] }).natLifetimeGapsMs, []);
  assertEquals(resolveConfig({ natLifetimeGapsMs: [200, 600_000] }).natLifetimeGapsMs, [200, 600_000]);
  const bad: unknown[] = [
    [199],
    [600_001],
    [1_000, 1_000],
    [2_000, 1_000],
    [1_000.5],
    ["1000"],
    Array.from({ length: 13 }, (_, i) => 1_000 * (i + 1)),
    null,
    5_000,
  ];
  for (const v of bad) {
    const e = configError(() => resolveConfig({ natLifetimeGapsMs: v as number[] }));
    assert(
      e.message.startsWith('Invalid config "nat_lifetime_gaps_ms": must be a list of at most 12'),
      e.message,
    );
    assert(e.message.endsWith(`got ${JSON.stringify(v)}`), e.message);
  }
  const e = configError(() => parseConfigFile('{"nat_lifetime_gaps_ms": [1000, 500]}', FILE));
  assertStrictEquals(
    e.message,
    `${FILE}: "nat_lifetime_gaps_ms" must be a list of at most 12 increasing gaps in milliseconds, each from ` +
      "200 to 600000 ([] turns it off), got [1000,500]",
  );
});

Deno.test("STUN alternates: each key checked alone and with listen_address, the error naming key and value", () => {
  const ok = resolveConfig({
    listenAddress: "203.0.113.1:3478",
    stunAlternatePort: 3479,
    stunAlternateAddress: "203.0.113.2",
  });
  assertEquals([ok.stunAlternatePort, ok.stunAlternateAddress], [3479, "203.0.113.2"]);
  assertEquals(resolveConfig({ listenAddress: "0.0.0.0:0", stunAlternatePort: 0 }).stunAlternatePort, 0);
  const bad: [Partial<Config>, string][] = [
    [{ stunAlternatePort: 65536 }, '"stun_alternate_port": must be null (off) or a UDP port'],
    [
      { stunAlternatePort: 8080 },
      '"stun_alternate_port": must differ from the port of listen_address, got 8080',
    ],
    [{ stunAlternateAddress: "203.0.113.2:1" }, '"stun_alternate_address": must be null (off) or an IP'],
    [{ stunAlternateAddress: "0.0.0.0", stunAlternatePort: 1 }, '"stun_alternate_address": must be null'],
    [{ stunAlternateAddress: "127.0.0.2" }, '"stun_alternate_address": needs stun_alternate_port to be set'],
    [
      { listenAddress: "0.0.0.0:3478", stunAlternatePort: 3479, stunAlternateAddress: "127.0.0.2" },
      '"stun_alternate_address": needs listen_address to be one IP address, not "0.0.0.0", got "127.0.0.2"',
    ],
    [
      { stunAlternatePort: 3479, stunAlternateAddress: "::1" },
      "must be of the same IP family as listen_address",
    ],
    [{ stunAlternatePort: 3479, stunAlternateAddress: "127.0.0.1" }, "must differ from the IP address"],
  ];
  for (const [partial, message] of bad) {
    const error = configError(() => resolveConfig(partial));
    assert(error.message.includes(message), `${error.message} lacks ${message}`);
  }
  const file = configError(() => parseConfigFile('{"stun_alternate_port": "x"}', "c.json"));
  assertEquals(file.key, "stun_alternate_port");
});

Deno.test("cluster settings: completed with defaults, each sub-key checked by name, credentials never shown", () => {
  const { config } = parseConfigFile(
    JSON.stringify({ cluster: { redis_url: "redis://10.0.0.5:6380/2", instance_id: "eu-1" } }),
    "c.json",
  );
  assertEquals(resolveConfig(config).cluster, {
    redisUrl: "redis://10.0.0.5:6380/2",
    instanceId: "eu-1",
    peerTtl: 30,
    keyPrefix: "p2p:",
    redisCluster: false,
    tlsCaFile: null,
    tlsCertFile: null,
    tlsKeyFile: null,
    tlsServerName: null,
  });
  // The file may leave redis_url to the command line; resolveConfig then requires it.
  const partial = parseConfigFile(JSON.stringify({ cluster: { peer_ttl: 5 } }), "c.json").config;
  assertThrows(() => resolveConfig(partial), /"cluster\.redis_url" must be a string/);
  const bad: [unknown, RegExp][] = [
    [
      { redis_url: "http://h:1" },
      /c\.json: "cluster\.redis_url" must be redis\[s\]:\/\/.*the scheme must be/,
    ],
    [{ redis_url: "redis://user:hunter2@h:1/x" }, /"cluster\.redis_url" .*redis:\/\/\*\*\*:\*\*\*@h:1\/x/],
    [{ redis_url: "redis://h:1", instance_id: "a b" }, /"cluster\.instance_id" must be null or 1 to 64/],
    [{ redis_url: "redis://h:1", peer_ttl: 0 }, /"cluster\.peer_ttl" must be a number of seconds from 1/],
    [{ redis_url: "redis://h:1", key_prefix: "a b" }, /"cluster\.key_prefix" must be up to 64/],
    [{ redis_url: "redis://h:1", colour: 1 }, /"cluster\.colour" is not a cluster setting/],
    ["redis://h:1", /"cluster" must be null or an object/],
    // The kinds of URL and the settings that go with them.
    [
      { redis_url: "redis://a:1,b:2" },
      /"cluster\.redis_url" names several servers, which needs "redis_cluster"/,
    ],
    [{ redis_url: "redis://a:1/3", redis_cluster: true }, /must not name a database with "redis_cluster"/],
    [{ redis_url: "redis-sentinel://a:1/m", redis_cluster: true }, /"cluster\.redis_cluster" must be false/],
    [{ redis_url: "redis-sentinel://a:1" }, /"cluster\.redis_url" .*must name the master/],
    [{ redis_url: "redis://h:1", redis_cluster: "yes" }, /"cluster\.redis_cluster" must be true or false/],
    [{ redis_url: "redis://h:1", tls_ca_file: "/ca.pem" }, /"cluster\.tls_ca_file" needs a rediss:\/\//],
    [{ redis_url: "rediss://h:1", tls_cert_file: "/c.pem" }, /"cluster\.tls_key_file" must be set too/],
    [
      { redis_url: "rediss://h:1", tls_server_name: "a b" },
      /"cluster\.tls_server_name" must be null or a host/,
    ],
    [
      { redis_url: "rediss://:hunter2@h:1", tls_ca_file: 3 },
      /"cluster\.tls_ca_file" must be null or the path/,
    ],
  ];
  for (const [value, message] of bad) {
    let error: unknown = null;
    try {
      resolveConfig(parseConfigFile(JSON.stringify({ cluster: value }), "c.json").config);
    } catch (e) {
      error = e;
    }
    assert(error instanceof ConfigError, `${JSON.stringify(value)} accepted`);
    assert(message.test(error.message), error.message);
    assert(!error.message.includes("hunter2"), error.message);
    assert(error.key.startsWith("cluster"), error.key);
  }
  // Every kind of URL with its settings is accepted.
  for (
    const cluster of [
      {
        redis_url: "rediss://:hunter2@redis.example:6380/1",
        tls_ca_file: "/ca.pem",
        tls_server_name: "r.test",
      },
      { redis_url: "rediss://h:1", tls_cert_file: "/c.pem", tls_key_file: "/k.pem" },
      { redis_url: "redis://10.0.0.1:7000,10.0.0.2:7000", redis_cluster: true },
      { redis_url: "redis-sentinel://10.0.0.1,10.0.0.2:26380,[::1]/mymaster/2" },
      { redis_url: "rediss-sentinel://s1:26379/main", tls_ca_file: "/ca.pem" },
    ]
  ) resolveConfig(parseConfigFile(JSON.stringify({ cluster }), "c.json").config);
  // Round trip through the file format.
  const written = toConfigFile(resolveConfig(config));
  assertEquals(
    parseConfigFile(JSON.stringify(written), "w.json").config.cluster,
    resolveConfig(config).cluster,
  );
});

Deno.test("parseConfigFile reads the spec's config.json keys", () => {
  const { config, unknownKeys } = parseConfigFile(
    JSON.stringify({
      listen_address: "0.0.0.0:9000",
      max_connections: 5,
      heartbeat_interval: 1.5,
      connection_timeout: 10,
      discovery_port_range: [9001, 9001],
      enable_discovery: false,
      max_message_size: 4_096,
      retransmit_schedule_ms: [100, 200],
      discovery_page_size: 10,
    }),
    FILE,
  );
  assertEquals(unknownKeys, []);
  assertEquals(config, {
    listenAddress: "0.0.0.0:9000",
    maxConnections: 5,
    heartbeatInterval: 1.5,
    connectionTimeout: 10,
    discoveryPortRange: [9001, 9001],
    enableDiscovery: false,
    maxMessageSize: 4_096,
    retransmitSchedule: [100, 200],
    discoveryPageSize: 10,
  });
});

Deno.test("parseConfigFile reports unknown keys by name and keeps the known ones", () => {
  const { config, unknownKeys } = parseConfigFile(
    '{"max_connections": 3, "colour": "red", "maxConnections": 9, "MAX_CONNECTIONS": 1}',
    FILE,
  );
  assertEquals(config, { maxConnections: 3 });
  assertEquals(unknownKeys, ["colour", "maxConnections", "MAX_CONNECTIONS"]);
});

Deno.test("each bad config file value is rejected with an error naming the file, the key and the value", () => {
  const cases: [string, unknown][] = [
    ["listen_address", "127.0.0.1"],
    ["listen_address", "::1:8080"],
    ["listen_address", 8080],
    ["listen_address", "300.0.0.1:80"],
    ["max_connections", 0],
    ["max_connections", 1.5],
    ["max_connections", "100"],
    ["max_connections", 1_000_001],
    ["heartbeat_interval", 0],
    ["heartbeat_interval", -5],
    ["heartbeat_interval", "30"],
    ["heartbeat_interval", 86_401],
    ["connection_timeout", 0],
    ["connection_timeout", null],
    ["discovery_port_range", [8090, 8081]],
    ["discovery_port_range", [0, 10]],
    ["discovery_port_range", [8081]],
    ["discovery_port_range", "8081-8090"],
    ["enable_discovery", "yes"],
    ["enable_discovery", 1],
    ["max_message_size", 0],
    ["retransmit_schedule_ms", []],
    ["retransmit_schedule_ms", [0]],
    ["retransmit_schedule_ms", [1.5]],
    ["retransmit_schedule_ms", 500],
    ["discovery_page_size", 0],
  ];
  for (const [key, value] of cases) {
    const e = configError(() => parseConfigFile(JSON.stringify({ [key]: value }), FILE));
    assertStrictEquals(e.key, key);
    assert(e.message.startsWith(`${FILE}: `), e.message);
    assert(e.message.includes(`"${key}"`), e.message);
    assert(e.message.includes(`got ${JSON.stringify(value)}`), e.message);
    assert(!e.message.endsWith("."), "no trailing period");
  }
});

Deno.test("a config file that is not a JSON object is rejected naming the file", () => {
  for (const text of ["{", "", "[1]", "null", '"x"']) {
    const e = configError(() => parseConfigFile(text, FILE));
    assert(e.message.startsWith(`${FILE}: `), e.message);
  }
});

Deno.test("resolveConfig fills defaults, applies overrides and ignores undefined", () => {
  // JavaScript callers (and spread flag objects) may pass explicit undefined; the type forbids it.
  const partial = { maxConnections: 7, listenAddress: undefined, retransmitSchedule: [10] };
  const c = resolveConfig(partial as unknown as Partial<Config>);
  assertStrictEquals(c.maxConnections, 7);
  assertStrictEquals(c.listenAddress, DEFAULT_CONFIG.listenAddress);
  assertEquals(c.retransmitSchedule, [10]);
  assertStrictEquals(c.heartbeatInterval, 30);
});

Deno.test("resolveConfig rejects a bad value naming the config key", () => {
  const e = configError(() => resolveConfig({ maxConnections: -1 }));
  assertStrictEquals(e.key, "max_connections");
  assertStrictEquals(
    e.message,
    'Invalid config "max_connections": must be an integer from 1 to 1000000, got -1',
  );
  assertThrows(() => resolveConfig({ listenAddress: "nowhere" }), ConfigError);
  assertThrows(() => resolveConfig({ discoveryPortRange: [2, 1] }), ConfigError);
});

Deno.test("resolveConfig returns fresh arrays, never the defaults' own", () => {
  const c = resolveConfig();
  c.retransmitSchedule.push(99);
  c.discoveryPortRange[0] = 1;
  assertEquals(DEFAULT_CONFIG.retransmitSchedule, [500, 1_000, 2_000]);
  assertEquals(DEFAULT_CONFIG.discoveryPortRange, [8081, 8090]);
  assertEquals(resolveConfig().retransmitSchedule, [500, 1_000, 2_000]);
  assert(Object.isFrozen(DEFAULT_CONFIG));
});

Deno.test("toConfigFile writes every key and parseConfigFile reads it back", () => {
  const c = resolveConfig({ maxConnections: 9, enableDiscovery: false });
  const file = toConfigFile(c);
  assertEquals(Object.keys(file), Object.keys(CONFIG_FILE_KEYS));
  const { config, unknownKeys } = parseConfigFile(JSON.stringify(file), FILE);
  assertEquals(unknownKeys, []);
  assertEquals(resolveConfig(config), c);
});

Deno.test("reliability keys are validated and rto_min_ms may not exceed rto_max_ms", () => {
  const bad = (partial: Record<string, unknown>, key: string) => {
    assertStrictEquals(configError(() => resolveConfig(partial as Partial<Config>)).key, key);
  };
  bad({ retransmitPolicy: "fast" }, "retransmit_policy");
  bad({ maxDatagramSize: 500 }, "max_datagram_size");
  bad({ maxDatagramSize: 65_508 }, "max_datagram_size");
  bad({ handshakeTimeout: 0 }, "handshake_timeout");
  bad({ deliveryTimeout: -1 }, "delivery_timeout");
  bad({ rtoMinMs: 0 }, "rto_min_ms");
  bad({ rtoMinMs: 3_000, rtoMaxMs: 2_000 }, "rto_min_ms");
  const { config } = parseConfigFile(
    '{"retransmit_policy": "schedule", "rto_max_ms": 4000, "max_datagram_size": 1400}',
    FILE,
  );
  assertEquals(config, { retransmitPolicy: "schedule", rtoMaxMs: 4_000, maxDatagramSize: 1_400 });
});
