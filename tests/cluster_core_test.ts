/**
 * Cluster mode in the protocol core, in virtual time: two server instances whose directory mirror and
 * messages are carried by an in-memory bus standing in for Redis (the bus can hold or lose messages), so the
 * core's rules are tested exactly: discovery paging across local and mirrored peers under churn, node-id
 * uniqueness across instances, relays whose instance vanishes or never answers, introductions, and the
 * validation of what arrives from Redis.
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { checkMessage } from "../src/cluster.ts";
import { type DirectoryRecord, parseRecord, peerRecord, RemoteDirectory } from "../src/core/directory.ts";
import type { PeerSummary } from "../src/core/endpoint.ts";
import type { Json, PeerInfo } from "../src/wire/mod.ts";
import { generateIdentity } from "../src/core/auth.ts";
import { Sim, type SimEndpoint, sock } from "./sim.ts";

const A = "192.0.2.1:8080";
const B = "192.0.2.2:8080";

/** A well-formed directory record as Redis holds it (JSON). */
const WIRE_RECORD = {
  id: "0b0f7d3a-1c2e-4f5a-9b8c-7d6e5f4a3b2c",
  instance: "a",
  network: "n",
  info: {
    id: "0b0f7d3a-1c2e-4f5a-9b8c-7d6e5f4a3b2c",
    name: "x",
    version: "1",
    listen_addr: "127.0.0.1:1",
    capabilities: [],
    metadata: {},
  },
  observed: "127.0.0.1:1",
  ext: true,
  keyed: false,
  last_seen: 1,
};

function record(instance: string, p: PeerSummary): DirectoryRecord {
  return peerRecord(instance, p, p.lastSeen);
}

/** Carries joins, leaves and messages between the instances, as Redis would (minus latency). */
class Bus {
  readonly #seen = new Map<SimEndpoint, number>();
  /** Messages to drop instead of delivering (a lost instance). */
  drop: (type: string) => boolean = () => false;
  delivered = 0;
  constructor(readonly sim: Sim, readonly members: Map<string, SimEndpoint>) {}

  pump(): void {
    for (let moved = true; moved;) {
      moved = false;
      for (const [instance, host] of this.members) {
        const from = this.#seen.get(host) ?? 0;
        const events = host.events.slice(from);
        this.#seen.set(host, host.events.length);
        for (const e of events) {
          moved = true;
          for (const [other, target] of this.members) {
            if (other === instance) continue;
            if (e.type === "peerJoined") {
              this.sim.act(target, (ep) => ep.upsertRemote([record(instance, e.peer)]));
            }
            if (e.type === "peerLeft") this.sim.act(target, (ep) => ep.removeRemote(instance, [e.peer.id]));
          }
          if (e.type === "cluster" && !this.drop(e.message.t)) {
            const target = this.members.get(e.instance)!;
            this.delivered++;
            this.sim.act(target, (ep, now) => ep.handleClusterMessage(now, instance, e.message));
          }
        }
      }
    }
  }

  /** Runs the network for `ms`, pumping the bus every millisecond of virtual time. */
  run(ms: number): void {
    for (let t = 0; t < ms; t += 1) {
      this.sim.runFor(1);
      this.pump();
    }
  }
}

function cluster(seed = 1) {
  const sim = new Sim({ seed, link: { latencyMs: 2 } });
  const config = { enableDiscovery: false, maxConnections: 1_000, discoveryPageSize: 64 };
  const a = sim.addEndpoint(A, { config, instance: "a" });
  const b = sim.addEndpoint(B, { config, instance: "b" });
  const bus = new Bus(sim, new Map([["a", a], ["b", b]]));
  let n = 0;
  const client = (server: string, options: { keyed?: boolean; id?: string } = {}) => {
    n++;
    const c = sim.addEndpoint(`198.51.100.${n}:5000`, {
      role: "client",
      node: { name: `c${n}`, ...(options.id ? { id: options.id } : {}) },
      ...(options.keyed ? { identity: generateIdentity() } : {}),
    });
    sim.act(c, (ep, now) => ep.connect(now, sock(server)));
    return c;
  };
  return { sim, a, b, bus, client };
}

