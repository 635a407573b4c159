/**
 * The errors callers branch on.
 *
 * @module
 */

/** The UDP socket could not be bound. Message: `failed to bind 127.0.0.1:8080: <reason>`. */
export class BindError extends Error {
  /** The address that could not be bound, `"ip:port"`. */
  readonly address: string;
  /**
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
 */
export class UnstableApiError extends Error {
  /** The missing flag, e.g. `--unstable-net`. */
  readonly flag: string;
  /**
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

/** A remote did not answer in time. Message: `connection timeout to 127.0.0.1:8080`. */
export class ConnectionTimeoutError extends Error {
  /** The remote address, `"ip:port"`. */
  readonly address: string;
  /** @param address The remote address, `"ip:port"`. */
  constructor(address: string) {
    super(`connection timeout to ${address}`);
    this.name = "ConnectionTimeoutError";
    this.address = address;
  }
}

/**
 * A handshake was refused. The message is the server's text (for example
 * `handshake failed: node ID already exists`); `code` is machine-readable (`node_id_conflict`,
 * `server_full`, `invalid_node_info`, `network_mismatch`, or `refused` when the server gave none).
 */
export class HandshakeError extends Error {
  /** Machine-readable reason. */
  readonly code: string;
  /**
   * @param message The server's error text.
   * @param code Machine-readable reason.
   */
  constructor(message: string, code: string) {
    super(message);
    this.name = "HandshakeError";
    this.code = code;
  }
}

/** The remote answered a request with an `Error` message. */
export class RemoteError extends Error {
  /** Machine-readable reason, when the remote gave one. */
  readonly code: string | undefined;
  /**
   * @param message The remote's error text.
   * @param code Machine-readable reason.
   */
  constructor(message: string, code: string | undefined) {
    super(message);
    this.name = "RemoteError";
    this.code = code;
  }
}
