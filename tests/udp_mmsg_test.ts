/**
 * The batched socket backend (`io_backend: "mmsg"`, src/udp_mmsg.ts): the socket itself against
 * `Deno.listenDatagram` peers on loopback (batches, order, sizes, the names of source addresses, errors,
 * close), then the program on it (main.ts with `io_backend: "mmsg"`: handshake, Ping, STUN, the SIGTERM
 * farewell) and its refusal to start without `--allow-ffi`. Skipped, with the reason printed, where the
 * backend cannot run (not Linux on x86_64 or aarch64).
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import { MmsgSocket, mmsgUnavailable, SEND_SLOTS, SLOTS } from "../src/udp_mmsg.ts";
import { RawPeer } from "./helpers/raw_peer.ts";
import { runScript, startServer } from "./helpers/server_process.ts";
import { encodeStun, parseStun, STUN_ATTR } from "../src/wire/stun.ts";

const why = mmsgUnavailable();
if (why !== null) console.log(`udp_mmsg_test: skipped: the mmsg backend ${why}`);
const ignore = why !== null;

const HAS_IPV6 = (() => {
  try {
    Deno.listenDatagram({ transport: "udp", hostname: "::1", port: 0 }).close();
    return true;
  } catch {
    return false;
  }
})();

function peer(hostname = "127.0.0.1"): Deno.DatagramConn {
  return Deno.listenDatagram({ transport: "udp", hostname, port: 0 });
}

/** Reads what arrives within `ms`, batch by batch: each datagram as [source, bytes]. */
async function drain(socket: MmsgSocket, want: number, ms = 2_000): Promise<[string, Uint8Array][]> {
  const got: [string, Uint8Array][] = [];
  const until = Date.now() + ms;
  while (got.length < want && Date.now() < until) {
    const n = socket.receiveNow();
    if (n === 0) {
      await new Promise((r) => setTimeout(r, 5));
      continue;
    }
    assert(n <= SLOTS, `a batch of ${n}`);
    for (let i = 0; i < n; i++) {
      const from = socket.from(i);
      got.push([`${from.hostname}:${from.port}`, socket.bytes(i).slice()]);
    }
  }
  return got;
}

Deno.test({
  name: "mmsg socket: sendBatch sends runs in order, each to its own address, and stops where it must",
  ignore,
  fn: async () => {
    const socket = new MmsgSocket({ hostname: HAS_IPV6 ? "::" : "127.0.0.1", port: 0 });
    const a = peer();
    const b = HAS_IPV6 ? peer("::1") : peer();
    try {
      const portA = (a.addr as Deno.NetAddr).port;
      const portB = (b.addr as Deno.NetAddr).port;
      const hostB = HAS_IPV6 ? "::1" : "127.0.0.1";
      // To A as an IPv4-mapped address on an IPv6 socket (or plain IPv4), to B over IPv6 where there is one.
      const hostA = HAS_IPV6 ? "::ffff:127.0.0.1" : "127.0.0.1";
      const out = Array.from({ length: SEND_SLOTS + 8 }, (_, i) => ({
        to: i % 3 === 2 ? { hostname: hostB, port: portB } : { hostname: hostA, port: portA },
        bytes: new Uint8Array(10 + i).fill(i),
      }));
      // One run per call: SEND_SLOTS at most, then the rest.
      assertStrictEquals(socket.sendBatch(out, 0, 0), SEND_SLOTS);
      assertStrictEquals(socket.sendBatch(out, SEND_SLOTS, 0), 8);
      const read = async (conn: Deno.DatagramConn, n: number) => {
        const got: number[][] = [];
        for (let k = 0; k < n; k++) got.push([...(await conn.receive())[0]]);
        return got;
      };
      const wantA = out.filter((_, i) => i % 3 !== 2).map((t) => [...t.bytes]);
      const wantB = out.filter((_, i) => i % 3 === 2).map((t) => [...t.bytes]);
      assertEquals(await read(a, wantA.length), wantA);
      assertEquals(await read(b, wantB.length), wantB);

      // A run ends before a datagram for another local socket, and one for another socket is refused.
      const mixed = [
        { to: { hostname: hostA, port: portA }, bytes: Uint8Array.of(1) },
        { to: { hostname: hostA, port: portA }, bytes: Uint8Array.of(2), socket: 1 },
      ];
      assertStrictEquals(socket.sendBatch(mixed, 0, 0), 1);
      assertStrictEquals(socket.sendBatch(mixed, 1, 0), -1);
      assertEquals(await read(a, 1), [[1]]);

      // The copy area holds 64 KiB: two large datagrams go in two calls, in order.
      const large = [60_000, 60_000].map((n, i) => ({
        to: { hostname: hostA, port: portA },
        bytes: new Uint8Array(n).fill(i + 1),
      }));
      assertStrictEquals(socket.sendBatch(large, 0, 0), 1);
      assertStrictEquals(socket.sendBatch(large, 1, 0), 1);
      const [first, second] = await read(a, 2);
      assertEquals([first![0], first!.length, second![0], second!.length], [1, 60_000, 2, 60_000]);

      // A destination the socket cannot reach fails alone, as the first of a call.
      const v4 = new MmsgSocket({ hostname: "127.0.0.1", port: 0 });
      try {
        const bad = [
          { to: { hostname: "127.0.0.1", port: portA }, bytes: Uint8Array.of(9) },
          { to: { hostname: "::1", port: portA }, bytes: Uint8Array.of(8) },
        ];
        assertStrictEquals(v4.sendBatch(bad, 0, 0), 1);
        assertThrows(() => v4.sendBatch(bad, 1, 0), Error, "os error 97");
        assertEquals(await read(a, 1), [[9]]);
      } finally {
        v4.close();
      }
    } finally {
      socket.close();
      a.close();
      b.close();
    }
  },
});

