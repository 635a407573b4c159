/**
 * Golden traces: the safety net for refactoring the protocol core without changing its behaviour.
 *
 * A fixed set of deterministic scenarios runs on the virtual-time simulator (tests/sim.ts). Together they
 * touch every feature: plain and keyed (Ed25519) handshakes, seeded loss, duplication, corruption and
 * reordering, fragments, ordered Data, gap requests (Retransmit), relay, introductions and hole punching,
 * roaming, cookies under half-open load, the cluster mirror over an in-memory bus, heartbeats, timeouts and
 * disconnects. Each scenario records, in order, every datagram put on the wire (time, from, to, its fate at
 * send time, the exact bytes) and every event of every endpoint (time, host, canonical JSON), and the test
 * compares the SHA-256 of that log with the value committed in tests/golden/digests.json, next to a summary
 * line (transmits and events by type) so that a diff of the file says what changed.
 *
 * Everything is injected: the simulator's seed, message ids (seeded per host), each endpoint's `random`,
 * `cookieSecret` and X25519 key generation (`generateX25519`, seeded per host), fixed Ed25519 identity keys
 * and the virtual clock (from `EPOCH_MS`). So keyed scenarios are recorded byte for byte like the others:
 * signatures, session keys and MACs are the same on every run.
 *
 * Regenerate (after an intended change of behaviour; say why in the commit):
 *
 *     GOLDEN_UPDATE=1 deno test -A tests/golden_trace_test.ts
 *
 * rewrites tests/golden/digests.json. To see what changed, write each scenario's readable log to a folder and
 * diff two runs (before and after the change):
 *
 *     GOLDEN_DUMP=/tmp/golden-before deno test -A tests/golden_trace_test.ts
 *
 * @module
 */
import { assert, assertEquals, assertNotEquals, assertStrictEquals } from "./deps/assert.ts";
import { type Identity, identityFrom } from "../src/core/auth.ts";
import type { Config } from "../src/config.ts";
import { peerRecord } from "../src/core/directory.ts";
import { importEd25519Pem, type KeyPair } from "../src/deps/crypto.ts";
import { Buffer } from "node:buffer";
import { createPrivateKey, createPublicKey } from "node:crypto";
import type { NodeInfo } from "../src/wire/mod.ts";
import { mulberry32, type RawPeer, Sim, type SimEndpoint, type SimEndpointOptions, sock } from "./sim.ts";
import { Recorder } from "./golden/recorder.ts";

const DIGESTS = new URL("./golden/digests.json", import.meta.url);
const SERVER = "192.0.2.1:8080";
const SERVER_B = "192.0.2.2:8080";

// ------------------------------------------------------------------ injection

/** A fixed Ed25519 identity: the PKCS#8 key of a 32-byte seed made from `n`. */
function fixedIdentity(n: number): Identity {
  const rand = mulberry32(0x601d + n);
  const seed = Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256));
  const prefix = [
    0x30,
    0x2e,
    0x02,
    0x01,
    0x00,
    0x30,
    0x05,
    0x06,
    0x03,
    0x2b,
    0x65,
    0x70,
    0x04,
    0x22,
    0x04,
    0x20,
  ];
  const der = Uint8Array.from([...prefix, ...seed]);
  const pem = `-----BEGIN PRIVATE KEY-----\n${der.toBase64()}\n-----END PRIVATE KEY-----\n`;
  return identityFrom(importEd25519Pem(pem));
}

/** Seeded X25519 key pairs: PKCS#8 keys of 32-byte private scalars drawn from `rand`. */
function seededX25519(rand: () => number): () => KeyPair {
  const prefix = Uint8Array.from([
    0x30,
    0x2e,
    0x02,
    0x01,
    0x00,
    0x30,
    0x05,
    0x06,
    0x03,
    0x2b,
    0x65,
    0x6e,
    0x04,
    0x22,
    0x04,
    0x20,
  ]);
  return () => {
    const scalar = Uint8Array.from({ length: 32 }, () => Math.floor(rand() * 256));
    const privateKey = createPrivateKey({
      key: Buffer.from([...prefix, ...scalar]),
      format: "der",
      type: "pkcs8",
    });
    const spki = new Uint8Array(createPublicKey(privateKey).export({ format: "der", type: "spki" }));
    return { publicKey: spki.slice(spki.length - 32), privateKey };
  };
}

