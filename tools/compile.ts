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

/**
 * The V8 flags the server runs with, wherever it is launched (`deno task start`, the compiled binaries, the
 * container image): `--max-semi-space-size=4` caps each of the two semi-spaces of V8's young generation at
 * 4 MB. Left to itself V8 grows them while a burst of handshakes keeps many young objects alive (the young
 * generation measured 53 MB after 100,000 handshakes, 8 MB with the cap) and keeps those pages resident
 * afterwards, empty: a quarter of the resident memory of 100,000 idle peers (docs/performance.md, "2026-12-04 (evening): memory per idle peer").
 * V8 reads the flag when the heap is made, so it must be given at launch.
 */
export const V8_FLAGS = ["--max-semi-space-size=4"] as const;

/** {@linkcode V8_FLAGS} as one `deno run`/`deno compile` argument. */
export const V8_FLAGS_ARG = `--v8-flags=${V8_FLAGS.join(",")}`;

/** The `deno compile` arguments for one target. */
export function compileArgs(target: string): string[] {
  const exe = target.includes("windows") ? ".exe" : "";
  return [
    "compile",
    "--unstable-net",
    ...PERMISSIONS,
    V8_FLAGS_ARG,
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
