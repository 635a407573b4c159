/**
 * The Redis link of cluster mode (`src/deps/redis.ts`) against a real `redis-server` started per test on a
 * free port: pipelines with per-command errors, pub/sub between two links, outages (nothing listening, a
 * killed server, a connection lost mid-pipeline), reconnects with resubscription, and credentials that never
 * show. Skipped when `redis-server` is not installed.
 */
import { assert, assertEquals, assertMatch, assertRejects, assertThrows } from "./deps/assert.ts";
import {
  describeTlsFailure,
  keySlot,
  openRedisLink,
  redactRedisUrl,
  type RedisLink,
  type RedisLinkEvents,
  type RedisLinkOptions,
  RedisUnavailableError,
} from "../src/deps/redis.ts";
import { freeTcpPort, REDIS_SKIP_REASON, type RedisServer, startRedis } from "./helpers/redis_server.ts";
import { Wakers } from "./helpers/wakers.ts";

if (REDIS_SKIP_REASON !== null) {
  console.log(`redis_link_test: skipping the real-server tests: ${REDIS_SKIP_REASON}`);
}
const ignore = REDIS_SKIP_REASON !== null;

/** Each wait is generous for a small shared machine; whole tests are bounded by these waits. */
const WAIT_MS = 10_000;
/** Fast reconnects keep the outage tests short. */
const FAST: RedisLinkOptions = { connectTimeoutMs: 2000, reconnectMaxMs: 200 };

/** Records a link's events and lets a test wait for a condition on them. */
class Recorder implements RedisLinkEvents {
  readies = 0;
  readonly downs: string[] = [];
  readonly messages: [channel: string, message: string][] = [];
  readonly #wakers = new Wakers();

  onReady(): void {
    this.readies++;
    this.#wakers.wakeAll();
  }

  onDown(reason: string): void {
    this.downs.push(reason);
    this.#wakers.wakeAll();
  }

  onMessage(channel: string, message: string): void {
    this.messages.push([channel, message]);
    this.#wakers.wakeAll();
  }

  async until(condition: () => boolean, what: string, ms = WAIT_MS): Promise<void> {
    const end = performance.now() + ms;
    while (!condition()) {
      const left = end - performance.now();
      if (left <= 0) throw new Error(`Timed out after ${ms} ms waiting for ${what}`);
      await this.#wakers.wait(left);
    }
  }
}

async function startOrFail(options: { password?: string } = {}): Promise<RedisServer> {
  const server = await startRedis(options);
  if (server === null) throw new Error("unreachable: the test is ignored without redis-server");
  return server;
}

/** Opens a link and waits for its first onReady. */
async function openReady(
  url: string,
  options: RedisLinkOptions = FAST,
): Promise<{ link: RedisLink; events: Recorder } & AsyncDisposable> {
  const events = new Recorder();
  const link = openRedisLink(url, events, options);
  try {
    await events.until(() => events.readies > 0, `the link to ${url} to be ready`);
  } catch (error) {
    await link.close();
    throw error;
  }
  return { link, events, [Symbol.asyncDispose]: () => link.close() };
}

/** Publishes until the subscriber saw one message on the channel (a SUBSCRIBE may still be in flight). */
async function publishUntilSeen(
  publisher: RedisLink,
  subscriber: Recorder,
  channel: string,
  message: string,
) {
  const seen = () => subscriber.messages.some(([c, m]) => c === channel && m === message);
  const end = performance.now() + WAIT_MS;
  while (!seen()) {
    if (performance.now() > end) throw new Error(`Timed out waiting for "${message}" on "${channel}"`);
    if (publisher.ready) await publisher.exec([["PUBLISH", channel, message]]);
    await subscriber.until(seen, "a message", 100).catch(() => {});
  }
}

