/**
 * Keys and authenticated sessions: the signed HandshakeRequest and HandshakeResponse (Ed25519 over the
 * claims, an X25519 exchange, HKDF to two MAC keys), the replay cache of signed requests, and the MAC of
 * every datagram of a running session.
 *
 * @module
 */
import { type AuthFields, encodeMessage, type Message, networkOf, type NodeInfo } from "../wire/mod.ts";
import type { Conn, KeyedPeer, LinkConn, PeerConn, Session } from "./peers.ts";
import { ReceiveWindow } from "./window.ts";
import type { Core } from "./context.ts";
import { CLIENT_AUTH_CODES, ERROR_CODES } from "./types.ts";
import {
  fromBase64Url,
  type Identity,
  nodeIdForKey,
  ReplayCache,
  requestSignedBytes,
  responseSignedBytes,
  toBase64Url,
} from "./auth.ts";
import { hkdf, type KeyPair, type MacKey, signEd25519, verifyEd25519 } from "../deps/crypto.ts";

/** Why a HandshakeRequest's key or signature is refused: the code and the text of the Error reply. */
export interface AuthRefusal {
  /** The `code` of the Error. */
  code: string;
  /** Its `error` text. */
  error: string;
}

/** The keys of this endpoint and the sessions they opened. */
export class Sessions {
  readonly #core: Core;
  readonly #identity: Identity | null;
  #responseKey: ResponseKey | null = null;
  /** Authenticated sessions by session id (servers: to recognise a peer that roamed to a new address). */
  readonly #bySid = new Map<string, Conn>();
  readonly #replays: ReplayCache;

  /**
   * @param core The shared state.
   * @param identity This endpoint's key-based identity, or null.
   */
  constructor(core: Core, identity: Identity | null, replayCacheSize?: number) {
    this.#core = core;
    this.#identity = identity;
    this.#replays = new ReplayCache(replayCacheSize);
  }

  /** Whether this endpoint has a key. */
  get keyed(): boolean {
    return this.#identity !== null;
  }

  /** The connection of the session whose id is `sid`, if any. */
  bySid(sid: string): Conn | undefined {
    return this.#bySid.get(sid);
  }

  /**
   * Checks a HandshakeRequest's key and signature against the policy. Returns what it proved (null for an
   * unkeyed request the policy accepts), or why it is refused (the caller answers with the Error).
   */
  verifyRequest(now: number, info: NodeInfo, msg: Message): KeyedPeer | null | AuthRefusal {
    const refuse = (code: string, why: string): AuthRefusal => ({ code, error: `handshake failed: ${why}` });
    const auth = msg.auth;
    const allow = this.#core.config.authAllowKeys;
    if (!auth) {
      if (this.#core.config.auth === "required" || allow !== null) {
        return refuse(ERROR_CODES.authRequired, "authentication required: sign the request with a node key");
      }
      // Version-8 ids are derived from keys: without the key, nobody may claim one.
      if (info.id[14] === "8") return refuse(ERROR_CODES.badIdentity, "a key-derived node id needs its key");
      return null;
    }
    const key = fromBase64Url(auth.key, 32);
    const dh = fromBase64Url(auth.dh, 32);
    const sig = fromBase64Url(auth.sig, 64);
    if (!key || !dh || !sig || typeof auth.to !== "string") {
      return refuse(ERROR_CODES.badAuth, "malformed auth");
    }
    if (nodeIdForKey(key) !== info.id) {
      return refuse(ERROR_CODES.badIdentity, "node id is not the id of its key");
    }
    if (allow !== null && !allow.includes(auth.key)) return refuse(ERROR_CODES.notAllowed, "key not allowed");
    if (auth.to !== "*" && auth.to !== this.#core.node.id) {
      return refuse(ERROR_CODES.wrongServer, "request signed for another server");
    }
    const skew = this.#core.config.authMaxSkew;
    if (Math.abs(Math.floor(now / 1000) - msg.timestamp) > skew) {
      return refuse(ERROR_CODES.stale, `timestamp more than ${skew} s off`);
    }
    const claims = requestSignedBytes({
      nodeId: info.id,
      networkId: networkOf(info),
      listenAddr: info.listen_addr,
      to: auth.to,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh: auth.dh,
    });
    if (!verifyEd25519(key, claims, sig)) return refuse(ERROR_CODES.badSignature, "bad signature");
    // The rule the replay cache cannot be flushed out of: while a key's node is registered, a request of that
    // key must not be older than the one it registered with, nor one of that second already accepted.
    const held = this.#core.table.byId.get(info.id)?.peer.keyed;
    const same = held?.keyText === auth.key ? held : undefined;
    if (same && (msg.timestamp < same.timestamp || same.sameSecond.includes(msg.id))) {
      return refuse(ERROR_CODES.replay, "replayed request (not newer than this node's last handshake)");
    }
    // Recorded only once verified, so forged requests cannot fill the cache.
    // Remembered at least as long as its timestamp keeps it fresh.
    const remember = Math.max(now + 2 * skew * 1000, (msg.timestamp + skew + 1) * 1000);
    if (!this.#replays.add(msg.id, remember, now)) {
      return refuse(ERROR_CODES.replay, "replayed request");
    }
    const sameSecond = same?.timestamp === msg.timestamp ? [...same.sameSecond, msg.id].slice(-8) : [msg.id];
    return { publicKey: key, keyText: auth.key, dh, requestId: msg.id, timestamp: msg.timestamp, sameSecond };
  }

