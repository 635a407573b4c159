/**
 * The operations port under attack: the HTTP server of `src/ops_http.ts` (connection cap with eviction,
 * idle/header/write timeouts, malformed and oversized requests, accept errors) and the request guard of
 * `src/ops_guard.ts` (Host allow-list against DNS rebinding, the token before any work, `/peers` and
 * `/api/events` for loopback or the token only, security headers), and the real program under a lowered
 * file-descriptor limit with hundreds of idle connections on its ops port, which must keep answering UDP.
 *
 * @module
 */
import { assert, assertEquals, assertMatch, assertStrictEquals } from "./deps/assert.ts";
import { sha256 } from "../src/deps/crypto.ts";
import { P2PServer, type ServerOptions } from "../src/server.ts";
import { serveHttp } from "../src/ops_http.ts";
import { STATUS_PAGE_HTML } from "../src/status_page.ts";
import { RawPeer } from "./helpers/raw_peer.ts";
import {
  childEnv,
  PROCESS_DEADLINE_MS,
  PROJECT_ROOT,
  RUN_FLAGS,
  ServerProcess,
  TEST_CONFIG,
  waitUntil,
  writeTempConfig,
} from "./helpers/server_process.ts";

interface RawResponse {
  status: number;
  headers: Map<string, string>;
  body: string;
}

/** Sends `text` as is on a new TCP connection and reads the answer until the server closes it. */
async function rawHttp(port: number, text: string, deadlineMs = 10_000): Promise<RawResponse> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => conn.close(), deadlineMs);
  try {
    await conn.write(new TextEncoder().encode(text));
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(65_536);
    for (;;) {
      let n: number | null;
      try {
        n = await conn.read(buf);
      } catch {
        break; // reset, or closed by the deadline
      }
      if (n === null) break;
      chunks.push(buf.slice(0, n));
    }
    const all = new TextDecoder().decode(new Uint8Array(chunks.flatMap((c) => [...c])));
    const end = all.indexOf("\r\n\r\n");
    if (end < 0) return { status: 0, headers: new Map(), body: all };
    const [statusLine, ...lines] = all.slice(0, end).split("\r\n");
    const headers = new Map(lines.map((l) => {
      const i = l.indexOf(":");
      return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()] as [string, string];
    }));
    return { status: Number(statusLine!.split(" ")[1]), headers, body: all.slice(end + 4) };
  } finally {
    clearTimeout(timer);
    try {
      conn.close();
    } catch {
      // closed by the deadline
    }
  }
}

function get(port: number, path: string, host: string, extra = ""): Promise<RawResponse> {
  return rawHttp(port, `GET ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${extra}\r\n`);
}

function opsServer(options: ServerOptions = {}): P2PServer {
  return new P2PServer({
    listenAddress: "127.0.0.1:0",
    enableDiscovery: false,
    metricsAddress: "127.0.0.1:0",
    ...options,
  });
}

/** Opens up to `n` idle TCP connections to `port` (stops at the first refusal). */
async function idleConnections(port: number, n: number): Promise<Deno.TcpConn[]> {
  const conns: Deno.TcpConn[] = [];
  for (let i = 0; i < n; i++) {
    try {
      conns.push(await Deno.connect({ hostname: "127.0.0.1", port }));
    } catch {
      break;
    }
  }
  return conns;
}

function closeAll(conns: Deno.Conn[]): void {
  for (const c of conns) {
    try {
      c.close();
    } catch {
      // closed by the server
    }
  }
}

/** Whether the server closed `conn` (a read ends or fails within `ms`). */
async function closedByServer(conn: Deno.Conn, ms: number): Promise<boolean> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const late = new Promise<"open">((resolve) => timer = setTimeout(() => resolve("open"), ms));
  const read = conn.read(new Uint8Array(1024)).then((n) => n === null ? "closed" : "data", () => "closed");
  const first = await Promise.race([read, late]);
  clearTimeout(timer);
  if (first === "open") {
    closeAll([conn]);
    await read;
  }
  return first === "closed";
}

// ------------------------------------------------------------------ the guard, through the real HTTP server