Deno.test({
  name: "mmsg socket: datagrams arrive whole, in order, up to SLOTS per read, from the address Deno names",
  ignore,
  fn: async () => {
    const socket = new MmsgSocket({ hostname: "127.0.0.1", port: 0 });
    const client = peer();
    try {
      assertStrictEquals(socket.addr.hostname, "127.0.0.1");
      assert(socket.addr.port > 0);
      const to = { transport: "udp" as const, hostname: "127.0.0.1", port: socket.addr.port };
      const count = SLOTS * 2 + 5;
      for (let i = 0; i < count; i++) await client.send(Uint8Array.of(i, i + 1, i + 2), to);
      const big = new Uint8Array(60_000).map((_, i) => i % 251);
      await client.send(big, to);
      const got = await drain(socket, count + 1);
      assertEquals(got.length, count + 1);
      const me = `127.0.0.1:${(client.addr as Deno.NetAddr).port}`;
      for (let i = 0; i < count; i++) {
        assertStrictEquals(got[i]![0], me);
        assertEquals([...got[i]![1]], [i, i + 1, i + 2]);
      }
      assertEquals(got[count]![1], big);
      assertStrictEquals(socket.receiveNow(), 0, "nothing more is waiting");

      // And back: sendNow hands each datagram to the kernel at once.
      assert(socket.sendNow(Uint8Array.of(7, 7), "127.0.0.1", (client.addr as Deno.NetAddr).port));
      const [bytes, from] = await client.receive();
      assertEquals([...bytes], [7, 7]);
      assertStrictEquals((from as Deno.NetAddr).port, socket.addr.port);
    } finally {
      socket.close();
      client.close();
    }
  },
});

Deno.test({
  name:
    "mmsg socket on [::]: IPv4 sources named ::ffff:a.b.c.d (as Deno names them), both families reachable",
  ignore: ignore || !HAS_IPV6,
  fn: async () => {
    const socket = new MmsgSocket({ hostname: "::", port: 0 });
    const v4 = peer();
    const v6 = peer("::1");
    try {
      await v4.send(Uint8Array.of(4), { transport: "udp", hostname: "127.0.0.1", port: socket.addr.port });
      await v6.send(Uint8Array.of(6), { transport: "udp", hostname: "::1", port: socket.addr.port });
      const got = await drain(socket, 2);
      const names = got.map(([from]) => from).sort();
      assertEquals(names, [
        `::1:${(v6.addr as Deno.NetAddr).port}`,
        `::ffff:127.0.0.1:${(v4.addr as Deno.NetAddr).port}`,
      ]);
      assert(socket.sendNow(Uint8Array.of(1), "127.0.0.1", (v4.addr as Deno.NetAddr).port), "to IPv4");
      assert(socket.sendNow(Uint8Array.of(2), "::ffff:127.0.0.1", (v4.addr as Deno.NetAddr).port), "mapped");
      assert(socket.sendNow(Uint8Array.of(3), "::1", (v6.addr as Deno.NetAddr).port), "to IPv6");
      assertEquals([...(await v4.receive())[0]], [1]);
      assertEquals([...(await v4.receive())[0]], [2]);
      assertEquals([...(await v6.receive())[0]], [3]);
    } finally {
      socket.close();
      v4.close();
      v6.close();
    }
  },
});