/** FNV-1a of a text, to derive per-host seeds. */
function fnv(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

/** The scenario's world: the Sim, its recorder, and hosts built with every source of randomness injected. */
class World {
  readonly sim: Sim;
  readonly rec: Recorder;
  /** Whether the scenario uses keys (it is recorded byte for byte either way). */
  readonly keyed: boolean;

  constructor(
    seed: number,
    keyed: boolean,
    link: ConstructorParameters<typeof Sim>[0] = {},
    hooks: Hooks = {},
  ) {
    this.sim = new Sim({ seed, ...link });
    this.keyed = keyed;
    this.rec = new Recorder(this.sim, { keepLog: hooks.keepLog ?? false, ...hooks });
  }

  /** An endpoint at `addr` (server by default, sibling discovery off) with injected `random` and cookie secret. */
  endpoint(
    addr: string,
    options: SimEndpointOptions & { config?: Partial<Config> } = {},
  ): SimEndpoint {
    const rand = mulberry32(this.sim.seed ^ fnv(`random ${addr}`));
    const secretRand = mulberry32(this.sim.seed ^ fnv(`cookie ${addr}`));
    const x25519Rand = mulberry32(this.sim.seed ^ fnv(`x25519 ${addr}`));
    return this.sim.addEndpoint(addr, {
      ...options,
      config: { enableDiscovery: false, ...options.config },
      random: rand,
      cookieSecret: Uint8Array.from({ length: 32 }, () => Math.floor(secretRand() * 256)),
      generateX25519: seededX25519(x25519Rand),
    });
  }

  client(addr: string, options: SimEndpointOptions = {}): SimEndpoint {
    return this.endpoint(addr, { ...options, role: "client" });
  }

  connect(c: SimEndpoint, server = SERVER, options: { pinnedKey?: Uint8Array } = {}): void {
    this.sim.act(c, (ep, now) => ep.connect(now, sock(server), options));
  }

  send(
    c: SimEndpoint,
    type: "Data" | "Ping" | "DiscoveryRequest",
    payload: Parameters<SimEndpoint["endpoint"]["send"]>[3],
    options: { reliable?: boolean; ordered?: boolean } = {},
    to = SERVER,
  ): void {
    this.sim.act(c, (ep, now) => ep.send(now, sock(to), type, payload, options));
  }

  run(ms: number): void {
    this.sim.runFor(ms);
  }
}

interface Hooks {
  keepLog?: boolean;
  mutate?: (index: number, bytes: Uint8Array) => Uint8Array;
}

/** A realistic NodeInfo as a deployed (upstream) client sends it. */
function deployedInfo(peer: RawPeer): NodeInfo {
  return {
    id: peer.newId(),
    name: `peer-${peer.addr}`,
    version: "0.2.0",
    listen_addr: peer.addr,
    capabilities: ["chat", "file_transfer"],
    metadata: { network_id: "p2p_default", os: "linux" },
  };
}

/** A seeded printable text of `length` characters. */
function text(seed: number, length: number): string {
  const rand = mulberry32(seed);
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,:;-_";
  let out = "";
  for (let i = 0; i < length; i++) out += alphabet[Math.floor(rand() * alphabet.length)];
  return out;
}

// ------------------------------------------------------------------ scenarios

interface Scenario {
  name: string;
  /** Whether the scenario uses keys (signed handshakes, sessions with a MAC). */
  keyed: boolean;
  /** What the recorded log must show (tags of {@linkcode Recorder.tags}): proof the scenario covers it. */
  covers: string[];
  run(hooks: Hooks): World;
}

const SCENARIOS: Scenario[] = [
  {
    name: "plain_handshakes",
    keyed: false,
    covers: [
      "type:HandshakeRequest",
      "type:HandshakeResponse",
      "type:Ack",
      "type:Pong",
      "type:DiscoveryResponse",
      "Data.echo",
      "wire:ext",
      "wire:sum",
      "event:peerJoined",
      "event:connected",
      "event:pong",
      "event:discovery",
      "event:delivered",
    ],
    run(hooks) {
      const w = new World(101, false, {}, hooks);
      w.endpoint(SERVER, { node: { name: "server" } });
      const c1 = w.client("198.51.100.1:5000");
      const c2 = w.client("198.51.100.2:5000", { node: { capabilities: ["chat"] } });
      // A deployed client: no extensions, never acks.
      const old = w.sim.addRaw("198.51.100.3:5000");
      w.connect(c1);
      w.connect(c2);
      const info = deployedInfo(old);
      old.handshake(SERVER, info);
      w.run(500);
      // A repeated request from the same address and id is idempotent.
      old.handshake(SERVER, info);
      w.run(100);
      w.send(c1, "Ping", { nonce: 1 });
      w.send(c1, "DiscoveryRequest", null, { reliable: true });
      w.send(c1, "Data", "hello");
      w.send(c2, "Data", { n: 2 }, { reliable: true });
      w.send(c2, "DiscoveryRequest", { capability: "chat", limit: 5 });
      old.send(SERVER, "Ping", null);
      old.send(SERVER, "DiscoveryRequest", null);
      old.send(SERVER, "Data", { text: "from upstream" }, { requiresAck: true });
      w.run(500);
      return w;
    },
  },
  {
    name: "keyed_handshakes",
    keyed: true,
    covers: [
      "wire:auth",
      "wire:sid",
      "wire:mac",
      "type:HandshakeResponse",
      "type:Pong",
      "type:DiscoveryResponse",
      "Data.from",
      "event:connected",
      "event:data",
      "event:peerLeft",
      "event:connectFailed",
    ],
    run(hooks) {
      const w = new World(102, true, { link: { latencyMs: 7 } }, hooks);
      const serverKey = fixedIdentity(1);
      w.endpoint(SERVER, { node: { name: "server" }, identity: serverKey });
      const k1 = w.client("198.51.100.11:5000", { identity: fixedIdentity(2) });
      const k2 = w.client("198.51.100.12:5000", { identity: fixedIdentity(3) });
      const plain = w.client("198.51.100.13:5000");
      const wrong = w.client("198.51.100.14:5000", { identity: fixedIdentity(4) });
      w.connect(k1);
      w.connect(k2, SERVER, { pinnedKey: serverKey.publicKey });
      w.connect(plain);
      w.connect(wrong, SERVER, { pinnedKey: fixedIdentity(5).publicKey }); // refused: server_key_mismatch
      w.run(1_000);
      w.send(k1, "Data", { hello: "keyed" }, { reliable: true });
      w.send(k1, "Ping", { nonce: 7 });
      w.send(k1, "DiscoveryRequest", null);
      w.send(k1, "Data", { to: k2.id, data: "routed in the session" }, { reliable: true });
      w.send(plain, "Data", { to: k1.id, data: "from an unkeyed peer" }, { reliable: true });
      w.run(1_000);
      w.sim.act(k2, (ep, now) => ep.disconnect(now, sock(SERVER), "bye"));
      w.run(500);
      return w;
    },
  },
  {
    name: "loss_reorder",
    keyed: false,
    covers: [
      "lost:random",
      "lost:burst",
      "reordered",
      "duplicated",
      "corrupted",
      "event:dropped",
      "event:delivered",
      "wire:rel",
    ],
    run(hooks) {
      const w = new World(103, false, {
        link: { latencyMs: 10, jitterMs: 15, loss: 0.1, duplicate: 0.05, reorder: 0.2, reorderDelayMs: 40 },
      }, hooks);
      w.endpoint(SERVER);
      const clients = [1, 2, 3].map((i) => w.client(`198.51.100.2${i}:5000`));
      w.sim.link(clients[1]!.addr, SERVER, { burst: { p: 0.1, r: 0.4 } });
      w.sim.link(SERVER, clients[2]!.addr, { corrupt: 0.1 });
      for (const c of clients) w.connect(c);
      w.run(5_000);
      for (let i = 0; i < 20; i++) {
        for (const c of clients) w.send(c, "Data", { index: i }, { reliable: true });
        w.run(20);
      }
      w.run(20_000);
      return w;
    },
  },
  {
    name: "fragments",
    keyed: false,
    covers: ["wire:frag", "event:data", "event:delivered", "lost:random"],
    run(hooks) {
      const w = new World(104, false, { link: { latencyMs: 5 } }, hooks);
      w.endpoint(SERVER);
      const a = w.client("198.51.100.31:5000");
      const b = w.client("198.51.100.32:5000");
      w.connect(a);
      w.connect(b);
      w.run(500);
      w.sim.link(SERVER, b.addr, { loss: 0.05, jitterMs: 5 });
      // Routed: fragmented by a to the server, reassembled, fragmented again to b.
      w.send(a, "Data", { to: b.id, data: text(104, 20_000) }, { reliable: true });
      // Echoed: the server's echo of a large payload goes back in fragments.
      w.send(b, "Data", { big: text(105, 6_000) }, { reliable: true });
      w.run(10_000);
      return w;
    },
  },
  {
    name: "ordered_data",
    keyed: false,
    covers: ["wire:ord", "reordered", "lost:random", "event:data"],
    run(hooks) {
      const w = new World(105, false, {
        link: { latencyMs: 10, jitterMs: 20, loss: 0.05, reorder: 0.3, reorderDelayMs: 30 },
      }, hooks);
      const server = w.endpoint(SERVER);
      const c = w.client("198.51.100.41:5000");
      w.connect(c);
      w.run(3_000);
      for (let i = 0; i < 30; i++) w.send(c, "Data", { ordered: i }, { ordered: true });
      // The server pushes ordered routed Data to the peer by id.
      for (let i = 0; i < 10; i++) {
        w.sim.act(server, (ep, now) => ep.sendToPeer(now, c.id, { push: i }, { ordered: true }));
      }
      w.run(15_000);
      return w;
    },
  },
  {
    name: "gap_requests",
    keyed: false,
    covers: ["type:Retransmit", "Retransmit.reliable", "Retransmit.gone", "event:gaveUp", "lost:random"],
    run(hooks) {
      const w = new World(106, false, { link: { latencyMs: 10 } }, hooks);
      w.endpoint(SERVER, { config: { deliveryTimeout: 2 } });
      const c = w.client("198.51.100.51:5000", { config: { deliveryTimeout: 2 } });
      w.connect(c);
      w.run(1_000);
      // A gap: the first is lost, the second arrives, the receiver asks for the first.
      w.sim.link(c.addr, SERVER, { loss: 1 });
      w.send(c, "Data", { index: 0 }, { reliable: true });
      w.sim.link(c.addr, SERVER, { loss: 0 });
      w.send(c, "Data", { index: 1 }, { reliable: true });
      w.run(500);
      // A message the sender gives up on: the request for it is answered with "gone".
      w.sim.link(c.addr, SERVER, { loss: 1 });
      w.send(c, "Data", { index: 2 }, { ordered: true });
      w.run(2_100);
      w.sim.link(c.addr, SERVER, { loss: 0 });
      w.send(c, "Data", { index: 3 }, { ordered: true });
      w.run(1_000);
      return w;
    },
  },
  {
    name: "relay",
    keyed: false,
    covers: ["Data.from", "Error.code", "event:error", "event:delivered", "lost:random"],
    run(hooks) {
      const w = new World(107, false, { link: { latencyMs: 5 } }, hooks);
      w.endpoint(SERVER, { config: { relayQuota: [6, 1_000_000], deliveryTimeout: 3 } });
      const a = w.client("198.51.100.61:5000");
      const b = w.client("198.51.100.62:5000");
      w.connect(a);
      w.connect(b);
      w.run(1_000);
      // End to end: a's Ack waits for b's, which cannot come while b hears nothing.
      w.sim.link(SERVER, b.addr, { loss: 1 });
      w.send(a, "Data", { to: b.id, data: "held" }, { reliable: true });
      w.run(1_500);
      w.sim.link(SERVER, b.addr, { loss: 0 });
      w.run(3_000);
      // Never acknowledged by b: undeliverable.
      w.sim.link(SERVER, b.addr, { loss: 1 });
      w.send(a, "Data", { to: b.id, data: "never" }, { reliable: true });
      w.run(5_000);
      w.sim.link(SERVER, b.addr, { loss: 0 });
      // Unknown recipient, then the quota.
      w.send(a, "Data", { to: "00000000-0000-4000-8000-000000000000", data: "nobody" }, { reliable: true });
      for (let i = 0; i < 6; i++) w.send(a, "Data", { to: b.id, data: i }, { reliable: true });
      w.send(b, "Data", { to: a.id, data: "back" });
      w.run(3_000);
      return w;
    },
  },
  {
    name: "introductions_punching",
    keyed: false,
    covers: [
      "DiscoveryResponse.introduction",
      "Ping.punch",
      "event:introduced",
      "event:punched",
      "event:punchFailed",
      "event:connected",
      "Error.code",
    ],
    run(hooks) {
      const w = new World(108, false, { link: { latencyMs: 5 } }, hooks);
      w.endpoint(SERVER);
      const a = w.client("198.51.100.71:5000");
      const b = w.client("198.51.100.72:5000");
      const c = w.client("198.51.100.73:5000");
      for (const x of [a, b, c]) w.connect(x);
      w.run(1_000);
      w.send(a, "DiscoveryRequest", { introduce: b.id }, { reliable: true });
      w.run(500);
      // Direct Data over the punched path, not through the server.
      w.send(a, "Data", "direct", { reliable: true }, b.addr);
      w.run(200);
      // A punch into silence: both sides give up.
      w.sim.link(a.addr, c.addr, { loss: 1 });
      w.sim.link(c.addr, a.addr, { loss: 1 });
      w.send(a, "DiscoveryRequest", { introduce: c.id }, { reliable: true });
      w.run(10_000);
      // An introduction to nobody is refused.
      w.send(a, "DiscoveryRequest", { introduce: "00000000-0000-4000-8000-000000000000" }, {
        reliable: true,
      });
      w.run(500);
      return w;
    },
  },
  {
    name: "roaming",
    keyed: true,
    covers: ["Ping.path_challenge", "Pong.path_response", "event:roamed", "wire:mac"],
    run(hooks) {
      const w = new World(109, true, { link: { latencyMs: 10, jitterMs: 5 } }, hooks);
      w.endpoint(SERVER, { identity: fixedIdentity(11) });
      const k = w.client("198.51.100.81:5000", { identity: fixedIdentity(12) });
      w.connect(k);
      w.run(1_000);
      w.send(k, "Data", { phase: "before" }, { reliable: true });
      w.run(1_000);
      w.sim.rebind(k.addr, "203.0.113.20:40000");
      w.send(k, "Data", { phase: "after" }, { reliable: true });
      w.run(5_000);
      w.send(k, "Data", { phase: "settled" }, { reliable: true });
      w.send(k, "Ping", { nonce: 9 });
      w.run(1_000);
      return w;
    },
  },
  {
    name: "cookies_under_load",
    keyed: false,
    covers: ["wire:cookie", "Error.cookie", "event:connected", "event:peerJoined", "type:HandshakeResponse"],
    run(hooks) {
      const w = new World(110, false, { link: { latencyMs: 5, jitterMs: 10 } }, hooks);
      w.endpoint(SERVER, { config: { cookieMode: "auto", cookieThreshold: 8, halfOpenTimeout: 20 } });
      let n = 0;
      const raw = (options: { autoAck?: boolean } = {}) => w.sim.addRaw(`203.0.113.${++n}:4000`, options);
      // Half-open pressure: requests that never confirm.
      for (let i = 0; i < 7; i++) {
        const p = raw();
        p.handshake(SERVER, deployedInfo(p));
      }
      w.run(50);
      // Below the threshold an old-style peer joins as before.
      const old = raw({ autoAck: true });
      old.handshake(SERVER, deployedInfo(old));
      w.run(100);
      // At the threshold, new requests are challenged.
      for (let i = 0; i < 4; i++) {
        const p = raw();
        p.handshake(SERVER, deployedInfo(p));
      }
      w.run(100);
      // A real client answers the challenge with its cookie.
      const client = w.client("198.51.100.91:5000");
      w.connect(client);
      w.run(2_000);
      old.send(SERVER, "Data", "still here");
      w.run(100);
      // The half-open ones expire; the load is gone and no cookie is needed.
      w.run(25_000);
      const later = raw({ autoAck: true });
      later.handshake(SERVER, deployedInfo(later));
      w.run(500);
      return w;
    },
  },
  {
    name: "cluster_mirror",
    keyed: false,
    covers: [
      "event:cluster",
      "event:peerJoined",
      "event:peerLeft",
      "event:introduced",
      "event:discovery",
      "event:connectFailed",
      "Data.from",
    ],
    run(hooks) {
      const w = new World(111, false, { link: { latencyMs: 2 } }, hooks);
      const config = { maxConnections: 1_000, discoveryPageSize: 64 };
      const a = w.endpoint(SERVER, { config, instance: "a" });
      const b = w.endpoint(SERVER_B, { config, instance: "b" });
      const bus = new Bus(w.sim, new Map([["a", a], ["b", b]]));
      const x1 = w.client("198.51.100.101:5000");
      const x2 = w.client("198.51.100.102:5000");
      const y1 = w.client("198.51.100.103:5000");
      w.connect(x1, SERVER);
      w.connect(x2, SERVER);
      w.connect(y1, SERVER_B);
      bus.run(200);
      // Discovery on a lists b's peers from the mirror.
      w.send(x1, "DiscoveryRequest", { limit: 10 }, { reliable: true });
      bus.run(50);
      // Relay across instances, end to end.
      w.send(x1, "Data", { to: y1.id, data: "across" }, { reliable: true });
      bus.run(100);
      // An introduction across instances.
      w.send(x2, "DiscoveryRequest", { introduce: y1.id }, { reliable: true });
      bus.run(500);
      // An unkeyed id held on the other instance is refused.
      const twin = w.client("198.51.100.104:5000", { node: { id: x1.id } });
      w.connect(twin, SERVER_B);
      bus.run(200);
      // A leave is mirrored.
      w.sim.act(y1, (ep, now) => ep.disconnect(now, sock(SERVER_B), "bye"));
      bus.run(100);
      w.send(x1, "DiscoveryRequest", { limit: 10 }, { reliable: true });
      bus.run(50);
      return w;
    },
  },
  {
    name: "heartbeats_timeouts_disconnect",
    keyed: false,
    covers: [
      "type:Ping",
      "type:Disconnect",
      "event:linkClosed",
      "event:peerLeft",
      "lost:blackhole",
      "lost:no_host",
    ],
    run(hooks) {
      const w = new World(112, false, { link: { latencyMs: 5 } }, hooks);
      const server = w.endpoint(SERVER);
      const c1 = w.client("198.51.100.111:5000");
      const c2 = w.client("198.51.100.112:5000");
      const c3 = w.client("198.51.100.113:5000");
      const c4 = w.client("198.51.100.114:5000");
      const old = w.sim.addRaw("198.51.100.115:5000", { autoAck: true, autoPong: true });
      for (const c of [c1, c2, c3, c4]) w.connect(c);
      old.handshake(SERVER, deployedInfo(old));
      w.run(35_000); // heartbeats both ways
      w.sim.act(c2, (ep, now) => ep.disconnect(now, sock(SERVER), "leaving"));
      w.sim.isolate(c1.addr, w.sim.now, w.sim.now + 200_000); // the server times c1 out, c1 times the server out
      w.sim.rebind(c3.addr, "198.51.100.213:6000"); // unkeyed: no roaming, not_registered
      w.send(c3, "Data", { after: "rebind" }, { reliable: true });
      w.run(95_000);
      w.sim.act(server, (ep, now) => ep.shutdown(now, "maintenance"));
      w.run(1_000);
      return w;
    },
  },
];

/** Carries joins, leaves and cluster messages between instances, as Redis would (without latency). */
class Bus {
  readonly #seen = new Map<SimEndpoint, number>();
  constructor(readonly sim: Sim, readonly members: Map<string, SimEndpoint>) {}

  pump(): void {
    for (let moved = true; moved;) {
      moved = false;
      for (const [instance, host] of this.members) {
        const events = host.events.slice(this.#seen.get(host) ?? 0);
        this.#seen.set(host, host.events.length);
        for (const e of events) {
          moved = true;
          for (const [other, target] of this.members) {
            if (other === instance) continue;
            if (e.type === "peerJoined") {
              this.sim.act(target, (ep) => ep.upsertRemote([peerRecord(instance, e.peer, e.peer.lastSeen)]));
            }
            if (e.type === "peerLeft") this.sim.act(target, (ep) => ep.removeRemote(instance, [e.peer.id]));
          }
          if (e.type === "cluster") {
            const target = this.members.get(e.instance)!;
            this.sim.act(target, (ep, now) => ep.handleClusterMessage(now, instance, e.message));
          }
        }
      }
    }
  }

  /** Runs the network for `ms`, pumping every millisecond of virtual time. */
  run(ms: number): void {
    for (let t = 0; t < ms; t++) {
      this.sim.runFor(1);
      this.pump();
    }
  }
}

// ------------------------------------------------------------------ the test

interface Golden {
  digest: string;
  summary: string;
}

function envFlag(name: string): string | undefined {
  if (Deno.permissions.querySync({ name: "env", variable: name }).state !== "granted") return undefined;
  return Deno.env.get(name) || undefined;
}

function readGolden(): Record<string, Golden> {
  try {
    return JSON.parse(Deno.readTextFileSync(DIGESTS));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return {};
    throw error;
  }
}

function record(s: Scenario, hooks: Hooks = {}): { digest: string; summary: string; world: World } {
  const world = s.run(hooks);
  return { digest: world.rec.digest(), summary: world.rec.summary(), world };
}

Deno.test("golden traces: every scenario's digest matches tests/golden/digests.json", async (t) => {
  const update = envFlag("GOLDEN_UPDATE") !== undefined;
  const dump = envFlag("GOLDEN_DUMP");
  const golden = readGolden();
  const fresh: Record<string, Golden> = {};
  for (const s of SCENARIOS) {
    await t.step(s.name, () => {
      const { digest, summary, world } = record(s, { keepLog: dump !== undefined });
      fresh[s.name] = { digest, summary };
      if (dump) {
        Deno.mkdirSync(dump, { recursive: true });
        Deno.writeTextFileSync(`${dump}/${s.name}.log`, world.rec.log.join("\n") + "\n");
      }
      const missing = s.covers.filter((tag) => !world.rec.tags.has(tag));
      assertEquals(missing, [], `${s.name} no longer covers what it claims`);
      if (update) return;
      const want = golden[s.name];
      assert(
        want,
        `No golden digest for "${s.name}": run GOLDEN_UPDATE=1 deno test -A tests/golden_trace_test.ts`,
      );
      assertEquals(
        { digest, summary },
        want,
        `Golden trace "${s.name}" changed. If intended, regenerate with GOLDEN_UPDATE=1 (see the header); ` +
          `to find the first difference, GOLDEN_DUMP=<dir> before and after and diff the logs.`,
      );
    });
  }
  if (update) {
    const text = JSON.stringify(fresh, null, 2) + "\n";
    Deno.writeTextFileSync(DIGESTS, text);
    console.log(`Wrote ${DIGESTS.pathname}:\n${text}`);
  } else {
    assertEquals(Object.keys(golden).sort(), SCENARIOS.map((s) => s.name).sort(), "no stale digests");
  }
});

Deno.test("golden traces: the same run twice gives the same digest, and one changed byte changes it", () => {
  const s = SCENARIOS[0]!;
  const base = record(s).digest;
  assertStrictEquals(record(s).digest, base, "the same run twice gives the same digest");
  const flipped = record(s, {
    mutate: (i, bytes) => {
      if (i !== 5) return bytes;
      const out = bytes.slice();
      out[out.length - 2] = out[out.length - 2]! ^ 1;
      return out;
    },
  }).digest;
  assertNotEquals(flipped, base);
});

Deno.test("golden traces: keyed scenarios are reproducible byte for byte, signatures and MACs included", () => {
  for (const s of SCENARIOS.filter((x) => x.keyed)) {
    const raw = (w: World) => w.sim.trace.map((e) => new TextDecoder().decode(e.bytes));
    const first = raw(record(s).world);
    const second = raw(record(s).world);
    assertEquals(first, second, s.name);
    const seen = { dh: 0, sig: 0, mac: 0 };
    for (const text of first) {
      let msg: { auth?: { dh?: unknown; sig?: unknown }; mac?: unknown };
      try {
        msg = JSON.parse(text);
      } catch {
        continue; // a raw peer's junk
      }
      if (typeof msg.auth?.dh === "string") seen.dh++;
      if (typeof msg.auth?.sig === "string") seen.sig++;
      if (typeof msg.mac === "string") seen.mac++;
    }
    assert(seen.dh >= 2 && seen.sig >= 2 && seen.mac >= 4, `${s.name}: ${JSON.stringify(seen)}`);
  }
  // The injection is what makes them so: with the OS's X25519 keys two runs differ.
  const sim = () => {
    const w = new Sim({ seed: 5 });
    w.addEndpoint(SERVER, { identity: fixedIdentity(21), config: { enableDiscovery: false } });
    const c = w.addEndpoint("198.51.100.5:5000", { role: "client", identity: fixedIdentity(22) });
    w.act(c, (ep, now) => ep.connect(now, sock(SERVER)));
    w.runFor(500);
    return w.trace.map((e) => new TextDecoder().decode(e.bytes));
  };
  assertNotEquals(sim(), sim());
});
