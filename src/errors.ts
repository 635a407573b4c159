/**
 * The errors callers branch on.
 *
 * @module
 */
import type { Strategy } from "./core/strategy.ts";

/**
 * The UDP socket could not be bound. Message: `failed to bind 127.0.0.1:8080: <reason>`.
 *
 * @example A second server on a port that is taken
 * ```ts
 * import { BindError, P2PServer } from "../mod.ts";
 * await using first = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
 * const { port } = await first.listen();
 * await using second = new P2PServer({ listenAddress: `127.0.0.1:${port}`, enableDiscovery: false });
 * try {
 *   await second.listen();
 *   throw new Error("bound twice");
 * } catch (error) {
 *   if (!(error instanceof BindError) || error.address !== `127.0.0.1:${port}`) throw error;
 * }
 * ```
 */
export class BindError extends Error {
  /** The address that could not be bound, `"ip:port"`. */
  readonly address: string;
  /**
   * A failure to bind `address`.
   *
   * @param address The address, `"ip:port"`.
   * @param reason The operating system's reason.
   * @param options `cause`.
   */
  constructor(address: string, reason: string, options?: ErrorOptions) {
    super(`failed to bind ${address}: ${reason}`, options);
    this.name = "BindError";
    this.address = address;
  }
}

/**
 * The runtime lacks an API p2p_server needs: UDP sockets (`Deno.listenDatagram`) are behind Deno's
 * `--unstable-net` flag (or `"unstable": ["net"]` in deno.json). The message names the missing flag.
 * `P2PServer.listen` and `P2PClient.connect` throw it.
 *
 * @example Telling the user which flag to add
 * ```ts
 * import { UnstableApiError } from "../mod.ts";
 * const error = new UnstableApiError("Deno.listenDatagram", "--unstable-net", "net");
 * if (error.flag !== "--unstable-net" || !error.message.includes('"unstable": ["net"]')) {
 *   throw new Error("the message names the flag and the deno.json setting");
 * }
 * ```
 */
export class UnstableApiError extends Error {
  /** The missing flag, e.g. `--unstable-net`. */
  readonly flag: string;
  /**
   * A missing unstable API.
   *
   * @param api The missing API, e.g. `Deno.listenDatagram`.
   * @param flag The flag that enables it, e.g. `--unstable-net`.
   * @param unstable Its name in deno.json's `"unstable"` list, e.g. `net`.
   */
  constructor(api: string, flag: string, unstable: string) {
    super(
      `${api} is not available: UDP sockets need Deno's ${flag} flag ` +
        `(run "deno run ${flag} ...", or add "unstable": ["${unstable}"] to deno.json)`,
    );
    this.name = "UnstableApiError";
    this.flag = flag;
  }
}

/**
 * A remote did not answer in time. Message: `connection timeout to 127.0.0.1:8080`.
 *
 * @example A client whose server never answers
 * ```ts
 * import { ConnectionTimeoutError, P2PClient } from "../mod.ts";
 * const silent = Deno.listenDatagram({ transport: "udp", hostname: "127.0.0.1", port: 0 });
 * const { port } = silent.addr as Deno.NetAddr;
 * await using client = new P2PClient({
 *   server: `127.0.0.1:${port}`,
 *   bind: "127.0.0.1:0",
 *   reliability: { handshakeTimeout: 0.2 },
 * });
 * const error = await client.connect().then(() => null, (e: unknown) => e);
 * silent.close();
 * if (!(error instanceof ConnectionTimeoutError)) throw new Error("no timeout");
 * ```
 */
export class ConnectionTimeoutError extends Error {
  /** The remote address, `"ip:port"`. */
  readonly address: string;
  /**
   * No answer from `address`.
   *
   * @param address The remote address, `"ip:port"`.
   */
  constructor(address: string) {
    super(`connection timeout to ${address}`);
    this.name = "ConnectionTimeoutError";
    this.address = address;
  }
}

/**
 * A handshake was refused. The message is the server's text (for example
 * `handshake failed: node ID already exists`); `code` is machine-readable (`node_id_conflict`,
 * `server_full`, `invalid_node_info`, `network_mismatch`, or `refused` when the server gave none); the
 * codes are `ERROR_CODES` and, for a server that does not prove the key the client pinned,
 * `CLIENT_AUTH_CODES`.
 *
 * @example A second node with an id that is taken
 * ```ts
 * import { ERROR_CODES, HandshakeError, P2PClient, P2PServer } from "../mod.ts";
 * await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
 * const { port } = await server.listen();
 * await using first = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0" });
 * await first.connect();
 * await using copy = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0", nodeId: first.node.id });
 * const error = await copy.connect().then(() => null, (e: unknown) => e);
 * if (!(error instanceof HandshakeError) || error.code !== ERROR_CODES.nodeIdConflict) {
 *   throw new Error("the id was accepted twice");
 * }
 * ```
 */
export class HandshakeError extends Error {
  /** Machine-readable reason. */
  readonly code: string;
  /**
   * For an introduction that found no direct path (`punch_failed`), the strategy the pair's NAT
   * classifications chose; `relay` means nothing was punched, by choice: relay with `send(data, { to })`.
   */
  readonly strategy: Strategy | undefined;
  /**
   * A refused handshake.
   *
   * @param message The server's error text.
   * @param code Machine-readable reason.
   * @param strategy An introduction's strategy.
   */
  constructor(message: string, code: string, strategy?: Strategy) {
    super(message);
    this.name = "HandshakeError";
    this.code = code;
    this.strategy = strategy;
  }
}

/**
 * The remote answered a request with an `Error` message; `code` is one of `ERROR_CODES` when it gave one.
 *
 * @example Asking to be introduced to a peer the server does not know
 * ```ts
 * import { ERROR_CODES, P2PClient, P2PServer, RemoteError } from "../mod.ts";
 * await using server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
 * const { port } = await server.listen();
 * await using client = new P2PClient({ server: `127.0.0.1:${port}`, bind: "127.0.0.1:0" });
 * await client.connect();
 * const error = await client.introduce(crypto.randomUUID()).then(() => null, (e: unknown) => e);
 * if (!(error instanceof RemoteError) || error.code !== ERROR_CODES.cannotIntroduce) {
 *   throw new Error("introduced to nobody");
 * }
 * ```
 */
export class RemoteError extends Error {
  /** Machine-readable reason, when the remote gave one. */
  readonly code: string | undefined;
  /**
   * An error answer from the remote.
   *
   * @param message The remote's error text.
   * @param code Machine-readable reason.
   */
  constructor(message: string, code: string | undefined) {
    super(message);
    this.name = "RemoteError";
    this.code = code;
  }
}
