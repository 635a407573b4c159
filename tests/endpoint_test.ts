/**
 * Behaviour of the protocol core ({@linkcode Endpoint}) in virtual time, on the simulated network of
 * `sim.ts`: no sockets, no sleeps, no real timers.
 */
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import type { Config } from "../src/config.ts";
import { Endpoint, MAX_UDP_PAYLOAD, NODE_ID_EXISTS } from "../src/core/endpoint.ts";
import type { Json, Message } from "../src/wire/mod.ts";
import {
  decode,
  EPOCH_MS,
  nodeInfo,
  type RawPeer,
  Sim,
  type SimEndpoint,
  sock,
  uuidSource,
  withSeeds,
} from "./sim.ts";
import { mulberry32 } from "./sim.ts";
import { ENVELOPE_KEYS, EXTENSION_KEYS } from "./helpers/raw_peer.ts";
import { resolveConfig } from "../src/config.ts";

const SERVER = "192.0.2.1:8080";
const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

interface Setup {
  sim: Sim;
  server: SimEndpoint;
}

function setup(config: Partial<Config> = {}, latencyMs = 5, seed = 7): Setup {
  const sim = new Sim({ seed, link: { latencyMs } });
  const server = sim.addEndpoint(SERVER, {
    config: { enableDiscovery: false, ...config },
    node: { name: "server", capabilities: ["server"] },
  });
  return { sim, server };
}

let rawPort = 40_000;

/** A scripted peer on its own TEST-NET-2 address. */
function raw(sim: Sim, options: { autoAck?: boolean; autoPong?: boolean } = {}): RawPeer {
  const port = rawPort++;
  return sim.addRaw(`198.51.100.${1 + (port % 200)}:${port}`, options);
}

/** A NodeInfo for a raw peer (its listen_addr is its own address). */
function infoFor(peer: RawPeer, overrides: Parameters<typeof nodeInfo>[1] = {}) {
  return nodeInfo(peer.newId(), { name: `peer-${peer.addr}`, listen_addr: peer.addr, ...overrides });
}

/** Runs the full handshake (request, response, Ack) for `peer` and returns its NodeInfo. */
function join(sim: Sim, peer: RawPeer, overrides: Parameters<typeof nodeInfo>[1] = {}) {
  const info = infoFor(peer, overrides);
  peer.handshake(SERVER, info);
  sim.runFor(50);
  const resp = peer.last("HandshakeResponse");
  assertStrictEquals(obj(resp.payload).success, true, `handshake of ${peer.addr} failed`);
  peer.ack(SERVER, resp);
  sim.runFor(50);
  return info;
}

function obj(value: Json | undefined): Record<string, Json> {
  assert(typeof value === "object" && value !== null && !Array.isArray(value), `not an object: ${value}`);
  return value as Record<string, Json>;
}

function errorOf(msg: Message): Record<string, Json> {
  assertStrictEquals(msg.message_type, "Error");
  return obj(msg.payload);
}

/** The stats identity every endpoint must keep. */
function assertBalanced(host: SimEndpoint, now: number): void {
  const s = host.endpoint.getStats(now);
  assertStrictEquals(
    s.datagramsReceived,
    s.processed + s.duplicates + s.droppedTotal,
    `datagramsReceived ${s.datagramsReceived} != processed ${s.processed} + duplicates ${s.duplicates} + ` +
      `dropped ${s.droppedTotal}`,
  );
}

function discoveryIds(payload: Json): string[] {
  const list = Array.isArray(payload) ? payload : obj(payload).peers;
  assert(Array.isArray(list), "no peer list");
  return list.map((p) => obj(p).id as string);
}

// ------------------------------------------------------------------ handshake

Deno.test("handshake follows the spec: Ack of the request first, then a reliable HandshakeResponse, then the client's Ack authenticates", () => {
  const { sim, server } = setup();
  const c = raw(sim);
  const info = infoFor(c, { name: "alice" });
  const req = c.handshake(SERVER, info, { seq: 1 });
  sim.runFor(20);

  const [ack, resp, ...rest] = c.messages();
  assertStrictEquals(rest.length, 0);
  assert(ack && resp);
  assertStrictEquals(ack.message_type, "Ack");
  assertStrictEquals(ack.ack_for, req.id);
  assertStrictEquals(ack.sequence_number, 1);
  assertStrictEquals(ack.requires_ack, false);
  assertStrictEquals(resp.message_type, "HandshakeResponse");
  assertStrictEquals(resp.requires_ack, true);
  assert(typeof resp.sequence_number === "number");
  const p = obj(resp.payload);
  assertStrictEquals(p.success, true);
  assertStrictEquals(p.error_message, null);
  assertStrictEquals(obj(p.node_info).id, server.id);
  assertStrictEquals(obj(p.node_info).name, "server");

  assertStrictEquals(server.endpoint.peer(info.id)?.state, "handshaking");
  assertStrictEquals(server.eventsOf("peerJoined").length, 0);

  c.ack(SERVER, resp);
  sim.runFor(20);
  const joined = server.eventsOf("peerJoined");
  assertStrictEquals(joined.length, 1);
  assertStrictEquals(joined[0]!.peer.id, info.id);
  assertStrictEquals(joined[0]!.peer.name, "alice");
  assertStrictEquals(joined[0]!.peer.addr, c.addr);
  assertStrictEquals(joined[0]!.peer.state, "authenticated");
  const delivered = server.eventsOf("delivered");
  assertStrictEquals(delivered.length, 1);
  assertStrictEquals(delivered[0]!.id, resp.id);
  assertStrictEquals(delivered[0]!.messageType, "HandshakeResponse");

  sim.runFor(5_000);
  assertStrictEquals(c.messages("HandshakeResponse").length, 1, "an acked response must not be resent");
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.handshakesOk, 1);
  assertStrictEquals(s.acksReceived, 1);
  assertStrictEquals(s.acksSent, 1);
  assertEquals(s.peers, { handshaking: 0, authenticated: 1 });
  assertBalanced(server, sim.now);
});

Deno.test("a peer that never acks the HandshakeResponse but then sends a Ping is authenticated", () => {
  const { sim, server } = setup();
  const c = raw(sim);
  const info = infoFor(c);
  c.handshake(SERVER, info);
  sim.runFor(20);
  c.send(SERVER, "Ping", null);
  sim.runFor(20);
  assertStrictEquals(server.eventsOf("peerJoined").length, 1);
  assertStrictEquals(server.endpoint.peer(info.id)?.state, "authenticated");
  assertStrictEquals(c.messages("Pong").length, 1);
  sim.runFor(10_000);
  assertStrictEquals(c.messages("HandshakeResponse").length, 1, "the Ping settles the response");
  assertStrictEquals(server.eventsOf("gaveUp").length, 0);
  assertStrictEquals(server.endpoint.getStats(sim.now).handshakesOk, 1);
});

Deno.test("a peer that never acks and stays silent is removed after connection_timeout, without peerLeft", () => {
  const { sim, server } = setup({
    connectionTimeout: 60,
    heartbeatInterval: 30,
    retransmitPolicy: "schedule",
  }, 0);
  const c = raw(sim);
  const info = infoFor(c);
  const t0 = sim.now;
  c.handshake(SERVER, info);
  sim.runUntil(t0 + 59_999);
  assertStrictEquals(server.endpoint.peer(info.id)?.state, "handshaking");
  // The schedule would resend at 0.5 s and 1.5 s, but an address that never proved it receives gets at most
  // 3x the bytes it sent: one request buys the Ack and one copy of the response.
  assertEquals(c.received("HandshakeResponse").map((r) => r.at - t0), [0]);
  assert(server.endpoint.getStats(sim.now).amplificationLimited >= 2);
  const gaveUp = server.eventsOf("gaveUp");
  assertStrictEquals(gaveUp.length, 1);
  assertStrictEquals(gaveUp[0]!.messageType, "HandshakeResponse");
  sim.runUntil(t0 + 60_000);
  assertStrictEquals(server.endpoint.peer(info.id), undefined);
  assertStrictEquals(server.endpoint.peers().length, 0);
  assertStrictEquals(server.eventsOf("peerLeft").length, 0, "a peer that never joined does not leave");
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.halfOpenExpired, 1, "removed as a half-open handshake (half_open_timeout 60 s)");
  assertStrictEquals(s.timeouts, 0);
  assertStrictEquals(s.handshakesOk, 0);
  assertEquals(s.peers, { handshaking: 0, authenticated: 0 });
  assertStrictEquals(server.endpoint.nextDeadline(), Infinity);
});

