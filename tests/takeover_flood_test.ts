/**
 * Finding 2 of the outside review against the real program: valid signed HandshakeRequests for one key and
 * one node id, from 100 loopback addresses at about 5,000 a second, while a legitimate client connects and
 * pings. Each request is signed beforehand (a client core in the client role makes them), so the generator
 * spends its time sending. Takeovers of the id are allowed once a second per id, checked before any
 * signature: the legitimate client must complete its handshake in under 1 s and get at least 80 % of its
 * pings answered. Bounded in count and time.
 *
 * @module
 */
import { assert } from "./deps/assert.ts";
import { Endpoint } from "../src/core/endpoint.ts";
import { resolveConfig } from "../src/config.ts";
import { generateIdentity, P2PClient } from "../mod.ts";
import { makeNodeInfo } from "../src/identity.ts";
import { startServer } from "./helpers/server_process.ts";

const REQUESTS = 8_000;
const SOURCES = 100;
const RATE = 10_000;

Deno.test(`takeover flood: ${REQUESTS} signed requests for one key from ${SOURCES} addresses at ${RATE}/s; a legitimate client connects in under 1 s and gets 80 % of its pings`, async () => {
  await using server = await startServer();
  const target = { hostname: server.addr.hostname, port: server.addr.port };
  const stolen = generateIdentity();
  const core = new Endpoint({
    role: "client",
    config: resolveConfig({}),
    node: makeNodeInfo({ nodeId: stolen.nodeId }, "stolen", "127.0.0.1:9"),
    newId: () => crypto.randomUUID(),
    now: performance.now(),
    identity: stolen,
  });
  const requests: Uint8Array[] = [];
  for (let i = 0; i < REQUESTS; i++) {
    core.connect(performance.timeOrigin + performance.now(), target);
    const t = core.takeTransmits().find((x) =>
      new TextDecoder().decode(x.bytes).includes("HandshakeRequest")
    );
    if (t) requests.push(t.bytes);
    core.shutdown(0, "next");
    core.takeTransmits();
    core.takeEvents();
  }
  const sockets = Array.from(
    { length: SOURCES },
    (_, i) => Deno.listenDatagram({ transport: "udp", hostname: `127.0.1.${1 + i}`, port: 0 }),
  );
  const to = { transport: "udp" as const, ...target };
  const flood = (async () => {
    const started = performance.now();
    for (let i = 0; i < requests.length; i++) {
      await sockets[i % SOURCES]!.send(requests[i]!, to);
      const due = started + (i * 1000) / RATE;
      if (performance.now() < due - 2) await new Promise((r) => setTimeout(r, due - performance.now()));
    }
  })();
  await new Promise((r) => setTimeout(r, 100));
  await using client = new P2PClient({ server: server.addrText, bind: "127.0.0.2:0", identity: "generate" });
  const t0 = performance.now();
  await client.connect();
  const handshakeMs = performance.now() - t0;
  let answered = 0;
  const pings = 10;
  for (let i = 0; i < pings; i++) {
    try {
      await client.ping();
      answered++;
    } catch {
      // counted as unanswered
    }
  }
  await flood;
  for (const s of sockets) s.close();
  console.log(
    `takeover flood: legitimate handshake ${handshakeMs.toFixed(0)} ms, ${answered}/${pings} pings`,
  );
  assert(handshakeMs < 1_000, `the legitimate handshake took ${handshakeMs.toFixed(0)} ms`);
  assert(answered >= 0.8 * pings, `${answered} of ${pings} pings answered`);
});
