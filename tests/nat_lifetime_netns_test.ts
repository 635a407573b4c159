/**
 * The binding lifetime measurement in the netns test bed (issue 18): the real server (`main.ts`, with the
 * classification's alternate sockets and `nat_lifetime_gaps_ms` [1000, 1500, 3000, 4000, 6000]) and two
 * `P2PClient`s (tests/fixtures/nat_client.ts) behind NATs whose conntrack forgets an idle UDP flow after
 * 2 s (nat1) and 5 s (nat2): `nf_conntrack_udp_timeout` and `nf_conntrack_udp_timeout_stream`, set in each
 * NAT's own network namespace (they are per namespace: the server's namespace keeps the default). The NAT
 * modes are `endpoint-independent` and `address-and-port-dependent`, whose filtering is conntrack's alone
 * (the address-dependent modes also let in what their nftables map of remotes remembers, for 120 s, which
 * would hide conntrack's timeout). Each client's keepalive starts below its NAT's timeout (`--heartbeat`),
 * so its main mapping survives; it must report a lifetime that brackets the timeout and adopt a keepalive
 * below it. Needs root, `ip` and `nft`; skipped (with a note) otherwise.
 *
 * @module
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import {
  createTopology,
  type NatName,
  type NatTopology,
  TOPOLOGY,
  unavailableReason,
} from "./helpers/netns.ts";
import { ensureCached, spawnNatClient, startPublicServer } from "./helpers/netns_server.ts";

const SKIP = unavailableReason();
if (SKIP !== null) console.log(`nat_lifetime_netns_test.ts: skipped: ${SKIP}`);

const PORT = 3478;
const ALT_PORT = 3479;
const GAPS = [1_000, 1_500, 3_000, 4_000, 6_000];
const SYSCTL = "/proc/sys/net/netfilter";

/** Per client: its NAT, that NAT's UDP timeout (s), and the keepalive it starts with (s, below it). */
const CASES = [
  { client: "c1", nat: "nat1", mode: "endpoint-independent", timeoutS: 2, heartbeatS: 1 },
  { client: "c2", nat: "nat2", mode: "address-and-port-dependent", timeoutS: 5, heartbeatS: 4 },
] as const;

/** Sets both UDP conntrack timeouts of one NAT's namespace and reads them back. */
async function setUdpTimeout(
  topo: NatTopology,
  nat: NatName | "pub",
  seconds: number | null,
): Promise<string> {
  const names = ["nf_conntrack_udp_timeout", "nf_conntrack_udp_timeout_stream"];
  const write = seconds === null ? "" : names.map((n) => `echo ${seconds} > ${SYSCTL}/${n}; `).join("");
  const read = names.map((n) => `cat ${SYSCTL}/${n}`).join("; ");
  const out = await topo.exec(nat, ["/bin/sh", "-c", `${write}${read}`]);
  return out.stdout.trim().split(/\s+/).join(" ");
}

interface LifetimeLine {
  lifetimeMs: number | null;
  passedMs: number | null;
  failedMs: number | null;
  suggestedKeepalive: number | null;
  keepalive: number | null;
  reason: string | null;
  nat: { mapping: string; filtering: string; bindingLifetimeMs?: number };
}

Deno.test({
  name: "P2PClients behind NATs with 2 s and 5 s UDP timeouts measure lifetimes bracketing them",
  ignore: SKIP !== null,
  async fn() {
    const end = performance.now() + 45_000;
    const left = (ms: number) => Math.max(1, Math.min(ms, end - performance.now() - 3_000));
    await ensureCached();
    await using topo = await createTopology({
      nat1: CASES[0].mode,
      nat2: CASES[1].mode,
      deadlineMs: left(15_000),
    });
    const defaults = await setUdpTimeout(topo, "pub", null);
    for (const c of CASES) {
      assertStrictEquals(await setUdpTimeout(topo, c.nat, c.timeoutS), `${c.timeoutS} ${c.timeoutS}`);
    }
    assertStrictEquals(await setUdpTimeout(topo, "pub", null), defaults, "per namespace: pub keeps its own");
    assert(defaults !== "2 2" && defaults !== "5 5", defaults);
    await using server = await startPublicServer(topo, {
      config: {
        listen_address: `${TOPOLOGY.server}:${PORT}`,
        stun_alternate_port: ALT_PORT,
        stun_alternate_address: TOPOLOGY.serverAlt,
        nat_lifetime_gaps_ms: GAPS,
      },
      deadline: left,
    });
    const rows: string[] = [];
    const t0 = performance.now();
    await Promise.all(CASES.map(async (c) => {
      const proc = spawnNatClient(
        topo,
        c.client,
        `${TOPOLOGY.server}:${PORT}`,
        "--heartbeat",
        String(c.heartbeatS),
      );
      try {
        const ready = JSON.parse(
          (await proc.waitForLine((l) => l.startsWith('{"event":"ready"'), { deadlineMs: left(15_000) }))
            .line,
        ) as { keepalive: number };
        assertStrictEquals(ready.keepalive, c.heartbeatS);
        const { line } = await proc.waitForLine((l) => l.startsWith('{"event":"natLifetime"'), {
          deadlineMs: left(35_000),
          what: `${c.client}'s natLifetime line`,
        });
        const e = JSON.parse(line) as LifetimeLine;
        const timeoutMs = c.timeoutS * 1000;
        rows.push(
          `${c.nat} (${c.mode}) udp timeout ${c.timeoutS} s: passed ${e.passedMs} ms, failed ${e.failedMs} ms ` +
            `-> binding_lifetime_ms ${e.lifetimeMs}, suggested_keepalive ${e.suggestedKeepalive} s, keepalive ` +
            `${c.heartbeatS} -> ${e.keepalive} s (${Math.round(performance.now() - t0)} ms after start)`,
        );
        assertStrictEquals(e.reason, null, line);
        assert(e.passedMs !== null && e.passedMs < timeoutMs, `${c.nat}: ${line}`);
        assert(e.failedMs !== null && e.failedMs >= timeoutMs, `${c.nat}: ${line}`);
        assertStrictEquals(e.failedMs, GAPS[GAPS.indexOf(e.passedMs) + 1], "the next gap failed");
        assertStrictEquals(e.nat.bindingLifetimeMs, e.passedMs);
        assert(e.nat.mapping !== "unknown", "classified first");
        assert(e.keepalive !== null && e.keepalive * 1000 < timeoutMs, `keepalive ${e.keepalive} s`);
        assertStrictEquals(e.keepalive, Math.min(c.heartbeatS, Math.max(1, Math.floor(e.passedMs / 2000))));
      } finally {
        await proc.writeLine("quit").catch(() => {});
        await proc.stop().catch(() => proc.killNow());
      }
    }));
    console.log(rows.sort().join("\n"));
    const stats = await server.stats();
    console.log(`server natLifetimes: ${JSON.stringify(stats.natLifetimes)}`);
    assertEquals(
      [stats.natLifetimes.completed, stats.natLifetimes.expired, stats.natLifetimes.refused],
      [2, 2, 0],
    );
    assertStrictEquals(stats.droppedTotal, 0, JSON.stringify(stats.drops));
  },
});