Deno.test("an Ack matches its message by ack_for as a UUID string, by ack_for as an integer sequence number, and by sequence_number", () => {
  const { sim, server } = setup();
  const forms: ((resp: Message) => { seq: number | null; ackFor: string | number | null })[] = [
    (resp) => ({ seq: resp.sequence_number, ackFor: resp.id }),
    (resp) => ({ seq: null, ackFor: resp.id.toUpperCase() }),
    (resp) => ({ seq: null, ackFor: resp.sequence_number }),
    (resp) => ({ seq: resp.sequence_number, ackFor: null }),
  ];
  const respIds: string[] = [];
  for (const form of forms) {
    const c = raw(sim);
    c.handshake(SERVER, infoFor(c));
    sim.runFor(20);
    const resp = c.last("HandshakeResponse");
    respIds.push(resp.id);
    c.send(SERVER, "Ack", null, form(resp));
    sim.runFor(20);
    sim.runFor(5_000);
    assertStrictEquals(
      c.messages("HandshakeResponse").length,
      1,
      `not matched: ${JSON.stringify(form(resp))}`,
    );
  }
  assertEquals(server.eventsOf("delivered").map((d) => d.id), respIds);
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.acksReceived, forms.length);
  assertStrictEquals(s.handshakesOk, forms.length);
  assertStrictEquals(s.giveUps, 0);
});

Deno.test("an Ack naming nothing pending is not counted as a matched Ack", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  join(sim, a);
  const before = server.endpoint.getStats(sim.now).acksReceived;
  a.send(SERVER, "Ack", null, { seq: null, ackFor: a.newId() });
  a.send(SERVER, "Ack", null, { seq: null, ackFor: 12_345 });
  sim.runFor(20);
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.acksReceived, before);
  assertStrictEquals(server.eventsOf("delivered").length, 1);
  assertBalanced(server, sim.now);
});

Deno.test("re-handshake from the same address with the same node id is idempotent", () => {
  const { sim, server } = setup();
  const c = raw(sim);
  const info = join(sim, c);
  c.clear();
  c.handshake(SERVER, { ...info, name: "renamed" });
  sim.runFor(50);
  assertStrictEquals(c.messages("Error").length, 0);
  const resp = c.last("HandshakeResponse");
  assertStrictEquals(obj(resp.payload).success, true);
  c.ack(SERVER, resp);
  sim.runFor(50);
  assertStrictEquals(server.eventsOf("peerJoined").length, 1, "no second peerJoined");
  assertStrictEquals(server.eventsOf("peerLeft").length, 0);
  assertStrictEquals(server.endpoint.peers().length, 1);
  assertStrictEquals(server.endpoint.peer(info.id)?.state, "authenticated");
  assertStrictEquals(server.endpoint.peer(info.id)?.name, "renamed");
  assertEquals(server.endpoint.getStats(sim.now).handshakesFailed, {});
});

Deno.test("re-handshake after a restart starts the peer's sequence numbers afresh", () => {
  const { sim, server } = setup();
  const c = raw(sim);
  const info = infoFor(c);
  c.handshake(SERVER, info, { seq: 1 });
  sim.runFor(20);
  c.ack(SERVER, c.last("HandshakeResponse"));
  c.send(SERVER, "Data", "old 2", { seq: 2, requiresAck: true });
  c.send(SERVER, "Data", "old 3", { seq: 3, requiresAck: true });
  sim.runFor(20);
  c.handshake(SERVER, info, { seq: 1 });
  sim.runFor(20);
  c.clear();
  c.send(SERVER, "Data", "new 2", { seq: 2, requiresAck: true });
  c.send(SERVER, "Data", "new 3", { seq: 3, requiresAck: true });
  sim.runFor(20);
  assertEquals(
    c.messages("Data").map((m) => obj(m.payload).echo),
    ["new 2", "new 3"],
    "seq 2 and 3 of a new session are not duplicates",
  );
  assertStrictEquals(server.endpoint.getStats(sim.now).duplicates, 0);
});

Deno.test("a retransmitted HandshakeRequest (same message id) is re-acked and answered with the same response", () => {
  const { sim, server } = setup();
  const c = raw(sim);
  const req = c.handshake(SERVER, infoFor(c));
  sim.runFor(20);
  const first = c.received("HandshakeResponse")[0]!;
  c.sendBytes(SERVER, JSON.stringify(req));
  sim.runFor(20);
  assertStrictEquals(c.messages("Ack").length, 2);
  const responses = c.received("HandshakeResponse");
  assertStrictEquals(responses.length, 2);
  assertEquals(responses[1]!.bytes, first.bytes);
  assertStrictEquals(server.endpoint.getStats(sim.now).duplicates, 1);
  assertStrictEquals(server.endpoint.peers().length, 1);
  assertBalanced(server, sim.now);
});

Deno.test("the same node id from another live address is refused with node_id_conflict", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const b = raw(sim);
  const info = join(sim, a);
  b.handshake(SERVER, { ...info, listen_addr: b.addr });
  sim.runFor(50);
  const err = b.last("Error");
  assertEquals(err.payload, { error: "handshake failed: node ID already exists", code: "node_id_conflict" });
  assertStrictEquals(NODE_ID_EXISTS, "handshake failed: node ID already exists");
  assertStrictEquals(err.sequence_number, null);
  assertStrictEquals(b.messages("HandshakeResponse").length, 0);
  assertStrictEquals(server.endpoint.peer(info.id)?.addr, a.addr);
  assertEquals(server.endpoint.getStats(sim.now).handshakesFailed, { node_id_conflict: 1 });
});

Deno.test("a registered peer whose new handshake names a taken id is refused and keeps its registration", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const b = raw(sim);
  const ia = join(sim, a);
  const ib = join(sim, b);
  b.handshake(SERVER, { ...ia, listen_addr: b.addr });
  sim.runFor(50);
  assertStrictEquals(errorOf(b.last("Error")).code, "node_id_conflict");
  assertStrictEquals(server.eventsOf("peerLeft").length, 0, "a refused request changes nothing");
  assertStrictEquals(server.endpoint.peer(ib.id)?.addr, b.addr);
  assertStrictEquals(server.endpoint.peer(ia.id)?.addr, a.addr);
  b.send(SERVER, "Data", "still here");
  sim.runFor(20);
  assertEquals(obj(b.last("Data").payload).echo, "still here");
});

Deno.test("a new node id from a registered address replaces the old peer (peerLeft replaced)", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const old = join(sim, a);
  const fresh = infoFor(a, { name: "fresh" });
  a.handshake(SERVER, fresh);
  sim.runFor(50);
  assertStrictEquals(obj(a.last("HandshakeResponse").payload).success, true);
  const left = server.eventsOf("peerLeft");
  assertEquals(left.map((e) => [e.peer.id, e.reason]), [[old.id, "replaced"]]);
  assertStrictEquals(server.endpoint.peer(old.id), undefined);
  assertStrictEquals(server.endpoint.peer(fresh.id)?.addr, a.addr);
  assertStrictEquals(server.endpoint.peers().length, 1);
});

Deno.test("the server's own node id is refused with node_id_conflict", () => {
  const { sim, server } = setup();
  const c = raw(sim);
  c.handshake(SERVER, nodeInfo(server.id, { listen_addr: c.addr }));
  sim.runFor(50);
  assertStrictEquals(errorOf(c.last("Error")).code, "node_id_conflict");
  assertStrictEquals(server.endpoint.peers().length, 0);
});

