/**
 * The surface of the package's main entry, mod.ts: what a user of `P2PServer` and `P2PClient` needs and the
 * types their signatures mention, nothing internal. Adding an export, or letting an internal one back in,
 * means changing the list below on purpose.
 */
import { assertEquals } from "./deps/assert.ts";
import * as mod from "../mod.ts";

/** Every name mod.ts exports, values and types, by what they are for. */
const SURFACE: Record<string, readonly string[]> = {
  server: ["P2PServer", "SERVER_CAPABILITIES", "ServerOptions", "ServerEvents", "PeerSummary", "LeaveReason"],
  serverFetch: ["OpsRequestInfo"],
  serverClusterLink: [
    "OpenClusterLink",
    "ClusterLink",
    "ClusterLinkEvents",
    "RedisLink",
    "RedisLinkEvents",
    "RedisLinkOptions",
    "RedisTlsOptions",
    "RedisTopology",
  ],
  events: ["ListenerError"],
  client: [
    "P2PClient",
    "ClientOptions",
    "ClientEvents",
    "ClientSendOptions",
    "DirectPeer",
    "DiscoveryPage",
    "DiscoveryQuery",
    "Strategy",
    "STRATEGIES",
  ],
  config: [
    "Config",
    "ConfigError",
    "ClusterConfig",
    "COOKIE_MODES",
    "CookieMode",
    "IO_BACKENDS",
    "IoBackend",
    "LOG_FORMATS",
    "LogFormat",
    "RETRANSMIT_POLICIES",
    "RetransmitPolicy",
    "CRYPTO_BACKENDS",
    "CryptoBackend",
    "AUTH_POLICIES",
    "AuthPolicy",
    "IdentityOptions",
    "VERSION",
  ],
  identity: ["Identity", "generateIdentity", "nodeIdForKey", "loadOrCreateIdentity", "KeyFileError"],
  errors: [
    "BindError",
    "ConnectionTimeoutError",
    "HandshakeError",
    "RemoteError",
    "UnstableApiError",
    "ERROR_CODES",
    "CLIENT_AUTH_CODES",
  ],
  messages: [
    "Json",
    "Message",
    "MessageType",
    "MESSAGE_TYPES",
    "AuthFields",
    "FragmentRef",
    "ErrorPayload",
    "NodeInfo",
    "NatInfo",
    "NatClass",
    "NatBehaviour",
    "PeerInfo",
    "SocketAddr",
  ],
  stats: [
    "StatsSnapshot",
    "HistogramSnapshot",
    "ClusterStatus",
    "DropReason",
    "DROP_REASONS",
    "GiveUpReason",
    "GIVE_UP_REASONS",
    "NatCheckStats",
    "NatLifetimeStats",
    "StunStats",
    "StunErrorReason",
    "STUN_ERROR_REASONS",
  ],
};

/** Internal names mod.ts once exported; the core is under the `./core` export, the rest is private. */
const INTERNAL = [
  "Endpoint",
  "EndpointEvent",
  "EndpointOptions",
  "Transmit",
  "encodeMessage",
  "decodeMessage",
  "DecodeError",
  "parseNodeInfo",
  "constantTimeEqual",
  "EventRing",
  "STATUS_PAGE_HTML",
  "serveOps",
  "createOpsHandler",
  "OpsHandler",
  "Histogram",
  "formatMetrics",
  "resolveConfig",
  "parseConfigFile",
  "DEFAULT_CONFIG",
  "CONFIG_FILE_KEYS",
  "parseSocketAddr",
  "formatSocketAddr",
  "makeNodeInfo",
  "identityFrom",
];

/** The names `deno doc` lists for a module: its exports, types included. */
async function exportedNames(path: string): Promise<string[]> {
  const url = new URL(path, import.meta.url);
  const out = await new Deno.Command(Deno.execPath(), {
    args: ["doc", "--json", "-q", url.pathname],
    stdout: "piped",
    stderr: "piped",
  }).output();
  if (!out.success) {
    throw new Error(`deno doc --json ${path} failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  const doc = JSON.parse(new TextDecoder().decode(out.stdout)) as {
    nodes: Record<string, { symbols?: { name: string }[] }>;
  };
  return (doc.nodes[url.href]?.symbols ?? []).map((symbol) => symbol.name).sort();
}

Deno.test("mod.ts exports exactly the surface a P2PServer and P2PClient user needs, types included", async () => {
  assertEquals(await exportedNames("../mod.ts"), Object.values(SURFACE).flat().sort());
});

Deno.test("mod.ts exports none of the internals it used to", async () => {
  const names = new Set([...await exportedNames("../mod.ts"), ...Object.keys(mod)]);
  assertEquals(INTERNAL.filter((name) => names.has(name)), []);
});

Deno.test("the protocol core stays available to embedders under the ./core export", async () => {
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url))) as {
    exports: Record<string, string>;
  };
  assertEquals(config.exports, { ".": "./mod.ts", "./core": "./src/core/mod.ts" });
  const core = await exportedNames("../src/core/mod.ts");
  assertEquals(["Endpoint", "EndpointEvent", "Transmit"].filter((name) => !core.includes(name)), []);
});

Deno.test("every value mod.ts exports is defined at run time", () => {
  const undefinedValues = Object.entries(mod).filter(([, value]) => value === undefined).map(([name]) =>
    name
  );
  assertEquals(undefinedValues, []);
  assertEquals(typeof mod.P2PServer, "function");
  assertEquals(typeof mod.P2PClient, "function");
  assertEquals(mod.ERROR_CODES.nodeIdConflict, "node_id_conflict");
});
