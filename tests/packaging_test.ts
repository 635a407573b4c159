/**
 * What a user gets: the first run downloads only the server's npm packages, the two lock files agree, and
 * `deno publish --dry-run` succeeds with only the library, the program and their documents.
 */
import { assert, assertEquals } from "./deps/assert.ts";

const ROOT = new URL("../", import.meta.url);
const DENO = Deno.execPath();

/** npm packages (name, no version) the server loads: the logger, and the Redis client with its own deps. */
const SERVER_PACKAGES = [
  "@ioredis/commands",
  "@logtape/logtape",
  "cluster-key-slot",
  "debug",
  "denque",
  "ioredis",
  "ms",
  "redis-errors",
  "standard-as-callback",
];

interface Lock {
  specifiers: Record<string, string>;
  npm: Record<string, { integrity: string }>;
}

async function readLock(path: string): Promise<Lock> {
  return JSON.parse(await Deno.readTextFile(new URL(path, ROOT))) as Lock;
}

/** `name@version` -> `name` (scoped names keep their scope). */
function packageName(key: string): string {
  return key.slice(0, key.lastIndexOf("@"));
}

/** Directory names under a DENO_DIR's npm registry folder: `name` or `@scope/name`. */
async function downloaded(denoDir: string): Promise<string[]> {
  const names: string[] = [];
  const npm = `${denoDir}/npm`;
  for await (const registry of Deno.readDir(npm)) {
    if (!registry.isDirectory) continue;
    for await (const entry of Deno.readDir(`${npm}/${registry.name}`)) {
      if (!entry.isDirectory) continue;
      if (!entry.name.startsWith("@")) {
        names.push(entry.name);
        continue;
      }
      for await (const scoped of Deno.readDir(`${npm}/${registry.name}/${entry.name}`)) {
        if (scoped.isDirectory) names.push(`${entry.name}/${scoped.name}`);
      }
    }
  }
  return names.sort();
}

for (
  const [how, args] of [
    ["deno run main.ts --help", [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      "--allow-env",
      "main.ts",
      "--help",
    ]],
    ["deno task start --help", ["task", "start", "--help"]],
  ] as const
) {
  Deno.test(`the first run of the server (${how}, empty DENO_DIR) downloads only the server's npm packages`, async () => {
    const denoDir = await Deno.makeTempDir({ prefix: "p2p_first_run_" });
    try {
      const out = await new Deno.Command(DENO, {
        args: [...args],
        cwd: ROOT,
        env: { DENO_DIR: denoDir, NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(120_000),
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assertEquals(out.code, 0, stderr);
      assert(new TextDecoder().decode(out.stdout).startsWith("p2p_server"), "no usage text");
      const names = await downloaded(denoDir);
      assertEquals(names, SERVER_PACKAGES, `downloaded: ${names.join(", ")}\n${stderr}`);
      // The download log agrees: no tarball of another package was fetched.
      for (const line of stderr.split("\n").filter((l) => l.includes(".tgz"))) {
        const tarball = /\/-\/([^/]+)-\d[^/]*\.tgz$/.exec(line)?.[1];
        assert(tarball && SERVER_PACKAGES.some((p) => p.endsWith(tarball)), `unexpected download: ${line}`);
      }
    } finally {
      await Deno.remove(denoDir, { recursive: true });
    }
  });
}

Deno.test("deno.lock holds exactly the server's packages; tests/deno.lock adds only test packages", async () => {
  const server = await readLock("deno.lock");
  const tests = await readLock("tests/deno.lock");
  assertEquals(Object.keys(server.npm).map(packageName).sort(), SERVER_PACKAGES);
  for (const [key, entry] of Object.entries(server.npm)) {
    assertEquals(tests.npm[key]?.integrity, entry.integrity, `${key} differs between the two lock files`);
  }
  for (const [specifier, version] of Object.entries(server.specifiers)) {
    assertEquals(tests.specifiers[specifier], version, `${specifier} differs between the two lock files`);
  }
  const extra = Object.keys(tests.npm).filter((k) => !(k in server.npm)).map(packageName);
  assertEquals(extra, ["playwright-core"]);
});

Deno.test("deno publish --dry-run succeeds and publishes only the library, the program and their documents", async () => {
  const out = await new Deno.Command(DENO, {
    args: ["publish", "--dry-run", "--allow-dirty"],
    cwd: ROOT,
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(180_000),
  }).output();
  const text = new TextDecoder().decode(out.stdout) + new TextDecoder().decode(out.stderr);
  assertEquals(out.code, 0, text);
  const root = ROOT.href;
  const files = [...text.matchAll(/^\s+(file:\/\/\S+) \(/gm)].map((m) => m[1]!.slice(root.length)).sort();
  const allowed =
    /^(mod\.ts|main\.ts|deno\.json|README\.md|LICENSE|config\.json|config\.schema\.json|docs\/[a-z_]+\.md|src\/.+\.ts)$/;
  for (const file of files) assert(allowed.test(file), `published but should not be: ${file}`);
  for (const file of ["LICENSE", "README.md", "mod.ts", "main.ts", "src/server.ts"]) {
    assert(files.includes(file), `not published: ${file} (published: ${files.join(", ")})`);
  }
  assert(!files.some((f) => /playwright|deps\/assert/.test(f)), "a test-only module is published");
  const license = await Deno.readTextFile(new URL("LICENSE", ROOT));
  assert(license.startsWith("MIT License\n\nCopyright (c) 2026 p2p_server contributors\n"), "LICENSE header");
  const config = JSON.parse(await Deno.readTextFile(new URL("deno.json", ROOT)));
  assertEquals(config.license, "MIT");
});
