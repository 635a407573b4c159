/**
 * The real program's memory under the fragment attack of docs/security.md ("Memory held for peers"): peers on
 * 127.0.0.x register with the extensions, then each sends fragments that declare 65,535 fragments and carry
 * one byte, first four (one per message, the most a peer may have in reassembly), then a flood of further
 * 1-byte fragments of those messages until the reassembly budget is full. Before the fix the first four
 * allocated 512 KiB each; now what is held is counted against `reassembly_buffer_bytes`, so the server's
 * resident memory (`VmRSS` of `/proc/<pid>/status`) grows by at most that budget plus {@linkcode SLACK}.
 *
 * Bounded: {@linkcode PEERS} peers, a fixed number of datagrams each, paced by a Ping after every batch
 * (its Pong says the server handled the batch), every wait under a deadline. About 5 s.
 *
 * @module
 */
import { assert } from "./deps/assert.ts";
import { encodeMessage, type Json, type Message, type MessageType } from "../src/wire/mod.ts";
import { childEnv, PROJECT_ROOT, RUN_FLAGS, TEST_CONFIG, waitUntil } from "./helpers/server_process.ts";
import { readProc } from "../tools/server_probe.ts";

const PEERS = 100;
const BUDGET = 8 * 1_048_576;
/** 1-byte fragments each peer sends after its first four (the budget fills at about 32,000 in all). */
const FLOOD_PER_PEER = 400;
const BATCH = 50;
/** RSS growth allowed above the budget: V8's heap and the allocator grow in steps, not byte by byte. */
const SLACK = 24 * 1_048_576;
const DEADLINE_MS = 15_000;

const onLinux = Deno.build.os === "linux";

function rss(pid: number): number {
  // Another process's /proc file needs --allow-all to be read directly; readProc falls back to `cat`.
  const status = readProc(`/proc/${pid}/status`) ?? "";
  const kib = /^VmRSS:\s+(\d+) kB$/m.exec(status);
  if (!kib) throw new Error(`No VmRSS in /proc/${pid}/status`);
  return Number(kib[1]) * 1024;
}

/** One attacking peer: a socket on its own loopback address and its message numbering. */
class Peer {
  readonly socket: Deno.DatagramConn;
  readonly server: Deno.NetAddr;
  readonly addr: string;
  seq = 1;
  readonly #pongs: (() => void)[] = [];
  readonly #loop: Promise<void>;
  responded = false;

  constructor(ip: string, server: Deno.NetAddr) {
    this.socket = Deno.listenDatagram({ transport: "udp", hostname: ip, port: 0 });
    this.server = server;
    const local = this.socket.addr as Deno.NetAddr;
    this.addr = `${local.hostname}:${local.port}`;
    this.#loop = this.#receive();
  }

  async #receive(): Promise<void> {
    const buffer = new Uint8Array(65_536);
    try {
      for (;;) {
        const [bytes] = await this.socket.receive(buffer);
        const msg = JSON.parse(new TextDecoder().decode(bytes)) as Record<string, Json>;
        if (msg.message_type === "HandshakeResponse") {
          this.responded = true;
          await this.send("Ack", null, {
            sequence_number: msg.sequence_number as number,
            ack_for: msg.id as string,
          });
        }
        if (msg.message_type === "Pong") this.#pongs.shift()?.();
      }
    } catch {
      // closed
    }
  }

  send(type: MessageType, payload: Json, fields: Partial<Message> = {}): Promise<number> {
    const msg: Message = {
      id: crypto.randomUUID(),
      message_type: type,
      timestamp: Math.floor(Date.now() / 1000),
      payload,
      sender_addr: this.addr,
      sequence_number: null,
      requires_ack: false,
      ack_for: null,
      ...fields,
    };
    return this.socket.send(encodeMessage(msg, true), this.server);
  }

  reliable(type: MessageType, payload: Json, fields: Partial<Message> = {}): Promise<number> {
    const seq = this.seq++;
    return this.send(type, payload, { sequence_number: seq, requires_ack: true, rel: seq, ...fields });
  }

  /** Sends a Ping and waits for its Pong: everything sent before it has been handled. */
  async sync(): Promise<void> {
    const pong = new Promise<void>((resolve) => this.#pongs.push(resolve));
    await this.send("Ping", null);
    let timer: ReturnType<typeof setTimeout> | undefined;
    await Promise.race([
      pong,
      new Promise((_, reject) =>
        timer = setTimeout(() => reject(new Error(`no Pong to ${this.addr}`)), 5_000)
      ),
    ]).finally(() => clearTimeout(timer));
  }

  async close(): Promise<void> {
    this.socket.close();
    await this.#loop;
  }
}

