// The soak tool (`deno task soak`) in a few seconds: it runs, every legitimate operation succeeds under the
// attacks, the per-IP reflection ratio stays within 3x, and it exits 0 with its summary line.
import { assert, assertStrictEquals } from "./deps/assert.ts";

Deno.test("deno task soak, 8 seconds: legitimate clients see no failure under every attack, within 3x", async () => {
  const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "tools/soak.ts", "--seconds", "8", "--sample", "2"],
    cwd: new URL("..", import.meta.url).pathname,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const out = new TextDecoder().decode(stdout);
  const err = new TextDecoder().decode(stderr);
  assertStrictEquals(code, 0, `exit ${code}\n${out}\n${err}`);
  assert(
    /^summary: \d+ legitimate operations, 0 failed \(\d+ routed .*\(\d\.\d\dx per IP\)$/m.test(out),
    out,
  );
  assert((out.match(/^t=\d+s rss /gm) ?? []).length >= 3, out);
});
