// The CI entry point restates deno's test count as one closing line; the count's shape changes when tests have
// steps, and a shape it cannot read must never fail the run (the exit status is deno's alone).
import { assertEquals } from "./deps/assert.ts";

async function summary(log: string): Promise<{ code: number; out: string }> {
  const path = await Deno.makeTempFile();
  try {
    await Deno.writeTextFile(path, log);
    const { code, stdout } = await new Deno.Command("bash", {
      args: [new URL("../.ci/summary", import.meta.url).pathname, path],
      stdout: "piped",
      stderr: "inherit",
    }).output();
    return { code, out: new TextDecoder().decode(stdout) };
  } finally {
    await Deno.remove(path);
  }
}

Deno.test(".ci/summary reads the count with and without steps, and never fails on a log without one", async () => {
  assertEquals(await summary("ok | 519 passed | 0 failed | 6 ignored (2m15s)\n"), {
    code: 0,
    out: "tests: 519 passed, 0 failed\n",
  });
  assertEquals(await summary("x\nok | 524 passed (13 steps) | 2 failed | 1 ignored (1m47s)\n"), {
    code: 0,
    out: "tests: 524 passed, 2 failed\n",
  });
  assertEquals(await summary("error: Module not found\n"), { code: 0, out: "" });
});
