/**
 * NAT tests: the real server (`main.ts`) on a public network namespace and two `P2PClient`s
 * (tests/fixtures/nat_client.ts), each behind its own nftables NAT (tests/helpers/netns.ts). They check what
 * the server tells peers about their reflexive address, that discovery carries it, and that Data routed
 * through the server crosses both NATs — with port-preserving NATs, and with nat2 address-and-port-dependent
 * (random port per flow, unsolicited inbound dropped).
 *
 * Needs root, `ip` and `nft`; skipped (with a note) otherwise. Each test builds its own uniquely named
 * namespaces and tears them down in `finally`, whatever happens.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertNotEquals } from "./deps/assert.ts";
import {
  createTopology,
  type NatMode,
  natOf,
  type NatTopology,
  type NsProcess,
  TOPOLOGY,
  unavailableReason,
} from "./helpers/netns.ts";
import {
  ensureCached,
  type PublicServer,
  spawnNatClient,
  startPublicServer,
} from "./helpers/netns_server.ts";

const UNAVAILABLE = unavailableReason();
if (UNAVAILABLE !== null) console.log(`nat_test.ts: NAT tests skipped: ${UNAVAILABLE}`);

/**
 * Time budgets. Every wait takes the smallest of its own deadline, what is left of its test's budget and
 * what is left of the file's, which leaves room for the teardowns (a few seconds at most) within 60 s.
 */
const TEST_BUDGET_MS = 15_000;
const FILE_END = performance.now() + 45_000;

/** A JSON line printed by the fixture. */
interface ClientEvent {
  event: string;
  [key: string]: unknown;
}

interface PeerEntry {
  id: string;
  addr: string;
  observed_addr?: string;
  name: string;
}