function discoverPage(bus: Bus, c: SimEndpoint, server: string, payload: Json) {
  const before = c.eventsOf("discovery").length;
  bus.sim.act(c, (ep, now) => ep.send(now, sock(server), "DiscoveryRequest", payload));
  bus.run(30);
  return c.eventsOf("discovery")[before]!;
}

Deno.test("cluster core: discovery pages through local and mirrored peers by cursor, without repeats under churn", () => {
  const { a, b, bus, client } = cluster();
  const onA = Array.from({ length: 10 }, () => client(A));
  const onB = Array.from({ length: 10 }, () => client(B));
  bus.run(200);
  assertStrictEquals(a.endpoint.remotePeers.size, 10);
  const seen: PeerInfo[] = [];
  let cursor: string | null = null;
  const late: SimEndpoint[] = [];
  for (let page = 0; page < 20; page++) {
    const ev = discoverPage(bus, onA[0]!, A, cursor ? { limit: 3, cursor } : { limit: 3 });
    seen.push(...ev.peers);
    if (page === 1) {
      // Churn between pages: one mirrored peer leaves, one joins each instance.
      bus.sim.act(onB[0]!, (ep, now) => ep.disconnect(now, sock(B), "bye"));
      late.push(client(A), client(B));
      bus.run(100);
    }
    cursor = ev.nextCursor;
    if (cursor === null) break;
  }
  const ids = seen.map((p) => p.id);
  assertStrictEquals(new Set(ids).size, ids.length, "no peer listed twice");
  const expected = [...onA, ...onB.slice(1), ...late].map((c) => c.id);
  for (const id of expected) {
    if (ids.slice(0, 6).includes(id)) continue; // the first two pages were taken before the churn
    assert(ids.includes(id), `missing ${id}`);
  }
  const mirrored = seen.find((p) => p.id === onB[3]!.id)!;
  assertStrictEquals(mirrored.observed_addr, onB[3]!.addr, "a mirrored entry carries its observed address");
  assertEquals(b.endpoint.remotePeers.size, 11);
});

Deno.test("cluster core: an unkeyed id held elsewhere is refused; a keyed one moves, the other instance lets go", () => {
  const { sim, a, b, bus, client } = cluster();
  const first = client(A);
  bus.run(100);
  const twin = client(B, { id: first.id });
  bus.run(100);
  assertStrictEquals(twin.eventsOf("connectFailed")[0]?.code, "node_id_conflict");
  assertStrictEquals(b.endpoint.getStats(sim.now).handshakesFailed.node_id_conflict, 1);
  // A keyed node registered on a moves to b with the same key.
  const identity = generateIdentity();
  const k1 = sim.addEndpoint("198.51.100.200:5000", { role: "client", identity });
  sim.act(k1, (ep, now) => ep.connect(now, sock(A)));
  bus.run(100);
  assert(a.endpoint.peer(identity.nodeId), "registered on a");
  const k2 = sim.addEndpoint("198.51.100.201:5000", { role: "client", identity });
  sim.act(k2, (ep, now) => ep.connect(now, sock(B)));
  bus.run(100);
  assert(b.endpoint.peer(identity.nodeId), "now on b");
  assertStrictEquals(a.endpoint.peer(identity.nodeId), undefined, "a let go (evict)");
  assertStrictEquals(a.endpoint.clusterCounts().evictions, 1);
});