Deno.test("a node id is free again after Disconnect", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const b = raw(sim);
  const info = join(sim, a);
  a.send(SERVER, "Disconnect", { reason: "bye" });
  sim.runFor(20);
  b.handshake(SERVER, { ...info, listen_addr: b.addr });
  sim.runFor(50);
  assertStrictEquals(b.messages("Error").length, 0);
  assertStrictEquals(obj(b.last("HandshakeResponse").payload).success, true);
  assertStrictEquals(server.endpoint.peer(info.id)?.addr, b.addr);
});

Deno.test("a node id is free again after its peer timed out", () => {
  const { sim, server } = setup({ connectionTimeout: 60, heartbeatInterval: 30 });
  const a = raw(sim);
  const b = raw(sim);
  const info = join(sim, a);
  sim.runFor(61_000);
  const left = server.eventsOf("peerLeft");
  assertStrictEquals(left.length, 1);
  assertStrictEquals(left[0]!.reason, "timeout");
  b.handshake(SERVER, { ...info, listen_addr: b.addr });
  sim.runFor(50);
  assertStrictEquals(b.messages("Error").length, 0);
  assertStrictEquals(server.endpoint.peer(info.id)?.addr, b.addr);
});

Deno.test("a full server answers server_full and keeps no state for the refused peer", () => {
  const { sim, server } = setup({ maxConnections: 2 });
  join(sim, raw(sim));
  join(sim, raw(sim));
  const deadline = server.endpoint.nextDeadline();
  const c = raw(sim);
  const info = infoFor(c);
  c.handshake(SERVER, info);
  sim.runFor(20);
  const err = errorOf(c.last("Error"));
  assertStrictEquals(err.code, "server_full");
  assertMatch(err.error as string, /^handshake failed: server full/);
  assertStrictEquals(c.messages("HandshakeResponse").length, 0);
  const s = server.endpoint.getStats(sim.now);
  assertEquals(s.peers, { handshaking: 0, authenticated: 2 });
  assertEquals(s.handshakesFailed, { server_full: 1 });
  assertStrictEquals(server.endpoint.peer(info.id), undefined);
  assertStrictEquals(server.endpoint.nextDeadline(), deadline, "no timer was armed for the refused peer");
  c.send(SERVER, "Data", `hello? ${"-".repeat(200)}`);
  sim.runFor(20);
  assertStrictEquals(errorOf(c.last("Error")).code, "not_registered");
});

Deno.test("an Error to an address with no state is never larger than the datagram that caused it", () => {
  const { sim, server } = setup();
  const tiny = raw(sim);
  tiny.send(SERVER, "HandshakeRequest", null, { requiresAck: true }); // about 180 bytes
  const small = raw(sim);
  small.send(SERVER, "HandshakeRequest", { ...infoFor(small), name: "" }, { requiresAck: true });
  sim.runFor(20);
  assertStrictEquals(tiny.messages("Error").length, 0, "even a textless Error would be larger: none is sent");
  const shortened = small.received("Error")[0]!;
  const request = sim.sentBy(small.addr)[0]!;
  assert(
    shortened.bytes.length <= request.bytes.length,
    `${shortened.bytes.length} <= ${request.bytes.length}`,
  );
  assertStrictEquals(errorOf(shortened.msg).code, "invalid_node_info", "the code survives the shortening");
  assert(server.endpoint.getStats(sim.now).amplificationLimited >= 1);
  assertEquals(server.endpoint.getStats(sim.now).handshakesFailed, { invalid_node_info: 2 });
});

Deno.test("handshaking peers count towards max_connections", () => {
  const { sim } = setup({ maxConnections: 1 });
  const a = raw(sim);
  a.handshake(SERVER, infoFor(a));
  sim.runFor(20);
  const b = raw(sim);
  b.handshake(SERVER, infoFor(b));
  sim.runFor(20);
  assertStrictEquals(errorOf(b.last("Error")).code, "server_full");
});

Deno.test("invalid NodeInfo is refused with invalid_node_info and registers nothing", () => {
  const { sim, server } = setup();
  const cases: [string, (p: RawPeer) => Json][] = [
    ["empty name", (p) => ({ ...infoFor(p), name: "" })],
    ["empty version", (p) => ({ ...infoFor(p), version: "" })],
    ["bad uuid", (p) => ({ ...infoFor(p), id: "not-a-uuid" })],
    ["numeric id", (p) => ({ ...infoFor(p), id: 7 })],
    ["listen_addr without port", (p) => ({ ...infoFor(p), listen_addr: "192.0.2.7" })],
    ["listen_addr not an address", (p) => ({ ...infoFor(p), listen_addr: "nowhere:80" })],
    ["empty network_id", (p) => ({ ...infoFor(p), metadata: { network_id: "" } })],
    ["capabilities not strings", (p) => ({ ...infoFor(p), capabilities: [1] })],
    ["name too long", (p) => ({ ...infoFor(p), name: "x".repeat(257) })],
  ];
  for (const [label, make] of cases) {
    const p = raw(sim);
    p.send(SERVER, "HandshakeRequest", make(p), { requiresAck: true });
    sim.runFor(20);
    const err = errorOf(p.last("Error"));
    assertStrictEquals(err.code, "invalid_node_info", label);
    // The text is shortened when the request was smaller than the full answer (anti-amplification).
    const text = err.error as string;
    assert(
      text.startsWith("handshake failed: invalid node info: ") ||
        "handshake failed: invalid node info: ".startsWith(text.replace(/\.\.\.$/, "")),
      `${label}: ${text}`,
    );
    assertStrictEquals(p.messages("HandshakeResponse").length, 0, label);
  }
  assertStrictEquals(server.endpoint.peers().length, 0);
  assertEquals(server.endpoint.getStats(sim.now).handshakesFailed, { invalid_node_info: cases.length });
});

// ------------------------------------------------------------------ discovery

Deno.test("discovery lists only authenticated peers of the requester's network; the response echoes its network id", () => {
  const { sim, server } = setup();
  const [a, b, c, d, e, f] = Array.from({ length: 6 }, () => raw(sim));
  const ia = join(sim, a!, { metadata: { network_id: "alpha" } });
  const ib = join(sim, b!, { metadata: { network_id: "alpha" } });
  const ic = join(sim, c!); // no network_id: p2p_default
  const id = join(sim, d!, { metadata: { network_id: "p2p_default" } });
  join(sim, e!, { metadata: { network_id: "beta" } });
  f!.handshake(SERVER, infoFor(f!, { metadata: { network_id: "alpha" } })); // handshaking only
  sim.runFor(50);

  const networkIn = (p: RawPeer) =>
    obj(obj(obj(p.last("HandshakeResponse").payload).node_info).metadata).network_id;
  assertStrictEquals(networkIn(a!), "alpha");
  assertStrictEquals(networkIn(c!), "p2p_default");
  assertStrictEquals(networkIn(e!), "beta");
  assertStrictEquals(server.endpoint.peer(ic.id)?.network, "p2p_default");

  a!.send(SERVER, "DiscoveryRequest", null);
  c!.send(SERVER, "DiscoveryRequest", null);
  sim.runFor(20);
  assertEquals(discoveryIds(a!.last("DiscoveryResponse").payload).sort(), [ia.id, ib.id].sort());
  assertEquals(discoveryIds(c!.last("DiscoveryResponse").payload).sort(), [ic.id, id.id].sort());

  const entry = obj((a!.last("DiscoveryResponse").payload as Json[]).find((p) => obj(p).id === ib.id));
  assertStrictEquals(entry.addr, b!.addr, "addr is the declared listen_addr");
  assertEquals(entry.capabilities, []);
  assert(Number.isInteger(entry.last_seen) && (entry.last_seen as number) <= Math.floor(sim.now / 1000));
  assert((entry.last_seen as number) > Math.floor(EPOCH_MS / 1000) - 1, "last_seen is in seconds");
});

