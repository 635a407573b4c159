/**
 * The types of {@linkcode P2PClient}'s surface: its options, the options of its calls, its events and what
 * `introduce()` resolves with. Re-exported by src/client.ts and mod.ts.
 *
 * @module
 */
import type { NatClass } from "./core/nat_class.ts";
import type { SocketAddr } from "./wire/address.ts";
import type { Config } from "./config.ts";
import type { ListenerError } from "./emitter.ts";
import type { IdentityOptions } from "./identity.ts";
import type { ErrorPayload, Json, Message, MessageType } from "./wire/mod.ts";
import type { Identity } from "./core/auth.ts";
import type { Strategy } from "./core/strategy.ts";

/** Options of {@linkcode P2PClient}. */
export interface ClientOptions extends IdentityOptions {
  /** The server, `"ip:port"` or `"[ip6]:port"`. @default {"127.0.0.1:8080"} */
  server?: string;
  /** Local address to bind. @default {"0.0.0.0:0" (or "[::]:0" for an IPv6 server)} */
  bind?: string;
  /**
   * Count-based retries: waits (ms) after each try of a reliable message, ping or discovery request, one try
   * per wait, then give up (the spec's `[500, 1000, 2000]`). Setting it selects the `"schedule"` policy.
   * @default {undefined (adaptive retransmission, see `reliability`)}
   */
  retransmitSchedule?: number[];
  /**
   * Adaptive retransmission and fragmentation settings, as the server's config keys of the same meaning
   * (`rto_initial_ms`, `handshake_timeout`, `max_datagram_size`, ...).
   * @default {the server's defaults}
   */
  reliability?: Partial<
    Pick<
      Config,
      | "retransmitPolicy"
      | "rtoInitialMs"
      | "rtoMinMs"
      | "rtoMaxMs"
      | "handshakeTimeout"
      | "deliveryTimeout"
      | "maxDatagramSize"
      | "maxMessageSize"
    >
  >;
  /** Seconds between keepalive Pings to the server. @default {30} */
  heartbeatInterval?: number;
  /** Seconds of server silence after which the client reports it disconnected. @default {60} */
  connectionTimeout?: number;
  /**
   * Where a keyed handshake's X25519 exchange and the session's MACs are computed, as the server's
   * `crypto_backend`: `"openssl"` (the system's `libcrypto.so.3` through `Deno.dlopen`, needs Linux and
   * `--allow-ffi`; the constructor throws a `ConfigError` where it cannot run), `"node"` (`node:crypto`), or
   * `"auto"`, OpenSSL where it runs.
   * @default {"auto"}
   */
  cryptoBackend?: Config["cryptoBackend"];
  /** Closes the client when aborted. */
  signal?: AbortSignal;
  /**
   * A key-based identity: the handshake is signed, the node id is the key's, and the session is
   * authenticated (every datagram MAC'd) and survives a change of the client's address. `"generate"` makes
   * a new key. Implied by `serverKey`. @default {none: unkeyed, as the spec}
   */
  identity?: Identity | "generate";
  /**
   * The server's Ed25519 public key (unpadded base64url, `P2PServer.publicKey`): the client refuses a server
   * that does not prove it (`HandshakeError` `server_key_mismatch`, `server_unauthenticated` or
   * `bad_server_signature`; a server with another key refuses the request itself: `wrong_server`).
   * @default {none: any server}
   */
  serverKey?: string;
  /**
   * Asks the server to classify this client's NAT right after connecting, when the server offers it (its
   * HandshakeResponse says `"nat_check": true`); the result arrives as the `nat` event and `P2PClient.nat`.
   * @default {true}
   */
  classifyNat?: boolean;
  /**
   * Asks the server to measure this client's NAT binding lifetime right after connecting (after the
   * classification when that runs too), when the server offers it (`"nat_lifetime": true`): a second UDP
   * socket is open for the few minutes it takes, and the client then keeps its mapping open with the
   * keepalive the server suggests (`P2PClient.measureBindingLifetime`, the `natLifetime` event).
   * @default {true}
   */
  measureBindingLifetime?: boolean;
}

/** Options of {@linkcode P2PClient.send}. */
export interface ClientSendOptions {
  /** Node id of another peer in the same network: the server routes the Data there. @default {null (echo)} */
  to?: string | null;
  /** Ask for an Ack and retransmit until it comes; the promise settles on it. @default {true} */
  reliable?: boolean;
  /** Deliver in order with this client's other ordered sends (implies `reliable`). @default {false} */
  ordered?: boolean;
}

/** What {@linkcode P2PClient.discoverPage} asks for. */
export interface DiscoveryQuery {
  /** Skip this many peers. */
  offset?: number;
  /** Resume after the page that gave this `nextCursor` (opaque); stable while peers join and leave. */
  cursor?: string;
  /** Most peers on the page (the server also keeps the page within one datagram). */
  limit?: number;
  /** Only peers that announce this capability. */
  capability?: string;
}

/** Events a {@linkcode P2PClient} emits. */
export interface ClientEvents extends Record<string, unknown> {
  /** Data from the server: echoes, routed Data from other peers (`fromId` set), server pushes. */
  data: { from: SocketAddr; fromId: string | null; payload: Json; message: Message };
  /** The server said Disconnect, went silent past `connectionTimeout`, or the client closed. */
  disconnected: { reason: "disconnect" | "timeout" | "closed" };
  /**
   * The server sent an Error that answered no pending request, or a listener of another event threw
   * (`code` `"listener_error"`, a {@linkcode ListenerError}; also logged at error level).
   */
  error: ErrorPayload | ListenerError;
  /** A direct connection to an introduced peer is up (we asked with `introduce()`, or the other side did). */
  direct: DirectPeer;
  /**
   * A message went out again because nothing answered it yet: a reliable message retransmitted (the
   * handshake, Data, ...), or a Ping or discovery request tried again. `tries` counts the first send.
   */
  retry: { to: string; messageType: MessageType; tries: number };
  /**
   * The server classified our NAT (or said it cannot): see `P2PClient.classifyNat`. `reason` is null when
   * the check ran, else `unavailable` (the server has no alternate socket), `rate_limited` or `timeout`;
   * `suggestedKeepalive` the keepalive (s) the server suggests with it.
   */
  nat: {
    nat: NatClass;
    suggestedKeepalive: number | null;
    reason: "unavailable" | "rate_limited" | "timeout" | null;
  };
  /**
   * The server measured our NAT's binding lifetime (or said it cannot): see
   * `P2PClient.measureBindingLifetime`. `lifetimeMs` is the longest idle gap (ms) the binding survived
   * (`passedMs`; half the first gap when it survived none), `failedMs` the gap after which it had expired
   * (null: it survived every gap, so `lifetimeMs` is a lower bound), `suggestedKeepalive` the keepalive (s)
   * the server suggests with it and `keepalive` the one the client uses now. `reason` is null when it ran,
   * else `unavailable`, `rate_limited` or `timeout`.
   */
  natLifetime: {
    lifetimeMs: number | null;
    passedMs: number | null;
    failedMs: number | null;
    suggestedKeepalive: number | null;
    keepalive: number | null;
    reason: "unavailable" | "rate_limited" | "timeout" | null;
  };
}

/** A peer reached directly, without the server, after an introduction. */
export interface DirectPeer {
  /** Its node id. */
  nodeId: string;
  /** The address the punch found, `"ip:port"`. */
  addr: string;
  /** The strategy the pair's NAT classifications chose, as `introduce()` resolved (absent in `directPeers`). */
  strategy?: Strategy;
}
