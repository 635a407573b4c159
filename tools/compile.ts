/**
 * `deno task compile [TARGET...]`: builds the single-file p2p_server binary for every release target (or the
 * ones named) into `dist/p2p_server-<target>[.exe]`, with the runtime permissions and `--unstable-net` baked
 * in. `deno compile` downloads Deno's `denort` runtime for each target, so this runs where that download is
 * reachable (the release workflow), not on machines without access to it.
 *
 * @module
 */

/** Targets built for a release. */
export const TARGETS = [
  "x86_64-unknown-linux-gnu",
  "aarch64-unknown-linux-gnu",
  "x86_64-apple-darwin",
  "aarch64-apple-darwin",
  "x86_64-pc-windows-msvc",
] as const;

/** The permissions the binary runs with: UDP sockets, reading the config file, LOG_LEVEL/RUST_LOG. */
export const PERMISSIONS = [
  "--allow-net",
  "--allow-read",
  "--allow-write",
  "--allow-env",
  "--allow-ffi",
] as const;

/** The `deno compile` arguments for one target. */
export function compileArgs(target: string): string[] {
  const exe = target.includes("windows") ? ".exe" : "";
  return [
    "compile",
    "--unstable-net",
    ...PERMISSIONS,
    "--target",
    target,
    "--output",
    `dist/p2p_server-${target}${exe}`,
    "main.ts",
  ];
}

async function build(targets: readonly string[]): Promise<number> {
  for (const target of targets) {
    if (!(TARGETS as readonly string[]).includes(target)) {
      console.error(`error: Unknown target "${target}": expected one of ${TARGETS.join(", ")}`);
      return 2;
    }
  }
  for (const target of targets) {
    console.log(`compiling ${target}`);
    const { code } = await new Deno.Command(Deno.execPath(), { args: compileArgs(target) }).spawn().status;
    if (code !== 0) {
      console.error(`error: deno compile for "${target}" failed with exit code ${code}`);
      return code;
    }
  }
  return 0;
}

if (import.meta.main) Deno.exit(await build(Deno.args.length > 0 ? Deno.args : TARGETS));
