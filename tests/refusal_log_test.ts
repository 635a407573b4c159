/** The refusal log's rate limit: one line each up to the limit, then one summary per window. */
import { assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { RefusalLimiter } from "../src/refusal_log.ts";

Deno.test("the first refusals of a window are logged one by one, the rest summed up once the window is over", () => {
  const limiter = new RefusalLimiter({ limit: 3, windowMs: 10_000 });
  const admitted = [0, 1, 2, 3, 4, 5].map((i) =>
    limiter.admit(i * 100, i % 2 === 0 ? "server_full" : "bad_auth")
  );
  assertEquals(admitted, [true, true, true, false, false, false]);
  assertStrictEquals(limiter.flush(5_000), null, "not before the window has passed");
  assertEquals(limiter.flush(10_000), {
    suppressed: 3,
    byCode: [["bad_auth", 2], ["server_full", 1]],
    seconds: 10,
  });
  assertStrictEquals(limiter.flush(30_000), null, "nothing kept quiet since");
  assertStrictEquals(limiter.admit(30_001, "server_full"), true, "a new window logs again");
});

Deno.test("while refusals keep coming, each window ends in one summary and none is logged alone", () => {
  const limiter = new RefusalLimiter({ limit: 2, windowMs: 1_000 });
  let logged = 0;
  let summed = 0;
  for (let t = 0; t < 10_000; t += 10) {
    if (limiter.admit(t, "stale")) logged++;
    const s = limiter.flush(t);
    if (s) summed += s.suppressed;
  }
  // 1000 refusals: 2 lines per 1 s window, the rest in summaries (the last window's still pending).
  assertStrictEquals(logged, 20);
  const rest = limiter.flush(20_000)?.suppressed ?? 0;
  assertStrictEquals(logged + summed + rest, 1000);
});