Deno.test("DNS rebinding: a Host that is not an IP literal, localhost or allow-listed gets 421 on every route but /health", async () => {
  await using server = opsServer({ metricsAllowedHosts: ["status.example.org", "*.example.net"] });
  await server.listen();
  const port = server.metricsAddr!.port;
  for (const path of ["/peers", "/api/events", "/api/stats", "/metrics", "/"]) {
    for (const host of ["evil.example", `evil.example:${port}`, "127.0.0.1.evil.example", "example.net"]) {
      const res = await get(port, path, host);
      assertStrictEquals(res.status, 421, `${path} with Host ${host}`);
      assert(!res.body.includes('peers":['), "nothing of the route may be in a refusal");
    }
    for (
      const host of [
        `127.0.0.1:${port}`,
        "127.0.0.1",
        `localhost:${port}`,
        "LOCALHOST.",
        "[::1]:9",
        "status.example.org",
        "a.b.example.net:80",
      ]
    ) {
      assertStrictEquals((await get(port, path, host)).status, 200, `${path} with Host ${host}`);
    }
  }
  assertStrictEquals((await get(port, "/health", "evil.example")).status, 200);
  // A request without Host (HTTP/1.0) is served under the bound address; HTTP/1.1 without Host is refused.
  assertStrictEquals((await rawHttp(port, "GET /api/stats HTTP/1.0\r\n\r\n")).status, 200);
  assertStrictEquals(
    (await rawHttp(port, "GET /api/stats HTTP/1.1\r\nConnection: close\r\n\r\n")).status,
    400,
  );
});

Deno.test('metrics_allowed_hosts ["*"] turns the Host check off; the config key is validated', async () => {
  await using server = opsServer({ metricsAllowedHosts: ["*"] });
  await server.listen();
  assertStrictEquals((await get(server.metricsAddr!.port, "/api/stats", "anything.example")).status, 200);
  for (const bad of [["a b"], ["host:80"], "x", [7]]) {
    let error: Error | undefined;
    try {
      new P2PServer({ metricsAllowedHosts: bad as string[] });
    } catch (e) {
      error = e as Error;
    }
    assert(error, `${JSON.stringify(bad)} must be refused`);
    assertMatch(error!.message, /metrics_allowed_hosts/);
  }
});

Deno.test("with a token: a wrong Host is refused before the token is looked at, and the token before the route", async () => {
  await using server = opsServer({ metricsToken: "s3cret" });
  await server.listen();
  const port = server.metricsAddr!.port;
  const auth = "Authorization: Bearer s3cret\r\n";
  assertStrictEquals((await get(port, "/peers", "evil.example", auth)).status, 421);
  // Unknown routes and bad parameters tell nothing without the token.
  assertStrictEquals((await get(port, "/nope", "127.0.0.1")).status, 401);
  assertStrictEquals((await get(port, "/peers?limit=x", "127.0.0.1")).status, 401);
  assertStrictEquals((await get(port, "/peers?limit=x", "127.0.0.1", auth)).status, 400);
  assertStrictEquals((await get(port, "/nope", "127.0.0.1", auth)).status, 404);
  // The token opens the private routes to any caller, loopback or not.
  const far = { remoteAddr: { hostname: "192.0.2.7" } };
  const withToken = new Request("http://127.0.0.1/peers", { headers: { authorization: "Bearer s3cret" } });
  assertStrictEquals(server.fetch(withToken, far).status, 200);
  assertStrictEquals(server.fetch(new Request("http://127.0.0.1/peers"), far).status, 401);
});

Deno.test("without a token, /peers and /api/events answer loopback callers only (403 otherwise, and when the caller is unknown)", async () => {
  await using server = opsServer();
  await server.listen();
  for (const path of ["/peers", "/api/events"]) {
    const url = `http://127.0.0.1${path}`;
    for (const hostname of ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"]) {
      assertStrictEquals(server.fetch(new Request(url), { remoteAddr: { hostname } }).status, 200, hostname);
    }
    for (const hostname of ["192.0.2.7", "2001:db8::1", "::ffff:192.0.2.7"]) {
      const res = server.fetch(new Request(url), { remoteAddr: { hostname } });
      assertStrictEquals(res.status, 403, hostname);
      assertMatch((await res.json()).error, /metrics_token/);
    }
    assertStrictEquals(server.fetch(new Request(url)).status, 403, "unknown caller");
    // Over real loopback HTTP they are served.
    assertStrictEquals((await get(server.metricsAddr!.port, path, "127.0.0.1")).status, 200);
  }
  // The counters stay readable from elsewhere (for scrapers); the warning at start says so.
  const far = { remoteAddr: { hostname: "192.0.2.7" } };
  assertStrictEquals(server.fetch(new Request("http://127.0.0.1/metrics"), far).status, 200);
  assertStrictEquals(server.fetch(new Request("http://127.0.0.1/api/stats"), far).status, 200);
});