Deno.test({
  name: "mmsg socket: receiveWait blocks until a datagram comes, then reads it and the others waiting",
  ignore,
  fn: async () => {
    const socket = new MmsgSocket({ hostname: "127.0.0.1", port: 0 });
    const client = peer();
    try {
      const to = { transport: "udp" as const, hostname: "127.0.0.1", port: socket.addr.port };
      const waiting = socket.receiveWait();
      assertStrictEquals(socket.receiveNow(), 0, "no second reader while one waits");
      await new Promise((r) => setTimeout(r, 50));
      await client.send(Uint8Array.of(1), to);
      assertStrictEquals(await waiting, 1);
      assertEquals([...socket.bytes(0)], [1]);
      for (let i = 0; i < 3; i++) await client.send(Uint8Array.of(2 + i), to);
      await new Promise((r) => setTimeout(r, 50));
      assertStrictEquals(await socket.receiveWait(), 3, "all that waits is read in one call");
      assertEquals([0, 1, 2].map((i) => socket.bytes(i)[0]), [2, 3, 4]);
    } finally {
      socket.close();
      client.close();
    }
  },
});

Deno.test({
  name: "mmsg socket: errors are worded as Deno words them; close ends a wait and a second close throws",
  ignore,
  fn: async () => {
    const taken = peer();
    try {
      const port = (taken.addr as Deno.NetAddr).port;
      let message = "";
      try {
        new MmsgSocket({ hostname: "127.0.0.1", port });
      } catch (error) {
        message = (error as Error).message;
      }
      assertStrictEquals(message, "Address already in use (os error 98)");
      assertThrows(() => new MmsgSocket({ hostname: "localhost", port: 0 }), Error, "Not an IP address");
    } finally {
      taken.close();
    }
    const socket = new MmsgSocket({ hostname: "127.0.0.1", port: 0 });
    assertThrows(() => socket.sendNow(Uint8Array.of(1), "::1", 9), Error, "os error 97");
    assertThrows(() => socket.sendNow(Uint8Array.of(1), "not-an-ip", 9), Error, "os error 97");
    const waiting = socket.receiveWait();
    await new Promise((r) => setTimeout(r, 50)); // blocked in recvmmsg on the other thread by now
    socket.close();
    assertStrictEquals(await waiting, 0, "a pending wait resolves 0 on close");
    assertStrictEquals(await socket.receiveWait(), 0);
    assertStrictEquals(await socket.writable(), false);
    assertStrictEquals(socket.receiveNow(), 0);
    assertThrows(() => socket.close(), Deno.errors.BadResource);
  },
});

const STUN_BINDING = (() => {
  const id = Uint8Array.from([0x21, 0x12, 0xa4, 0x42, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
  return encodeStun({ method: 1, class: "request", id, attributes: [], fingerprint: true });
})();

Deno.test({
  name: 'main.ts with io_backend "mmsg": handshake, Ping -> Pong, STUN Binding, and Disconnect on SIGTERM',
  ignore,
  fn: async () => {
    await using server = await startServer({ config: { io_backend: "mmsg" } });
    await using raw = new RawPeer();
    await raw.handshake(server.addr);
    await raw.sendMessage(server.addr, "Ping", null);
    const pong = await raw.expect("Pong");
    assertStrictEquals(pong.from.port, server.addr.port);

    const stun = peer();
    try {
      await stun.send(STUN_BINDING, { transport: "udp", hostname: "127.0.0.1", port: server.addr.port });
      const [bytes] = await stun.receive();
      const answer = parseStun(bytes);
      assertStrictEquals(answer.class, "success");
      assert(answer.attributes.some((a) => a.type === STUN_ATTR.XOR_MAPPED_ADDRESS));
    } finally {
      stun.close();
    }

    const status = await server.stop("SIGTERM");
    assertStrictEquals(status.code, 0);
    const bye = await raw.expect("Disconnect");
    assertStrictEquals(bye.from.port, server.addr.port);
  },
});

Deno.test({
  name: 'io_backend "mmsg" without --allow-ffi exits 2 with one line naming the key and the reason',
  ignore,
  fn: async () => {
    const out = await runScript({
      config: { io_backend: "mmsg" },
      runFlags: ["run", "--allow-net", "--allow-read", "--allow-write", "--allow-env"],
    });
    assertStrictEquals(out.code, 2, out.stderr);
    const errors = out.stderr.split("\n").filter((l) => l.startsWith("error:"));
    assertEquals(errors.length, 1, out.stderr);
    assertMatch(errors[0]!, /io_backend: "mmsg": the mmsg backend needs --allow-ffi/);
  },
});