Deno.test("cluster core: relays end to end through the other instance; a vanished or silent instance is undeliverable", () => {
  const { sim, a, bus, client } = cluster();
  const x = client(A);
  const y = client(B);
  bus.run(200);
  // Delivered: y acks its copy, b answers, a acks x's message.
  sim.act(x, (ep, now) => ep.send(now, sock(A), "Data", { to: y.id, data: "hi" }, { reliable: true }));
  bus.run(100);
  const got = y.eventsOf("data").map((e) => e.payload);
  assertEquals(got, [{ from: x.id, data: "hi" }]);
  assertStrictEquals(x.eventsOf("delivered").filter((d) => d.messageType === "Data").length, 1);
  // b goes silent (its answers are lost): after delivery_timeout + 5 s, x learns it was undeliverable.
  bus.drop = (t) => t === "relayed";
  const msg = sim.act(
    x,
    (ep, now) => ep.send(now, sock(A), "Data", { to: y.id, data: "lost" }, { reliable: true }),
  );
  bus.run(2_000);
  sim.runFor(40_000);
  bus.pump();
  const errors = x.eventsOf("error").map((e) => e.message.payload as { code?: string; id?: string });
  assert(errors.some((e) => e.code === "undeliverable" && e.id === msg.id), JSON.stringify(errors));
  assert(!x.eventsOf("delivered").some((d) => d.id === msg.id), "never acknowledged");
  // The instance vanishes: relays waiting for it fail at once, its peers leave the mirror.
  bus.drop = (t) => t !== "introduce";
  const msg2 = sim.act(
    x,
    (ep, now) => ep.send(now, sock(A), "Data", { to: y.id, data: "x" }, { reliable: true }),
  );
  bus.run(10);
  assertStrictEquals(a.endpoint.clusterCounts().relaysPending, 1);
  assertStrictEquals(sim.act(a, (ep, now) => ep.dropInstance(now, "b")), 1);
  bus.run(50);
  const later = x.eventsOf("error").map((e) => e.message.payload as { code?: string; id?: string });
  assert(later.some((e) => e.code === "undeliverable" && e.id === msg2.id));
  // Now y is unknown here: the Error names the message and it is not acknowledged.
  const msg3 = sim.act(
    x,
    (ep, now) => ep.send(now, sock(A), "Data", { to: y.id, data: "x" }, { reliable: true }),
  );
  bus.run(50);
  const answers = x.eventsOf("error").map((e) => e.message.payload as { code?: string; id?: string })
    .filter((e) => e.id === msg3.id);
  assertStrictEquals(answers[0]?.code, "unknown_recipient");
  assert(!x.eventsOf("delivered").some((d) => d.id === msg3.id), "not acknowledged");
});

Deno.test("cluster core: an introduction across instances reaches both peers with one nonce", () => {
  const { sim, bus, client } = cluster();
  const x = client(A, { keyed: true });
  const y = client(B, { keyed: true });
  bus.run(200);
  sim.act(x, (ep, now) => ep.send(now, sock(A), "DiscoveryRequest", { introduce: y.id }, { reliable: true }));
  bus.run(50);
  const ix = x.eventsOf("introduced")[0]!;
  const iy = y.eventsOf("introduced")[0]!;
  assertStrictEquals(ix.peer.id, y.id);
  assertStrictEquals(iy.peer.id, x.id);
  assertStrictEquals(ix.nonce, iy.nonce);
  assertEquals([ix.initiator, iy.initiator], [true, false]);
  assertStrictEquals(ix.candidates[0]!.port, 5000, "y's observed address first");
});

Deno.test("cluster: malformed records and messages from Redis are refused, never trusted", () => {
  const id = WIRE_RECORD.id;
  const good = WIRE_RECORD;
  assert(typeof parseRecord(good) !== "string");
  for (
    const bad of [
      null,
      [],
      { ...good, instance: "a b" },
      { ...good, id: "0b0f7d3a-1c2e-4f5a-9b8c-000000000000" },
      { ...good, info: { ...good.info, listen_addr: 5 } },
      { ...good, ext: "yes" },
      { ...good, last_seen: "now" },
    ]
  ) {
    assertStrictEquals(typeof parseRecord(bad), "string", JSON.stringify(bad));
  }
  assert(checkMessage({ t: "relay", rid: null, from: id, to: id, network: "n", data: 1, ordered: false }));
  for (
    const bad of [
      { t: "relay", rid: null, from: "x", to: id, network: "n", data: 1, ordered: false },
      { t: "relay", rid: null, from: id, to: id, network: "n", ordered: false },
      { t: "relayed", rid: 5, ok: true },
      { t: "introduce", target: id, peer: { id }, candidates: [], nonce: "n" },
      { t: "introduce", target: id, peer: good, candidates: Array(9).fill("1.2.3.4:5"), nonce: "n" },
      { t: "evict", id: "nope" },
      { t: "unknown" },
      "relay",
      null,
    ]
  ) {
    assertStrictEquals(checkMessage(bad), null, JSON.stringify(bad));
  }
});

