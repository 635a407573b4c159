/**
 * The server core's CPU per keyed handshake, without sockets (issue 19): `deno run -A bench/keyed_replay.ts
 * [--peers 2000] [--rounds 9] [--crypto node,openssl]`. Keyed clients (client `Endpoint`s with keys drawn from fixed seeds) handshake
 * once with a keyed server core, in virtual time; what they sent (the signed HandshakeRequest, and the MAC'd
 * Ack of the HandshakeResponse, as `bench/loadgen.ts --keyed` sends) is recorded and then fed, round after
 * round, to fresh server cores made the same way. Each round prints the main thread's CPU per handshake and
 * that of the other threads (V8's garbage collection and compiler), from `/proc/thread-self/schedstat` and
 * `/proc/self/task/<tid>/schedstat` (Linux; elsewhere only wall time); the median of all rounds but the first
 * closes the run. The line `output` is a SHA-256 of everything the first round's server sent: with the same
 * seeds it stays the same as long as the server's bytes on the wire do, so two builds can be compared.
 * `--crypto` lists the X25519 and HMAC implementations the server cores use (`crypto_backend`'s `node` and
 * `openssl`,
 * default `node`): each round runs each of them in turn, so two are compared on the same minutes of the
 * machine, and their outputs must be the same.
 *
 * @module
 */
import { createHash, createPrivateKey, createPublicKey } from "node:crypto";
import { parseArgs } from "../src/deps/flags.ts";
import { Endpoint, type SocketAddr } from "../src/core/mod.ts";
import { identityFrom } from "../src/core/auth.ts";
import { type KeyPair, rawPublic } from "../src/deps/crypto.ts";
import { benchCoreConfig } from "./core_config.ts";
import { chooseCrypto, type ChosenCrypto } from "../src/openssl.ts";

const { values } = parseArgs({
  options: {
    peers: { type: "string", default: "2000" },
    rounds: { type: "string", default: "9" },
    crypto: { type: "string", default: "node" },
  },
});
const PEERS = Number(values.peers);
const ROUNDS = Math.max(2, Number(values.rounds));
const BACKENDS = values.crypto.split(",").map((name) => {
  if (name !== "node" && name !== "openssl") {
    console.error(`error: Invalid "--crypto": ${JSON.stringify(name)}: expected "node" or "openssl"`);
    Deno.exit(2);
  }
  return { name, crypto: chooseCrypto(name) };
});

/** PKCS#8 prefixes of a raw 32-byte Ed25519 and X25519 private key. */
const PKCS8 = {
  ed25519: Uint8Array.fromHex("302e020100300506032b657004220420"),
  x25519: Uint8Array.fromHex("302e020100300506032b656e04220420"),
};

/** The key pair of curve `type` whose private key is SHA-256(`label`). */
function seededPair(type: keyof typeof PKCS8, label: string): KeyPair {
  const der = new Uint8Array(48);
  der.set(PKCS8[type]);
  der.set(createHash("sha256").update(label).digest(), 16);
  const privateKey = createPrivateKey({ key: Buffer.from(der), format: "der", type: "pkcs8" });
  return { publicKey: rawPublic(createPublicKey(privateKey)), privateKey };
}

// The limits are out of reach (virtual time stands still, so no bucket refills) and cookies off.
const config = benchCoreConfig();
const NODE = { name: "n", version: "1.0.0", capabilities: ["data"], metadata: { network_id: "p2p_default" } };
const serverIdentity = identityFrom(seededPair("ed25519", "server"));
const serverX25519 = seededPair("x25519", "server");
const serverAddr = { hostname: "192.0.2.1", port: 8080 };

/** A keyed server core; two made by this function answer the same datagrams with the same bytes. */
function makeServer(chosen?: ChosenCrypto): Endpoint {
  let ids = 0;
  return new Endpoint({
    role: "server",
    config,
    node: { ...NODE, id: serverIdentity.nodeId, listen_addr: "192.0.2.1:8080" },
    newId: () => `00000000-0000-4000-8000-${(ids++).toString(16).padStart(12, "0")}`,
    now: 0,
    identity: serverIdentity,
    generateX25519: () => serverX25519,
    ...(chosen ? { deriveX25519: chosen.deriveX25519, macKey: chosen.macKey } : {}),
    random: () => 0.5,
    cookieSecret: new Uint8Array(32),
  });
}

