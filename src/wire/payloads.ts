/**
 * The payload shapes p2p_server checks on receipt: NodeInfo, a HandshakeResponse, discovery entries and
 * Error payloads, each validated into a fresh value or a one-line reason. Pure functions, no I/O.
 *
 * @module
 */
import { isUuid } from "../deps/uuid.ts";
import { parseSocketAddr } from "./address.ts";
import {
  DEFAULT_NETWORK_ID,
  type HandshakeResponsePayload,
  isNonNegativeInteger,
  isObject,
  type Json,
  type NatInfo,
  type NodeInfo,
  type PeerInfo,
  show,
} from "./message.ts";

/** Limits applied when validating a NodeInfo, so one peer cannot make discovery answers unbounded. */
export const NODE_INFO_LIMITS = {
  /** Longest `name`, `version` or metadata value, in characters. */
  maxString: 256,
  /** Most capabilities. */
  maxCapabilities: 32,
  /** Most metadata keys. */
  maxMetadataKeys: 32,
} as const;

/**
 * Validates a NodeInfo from the wire. Returns the NodeInfo (a fresh object holding only the known keys) or
 * a one-line reason.
 */
export function parseNodeInfo(value: Json): NodeInfo | string {
  if (!isObject(value)) return "node info is not an object";
  const { id, name, version, listen_addr, capabilities, metadata } = value;
  if (typeof id !== "string" || !isUuid(id)) return `bad "id": ${show(id)}`;
  if (typeof name !== "string" || name.length === 0 || name.length > NODE_INFO_LIMITS.maxString) {
    return `bad "name": ${show(name)}`;
  }
  if (typeof version !== "string" || version.length === 0 || version.length > NODE_INFO_LIMITS.maxString) {
    return `bad "version": ${show(version)}`;
  }
  if (typeof listen_addr !== "string" || typeof parseSocketAddr(listen_addr) === "string") {
    return `bad "listen_addr": ${show(listen_addr)}`;
  }
  const caps = capabilities ?? [];
  if (
    !Array.isArray(caps) || caps.length > NODE_INFO_LIMITS.maxCapabilities ||
    !caps.every((c) => typeof c === "string" && c.length <= NODE_INFO_LIMITS.maxString)
  ) {
    return `bad "capabilities": ${show(capabilities)}`;
  }
  const meta = metadata ?? {};
  if (!isObject(meta)) return `bad "metadata": ${show(metadata)}`;
  const entries = Object.entries(meta);
  if (
    entries.length > NODE_INFO_LIMITS.maxMetadataKeys ||
    !entries.every(([k, v]) =>
      typeof v === "string" && v.length <= NODE_INFO_LIMITS.maxString && k.length <= 64
    )
  ) {
    return `bad "metadata": ${show(metadata)}`;
  }
  const md: Record<string, string> = {};
  for (const [k, v] of entries) md[k] = v as string;
  if (md.network_id === "") return `bad "metadata.network_id": ""`;
  return {
    id: id.toLowerCase(),
    name,
    version,
    listen_addr,
    capabilities: caps as string[],
    metadata: md,
  };
}

/** The network a NodeInfo belongs to (`metadata.network_id`, default {@linkcode DEFAULT_NETWORK_ID}). */
export function networkOf(info: NodeInfo): string {
  return info.metadata.network_id ?? DEFAULT_NETWORK_ID;
}

/** Validates a `HandshakeResponse.payload`. Returns the payload or a one-line reason. */
export function parseHandshakeResponse(value: Json): HandshakeResponsePayload | string {
  if (!isObject(value)) return "payload is not an object";
  const info = parseNodeInfo(value.node_info as Json);
  if (typeof info === "string") return `node_info: ${info}`;
  if (typeof value.success !== "boolean") return `bad "success": ${show(value.success)}`;
  const err = value.error_message ?? null;
  if (err !== null && typeof err !== "string") return `bad "error_message": ${show(err)}`;
  return { node_info: info, success: value.success, error_message: err };
}

/** Validates a `DiscoveryResponse` peer list entry. Returns the entry or a one-line reason. */
export function parsePeerInfo(value: Json): PeerInfo | string {
  if (!isObject(value)) return "peer is not an object";
  const { id, addr, last_seen, capabilities, name } = value;
  if (typeof id !== "string" || !isUuid(id)) return `bad "id": ${show(id)}`;
  if (typeof addr !== "string") return `bad "addr": ${show(addr)}`;
  if (!isNonNegativeInteger(last_seen)) return `bad "last_seen": ${show(last_seen)}`;
  const caps = capabilities ?? [];
  if (!Array.isArray(caps) || !caps.every((c) => typeof c === "string")) {
    return `bad "capabilities": ${show(capabilities)}`;
  }
  const out: PeerInfo = {
    id,
    addr,
    last_seen,
    capabilities: caps as string[],
    name: typeof name === "string" ? name : "",
  };
  if (typeof value.observed_addr === "string") out.observed_addr = value.observed_addr;
  const nat = value.nat;
  if (isObject(nat) && typeof nat.mapping === "string" && typeof nat.filtering === "string") {
    const info: NatInfo = { mapping: nat.mapping.slice(0, 64), filtering: nat.filtering.slice(0, 64) };
    if (Number.isSafeInteger(nat.port_delta)) info.port_delta = nat.port_delta as number;
    if (Number.isSafeInteger(nat.binding_lifetime_ms)) {
      info.binding_lifetime_ms = nat.binding_lifetime_ms as number;
    }
    out.nat = info;
  }
  return out;
}

/** The payload of an `Error` message: `{"error": text}`, plus our machine-readable `code`. */
export interface ErrorPayload {
  /** Human-readable text, e.g. `handshake failed: node ID already exists`. */
  error: string;
  /** Machine-readable code, e.g. `node_id_conflict` (an extension; may be absent from other servers). */
  code?: string;
}

/** Reads an `Error` payload leniently: any object with a string `error`, else a best-effort rendering. */
export function parseErrorPayload(value: Json): ErrorPayload {
  if (isObject(value) && typeof value.error === "string") {
    return typeof value.code === "string" ? { error: value.error, code: value.code } : { error: value.error };
  }
  return { error: typeof value === "string" ? value : show(value) };
}

/** Whether a value is a plain JSON object (not null, not an array). */
export function isJsonObject(value: Json | undefined): value is { [key: string]: Json } {
  return isObject(value);
}
