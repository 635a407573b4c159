/**
 * RFC 5780 NAT behaviour discovery by clients nobody here wrote, against the real program behind every NAT
 * the test bed (tests/helpers/netns.ts) builds. `main.ts` runs in `pub` on 203.0.113.1:3478 with
 * `stun_alternate_port` 3479 and `stun_alternate_address` 203.0.113.2 (`TOPOLOGY.serverAlt`), so it has the
 * four sockets A1:P1, A1:P2, A2:P1 and A2:P2. For each NAT mode, coturn's `turnutils_natdiscovery -m -f`
 * runs in a client namespace behind that NAT and must report the mapping and filtering behaviour the mode
 * builds (`NAT_BEHAVIOUR`); `turnutils_stunclient` must see the NAT's public address as its reflexive
 * address, and the `stun` client of Debian's stun-client package (RFC 3489) must name the NAT type that
 * mode is in RFC 3489's words. The two clients c1 and c2 take turns with the modes in parallel (nat1 and
 * nat2 switch modes between rounds), which keeps the wall time near 20 s: most of it is natdiscovery's own
 * 3 s receive timeout, once per filtering test a NAT does not let through.
 *
 * Every client's output is printed; docs/nat.md#measured-with-real-stun-clients shows what they reported.
 * Skipped, with a printed reason, when the test bed cannot run (not root, no `ip` or `nft`) or a client is
 * not installed (`.ci/run` installs coturn and stun-client when it can).
 *
 * @module
 */
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import {
  createTopology,
  NAT_BEHAVIOUR,
  type NatBehaviour,
  type NatMode,
  natOf,
  type NatTopology,
  TOPOLOGY,
  unavailableReason,
} from "./helpers/netns.ts";
import { startPublicServer } from "./helpers/netns_server.ts";

function findBinary(name: string): string | null {
  for (const dir of [...(Deno.env.get("PATH") ?? "").split(":"), "/usr/bin", "/usr/local/bin"]) {
    try {
      if (dir && Deno.statSync(`${dir}/${name}`).isFile) return `${dir}/${name}`;
    } catch {
      // not here
    }
  }
  return null;
}

const NATDISCOVERY = findBinary("turnutils_natdiscovery");
const STUNCLIENT = findBinary("turnutils_stunclient");
const STUN = findBinary("stun");
const TIMEOUT = findBinary("timeout") ?? "/usr/bin/timeout";
const STDBUF = findBinary("stdbuf") ?? "/usr/bin/stdbuf";

function skipReason(): string | null {
  const bed = unavailableReason();
  if (bed !== null) return bed;
  if (!NATDISCOVERY || !STUNCLIENT) return "turnutils_natdiscovery is not installed (apt-get install coturn)";
  return null;
}

const SKIP = skipReason();
if (SKIP !== null) console.log(`stun_natdiscovery_test.ts: NAT discovery tests skipped: ${SKIP}`);
if (SKIP === null && !STUN) {
  console.log("stun_natdiscovery_test.ts: the stun client's checks skipped: apt-get install stun-client");
}

const PORT = 3478;
const ALT_PORT = 3479;

/** What `turnutils_natdiscovery` prints for each behaviour ("NAT with ... Mapping!" / "... Filtering!"). */
const WORDS: Record<NatBehaviour, string> = {
  "endpoint-independent": "Endpoint Independent",
  "address-dependent": "Address Dependent",
  "address-and-port-dependent": "Address and Port Dependent",
};

/**
 * What the `stun` client (RFC 3489's classification, from its tests I to III) reports behind each mode:
 * full cone (EIF), restricted cone (ADF with EIM), port-restricted cone (APDF with EIM), symmetric (any
 * mapping that is not endpoint-independent).
 */
const STUN_TYPE: Record<NatMode, RegExp> = {
  "endpoint-independent": /^Primary: Independent Mapping, Port Dependent Filter/m,
  "full-cone": /^Primary: Independent Mapping, Independent Filter/m,
  "address-dependent": /^Primary: Independent Mapping, Address Dependent Filter/m,
  "address-dependent-mapping": /^Primary: Dependent Mapping/m,
  "address-and-port-dependent": /^Primary: Dependent Mapping/m,
};

/** The rounds: c1 behind nat1 and c2 behind nat2 each get one mode per round, all five modes covered. */
const ROUNDS: [NatMode, NatMode][] = [
  ["endpoint-independent", "address-and-port-dependent"],
  ["full-cone", "address-dependent"],
  ["address-dependent-mapping", "endpoint-independent"],
];

/** Runs a client in a namespace to completion (at most `ms`); prints and returns its output. */
async function runClient(topo: NatTopology, client: "c1" | "c2", cmd: string[], ms: number): Promise<string> {
  // coreutils' timeout ends a client that waits forever for an answer, and its output is still read.
  const seconds = String(Math.max(1, Math.floor(ms / 1000) - 1));
  const out = await topo.exec(client, [TIMEOUT, "-s", "KILL", seconds, ...cmd], {
    allowFailure: true,
    deadlineMs: ms,
  });
  const text = `${out.stdout}${out.stderr}`.trim();
  const mode = topo.natMode(natOf(client));
  console.log(
    `[${client} behind ${mode}] $ ${cmd.map((a) => a.split("/").pop()).join(" ")} -> exit ${out.code}`,
  );
  console.log(text.split("\n").map((l) => `  ${l}`).join("\n"));
  return text;
}

/**
 * What natdiscovery reports behind each mode, where it differs from what the mode builds. Behind
 * address-dependent mapping it says "Address and Port Dependent": its test III goes to the OTHER-ADDRESS of
 * test II's answer, which for a request to A2:P1 is A1:P2 (RFC 5780 section 7.4: the address "change IP and
 * change port" would answer from), not the A2:P2 of section 4.3, so tests I and III share the server IP.
 * The reflexive addresses it prints show the address-dependent mapping all the same ({@linkcode mappings}).
 */