/** What the clients sent, in order. */
const feed: { from: SocketAddr; bytes: Uint8Array }[] = [];
{
  const server = makeServer();
  let ids = 0;
  const decoder = new TextDecoder();
  for (let i = 0; i < PEERS; i++) {
    const identity = identityFrom(seededPair("ed25519", `client ${i}`));
    const from = { hostname: "198.51.100.3", port: 1000 + i };
    const client = new Endpoint({
      role: "client",
      config,
      node: { ...NODE, id: identity.nodeId, listen_addr: `198.51.100.3:${from.port}` },
      newId: () => `00000000-0000-4000-9000-${(ids++).toString(16).padStart(12, "0")}`,
      now: 0,
      identity,
      generateX25519: () => seededPair("x25519", `client ${i}`),
      random: () => 0.5,
    });
    client.connect(0, serverAddr);
    for (let step = 0; step < 4; step++) {
      for (const t of client.takeTransmits()) {
        // The client's confirming Ping is left out: the load generator's keyed peers send only the Ack.
        if (decoder.decode(t.bytes).includes('"message_type":"Ping"')) continue;
        feed.push({ from, bytes: t.bytes.slice() });
        server.handleDatagram(0, from, t.bytes);
      }
      for (const t of server.takeTransmits()) client.handleDatagram(0, serverAddr, t.bytes);
    }
    if (!client.takeEvents().some((e) => e.type === "connected")) {
      throw new Error(`client ${i} did not connect`);
    }
    server.takeEvents();
  }
}

/** CPU time in ns: of this thread, and of the whole process (all threads); null without Linux's schedstat. */
function cpuNs(): { thread: number; process: number } | null {
  try {
    const onCpu = (path: string) => Number(Deno.readTextFileSync(path).split(" ")[0]);
    let process = 0;
    for (const task of Deno.readDirSync("/proc/self/task")) {
      process += onCpu(`/proc/self/task/${task.name}/schedstat`);
    }
    return { thread: onCpu("/proc/thread-self/schedstat"), process };
  } catch {
    return null;
  }
}

type Round = { main: number; other: number; wall: number };
const outputs = new Map<string, string>();
const rounds = new Map<string, Round[]>(BACKENDS.map((b) => [b.name, []]));
for (let round = 0; round < ROUNDS; round++) {
  for (const backend of BACKENDS) {
    const server = makeServer(backend.crypto);
    const output = createHash("sha256");
    const start = cpuNs(), t0 = performance.now();
    for (const { from, bytes } of feed) {
      server.handleDatagram(0, from, bytes);
      for (const t of server.takeTransmits()) if (round === 0) output.update(t.bytes);
    }
    const wall = performance.now() - t0, end = cpuNs();
    const authenticated = server.getStats(0).peers.authenticated;
    if (authenticated !== PEERS) throw new Error(`${authenticated} of ${PEERS} peers authenticated`);
    const main = start && end ? (end.thread - start.thread) / 1000 / PEERS : NaN;
    const other = start && end ? (end.process - start.process) / 1000 / PEERS - main : NaN;
    rounds.get(backend.name)!.push({ main, other, wall: 1000 * wall / PEERS });
    if (round === 0) {
      const digest = output.digest("hex");
      outputs.set(backend.name, digest);
      console.log(`output ${digest}${BACKENDS.length > 1 ? ` (crypto ${backend.name})` : ""}`);
    }
    console.log(
      `round ${round}${BACKENDS.length > 1 ? ` crypto ${backend.name}` : ""}: µs per handshake: main thread ${
        main.toFixed(1)
      }, other threads ${other.toFixed(1)}`,
    );
  }
}
if (new Set(outputs.values()).size > 1) throw new Error("the implementations' outputs differ");
for (const backend of BACKENDS) {
  const list = rounds.get(backend.name)!;
  const median = (key: keyof Round) =>
    list.slice(1).map((r) => r[key]).sort((a, b) => a - b)[(list.length - 1) >> 1]!.toFixed(1);
  console.log(
    `median of ${ROUNDS - 1} rounds, ${PEERS} keyed handshakes each${
      BACKENDS.length > 1 ? `, crypto ${backend.name}` : ""
    }, µs per handshake: main thread ${median("main")}, other threads ${median("other")}, wall ${
      median("wall")
    }`,
  );
}
