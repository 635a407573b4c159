/**
 * Counters kept where the protocol logic runs. {@linkcode Stats.snapshot} returns a fresh, plain object;
 * exporters only format it.
 *
 * @module
 */
import { MESSAGE_TYPES, type MessageType } from "../wire/mod.ts";

/** Drop reasons meaning the datagram's bytes could not be decoded or validated (damaged or malformed). */
export const MALFORMED_DROP_REASONS = [
  "oversize",
  "invalid_utf8",
  "invalid_json",
  "not_an_object",
  "bad_field",
  "unknown_type",
  "bad_checksum",
  "too_deep",
  "bad_payload",
  "stun_malformed",
  "stun_bad_fingerprint",
] as const;

/** Why a datagram was not processed. */
export const DROP_REASONS = [
  ...MALFORMED_DROP_REASONS,
  "not_registered",
  "unexpected",
  "buffer_full",
  "rate_limited",
  "banned",
  "internal_error",
  "bad_mac",
  "replayed",
  "stun_unknown_method",
  "stun_indication",
  "stun_response",
  "alternate_socket",
  "nat_check_token",
  "nat_check_late",
  "nat_check_repeat",
  "nat_life_token",
  "nat_life_address",
  "nat_life_repeat",
] as const;

/** One of {@linkcode DROP_REASONS}. */
export type DropReason = typeof DROP_REASONS[number];

/** Why a STUN request was answered with an error response: 400 Bad Request, 420 Unknown Attribute. */
export const STUN_ERROR_REASONS = ["bad_request", "unknown_attribute"] as const;

/** One of {@linkcode STUN_ERROR_REASONS}. */
export type StunErrorReason = typeof STUN_ERROR_REASONS[number];

/**
 * STUN on the main port and the alternate sockets (see docs/protocol.md#stun); its drops are among the
 * `stun_*` drop reasons.
 */
export interface StunStats {
  /** STUN requests received (RFC 3489 ones included), whatever became of them. */
  requests: number;
  /** Binding success responses sent. */
  responses: number;
  /** Of those, the ones sent from another socket, as a CHANGE-REQUEST asked (RFC 5780). */
  changeRequests: number;
  /** Error responses sent, by reason. */
  errors: Record<StunErrorReason, number>;
}

/** The NAT classification exchange (see docs/protocol.md#the-classification-exchange). */
export interface NatCheckStats {
  /** Classification requests received (server) . */
  requested: number;
  /** Of those, refused (no alternate socket, too soon, too many in progress). */
  refused: number;
  /** Checks completed (the result sent). */
  completed: number;
  /** Filtering probes sent from the alternate sockets. */
  probes: number;
  /** Filtering probes the peers reported seeing. */
  seen: number;
  /** Mapping Pings answered on the alternate sockets. */
  mapAnswers: number;
}

/** The binding lifetime exchange (server role): see src/core/nat_lifetime.ts. */
export interface NatLifetimeStats {
  /** Measurement requests received. */
  requested: number;
  /** Of those, refused (not offered, too soon, too many under way). */
  refused: number;
  /** Measurements whose sacrificial socket opened (its first Ping arrived). */
  opened: number;
  /** Measurements completed (the result sent). */
  completed: number;
  /** Of those, ended by a probe that went unanswered (the binding expired within a gap). */
  expired: number;
  /** Probes sent to sacrificial sockets, resends included. */
  probes: number;
  /** Of those, resends (the first try went unanswered for 1 s). */
  resent: number;
  /** Probes answered. */
  answered: number;
}

/** Why a reliable message was given up. */
export const GIVE_UP_REASONS = ["deadline", "tries", "queue_full", "closed"] as const;

/** One of {@linkcode GIVE_UP_REASONS}. */
export type GiveUpReason = typeof GIVE_UP_REASONS[number];

