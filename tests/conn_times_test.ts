/**
 * Connection times in a shared slab (src/core/conn_times.ts): exact Unix-ms values through growth, reuse and
 * compaction; a dropped connection keeps its own; a table whose connections all left holds the minimum.
 *
 * @module
 */
import { assert, assertStrictEquals } from "./deps/assert.ts";
import { ConnTimes, MIN_SLOTS, TimeSlab } from "../src/core/conn_times.ts";
import { type Conn, newConn, PeerTable, sampleRtt } from "../src/core/peers.ts";
import { rtoFrom, RttEstimator } from "../src/core/reliability.ts";
import { mulberry32 } from "./sim.ts";

/** A Unix time in ms with a fraction, as the shell's clock gives (not a small integer). */
const T = 1_796_000_000_000.125;

function times(c: Conn): number[] {
  return [c.lastHeard, c.heartbeatAt, c.deadline, c.filedAt, c.srtt, c.rttvar];
}

function setTimes(c: Conn, i: number): void {
  c.lastHeard = T + i;
  c.heartbeatAt = T + i + 0.5;
  c.deadline = T - i;
  c.filedAt = i % 2 ? Infinity : T + i / 4;
  c.srtt = i / 3;
  c.rttvar = i / 7;
}

function want(i: number): number[] {
  return [T + i, T + i + 0.5, T - i, i % 2 ? Infinity : T + i / 4, i / 3, i / 7];
}

Deno.test("a new connection's times: lastHeard is now, the others Infinity", () => {
  const c = newConn("192.0.2.1:1", { hostname: "192.0.2.1", port: 1 }, T);
  assertStrictEquals(c.lastHeard, T);
  assertStrictEquals(c.heartbeatAt, Infinity);
  assertStrictEquals(c.deadline, Infinity);
  assertStrictEquals(c.filedAt, Infinity);
  assertStrictEquals(c.srtt, 0);
  assertStrictEquals(c.rttvar, 0);
  assertStrictEquals(c.rttSamples, 0);
});

Deno.test("a connection's round-trip estimate is RttEstimator's, sample for sample, in and out of a table", () => {
  const rand = mulberry32(7);
  const table = new PeerTable();
  const inTable = table.open("192.0.2.1:1", { hostname: "192.0.2.1", port: 1 }, T);
  const alone = newConn("192.0.2.1:2", { hostname: "192.0.2.1", port: 2 }, T);
  const reference = new RttEstimator();
  const bounds = { initialMs: 500, minMs: 10, maxMs: 60_000 };
  for (let i = 0; i < 200; i++) {
    const ms = rand() * 400 + (i % 17 === 0 ? 3_000 : 0);
    reference.sample(ms);
    for (const c of [inTable, alone]) {
      sampleRtt(c, ms);
      assertStrictEquals(c.srtt, reference.srtt);
      assertStrictEquals(c.rttvar, reference.rttvar);
      assertStrictEquals(c.rttSamples, reference.samples);
      assertStrictEquals(rtoFrom(c.srtt, c.rttvar, c.rttSamples, bounds), reference.rto(bounds));
    }
  }
});

Deno.test("TimeSlab stays dense: a freed slot takes the last one's times and owner, and every value survives growth", () => {
  const slab = new TimeSlab(2);
  const owners = Array.from({ length: 3 }, (_, i) => {
    const o = new ConnTimes(T + i, slab);
    o.heartbeatAt = T - i;
    return o;
  });
  assertStrictEquals(slab.capacity, 4);
  assertStrictEquals(owners.map((o) => o.slot).join(), "0,1,2");
  slab.free(owners[0]!.slot);
  owners[0]!.times = new TimeSlab(1); // what detach does, by hand: the freed owner no longer reads the slab
  assertStrictEquals(owners[2]!.slot, 0, "the last moved into the freed slot");
  assertStrictEquals(slab.live, 2);
  assertStrictEquals(owners[2]!.lastHeard, T + 2);
  assertStrictEquals(owners[2]!.heartbeatAt, T - 2);
  assertStrictEquals(owners[1]!.lastHeard, T + 1);
  const more = Array.from({ length: 10 }, (_, i) => {
    const o = new ConnTimes(T + 100 + i, slab);
    o.deadline = T - i;
    return o;
  });
  assertStrictEquals(slab.capacity, 16);
  assertStrictEquals(owners[1]!.heartbeatAt, T - 1);
  assertStrictEquals(owners[2]!.heartbeatAt, T - 2);
  more.forEach((o, i) => {
    assertStrictEquals(o.lastHeard, T + 100 + i);
    assertStrictEquals(o.deadline, T - i);
  });
});

Deno.test("TimeSlab halves once less than a quarter is in use, never below MIN_SLOTS", () => {
  const slab = new TimeSlab();
  const owners = Array.from({ length: MIN_SLOTS * 8 }, (_, i) => new ConnTimes(T + i, slab));
  assertStrictEquals(slab.capacity, MIN_SLOTS * 8);
  // Free from the front: every free moves the last owner forward.
  for (const o of owners.splice(0, MIN_SLOTS * 8 - 20)) slab.free(o.slot);
  assertStrictEquals(slab.live, 20);
  assertStrictEquals(slab.capacity, MIN_SLOTS);
  owners.forEach((o) => assertStrictEquals(o.lastHeard, T + MIN_SLOTS * 8 - 20 + owners.indexOf(o)));
  assertStrictEquals(new Set(owners.map((o) => o.slot)).size, 20, "distinct slots");
  assert(owners.every((o) => o.slot < 20), "the first 20");
});

Deno.test("PeerTable: times stay exact while connections come and go; all gone leaves the minimum slab", () => {
  const table = new PeerTable();
  const n = 5_000;
  const conns = Array.from({ length: n }, (_, i) => {
    const c = table.open(`192.0.2.1:${i + 1}`, { hostname: "192.0.2.1", port: i + 1 }, 0);
    setTimes(c, i);
    return c;
  });
  assertStrictEquals(table.timeSlots.live, n);
  assert(table.timeSlots.capacity >= n && table.timeSlots.capacity < 2 * n + MIN_SLOTS);
  // Most leave, in an order that leaves holes everywhere: the slab is compacted on the way.
  const leaving = conns.filter((_, i) => i % 10 !== 3);
  for (const c of leaving) table.close(c);
  const staying = conns.filter((_, i) => i % 10 === 3);
  assertStrictEquals(table.timeSlots.live, staying.length);
  assert(table.timeSlots.capacity <= 4 * staying.length, `compacted: ${table.timeSlots.capacity}`);
  conns.forEach((c, i) => assertStrictEquals(times(c).join(), want(i).join(), `conn ${i}`));
  // A dropped connection has times of its own: writing them changes no one else's.
  leaving[0]!.lastHeard = 0;
  staying.forEach((c) => assert(c.lastHeard !== 0));
  for (const c of staying) table.close(c);
  assertStrictEquals(table.timeSlots.live, 0);
  assertStrictEquals(table.timeSlots.capacity, MIN_SLOTS);
  assertStrictEquals(table.byAddr.size, 0);
});
