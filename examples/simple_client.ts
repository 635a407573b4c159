/**
 * The example client: handshake, data, ping with RTT, discovery and disconnect against a p2p_server,
 * printing each step. Exits 0 only when every step succeeded.
 *
 *     deno task client [--server 127.0.0.1:8080] [--bind ADDR] [--name NAME] [--network ID] [--timeout SECONDS]
 *
 * `--timeout` bounds the whole run (every step together). While a step waits for the server, a line a
 * second says so: how long it has waited, how many datagrams it sent meanwhile, and how much of the run's
 * time is used.
 *
 * @module
 */
import { parseArgs } from "../src/deps/flags.ts";
import { P2PClient } from "../mod.ts";
import type { Json } from "../mod.ts";

const USAGE =
  `Usage: simple_client [--server ADDR] [--bind ADDR] [--name NAME] [--network NETWORK_ID] [--timeout SECONDS]
  --server   server address, ip:port or [ip6]:port [default: 127.0.0.1:8080]
  --bind     local address to send from [default: 0.0.0.0:0, or [::]:0 for an IPv6 server]
  --name     this node's name [default: simple_client]
  --network  network id [default: p2p_default]
  --timeout  seconds the whole run may take, every step together [default: 10]`;

/** The library's own give-up times (handshake_timeout, delivery_timeout defaults), kept within --timeout. */
const HANDSHAKE_TIMEOUT_S = 10;
const DELIVERY_TIMEOUT_S = 30;

const HANDSHAKE = "waiting for the handshake";

/** Runs the example; resolves to the exit status. */
export async function runClient(args: string[]): Promise<number> {
  let values;
  try {
    ({ values } = parseArgs({
      args: args[0] === "--" ? args.slice(1) : args,
      strict: true,
      allowPositionals: false,
      options: {
        server: { type: "string", default: "127.0.0.1:8080" },
        bind: { type: "string" },
        name: { type: "string", default: "simple_client" },
        network: { type: "string", default: "p2p_default" },
        timeout: { type: "string", default: "10" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    console.error(`error: ${(error as Error).message.split("\n")[0]}\nrun 'simple_client --help' for usage`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const timeoutS = Number(values.timeout);
  if (!(timeoutS > 0) || !Number.isFinite(timeoutS)) {
    console.error(`error: Invalid value for --timeout: "${values.timeout}": expected seconds above 0`);
    return 2;
  }
  let client: P2PClient;
  try {
    client = new P2PClient({
      server: values.server,
      ...(values.bind === undefined ? {} : { bind: values.bind }),
      name: values.name,
      networkId: values.network,
      capabilities: ["data"],
      // The library gives up on its own no later than --timeout.
      reliability: {
        handshakeTimeout: Math.min(HANDSHAKE_TIMEOUT_S, timeoutS),
        deliveryTimeout: Math.min(DELIVERY_TIMEOUT_S, timeoutS),
      },
    });
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 2;
  }
  const step = (text: string) => console.log(`[${new Date().toISOString()}] ${text}`);
  const started = performance.now();
  const deadline = started + timeoutS * 1000;
  let hinted = false;
  const sentCount = () => client.getStats().datagramsSent;

  /** Waits for `promise`, printing progress each second, and gives up when the run's deadline passes. */
  const within = async <T>(what: string, promise: Promise<T>): Promise<T> => {
    const since = performance.now();
    const sentBefore = sentCount();
    let timer: ReturnType<typeof setTimeout> | undefined;
    let ticker: ReturnType<typeof setInterval> | undefined;
    const expired = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        reject(
          new Error(
            what === HANDSHAKE
              ? `connection timeout to ${values.server}: no answer within ${values.timeout} s (--timeout)`
              : `no answer from ${values.server} within ${values.timeout} s while ${what} (--timeout)`,
          ),
        );
      }, Math.max(0, deadline - performance.now()));
    });
    ticker = setInterval(() => {
      const waited = (performance.now() - since) / 1000;
      const sent = sentCount() - sentBefore;
      const total = ((performance.now() - started) / 1000).toFixed(1);
      const wait = waited.toFixed(1);
      step(
        `still ${what}: no answer for ${wait} s, ${sent} datagram(s) sent; ${total} of ${values.timeout} s`,
      );
      if (!hinted) {
        hinted = true;
        step("  (UDP has no 'connection refused': a stopped server and a closed port look the same)");
      }
    }, 1000);
    try {
      return await Promise.race([promise, expired]);
    } finally {
      clearTimeout(timer);
      clearInterval(ticker);
      ticker = undefined;
    }
  };

  // Each retry as it happens: over a lossy path the library sends again what got no answer.
  client.on("retry", ({ messageType, tries }) => step(`  retrying ${messageType} (try ${tries})`));
  try {
    step(`connecting to ${values.server} as ${client.node.id} (giving up after ${values.timeout} s)`);
    const server = await within(HANDSHAKE, client.connect());
    step(`handshake ok: server ${server.name} ${server.version} (${server.id})`);

    let off = () => {};
    const echo = new Promise<Json>((resolve) => {
      off = client.on("data", ({ payload }) => {
        off();
        resolve(payload);
      });
    });
    const data = { text: "hello from simple_client", sent_at: Date.now() };
    try {
      await within("waiting for the data's Ack", client.send(data));
      step(`data sent and acknowledged: ${JSON.stringify(data)}`);
      step(`echo received: ${JSON.stringify(await within("waiting for the echo", echo))}`);
    } finally {
      off();
    }

    const rtt = await within("waiting for the pong", client.ping());
    step(`ping/pong ok: rtt ${rtt.toFixed(2)} ms`);

    const peers = await within("waiting for the discovery response", client.discover());
    step(`discovery ok: ${peers.length} peer(s)`);
    for (const p of peers) step(`  ${p.id} at ${p.addr} [${p.capabilities.join(", ")}]`);

    await within("disconnecting", client.disconnect("simple_client done"));
    step("disconnected");
    return 0;
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    await client.close();
    return 1;
  }
}

if (import.meta.main) Deno.exit(await runClient(Deno.args));