/** A point-in-time copy of every counter and gauge. */
export interface StatsSnapshot {
  /** Seconds since the endpoint started. */
  uptimeSeconds: number;
  /** Peers registered with this endpoint, by state. */
  peers: { handshaking: number; authenticated: number };
  /** Handshakes this endpoint started towards others (client role, sibling servers), by state. */
  links: { handshaking: number; connected: number };
  /** Datagrams received, all included. Equals `processed + duplicates + droppedTotal`. */
  datagramsReceived: number;
  /** Datagrams decoded and acted on. */
  processed: number;
  /** Datagrams sent. */
  datagramsSent: number;
  /** Bytes received. */
  bytesReceived: number;
  /** Bytes sent. */
  bytesSent: number;
  /** Decoded messages received, by type. */
  messagesReceived: Record<MessageType, number>;
  /** Messages sent, by type (retransmissions included). */
  messagesSent: Record<MessageType, number>;
  /** Acks sent. */
  acksSent: number;
  /** Acks received that matched a waiting message. */
  acksReceived: number;
  /** Reliable messages sent again after a wait. */
  retransmissions: number;
  /** Reliable messages given up (handshakes included). Equals the sum of `giveUpsByReason`. */
  giveUps: number;
  /** Reliable messages given up, by reason. */
  giveUpsByReason: Record<GiveUpReason, number>;
  /** `Retransmit` requests sent for gaps in a peer's reliable stream. */
  nacksSent: number;
  /** `Retransmit` requests received. */
  nacksReceived: number;
  /** Datagrams resent because a `Retransmit` asked for them. */
  nackResends: number;
  /** Messages cut into fragments. */
  messagesFragmented: number;
  /** Fragments sent (first sends; resends count as retransmissions). */
  fragmentsSent: number;
  /** Whole messages reassembled from fragments. */
  messagesReassembled: number;
  /** Partly reassembled messages discarded after `delivery_timeout`. */
  reassemblyExpired: number;
  /** Messages delivered late, after an earlier ordered message they waited for. */
  orderedHeld: number;
  /** Datagrams not sent because they would exceed 3x the bytes received from an unvalidated address. */
  amplificationLimited: number;
  /** Kept answers sent again because their reliable request came again (the first answer was lost). */
  answersReplayed: number;
  /**
   * Sibling discovery: ports of `discovery_port_range` probed, sibling servers found there, and probes that
   * nothing answered (routine: not give-ups).
   */
  siblingProbes: { sent: number; found: number; unanswered: number };
  /** HandshakeRequests answered with a cookie challenge (no state kept). */
  cookieChallenges: number;
  /** HandshakeRequests accepted with a valid cookie. */
  cookiesAccepted: number;
  /** Half-open peers removed at `half_open_timeout`. */
  halfOpenExpired: number;
  /** Authenticated sessions moved to a new address after a path check. */
  roamed: number;
  /** Introductions made (each tells two peers about each other). */
  introductions: number;
  /** Reliable messages received again (re-acked, not re-processed). */
  duplicates: number;
  /** Messages not sent because they would not fit in one UDP datagram (65,507 bytes). */
  sendsTooLarge: number;
  /** Datagrams dropped, by reason. */
  drops: Record<DropReason, number>;
  /** Sum of `drops`. */
  droppedTotal: number;
  /** STUN requests and what was answered. */
  stun: StunStats;
  /** The NAT classification exchange. */
  natChecks: NatCheckStats;
  /** The binding lifetime exchange. */
  natLifetimes: NatLifetimeStats;
  /** Handshakes accepted (peers that became authenticated). */
  handshakesOk: number;
  /** Handshakes refused, by error code. */
  handshakesFailed: Record<string, number>;
  /** Peers removed after `connection_timeout` of silence. */
  timeouts: number;
  /** Peers that sent Disconnect. */
  disconnects: number;
  /** Round-trip time from Acks of messages sent once: last sample and smoothed (1/8 gain), ms; null if none. */
  rttMs: { last: number; smoothed: number } | null;
  /** Distribution of the same RTT samples, in seconds. */
  rttSeconds: HistogramSnapshot;
  /** Time from a peer's HandshakeRequest to it being authenticated, in seconds. */
  handshakeDurationSeconds: HistogramSnapshot;
  /** Cluster mode only: the shared directory's state and traffic. */
  cluster?: ClusterStatus;
}