Deno.test({
  name:
    "fragments declaring 65,535 parts of 1 byte from 100 peers grow the real server's RSS by at most reassembly_buffer_bytes plus 24 MiB",
  ignore: !onLinux,
  sanitizeOps: true,
  sanitizeResources: true,
}, async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2p_mem_" });
  const config = `${dir}/config.json`;
  await Deno.writeTextFile(config, JSON.stringify({ ...TEST_CONFIG, reassembly_buffer_bytes: BUDGET }));
  const child = new Deno.Command(Deno.execPath(), {
    args: [...RUN_FLAGS, "main.ts", "-c", config],
    cwd: PROJECT_ROOT,
    env: childEnv({ LOG_LEVEL: "error" }),
    stdin: "null",
    stdout: "piped",
    stderr: "null",
  }).spawn();
  const peers: Peer[] = [];
  try {
    const text = child.stdout.pipeThrough(new TextDecoderStream());
    const reader = text.getReader();
    let out = "";
    const listening = await waitUntil(
      async () => {
        const { value, done } = await reader.read();
        if (done) throw new Error(`the server exited: ${out}`);
        out += value;
        return /listening on (\S+):(\d+)\n/.exec(out) ?? undefined;
      },
      "the listening line",
      DEADLINE_MS,
    );
    reader.releaseLock();
    const drained = text.pipeTo(new WritableStream());
    const server: Deno.NetAddr = { transport: "udp", hostname: listening[1]!, port: Number(listening[2]) };
    const started = performance.now();

    for (let p = 0; p < PEERS; p++) peers.push(new Peer(`127.0.0.${2 + p}`, server));
    for (const peer of peers) {
      const info = {
        id: crypto.randomUUID(),
        name: "attacker",
        version: "1.0.0",
        listen_addr: peer.addr,
        capabilities: [],
        metadata: {},
      };
      // One at a time, each confirmed before the next, so no cookie is asked for (cookie_threshold).
      await peer.reliable("HandshakeRequest", info, { ext: 1 });
      await waitUntil(() => peer.responded, "a HandshakeResponse", DEADLINE_MS, 2);
      await peer.sync();
    }
    // As many datagrams that hold nothing first (Pings), so that the heap has grown to what handling that many
    // datagrams takes before the baseline: what grows afterwards is what the fragments hold.
    for (let at = 0; at <= FLOOD_PER_PEER; at += BATCH) {
      for (const peer of peers) {
        for (let i = 0; i < BATCH; i++) await peer.send("Ping", null);
        await peer.sync();
      }
    }
    const before = rss(child.pid);

    const messages = peers.map(() => Array.from({ length: 4 }, () => crypto.randomUUID()));
    const one = (peer: Peer, of: string, i: number) =>
      peer.reliable("Data", "YQ", { frag: { of, i, n: 65_535 } });
    // The reported attack: four fragments per peer, each declaring 65,535 fragments.
    for (const [p, peer] of peers.entries()) {
      for (const of of messages[p]!) await one(peer, of, 0);
      await peer.sync();
    }
    const afterFour = rss(child.pid);
    // Then as many 1-byte fragments as the bounds take, the most bookkeeping per byte an attacker can buy.
    for (let at = 1; at <= FLOOD_PER_PEER; at += BATCH) {
      for (const [p, peer] of peers.entries()) {
        for (let i = at; i < at + BATCH; i++) await one(peer, messages[p]![i % 4]!, 1 + Math.floor(i / 4));
        await peer.sync();
      }
      assert(performance.now() - started < DEADLINE_MS, "the attack took too long");
    }
    const after = rss(child.pid);
    const mib = (b: number) => (b / 1_048_576).toFixed(1);
    console.log(
      `RSS ${mib(before)} MiB after ${PEERS} handshakes; +${mib(afterFour - before)} MiB after 4 fragments ` +
        `per peer; +${mib(after - before)} MiB after ${FLOOD_PER_PEER} more (budget ${mib(BUDGET)} MiB)`,
    );
    assert(
      afterFour - before <= BUDGET + SLACK,
      `+${mib(afterFour - before)} MiB after four fragments per peer`,
    );
    assert(after - before <= BUDGET + SLACK, `+${mib(after - before)} MiB after the flood`);
    child.kill("SIGTERM");
    await drained;
  } finally {
    for (const peer of peers) await peer.close();
    try {
      child.kill("SIGKILL");
    } catch {
      // exited
    }
    await child.status;
    await Deno.remove(dir, { recursive: true });
  }
});
