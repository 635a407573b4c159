import { assert, assertEquals, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import {
  DecodeError,
  decodeMessage,
  DEFAULT_NETWORK_ID,
  encodeMessage,
  MAX_SEQUENCE,
  type Message,
  MESSAGE_TYPES,
  networkOf,
  NODE_INFO_LIMITS,
  parseErrorPayload,
  parseHandshakeResponse,
  parseNodeInfo,
  parsePeerInfo,
  type PeerInfo,
  show,
} from "../src/wire/mod.ts";
import { isUuid } from "../src/deps/uuid.ts";
import { mulberry32 } from "./sim.ts";

const ID = "7d444840-9dc0-41d1-b245-5ffdce74fad2";
const ID2 = "0b7a9f2e-5c1d-4e8f-9a6b-3c2d1e0f9a8b";
const utf8 = new TextEncoder();

function message(over: Partial<Message> = {}): Message {
  return {
    id: ID,
    message_type: "Ping",
    timestamp: 1_700_000_000,
    payload: null,
    sender_addr: "192.0.2.1:8080",
    sequence_number: 1,
    requires_ack: false,
    ack_for: null,
    ...over,
  };
}

function decodeText(text: string): Message {
  return decodeMessage(utf8.encode(text));
}

function reasonOf(text: string | Uint8Array): string {
  try {
    decodeMessage(typeof text === "string" ? utf8.encode(text) : text);
  } catch (error) {
    assert(error instanceof DecodeError, `not a DecodeError: ${error}`);
    assert(error instanceof SyntaxError, "DecodeError is a SyntaxError");
    return error.reason;
  }
  throw new Error(`decoded: ${text}`);
}

function envelope(over: Record<string, unknown>): string {
  return JSON.stringify({ ...message(), ...over });
}

Deno.test("encodeMessage writes all eight keys in order, nulls included, with no trailing newline", () => {
  const text = new TextDecoder().decode(encodeMessage(message()));
  assertEquals(Object.keys(JSON.parse(text)), [
    "id",
    "message_type",
    "timestamp",
    "payload",
    "sender_addr",
    "sequence_number",
    "requires_ack",
    "ack_for",
  ]);
  assert(text.includes('"payload":null') && text.includes('"ack_for":null'));
  assert(!text.endsWith("\n"));
});

Deno.test("encodeMessage orders keys even when the input object has them in another order", () => {
  const scrambled = { ack_for: ID2, requires_ack: false, payload: { a: 1 } } as Partial<Message>;
  const text = new TextDecoder().decode(
    encodeMessage({ ...scrambled, ...message(), ...scrambled } as Message),
  );
  assert(text.startsWith(`{"id":"${ID}","message_type":"Ping","timestamp":`), text);
  assert(text.endsWith(`"requires_ack":false,"ack_for":"${ID2}"}`), text);
});

Deno.test("encode then decode round-trips every message type", () => {
  for (const type of MESSAGE_TYPES) {
    const msg = message({ message_type: type, payload: { k: [1, "two", null] }, ack_for: ID2 });
    assertEquals(decodeMessage(encodeMessage(msg)), msg);
  }
  assertStrictEquals(MESSAGE_TYPES.length, 11);
});

Deno.test("decodeMessage fills missing optional keys with null, null, null, false, null", () => {
  const m = decodeText(`{"id":"${ID}","message_type":"Data","timestamp":5}`);
  assertEquals(m, {
    id: ID,
    message_type: "Data",
    timestamp: 5,
    payload: null,
    sender_addr: null,
    sequence_number: null,
    requires_ack: false,
    ack_for: null,
  });
});

Deno.test("decodeMessage accepts millisecond timestamps, ack_for as a UUID or u32, and ignores unknown keys", () => {
  assertStrictEquals(decodeText(envelope({ timestamp: 1_700_000_000_123 })).timestamp, 1_700_000_000_123);
  assertStrictEquals(decodeText(envelope({ ack_for: 7 })).ack_for, 7);
  assertStrictEquals(decodeText(envelope({ ack_for: ID2 })).ack_for, ID2);
  assertStrictEquals(decodeText(envelope({ sequence_number: MAX_SEQUENCE })).sequence_number, MAX_SEQUENCE);
  assertStrictEquals(decodeText(envelope({ sequence_number: 0 })).sequence_number, 0);
  const m = decodeText(envelope({ extra: { nested: true }, version: 2 }));
  assertEquals(Object.keys(m).length, 8);
});

Deno.test("decodeMessage rejects undecodable datagrams with the stats reason", () => {
  const cases: [string, string | Uint8Array][] = [
    ["invalid_utf8", new Uint8Array([0xc3, 0x28])],
    ["invalid_utf8", new Uint8Array([0xed, 0xa0, 0x80])],
    ["invalid_json", "{"],
    ["invalid_json", ""],
    ["invalid_json", "{'id': 1}"],
    ["not_an_object", "[]"],
    ["not_an_object", "3"],
    ["not_an_object", "null"],
    ["bad_field", envelope({ id: 1 })],
    ["bad_field", envelope({ id: "1" })],
    ["bad_field", envelope({ id: undefined })],
    ["bad_field", envelope({ message_type: 3 })],
    ["unknown_type", envelope({ message_type: "ping" })],
    ["unknown_type", envelope({ message_type: "Nope" })],
    ["bad_field", envelope({ timestamp: 1.5 })],
    ["bad_field", envelope({ timestamp: -1 })],
    ["bad_field", envelope({ timestamp: "5" })],
    ["bad_field", envelope({ timestamp: undefined })],
    ["bad_field", envelope({ sequence_number: "1" })],
    ["bad_field", envelope({ sequence_number: -1 })],
    ["bad_field", envelope({ sequence_number: MAX_SEQUENCE + 1 })],
    ["bad_field", envelope({ sequence_number: 1.5 })],
    ["bad_field", envelope({ requires_ack: 1 })],
    ["bad_field", envelope({ sender_addr: 1 })],
    ["bad_field", envelope({ ack_for: "not-a-uuid" })],
    ["bad_field", envelope({ ack_for: -3 })],
    ["bad_field", envelope({ ack_for: true })],
  ];
  for (const [reason, input] of cases) assertStrictEquals(reasonOf(input), reason, String(input));
});

Deno.test("a DecodeError message quotes the offending value", () => {
  assertThrows(
    () => decodeText(envelope({ sequence_number: "12" })),
    (e: unknown) => e instanceof DecodeError && e.message === 'Bad "sequence_number": "12"',
  );
});

Deno.test("show quotes values as JSON and truncates long ones", () => {
  assertStrictEquals(show("x"), '"x"');
  assertStrictEquals(show(undefined), "undefined");
  assertStrictEquals(show(1n), "1");
  const long = show("y".repeat(200));
  assertStrictEquals(long.length, 80);
  assert(long.endsWith("..."));
});

const NODE = {
  id: ID.toUpperCase(),
  name: "n",
  version: "1",
  listen_addr: "192.0.2.5:9000",
  capabilities: ["relay"],
  metadata: { network_id: "alpha", region: "eu" },
};

Deno.test("parseNodeInfo accepts a full NodeInfo, lowercases the id and drops unknown keys", () => {
  const info = parseNodeInfo({ ...NODE, extra: 1 });
  assert(typeof info !== "string", String(info));
  assertStrictEquals(info.id, ID);
  assertEquals(Object.keys(info), ["id", "name", "version", "listen_addr", "capabilities", "metadata"]);
  assertStrictEquals(networkOf(info), "alpha");
});

Deno.test("parseNodeInfo defaults capabilities and metadata, and networkOf defaults to p2p_default", () => {
  const info = parseNodeInfo({ id: ID, name: "n", version: "1", listen_addr: "[2001:db8::1]:9000" });
  assert(typeof info !== "string", String(info));
  assertEquals(info.capabilities, []);
  assertEquals(info.metadata, {});
  assertStrictEquals(networkOf(info), DEFAULT_NETWORK_ID);
  assertStrictEquals(DEFAULT_NETWORK_ID, "p2p_default");
});

Deno.test("parseNodeInfo rejects each bad field with a reason naming it", () => {
  const cases: [Record<string, unknown> | null, string][] = [
    [null, "not an object"],
    [{ ...NODE, id: "nope" }, '"id"'],
    [{ ...NODE, name: "" }, '"name"'],
    [{ ...NODE, name: "x".repeat(NODE_INFO_LIMITS.maxString + 1) }, '"name"'],
    [{ ...NODE, version: "" }, '"version"'],
    [{ ...NODE, listen_addr: "192.0.2.5" }, '"listen_addr"'],
    [{ ...NODE, listen_addr: "::1:80" }, '"listen_addr"'],
    [{ ...NODE, listen_addr: 80 }, '"listen_addr"'],
    [{ ...NODE, capabilities: "relay" }, '"capabilities"'],
    [{ ...NODE, capabilities: Array(NODE_INFO_LIMITS.maxCapabilities + 1).fill("c") }, '"capabilities"'],
    [{ ...NODE, metadata: { n: 1 } }, '"metadata"'],
    [{ ...NODE, metadata: [] }, '"metadata"'],
    [{ ...NODE, metadata: { network_id: "" } }, '"metadata.network_id"'],
  ];
  for (const [value, needle] of cases) {
    const r = parseNodeInfo(value as never);
    assert(typeof r === "string", `accepted ${JSON.stringify(value)}`);
    assert(r.includes(needle), `${r} should mention ${needle}`);
  }
});

Deno.test("parseHandshakeResponse validates node_info, success and error_message", () => {
  const ok = parseHandshakeResponse({ node_info: NODE, success: true });
  assert(typeof ok !== "string", String(ok));
  assertStrictEquals(ok.error_message, null);
  assertStrictEquals(ok.node_info.id, ID);
  assert(typeof parseHandshakeResponse({ node_info: NODE, success: "yes" }) === "string");
  assert(typeof parseHandshakeResponse({ node_info: NODE, success: false, error_message: 3 }) === "string");
  const bad = parseHandshakeResponse({ node_info: { ...NODE, name: "" }, success: true });
  assert(typeof bad === "string" && bad.startsWith("node_info: "));
  assert(typeof parseHandshakeResponse([]) === "string");
});

Deno.test("parsePeerInfo accepts upstream entries without a name and rejects bad ones", () => {
  const p = parsePeerInfo({ id: ID, addr: "192.0.2.9:1", last_seen: 5, capabilities: ["x"] });
  assertEquals(p, { id: ID, addr: "192.0.2.9:1", last_seen: 5, capabilities: ["x"], name: "" });
  assert(typeof parsePeerInfo({ id: ID, addr: "a", last_seen: 1.5 }) === "string");
  assert(typeof parsePeerInfo({ id: "x", addr: "a", last_seen: 1 }) === "string");
  assert(typeof parsePeerInfo({ id: ID, addr: 1, last_seen: 1 }) === "string");
  assert(typeof parsePeerInfo({ id: ID, addr: "a", last_seen: 1, capabilities: [1] }) === "string");
  assert(typeof parsePeerInfo("peer") === "string");
});

Deno.test("parsePeerInfo keeps a nat object with string behaviours and integer extras, and nothing else", () => {
  const base = { id: ID, addr: "192.0.2.9:1", last_seen: 5 };
  const nat = { mapping: "endpoint-independent", filtering: "address-dependent", port_delta: 2 };
  assertEquals((parsePeerInfo({ ...base, nat }) as PeerInfo).nat, nat);
  const long = parsePeerInfo({ ...base, nat: { mapping: "x".repeat(500), filtering: "y", port_delta: 1.5 } });
  assert(typeof long !== "string");
  assertEquals(long.nat, { mapping: "x".repeat(64), filtering: "y" });
  for (const bad of [null, "nat", [], { mapping: "endpoint-independent" }, { mapping: 1, filtering: "x" }]) {
    const p = parsePeerInfo({ ...base, nat: bad });
    assert(typeof p !== "string" && p.nat === undefined, JSON.stringify(bad));
  }
});

Deno.test("parseErrorPayload reads {error, code} leniently", () => {
  assertEquals(parseErrorPayload({ error: "e", code: "c" }), { error: "e", code: "c" });
  assertEquals(parseErrorPayload({ error: "e", code: 5 }), { error: "e" });
  assertEquals(parseErrorPayload("plain text"), { error: "plain text" });
  assertEquals(parseErrorPayload({ message: "m" }), { error: '{"message":"m"}' });
  assertEquals(parseErrorPayload(null), { error: "null" });
});

Deno.test("decodeMessage accepts exactly the ids and ack_for strings the uuid package accepts (its fast path agrees)", () => {
  const random = mulberry32(2026);
  const alphabet = "0123456789abcdefABCDEF-gz8b9";
  const seeds = [
    "7d444840-9dc0-41d1-b245-5ffdce74fad2",
    "00000000-0000-0000-0000-000000000000",
    "ffffffff-ffff-ffff-ffff-ffffffffffff",
    "7D444840-9DC0-81D1-A245-5FFDCE74FAD2",
  ];
  let accepted = 0;
  for (let i = 0; i < 20_000; i++) {
    const chars = [...seeds[i % seeds.length]!];
    const edits = Math.floor(random() * 3);
    for (let e = 0; e < edits; e++) {
      chars[Math.floor(random() * chars.length)] = alphabet[Math.floor(random() * alphabet.length)]!;
    }
    if (random() < 0.02) chars.pop();
    const id = chars.join("");
    const datagram = (key: string) =>
      new TextEncoder().encode(
        key === "id"
          ? `{"id":"${id}","message_type":"Ping","timestamp":1}`
          : `{"id":"${seeds[0]}","message_type":"Ack","timestamp":1,"ack_for":"${id}"}`,
      );
    for (const key of ["id", "ack_for"]) {
      let ok = true;
      try {
        decodeMessage(datagram(key));
      } catch {
        ok = false;
      }
      assertStrictEquals(ok, isUuid(id), `${key} ${id}`);
      if (ok) accepted++;
    }
  }
  assert(accepted > 1_000 && accepted < 39_000, `a mix of valid and invalid ids: ${accepted}`);
});