Deno.test("a DiscoveryResponse is an array for a null payload and a page object for {offset, limit}", () => {
  const { sim } = setup();
  const peers = Array.from({ length: 5 }, () => raw(sim));
  const ids = peers.map((p) => join(sim, p).id);
  const a = peers[0]!;
  a.send(SERVER, "DiscoveryRequest", null);
  sim.runFor(20);
  const all = a.last("DiscoveryResponse").payload;
  assert(Array.isArray(all));
  assertEquals(discoveryIds(all), ids, "registration order, requester included");

  a.send(SERVER, "DiscoveryRequest", { offset: 1, limit: 2 });
  sim.runFor(20);
  const page = obj(a.last("DiscoveryResponse").payload);
  assertEquals(discoveryIds(page), ids.slice(1, 3));
  assertStrictEquals(page.offset, 1);
  assertStrictEquals(page.total, 5);
  assertStrictEquals(page.next_offset, 3);

  a.send(SERVER, "DiscoveryRequest", { offset: 4, limit: 2 });
  sim.runFor(20);
  const lastPage = obj(a.last("DiscoveryResponse").payload);
  assertEquals(discoveryIds(lastPage), ids.slice(4));
  assertStrictEquals(lastPage.next_offset, null);

  a.send(SERVER, "DiscoveryRequest", {});
  sim.runFor(20);
  const defaults = obj(a.last("DiscoveryResponse").payload);
  assertEquals(discoveryIds(defaults), ids);
  assertStrictEquals(defaults.offset, 0);

  a.send(SERVER, "DiscoveryRequest", { offset: -1 });
  a.send(SERVER, "DiscoveryRequest", { limit: 0 });
  a.send(SERVER, "DiscoveryRequest", [1]);
  sim.runFor(20);
  const errors = a.messages("Error").map((m) => obj(m.payload).code);
  assertEquals(errors, ["bad_request", "bad_request", "bad_request"]);
});

Deno.test("a DiscoveryResponse always fits one datagram and next_offset paging walks every peer exactly once", () => {
  const { sim, server } = setup({ maxConnections: 100 }, 1);
  const longName = (i: number) => `${i}-${'é"\\'.repeat(80)}`.slice(0, 256);
  const caps = Array.from({ length: 32 }, (_, i) => `${i}${"ü".repeat(250)}`);
  const peers = Array.from({ length: 30 }, () => raw(sim));
  const ids = peers.map((p, i) => join(sim, p, { name: longName(i), capabilities: caps }).id);
  const a = peers[0]!;
  const responseSize = () => {
    const sent = sim.sentBy(SERVER).filter((s) =>
      s.to === a.addr && s.msg.message_type === "DiscoveryResponse"
    );
    return sent[sent.length - 1]!.bytes.length;
  };

  a.send(SERVER, "DiscoveryRequest", null);
  sim.runFor(20);
  const first = a.last("DiscoveryResponse").payload;
  assert(Array.isArray(first));
  assert(first.length >= 1 && first.length < ids.length, `cut to fit: ${first.length} entries`);
  assert(responseSize() <= MAX_UDP_PAYLOAD, `${responseSize()} bytes`);

  const seen: string[] = [];
  let offset: Json = 0;
  let pages = 0;
  while (offset !== null) {
    a.send(SERVER, "DiscoveryRequest", { offset, limit: 64 });
    sim.runFor(20);
    const page = obj(a.last("DiscoveryResponse").payload);
    assert(responseSize() <= MAX_UDP_PAYLOAD, `${responseSize()} bytes`);
    assertStrictEquals(page.total, ids.length);
    const got = discoveryIds(page);
    assert(got.length > 0, "a page makes progress");
    seen.push(...got);
    offset = page.next_offset!;
    assert(++pages <= ids.length, "paging terminates");
  }
  assert(pages > 1);
  assertEquals(seen, ids);
  assertBalanced(server, sim.now);
});

// ------------------------------------------------------------------ data

Deno.test("Data without a recipient is echoed as {echo, timestamp}", () => {
  const { sim, server } = setup({}, 0);
  const a = raw(sim);
  const info = join(sim, a);
  const payload = { hello: [1, 2, 3], nested: { ok: true } };
  a.send(SERVER, "Data", payload);
  sim.runFor(1);
  assertEquals(a.last("Data").payload, { echo: payload, timestamp: Math.floor((sim.now - 1) / 1000) });
  const data = server.eventsOf("data");
  assertStrictEquals(data.length, 1);
  assertStrictEquals(data[0]!.fromId, info.id);
  assertStrictEquals(data[0]!.to, null);
  assertEquals(data[0]!.payload, payload);
});

Deno.test("an echo that would not fit in one datagram is refused with Error too_large and counted", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  join(sim, a);
  const before = server.endpoint.getStats(sim.now);
  // An incoming datagram of 65,530 bytes is accepted (limit 65,535) but its echo would exceed 65,507.
  const probe = a.send(SERVER, "Ping", "", { seq: 1_000 });
  const overhead = JSON.stringify(probe).length;
  sim.runFor(20);
  a.clear();
  a.send(SERVER, "Data", "x".repeat(65_530 - overhead), { seq: 1_001 });
  sim.runFor(20);
  const received = sim.trace.filter((t) => t.from === a.addr);
  assertStrictEquals(received[received.length - 1]!.bytes.length, 65_530);
  assertEquals(a.messages().map((m) => m.message_type), ["Error"]);
  const err = errorOf(a.last("Error"));
  assertStrictEquals(err.code, "too_large");
  assertMatch(err.error as string, /65507/);
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.sendsTooLarge - before.sendsTooLarge, 1);
  assertStrictEquals(s.messagesSent.Data, before.messagesSent.Data, "the oversize echo was not sent");
  assert(sim.sentBy(SERVER).every((t) => t.bytes.length <= MAX_UDP_PAYLOAD));
  assertBalanced(server, sim.now);
});

Deno.test("routed Data {to, data} reaches the recipient as reliable Data {from, data}", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const b = raw(sim);
  const ia = join(sim, a);
  const ib = join(sim, b);
  a.clear();
  a.send(SERVER, "Data", { to: ib.id.toUpperCase(), data: { x: 1 } }, { requiresAck: true });
  sim.runFor(20);
  const got = b.last("Data");
  assertEquals(got.payload, { from: ia.id, data: { x: 1 } });
  assertStrictEquals(got.requires_ack, true);
  assertEquals(a.messages().map((m) => m.message_type), ["Ack"], "the sender gets its Ack and no echo");
  b.ack(SERVER, got);
  sim.runFor(5_000);
  assertStrictEquals(b.messages("Data").length, 1);
  const delivered = server.eventsOf("delivered").filter((d) => d.messageType === "Data");
  assertStrictEquals(delivered.length, 1);
  assertStrictEquals(delivered[0]!.id, got.id);
});

Deno.test("routed Data to an unknown or other-network recipient gets unknown_recipient; a handshaking one gets it", () => {
  const { sim } = setup();
  const a = raw(sim);
  const other = raw(sim);
  const half = raw(sim);
  join(sim, a);
  const io = join(sim, other, { metadata: { network_id: "elsewhere" } });
  const ih = infoFor(half);
  half.handshake(SERVER, ih);
  sim.runFor(20);
  const nobody = a.newId();
  for (const to of [nobody, io.id, ih.id]) a.send(SERVER, "Data", { to, data: 1 });
  sim.runFor(20);
  const errors = a.messages("Error").map((m) => obj(m.payload));
  assertEquals(errors.map((e) => e.code), ["unknown_recipient", "unknown_recipient"]);
  assertStrictEquals(errors[0]!.error, `unknown recipient: ${nobody}`);
  assertStrictEquals(other.messages("Data").length, 0);
  // A recipient whose handshake is not yet confirmed is registered and reachable: routing to it avoids
  // losing Data sent right after both sides connected.
  assertStrictEquals(half.messages("Data").length, 1);
  a.send(SERVER, "Data", { to: "not-a-uuid", data: 1 });
  sim.runFor(20);
  assertStrictEquals(errorOf(a.last("Error")).code, "bad_request");
});

