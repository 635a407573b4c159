/**
 * Cluster mode, one instance id per process: the instance's liveness entry in Redis carries a random token
 * drawn by this process, is claimed only when absent (or this process's own), and renewed only by its token.
 * A second process started with the same `instance_id` finds the entry held by another token; it watches the
 * entry for one renewal period (plus a margin) and, when the holder renews it, refuses to start with
 * {@linkcode InstanceIdInUseError}. When the holder stopped renewing (it crashed), the entry is taken over.
 *
 * @module
 */
import {
  CLAIM_INSTANCE,
  type ClusterKeys,
  LEAVE_INSTANCE,
  RENEW_INSTANCE,
  TAKE_OVER_INSTANCE,
} from "./cluster_wire.ts";
import type { RedisCommand } from "./cluster_wire.ts";

/** Runs one pipeline; resolves with one reply (or Error) per command. */
export type Exec = (commands: readonly RedisCommand[]) => Promise<unknown[]>;

/** How long past one renewal period a holder may take to renew before it counts as gone. */
export const RENEWAL_MARGIN_MS = 1_000;

/** Another live process holds this instance id. */
export class InstanceIdInUseError extends Error {
  /** The instance id. */
  readonly instance: string;

  /**
   * @param instance The instance id.
   * @param detail What is known of the other process.
   */
  constructor(instance: string, detail: string) {
    super(
      `Instance id "${instance}" is in use by another process (${detail}): give each process its own instance_id, or stop the other one`,
    );
    this.name = "InstanceIdInUseError";
    this.instance = instance;
  }
}

/** What the holder's entry says about it (address and start time), for the error. */
function describe(holder: string): string {
  try {
    const v = JSON.parse(holder) as { address?: unknown; started?: unknown };
    const started = typeof v.started === "number" ? new Date(v.started).toISOString() : "?";
    return `listening on "${String(v.address)}", started ${started}`;
  } catch {
    return "its liveness entry is not p2p_server's";
  }
}

/** This process's claim on its instance id. */
export class Liveness {
  readonly #instance: string;
  readonly #key: string;
  readonly #keys: ClusterKeys;
  readonly #ttlMs: number;
  readonly #periodMs: number;
  readonly #sleep: (ms: number) => Promise<void>;
  #value = "";

  /**
   * @param keys The deployment's names.
   * @param instance This instance's id.
   * @param ttlMs How long the entry lives unrenewed.
   * @param periodMs How often it is renewed.
   * @param sleep Waits (the caller's timer).
   */
  constructor(
    keys: ClusterKeys,
    instance: string,
    options: { ttlMs: number; periodMs: number; sleep: (ms: number) => Promise<void> },
  ) {
    this.#keys = keys;
    this.#instance = instance;
    this.#key = keys.instance(instance);
    this.#ttlMs = options.ttlMs;
    this.#periodMs = options.periodMs;
    this.#sleep = options.sleep;
  }

  /** Sets what the entry says (the server's address, the start time, and a new random token). */
  describe(address: string, started: number): void {
    this.#value = JSON.stringify({ address, started, token: crypto.randomUUID() });
  }

  /**
   * Claims the entry. When another process holds it, watches it for one renewal period plus
   * {@linkcode RENEWAL_MARGIN_MS}: renewed, the id is in use; not renewed, the entry is taken over.
   * Resolves with true when an entry of a stopped process was taken over.
   *
   * @throws {InstanceIdInUseError} when another live process holds the id.
   */
  async claim(exec: Exec): Promise<boolean> {
    for (let attempt = 0; attempt < 3; attempt++) {
      const [reply] = await exec([CLAIM_INSTANCE.call([this.#key], [this.#value, this.#ttlMs])]);
      if (reply instanceof Error) throw reply;
      if (reply === "ok") return false;
      const holder = String(reply);
      if (await this.#renewedBy(exec, holder)) {
        throw new InstanceIdInUseError(this.#instance, describe(holder));
      }
      const [taken] = await exec([
        TAKE_OVER_INSTANCE.call([this.#key], [holder, this.#value, this.#ttlMs]),
      ]);
      if (taken instanceof Error) throw taken;
      if (taken === 1) return true;
    }
    throw new InstanceIdInUseError(this.#instance, "its entry keeps changing");
  }

  /** The renewal (by token); its reply goes to {@linkcode renewed}. */
  renewCommand(): RedisCommand {
    return RENEW_INSTANCE.call([this.#key], [this.#value, this.#ttlMs]);
  }

  /** Whether the renewal's reply says this process still holds the id (false: another process took it). */
  renewed(reply: unknown): boolean {
    if (reply instanceof Error) throw reply;
    return reply !== 0;
  }

  /** The error for an id another process took while this one held it. */
  lost(): InstanceIdInUseError {
    return new InstanceIdInUseError(this.#instance, "it took over this process's liveness entry");
  }

  /** Deletes the entry if this process holds it, and publishes `bye` on the events channel. */
  leaveCommand(bye: string): RedisCommand {
    return LEAVE_INSTANCE.call([this.#key], [this.#value, this.#keys.events, this.#keys.publish, bye]);
  }

  /** True when the entry's holder renews it (or another process writes it) within one period + margin. */
  async #renewedBy(exec: Exec, holder: string): Promise<boolean> {
    const read = async (): Promise<[string | null, number]> => {
      const [value, pttl] = await exec([["GET", this.#key], ["PTTL", this.#key]]);
      if (value instanceof Error) throw value;
      return [value as string | null, Number(pttl)];
    };
    let [value, pttl] = await read();
    const step = Math.max(20, Math.min(250, Math.floor(this.#periodMs / 4)));
    const end = performance.now() + this.#periodMs + RENEWAL_MARGIN_MS;
    while (performance.now() < end) {
      if (value === null) return false;
      if (value !== holder) return true;
      await this.#sleep(step);
      const before = pttl;
      [value, pttl] = await read();
      // The time to live only shrinks unless someone renews the entry.
      if (value === holder && pttl > before) return true;
    }
    return value !== null && value !== holder;
  }
}
