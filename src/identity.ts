/**
 * Building a node's own NodeInfo.
 *
 * @module
 */
import { DEFAULT_NETWORK_ID, type NodeInfo } from "./wire/mod.ts";
import denoJson from "../deno.json" with { type: "json" };

/** The p2p_server version (from `deno.json`). */
export const VERSION: string = denoJson.version;

/** Options for a node's own identity. */
export interface IdentityOptions {
  /** Node id (UUID). @default {crypto.randomUUID()} */
  nodeId?: string;
  /** Node name. */
  name?: string;
  /** Software version. @default {VERSION} */
  version?: string;
  /** Network to join. @default {"p2p_default"} */
  networkId?: string;
  /** Capabilities to announce. @default {[]} */
  capabilities?: string[];
  /** Extra metadata (string values). @default {{}} */
  metadata?: Record<string, string>;
}

/** Builds a NodeInfo; `listenAddr` is the address the node reports for itself. */
export function makeNodeInfo(options: IdentityOptions, defaultName: string, listenAddr: string): NodeInfo {
  return {
    id: (options.nodeId ?? crypto.randomUUID()).toLowerCase(),
    name: options.name ?? defaultName,
    version: options.version ?? VERSION,
    listen_addr: listenAddr,
    capabilities: [...(options.capabilities ?? [])],
    metadata: { ...(options.metadata ?? {}), network_id: options.networkId ?? DEFAULT_NETWORK_ID },
  };
}
