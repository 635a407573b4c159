/**
 * Listener errors are reported, never lost: logged at error level and emitted as `error` events, with no
 * loop when an `error` listener throws; and end to end through `P2PServer` and `P2PClient`.
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { Emitter, type ListenerError } from "../src/emitter.ts";
import { P2PClient, P2PServer } from "../mod.ts";
import { captureLogs } from "./helpers/log_capture.ts";
import { waitUntil } from "./helpers/server_process.ts";

type Events = { tick: number; error: ListenerError };

Deno.test("a throwing listener is logged and emitted as an error event; the other listeners still run", async () => {
  await using logs = await captureLogs();
  const events = new Emitter<Events>();
  const ticks: number[] = [];
  const errors: ListenerError[] = [];
  events.on("tick", () => {
    throw new RangeError("listener bug");
  });
  events.on("tick", (n) => void ticks.push(n));
  events.on("error", (e) => void errors.push(e));
  assertStrictEquals(events.emit("tick", 7), 1);
  assertEquals(ticks, [7]);
  assertStrictEquals(errors.length, 1);
  assertStrictEquals(errors[0]!.code, "listener_error");
  assertStrictEquals(errors[0]!.event, "tick");
  assertStrictEquals(errors[0]!.error, 'event listener for "tick" threw: RangeError: listener bug');
  assert(errors[0]!.cause instanceof RangeError);
  const logged = logs.records.filter((r) => r.category.join(".") === "p2p_server.events");
  assertStrictEquals(logged.length, 1);
  assertStrictEquals(logged[0]!.level, "error");
  assertStrictEquals(logged[0]!.properties.event, "tick");
  assertStrictEquals(logged[0]!.properties.error, "RangeError: listener bug");
  assert(String(logged[0]!.properties.stack).includes("emitter_test.ts"));
});

Deno.test("an error listener that throws is logged, not re-emitted: no recursion", async () => {
  await using logs = await captureLogs();
  const events = new Emitter<Events>();
  let calls = 0;
  const seen: string[] = [];
  events.on("tick", () => {
    throw new Error("first");
  });
  events.on("error", () => {
    calls++;
    throw new Error("error handler bug");
  });
  events.on("error", (e) => void seen.push(e.event));
  events.emit("tick", 1);
  assertStrictEquals(calls, 1);
  assertEquals(seen, ["tick"], "the second error listener still ran");
  const texts = logs.texts().filter((t) => t.includes("p2p_server.events"));
  assertEquals(texts, [
    "error p2p_server.events: event listener for tick threw: Error: first (reported to error listeners)",
    "error p2p_server.events: event listener for error threw: Error: error handler bug",
  ]);
});

Deno.test("without error listeners a listener's error is still logged", async () => {
  await using logs = await captureLogs();
  const events = new Emitter<Events>();
  events.on("tick", () => {
    throw "a string";
  });
  events.emit("tick", 1);
  assertEquals(logs.texts(), ["error p2p_server.events: event listener for tick threw: a string"]);
});

Deno.test("an async listener's rejection is reported too (no unhandled rejection)", async () => {
  await using _logs = await captureLogs();
  const events = new Emitter<Events>();
  const got = Promise.withResolvers<ListenerError>();
  events.on("tick", async (n) => {
    await Promise.resolve();
    throw new Error(`late ${n}`);
  });
  events.on("error", (e) => got.resolve(e));
  events.emit("tick", 3);
  const e = await got.promise;
  assertStrictEquals(e.error, 'event listener for "tick" threw: Error: late 3');
});

Deno.test("a P2PServer listener that throws is reported as the server's error event and serving goes on", async () => {
  await using logs = await captureLogs("info");
  await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
  const { port } = await server.listen();
  const errors: ListenerError[] = [];
  server.on("peerJoined", () => {
    throw new Error("app bug on join");
  });
  server.on("error", (e) => void errors.push(e));
  await using client = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0", name: "e" });
  await client.connect();
  await waitUntil(() => errors.length > 0, "the error event");
  assertStrictEquals(errors[0]!.event, "peerJoined");
  assert((await client.ping()) >= 0, "the server still answers");
  assert(logs.texts().some((t) => t.includes("event listener for peerJoined threw: Error: app bug on join")));
});

Deno.test("a P2PClient data listener that throws reaches the client's error listeners", async () => {
  await using _logs = await captureLogs("info");
  await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
  const { port } = await server.listen();
  await using client = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0", name: "e" });
  const codes: (string | undefined)[] = [];
  client.on("data", () => {
    throw new Error("echo handler bug");
  });
  client.on("error", (e) => void codes.push(e.code));
  await client.connect();
  await client.send({ hello: 1 });
  await waitUntil(() => codes.length > 0, "the error event");
  assertEquals(codes, ["listener_error"]);
});