Deno.test(
  { name: "exec runs one pipeline and returns each command's reply or its refusal", ignore },
  async () => {
    await using redis = await startOrFail();
    await using a = await openReady(redis.url);
    assert(a.link.ready);
    const replies = await a.link.exec([
      ["SET", "peer:1", "alpha"],
      ["GET", "peer:1"],
      ["INCR", "peer:1"],
      ["PEXPIRE", "peer:1", 5000],
      ["PTTL", "peer:1"],
      ["GET", "peer:missing"],
      ["INCRBY", "counter", 7],
    ]);
    assertEquals(replies.length, 7);
    assertEquals(replies.slice(0, 2), ["OK", "alpha"]);
    assert(replies[2] instanceof Error, "INCR on a non-integer is an Error entry");
    assertMatch((replies[2] as Error).message, /not an integer/);
    assertEquals(replies[3], 1);
    assert(typeof replies[4] === "number" && replies[4] > 0 && replies[4] <= 5000);
    assertEquals(replies.slice(5), [null, 7]);
    assertEquals(await a.link.exec([]), []);
    await assertRejects(() => a.link.exec([[]]), TypeError);
  },
);

Deno.test({ name: "a message published on one link reaches the subscriber of another", ignore }, async () => {
  await using redis = await startOrFail();
  await using sub = await openReady(redis.url);
  await using pub = await openReady(redis.url);
  await sub.link.subscribe("p2p_server:test");
  await sub.link.subscribe("p2p_server:test"); // twice is once
  assertEquals(await pub.link.exec([["PUBLISH", "p2p_server:test", "hello"]]), [1]);
  await sub.events.until(() => sub.events.messages.length > 0, "the message");
  assertEquals(sub.events.messages, [["p2p_server:test", "hello"]]);
  assertEquals(pub.events.messages, []);
});