/** Cluster mode: where an instance stands with the shared directory, and what it cost. */
export interface ClusterStatus {
  /** `connecting` (first contact pending), `ok`, `degraded` (Redis unreachable: local peers only), `closed`. */
  state: "connecting" | "ok" | "degraded" | "closed";
  /** This instance's id. */
  instance: string;
  /** Peers of other instances known here. */
  remotePeers: number;
  /** Other live instances with peers. */
  instances: number;
  /** Unix ms of the last state change. */
  since: number;
  /** Why Redis was last unreachable (never with credentials), or null. */
  lastError: string | null;
  /** Pipelines sent to Redis (one round trip each). */
  roundTrips: number;
  /** Commands in them. */
  commands: number;
  /** Directory entries written (claims, refreshes) and released. */
  directoryWrites: number;
  /** Messages to other instances (relayed Data, answers, introductions, evictions). */
  messagesOut: number;
  /** Messages from other instances. */
  messagesIn: number;
  /** Full reads of the shared directory. */
  resyncs: number;
  /** Peers removed here because the directory gave their id to another instance. */
  conflicts: number;
  /** Messages or records from Redis that were malformed and ignored. */
  invalid: number;
}

/** A histogram's state: cumulative counts per upper bound (Prometheus style; the last bound is +Infinity). */
export interface HistogramSnapshot {
  /** Upper bounds in ascending order, ending with `Infinity`. */
  bounds: number[];
  /** `cumulative[i]` samples were at most `bounds[i]`; the last equals `count`. */
  cumulative: number[];
  /** Sum of every sample. */
  sum: number;
  /** Number of samples. */
  count: number;
}

/** Upper bounds (seconds) of the RTT histogram. */
export const RTT_BUCKETS: readonly number[] = [
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
];

/** Upper bounds (seconds) of the handshake duration histogram. */
export const HANDSHAKE_BUCKETS: readonly number[] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** A fixed-bucket histogram; pure. */
export class Histogram {
  readonly #bounds: number[];
  readonly #counts: number[];
  #sum = 0;
  #count = 0;

  /** @param bounds Finite upper bounds in ascending order (`+Inf` is added). */
  constructor(bounds: readonly number[]) {
    this.#bounds = [...bounds, Infinity];
    this.#counts = this.#bounds.map(() => 0);
  }

  /** Records one sample. */
  observe(value: number): void {
    const i = this.#bounds.findIndex((b) => value <= b);
    this.#counts[i < 0 ? this.#counts.length - 1 : i]!++;
    this.#sum += value;
    this.#count++;
  }

  /** A fresh copy with cumulative counts. */
  snapshot(): HistogramSnapshot {
    let running = 0;
    return {
      bounds: [...this.#bounds],
      cumulative: this.#counts.map((c) => (running += c)),
      sum: this.#sum,
      count: this.#count,
    };
  }
}

function zeroes<K extends string>(keys: readonly K[]): Record<K, number> {
  return Object.fromEntries(keys.map((k) => [k, 0])) as Record<K, number>;
}

/** The mutable counters of one endpoint. */
export class Stats {
  /** Start time (ms). */
  readonly startedAt: number;
  datagramsReceived = 0;
  processed = 0;
  datagramsSent = 0;
  bytesReceived = 0;
  bytesSent = 0;
  readonly messagesReceived: Record<MessageType, number> = zeroes(MESSAGE_TYPES);
  readonly messagesSent: Record<MessageType, number> = zeroes(MESSAGE_TYPES);
  acksSent = 0;
  acksReceived = 0;
  retransmissions = 0;
  giveUps = 0;
  readonly giveUpsByReason: Record<GiveUpReason, number> = zeroes(GIVE_UP_REASONS);
  nacksSent = 0;
  nacksReceived = 0;
  nackResends = 0;
  messagesFragmented = 0;
  fragmentsSent = 0;
  messagesReassembled = 0;
  reassemblyExpired = 0;
  orderedHeld = 0;
  amplificationLimited = 0;
  answersReplayed = 0;
  readonly siblingProbes = { sent: 0, found: 0, unanswered: 0 };
  cookieChallenges = 0;
  cookiesAccepted = 0;
  halfOpenExpired = 0;
  roamed = 0;
  introductions = 0;
  duplicates = 0;
  sendsTooLarge = 0;
  readonly drops: Record<DropReason, number> = zeroes(DROP_REASONS);
  readonly stun: StunStats = {
    requests: 0,
    responses: 0,
    changeRequests: 0,
    errors: zeroes(STUN_ERROR_REASONS),
  };
  readonly natChecks: NatCheckStats = {
    requested: 0,
    refused: 0,
    completed: 0,
    probes: 0,
    seen: 0,
    mapAnswers: 0,
  };
  readonly natLifetimes: NatLifetimeStats = {
    requested: 0,
    refused: 0,
    opened: 0,
    completed: 0,
    expired: 0,
    probes: 0,
    resent: 0,
    answered: 0,
  };
  handshakesOk = 0;
  readonly handshakesFailed: Record<string, number> = {};
  timeouts = 0;
  disconnects = 0;
  rttLast = -1;
  rttSmoothed = -1;
  readonly rttHistogram: Histogram = new Histogram(RTT_BUCKETS);
  readonly handshakeHistogram: Histogram = new Histogram(HANDSHAKE_BUCKETS);

