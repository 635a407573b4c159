/**
 * Tests of the network simulator itself (`sim.ts`): every impairment does what it says, the counters add up,
 * and runs are deterministic per seed. Most tests use scripted RawPeers at TEST-NET-1 addresses; the last ones
 * run two real Endpoints through a corrupting network.
 */
import { assert, assertEquals, assertNotEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import {
  ANY,
  CORRUPTION_KINDS,
  nodeInfo,
  type RawPeer,
  seeds,
  seedsFrom,
  Sim,
  type SimOptions,
  sock,
  type TraceEntry,
  withSeeds,
} from "./sim.ts";

const A = "192.0.2.1:1000";
const B = "192.0.2.2:2000";
const C = "192.0.2.3:3000";
const SERVER = "192.0.2.10:8080";
const CLIENT = "192.0.2.20:9000";

const utf8 = new TextEncoder();
const fromUtf8 = new TextDecoder();

/** A small JSON datagram carrying its index. */
function numbered(i: number): Uint8Array {
  return utf8.encode(JSON.stringify({ n: i, pad: "x".repeat(i % 17) }));
}

/** The index carried by an uncorrupted numbered datagram. */
function indexOf(bytes: Uint8Array): number {
  return (JSON.parse(fromUtf8.decode(bytes)) as { n: number }).n;
}

/** A sim with two raw peers, A and B. */
function pair(options: SimOptions): { sim: Sim; a: RawPeer; b: RawPeer } {
  const sim = new Sim(options);
  return { sim, a: sim.addRaw(A), b: sim.addRaw(B) };
}

/** Sends `count` numbered datagrams from `from` to `to`, `gapMs` apart (all at once when 0). */
function blast(sim: Sim, from: RawPeer, to: string, count: number, gapMs = 0): void {
  for (let i = 0; i < count; i++) {
    from.sendBytes(to, numbered(i));
    if (gapMs > 0) sim.runFor(gapMs);
  }
}

/** The lengths of the runs of consecutive `true`s. */
function runs(flags: readonly boolean[]): number[] {
  const out: number[] = [];
  let run = 0;
  for (const f of flags) {
    if (f) run++;
    else if (run > 0) {
      out.push(run);
      run = 0;
    }
  }
  if (run > 0) out.push(run);
  return out;
}

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

/** The counters' conservation law: every copy is delivered, lost or still in flight. */
function assertConserved(sim: Sim): void {
  const c = sim.counters;
  assertStrictEquals(c.sent, sim.trace.length);
  assertStrictEquals(c.sent + c.duplicated, c.delivered + c.lostTotal + c.inFlight, JSON.stringify(c));
}

function hex(bytes: Uint8Array): string {
  return Array.from(bytes, (x) => x.toString(16).padStart(2, "0")).join("");
}

function describe(t: TraceEntry): string {
  return `${t.at} ${t.from}>${t.to} copies=${t.copies} lost=${t.lost} c=${t.corrupted} r=${t.reordered} ` +
    `d=${t.delivered} ${hex(t.bytes)}`;
}

// ------------------------------------------------------------------------------------------- random loss

Deno.test("30% random loss loses 27-33% of 10,000 datagrams and counts every one", () => {
  withSeeds(seeds(3), (seed) => {
    const { sim, a, b } = pair({ seed, link: { loss: 0.3 } });
    blast(sim, a, B, 10_000);
    sim.runFor(100);
    const c = sim.counters;
    const rate = c.lost.random / 10_000;
    assert(rate >= 0.27 && rate <= 0.33, `loss rate ${rate}`);
    assertStrictEquals(c.sent, 10_000);
    assertStrictEquals(c.delivered, b.arrivals.length);
    assertStrictEquals(c.delivered + c.lost.random, 10_000);
    assertStrictEquals(c.lostTotal, c.lost.random);
    assertStrictEquals(sim.trace.filter((t) => t.lost === "random").length, c.lost.random);
    assertStrictEquals(c.inFlight, 0);
    // Loss never reorders: the survivors arrive in send order.
    const order = b.arrivals.map((r) => indexOf(r.bytes));
    assertEquals(order, [...order].sort((x, y) => x - y));
    assertConserved(sim);
  });
});

// ---------------------------------------------------------------------------------- Gilbert-Elliott loss

Deno.test("Gilbert-Elliott loss (p 0.05, r 0.5) comes in bursts of mean length ~2, unlike Bernoulli loss", () => {
  withSeeds(seeds(3), (seed) => {
    const ge = pair({ seed, link: { burst: { p: 0.05, r: 0.5, lossBad: 1 } } });
    blast(ge.sim, ge.a, B, 10_000);
    const geLost = ge.sim.trace.map((t) => t.lost === "burst");
    const geRate = ge.sim.counters.lost.burst / 10_000;
    // Long-run loss rate p / (p + r) = 9.1%.
    assert(geRate > 0.07 && geRate < 0.11, `burst loss rate ${geRate}`);
    const geRuns = runs(geLost);
    const geMean = mean(geRuns);
    assert(geMean > 1.7 && geMean < 2.3, `mean burst length ${geMean}`);

    const bernoulli = pair({ seed, link: { loss: geRate } });
    blast(bernoulli.sim, bernoulli.a, B, 10_000);
    const bRuns = runs(bernoulli.sim.trace.map((t) => t.lost === "random"));
    const bMean = mean(bRuns);
    assert(bMean < 1.25, `Bernoulli mean run ${bMean}`);
    assert(geMean > 1.5 * bMean, `bursts ${geMean} vs Bernoulli runs ${bMean}`);
    assert(
      Math.max(...geRuns) > Math.max(...bRuns),
      `longest burst ${Math.max(...geRuns)} vs ${Math.max(...bRuns)}`,
    );
    assertConserved(ge.sim);
  });
});

Deno.test("Gilbert-Elliott state is kept per direction, so interleaved directions keep their own bursts", () => {
  const sim = new Sim({ seed: 5, link: { burst: { p: 0.05, r: 0.5 } } });
  const a = sim.addRaw(A);
  const c = sim.addRaw(C);
  sim.addRaw(B);
  for (let i = 0; i < 10_000; i++) {
    a.sendBytes(B, numbered(i));
    c.sendBytes(B, numbered(i));
  }
  for (const from of [A, C]) {
    const own = sim.trace.filter((t) => t.from === from);
    assertStrictEquals(own.length, 10_000);
    // A chain shared by both directions would split each bad period between them (mean run ~1.3).
    const m = mean(runs(own.map((t) => t.lost === "burst")));
    assert(m > 1.7 && m < 2.3, `mean burst length from ${from}: ${m}`);
  }
});

Deno.test("Gilbert-Elliott loss in the good state and partial loss in the bad state", () => {
  // Never leaving the good state: plain 20% loss.
  const good = pair({ seed: 2, link: { burst: { p: 0, r: 1, lossGood: 0.2 } } });
  blast(good.sim, good.a, B, 10_000);
  const goodRate = good.sim.counters.lost.burst / 10_000;
  assert(goodRate > 0.18 && goodRate < 0.22, `good-state loss ${goodRate}`);
  // Always bad with lossBad 0.5: half lost.
  const bad = pair({ seed: 2, link: { burst: { p: 1, r: 0, lossBad: 0.5 } } });
  blast(bad.sim, bad.a, B, 10_000);
  const badRate = bad.sim.counters.lost.burst / 10_000;
  assert(badRate > 0.47 && badRate < 0.53, `bad-state loss ${badRate}`);
});

Deno.test("burst loss on one direction leaves the other direction alone", () => {
  const { sim, a, b } = pair({ seed: 3 });
  sim.link(A, B, { burst: { p: 0.2, r: 0.2 } });
  blast(sim, a, B, 2_000);
  blast(sim, b, A, 2_000);
  sim.runFor(100);
  assert(b.arrivals.length < 1_500, `A->B delivered ${b.arrivals.length}`);
  assertStrictEquals(a.arrivals.length, 2_000);
});

// ------------------------------------------------------------------------------------------- corruption

Deno.test("corruption never delivers the bytes as sent and never touches the sender's array", () => {
  withSeeds(seeds(3), (seed) => {
    const { sim, a, b } = pair({ seed, link: { corrupt: 1 } });
    const sent: Uint8Array[] = [];
    for (let i = 0; i < 4_000; i++) sent.push(numbered(i));
    const copies = sent.map((s) => s.slice());
    for (const s of sent) a.sendBytes(B, s);
    sim.runFor(100);
    // Fixed latency, no jitter: arrivals are in send order.
    assertStrictEquals(b.arrivals.length, 4_000);
    b.arrivals.forEach((r, i) => {
      assertNotEquals(r.bytes, sent[i]);
      assert(hex(r.bytes) !== hex(sent[i]!), `datagram ${i} arrived intact: ${fromUtf8.decode(r.bytes)}`);
    });
    sent.forEach((s, i) => assertEquals(s, copies[i]));
    const c = sim.counters;
    assertStrictEquals(c.corrupted, 4_000);
    for (const kind of CORRUPTION_KINDS) assert(c.corruptions[kind] > 800, `${kind}: ${c.corruptions[kind]}`);
    assertStrictEquals(sim.trace.filter((t) => t.corrupted === 1).length, 4_000);
    // The trace keeps what was sent.
    sim.trace.forEach((t, i) => assertStrictEquals(t.bytes, sent[i]));
  });
});

Deno.test("each kind of corruption changes the datagram the way it says", () => {
  const { sim, a, b } = pair({ seed: 8, link: { corrupt: 1 } });
  const original = utf8.encode(
    JSON.stringify({ n: 1, text: "a fairly long payload for the byte positions" }),
  );
  for (let i = 0; i < 2_000; i++) a.sendBytes(B, original);
  sim.runFor(100);
  const shorter = b.arrivals.filter((r) => r.bytes.length < original.length);
  const longer = b.arrivals.filter((r) => r.bytes.length > original.length);
  const same = b.arrivals.filter((r) => r.bytes.length === original.length);
  const c = sim.counters;
  assertStrictEquals(shorter.length, c.corruptions.truncate);
  assertStrictEquals(longer.length, c.corruptions.append);
  assertStrictEquals(same.length, c.corruptions.flip + c.corruptions.overwrite);
  for (const r of shorter) assertEquals(r.bytes, original.subarray(0, r.bytes.length));
  for (const r of longer) {
    assertEquals(r.bytes.subarray(0, original.length), original);
    assert(r.bytes.length - original.length <= 16);
  }
  let oneByte = 0;
  for (const r of same) {
    let bitsChanged = 0;
    let bytesChanged = 0;
    r.bytes.forEach((x, i) => {
      const diff = x ^ original[i]!;
      if (diff !== 0) bytesChanged++;
      for (let d = diff; d !== 0; d >>= 1) bitsChanged += d & 1;
    });
    assert(bitsChanged >= 1 && (bitsChanged <= 8 || bytesChanged === 1), `${bitsChanged} bits changed`);
    if (bytesChanged === 1) oneByte++;
  }
  assert(oneByte >= c.corruptions.overwrite);
  // The same array was sent 2,000 times and is still intact.
  assertEquals(
    fromUtf8.decode(original),
    JSON.stringify({ n: 1, text: "a fairly long payload for the byte positions" }),
  );
});

Deno.test("an empty datagram can only be corrupted by appending", () => {
  const { sim, a, b } = pair({ seed: 4, link: { corrupt: 1 } });
  for (let i = 0; i < 50; i++) a.sendBytes(B, new Uint8Array(0));
  sim.runFor(100);
  assertStrictEquals(sim.counters.corruptions.append, 50);
  for (const r of b.arrivals) assert(r.bytes.length >= 1 && r.bytes.length <= 16);
});

Deno.test("30% corruption corrupts about 30% of copies, duplicates each decided on their own", () => {
  const { sim, a, b } = pair({ seed: 6, link: { corrupt: 0.3, duplicate: 0.5 } });
  blast(sim, a, B, 10_000);
  sim.runFor(100);
  const c = sim.counters;
  const copies = 10_000 + c.duplicated;
  assertStrictEquals(b.arrivals.length, copies);
  const rate = c.corrupted / copies;
  assert(rate > 0.28 && rate < 0.32, `corruption rate ${rate}`);
  // Both copies of a duplicated datagram corrupted, one of them, or neither: all three happen.
  const twice = sim.trace.filter((t) => t.copies === 2);
  for (const n of [0, 1, 2]) assert(twice.some((t) => t.corrupted === n), `no duplicate with ${n} corrupted`);
  // Raw peers keep undecodable datagrams out of the inbox without throwing.
  assert(b.inbox.length < b.arrivals.length);
  assertConserved(sim);
});

Deno.test("a raw peer records undecodable datagrams in arrivals only", () => {
  const { sim, a, b } = pair({ seed: 1 });
  a.sendBytes(B, "not json");
  a.sendBytes(B, "null");
  a.sendBytes(B, new Uint8Array([0xff, 0xfe]));
  a.send(B, "Ping", null);
  sim.runFor(100);
  assertStrictEquals(b.arrivals.length, 4);
  assertEquals(b.messages().map((m) => m.message_type), ["Ping"]);
});

// ------------------------------------------------------------------------------------------- reordering

Deno.test("reordering holds some datagrams back by reorderDelayMs so later ones overtake them", () => {
  withSeeds(seeds(3), (seed) => {
    const { sim, a, b } = pair({ seed, link: { latencyMs: 10, reorder: 0.2, reorderDelayMs: 50 } });
    blast(sim, a, B, 2_000, 1);
    sim.runFor(200);
    const c = sim.counters;
    assertStrictEquals(b.arrivals.length, 2_000);
    assert(c.reordered > 340 && c.reordered < 460, `reordered ${c.reordered}`);
    const order = b.arrivals.map((r) => indexOf(r.bytes));
    let inversions = 0;
    for (let i = 1; i < order.length; i++) if (order[i]! < order[i - 1]!) inversions++;
    assert(inversions > 100, `only ${inversions} inversions`);
    // Each arrival is exactly latency (+ the reorder delay when chosen) after its send.
    for (const r of b.arrivals) {
      const entry = sim.trace[indexOf(r.bytes)]!;
      assertStrictEquals(r.at - entry.at, entry.reordered ? 60 : 10);
    }
    assertStrictEquals(sim.trace.filter((t) => t.reordered > 0).length, c.reordered);
  });
});

Deno.test("without reordering or jitter, delivery order is send order", () => {
  const { sim, a, b } = pair({ seed: 1, link: { latencyMs: 10 } });
  blast(sim, a, B, 500, 1);
  sim.runFor(100);
  assertEquals(b.arrivals.map((r) => indexOf(r.bytes)), seeds(500, 0));
  assertStrictEquals(sim.counters.reordered, 0);
});

// -------------------------------------------------------------------------------------------- blackholes

Deno.test("a blackhole drops exactly the datagrams sent inside its window, in one direction only", () => {
  const { sim, a, b } = pair({ seed: 1, link: { latencyMs: 50 } });
  const t0 = sim.now;
  sim.blackhole(A, B, t0 + 200, t0 + 500);
  for (let i = 0; i < 1_000; i++) {
    a.sendBytes(B, numbered(i));
    b.sendBytes(A, numbered(i));
    sim.runFor(1);
  }
  sim.runFor(100);
  for (const t of sim.trace) {
    const inside = t.from === A && t.at >= t0 + 200 && t.at < t0 + 500;
    assertStrictEquals(t.lost, inside ? "blackhole" : null, describe(t));
    assertStrictEquals(t.delivered, inside ? 0 : 1, describe(t));
  }
  assertStrictEquals(sim.counters.lost.blackhole, 300);
  assertStrictEquals(b.arrivals.length, 700);
  assertStrictEquals(a.arrivals.length, 1_000);
  // Decided at send time: datagrams sent just before the window arrive while it is open.
  assert(b.arrivals.some((r) => r.at >= t0 + 200 && r.at < t0 + 250));
  assertConserved(sim);
});

Deno.test("blackholeFor starts now and lasts the given duration", () => {
  const { sim, a, b } = pair({ seed: 1 });
  sim.runFor(1_000);
  const t0 = sim.now;
  sim.blackholeFor(A, B, 100);
  blast(sim, a, B, 300, 1);
  sim.runFor(100);
  const lost = sim.trace.filter((t) => t.lost === "blackhole").map((t) => t.at - t0);
  assertEquals(lost, seeds(100, 0));
  assertStrictEquals(b.arrivals.length, 200);
});

Deno.test("isolating a host blackholes everything to and from it, and nothing else", () => {
  const sim = new Sim({ seed: 1 });
  const a = sim.addRaw(A);
  const b = sim.addRaw(B);
  const c = sim.addRaw(C);
  sim.isolate(C, sim.now, sim.now + 1_000);
  for (const [from, to] of [[a, B], [b, A], [a, C], [c, A], [b, C], [c, B]] as const) {
    blast(sim, from, to, 10);
  }
  sim.runFor(100);
  assertStrictEquals(a.arrivals.length, 10);
  assertStrictEquals(b.arrivals.length, 10);
  assertStrictEquals(c.arrivals.length, 0);
  assertStrictEquals(sim.counters.lost.blackhole, 40);
  // After the window everything flows again.
  sim.runFor(1_000);
  blast(sim, a, C, 10);
  blast(sim, c, A, 10);
  sim.runFor(100);
  assertStrictEquals(c.arrivals.length, 10);
  assertStrictEquals(a.arrivals.length, 20);
});

Deno.test("ANY to ANY is a total outage; a bad window or address is refused", () => {
  const { sim, a, b } = pair({ seed: 1 });
  sim.blackhole(ANY, ANY, sim.now, sim.now + 10);
  blast(sim, a, B, 5);
  blast(sim, b, A, 5);
  sim.runFor(100);
  assertStrictEquals(sim.counters.lost.blackhole, 10);
  assertThrows(() => sim.blackhole(A, B, 10, 5), RangeError);
  assertThrows(() => sim.blackhole(A, "not an address", 0, 5), TypeError);
});

Deno.test("a blackhole comes before the random stages, so it draws no random numbers", () => {
  const run = (withHole: boolean) => {
    const { sim, a, b } = pair({ seed: 9, link: { loss: 0.3, jitterMs: 20, corrupt: 0.3 } });
    if (withHole) sim.blackhole(A, C, sim.now, Infinity);
    for (let i = 0; i < 200; i++) {
      a.sendBytes(B, numbered(i));
      a.sendBytes(C, numbered(i)); // Blackholed, or no host: either way no draws.
    }
    sim.runFor(100);
    return b.arrivals.map((r) => `${r.at} ${hex(r.bytes)}`);
  };
  assertEquals(run(true), run(false));
});

// ------------------------------------------------------------------------------------------- rebinding

Deno.test("rebinding moves the source address the receiver sees and loses traffic to the old address", () => {
  const NEW = "203.0.113.7:41000";
  const { sim, a, b } = pair({ seed: 1, link: { latencyMs: 20 } });
  a.send(B, "Ping", null);
  b.send(A, "Ping", null); // In flight to the old address when the host moves.
  sim.runFor(5);
  sim.rebind(A, NEW);
  assertStrictEquals(a.addr, NEW);
  assertStrictEquals(a.localAddr, A);
  a.send(B, "Ping", null);
  b.send(A, "Ping", null); // Sent to the old address after the move.
  b.send(NEW, "Ping", null);
  sim.runFor(100);
  // The receiver sees the old source before the move (it was already on the wire) and the new one after.
  assertEquals(b.received("Ping").map((r) => r.from), [A, NEW]);
  // The envelope still names the address the host believes it has.
  assertEquals(b.messages("Ping").map((m) => m.sender_addr), [A, A]);
  assertStrictEquals(a.arrivals.length, 1);
  assertStrictEquals(a.inbox[0]!.from, B);
  const toOld = sim.trace.filter((t) => t.to === A);
  assertEquals(toOld.map((t) => [t.copies, t.lost, t.delivered]), [[1, null, 0], [0, "no_host", 0]]);
  assertStrictEquals(sim.counters.lost.no_host, 2);
  assertStrictEquals(sim.trace.filter((t) => t.from === NEW).length, 1);
  assertConserved(sim);
  // The old address is free again; the new one is taken.
  sim.addRaw(A);
  assertThrows(() => sim.rebind(B, NEW), /is taken/);
  assertThrows(() => sim.rebind("192.0.2.99:1", "192.0.2.98:1"), /no host/);
});

Deno.test("a rebound endpoint sends from its new address and keeps its own listen_addr", () => {
  const NEW = "203.0.113.9:50000";
  const sim = new Sim({ seed: 2, link: { latencyMs: 10 } });
  const server = sim.addEndpoint(SERVER, { config: { enableDiscovery: false } });
  const client = sim.addEndpoint(CLIENT, { role: "client" });
  sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
  sim.runFor(1_000);
  assertStrictEquals(client.eventsOf("connected").length, 1);
  sim.rebind(CLIENT, NEW);
  const before = server.arrivals.length;
  sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Ping", { nonce: 1 }));
  sim.runFor(100);
  assertStrictEquals(client.addr, NEW);
  assertStrictEquals(client.endpoint.node.listen_addr, CLIENT);
  const fresh = server.arrivals.slice(before);
  assert(fresh.length >= 1);
  for (const r of fresh) assertStrictEquals(r.from, NEW);
  // Whatever the server answers goes to the new address and reaches the client.
  for (const t of sim.trace.filter((t) => t.from === SERVER && t.at > sim.now - 100)) {
    assertStrictEquals(t.to, NEW);
  }
});

// ----------------------------------------------------------------------------------- counters, determinism

Deno.test("under every impairment at once the counters and the trace agree", () => {
  withSeeds(seeds(4), (seed) => {
    const sim = new Sim({
      seed,
      link: {
        latencyMs: 10,
        jitterMs: 15,
        loss: 0.1,
        duplicate: 0.2,
        burst: { p: 0.02, r: 0.4 },
        corrupt: 0.1,
        reorder: 0.1,
        reorderDelayMs: 30,
      },
    });
    const peers = [sim.addRaw(A), sim.addRaw(B), sim.addRaw(C)];
    sim.blackhole(C, A, sim.now + 100, sim.now + 300);
    for (let i = 0; i < 600; i++) {
      const from = peers[i % 3]!;
      from.sendBytes(peers[(i + 1) % 3]!.addr, numbered(i));
      from.sendBytes("192.0.2.250:1", numbered(i)); // Nobody there.
      sim.runFor(1);
      if (i === 300) sim.remove(C); // Copies in flight to C are lost on arrival.
      assertConserved(sim);
    }
    sim.runFor(200);
    const c = sim.counters;
    assertStrictEquals(c.inFlight, 0);
    assertConserved(sim);
    const sum = (f: (t: TraceEntry) => number) => sim.trace.reduce((n, t) => n + f(t), 0);
    assertStrictEquals(sum((t) => t.copies), c.sent - sum((t) => (t.lost === null ? 0 : 1)) + c.duplicated);
    assertStrictEquals(sum((t) => t.delivered), c.delivered);
    assertStrictEquals(sum((t) => t.corrupted), c.corrupted);
    assertStrictEquals(sum((t) => t.reordered), c.reordered);
    assertStrictEquals(peers.reduce((n, p) => n + p.arrivals.length, 0), c.delivered);
    for (const cause of ["random", "burst", "blackhole", "no_host"] as const) {
      assert(c.lost[cause] > 0, `no ${cause} loss: ${JSON.stringify(c)}`);
    }
    assert(c.duplicated > 0 && c.corrupted > 0 && c.reordered > 0, JSON.stringify(c));
  });
});

/** Everything observable about one run with every impairment on, as text. */
function impairedRun(seed: number): string[] {
  const sim = new Sim({
    seed,
    link: {
      latencyMs: 5,
      jitterMs: 20,
      loss: 0.1,
      duplicate: 0.1,
      burst: { p: 0.05, r: 0.3, lossGood: 0.01, lossBad: 0.8 },
      corrupt: 0.2,
      reorder: 0.2,
      reorderDelayMs: 25,
    },
  });
  const a = sim.addRaw(A);
  const b = sim.addRaw(B, { autoAck: true, autoPong: true });
  sim.blackhole(B, A, sim.now + 50, sim.now + 80);
  for (let i = 0; i < 300; i++) {
    a.send(B, i % 2 ? "Ping" : "Data", { i }, { requiresAck: i % 3 === 0 });
    if (i === 150) sim.rebind(A, "203.0.113.1:1");
    sim.runFor(2);
  }
  sim.runFor(500);
  return [
    ...sim.trace.map(describe),
    ...[a, b].flatMap((p) => p.arrivals.map((r) => `${p.addr} ${r.at} ${r.from} ${hex(r.bytes)}`)),
    JSON.stringify(sim.counters),
  ];
}

Deno.test("the same seed gives the identical trace under every impairment; another seed does not", () => {
  const first = impairedRun(77);
  assertEquals(impairedRun(77), first);
  assert(first.length > 500);
  assert(JSON.stringify(impairedRun(78)) !== JSON.stringify(first), "another seed takes another path");
});

/** A RawPeer-only run with the original four profile fields, fingerprinted. */
function legacyFingerprint(options: SimOptions): string {
  const sim = new Sim(options);
  const a = sim.addRaw("192.0.2.1:1000");
  const b = sim.addRaw("192.0.2.2:2000", { autoAck: true, autoPong: true });
  for (let i = 0; i < 200; i++) {
    a.send(b.addr, i % 2 ? "Ping" : "Data", { i }, { requiresAck: i % 3 === 0 });
    sim.runFor(3);
  }
  sim.runFor(1_000);
  const text = sim.trace.map((t) => `${t.at} ${t.from} ${t.to} ${t.copies} ${fromUtf8.decode(t.bytes)}`)
    .join("\n") + a.inbox.map((r) => r.at).join();
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return `${sim.trace.length} ${(h >>> 0).toString(16)}`;
}

Deno.test("impairments that are off draw no random numbers, so old seeds replay as before", () => {
  const link = { latencyMs: 10, jitterMs: 30, loss: 0.2, duplicate: 0.2 };
  // Recorded with the simulator as it was before burst loss, corruption, reordering and blackholes existed.
  assertStrictEquals(legacyFingerprint({ seed: 42, link }), "355 c2feb654");
  assertStrictEquals(legacyFingerprint({ seed: 43, link }), "376 8040d405");
  const off = { ...link, burst: undefined, corrupt: 0, reorder: 0, reorderDelayMs: 0 };
  assertStrictEquals(legacyFingerprint({ seed: 42, link: off }), "355 c2feb654");
});

// ------------------------------------------------------------------------------------- profiles, seeds

Deno.test("impossible link profiles are refused with a RangeError", () => {
  assertThrows(() => new Sim({ link: { loss: 1.5 } }), { name: "RangeError", message: /"loss" 1\.5/ });
  assertThrows(() => new Sim({ link: { corrupt: -0.1 } }), { name: "RangeError", message: /"corrupt"/ });
  assertThrows(() => new Sim({ link: { burst: { p: 0.1, r: 2 } } }), {
    name: "RangeError",
    message: /"burst\.r"/,
  });
  assertThrows(() => new Sim({ link: { latencyMs: -1 } }), { name: "RangeError", message: /"latencyMs"/ });
  assertThrows(() => new Sim({ link: { reorder: 0.1 } }), { name: "RangeError", message: /reorderDelayMs/ });
  const sim = new Sim();
  assertThrows(() => sim.link(A, B, { duplicate: Number.NaN }), {
    name: "RangeError",
    message: /"duplicate"/,
  });
});

Deno.test("seeds, seedsFrom and the count form of withSeeds", () => {
  assertEquals(seeds(3, 10), [10, 11, 12]);
  assertEquals(seeds(0), []);
  assertThrows(() => seeds(-1), RangeError);
  const visited: number[] = [];
  withSeeds(4, (seed) => void visited.push(seed));
  assertEquals(visited, [1, 2, 3, 4]);

  const name = "SIM_TEST_SEEDS_SIM_TEST";
  Deno.env.delete(name);
  assertEquals(seedsFrom(3, name), [1, 2, 3]);
  assertEquals(seedsFrom([9, 4], name), [9, 4]);
  try {
    Deno.env.set(name, "5, 7..9");
    assertEquals(seedsFrom(3, name), [5, 7, 8, 9]);
    Deno.env.set(name, "9..7");
    assertThrows(() => seedsFrom(3, name), { name: "TypeError", message: /9\.\.7/ });
  } finally {
    Deno.env.delete(name);
  }
});

Deno.test("a failing seed is named in the error so it can be replayed", () => {
  const error = console.error;
  const printed: string[] = [];
  console.error = (...args: unknown[]) => void printed.push(args.join(" "));
  try {
    let caught: unknown;
    try {
      withSeeds([3, 4, 5], (seed) => {
        if (seed === 4) throw new Error("boom");
      });
    } catch (e) {
      caught = e;
    }
    assert(caught instanceof Error);
    assertStrictEquals(caught.message, "[sim seed 4] boom");
    assert(printed.some((line) => line.includes("withSeeds([4]")), printed.join("\n"));
  } finally {
    console.error = error;
  }
});

// ----------------------------------------------------------------------------- real endpoints, corrupted

Deno.test("endpoints under 30% corruption count the damage as drops and never throw", () => {
  // SIM_SEEDS=1..5000 searches wider for a datagram that makes the core throw.
  withSeeds(seedsFrom(20), (seed) => {
    const sim = new Sim({ seed, link: { latencyMs: 10, jitterMs: 10, corrupt: 0.3 } });
    const schedule = [200, 400, 800, 1_600];
    const server = sim.addEndpoint(SERVER, {
      config: { enableDiscovery: false, retransmitSchedule: schedule },
    });
    const client = sim.addEndpoint(CLIENT, { role: "client", config: { retransmitSchedule: schedule } });
    const raw = sim.addRaw("192.0.2.30:7000", { autoAck: true, autoPong: true });
    sim.act(client, (ep, now) => ep.connect(now, sock(SERVER)));
    raw.handshake(SERVER, nodeInfo(raw.newId(), { listen_addr: raw.addr }));
    for (let i = 0; i < 30; i++) {
      sim.runFor(200);
      if (client.eventsOf("connected").length > 0) {
        sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Data", { i }, { reliable: true }));
        sim.act(client, (ep, now) => ep.send(now, sock(SERVER), "Ping", { nonce: i }));
      }
      raw.send(SERVER, "Ping", null);
      raw.send(SERVER, "DiscoveryRequest", null, { requiresAck: true });
      raw.send(SERVER, "Data", { to: client.id, data: { i } }, { requiresAck: true });
      raw.send(SERVER, "Retransmit", { sequence_numbers: [1, 2, i] });
    }
    raw.send(SERVER, "Disconnect", { reason: "done" }, { requiresAck: true });
    sim.runFor(20_000);
    const corruptedToServer = sim.trace.reduce((n, t) => n + (t.to === SERVER ? t.corrupted : 0), 0);
    assert(corruptedToServer > 10, `corrupted ${corruptedToServer}`);
    const stats = server.endpoint.getStats(sim.now);
    assert(stats.droppedTotal > 0, `the server counted no drops: ${JSON.stringify(stats.drops)}`);
    for (const ep of [server, client]) {
      const s = ep.endpoint.getStats(sim.now);
      assertStrictEquals(s.datagramsReceived, ep.arrivals.length);
      assertStrictEquals(s.datagramsReceived, s.processed + s.duplicates + s.droppedTotal);
    }
    assertConserved(sim);
  });
});
