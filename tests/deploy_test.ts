/**
 * The deployment files: the systemd unit (checked by `systemd-analyze` where it is installed) and the
 * Dockerfile (no Docker engine here: checked against the program's flags, ports and config instead).
 */
import { assert, assertEquals, assertMatch } from "./deps/assert.ts";
import { parseConfigFile, resolveConfig } from "../src/config.ts";
import { compileArgs, PERMISSIONS, V8_FLAGS_ARG } from "../tools/compile.ts";

const ROOT = new URL("../", import.meta.url);
const read = (path: string) => Deno.readTextFile(new URL(path, ROOT));

async function which(command: string): Promise<string | null> {
  for (const dir of (Deno.env.get("PATH") ?? "/usr/bin:/bin").split(":")) {
    try {
      const info = await Deno.stat(`${dir}/${command}`);
      if (info.isFile) return `${dir}/${command}`;
    } catch {
      // not here
    }
  }
  return null;
}

/** The unit with ExecStart pointing at an executable that exists here (verify checks it). */
async function unitForVerify(dir: string): Promise<string> {
  const unit = await read("deploy/p2p_server.service");
  const path = `${dir}/p2p_server.service`;
  await Deno.writeTextFile(
    path,
    unit.replace("ExecStart=/usr/local/bin/p2p_server", `ExecStart=${Deno.execPath()}`),
  );
  return path;
}

Deno.test("the systemd unit passes systemd-analyze verify without a warning", async (t) => {
  const analyze = await which("systemd-analyze");
  if (!analyze) {
    console.log("skipped: systemd-analyze is not installed (apt-get install systemd)");
    return;
  }
  const dir = await Deno.makeTempDir({ prefix: "p2p_unit_" });
  try {
    const unit = await unitForVerify(dir);
    const verify = await new Deno.Command(analyze, {
      args: ["verify", unit],
      stdout: "piped",
      stderr: "piped",
      signal: AbortSignal.timeout(30_000),
    }).output();
    const text = new TextDecoder().decode(verify.stdout) + new TextDecoder().decode(verify.stderr);
    assertEquals(verify.code, 0, text);
    // An unknown or misspelt directive is only a warning to systemd, so any output fails the test.
    assertEquals(text.trim(), "", "systemd-analyze verify printed warnings");
    await t.step("its sandbox scores 2.0 or better in systemd-analyze security", async () => {
      const security = await new Deno.Command(analyze, {
        args: ["security", "--offline=yes", "--no-pager", unit],
        stdout: "piped",
        stderr: "piped",
        env: { SYSTEMD_COLORS: "0" },
        signal: AbortSignal.timeout(30_000),
      }).output();
      const out = new TextDecoder().decode(security.stdout);
      const score = /Overall exposure level for \S+: ([\d.]+)/.exec(out)?.[1];
      assert(score !== undefined, out + new TextDecoder().decode(security.stderr));
      assert(Number(score) <= 2.0, `exposure ${score}:\n${out}`);
    });
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the systemd unit sandboxes the server and keeps its identity in the state directory", async () => {
  const unit = await read("deploy/p2p_server.service");
  for (
    const line of [
      "DynamicUser=yes",
      "StateDirectory=p2p_server",
      "ProtectSystem=strict",
      "ProtectHome=yes",
      "NoNewPrivileges=yes",
      "CapabilityBoundingSet=",
      "RestartPreventExitStatus=2",
      "ExecStart=/usr/local/bin/p2p_server --config /etc/p2p_server/config.json",
    ]
  ) assert(unit.split("\n").includes(line), `missing: ${line}`);
  // V8's JIT needs writable executable memory: this option would kill the server at start.
  assert(!/^MemoryDenyWriteExecute=yes/m.test(unit), "MemoryDenyWriteExecute=yes breaks V8");
  const { config, unknownKeys } = parseConfigFile(await read("deploy/config.json"), "deploy/config.json");
  assertEquals(unknownKeys, []);
  const resolved = resolveConfig(config);
  assertEquals(resolved.identityFile, "/var/lib/p2p_server/identity.pem");
});

Deno.test("the Dockerfile builds with the release flags and runs non-root with the ports and health check", async () => {
  const file = await read("Dockerfile");
  const ci = await read(".ci/run");
  const pinned = /deno@(\d+\.\d+\.\d+)/.exec(ci)?.[1];
  assertMatch(file, new RegExp(`^FROM denoland/deno:${pinned?.replaceAll(".", "\\.")} AS build$`, "m"));
  const compile = /RUN (deno compile[^&]*)/.exec(file.replaceAll("\\\n", " "))?.[1] ?? "";
  for (const flag of ["--frozen", "--unstable-net", ...PERMISSIONS, V8_FLAGS_ARG]) {
    assert(compile.split(/\s+/).includes(flag), `deno compile lacks ${flag}: ${compile}`);
  }
  const froms = [...file.matchAll(/^FROM (\S+)/gm)].map((m) => m[1]!);
  assertEquals(froms.at(-1), "gcr.io/distroless/cc-debian12:nonroot");
  const user = /^USER (\S+)$/m.exec(file)?.[1] ?? "";
  assert(user !== "" && !/^(0|root)(:|$)/.test(user), `runs as "${user}"`);

  const { config } = parseConfigFile(await read("deploy/container.json"), "deploy/container.json");
  const resolved = resolveConfig(config);
  const udpPort = resolved.listenAddress.split(":").at(-1);
  const opsPort = resolved.metricsAddress?.split(":").at(-1);
  const exposed = /^EXPOSE (.+)$/m.exec(file)?.[1]?.split(/\s+/) ?? [];
  assertEquals(exposed.sort(), [`${udpPort}/udp`, `${opsPort}/tcp`].sort());
  assertMatch(
    file,
    new RegExp(`HEALTHCHECK [^\\n]*\\\\\\n\\s+CMD \\[.*"http://127\\.0\\.0\\.1:${opsPort}/health"\\]`),
  );
  assertEquals(resolved.identityFile?.startsWith("/var/lib/p2p_server/"), true);
  assertMatch(file, /^VOLUME \/var\/lib\/p2p_server$/m);

  // Everything the build stage copies gets past .dockerignore.
  const ignore = (await read(".dockerignore")).split("\n").filter((l) => l.startsWith("!"));
  const copied = [...file.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1]!.split(" "));
  for (const path of copied) assert(ignore.includes(`!${path}`), `.dockerignore keeps out ${path}`);
});

Deno.test("the start task and the compiled binaries run with the same permissions and V8 flags", async () => {
  const tasks = JSON.parse(await read("deno.json")).tasks as Record<string, string>;
  const start = tasks.start!.split(/\s+/);
  for (const flag of [...PERMISSIONS, V8_FLAGS_ARG]) assert(start.includes(flag), `start task lacks ${flag}`);
  assert(start.indexOf(V8_FLAGS_ARG) < start.indexOf("main.ts"), "a Deno flag goes before the script");
  for (const flag of [...PERMISSIONS, V8_FLAGS_ARG]) {
    assert(compileArgs("x86_64-unknown-linux-gnu").includes(flag), `deno compile lacks ${flag}`);
  }
});