  /**
   * Whether a MAC'd datagram of `session` is not a replay. Unreliable datagrams (not Acks, which repeat the
   * acked number) are checked against the session's sliding window of sequence numbers: a valid MAC proves
   * the session's peer sent it, not that it sent it once. Reliable ones are left to their receive window,
   * which acks a retransmission again without processing it.
   */
  fresh(session: Session, msg: Message): boolean {
    if (msg.requires_ack || msg.message_type === "Ack" || msg.sequence_number === null) return true;
    return (session.replay ??= new ReceiveWindow()).accept(msg.sequence_number);
  }

  /** Signs our HandshakeRequest (its id and timestamp are final here) with a fresh X25519 key. */
  signRequest(conn: LinkConn, msg: Message): AuthFields {
    const link = conn.link;
    const identity = this.#identity!;
    const eph = link.eph = this.#core.generateX25519();
    link.requestId = msg.id;
    const dh = toBase64Url(eph.publicKey);
    const to = link.pinnedKey ? nodeIdForKey(link.pinnedKey) : "*";
    const claims = requestSignedBytes({
      nodeId: link.local.id,
      networkId: networkOf(link.local),
      listenAddr: link.local.listen_addr,
      to,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh,
    });
    return {
      key: identity.publicKeyText,
      dh,
      sig: toBase64Url(signEd25519(identity.privateKey, claims)),
      to,
    };
  }

  /**
   * Signs our HandshakeResponse to a keyed peer and prepares the session its X25519 exchange yields; the
   * session starts (`activate`) once the response itself is encoded, since the peer gets its keys from it.
   */
  signResponse(
    now: number,
    conn: PeerConn,
    keyed: KeyedPeer,
    msg: Message,
  ): { auth: AuthFields; activate: () => void } | null {
    const identity = this.#identity!;
    const eph = this.responseKey(now);
    const shared = this.#core.deriveX25519(eph.pair.privateKey, keyed.dh);
    if (!shared) return null;
    const sid = msg.id.replaceAll("-", "").slice(0, 16);
    const dh = eph.text;
    const claims = responseSignedBytes({
      serverId: this.#core.node.id,
      networkId: conn.peer.network,
      requesterId: conn.peer.info.id,
      requestId: keyed.requestId,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh,
      sid,
    });
    const keys = sessionKeys(shared, keyed.requestId, msg.id);
    return {
      auth: {
        key: identity.publicKeyText,
        dh,
        sig: toBase64Url(signEd25519(identity.privateKey, claims)),
        sid,
      },
      activate: () => {
        this.endSession(conn);
        conn.session = {
          sid,
          sendKey: this.#core.macKey(keys.s2c),
          recvKey: this.#core.macKey(keys.c2s),
          remoteKey: keyed.publicKey,
        };
        this.#bySid.set(sid, conn);
      },
    };
  }

  /**
   * The X25519 key a server answers keyed handshakes with: drawn afresh after {@linkcode RESPONSE_KEY_USES}
   * handshakes or {@linkcode RESPONSE_KEY_LIFETIME_MS}, whichever comes first, instead of once per handshake
   * (its generation was about a tenth of a keyed handshake's cost). Each session still gets its own keys: the
   * requester's X25519 key is fresh and the two message ids salt the derivation. What is given up is forward
   * secrecy within that window: whoever takes the server's memory during it can derive the sessions
   * started in it, as with any session still running (docs/security.md).
   */
  responseKey(now: number): ResponseKey {
    let key = this.#responseKey;
    if (!key || key.uses >= RESPONSE_KEY_USES || now >= key.until || now < key.since) {
      const pair = this.#core.generateX25519();
      key = {
        pair,
        text: toBase64Url(pair.publicKey),
        since: now,
        until: now + RESPONSE_KEY_LIFETIME_MS,
        uses: 0,
      };
      this.#responseKey = key;
    }
    key.uses++;
    return key;
  }

