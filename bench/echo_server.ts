/**
 * The baseline for `deno task bench`: a bare `Deno.listenDatagram` echo server, the fastest a Deno UDP server
 * can turn datagrams around one receive and one send at a time. Prints its port, then echoes until killed.
 *
 * @module
 */
const sock = Deno.listenDatagram({ transport: "udp", hostname: Deno.args[0] ?? "127.0.0.1", port: 0 });
console.log((sock.addr as Deno.NetAddr).port);
const buf = new Uint8Array(65_536);
for (;;) {
  const [bytes, from] = await sock.receive(buf);
  await sock.send(bytes, from);
}