const NATDISCOVERY_SAYS: Partial<Record<NatMode, NatBehaviour>> = {
  "address-dependent-mapping": "address-and-port-dependent",
};

/** natdiscovery's mapping tests as `[server address answering, reflexive address]` pairs, in order. */
function mappings(output: string): [string, string][] {
  const section = output.split("-= Filtering Behavior Discovery =-")[0]!;
  const pairs: [string, string][] = [];
  let origin = "";
  for (const line of section.split("\n")) {
    const o = /Response origin: : (\S+)/.exec(line);
    if (o) origin = o[1]!;
    const r = /UDP reflexive addr: (\S+)/.exec(line);
    if (r) pairs.push([origin, r[1]!]);
  }
  return pairs;
}

/** The result lines of natdiscovery (`NAT with ...!`, `No NAT! ...`). */
function verdicts(output: string): string[] {
  return output.split("\n").filter((l) => /^(NAT with|No NAT)/.test(l.trim())).map((l) => l.trim());
}

Deno.test({
  name: "turnutils_natdiscovery, turnutils_stunclient and stun behind every NAT mode report what it builds",
  ignore: SKIP !== null,
  async fn() {
    const end = performance.now() + 40_000;
    const left = (ms: number) => Math.max(1, Math.min(ms, end - performance.now() - 3_000));
    await using topo = await createTopology({ deadlineMs: left(15_000) });
    await using server = await startPublicServer(topo, {
      config: {
        listen_address: `${TOPOLOGY.server}:${PORT}`,
        stun_alternate_port: ALT_PORT,
        stun_alternate_address: TOPOLOGY.serverAlt,
      },
      deadline: left,
    });

    const failures: string[] = [];
    const check = (ok: boolean, what: string) => {
      if (!ok) failures.push(what);
    };
    for (const round of ROUNDS) {
      await topo.setNatMode("nat1", round[0]);
      await topo.setNatMode("nat2", round[1]);
      await Promise.all((["c1", "c2"] as const).map(async (client, i) => {
        const mode = round[i]!;
        const nat = natOf(client);
        const expected = NAT_BEHAVIOUR[mode];
        const discovery = await runClient(
          topo,
          client,
          [NATDISCOVERY!, "-m", "-f", TOPOLOGY.server],
          left(15_000),
        );
        const said = verdicts(discovery);
        const mapping = NATDISCOVERY_SAYS[mode] ?? expected.mapping;
        check(
          said.includes(`NAT with ${WORDS[mapping]} Mapping!`),
          `${mode}: natdiscovery said ${JSON.stringify(said)}, not ${mapping} mapping`,
        );
        if (mode === "address-dependent-mapping") {
          // Its own reflexive addresses: A1:P1 and A1:P2 see one mapping, A2:P1 another.
          const seen = new Map(mappings(discovery));
          const a1p1 = seen.get(`${TOPOLOGY.server}:${PORT}`);
          check(
            a1p1 !== undefined && seen.get(`${TOPOLOGY.server}:${ALT_PORT}`) === a1p1 &&
              seen.get(`${TOPOLOGY.serverAlt}:${PORT}`) !== a1p1,
            `${mode}: natdiscovery's reflexive addresses ${
              JSON.stringify([...seen])
            } are not address-dependent`,
          );
        }
        check(
          said.includes(`NAT with ${WORDS[expected.filtering]} Filtering!`),
          `${mode}: natdiscovery said ${JSON.stringify(said)}, not ${expected.filtering} filtering`,
        );
        check(!/ALG detected/.test(discovery), `${mode}: natdiscovery saw an ALG`);
        // coturn 4.6.1's client then asks for RESPONSE-PORT (local port + 1), which p2p_server refuses with a
        // 420 to the port the request came from, and waits on the other port with no timeout: it is ended
        // after 2 s, its output line-buffered so that what it printed first is read.
        const reflexive = await runClient(topo, client, [STDBUF, "-oL", STUNCLIENT!, TOPOLOGY.server], 3_000);
        check(
          new RegExp(`UDP reflexive addr: ${TOPOLOGY[nat].public.replaceAll(".", "\\.")}:\\d+`).test(
            reflexive,
          ),
          `${mode}: turnutils_stunclient did not see ${TOPOLOGY[nat].public}`,
        );
        if (STUN) {
          const classic = await runClient(topo, client, [STUN, TOPOLOGY.server, "-v"], left(15_000));
          check(STUN_TYPE[mode].test(classic), `${mode}: stun did not report ${STUN_TYPE[mode]}`);
          check(
            new RegExp(`MappedAddress = ${TOPOLOGY[nat].public.replaceAll(".", "\\.")}:\\d+`).test(classic),
            `${mode}: stun's MappedAddress is not ${TOPOLOGY[nat].public}`,
          );
        }
      }));
    }
    assertEquals(failures, []);

    const stats = await server.stats();
    console.log(`server stun counters: ${JSON.stringify(stats.stun)}`);
    assert(stats.stun.changeRequests > 0, JSON.stringify(stats.stun));
    assertStrictEquals(stats.droppedTotal, 0, JSON.stringify(stats.drops));
    // Every request answered: a success, or a 420 for coturn's RESPONSE-PORT and PADDING (refused).
    assertStrictEquals(
      stats.stun.responses + stats.stun.errors.unknown_attribute + stats.stun.errors.bad_request,
      stats.stun.requests,
      JSON.stringify(stats.stun),
    );
  },
});