Deno.test("every answer carries the security headers; the status page's CSP allows exactly its own inline script", async () => {
  await using server = opsServer();
  await server.listen();
  const port = server.metricsAddr!.port;
  for (const path of ["/", "/health", "/metrics", "/peers", "/nope"]) {
    const res = await get(port, path, "127.0.0.1");
    assertStrictEquals(res.headers.get("x-content-type-options"), "nosniff", path);
    assertStrictEquals(res.headers.get("referrer-policy"), "no-referrer", path);
    assertStrictEquals(res.headers.get("x-frame-options"), "DENY", path);
    const csp = res.headers.get("content-security-policy") ?? "";
    assertMatch(csp, /frame-ancestors 'none'/, path);
    assertMatch(csp, /default-src 'none'/, path);
  }
  const page = await get(port, "/", "127.0.0.1");
  const csp = page.headers.get("content-security-policy")!;
  const script = /<script>([\s\S]*?)<\/script>/.exec(STATUS_PAGE_HTML)![1]!;
  const hash = sha256(new TextEncoder().encode(script)).toBase64();
  assert(csp.includes(`script-src 'sha256-${hash}'`), csp);
  assert(!/script-src[^;]*'unsafe-inline'/.test(csp), csp);
  assertMatch(csp, /connect-src 'self'/);
  // A refusal carries them too.
  const refused = await get(port, "/peers", "evil.example");
  assertStrictEquals(refused.headers.get("x-content-type-options"), "nosniff");
});

// ------------------------------------------------------------------ the HTTP server's own limits

Deno.test("at the connection cap, a new connection replaces the one that waited longest; a request still gets through", async () => {
  const server = serveHttp({ hostname: "127.0.0.1", port: 0 }, () => new Response("ok"), {
    maxConnections: 8,
  });
  const idle = await idleConnections(server.addr.port, 20);
  try {
    await waitUntil(() => server.counters().accepted === 20, "20 connections accepted");
    assert(server.counters().open <= 8, `open ${server.counters().open}`);
    assertStrictEquals(server.counters().evicted, 12);
    // The oldest were closed; the newest are still open.
    assert(await closedByServer(idle[0]!, 2000), "the oldest idle connection must be closed");
    const res = await get(server.addr.port, "/", "127.0.0.1");
    assertStrictEquals(res.status, 200);
    assertStrictEquals(res.body, "ok");
  } finally {
    closeAll(idle);
    await server.close();
  }
});

Deno.test("a connection that sends nothing, or drips its request head, is closed at its timeout; one that never reads its answer at the write timeout", async () => {
  const big = new Uint8Array(32 * 1024 * 1024);
  const server = serveHttp(
    { hostname: "127.0.0.1", port: 0 },
    (request) => new URL(request.url).pathname === "/big" ? new Response(big) : new Response("ok"),
    { idleTimeoutMs: 300, headerTimeoutMs: 600, writeTimeoutMs: 500 },
  );
  const port = server.addr.port;
  const silent = await Deno.connect({ hostname: "127.0.0.1", port });
  const drip = await Deno.connect({ hostname: "127.0.0.1", port });
  const stalled = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const started = performance.now();
    // A slowloris: one byte of the head every 100 ms, never the blank line.
    let dripping = true;
    const dripper = (async () => {
      for (
        const b of new TextEncoder().encode(
          "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
        )
      ) {
        if (!dripping) break;
        try {
          await drip.write(new Uint8Array([b]));
        } catch {
          break;
        }
        await new Promise((r) => setTimeout(r, 100));
      }
    })();
    await stalled.write(new TextEncoder().encode("GET /big HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"));
    assert(await closedByServer(silent, 5000), "the silent connection must be closed");
    assert(await closedByServer(drip, 5000), "the dripping connection must be closed");
    dripping = false;
    await dripper;
    const elapsed = performance.now() - started;
    assert(elapsed < 4000, `closed after ${elapsed.toFixed(0)} ms`);
    await waitUntil(() => server.counters().timedOut >= 3, "three timeouts (silent, drip, stalled reader)");
    assertStrictEquals(server.counters().open, 0);
  } finally {
    closeAll([silent, drip, stalled]);
    await server.close();
  }
});

