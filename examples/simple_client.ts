/**
 * The example client: handshake, data, ping with RTT, discovery and disconnect against a p2p_server,
 * printing each step. Exits 0 only when every step succeeded.
 *
 *     deno task client [--server 127.0.0.1:8080] [--bind ADDR] [--name NAME] [--network ID] [--timeout SECONDS]
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
  --timeout  seconds to wait for the server's echo [default: 5]`;

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
        timeout: { type: "string", default: "5" },
        help: { type: "boolean", short: "h" },
      },
    }));
  } catch (error) {
    console.error(`error: ${(error as Error).message.split("\n")[0]}\n\n${USAGE}`);
    return 2;
  }
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const timeoutMs = Number(values.timeout) * 1000;
  if (!(timeoutMs > 0)) {
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
    });
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    return 2;
  }
  const step = (text: string) => console.log(`[${new Date().toISOString()}] ${text}`);
  try {
    step(`connecting to ${values.server} as ${client.node.id}`);
    const server = await client.connect();
    step(`handshake ok: server ${server.name} ${server.version} (${server.id})`);

    const echo = new Promise<Json>((resolve, reject) => {
      const off = client.on("data", ({ payload }) => {
        off();
        clearTimeout(timer);
        resolve(payload);
      });
      const timer = setTimeout(() => {
        off();
        reject(new Error(`no echo from ${values.server} within ${values.timeout} s`));
      }, timeoutMs);
    });
    const data = { text: "hello from simple_client", sent_at: Date.now() };
    await client.send(data);
    step(`data sent and acknowledged: ${JSON.stringify(data)}`);
    step(`echo received: ${JSON.stringify(await echo)}`);

    const rtt = await client.ping();
    step(`ping/pong ok: rtt ${rtt.toFixed(2)} ms`);

    const peers = await client.discover();
    step(`discovery ok: ${peers.length} peer(s)`);
    for (const p of peers) step(`  ${p.id} at ${p.addr} [${p.capabilities.join(", ")}]`);

    await client.disconnect("simple_client done");
    step("disconnected");
    return 0;
  } catch (error) {
    console.error(`error: ${(error as Error).message}`);
    await client.close();
    return 1;
  }
}

if (import.meta.main) Deno.exit(await runClient(Deno.args));
