/**
 * Prometheus text exposition (format 0.0.4) of a {@linkcode StatsSnapshot}. Pure: the core counts, this
 * module only formats.
 *
 * @module
 */
import type { HistogramSnapshot, StatsSnapshot } from "./core/stats.ts";

/** The `Content-Type` of {@linkcode formatMetrics}'s output. */
export const METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

type Labels = Record<string, string>;

class Exposition {
  readonly lines: string[] = [];

  family(name: string, type: "counter" | "gauge" | "histogram", help: string): void {
    this.lines.push(`# HELP ${name} ${help.replaceAll("\\", "\\\\").replaceAll("\n", "\\n")}`);
    this.lines.push(`# TYPE ${name} ${type}`);
  }

  sample(name: string, value: number, labels: Labels = {}): void {
    const entries = Object.entries(labels);
    const text = entries.length === 0
      ? ""
      : `{${entries.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(",")}}`;
    this.lines.push(`${name}${text} ${formatValue(value)}`);
  }

  simple(name: string, type: "counter" | "gauge", help: string, value: number): void {
    this.family(name, type, help);
    this.sample(name, value);
  }

  labelled(
    name: string,
    type: "counter" | "gauge",
    help: string,
    label: string,
    values: Record<string, number>,
  ) {
    this.family(name, type, help);
    for (const [k, v] of Object.entries(values)) this.sample(name, v, { [label]: k });
  }

  histogram(name: string, help: string, h: HistogramSnapshot): void {
    this.family(name, "histogram", help);
    h.bounds.forEach((bound, i) => {
      this.sample(`${name}_bucket`, h.cumulative[i] ?? 0, { le: formatValue(bound) });
    });
    this.sample(`${name}_sum`, h.sum);
    this.sample(`${name}_count`, h.count);
  }
}

function escapeLabel(value: string): string {
  return value.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("\n", "\\n");
}

function formatValue(value: number): string {
  if (value === Infinity) return "+Inf";
  if (value === -Infinity) return "-Inf";
  if (Number.isNaN(value)) return "NaN";
  return String(value);
}

/** Process memory, in bytes, as `Deno.memoryUsage()` reports it. */
export interface ProcessMemory {
  /** Resident set size. */
  rss: number;
  /** JavaScript heap in use. */
  heapUsed: number;
  /** JavaScript heap allocated. */
  heapTotal: number;
}

/** The process as the standard `process_*` metrics describe it (sampled by the shell, formatted here). */
export interface ProcessSample extends ProcessMemory {
  /** User and system CPU time used, seconds. */
  cpuSeconds: number;
  /** When the process started, unix seconds. */
  startTimeSeconds: number;
  /** Open file descriptors, or null where they cannot be counted (see `docs/`). */
  openFds: number | null;
  /** The limit on open file descriptors, or null where unknown. */
  maxFds: number | null;
}

/** Options of {@linkcode formatMetrics}. */
export interface MetricsOptions {
  /** The process's CPU, memory, start time and descriptors: the `process_*` families. @default {none} */
  process?: ProcessMemory | ProcessSample;
  /** Labels of `p2p_build_info` (e.g. `{ version: "0.1.0", deno: "2.9.6" }`). @default {none} */
  build?: Record<string, string>;
}

/**
 * Formats every counter and gauge of a snapshot (and, when given, the process and the build) as Prometheus
 * text, each family with `# HELP` and `# TYPE`.
 *
 * @example
 * ```ts
 * import { formatMetrics } from "./metrics.ts";
 * import { Stats } from "./core/stats.ts";
 * const text = formatMetrics(new Stats(0).snapshot(1000, { handshaking: 0, authenticated: 2 }, {
 *   handshaking: 0,
 *   connected: 0,
 * }), { build: { version: "0.1.0" } });
 * if (!text.includes('p2p_peers{state="authenticated"} 2\n')) throw new Error(text);
 * if (!text.includes('p2p_build_info{version="0.1.0"} 1\n')) throw new Error(text);
 * ```
 */