/** Time left of a test's budget. */
class Budget {
  readonly #end = Math.min(performance.now() + TEST_BUDGET_MS, FILE_END);
  /** The smaller of `ms` and what is left (at least 1 ms, so a spent budget fails the next wait). */
  ms(ms = 10_000): number {
    return Math.max(1, Math.min(ms, this.#end - performance.now()));
  }
}

function parseJson(line: string): ClientEvent | null {
  try {
    const v = JSON.parse(line);
    return v !== null && typeof v === "object" && typeof v.event === "string" ? v as ClientEvent : null;
  } catch {
    return null;
  }
}

/** A nat_client fixture process, driven over stdin and read by its JSON stdout lines. */
class Client {
  readonly name: "c1" | "c2";
  readonly proc: NsProcess;
  readonly #budget: Budget;
  ready: ClientEvent = { event: "" };

  constructor(name: "c1" | "c2", proc: NsProcess, budget: Budget) {
    this.name = name;
    this.proc = proc;
    this.#budget = budget;
  }

  get nodeId(): string {
    return this.ready.nodeId as string;
  }
  get observedAddr(): string {
    return this.ready.observedAddr as string;
  }
  get localAddr(): string {
    return this.ready.localAddr as string;
  }

  /** Waits for an event line (index >= `after`) satisfying `match`. */
  async waitEvent(
    what: string,
    match: (e: ClientEvent) => boolean,
    after = 0,
    deadlineMs = 10_000,
  ): Promise<ClientEvent> {
    const { line } = await this.proc.waitForLine((l) => {
      const e = parseJson(l);
      return e !== null && match(e);
    }, { after, deadlineMs: this.#budget.ms(deadlineMs), what });
    return parseJson(line)!;
  }

  /** Sends a command; resolves with its result line (`resultEvent`), throws on `commandFailed`. */
  async command(line: string, resultEvent: string): Promise<ClientEvent> {
    const tag = crypto.randomUUID().slice(0, 8);
    const mark = this.proc.mark();
    await this.proc.writeLine(`@${tag} ${line}`);
    const e = await this.waitEvent(`the result of "${line}"`, (e) => e.tag === tag, mark);
    if (e.event !== resultEvent) throw new Error(`${this.name}: "${line}" -> ${JSON.stringify(e)}`);
    return e;
  }
}

function startServer(
  topo: NatTopology,
  budget: Budget,
  config: Record<string, unknown> = {},
): Promise<PublicServer> {
  // Debug lines name every Data the server handles ("data from <addr>"): the direct test counts them.
  return startPublicServer(topo, { config, args: ["--DEBUG"], ops: false, deadline: (ms) => budget.ms(ms) });
}

async function startClient(
  topo: NatTopology,
  name: "c1" | "c2",
  server: string,
  budget: Budget,
): Promise<Client> {
  const proc = spawnNatClient(topo, name, server);
  const client = new Client(name, proc, budget);
  client.ready = await client.waitEvent(
    "the ready line",
    (e) => e.event === "ready" || e.event === "connectFailed",
    0,
    20_000,
  );
  if (client.ready.event !== "ready") throw new Error(`${name}: ${JSON.stringify(client.ready)}`);
  return client;
}

function hostPort(text: string): { host: string; port: number } {
  const i = text.lastIndexOf(":");
  return { host: text.slice(0, i), port: Number(text.slice(i + 1)) };
}

/** Sends one UDP datagram from `pub` (the server's address, another port) to `target`. */
async function sendFromPublic(topo: NatTopology, target: string, text: string): Promise<void> {
  const { host, port } = hostPort(target);
  const code = `const s = Deno.listenDatagram({ transport: "udp", hostname: "${TOPOLOGY.server}", port: 0 });
await s.send(new TextEncoder().encode(${
    JSON.stringify(text)
  }), { transport: "udp", hostname: "${host}", port: ${port} });
s.close();`;
  await topo.exec("pub", [Deno.execPath(), "eval", "--unstable-net", code]);
}

/** Polls a condition every 50 ms within the budget. */
async function eventually<T>(what: string, budget: Budget, check: () => Promise<T | undefined>): Promise<T> {
  const end = performance.now() + budget.ms(5_000);
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (performance.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Runs `body` with a fresh topology, the server and both clients; tears everything down afterwards and
 * reports the server's stderr when the body fails.
 */
async function withNat(
  modes: { nat1: NatMode; nat2: NatMode },
  body: (
    ctx: { topo: NatTopology; server: string; serverProc: NsProcess; c1: Client; c2: Client; budget: Budget },
  ) => Promise<void>,
  config: Record<string, unknown> = {},
): Promise<void> {
  await ensureCached();
  const budget = new Budget();
  const topo = await createTopology({ ...modes, deadlineMs: budget.ms() });
  let server: NsProcess | undefined;
  try {
    const started = await startServer(topo, budget, config);
    server = started.proc;
    const [c1, c2] = await Promise.all([
      startClient(topo, "c1", started.addr, budget),
      startClient(topo, "c2", started.addr, budget),
    ]);
    await body({ topo, server: started.addr, serverProc: started.proc, c1, c2, budget });
  } catch (error) {
    // Diagnostics next to the failure (deno test shows a failed test's output), then the original error.
    const stderr = server?.stderr.split("\n").slice(-40).join("\n") ?? "";
    const rules = await Promise.all((["nat1", "nat2"] as const).map((n) => topo.ruleset(n).catch(() => "")));
    console.error(
      `--- server stderr (tail) ---\n${stderr}\n--- nat1 ruleset ---\n${rules[0]}--- nat2 ruleset ---\n${
        rules[1]
      }`,
    );
    throw error;
  } finally {
    await topo.destroy();
  }
}

/** The checks both tests share: reflexive addresses, discovery, and Data routed both ways. */
async function checkRendezvous(c1: Client, c2: Client, server: string): Promise<void> {
  for (const c of [c1, c2]) {
    const nat = TOPOLOGY[natOf(c.name)];
    assertEquals(hostPort(c.localAddr).host, nat.client, `${c.name} is bound to its private address`);
    assertMatch(c.observedAddr, /^\d+\.\d+\.\d+\.\d+:\d+$/, `${c.name} observedAddr`);
    assertEquals(hostPort(c.observedAddr).host, nat.public, `${c.name} is seen at its NAT's public address`);
    assertNotEquals(c.observedAddr, c.localAddr, `${c.name}'s observed address is not its private one`);
  }

  // Discovery from c1 lists c2 with its reflexive address (and its declared, private, listen address).
  const found = await c1.command("discover", "discover");
  const peers = found.peers as PeerEntry[];
  const entry = peers.find((p) => p.id === c2.nodeId);
  assert(entry, `c2 (${c2.nodeId}) in c1's discovery: ${JSON.stringify(peers)}`);
  assertEquals(entry.observed_addr, c2.observedAddr);
  assertEquals(hostPort(entry.observed_addr!).host, TOPOLOGY.nat2.public);
  assertEquals(entry.addr, c2.localAddr, "the declared listen_addr is the private one");
  assertEquals(peers.find((p) => p.id === c1.nodeId)?.observed_addr, c1.observedAddr);

  // Data routed through the server, both ways.
  for (const [from, to] of [[c1, c2], [c2, c1]] as const) {
    const text = `hello from ${from.name} ${crypto.randomUUID()}`;
    const mark = to.proc.mark();
    await from.command(`send ${to.nodeId} ${text}`, "sent");
    const got = await to.waitEvent(
      `Data from ${from.name}`,
      (e) => e.event === "data" && e.fromId === from.nodeId,
      mark,
    );
    assertEquals(got.payload, { from: from.nodeId, data: text });
    assertEquals(got.from, server, `${to.name} receives the routed Data from the server`);
  }
}

Deno.test({
  name: "NAT: observed addresses, discovery and routed Data through two port-preserving NATs",
  ignore: UNAVAILABLE !== null,
  async fn() {
    await withNat({ nat1: "endpoint-independent", nat2: "endpoint-independent" }, async (ctx) => {
      const { topo, c1, c2, server } = ctx;
      await checkRendezvous(c1, c2, server);
      // Linux masquerade keeps a free source port: the mapping is the private port on the public address.
      for (const c of [c1, c2]) {
        assertEquals(hostPort(c.observedAddr).port, hostPort(c.localAddr).port, `${c.name}'s port is kept`);
      }
      // Unsolicited inbound (the server's address but another port) is not translated: c1 never sees it.
      const before = await c1.command("stats", "stats");
      await sendFromPublic(topo, c1.observedAddr, "unsolicited");
      await new Promise((r) => setTimeout(r, 200));
      const after = await c1.command("stats", "stats");
      assertEquals(after.droppedTotal, before.droppedTotal, "nothing unsolicited reached c1");
      assert((await topo.droppedInbound("nat1")) >= 1, "nat1's firewall dropped it");
    });
  },
});

Deno.test({
  name: "NAT: routed Data still works with nat2 address-and-port-dependent (symmetric, filtering)",
  ignore: UNAVAILABLE !== null,
  async fn() {
    await withNat({ nat1: "endpoint-independent", nat2: "address-and-port-dependent" }, async (ctx) => {
      const { topo, c1, c2, server, budget } = ctx;
      assertEquals(topo.natMode("nat2"), "address-and-port-dependent");
      await checkRendezvous(c1, c2, server);
      // nat2 drops what is not a reply from the same remote address and port: a datagram from the server's
      // address on another port is counted and dropped, and never reaches c2.
      const before = await c2.command("stats", "stats");
      const droppedBefore = await topo.droppedInbound("nat2");
      await sendFromPublic(topo, c2.observedAddr, "unsolicited");
      await eventually("nat2's drop counter", budget, async () => {
        const n = await topo.droppedInbound("nat2");
        return n > droppedBefore ? n : undefined;
      });
      const after = await c2.command("stats", "stats");
      assertEquals(after.droppedTotal, before.droppedTotal, "nothing unsolicited reached c2");
      // The server's own flow still passes.
      await c2.command("ping", "pong");
    });
  },
});

Deno.test({
  name: "NAT: a full-cone NAT lets unsolicited datagrams through to the client (test bed sanity)",
  ignore: UNAVAILABLE !== null,
  async fn() {
    await withNat({ nat1: "full-cone", nat2: "endpoint-independent" }, async (ctx) => {
      const { topo, c1, budget } = ctx;
      assertEquals(hostPort(c1.observedAddr).host, TOPOLOGY.nat1.public);
      const before = await c1.command("stats", "stats");
      await sendFromPublic(topo, c1.observedAddr, "unsolicited");
      // The client drops the junk datagram (not JSON), which shows it arrived.
      await eventually("the datagram at c1", budget, async () => {
        const now = await c1.command("stats", "stats");
        return (now.droppedTotal as number) > (before.droppedTotal as number) ? now : undefined;
      });
    });
  },
});

Deno.test({
  name: "NAT: after an introduction two clients behind port-preserving NATs punch through and talk directly",
  ignore: UNAVAILABLE !== null,
  async fn() {
    await withNat({ nat1: "endpoint-independent", nat2: "endpoint-independent" }, async (ctx) => {
      const { c1, c2 } = ctx;
      const direct = await c1.command(`introduce ${c2.nodeId}`, "direct");
      const serverData = () => (ctx.serverProc.stderr.match(/data from /g) ?? []).length;
      const relayedBefore = serverData();
      assertEquals(direct.addr, c2.observedAddr, "the path found is c2's public mapping");
      const text = `direct ${crypto.randomUUID()}`;
      const mark = c2.proc.mark();
      await c1.command(`direct ${c2.nodeId} ${text}`, "sentDirect");
      const got = await c2.waitEvent("direct Data", (e) => e.event === "data" && e.payload === text, mark);
      assertEquals(got.fromId, c1.nodeId);
      assertEquals(got.from, c1.observedAddr, "from c1's NAT mapping, not from the server");
      for (let i = 0; i < 5; i++) await c1.command(`direct ${c2.nodeId} more ${i}`, "sentDirect");
      assertEquals(
        serverData(),
        relayedBefore,
        "the server handled none of the direct Data (no relayed bytes)",
      );
    });
  },
});

Deno.test({
  name:
    "NAT: with both NATs address-and-port-dependent punching fails within its budget and the relay delivers",
  ignore: UNAVAILABLE !== null,
  async fn() {
    await withNat({ nat1: "address-and-port-dependent", nat2: "address-and-port-dependent" }, async (ctx) => {
      const { c1, c2, server } = ctx;
      const failed = await c1.command(`introduce ${c2.nodeId}`, "commandFailed");
      assertMatch(String(failed.error), /punch_failed|no direct path/);
      const text = `relayed ${crypto.randomUUID()}`;
      const mark = c2.proc.mark();
      await c1.command(`send ${c2.nodeId} ${text}`, "sent");
      const got = await c2.waitEvent(
        "relayed Data",
        (e) => e.event === "data" && e.fromId === c1.nodeId,
        mark,
      );
      assertEquals(got.payload, { from: c1.nodeId, data: text });
      assertEquals(got.from, server, "through the server");
      // The server's debug lines name the Data it handles (the direct test relies on them staying silent).
      assert(/data from /.test(ctx.serverProc.stderr), "the server logged the relayed Data");
      // The relay quota holds here too (3 messages a minute in this test): the next two fit, the third is
      // refused with relay_quota and never acknowledged.
      await c1.command(`send ${c2.nodeId} two`, "sent");
      await c1.command(`send ${c2.nodeId} three`, "sent");
      const refused = await c1.command(`send ${c2.nodeId} four`, "commandFailed");
      assertMatch(String(refused.error), /relay quota/);
    }, { relay_quota: [3, 1_048_576] });
  },
});
