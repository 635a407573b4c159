/**
 * The writer's fast lane (src/wire/template.ts) against the general writer it must agree with: on generated
 * messages of every type, with and without extensions, with strings that need escaping and values of
 * unexpected types, the template either declines or writes exactly what `JSON.stringify` writes.
 *
 * @module
 */
import { assert, assertEquals } from "./deps/assert.ts";
import { encodeTemplateText } from "../src/wire/template.ts";
import { decodeMessage, encodeMessage, encodeObjectText } from "../src/wire/codec.ts";
import { type Json, type Message, MESSAGE_TYPES } from "../src/wire/mod.ts";
import { mulberry32 } from "../src/core/random.ts";

const rand = mulberry32(20_261_203);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
const int = (n: number) => Math.floor(rand() * n);

function uuid(): string {
  const hex = () => int(16).toString(16);
  let s = "";
  for (let i = 0; i < 32; i++) {
    s += i === 12 ? String(1 + int(8)) : i === 16 ? pick(["8", "9", "a", "b"]) : hex();
  }
  return `${s.slice(0, 8)}-${s.slice(8, 12)}-${s.slice(12, 16)}-${s.slice(16, 20)}-${s.slice(20)}`;
}

const STRINGS = [
  "",
  "127.0.0.1:8080",
  "[::1]:9",
  'a"b',
  "back\\slash",
  "tab\tx",
  "é",
  "\u{1F600}",
  "x".repeat(40),
];

function payload(depth = 0): Json {
  switch (int(depth > 2 ? 4 : 7)) {
    case 0:
      return null;
    case 1:
      return int(1_000_000);
    case 2:
      return pick(STRINGS);
    case 3:
      return rand() < 0.5;
    case 4:
      return [payload(depth + 1), payload(depth + 1)];
    case 5:
      return { nonce: int(100), sender_addr: pick(STRINGS), ',"sender_addr":': payload(depth + 1) };
    default:
      return { to: uuid(), data: payload(depth + 1) };
  }
}

function message(): Message {
  const m: Message = {
    id: rand() < 0.95 ? uuid() : uuid().toUpperCase(),
    message_type: pick(MESSAGE_TYPES),
    timestamp: pick([0, 1, 1_764_800_000, 1_764_800_000_123, int(10_000)]),
    payload: payload(),
    sender_addr: rand() < 0.5 ? null : pick(STRINGS),
    sequence_number: rand() < 0.4 ? null : pick([0, 1, int(100_000), 0xffff_ffff]),
    requires_ack: rand() < 0.5,
    ack_for: rand() < 0.5 ? null : rand() < 0.5 ? uuid() : int(1_000),
  };
  if (rand() < 0.4) m.ext = 1;
  if (rand() < 0.3) m.rel = int(1_000);
  if (rand() < 0.2) m.ord = 1 + int(1_000);
  if (rand() < 0.1) m.frag = { of: uuid(), i: 0, n: 2 };
  if (rand() < 0.1) m.cookie = "00ff";
  if (rand() < 0.2) m.sid = "0123456789abcdef";
  return m;
}

Deno.test("the template writer writes exactly JSON.stringify's text, or declines", () => {
  let written = 0;
  for (let i = 0; i < 3_000; i++) {
    const m = message();
    const text = encodeTemplateText(m);
    if (text === undefined) continue;
    written++;
    assertEquals(text, encodeObjectText(m));
  }
  assert(written > 1_000, `the template wrote only ${written} of 3000`);
  // A string that needs escaping, or a field of an unexpected type, is left to JSON.stringify.
  const m = message();
  assertEquals(encodeTemplateText({ ...m, sender_addr: 'a"b' }), undefined);
  assertEquals(encodeTemplateText({ ...m, ext: "1" as unknown as number }), undefined);
});

Deno.test("a datagram written from the template decodes to the message it was written from", () => {
  for (let i = 0; i < 500; i++) {
    const m = message();
    if (encodeTemplateText(m) === undefined) continue;
    const back = decodeMessage(encodeMessage(m));
    assertEquals(back.payload, m.payload);
    assertEquals(back.sender_addr, m.sender_addr);
    assertEquals(back.sequence_number, m.sequence_number);
  }
});