Deno.test("Data and DiscoveryRequest from an unregistered address get not_registered and count as drops", () => {
  const { sim, server } = setup();
  const z = raw(sim);
  // Errors to an address with no state are never larger than what caused them: these requests are big enough.
  const pad = "-".repeat(200);
  z.send(SERVER, "Data", `hi ${pad}`);
  z.send(SERVER, "DiscoveryRequest", { pad });
  sim.runFor(20);
  const errors = z.messages("Error");
  assertEquals(errors.map((m) => obj(m.payload).code), ["not_registered", "not_registered"]);
  assert(errors.every((m) => m.sequence_number === null), "stateless replies carry no sequence number");
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.drops.not_registered, 2);
  assertStrictEquals(s.processed, 0);
  const dropped = server.eventsOf("dropped");
  assertEquals(dropped.map((d) => [d.reason, d.afterDisconnect]), [
    ["not_registered", false],
    ["not_registered", false],
  ]);
  assertStrictEquals(server.endpoint.nextDeadline(), Infinity, "no state kept");
  assertBalanced(server, sim.now);
});

Deno.test("Ping from anyone gets a Pong that echoes the nonce when there is one", () => {
  const { sim } = setup();
  const z = raw(sim);
  z.send(SERVER, "Ping", null);
  z.send(SERVER, "Ping", { nonce: "abc" });
  z.send(SERVER, "Ping", { nonce: 42, other: true });
  z.send(SERVER, "Ping", "text");
  sim.runFor(20);
  assertEquals(z.messages("Pong").map((m) => m.payload), [null, { nonce: "abc" }, { nonce: 42 }, null]);
  assert(z.messages("Pong").every((m) => m.sequence_number === null));
  const a = raw(sim);
  join(sim, a);
  a.send(SERVER, "Ping", { nonce: 7 });
  sim.runFor(20);
  const pong = a.last("Pong");
  assertEquals(pong.payload, { nonce: 7 });
  assert(typeof pong.sequence_number === "number", "a registered peer's Pong is numbered");
});

// ------------------------------------------------------------------ reliability

Deno.test("a reliable message is resent at 500 ms and 1.5 s and given up at 3.5 s", () => {
  const { sim, server } = setup({ retransmitSchedule: [500, 1000, 2000], retransmitPolicy: "schedule" }, 0);
  const a = raw(sim);
  const b = raw(sim);
  join(sim, a);
  const ib = join(sim, b);
  const before = server.endpoint.getStats(sim.now);
  const t = sim.now;
  a.send(SERVER, "Data", { to: ib.id, data: "x" });
  sim.runUntil(t + 3_499);
  const copies = b.received("Data");
  assertEquals(copies.map((r) => r.at - t), [0, 500, 1_500]);
  assertEquals(copies[1]!.bytes, copies[0]!.bytes, "a resend is the same datagram");
  assertEquals(copies[2]!.bytes, copies[0]!.bytes);
  assertStrictEquals(server.eventsOf("gaveUp").length, 0);
  sim.runUntil(t + 3_500);
  const gaveUp = server.eventsOf("gaveUp");
  assertStrictEquals(gaveUp.length, 1);
  assertStrictEquals(gaveUp[0]!.messageType, "Data");
  assertStrictEquals(gaveUp[0]!.tries, 3);
  assertStrictEquals(gaveUp[0]!.id, copies[0]!.msg.id);
  assertStrictEquals(gaveUp[0]!.to.port, sock(b.addr).port);
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.retransmissions - before.retransmissions, 2);
  assertStrictEquals(s.giveUps - before.giveUps, 1);
  sim.runFor(10_000);
  assertStrictEquals(b.messages("Data").length, 3);
});

Deno.test("a duplicate reliable message is re-acked, answered again with the kept answer, but processed once", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  join(sim, a);
  a.clear();
  const msg = a.send(SERVER, "Data", "once", { seq: 10, requiresAck: true });
  a.sendBytes(SERVER, JSON.stringify(msg));
  a.send(SERVER, "Data", "same seq, new id", { seq: 10, requiresAck: true });
  sim.runFor(20);
  assertStrictEquals(a.messages("Ack").length, 3);
  assert(a.messages("Ack").slice(0, 2).every((m) => m.ack_for === msg.id && m.sequence_number === 10));
  // Processed once: one echo, which each repeat gets again (its answer may be what was lost).
  const echoes = a.messages("Data");
  assertStrictEquals(new Set(echoes.map((m) => m.id)).size, 1, "echoed once");
  assertStrictEquals(echoes.length, 3, "the kept echo answers each repeat");
  assertStrictEquals(server.eventsOf("data").length, 1);
  assertStrictEquals(server.endpoint.getStats(sim.now).duplicates, 2);
  assertStrictEquals(server.endpoint.getStats(sim.now).answersReplayed, 2);
  assertBalanced(server, sim.now);
});

Deno.test("received sequence numbers wrap around at u32", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  a.handshake(SERVER, infoFor(a), { seq: 0xffff_fffe });
  sim.runFor(20);
  a.ack(SERVER, a.last("HandshakeResponse"));
  for (const seq of [0xffff_ffff, 0, 1]) a.send(SERVER, "Data", seq, { seq, requiresAck: true });
  sim.runFor(20);
  assertEquals(a.messages("Data").map((m) => obj(m.payload).echo), [0xffff_ffff, 0, 1]);
  for (const seq of [0, 0xffff_ffff, 0xffff_fffe]) {
    a.send(SERVER, "Data", "again", { seq, requiresAck: true });
  }
  sim.runFor(20);
  const echoes = a.messages("Data");
  assertStrictEquals(new Set(echoes.map((m) => m.id)).size, 3, "repeats across the wrap are duplicates");
  assertStrictEquals(server.endpoint.getStats(sim.now).duplicates, 3);
});

Deno.test("the server's sequence numbers per peer are consecutive u32 values", () => {
  const { sim } = setup();
  const a = raw(sim);
  join(sim, a);
  for (let i = 0; i < 5; i++) a.send(SERVER, "Ping", null);
  sim.runFor(20);
  const seqs = a.messages().filter((m) => m.message_type !== "Ack").map((m) => m.sequence_number!);
  for (let i = 1; i < seqs.length; i++) assertStrictEquals(seqs[i], seqs[i - 1]! + 1);
});

Deno.test("Retransmit {sequence_numbers: [n]} resends a held message and ignores ones not held", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const b = raw(sim);
  join(sim, a);
  const ib = join(sim, b);
  a.send(SERVER, "Data", { to: ib.id, data: "held" });
  // A resend on request waits until the copy in flight had a round trip to be acked: the server timed this
  // peer's round trip at 55 ms during the handshake (join() acks 50 ms late); its timer resends at 165 ms.
  sim.runFor(60);
  const original = b.received("Data")[0]!;
  b.send(SERVER, "Retransmit", { sequence_numbers: [original.msg.sequence_number!, 99_999] });
  sim.runFor(20);
  const copies = b.received("Data");
  assertStrictEquals(copies.length, 2, "one resend, nothing for the number not held");
  assertEquals(copies[1]!.bytes, original.bytes);
  assertStrictEquals(server.endpoint.getStats(sim.now).nackResends, 1);
  b.ack(SERVER, original.msg);
  sim.runFor(20);
  b.send(SERVER, "Retransmit", { sequence_numbers: [original.msg.sequence_number!] });
  sim.runFor(20);
  assertStrictEquals(b.received("Data").length, 2, "an acked message is no longer held");
  b.send(SERVER, "Retransmit", { sequence_numbers: ["1"] });
  sim.runFor(20);
  assertStrictEquals(server.endpoint.getStats(sim.now).drops.bad_payload, 1);
});

// ------------------------------------------------------------------ liveness

Deno.test("the server pings every peer every heartbeat_interval", () => {
  const { sim, server } = setup({ heartbeatInterval: 30, connectionTimeout: 60 }, 0);
  const a = raw(sim, { autoPong: true });
  const t = sim.now;
  const info = join(sim, a);
  sim.runUntil(t + 100_000);
  const pings = a.received("Ping");
  assertEquals(pings.map((r) => r.at - t), [30_000, 60_000, 90_000]);
  assert(pings.every((r) => r.msg.requires_ack === false && r.msg.payload === null));
  assertStrictEquals(server.endpoint.peer(info.id)?.state, "authenticated", "answering keeps it alive");
  assertStrictEquals(server.endpoint.getStats(sim.now).timeouts, 0);
});

