/**
 * Micro-benchmarks of the codec and the core (`deno bench bench/`): encode and decode per message type, one
 * whole handshake through two cores in virtual time (unkeyed, and keyed: signed request and response, X25519
 * session keys, MAC'd confirmation), and one Ping -> Pong through the server core (stateless, from a
 * registered peer, and in an authenticated session). No sockets.
 *
 * @module
 */
import { Endpoint, type Message, type MessageType, type SocketAddr } from "../src/core/mod.ts";
import { decodeMessage, encodeMessage } from "../src/wire/codec.ts";
import { generateIdentity, type Identity } from "../src/core/auth.ts";
import { benchCoreConfig } from "./core_config.ts";
import { chooseCrypto, type ChosenCrypto, opensslHmacUnavailable } from "../src/openssl.ts";

const SAMPLE_NODE = {
  id: "4a1f3c7e-9b2d-4e8f-a6c5-0d1e2f3a4b5c",
  name: "bench-node",
  version: "1.0.0",
  listen_addr: "127.0.0.1:9000",
  capabilities: ["data"],
  metadata: { network_id: "p2p_default" },
};

const PAYLOADS: Record<MessageType, Message["payload"]> = {
  HandshakeRequest: SAMPLE_NODE,
  HandshakeResponse: { node_info: SAMPLE_NODE, success: true, error_message: null },
  Ping: null,
  Pong: null,
  DiscoveryRequest: null,
  DiscoveryResponse: [{
    id: SAMPLE_NODE.id,
    addr: "127.0.0.1:9000",
    last_seen: 1,
    capabilities: [],
    name: "n",
  }],
  Data: { text: "hello", n: 42 },
  Error: { error: "handshake failed: node ID already exists", code: "node_id_conflict" },
  Disconnect: { reason: "bye" },
  Ack: null,
  Retransmit: { sequence_numbers: [1, 2, 3] },
};

for (const [type, payload] of Object.entries(PAYLOADS) as [MessageType, Message["payload"]][]) {
  const message: Message = {
    id: "7d444840-9dc0-41d1-b245-5ffdce74fad2",
    message_type: type,
    timestamp: 1_700_000_000,
    payload,
    sender_addr: "127.0.0.1:8080",
    sequence_number: 7,
    requires_ack: type !== "Ack",
    ack_for: type === "Ack" ? "7d444840-9dc0-41d1-b245-5ffdce74fad2" : null,
  };
  const bytes = encodeMessage(message);
  Deno.bench(`encode ${type}`, { group: "encode" }, () => {
    encodeMessage(message);
  });
  Deno.bench(`decode ${type}`, { group: "decode" }, () => {
    decodeMessage(bytes);
  });
}

let counter = 0;
const newId = () => `00000000-0000-4000-8000-${(counter++).toString(16).padStart(12, "0")}`;
// Virtual time stands still here (now = 0), so token buckets would never refill: the limits are set out of
// reach. The limiter still runs on every datagram, so its cost is measured.
const config = benchCoreConfig();
const server = new Endpoint({
  role: "server",
  config,
  node: { ...SAMPLE_NODE, id: crypto.randomUUID(), name: "server" },
  newId,
  now: 0,
});
const serverAddr = { hostname: "192.0.2.1", port: 8080 };
let port = 1;

Deno.bench("one full handshake through two cores (virtual time)", () => {
  const clientAddr = { hostname: "198.51.100.1", port: (port++ % 60_000) + 1 };
  const client = new Endpoint({
    role: "client",
    config,
    node: { ...SAMPLE_NODE, id: crypto.randomUUID(), listen_addr: `198.51.100.1:${clientAddr.port}` },
    newId,
    now: 0,
  });
  client.connect(0, serverAddr);
  // Shuttle datagrams until both sides are quiet.
  for (let round = 0; round < 4; round++) {
    for (const t of client.takeTransmits()) server.handleDatagram(0, clientAddr, t.bytes);
    for (const t of server.takeTransmits()) client.handleDatagram(0, serverAddr, t.bytes);
  }
  if (!client.takeEvents().some((e) => e.type === "connected")) throw new Error("handshake did not complete");
  server.takeEvents();
  server.disconnect(0, clientAddr, "bench");
  server.takeTransmits();
  server.takeEvents();
});

// Keyed handshakes: a server with its own key, clients signing with theirs. The client identities are made
// before the benchmark runs (key generation is not part of a handshake): 8,192 of them, used in turn, so the
// server verifies a key it has not seen lately, as with distinct peers (it keeps no key objects between
// handshakes anyway, `src/deps/crypto.ts`).
const serverIdentity = generateIdentity();
/** A keyed server core, with `chosen`'s X25519 and MACs when given (else `node:crypto`'s). */
function keyedServerWith(chosen?: ChosenCrypto): Endpoint {
  return new Endpoint({
    role: "server",
    config,
    node: { ...SAMPLE_NODE, id: serverIdentity.nodeId, name: "keyed-server" },
    newId,
    now: 0,
    identity: serverIdentity,
    ...(chosen ? { deriveX25519: chosen.deriveX25519, macKey: chosen.macKey } : {}),
  });
}
const keyedServer = keyedServerWith();
const IDENTITY_POOL = 8_192;
const identities: Identity[] = Array.from({ length: IDENTITY_POOL }, () => generateIdentity());
let nextIdentity = 0;

