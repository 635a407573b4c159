/**
 * What `P2PClient` does about its own NAT: the classification exchange (`classifyNat()`) and the binding
 * lifetime measurement (`measureBindingLifetime()`), each run automatically after connecting when the
 * server offers it, one after the other, and the sacrificial socket the measurement needs (bound beside the
 * main one, handed to the one driver, closed when the measurement ends).
 *
 * @module
 */
import { bindUdp, type UdpDriver } from "./driver.ts";
import type { Endpoint, EndpointEvent } from "./core/endpoint.ts";
import type { Emitter } from "./emitter.ts";
import type { ClientEvents } from "./client_options.ts";
import type { SocketAddr } from "./wire/address.ts";
import { isClassified, type NatClass, UNKNOWN_NAT } from "./core/nat_class.ts";
import { RemoteError } from "./errors.ts";

type Checked = Extract<EndpointEvent, { type: "natChecked" }>;
type Measured = Extract<EndpointEvent, { type: "natLifetime" }>;
type Connected = Extract<EndpointEvent, { type: "connected" }>;

/** The NAT side of one client. */
export class ClientNat {
  readonly #endpoint: Endpoint;
  readonly #server: SocketAddr;
  readonly #events: Emitter<ClientEvents>;
  readonly #autoClassify: boolean;
  readonly #autoLifetime: boolean;
  #nat: NatClass = UNKNOWN_NAT;
  /** classifyNat() calls waiting for the server's answer; null when no check is under way. */
  #checks: PromiseWithResolvers<NatClass>[] | null = null;
  /** measureBindingLifetime() calls waiting; null when no measurement is under way. */
  #lifetimes: PromiseWithResolvers<NatClass>[] | null = null;
  /** The automatic measurement waits for the automatic classification to end. */
  #lifetimeNext = false;

  constructor(
    endpoint: Endpoint,
    server: SocketAddr,
    events: Emitter<ClientEvents>,
    auto: { classify: boolean; lifetime: boolean },
  ) {
    this.#endpoint = endpoint;
    this.#server = server;
    this.#events = events;
    this.#autoClassify = auto.classify;
    this.#autoLifetime = auto.lifetime;
  }

  /** Our NAT as the server measured it. */
  get nat(): NatClass {
    return this.#nat;
  }

  /** Whether an Error with this code answers a request of ours (it settles as the event that follows). */
  expects(code: string | undefined): boolean {
    return (this.#checks !== null || this.#lifetimes !== null) &&
      (code === "nat_check_unavailable" || code === "rate_limited");
  }

  /** Our HandshakeResponse arrived: what it says of our NAT, and the automatic exchanges it offers. */
  connected(driver: UdpDriver, event: Connected): void {
    if (event.nat) this.#nat = event.nat;
    const lifetime = event.natLifetime === true && this.#autoLifetime &&
      event.nat?.bindingLifetimeMs === undefined;
    if (event.natCheck && this.#autoClassify && !(event.nat && isClassified(event.nat))) {
      this.#lifetimeNext = lifetime;
      void this.classify(driver).catch(() => {});
    } else if (lifetime) void this.measureLifetime(driver).catch(() => {});
  }

  /** Starts (or joins) a classification. */
  classify(driver: UdpDriver): Promise<NatClass> {
    const waiter = Promise.withResolvers<NatClass>();
    if (this.#checks) this.#checks.push(waiter);
    else {
      this.#checks = [waiter];
      driver.run((now) => this.#endpoint.checkNat(now, this.#server));
    }
    return waiter.promise;
  }

  /** Starts (or joins) a binding lifetime measurement through a new socket beside the main one. */
  measureLifetime(driver: UdpDriver): Promise<NatClass> {
    const waiter = Promise.withResolvers<NatClass>();
    if (this.#lifetimes) {
      this.#lifetimes.push(waiter);
      return waiter.promise;
    }
    let index = -1;
    try {
      index = driver.addSocket(bindUdp({ hostname: driver.localAddr.hostname, port: 0 }));
      driver.run((now) => this.#endpoint.measureLifetime(now, this.#server, index));
    } catch (error) {
      driver.closeSocket(index);
      return Promise.reject(error);
    }
    this.#lifetimes = [waiter];
    return waiter.promise;
  }

  /** The classification's outcome. */
  checked(driver: UdpDriver, event: Checked): void {
    if (event.reason === null || event.reason === "unavailable") this.#nat = event.nat;
    for (const w of this.#checks ?? []) {
      if (event.reason === "rate_limited") w.reject(new RemoteError("nat check refused", "rate_limited"));
      else w.resolve(event.nat);
    }
    this.#checks = null;
    this.#events.emit("nat", {
      nat: event.nat,
      suggestedKeepalive: event.suggestedKeepalive,
      reason: event.reason,
    });
    if (this.#lifetimeNext) {
      this.#lifetimeNext = false;
      if (!driver.closed) void this.measureLifetime(driver).catch(() => {});
    }
  }

  /** The measurement's outcome: its socket closes. */
  measured(driver: UdpDriver, event: Measured): void {
    driver.closeSocket(event.socket);
    if (event.reason === null) this.#nat = event.nat;
    for (const w of this.#lifetimes ?? []) {
      if (event.reason === "rate_limited") w.reject(new RemoteError("nat lifetime refused", "rate_limited"));
      else w.resolve(this.#nat);
    }
    this.#lifetimes = null;
    const path = this.#endpoint.path(this.#server);
    this.#events.emit("natLifetime", {
      lifetimeMs: event.reason === null ? event.nat.bindingLifetimeMs ?? null : null,
      passedMs: event.passedMs,
      failedMs: event.failedMs,
      suggestedKeepalive: event.suggestedKeepalive,
      keepalive: path ? path.keepaliveMs / 1000 : null,
      reason: event.reason,
    });
  }

  /** The client closes: every waiter rejects. */
  close(error: Error): void {
    for (const w of [...this.#checks ?? [], ...this.#lifetimes ?? []]) w.reject(error);
    this.#checks = null;
    this.#lifetimes = null;
    this.#lifetimeNext = false;
  }
}