Deno.test("a silent authenticated peer is removed after connection_timeout with peerLeft timeout", () => {
  const { sim, server } = setup({ heartbeatInterval: 30, connectionTimeout: 60 }, 0);
  const a = raw(sim);
  const info = join(sim, a);
  const lastHeard = server.endpoint.peer(info.id)!.lastSeen;
  sim.runUntil(lastHeard + 59_999);
  assert(server.endpoint.peer(info.id));
  sim.runUntil(lastHeard + 60_000);
  assertStrictEquals(server.endpoint.peer(info.id), undefined);
  const left = server.eventsOf("peerLeft");
  assertStrictEquals(left.length, 1);
  assertStrictEquals(left[0]!.reason, "timeout");
  assertStrictEquals(server.endpoint.getStats(sim.now).timeouts, 1);
});

Deno.test("Disconnect removes the peer at once with peerLeft disconnect", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const b = raw(sim);
  const ia = join(sim, a);
  const ib = join(sim, b);
  a.clear();
  a.send(SERVER, "Disconnect", { reason: "bye" }, { requiresAck: true });
  sim.runFor(20);
  assertEquals(a.messages().map((m) => m.message_type), ["Ack"], "only the Ack comes back");
  const left = server.eventsOf("peerLeft");
  assertStrictEquals(left.length, 1);
  assertStrictEquals(left[0]!.reason, "disconnect");
  assertStrictEquals(left[0]!.peer.id, ia.id);
  assertStrictEquals(server.endpoint.peer(ia.id), undefined);
  assertStrictEquals(server.endpoint.getStats(sim.now).disconnects, 1);
  b.send(SERVER, "DiscoveryRequest", null);
  sim.runFor(20);
  assertEquals(discoveryIds(b.last("DiscoveryResponse").payload), [ib.id]);
});

Deno.test("shutdown sends Disconnect to every peer and forgets them all", () => {
  const { sim, server } = setup();
  const joined = Array.from({ length: 3 }, () => raw(sim));
  for (const p of joined) join(sim, p);
  const half = raw(sim);
  half.handshake(SERVER, infoFor(half));
  sim.runFor(20);
  sim.act(server, (ep, now) => ep.shutdown(now, "server shutting down"));
  sim.runFor(20);
  for (const p of [...joined, half]) {
    assertEquals(p.last("Disconnect").payload, { reason: "server shutting down" });
  }
  assertEquals(server.eventsOf("peerLeft").map((e) => e.reason), ["shutdown", "shutdown", "shutdown"]);
  assertStrictEquals(server.endpoint.peers().length, 0);
  assertStrictEquals(server.endpoint.nextDeadline(), Infinity);
  sim.runFor(10_000);
  assertStrictEquals(half.messages("HandshakeResponse").length, 1, "nothing is retransmitted after shutdown");
});

// ------------------------------------------------------------------ robustness

Deno.test("malformed datagrams are dropped, counted by reason, and never throw", () => {
  const { sim, server } = setup({ maxMessageSize: 2_048 });
  const z = raw(sim);
  const good = (over: Record<string, unknown>) =>
    JSON.stringify({
      id: z.newId(),
      message_type: "Ping",
      timestamp: 1,
      payload: null,
      sender_addr: null,
      sequence_number: 1,
      requires_ack: false,
      ack_for: null,
      ...over,
    });
  const cases: [string, Uint8Array | string][] = [
    ["invalid_utf8", new Uint8Array([0x7b, 0xff, 0xfe, 0x7d])],
    ["invalid_json", "not json"],
    ["invalid_json", ""],
    ["not_an_object", "[1,2]"],
    ["not_an_object", "null"],
    ["not_an_object", '"Ping"'],
    ["bad_field", good({ sequence_number: "1" })],
    ["bad_field", good({ sequence_number: 4_294_967_296 })],
    ["bad_field", good({ id: 12_345 })],
    ["bad_field", good({ id: "12345" })],
    ["bad_field", good({ timestamp: 1.5 })],
    ["bad_field", good({ timestamp: -1 })],
    ["bad_field", good({ timestamp: "1" })],
    ["bad_field", good({ ack_for: 1.5 })],
    ["bad_field", good({ requires_ack: "yes" })],
    ["bad_field", good({ sender_addr: 5 })],
    ["unknown_type", good({ message_type: "ping" })],
    ["unknown_type", good({ message_type: "Hello" })],
    ["oversize", good({ payload: "x".repeat(2_100) })],
    ["unexpected", good({ message_type: "Ack", ack_for: z.newId() })],
    ["unexpected", good({ message_type: "HandshakeResponse" })],
    ["not_registered", good({ message_type: "Disconnect" })],
    ["not_registered", good({ message_type: "Retransmit", payload: { sequence_numbers: [1] } })],
  ];
  for (const [, bytes] of cases) z.sendBytes(SERVER, bytes);
  sim.runFor(20);
  const s = server.endpoint.getStats(sim.now);
  const expected: Record<string, number> = {};
  for (const [reason] of cases) expected[reason] = (expected[reason] ?? 0) + 1;
  for (const [reason, n] of Object.entries(s.drops)) {
    assertStrictEquals(n, expected[reason] ?? 0, `drops.${reason}`);
  }
  assertStrictEquals(s.droppedTotal, cases.length);
  assertStrictEquals(s.datagramsReceived, cases.length);
  assertEquals(server.eventsOf("dropped").map((d) => d.reason), cases.map(([r]) => r));
  assertBalanced(server, sim.now);
  z.sendBytes(SERVER, good({}));
  sim.runFor(20);
  assertStrictEquals(z.messages("Pong").length, 1, "still answering after the garbage");
  assertBalanced(server, sim.now);
});

Deno.test("decoding accepts missing optional keys and a millisecond timestamp", () => {
  const { sim } = setup();
  const z = raw(sim);
  z.sendBytes(SERVER, JSON.stringify({ id: z.newId(), message_type: "Ping", timestamp: EPOCH_MS }));
  sim.runFor(20);
  assertStrictEquals(z.messages("Pong").length, 1);
});

Deno.test("a stray datagram from a recently disconnected address is dropped with afterDisconnect", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  const z = raw(sim);
  join(sim, a);
  a.send(SERVER, "Disconnect", { reason: "bye" });
  sim.runFor(20);
  a.send(SERVER, "Data", "late");
  z.send(SERVER, "Data", "stranger");
  sim.runFor(20);
  const dropped = server.eventsOf("dropped");
  assertEquals(dropped.map((d) => [d.from.port, d.reason, d.afterDisconnect]), [
    [sock(a.addr).port, "not_registered", true],
    [sock(z.addr).port, "not_registered", false],
  ]);
});

Deno.test("an address that registers again is no longer treated as recently disconnected", () => {
  const { sim, server } = setup();
  const a = raw(sim);
  join(sim, a);
  a.send(SERVER, "Disconnect", { reason: "bye" });
  sim.runFor(20);
  join(sim, a);
  a.sendBytes(SERVER, "garbage");
  sim.runFor(20);
  const dropped = server.eventsOf("dropped");
  assertEquals(dropped.map((d) => [d.reason, d.afterDisconnect]), [["invalid_json", false]]);
});

// ------------------------------------------------------------------ client role

const CLIENT = "198.51.100.200:5000";

Deno.test("a client Endpoint connects: connected event, the server's peerJoined, echo and discovery", () => {
  const { sim, server } = setup();
  const client = sim.addEndpoint(CLIENT, { role: "client", node: { name: "cli" } });
  sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(100);
  const connected = client.eventsOf("connected");
  assertStrictEquals(connected.length, 1);
  assertStrictEquals(connected[0]!.node.id, server.id);
  assertEquals(connected[0]!.addr, sock(SERVER));
  assertStrictEquals(server.eventsOf("peerJoined")[0]?.peer.id, client.id, "the client acks the response");
  assertEquals(client.endpoint.getStats(sim.now).links, { handshaking: 0, connected: 1 });

  const sent = sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", { n: 1 }, { reliable: true }));
  sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "DiscoveryRequest", null));
  sim.runFor(100);
  const echo = client.eventsOf("data");
  assertStrictEquals(echo.length, 1);
  assertEquals(obj(echo[0]!.payload).echo, { n: 1 });
  assertStrictEquals(client.eventsOf("delivered").filter((d) => d.id === sent.id).length, 1);
  const discovery = client.eventsOf("discovery");
  assertStrictEquals(discovery.length, 1);
  assertEquals(discovery[0]!.peers.map((p) => p.id), [client.id]);
  assertStrictEquals(discovery[0]!.nextOffset, null);
  assertBalanced(client, sim.now);
  assertBalanced(server, sim.now);
});

