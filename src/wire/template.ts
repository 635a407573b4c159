/**
 * The writer's fast lane: the JSON text of a message built from a template of its eight keys in the
 * documented order (and the extension members after them) instead of `JSON.stringify` of an object built for
 * the purpose, which measured about twice the cost for a Pong (docs/performance.md). The text is exactly what
 * `JSON.stringify` writes; a message with a member the template does not write plainly (a string that needs
 * escaping, a value of an unexpected type) is left to the general writer in `codec.ts`
 * (tests/template_test.ts checks both on generated messages).
 *
 * @module
 */
import { type Message, MESSAGE_TYPE_SET } from "./message.ts";

/** Whether `JSON.stringify(s)` is `"` + s + `"`: printable ASCII without quotes or backslashes. */
function isPlain(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/** A string or null as JSON, or undefined when it needs escaping (the general writer then writes it). */
function plainJson(s: string | null): string | undefined {
  if (s === null) return "null";
  return typeof s === "string" && isPlain(s) ? '"' + s + '"' : undefined;
}

/** A number as JSON (what `JSON.stringify` writes), or undefined when it is not a number. */
function numberJson(n: unknown): string | undefined {
  if (typeof n !== "number") return undefined;
  return Number.isFinite(n) ? "" + n : "null";
}

/**
 * The JSON text of `message` exactly as `JSON.stringify` of its members in the documented order writes it,
 * built from a template; undefined when a member is not of the plain kind the template writes (a string that
 * needs escaping, a value of an unexpected type), for the general writer to handle.
 */
export function encodeTemplateText(message: Message): string | undefined {
  const id = plainJson(message.id);
  const timestamp = numberJson(message.timestamp);
  const sender = plainJson(message.sender_addr);
  const seq = message.sequence_number === null ? "null" : numberJson(message.sequence_number);
  const ackFor = typeof message.ack_for === "number"
    ? numberJson(message.ack_for)
    : plainJson(message.ack_for);
  const payload = message.payload === null ? "null" : JSON.stringify(message.payload);
  if (
    id === undefined || timestamp === undefined || sender === undefined || seq === undefined ||
    ackFor === undefined || payload === undefined || typeof message.requires_ack !== "boolean" ||
    !MESSAGE_TYPE_SET.has(message.message_type)
  ) {
    return undefined;
  }
  let text = '{"id":' + id + ',"message_type":"' + message.message_type + '","timestamp":' + timestamp +
    ',"payload":' + payload + ',"sender_addr":' + sender + ',"sequence_number":' + seq + ',"requires_ack":' +
    (message.requires_ack ? "true" : "false") + ',"ack_for":' + ackFor;
  const { ext, rel, ord, frag, cookie, auth, sid } = message;
  if (
    (ext !== undefined && typeof ext !== "number") || (rel !== undefined && typeof rel !== "number") ||
    (ord !== undefined && typeof ord !== "number")
  ) {
    return undefined;
  }
  if (ext !== undefined) text += ',"ext":' + numberJson(ext);
  if (rel !== undefined) text += ',"rel":' + numberJson(rel);
  if (ord !== undefined) text += ',"ord":' + numberJson(ord);
  if (frag !== undefined) text += ',"frag":' + JSON.stringify(frag);
  if (cookie !== undefined) text += ',"cookie":' + JSON.stringify(cookie);
  if (auth !== undefined) text += ',"auth":' + JSON.stringify(auth);
  if (sid !== undefined) text += ',"sid":' + JSON.stringify(sid);
  return text + "}";
}