/** One handshake of a new client Endpoint with `target`, shuttled until both sides are quiet. */
function handshake(target: Endpoint, clientAddr: SocketAddr, identity: Identity | null): Endpoint {
  const client = new Endpoint({
    role: "client",
    config,
    node: {
      ...SAMPLE_NODE,
      id: identity ? identity.nodeId : crypto.randomUUID(),
      listen_addr: `${clientAddr.hostname}:${clientAddr.port}`,
    },
    newId,
    now: 0,
    ...(identity ? { identity } : {}),
  });
  client.connect(0, serverAddr);
  for (let round = 0; round < 4; round++) {
    for (const t of client.takeTransmits()) target.handleDatagram(0, clientAddr, t.bytes);
    for (const t of target.takeTransmits()) client.handleDatagram(0, serverAddr, t.bytes);
  }
  if (!client.takeEvents().some((e) => e.type === "connected")) throw new Error("handshake did not complete");
  target.takeEvents();
  return client;
}

function keyedHandshake(identity: Identity): void {
  const clientAddr = { hostname: "198.51.100.3", port: (port++ % 60_000) + 1 };
  handshake(keyedServer, clientAddr, identity);
  keyedServer.disconnect(0, clientAddr, "bench");
  keyedServer.takeTransmits();
  keyedServer.takeEvents();
}

// Checked once outside the measurement: the keyed handshake really authenticates (a session, and the peer
// counted authenticated by the MAC'd confirmation).
{
  const addr = { hostname: "198.51.100.4", port: 1 };
  handshake(keyedServer, addr, identities[0]!);
  const peer = keyedServer.peer(identities[0]!.nodeId);
  if (peer?.state !== "authenticated") throw new Error(`keyed peer not authenticated: ${peer?.state}`);
  if (keyedServer.getStats(0).peers.authenticated !== 1) throw new Error("keyed handshake not counted");
  keyedServer.disconnect(0, addr, "bench");
  keyedServer.takeTransmits();
  keyedServer.takeEvents();
}

Deno.bench("one keyed handshake through two cores (virtual time, identities made beforehand)", () => {
  keyedHandshake(identities[nextIdentity++ % IDENTITY_POOL]!);
});

Deno.bench("one keyed handshake through two cores (virtual time, client key generated inside)", () => {
  keyedHandshake(generateIdentity());
});

const pingFrom = { hostname: "198.51.100.2", port: 5000 };
const pingBytes = encodeMessage({
  id: "7d444840-9dc0-41d1-b245-5ffdce74fad2",
  message_type: "Ping",
  timestamp: 1_700_000_000,
  payload: null,
  sender_addr: null,
  sequence_number: null,
  requires_ack: false,
  ack_for: null,
});

Deno.bench("Ping -> Pong through the server core (stateless)", () => {
  server.handleDatagram(0, pingFrom, pingBytes);
  server.takeTransmits();
  server.takeEvents();
});

/**
 * `count` Pings of one registered peer, as its client encodes them (MAC'd in a keyed session), for the server
 * core to answer. An unkeyed peer's unreliable Pings are not deduplicated, so one datagram can be fed again and
 * again; a session's MAC'd datagrams are refused when repeated (a replay), so a keyed bench needs one each.
 * The first is checked: it must be answered with one Pong (MAC'd in a session).
 */
function registeredPings(
  target: Endpoint,
  from: SocketAddr,
  identity: Identity | null,
  count: number,
): Uint8Array[] {
  const client = handshake(target, from, identity);
  const pings: Uint8Array[] = [];
  for (let i = 0; i <= count; i++) {
    client.send(0, serverAddr, "Ping", null);
    const [ping, ...rest] = client.takeTransmits();
    if (!ping || rest.length) throw new Error("expected one Ping");
    pings.push(ping.bytes);
  }
  target.handleDatagram(0, from, pings.shift()!);
  const out = target.takeTransmits();
  target.takeEvents();
  const pong = out.length === 1 ? decodeMessage(out[0]!.bytes) : null;
  if (pong?.message_type !== "Pong" || (identity !== null) !== (pong.mac !== undefined)) {
    throw new Error(`expected one${identity ? " MAC'd" : ""} Pong, got ${out.length} datagrams`);
  }
  return pings;
}

const plainFrom = { hostname: "198.51.100.5", port: 5000 };
const plainPing = registeredPings(server, plainFrom, null, 1)[0]!;

Deno.bench("Ping -> Pong through the server core (registered unkeyed peer)", () => {
  server.handleDatagram(0, plainFrom, plainPing);
  server.takeTransmits();
  server.takeEvents();
});

/** Iterations of the MAC'd bench (each needs its own datagram). */
const SESSION_PINGS = 20_000;
const sessionFrom = { hostname: "198.51.100.6", port: 5000 };
const sessionPings = registeredPings(keyedServer, sessionFrom, generateIdentity(), 3 * SESSION_PINGS);
let nextSessionPing = 0;

Deno.bench("Ping -> Pong in an authenticated session (MAC'd)", { n: SESSION_PINGS, warmup: 100 }, () => {
  keyedServer.handleDatagram(0, sessionFrom, sessionPings[nextSessionPing++ % sessionPings.length]!);
  keyedServer.takeTransmits();
  keyedServer.takeEvents();
});

// The same session with OpenSSL's X25519 and HMAC (`crypto_backend: "openssl"`), where it runs: the bench
// needs `--allow-ffi` for it (`deno bench -A bench/core_bench.ts`).
if (opensslHmacUnavailable() === null) {
  const opensslServer = keyedServerWith(chooseCrypto("openssl"));
  const from = { hostname: "198.51.100.7", port: 5000 };
  const pings = registeredPings(opensslServer, from, generateIdentity(), 3 * SESSION_PINGS);
  let next = 0;
  Deno.bench(
    "Ping -> Pong in an authenticated session (MAC'd, OpenSSL's HMAC)",
    { n: SESSION_PINGS, warmup: 100 },
    () => {
      opensslServer.handleDatagram(0, from, pings[next++ % pings.length]!);
      opensslServer.takeTransmits();
      opensslServer.takeEvents();
    },
  );
}