Deno.test("malformed, oversized and body-carrying requests are refused or answered and closed, never thrown", async () => {
  const server = serveHttp({ hostname: "127.0.0.1", port: 0 }, (request) => {
    if (new URL(request.url).pathname === "/throw") throw new Error("handler bug");
    return new Response(request.method === "GET" || request.method === "HEAD" ? "ok" : "no", {
      status: request.method === "GET" || request.method === "HEAD" ? 200 : 405,
    });
  });
  const port = server.addr.port;
  try {
    const cases: [string, number][] = [
      ["garbage\r\n\r\n", 400],
      ["GET / HTTP/2.0\r\nHost: a\r\n\r\n", 400],
      ["GET http://a/ HTTP/1.1\r\nHost: a\r\n\r\n", 400],
      ["GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
      ["GET / HTTP/1.1\r\nHost: a\r\n folded\r\n\r\n", 400],
      ["GET / HTTP/1.1\r\nHost: a\r\nBad Name: x\r\n\r\n", 400],
      ["GET / HTTP/1.1\r\nHost: bad host\r\n\r\n", 400],
      [`GET / HTTP/1.1\r\nHost: a\r\nX-Big: ${"x".repeat(20_000)}\r\n\r\n`, 431],
      [`GET / HTTP/1.1\r\nHost: a\r\n${"X-A: 1\r\n".repeat(120)}\r\n`, 431],
      ["POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello", 405],
      ["GET /throw HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", 500],
    ];
    for (const [text, status] of cases) {
      const res = await rawHttp(port, text);
      assertStrictEquals(res.status, status, JSON.stringify(text.slice(0, 60)));
    }
    // Keep-alive and pipelining: two requests on one connection, both answered, then HEAD without body.
    const two = await rawHttp(
      port,
      "GET / HTTP/1.1\r\nHost: a\r\n\r\nHEAD / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    );
    assertStrictEquals(two.status, 200);
    assertMatch(two.body, /^okHTTP\/1\.1 200 OK\r\n/);
    assert(two.body.endsWith("\r\n\r\n"), "HEAD has no body");
    assertEquals(server.counters().badRequests, 9);
  } finally {
    await server.close();
  }
});

// ------------------------------------------------------------------ the real program under a lowered fd limit

const FD_LIMIT = 160;

/** Starts `main.ts` with `ulimit -n FD_LIMIT` (through bash) and the ops port on a free loopback port. */
async function startLimited(
  config: Record<string, unknown>,
): Promise<{ server: ServerProcess; ops: number }> {
  const configPath = await writeTempConfig({ ...TEST_CONFIG, ...config });
  const deno = Deno.execPath();
  const args = [...RUN_FLAGS, "main.ts", "-c", configPath, "--metrics-address", "127.0.0.1:0"];
  const quoted = [deno, ...args].map((a) => `'${a.replaceAll("'", "'\\''")}'`).join(" ");
  const child = new Deno.Command("bash", {
    args: ["-c", `ulimit -n ${FD_LIMIT} && exec ${quoted}`],
    cwd: PROJECT_ROOT,
    env: childEnv(),
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const server = new ServerProcess(child, [configPath], configPath);
  await server.ready(PROCESS_DEADLINE_MS);
  const m = await waitUntil(
    () => /^metrics and status page on http:\/\/127\.0\.0\.1:(\d+)\/$/m.exec(server.stdout) ?? undefined,
    "the metrics address on stdout",
  );
  return { server, ops: Number(m[1]) };
}

async function pingPong(peer: RawPeer, to: { hostname: string; port: number }): Promise<void> {
  const ping = await peer.sendMessage(to, "Ping");
  const pong = await peer.expect("Pong", 5000);
  assert(pong.message.message_type === "Pong", `no Pong for ${ping.id}`);
}

const hasBash = (() => {
  try {
    return new Deno.Command("bash", { args: ["-c", "true"], stdout: "null", stderr: "null" }).outputSync()
      .success;
  } catch {
    return false;
  }
})();
if (!hasBash) console.log("skipping the lowered-fd-limit tests: bash is not installed");

for (
  const [cap, what] of [[64, "the default cap"], [
    100_000,
    "a cap above the fd limit (accept fails)",
  ]] as const
) {
  Deno.test({
    name:
      `under ulimit -n ${FD_LIMIT}, 200 idle connections to the ops port (${what}) leave UDP Ping->Pong ` +
      "working and the process alive, and the ops port serves again once they are gone",
    ignore: !hasBash,
    fn: async () => {
      const { server, ops } = await startLimited({ metrics_max_connections: cap });
      await using _ = server;
      await using peer = new RawPeer();
      await pingPong(peer, server.addr);
      const conns = await idleConnections(ops, 200);
      try {
        assert(conns.length >= 150, `only ${conns.length} connections could be opened`);
        // Let the server accept what it can (and fail to accept the rest, in the second case).
        await new Promise((r) => setTimeout(r, 500));
        for (let i = 0; i < 3; i++) await pingPong(peer, server.addr);
        assertStrictEquals(server.exited, null, `the program died:\n${server.stderr}`);
      } finally {
        closeAll(conns);
      }
      const health = await waitUntil(
        async () => {
          const res = await get(ops, "/health", "127.0.0.1").catch(() => null);
          return res?.status === 200 ? res : undefined;
        },
        "/health to answer again",
        20_000,
        100,
      );
      assertMatch(health.body, /"status":"ok"/);
      await pingPong(peer, server.addr);
      assertStrictEquals(server.exited, null);
      if (cap > FD_LIMIT) assertMatch(server.stderr, /cannot accept a connection \(.*\); retrying/);
      assert(!/Uncaught|Too many open files \(os error 24\)\n\s+at /.test(server.stderr), server.stderr);
      const status = await server.stop();
      assertStrictEquals(status.code, 0, server.stderr);
    },
  });
}
