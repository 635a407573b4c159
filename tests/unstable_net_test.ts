/**
 * Without `--unstable-net` (Deno's UDP sockets are unstable), the program and the library say which flag is
 * missing instead of failing with `Deno.listenDatagram is not a function`. Runs them with a deno.json that
 * has the project's imports but no `"unstable"` list.
 */
import { assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { childEnv, PROJECT_ROOT } from "./helpers/server_process.ts";
import denoJson from "../deno.json" with { type: "json" };

const EXPECTED = `Deno.listenDatagram is not available: UDP sockets need Deno's --unstable-net flag ` +
  `(run "deno run --unstable-net ...", or add "unstable": ["net"] to deno.json)`;

async function runWithoutUnstable(dir: string, args: string[]): Promise<Deno.CommandOutput> {
  return await new Deno.Command(Deno.execPath(), {
    args: ["run", "--config", `${dir}/deno.json`, "--no-lock", "--allow-all", ...args],
    cwd: dir,
    env: childEnv(),
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(60_000),
  }).output();
}

Deno.test("without --unstable-net the program and the library name the missing flag", async () => {
  const dir = await Deno.makeTempDir({ prefix: "p2p_unstable_" });
  try {
    await Deno.writeTextFile(`${dir}/deno.json`, JSON.stringify({ imports: denoJson.imports }));
    await Deno.writeTextFile(
      `${dir}/config.json`,
      JSON.stringify({ listen_address: "127.0.0.1:0", enable_discovery: false }),
    );
    const program = await runWithoutUnstable(dir, [`${PROJECT_ROOT}main.ts`, "-c", `${dir}/config.json`]);
    const stderr = new TextDecoder().decode(program.stderr);
    assertStrictEquals(program.code, 2, stderr);
    assertEquals(stderr.trim().split("\n").filter((l) => l.startsWith("error:")), [`error: ${EXPECTED}`]);
    assertEquals([...Deno.readDirSync(dir)].map((e) => e.name).sort(), ["config.json", "deno.json"]);

    await Deno.writeTextFile(
      `${dir}/lib.ts`,
      `import { P2PClient, P2PServer, UnstableApiError } from ${JSON.stringify(`${PROJECT_ROOT}mod.ts`)};
const server = new P2PServer({ listenAddress: "127.0.0.1:0", enableDiscovery: false });
for (const attempt of [() => server.listen(), () => new P2PClient({ server: "127.0.0.1:9" }).connect()]) {
  try {
    await attempt();
    console.log("no error");
  } catch (error) {
    console.log(error instanceof UnstableApiError, (error as UnstableApiError).flag, (error as Error).message);
  }
}
`,
    );
    const lib = await runWithoutUnstable(dir, ["lib.ts"]);
    assertStrictEquals(lib.code, 0, new TextDecoder().decode(lib.stderr));
    assertEquals(new TextDecoder().decode(lib.stdout).trim().split("\n"), [
      `true --unstable-net ${EXPECTED}`,
      `true --unstable-net ${EXPECTED}`,
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
