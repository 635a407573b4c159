/**
 * The server core's configuration for the benchmarks and memory fixtures that drive it directly (no
 * sockets): every rate limit out of reach, since a clock that stands still (or a load far above any real
 * peer's) would otherwise be refused, though the limiter still runs on every datagram and is measured; no
 * stateless cookies; no discovery broadcasts; room for a million connections.
 *
 * @module
 */
import { type Config, resolveConfig } from "../src/config.ts";

const UNLIMITED: [number, number] = [100_000_000, 100_000_000];

/** That configuration, with `overrides` on top. */
export function benchCoreConfig(overrides: Partial<Config> = {}): Config {
  return resolveConfig({
    enableDiscovery: false,
    maxConnections: 1_000_000,
    rateLimitDatagramsPerIp: UNLIMITED,
    rateLimitHandshakesPerIp: UNLIMITED,
    rateLimitDatagramsPerNode: UNLIMITED,
    rateLimitDatagramsGlobal: UNLIMITED,
    cookieMode: "never",
    ...overrides,
  });
}
