/**
 * The rooms of the core, built and wired together once: each owns a part of the protocol (sessions, the
 * send path, handshakes, discovery, introductions, the NAT classification and binding lifetime exchanges, ...) and holds the
 * others it needs. The endpoint (src/core/endpoint.ts) coordinates them.
 *
 * @module
 */
import type { Message } from "../wire/mod.ts";
import type { Conn } from "./peers.ts";
import type { Core } from "./context.ts";
import type { Identity } from "./auth.ts";
import { Sessions } from "./sessions.ts";
import { SendPath } from "./send.ts";
import { Lifecycle } from "./lifecycle.ts";
import { Streams } from "./streams.ts";
import { ConnTimers } from "./conn_timers.ts";
import { ClusterState } from "./cluster_state.ts";
import { Relay } from "./relay.ts";
import { Handshakes } from "./handshake.ts";
import { Roaming } from "./roaming.ts";
import { Discovery } from "./discovery.ts";
import { Introductions } from "./introductions.ts";
import { ClusterMirror } from "./cluster_mirror.ts";
import { Control } from "./control.ts";
import { Requests } from "./requests.ts";
import { Ticks } from "./ticks.ts";
import { NatChecks } from "./nat_check.ts";
import { NatLifetimes } from "./nat_lifetime.ts";
import type { Datagram, Outcome } from "./outcome.ts";

/** Every room of one endpoint. */
export interface Rooms {
  sessions: Sessions;
  send: SendPath;
  life: Lifecycle;
  streams: Streams;
  connTimers: ConnTimers;
  cluster: ClusterState;
  relay: Relay;
  hs: Handshakes;
  roaming: Roaming;
  disc: Discovery;
  intro: Introductions;
  mirror: ClusterMirror;
  control: Control;
  requests: Requests;
  ticks: Ticks;
  nat: NatChecks;
  lifetime: NatLifetimes;
}

/**
 * Builds the rooms on `core`. `dispatch` hands a message to the room that owns its type (the streams room
 * calls it for messages that were held for ordering or reassembly).
 */
export function buildRooms(
  core: Core,
  identity: Identity | null,
  replayCacheSize: number | undefined,
  instance: string | null,
  dispatch: (dg: Datagram, conn: Conn | undefined, msg: Message) => Outcome,
): Rooms {
  const sessions = new Sessions(core, identity, replayCacheSize);
  const send = new SendPath(core, sessions);
  const life = new Lifecycle(core, sessions, send);
  const streams = new Streams(core, send, dispatch);
  // deno-lint-ignore prefer-const
  let relay: Relay;
  const connTimers = new ConnTimers(
    core,
    send,
    life,
    streams,
    (now, conn, id) => relay.relayDone(now, conn, id, false),
  );
  const cluster = new ClusterState(core, instance);
  relay = new Relay(core, send, connTimers, cluster);
  const hs = new Handshakes(core, sessions, send, life, connTimers, cluster);
  const roaming = new Roaming(core, sessions);
  const nat = new NatChecks(core, send);
  const lifetime = new NatLifetimes(core, send);
  // deno-lint-ignore prefer-const
  let intro: Introductions;
  const disc = new Discovery(
    core,
    send,
    cluster,
    (dg, conn, target) => intro.introduce(dg, conn, target),
    (now, from, card) => intro.introduced(now, from, card),
    nat,
    lifetime,
  );
  intro = new Introductions(core, send, connTimers, cluster, hs, disc);
  const mirror = new ClusterMirror(core, cluster, send, life, connTimers, relay);
  const control = new Control(core, send, life, relay, hs, intro, nat, lifetime);
  const requests = new Requests(core, send, connTimers);
  const ticks = new Ticks(core);
  return {
    sessions,
    send,
    life,
    streams,
    connTimers,
    cluster,
    relay,
    hs,
    roaming,
    disc,
    intro,
    mirror,
    control,
    requests,
    ticks,
    nat,
    lifetime,
  };
}