Deno.test("RemoteDirectory: an update keeps the peer's place; replace removes what is gone", () => {
  const dir = new RemoteDirectory();
  let order = 0;
  const next = () => ++order;
  const rec = (n: number, instance = "a", network = "n"): DirectoryRecord => {
    const id = `00000000-0000-4000-8000-${String(n).padStart(12, "0")}`;
    return {
      id,
      instance,
      network,
      info: { id, name: `p${n}`, version: "1", listen_addr: "127.0.0.1:1", capabilities: [], metadata: {} },
      observed: "127.0.0.1:1",
      ext: false,
      keyed: false,
      last_seen: n,
    };
  };
  dir.upsert(rec(1), next);
  dir.upsert(rec(2), next);
  dir.upsert({ ...rec(1), last_seen: 99 }, next);
  assertEquals([...dir.byNetwork.get("n")!.values()].map((p) => [p.info.name, p.order, p.last_seen]), [
    ["p1", 1, 99],
    ["p2", 2, 2],
  ]);
  dir.upsert(rec(1, "b"), next); // moved to another instance: placed anew
  assertEquals([...dir.byNetwork.get("n")!.values()].map((p) => p.order), [2, 3]);
  assertEquals(Object.fromEntries(dir.instances()), { a: 1, b: 1 });
  assertStrictEquals(dir.remove(rec(2).id, "b"), false, "only its instance removes it");
  assertStrictEquals(dir.replace([rec(3, "c")], next), 2);
  assertEquals([...dir.byId.keys()], [rec(3).id]);
  assertStrictEquals(dir.dropInstance("c"), 1);
  assertStrictEquals(dir.size, 0);
  assertStrictEquals(dir.byNetwork.size, 0);
});

Deno.test("cluster core: a mirrored peer's NAT is in its discovery entry and in the card that introduces it", () => {
  const { a, b, bus, client } = cluster();
  const x = client(A);
  const y = client(B);
  bus.run(200);
  // What b writes for y once y's NAT is known (cluster.ts writes the entry again on natChecked/natLifetime).
  const nat = { mapping: "address-and-port-dependent", filtering: "address-and-port-dependent" };
  const summary = { ...b.endpoint.peer(y.id)!, nat: { ...nat, binding_lifetime_ms: 4_000 } };
  const written = record("b", summary);
  assertEquals(written.nat, { ...nat, binding_lifetime_ms: 4_000 });
  bus.sim.act(
    a,
    (ep) => ep.upsertRemote([parseRecord(JSON.parse(JSON.stringify(written))) as DirectoryRecord]),
  );
  const entry = discoverPage(bus, x, A, { limit: 10 }).peers.find((p: PeerInfo) => p.id === y.id)!;
  assertEquals(entry.nat, { ...nat, binding_lifetime_ms: 4_000 });
  bus.sim.act(
    x,
    (ep, now) => ep.send(now, sock(A), "DiscoveryRequest", { introduce: y.id }, { reliable: true }),
  );
  bus.run(50);
  const ix = x.eventsOf("introduced")[0]!;
  assertEquals(ix.peer.nat, { ...nat, binding_lifetime_ms: 4_000 });
  // Both ends choose the same strategy from the same two classifications (x's is unknown here: direct).
  const iy = y.eventsOf("introduced")[0]!;
  assertStrictEquals(ix.strategy, iy.strategy);
});

Deno.test("cluster records: nat is read leniently and left out when nothing in it is understood", () => {
  const base = WIRE_RECORD;
  const read = (nat: unknown) => (parseRecord({ ...base, nat }) as DirectoryRecord).nat;
  assertStrictEquals(read(undefined), undefined);
  assertStrictEquals(read("symmetric"), undefined);
  assertStrictEquals(read({ mapping: "sideways", binding_lifetime_ms: -5 }), undefined);
  assertEquals(read({ mapping: "endpoint-independent", filtering: 7, binding_lifetime_ms: 30_000 }), {
    mapping: "endpoint-independent",
    filtering: "unknown",
    binding_lifetime_ms: 30_000,
  });
  assertStrictEquals("nat" in (parseRecord(base) as DirectoryRecord), false, "a record without nat stays so");
});