export function formatMetrics(s: StatsSnapshot, options: MetricsOptions = {}): string {
  const out = new Exposition();
  if (options.build) {
    const nat = s.natChecks;
    out.simple(
      "p2p_nat_checks_requested_total",
      "counter",
      "NAT classification requests received.",
      nat.requested,
    );
    out.simple(
      "p2p_nat_checks_refused_total",
      "counter",
      "NAT classification requests refused.",
      nat.refused,
    );
    out.simple("p2p_nat_checks_completed_total", "counter", "NAT classifications completed.", nat.completed);
    out.simple(
      "p2p_nat_probes_total",
      "counter",
      "NAT filtering probes sent from alternate sockets.",
      nat.probes,
    );
    out.simple(
      "p2p_nat_probes_seen_total",
      "counter",
      "NAT filtering probes peers reported seeing.",
      nat.seen,
    );
    out.simple(
      "p2p_nat_map_answers_total",
      "counter",
      "NAT mapping Pings answered on alternate sockets.",
      nat.mapAnswers,
    );
    const life = s.natLifetimes;
    const lifetime: [string, string, number][] = [
      ["requests", "Binding lifetime measurement requests received.", life.requested],
      ["refused", "Binding lifetime measurement requests refused.", life.refused],
      ["opened", "Binding lifetime measurements whose sacrificial socket opened.", life.opened],
      ["completed", "Binding lifetime measurements completed.", life.completed],
      ["expired", "Binding lifetime measurements ended by an unanswered probe.", life.expired],
      ["probes", "Binding lifetime probes sent, resends included.", life.probes],
      ["probe_resends", "Binding lifetime probes resent after 1 s unanswered.", life.resent],
      ["probes_answered", "Binding lifetime probes answered.", life.answered],
    ];
    for (const [name, help, value] of lifetime) {
      out.simple(`p2p_nat_lifetime_${name}_total`, "counter", help, value);
    }
    out.family("p2p_build_info", "gauge", "Always 1; the labels say which build of p2p_server runs.");
    out.sample("p2p_build_info", 1, options.build);
  }
  const p = options.process;
  if (p) {
    if ("cpuSeconds" in p) {
      out.simple(
        "process_cpu_seconds_total",
        "counter",
        "Total user and system CPU time spent in seconds.",
        p.cpuSeconds,
      );
    }
    out.simple("process_resident_memory_bytes", "gauge", "Resident memory size in bytes.", p.rss);
    if ("cpuSeconds" in p) {
      out.simple(
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since unix epoch in seconds.",
        p.startTimeSeconds,
      );
      if (p.openFds !== null) {
        out.simple("process_open_fds", "gauge", "Number of open file descriptors.", p.openFds);
      }
      if (p.maxFds !== null) {
        out.simple("process_max_fds", "gauge", "Maximum number of open file descriptors.", p.maxFds);
      }
    }
    out.simple("p2p_heap_used_bytes", "gauge", "JavaScript heap in use.", p.heapUsed);
    out.simple("p2p_heap_total_bytes", "gauge", "JavaScript heap allocated.", p.heapTotal);
  }
  out.simple("p2p_datagrams_received_total", "counter", "UDP datagrams received.", s.datagramsReceived);
  out.simple("p2p_datagrams_sent_total", "counter", "UDP datagrams sent.", s.datagramsSent);
  out.simple("p2p_bytes_received_total", "counter", "Bytes received in UDP datagrams.", s.bytesReceived);
  out.simple("p2p_bytes_sent_total", "counter", "Bytes sent in UDP datagrams.", s.bytesSent);
  out.simple("p2p_datagrams_processed_total", "counter", "Datagrams decoded and acted on.", s.processed);
  out.labelled(
    "p2p_messages_received_total",
    "counter",
    "Decoded messages received, by type.",
    "type",
    s.messagesReceived,
  );
  out.labelled(
    "p2p_messages_sent_total",
    "counter",
    "Messages sent, by type (retransmissions included).",
    "type",
    s.messagesSent,
  );
  out.simple("p2p_acks_sent_total", "counter", "Acks sent.", s.acksSent);
  out.simple(
    "p2p_acks_received_total",
    "counter",
    "Acks received that matched a waiting message.",
    s.acksReceived,
  );
  out.simple("p2p_retransmissions_total", "counter", "Reliable messages sent again.", s.retransmissions);
  out.labelled(
    "p2p_give_ups_total",
    "counter",
    "Reliable messages given up, by reason (deadline, tries, queue_full).",
    "reason",
    s.giveUpsByReason,
  );
  out.simple("p2p_nacks_sent_total", "counter", "Retransmit requests sent for gaps.", s.nacksSent);
  out.simple("p2p_nacks_received_total", "counter", "Retransmit requests received.", s.nacksReceived);
  out.simple("p2p_nack_resends_total", "counter", "Datagrams resent on a Retransmit request.", s.nackResends);
  out.simple(
    "p2p_messages_fragmented_total",
    "counter",
    "Messages cut into fragments.",
    s.messagesFragmented,
  );
  out.simple("p2p_fragments_sent_total", "counter", "Fragments sent (first sends).", s.fragmentsSent);
  out.simple(
    "p2p_messages_reassembled_total",
    "counter",
    "Whole messages reassembled from fragments.",
    s.messagesReassembled,
  );
  out.simple(
    "p2p_reassembly_expired_total",
    "counter",
    "Partly reassembled messages discarded after delivery_timeout.",
    s.reassemblyExpired,
  );
  out.simple(
    "p2p_amplification_limited_total",
    "counter",
    "Datagrams not sent: they would exceed 3x the bytes received from an unvalidated address.",
    s.amplificationLimited,
  );
  out.simple(
    "p2p_cookie_challenges_total",
    "counter",
    "HandshakeRequests answered with a stateless cookie challenge.",
    s.cookieChallenges,
  );
  out.simple(
    "p2p_cookies_accepted_total",
    "counter",
    "HandshakeRequests with a valid cookie.",
    s.cookiesAccepted,
  );
  out.simple(
    "p2p_roamed_total",
    "counter",
    "Authenticated sessions moved to a new address after a path check.",
    s.roamed,
  );
  out.simple(
    "p2p_half_open_expired_total",
    "counter",
    "Half-open peers removed at half_open_timeout.",
    s.halfOpenExpired,
  );
  out.simple(
    "p2p_ordered_held_total",
    "counter",
    "Ordered messages held back until an earlier one arrived.",
    s.orderedHeld,
  );
  out.simple("p2p_duplicates_total", "counter", "Reliable messages received again.", s.duplicates);
  out.simple(
    "p2p_sends_too_large_total",
    "counter",
    "Messages not sent because they exceed one UDP datagram.",
    s.sendsTooLarge,
  );
  out.labelled("p2p_dropped_total", "counter", "Datagrams dropped, by reason.", "reason", s.drops);
  out.simple("p2p_stun_requests_total", "counter", "STUN requests received.", s.stun.requests);
  out.simple("p2p_stun_responses_total", "counter", "STUN Binding success responses sent.", s.stun.responses);
  out.simple(
    "p2p_stun_change_requests_total",
    "counter",
    "STUN Binding success responses sent from another socket, as a CHANGE-REQUEST asked (RFC 5780).",
    s.stun.changeRequests,
  );
  out.labelled(
    "p2p_stun_errors_total",
    "counter",
    "STUN error responses sent, by reason (bad_request 400, unknown_attribute 420).",
    "reason",
    s.stun.errors,
  );
  out.family(
    "p2p_handshakes_total",
    "counter",
    "Handshakes from peers, by result (and error code when failed).",
  );
  out.sample("p2p_handshakes_total", s.handshakesOk, { result: "ok" });
  for (const [code, n] of Object.entries(s.handshakesFailed)) {
    out.sample("p2p_handshakes_total", n, { result: "failed", code });
  }
  out.simple(
    "p2p_timeouts_total",
    "counter",
    "Peers removed after connection_timeout of silence.",
    s.timeouts,
  );
  out.simple("p2p_disconnects_total", "counter", "Peers that sent Disconnect.", s.disconnects);
  out.labelled("p2p_peers", "gauge", "Peers registered with this server, by state.", "state", s.peers);
  out.labelled(
    "p2p_links",
    "gauge",
    "Handshakes this server started towards others (sibling servers), by state.",
    "state",
    s.links,
  );
  out.simple("p2p_uptime_seconds", "gauge", "Seconds since the server started.", s.uptimeSeconds);
  out.histogram("p2p_rtt_seconds", "Round-trip time from Acks of messages sent once.", s.rttSeconds);
  out.histogram(
    "p2p_handshake_duration_seconds",
    "Time from a peer's HandshakeRequest to it being authenticated.",
    s.handshakeDurationSeconds,
  );
  const c = s.cluster;
  if (c) {
    out.simple(
      "p2p_cluster_up",
      "gauge",
      "1 while the shared directory (Redis) is reachable, else 0.",
      c.state === "ok" ? 1 : 0,
    );
    out.simple("p2p_cluster_remote_peers", "gauge", "Peers of other instances known here.", c.remotePeers);
    out.simple("p2p_cluster_instances", "gauge", "Other instances with peers.", c.instances);
    out.simple("p2p_cluster_redis_round_trips_total", "counter", "Pipelines sent to Redis.", c.roundTrips);
    out.simple("p2p_cluster_redis_commands_total", "counter", "Commands sent to Redis.", c.commands);
    out.simple(
      "p2p_cluster_directory_writes_total",
      "counter",
      "Directory entries written or released.",
      c.directoryWrites,
    );
    out.labelled(
      "p2p_cluster_messages_total",
      "counter",
      "Messages exchanged with other instances.",
      "direction",
      {
        out: c.messagesOut,
        in: c.messagesIn,
      },
    );
    out.simple("p2p_cluster_resyncs_total", "counter", "Full reads of the shared directory.", c.resyncs);
    out.simple(
      "p2p_cluster_conflicts_total",
      "counter",
      "Peers removed because another instance holds their id.",
      c.conflicts,
    );
    out.simple(
      "p2p_cluster_invalid_total",
      "counter",
      "Malformed entries or messages from Redis, ignored.",
      c.invalid,
    );
  }
  return out.lines.join("\n") + "\n";
}