// Needs no redis-server: nothing listens on the port.
Deno.test(
  "exec rejects at once while Redis is down, and close stops the retries",
  async () => {
    const events = new Recorder();
    const port = freeTcpPort(); // nothing listens there
    const link = openRedisLink(`redis://127.0.0.1:${port}`, events, FAST);
    try {
      assertEquals(link.ready, false);
      // Before the first attempt has failed: not ready, so rejected at once.
      await assertRejects(() => link.exec([["GET", "x"]]), RedisUnavailableError);
      await events.until(() => events.downs.length > 0, "onDown");
      const started = performance.now();
      const error = await link.exec([["GET", "x"]]).then(() => null, (e: unknown) => e);
      assert(error instanceof RedisUnavailableError);
      assertMatch(error.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert(performance.now() - started < 100, "rejected without waiting for a reconnect");
      // Several failed attempts later, still one outage.
      await new Promise((resolve) => setTimeout(resolve, 500));
      assertEquals(events.downs.length, 1);
      assertEquals(events.readies, 0);
      await link.subscribe("kept"); // accepted while down
    } finally {
      await link.close();
    }
    await assertRejects(
      () => link.exec([["GET", "x"]]),
      (e: unknown) => e instanceof RedisUnavailableError && /closed/.test(e.message),
    );
    await assertRejects(() => link.subscribe("later"), RedisUnavailableError);
  },
);

Deno.test({
  name: "a killed server fires onDown once; after a restart onReady fires and pub/sub works again",
  ignore,
}, async () => {
  await using redis = await startOrFail();
  await using sub = await openReady(redis.url);
  await using pub = await openReady(redis.url);
  await sub.link.subscribe("p2p_server:peers");
  await publishUntilSeen(pub.link, sub.events, "p2p_server:peers", "before");

  await redis.kill();
  await sub.events.until(() => sub.events.downs.length > 0, "onDown of the subscriber's link");
  await pub.events.until(() => pub.events.downs.length > 0, "onDown of the publisher's link");
  assertEquals(sub.link.ready, false);
  await assertRejects(() => pub.link.exec([["PING"]]), RedisUnavailableError);
  // Let a few reconnect attempts fail: still one onDown per outage.
  await new Promise((resolve) => setTimeout(resolve, 600));
  assertEquals(sub.events.downs.length, 1);
  assertMatch(sub.events.downs[0]!, /^Redis at "redis:\/\/127\.0\.0\.1:\d+" is unreachable: /);

  await redis.restart();
  await sub.events.until(
    () => sub.events.readies === 2,
    "onReady of the subscriber's link after the restart",
  );
  await pub.events.until(() => pub.events.readies === 2, "onReady of the publisher's link after the restart");
  assert(sub.link.ready && pub.link.ready);
  // onReady promises the subscription is back: the first PUBLISH already reaches it.
  assertEquals(await pub.link.exec([["PUBLISH", "p2p_server:peers", "after"]]), [1]);
  await sub.events.until(
    () => sub.events.messages.some(([, m]) => m === "after"),
    "the message after the restart",
  );
  assertEquals(await pub.link.exec([["GET", "gone"]]), [null], "the restarted server is empty");
  assertEquals(sub.events.downs.length, 1);
});

Deno.test({ name: "a pipeline in flight rejects when the connection is lost", ignore }, async () => {
  await using redis = await startOrFail();
  await using a = await openReady(redis.url);
  // BLPOP holds the reply back, so the pipeline is still in flight when the server dies.
  const pending = a.link.exec([["SET", "k", "v"], ["BLPOP", "p2p_server:never", 20]]);
  const outcome = pending.then(() => null, (e: unknown) => e);
  await new Promise((resolve) => setTimeout(resolve, 100));
  const started = performance.now();
  await redis.kill();
  const error = await outcome;
  assert(error instanceof RedisUnavailableError, `rejected with ${error}`);
  assertMatch(error.message, /^Lost the connection to Redis/);
  assert(performance.now() - started < 5000);
});

Deno.test(
  { name: "credentials never show in errors, onDown reasons or thrown messages", ignore },
  async () => {
    const password = "correct-horse-S3cret";
    const wrong = "wrong-battery-S3cret";
    const user = "cluster-user-Name";
    await using redis = await startOrFail({ password });
    const [, hostPort] = redis.url.split("//");

    // The client must not print anything of its own either.
    const printed: string[] = [];
    const saved = { warn: console.warn, error: console.error, log: console.log, info: console.info };
    const capture = (...args: unknown[]) => void printed.push(args.map(String).join(" "));
    Object.assign(console, { warn: capture, error: capture, log: capture, info: capture });
    const texts: string[] = [];
    try {
      const refused = [
        `redis://:${wrong}@${hostPort}`,
        `redis://${user}:${wrong}@${hostPort}`,
        `redis://u:${wrong}@${hostPort}`,
      ];
      for (const url of refused) {
        const events = new Recorder();
        const link = openRedisLink(url, events, FAST);
        try {
          await events.until(() => events.downs.length > 0, "onDown for a refused password");
          texts.push(...events.downs);
          const error = await link.exec([["GET", "x"]]).then(() => null, (e: unknown) => e);
          assert(error instanceof RedisUnavailableError);
          texts.push(error.message, String(error.stack));
          assertEquals(events.readies, 0);
        } finally {
          await link.close();
        }
      }
      for (
        const url of [
          `redis://:${wrong}@${hostPort}/x`,
          `redis://${user}:${wrong}@:1`,
          `http://:${wrong}@a:1`,
        ]
      ) {
        const error = assertThrowsTypeError(() => openRedisLink(url, new Recorder()));
        texts.push(error.message);
        assertMatch(error.message, /\*\*\*/);
      }
      // The right password works, and a refusal reply does not echo it.
      await using ok = await openReady(`redis://:${password}@${hostPort}`);
      const [reply] = await ok.link.exec([["AUTH", password, "extra"]]);
      assert(reply instanceof Error);
      texts.push(reply.message);
    } finally {
      Object.assign(console, saved);
    }
    texts.push(...printed);
    assert(texts.length >= 8);
    for (const text of texts) {
      for (const secret of [password, wrong, user]) {
        assert(!text.includes(secret), `"${text}" shows a credential`);
      }
    }
    assertMatch(texts[0]!, /WRONGPASS|NOAUTH|invalid/i);
    // A short user name is hidden where it stands alone, not inside other words.
    assert(texts.some((t) => t.includes("username-password")), texts.join("\n"));
  },
);

function assertThrowsTypeError(f: () => unknown): TypeError {
  let caught: unknown;
  assertThrows(() => {
    try {
      f();
    } catch (error) {
      caught = error;
      throw error;
    }
  }, TypeError);
  return caught as TypeError;
}

Deno.test("redactRedisUrl hides the user name and password and keeps the rest", () => {
  const cases: [string, string][] = [
    ["redis://127.0.0.1:6379", "redis://127.0.0.1:6379"],
    ["redis://127.0.0.1:6379/3", "redis://127.0.0.1:6379/3"],
    ["redis://:s3cret@10.0.0.5:6379", "redis://***@10.0.0.5:6379"],
    ["redis://app:s3cret@10.0.0.5:6379/2", "redis://***@10.0.0.5:6379/2"],
    ["redis://app@redis.internal:6379", "redis://***@redis.internal:6379"],
    ["redis://a:p@ss@[::1]:6379", "redis://***@[::1]:6379"],
    ["redis://:pw@host:notaport/x", "redis://***@host:notaport/x"],
    ["redis://host:6379/0?x=a@b", "redis://host:6379/0?x=a@b"],
    ["user:pw@host:6379", "***@host:6379"],
    ["", ""],
  ];
  for (const [url, shown] of cases) assertEquals(redactRedisUrl(url), shown, url);
});

Deno.test("openRedisLink refuses malformed URLs and options at once", () => {
  const events = new Recorder();
  for (
    const url of [
      "not a url",
      "http://127.0.0.1:6379",
      "redis://127.0.0.1:0",
      "redis-sentinel://127.0.0.1:26379",
      "redis-sentinel://127.0.0.1:26379/master/db",
      "redis://a:1,:2",
      "redis://127.0.0.1:6379/db",
      "redis://127.0.0.1:6379/1?timeout=1",
    ]
  ) {
    assertThrows(() => openRedisLink(url, events), TypeError, url);
  }
  assertThrows(
    () => openRedisLink("rediss://127.0.0.1:6379", events, { tls: { caFile: "/nonexistent/ca.pem" } }),
    TypeError,
    'Cannot read the TLS CA file "/nonexistent/ca.pem"',
  );
  assertThrows(() => openRedisLink("redis://127.0.0.1:6379", events, { reconnectMaxMs: 0 }), RangeError);
  assertThrows(() => openRedisLink("redis://127.0.0.1:6379", events, { connectTimeoutMs: NaN }), RangeError);
});

Deno.test("keySlot computes Redis Cluster slots, hash tags included", () => {
  // CRC16/XMODEM's check value, and the slot Redis gives "foo".
  assertEquals(keySlot("123456789"), 0x31c3);
  assertEquals(keySlot("foo"), 12182);
  // Only the first {...} with something inside counts; "{}" does not.
  assertEquals(keySlot("{user1000}.following"), keySlot("user1000"));
  assertEquals(keySlot("foo{bar}{zap}"), keySlot("bar"));
  assertEquals(keySlot("foo{{bar}}zap"), keySlot("{bar"));
  assert(keySlot("foo{}{bar}") !== keySlot("bar"));
  assertEquals(keySlot("{test:}peers"), keySlot("{test:}to:a"));
});

Deno.test("describeTlsFailure tells a missing client certificate from a refused server certificate", () => {
  const required = "received fatal alert: CertificateRequired";
  assertEquals(
    describeTlsFailure(required),
    `TLS: the server requires a client certificate (${required}); set cluster.tls_cert_file and cluster.tls_key_file`,
  );
  // The same alert with a certificate configured still says a certificate is required (none was sent).
  assertMatch(describeTlsFailure(required, { clientCertificate: true }), /requires a client certificate/);
  // TLS 1.2 servers (OpenSSL's wording) refuse a missing certificate with other alerts.
  assertMatch(
    describeTlsFailure("sslv3 alert bad certificate"),
    /^TLS: the server requires a client certificate/,
  );
  assertMatch(
    describeTlsFailure("received fatal alert: UnknownCA", { clientCertificate: true }),
    /^TLS: the server did not accept the client certificate .*cluster\.tls_cert_file/,
  );
  // A server certificate this side refuses is about the CA and the name, not the client certificate.
  assertMatch(
    describeTlsFailure("self-signed certificate in certificate chain"),
    /^TLS: the server's certificate was not accepted .*cluster\.tls_ca_file/,
  );
  assertMatch(describeTlsFailure("invalid peer certificate: UnknownIssuer"), /server's certificate was not/);
  assertMatch(describeTlsFailure("wrong version number"), /is the server speaking TLS on this port\?/);
  assertEquals(
    describeTlsFailure("connect ECONNREFUSED 127.0.0.1:6380"),
    "connect ECONNREFUSED 127.0.0.1:6380",
  );
});