  /**
   * A client checks the server's signed HandshakeResponse. Returns null when it may go on (the session is
   * set up when the response was keyed), or the failure code.
   */
  verifyResponse(conn: LinkConn, msg: Message, serverInfo: NodeInfo): string | null {
    const link = conn.link;
    const auth = msg.auth;
    if (!auth || !link.eph || !link.requestId) {
      return link.pinnedKey ? CLIENT_AUTH_CODES.serverUnauthenticated : null;
    }
    const key = fromBase64Url(auth.key, 32);
    const dh = fromBase64Url(auth.dh, 32);
    const sig = fromBase64Url(auth.sig, 64);
    const sid = auth.sid;
    if (!key || !dh || !sig || typeof sid !== "string" || !/^[0-9a-f]{16}$/.test(sid)) {
      return CLIENT_AUTH_CODES.badServerSignature;
    }
    if (link.pinnedKey && !equalBytes(link.pinnedKey, key)) return CLIENT_AUTH_CODES.serverKeyMismatch;
    if (nodeIdForKey(key) !== serverInfo.id) return CLIENT_AUTH_CODES.badServerSignature;
    const claims = responseSignedBytes({
      serverId: serverInfo.id,
      networkId: networkOf(serverInfo),
      requesterId: link.local.id,
      requestId: link.requestId,
      timestamp: msg.timestamp,
      messageId: msg.id,
      dh: auth.dh,
      sid,
    });
    if (!verifyEd25519(key, claims, sig)) return CLIENT_AUTH_CODES.badServerSignature;
    const shared = this.#core.deriveX25519(link.eph.privateKey, dh);
    if (!shared) return CLIENT_AUTH_CODES.badServerSignature;
    const keys = sessionKeys(shared, link.requestId, msg.id);
    this.endSession(conn);
    conn.session = {
      sid,
      sendKey: this.#core.macKey(keys.c2s),
      recvKey: this.#core.macKey(keys.s2c),
      remoteKey: key,
    };
    return null;
  }

  endSession(conn: Conn): void {
    const session = conn.session;
    if (!session) return;
    if (this.#bySid.get(session.sid) === conn) this.#bySid.delete(session.sid);
    conn.session = null;
  }

  /** Encodes a message for a connection: with `sid` and a MAC in an authenticated session, else as usual. */
  encodeOn(conn: Conn, msg: Message, sum: boolean): Uint8Array {
    const session = conn.session;
    if (!session) return encodeMessage(msg, sum);
    msg.sid = session.sid;
    return encodeMessage(msg, false, (body) => macHex(session.sendKey, body));
  }

  /**
   * What may arrive without a MAC in a running session: HandshakeRequests (signed, or refused when they would
   * displace a keyed peer), a repeated HandshakeResponse, and the Ack of our own HandshakeRequest (both sent
   * before the remote had keys, and possibly late).
   */
  macExempt(conn: Conn, msg: Message): boolean {
    const type = msg.message_type;
    if (type === "HandshakeRequest" || type === "HandshakeResponse") return true;
    return type === "Ack" && conn.link !== null && msg.ack_for === conn.link.requestId;
  }

  macOk(key: MacKey, bytes: Uint8Array, msg: Message): boolean {
    const mac = msg.mac;
    if (!mac) return false;
    return constantTimeEqualText(macHex(key, bytes, mac.end), mac.tag);
  }
}

/** Most keyed handshakes a server answers with one X25519 key (see `#responseKey`). */
const RESPONSE_KEY_USES = 1_024;

/** Longest a server answers keyed handshakes with one X25519 key, in ms (see `#responseKey`). */
const RESPONSE_KEY_LIFETIME_MS = 60_000;

/** The server's current X25519 key for HandshakeResponses, its base64url text, and its period of use. */
interface ResponseKey {
  pair: KeyPair;
  text: string;
  since: number;
  until: number;
  uses: number;
}

const utf8 = new TextEncoder();
const SESSION_INFO = utf8.encode("p2p_server session v1");

/** The two MAC keys of a session from its X25519 secret and the two handshake message ids. */
function sessionKeys(
  shared: Uint8Array,
  requestId: string,
  responseId: string,
): { c2s: Uint8Array; s2c: Uint8Array } {
  const okm = hkdf(shared, utf8.encode(`${requestId}|${responseId}`), SESSION_INFO, 64);
  return { c2s: okm.subarray(0, 32), s2c: okm.subarray(32) };
}

/** The 128-bit MAC tag (hex) of a datagram body, `bytes[0, end)` then its closing brace. */
function macHex(key: MacKey, bytes: Uint8Array, end = bytes.length - 1): string {
  return key.hex(bytes, end, 0x7d).slice(0, 32);
}

function constantTimeEqualText(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  for (let i = 0; i < a.length && i < b.length; i++) diff |= a.charCodeAt(i) ^ b.charCodeAt(i);
  return diff === 0;
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  let diff = 0;
  for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
  return diff === 0;
}