Deno.test("connect to an address nobody answers fails with connectFailed timeout after the retransmit schedule", () => {
  const sim = new Sim({ seed: 3 });
  const client = sim.addEndpoint(CLIENT, { role: "client", config: { retransmitPolicy: "schedule" } });
  const t = sim.now;
  sim.act(client, (ep, now) => ep.connect(now, sock("198.51.100.99:9")));
  sim.runUntil(t + 3_499);
  assertStrictEquals(client.eventsOf("connectFailed").length, 0);
  const tries = sim.sentBy(CLIENT).filter((s) => s.msg.message_type === "HandshakeRequest");
  assertEquals(tries.map((s) => s.at - t), [0, 500, 1_500]);
  sim.runUntil(t + 3_500);
  const failed = client.eventsOf("connectFailed");
  assertStrictEquals(failed.length, 1);
  assertStrictEquals(failed[0]!.code, "timeout");
  assertStrictEquals(failed[0]!.error, "connection timeout to 198.51.100.99:9");
  assertStrictEquals(failed[0]!.probe, false);
  assertEquals(client.endpoint.getStats(sim.now).links, { handshaking: 0, connected: 0 });
  assertStrictEquals(client.endpoint.nextDeadline(), Infinity);
});

Deno.test("connect refused by the server reports connectFailed with the server's code", () => {
  const { sim } = setup({ maxConnections: 1 });
  const holder = raw(sim);
  const held = join(sim, holder);
  const full = sim.addEndpoint("198.51.100.201:5000", { role: "client" });
  sim.act(full, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(100);
  const f1 = full.eventsOf("connectFailed");
  assertStrictEquals(f1.length, 1);
  assertStrictEquals(f1[0]!.code, "server_full");
  assertMatch(f1[0]!.error, /server full/);
  assertEquals(full.endpoint.getStats(sim.now).links, { handshaking: 0, connected: 0 });

  const { sim: sim2 } = setup();
  const h2 = raw(sim2);
  const info = join(sim2, h2);
  const twin = sim2.addEndpoint("198.51.100.202:5000", { role: "client", node: { id: info.id } });
  sim2.act(twin, (ep, now) => ep.connect(now, sock(SERVER)));
  sim2.runFor(100);
  const f2 = twin.eventsOf("connectFailed");
  assertStrictEquals(f2.length, 1);
  assertStrictEquals(f2[0]!.code, "node_id_conflict");
  assertStrictEquals(f2[0]!.error, NODE_ID_EXISTS);
  assert(held.id !== info.id);
});

Deno.test("a client gives up with network_mismatch when the server answers for another network", () => {
  const sim = new Sim({ seed: 4 });
  const fake = sim.addRaw(SERVER);
  const client = sim.addEndpoint(CLIENT, { role: "client", node: { metadata: { network_id: "alpha" } } });
  sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(20);
  const req = fake.last("HandshakeRequest");
  assertStrictEquals(obj(obj(req.payload).metadata).network_id, "alpha");
  const serverInfo = nodeInfo(fake.newId(), { listen_addr: SERVER, metadata: { network_id: "beta" } });
  fake.send(
    CLIENT,
    "HandshakeResponse",
    { node_info: serverInfo, success: true, error_message: null } as never,
    {
      requiresAck: true,
    },
  );
  sim.runFor(20);
  const failed = client.eventsOf("connectFailed");
  assertEquals(failed.map((f) => f.code), ["network_mismatch"]);
  assertMatch(failed[0]!.error, /network mismatch/);
  assertStrictEquals(client.eventsOf("connected").length, 0);
  assertEquals(client.endpoint.getStats(sim.now).links, { handshaking: 0, connected: 0 });
});

Deno.test("a client refuses to send to an address it has no link to", () => {
  const sim = new Sim();
  const client = sim.addEndpoint(CLIENT, { role: "client" });
  assertThrows(
    () => client.endpoint.send(sim.now, sock(SERVER), "Ping", null),
    (e: unknown) => e instanceof RangeError && e.message.includes(SERVER),
  );
});

Deno.test("a client whose server stops answering gets linkClosed timeout", () => {
  const { sim, server } = setup({}, 5);
  const client = sim.addEndpoint(CLIENT, { role: "client", config: { connectionTimeout: 60 } });
  sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(100);
  assertStrictEquals(client.eventsOf("connected").length, 1);
  sim.remove(SERVER);
  sim.runFor(61_000);
  const closed = client.eventsOf("linkClosed");
  assertStrictEquals(closed.length, 1);
  assertStrictEquals(closed[0]!.reason, "timeout");
  assert(server.events.length > 0);
});

// ------------------------------------------------------------------ sibling servers

Deno.test("two servers on one host discover each other as siblings and list each other with capability server", () => {
  const sim = new Sim({ seed: 11 });
  const config = { discoveryPortRange: [8081, 8083] as [number, number], enableDiscovery: true };
  const s1 = sim.addEndpoint("192.0.2.1:8081", { config, node: { name: "s1", capabilities: ["server"] } });
  const s2 = sim.addEndpoint("192.0.2.1:8082", { config, node: { name: "s2", capabilities: ["server"] } });
  sim.act(s1, (ep, now) => ep.probeSiblings(now, sock(s1.addr)));
  sim.runFor(5_000);

  const p1 = s1.endpoint.peer(s2.id);
  const p2 = s2.endpoint.peer(s1.id);
  assertStrictEquals(p1?.state, "authenticated");
  assertStrictEquals(p2?.state, "authenticated");
  assertEquals(p1.capabilities, ["server"]);
  assertEquals(p2.capabilities, ["server"]);
  assertStrictEquals(s1.eventsOf("connected")[0]?.node.id, s2.id);
  assertStrictEquals(s2.eventsOf("connected")[0]?.node.id, s1.id);
  const quiet = s1.eventsOf("connectFailed");
  assertEquals(quiet.map((f) => [f.addr.port, f.code, f.probe]), [[8083, "timeout", true]]);

  const c = sim.addRaw("198.51.100.7:7000");
  c.handshake(s2.addr, nodeInfo(c.newId(), { listen_addr: c.addr }));
  sim.runFor(50);
  c.ack(s2.addr, c.last("HandshakeResponse"));
  c.send(s2.addr, "DiscoveryRequest", null);
  sim.runFor(50);
  const list = c.last("DiscoveryResponse").payload as Json[];
  const sibling = list.map(obj).find((p) => p.id === s1.id);
  assert(sibling, "the sibling is listed");
  assertEquals(sibling.capabilities, ["server"]);
  assertStrictEquals(sibling.addr, s1.addr);
  sim.runFor(120_000);
  assertStrictEquals(s1.endpoint.peer(s2.id)?.state, "authenticated", "siblings keep each other alive");
});

Deno.test("a server connects back to a server that registers with it, even with discovery disabled", () => {
  const sim = new Sim({ seed: 12 });
  const config = { enableDiscovery: false };
  const s1 = sim.addEndpoint("192.0.2.1:8081", { config, node: { name: "s1", capabilities: ["server"] } });
  const s2 = sim.addEndpoint("192.0.2.2:9000", { config, node: { name: "s2", capabilities: ["server"] } });
  sim.act(s1, (ep, now) => ep.connect(now, sock(s2.addr)));
  sim.runFor(2_000);
  assertStrictEquals(s1.endpoint.peer(s2.id)?.state, "authenticated");
  assertStrictEquals(s2.endpoint.peer(s1.id)?.state, "authenticated");
  assertEquals(s2.eventsOf("connected").map((e) => e.node.id), [s1.id]);
  const c = sim.addEndpoint("192.0.2.3:9000", { config, node: { name: "plain client" } });
  sim.act(c, (ep, now) => ep.connect(now, sock(s2.addr)));
  sim.runFor(2_000);
  assertStrictEquals(s2.endpoint.peer(c.id)?.state, "authenticated");
  assertStrictEquals(
    s2.eventsOf("connected").length,
    1,
    "no connect-back to a node without capability server",
  );
});

// ------------------------------------------------------------------ wire shape

Deno.test("every message the core sends has the eight keys in order, a v4 id and a timestamp in seconds", () => {
  const { sim, server } = setup({ maxConnections: 3 });
  const a = raw(sim, { autoPong: true });
  const b = raw(sim);
  const ia = join(sim, a);
  const ib = join(sim, b);
  a.send(SERVER, "Ping", { nonce: 1 });
  a.send(SERVER, "DiscoveryRequest", null);
  a.send(SERVER, "DiscoveryRequest", { offset: 0, limit: 1 });
  a.send(SERVER, "Data", "echo me", { requiresAck: true });
  a.send(SERVER, "Data", { to: ib.id, data: "routed" });
  a.send(SERVER, "Data", { to: a.newId(), data: "lost" });
  b.handshake(SERVER, { ...ia, listen_addr: b.addr });
  const z = raw(sim);
  z.send(SERVER, "Data", "unregistered");
  z.handshake(SERVER, { ...infoFor(z), name: "" });
  const client = sim.addEndpoint(CLIENT, { role: "client" });
  sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(40_000);
  sim.act(server, (ep, now) => ep.shutdown(now, "done"));
  sim.runFor(100);

  const types = new Set<string>();
  const byId = new Map<string, Uint8Array>();
  for (const entry of sim.trace) {
    if (entry.from !== SERVER && entry.from !== CLIENT) continue;
    const msg = decode(entry.bytes);
    types.add(msg.message_type);
    const keys = Object.keys(msg);
    assertEquals(keys.slice(0, 8), ENVELOPE_KEYS, "the eight keys first, in order");
    for (const extra of keys.slice(8)) {
      assert(
        (EXTENSION_KEYS as readonly string[]).includes(extra),
        `only documented extension fields follow: ${extra}`,
      );
    }
    assertMatch(msg.id, UUID_V4);
    assert(Number.isInteger(msg.timestamp), `integer timestamp: ${msg.timestamp}`);
    const secs = Math.floor(entry.at / 1000);
    assertStrictEquals(msg.sender_addr, entry.from);
    const seen = byId.get(msg.id);
    if (seen) assertEquals(entry.bytes, seen, "one id, one message (resends are identical)");
    else {assert(
        msg.timestamp === secs,
        `first send stamped with its own second: ${msg.timestamp} at ${entry.at}`,
      );}
    byId.set(msg.id, entry.bytes);
  }
  for (
    const t of ["Ack", "HandshakeRequest", "HandshakeResponse", "Ping", "Pong", "DiscoveryResponse", "Data"]
  ) {
    assert(types.has(t), `scenario sent no ${t}`);
  }
  assert(types.has("Error") && types.has("Disconnect"));
});

// ------------------------------------------------------------------ scale and faults

Deno.test("timers scale: 1,000 peers with staggered joins all get their heartbeat Pings on time", () => {
  const { sim, server } = setup({ maxConnections: 2_000, heartbeatInterval: 30, connectionTimeout: 60 });
  const start = sim.now;
  const joins: { peer: RawPeer; at: number }[] = [];
  for (let i = 0; i < 1_000; i++) {
    sim.runUntil(start + i * 7);
    const port = 20_000 + i;
    const peer = sim.addRaw(`198.51.100.${1 + (i % 250)}:${port}`, { autoAck: true, autoPong: true });
    peer.handshake(SERVER, nodeInfo(peer.newId(), { listen_addr: peer.addr }));
    joins.push({ peer, at: sim.now });
  }
  sim.runUntil(start + 99_000);
  assertEquals(server.endpoint.getStats(sim.now).peers, { handshaking: 0, authenticated: 1_000 });
  for (const { peer, at } of joins) {
    // Request arrives after 5 ms; Pings leave every 30 s from then and arrive 5 ms later.
    assertEquals(peer.received("Ping").map((r) => r.at - at), [30_010, 60_010, 90_010], peer.addr);
  }
  const s = server.endpoint.getStats(sim.now);
  assertStrictEquals(s.timeouts, 0);
  assertStrictEquals(s.retransmissions, 0);
  assertStrictEquals(s.messagesSent.Ping, 3_000);
});

Deno.test("under loss, duplication and reordering, reliable Data is processed at most once and delivered Data exactly once", () => {
  withSeeds([1, 2, 3, 4, 5, 6, 7, 8], (seed) => {
    const sim = new Sim({ seed, link: { latencyMs: 20, jitterMs: 40, loss: 0.1, duplicate: 0.2 } });
    const schedule = [200, 400, 800, 1_600, 3_200];
    const server = sim.addEndpoint(SERVER, {
      config: { enableDiscovery: false, retransmitSchedule: schedule },
    });
    const client = sim.addEndpoint(CLIENT, { role: "client", config: { retransmitSchedule: schedule } });
    sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
    sim.runFor(10_000);
    assertStrictEquals(client.eventsOf("connected").length, 1);
    assertStrictEquals(server.endpoint.peer(client.id)?.state, "authenticated");
    const ids: string[] = [];
    for (let i = 0; i < 20; i++) {
      ids.push(
        sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", { i }, { reliable: true })).id,
      );
      sim.runFor(50);
    }
    sim.runFor(10_000);
    const processed = new Map<number, number>();
    for (const e of server.eventsOf("data")) {
      const i = obj(e.payload).i as number;
      processed.set(i, (processed.get(i) ?? 0) + 1);
    }
    for (const [i, n] of processed) assertStrictEquals(n, 1, `Data ${i} processed ${n} times`);
    const delivered = new Set(client.eventsOf("delivered").map((d) => d.id));
    const gaveUp = new Set(client.eventsOf("gaveUp").map((d) => d.id));
    ids.forEach((id, i) => {
      assert(delivered.has(id) !== gaveUp.has(id), `message ${i} is either delivered or given up`);
      if (delivered.has(id)) assertStrictEquals(processed.get(i), 1, `delivered Data ${i} was processed`);
    });
    assert(delivered.size >= 18, `only ${delivered.size} of 20 delivered`);
    assert(server.endpoint.getStats(sim.now).duplicates > 0, "the network duplicated something");
    assertBalanced(server, sim.now);
    assertBalanced(client, sim.now);
  });
});

Deno.test("the simulator replays a seed exactly", () => {
  const run = (seed: number) => {
    const sim = new Sim({ seed, link: { latencyMs: 10, jitterMs: 30, loss: 0.2, duplicate: 0.2 } });
    sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
    const client = sim.addEndpoint(CLIENT, { role: "client" });
    sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
    for (let i = 0; i < 10; i++) {
      sim.runFor(300);
      if (client.eventsOf("connected").length > 0) {
        sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Ping", { nonce: i }));
      }
    }
    sim.runFor(5_000);
    return sim.trace.map((t) => `${t.at} ${t.from} ${t.to} ${t.copies} ${new TextDecoder().decode(t.bytes)}`);
  };
  const a = run(42);
  assertEquals(run(42), a);
  assert(a.length > 5);
  assert(JSON.stringify(run(43)) !== JSON.stringify(a), "another seed takes another path");
});

Deno.test("the seeded id source yields distinct lowercase UUID v4 strings, the same for the same seed", () => {
  const ids = Array.from({ length: 1_000 }, uuidSource(mulberry32(5)));
  for (const id of ids) assertMatch(id, UUID_V4);
  assertStrictEquals(new Set(ids).size, ids.length);
  assertEquals(Array.from({ length: 1_000 }, uuidSource(mulberry32(5))), ids);
  const ep = new Endpoint({
    role: "server",
    config: resolveConfig(),
    node: nodeInfo(ids[0]!),
    newId: uuidSource(mulberry32(9)),
    now: 0,
  });
  assertStrictEquals(ep.node.id, ids[0]);
});