  /** @param now Start time (ms). */
  constructor(now: number) {
    this.startedAt = now;
  }

  /** Counts a dropped datagram. */
  drop(reason: DropReason): void {
    this.drops[reason]++;
  }

  /** Counts a reliable message given up. */
  giveUp(reason: GiveUpReason): void {
    this.giveUps++;
    this.giveUpsByReason[reason]++;
  }

  /** Counts a refused handshake. */
  handshakeFailed(code: string): void {
    this.handshakesFailed[code] = (this.handshakesFailed[code] ?? 0) + 1;
  }

  /** Records an RTT sample (ms). */
  rttSample(ms: number): void {
    this.rttLast = ms;
    this.rttSmoothed = this.rttSmoothed < 0 ? ms : this.rttSmoothed + (ms - this.rttSmoothed) / 8;
    this.rttHistogram.observe(ms / 1000);
  }

  /** Records how long a peer took from HandshakeRequest to authenticated (ms). */
  handshakeDuration(ms: number): void {
    this.handshakeHistogram.observe(Math.max(0, ms) / 1000);
  }

  /** A fresh copy of every counter, with the gauges the caller supplies. */
  snapshot(now: number, peers: StatsSnapshot["peers"], links: StatsSnapshot["links"]): StatsSnapshot {
    const drops = { ...this.drops };
    return {
      uptimeSeconds: Math.max(0, (now - this.startedAt) / 1000),
      peers: { ...peers },
      links: { ...links },
      datagramsReceived: this.datagramsReceived,
      processed: this.processed,
      datagramsSent: this.datagramsSent,
      bytesReceived: this.bytesReceived,
      bytesSent: this.bytesSent,
      messagesReceived: { ...this.messagesReceived },
      messagesSent: { ...this.messagesSent },
      acksSent: this.acksSent,
      acksReceived: this.acksReceived,
      retransmissions: this.retransmissions,
      giveUps: this.giveUps,
      giveUpsByReason: { ...this.giveUpsByReason },
      nacksSent: this.nacksSent,
      nacksReceived: this.nacksReceived,
      nackResends: this.nackResends,
      messagesFragmented: this.messagesFragmented,
      fragmentsSent: this.fragmentsSent,
      messagesReassembled: this.messagesReassembled,
      reassemblyExpired: this.reassemblyExpired,
      orderedHeld: this.orderedHeld,
      amplificationLimited: this.amplificationLimited,
      answersReplayed: this.answersReplayed,
      siblingProbes: { ...this.siblingProbes },
      cookieChallenges: this.cookieChallenges,
      cookiesAccepted: this.cookiesAccepted,
      halfOpenExpired: this.halfOpenExpired,
      roamed: this.roamed,
      introductions: this.introductions,
      duplicates: this.duplicates,
      sendsTooLarge: this.sendsTooLarge,
      drops,
      droppedTotal: Object.values(drops).reduce((a, b) => a + b, 0),
      stun: { ...this.stun, errors: { ...this.stun.errors } },
      natChecks: { ...this.natChecks },
      natLifetimes: { ...this.natLifetimes },
      handshakesOk: this.handshakesOk,
      handshakesFailed: { ...this.handshakesFailed },
      timeouts: this.timeouts,
      disconnects: this.disconnects,
      rttMs: this.rttLast < 0 ? null : { last: this.rttLast, smoothed: this.rttSmoothed },
      rttSeconds: this.rttHistogram.snapshot(),
      handshakeDurationSeconds: this.handshakeHistogram.snapshot(),
    };
  }
}
