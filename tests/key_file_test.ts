/**
 * The identity key file: `loadOrCreateIdentity` (created 0600 as PKCS#8 PEM Ed25519, the same identity on
 * every later load, refused when readable by others, corrupt or not a file, the key never in a message), and
 * the program's use of it (`identity_file`): a stable node id across restarts, exit 2 with one line for a bad
 * file, and no key material on stdout or stderr.
 *
 * Exit codes after SIGTERM are not checked here: the program prints its listening line (and logs its node
 * id) before it installs its signal handlers, and the first `Deno.addSignalListener` takes a few ms, so a
 * SIGTERM sent as soon as those lines appear may end it with 143 instead of 0 (tests/e2e_test.ts checks the
 * clean exit after some traffic).
 *
 * @module
 */
import { createPrivateKey, createPublicKey, generateKeyPairSync } from "node:crypto";
import { assert, assertEquals, assertMatch, assertStrictEquals, assertThrows } from "./deps/assert.ts";
import { type Identity, nodeIdForKey, toBase64Url } from "../src/core/auth.ts";
import { KeyFileError, loadOrCreateIdentity } from "../src/key_file.ts";
import { P2PClient } from "../mod.ts";
import {
  childEnv,
  PROCESS_DEADLINE_MS,
  PROJECT_ROOT,
  RUN_FLAGS,
  runScript,
  startServer,
  TEST_CONFIG,
} from "./helpers/server_process.ts";

const PEM_HEADER = "-----BEGIN PRIVATE KEY-----";
const PEM_FOOTER = "-----END PRIVATE KEY-----";

/** A temp directory removed (with everything in it) on dispose. */
async function tempDir(): Promise<{ path: string } & AsyncDisposable> {
  const path = await Deno.makeTempDir({ prefix: "p2p_key_file_test_" });
  return {
    path,
    async [Symbol.asyncDispose]() {
      await Deno.remove(path, { recursive: true });
    },
  };
}

function modeOf(path: string): number {
  const mode = Deno.statSync(path).mode;
  assert(mode !== null, "this platform reports no file modes");
  return mode & 0o777;
}

/** Writes `text` to `path` with exactly `mode` (umask does not apply to chmod). */
function writeWithMode(path: string, text: string, mode: number): void {
  Deno.writeTextFileSync(path, text);
  Deno.chmodSync(path, mode);
}

/** A fresh Ed25519 key as PKCS#8 PEM, made here with node:crypto (independently of the code under test). */
function ed25519Pem(): string {
  return String(generateKeyPairSync("ed25519").privateKey.export({ format: "pem", type: "pkcs8" }));
}

/**
 * Every form a key file's secret could leak in: each base64 line of the PEM body, the whole body, and the
 * 32-byte private seed (the end of the PKCS#8 DER) as hex, base64 and base64url.
 */
function secretForms(pem: string): string[] {
  const lines = pem.split("\n").map((l) => l.trim()).filter((l) => l !== "" && !l.startsWith("-----"));
  const body = lines.join("");
  const der = Uint8Array.fromBase64(body);
  const seed = der.slice(der.length - 32);
  const forms = [
    ...lines,
    body,
    Array.from(seed, (b) => b.toString(16).padStart(2, "0")).join(""),
    seed.toBase64(),
    seed.toBase64({ alphabet: "base64url", omitPadding: true }),
  ];
  // Long enough pieces that a match cannot be chance.
  for (const form of forms) assert(form.length >= 40, `secret form too short to search for: ${form.length}`);
  return forms;
}

function assertNoSecret(text: string, pem: string, where: string): void {
  for (const form of secretForms(pem)) {
    assert(!text.includes(form), `${where} contains key material (${form.slice(0, 6)}...):\n${text}`);
  }
  assert(!text.includes(PEM_HEADER), `${where} contains a PEM header:\n${text}`);
}

/** Calls `fn`, asserts it throws a KeyFileError for `path` and returns it. */
function keyFileError(fn: () => unknown, path: string): KeyFileError {
  let error: KeyFileError | undefined;
  try {
    fn();
  } catch (e) {
    if (!(e instanceof KeyFileError)) throw e;
    error = e;
  }
  assert(error, "expected a KeyFileError, nothing was thrown");
  assertStrictEquals(error.path, path);
  assertStrictEquals(error.name, "KeyFileError");
  assert(!error.message.includes("\n"), `the message must be one line: ${JSON.stringify(error.message)}`);
  assert(error.message.includes(path), `the message must name the file: ${error.message}`);
  return error;
}

function assertSameIdentity(a: Identity, b: Identity): void {
  assertStrictEquals(a.nodeId, b.nodeId);
  assertStrictEquals(a.publicKeyText, b.publicKeyText);
  assertEquals(a.publicKey, b.publicKey);
  assert(a.privateKey.equals(b.privateKey), "the private keys differ");
}

// ------------------------------------------------------------------------------------------ the library

Deno.test("loadOrCreateIdentity creates a 0600 PKCS#8 PEM Ed25519 key file and returns its identity", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  const identity = loadOrCreateIdentity(path);

  assertStrictEquals(modeOf(path), 0o600);
  const pem = Deno.readTextFileSync(path);
  assert(pem.startsWith(`${PEM_HEADER}\n`), `not a PKCS#8 PEM:\n${pem}`);
  assertStrictEquals(pem.trimEnd().split("\n").at(-1), PEM_FOOTER);
  const key = createPrivateKey({ key: pem, format: "pem" });
  assertStrictEquals(key.asymmetricKeyType, "ed25519");
  // The file's key is the identity's: its public half and the id derived from it.
  const spki = new Uint8Array(createPublicKey(key).export({ format: "der", type: "spki" }));
  const publicKey = spki.slice(spki.length - 32);
  assertEquals(identity.publicKey, publicKey);
  assertStrictEquals(identity.publicKeyText, toBase64Url(publicKey));
  assertStrictEquals(identity.publicKeyText.length, 43);
  assertStrictEquals(identity.nodeId, nodeIdForKey(publicKey));
  assertMatch(identity.nodeId, /^[0-9a-f]{8}-[0-9a-f]{4}-8[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert(identity.privateKey.equals(key), "the identity's private key is not the file's");
});

Deno.test("loadOrCreateIdentity returns the same identity on every later load and leaves the file alone", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  const first = loadOrCreateIdentity(path);
  const pem = Deno.readTextFileSync(path);
  const second = loadOrCreateIdentity(path);
  const third = loadOrCreateIdentity(path);
  assertSameIdentity(first, second);
  assertSameIdentity(first, third);
  assertStrictEquals(Deno.readTextFileSync(path), pem);
  assertStrictEquals(modeOf(path), 0o600);
  // Another file is another identity.
  const other = loadOrCreateIdentity(`${dir.path}/other.pem`);
  assert(other.nodeId !== first.nodeId && other.publicKeyText !== first.publicKeyText);
});

Deno.test("loadOrCreateIdentity loads an Ed25519 key written by another tool, also owner-read-only (0400)", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/external.pem`;
  const pem = ed25519Pem();
  writeWithMode(path, pem, 0o400);
  const identity = loadOrCreateIdentity(path);
  const key = createPrivateKey({ key: pem, format: "pem" });
  assert(identity.privateKey.equals(key));
  assertStrictEquals(modeOf(path), 0o400, "loading must not change the mode");
});

for (const mode of [0o644, 0o640, 0o604, 0o660, 0o700 | 0o070, 0o666]) {
  const text = mode.toString(8).padStart(4, "0");
  Deno.test(`a key file with mode ${text} is refused, naming the file and the mode and nothing of the key`, async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/id.pem`;
    const pem = ed25519Pem();
    writeWithMode(path, pem, mode);
    const error = keyFileError(() => loadOrCreateIdentity(path), path);
    assert(error.message.includes(`mode ${text}`), `the message must give the mode: ${error.message}`);
    assert(error.message.includes("chmod 600"), `the message must say how to fix it: ${error.message}`);
    assertNoSecret(error.message, pem, "the error message");
    assertNoSecret(String(error.stack), pem, "the error stack");
    // Refusing changes nothing.
    assertStrictEquals(Deno.readTextFileSync(path), pem);
    assertStrictEquals(modeOf(path), mode);
  });
}

Deno.test("a key file created by the first load is refused once others may read it, and accepted again after chmod 600", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  const first = loadOrCreateIdentity(path);
  const pem = Deno.readTextFileSync(path);
  Deno.chmodSync(path, 0o644);
  const error = keyFileError(() => loadOrCreateIdentity(path), path);
  assertNoSecret(error.message, pem, "the error message");
  Deno.chmodSync(path, 0o600);
  assertSameIdentity(loadOrCreateIdentity(path), first);
});

/** Corrupt contents, each with the text a message must not repeat (`secret`). */
function corruptCases(): { name: string; text: string; pem?: string }[] {
  const pem = ed25519Pem();
  const lines = pem.trimEnd().split("\n");
  const body = lines.slice(1, -1).join("");
  const x25519 = String(generateKeyPairSync("x25519").privateKey.export({ format: "pem", type: "pkcs8" }));
  return [
    { name: "garbage text", text: "this is not a key at all: s3cr3t-payload-0123456789abcdef\n" },
    {
      name: "a PEM with a truncated body",
      text: `${PEM_HEADER}\n${body.slice(0, 40)}\n${PEM_FOOTER}\n`,
      pem,
    },
    {
      name: "a PEM whose body is flipped",
      text: `${PEM_HEADER}\n${[...body].reverse().join("")}\n${PEM_FOOTER}\n`,
      pem,
    },
    { name: "the body without PEM armour", text: `${body}\n`, pem },
    { name: "an X25519 key (wrong type)", text: x25519, pem: x25519 },
    { name: "binary bytes", text: "\u0000\u0001\u00ff\ufffd".repeat(16) },
  ];
}

for (const c of corruptCases()) {
  Deno.test(`a corrupt key file (${c.name}) is refused with a clear message`, async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/id.pem`;
    writeWithMode(path, c.text, 0o600);
    const error = keyFileError(() => loadOrCreateIdentity(path), path);
    assertMatch(error.message, /corrupt/);
    assertMatch(error.message, /Ed25519 private key in PKCS#8 PEM/);
    if (c.pem) assertNoSecret(error.message, c.pem, "the error message");
    if (c.text.length >= 20) {
      assert(
        !error.message.includes(c.text.trim().slice(0, 20)),
        `the message repeats the file: ${error.message}`,
      );
    }
    // Refusing does not replace the file with a new key.
    assertStrictEquals(Deno.readTextFileSync(path), c.text);
  });
}

for (
  const [mode, what] of [[0o644, "read"], [0o604, "read"], [0o620, "written"], [0o602, "written"], [
    0o660,
    "read and written",
  ], [0o666, "read and written"]] as const
) {
  const text = mode.toString(8).padStart(4, "0");
  Deno.test(`a key file with mode ${text} is refused as one that may be ${what} by others`, async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/id.pem`;
    writeWithMode(path, ed25519Pem(), mode);
    const error = keyFileError(() => loadOrCreateIdentity(path), path);
    assert(error.message.includes(`may be ${what} by others (mode ${text})`), error.message);
  });
}

for (const text of ["", "\n", "  \n\n"]) {
  Deno.test(`an existing empty key file (${JSON.stringify(text)}) is refused with a message saying it is empty and what to do`, async () => {
    await using dir = await tempDir();
    const path = `${dir.path}/id.pem`;
    writeWithMode(path, text, 0o600);
    const error = keyFileError(() => loadOrCreateIdentity(path), path);
    assertMatch(error.message, /is empty, not an Ed25519 private key in PKCS#8 PEM/);
    assertMatch(error.message, /delete the file to have a new one created/);
    assertStrictEquals(Deno.readTextFileSync(path), text, "refusing leaves the file alone");
  });
}

Deno.test("the key file is created through a temp file: a start never sees it empty, and stray temp files (a crash mid-create) do not block a start", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  // What a crash while creating the key leaves behind: empty and partial temp files beside the key's path.
  writeWithMode(`${path}.0123456789ab.tmp`, "", 0o600);
  writeWithMode(`${path}.ba9876543210.tmp`, `${PEM_HEADER}\nMC4CAQAwBQYDK2VwBCIEI`, 0o600);
  const first = loadOrCreateIdentity(path);
  assertStrictEquals(modeOf(path), 0o600);
  assertSameIdentity(loadOrCreateIdentity(path), first);
  // Creating left no temp file of its own behind: only the two strays and the key.
  assertEquals([...Deno.readDirSync(dir.path)].map((e) => e.name).sort(), [
    "id.pem",
    "id.pem.0123456789ab.tmp",
    "id.pem.ba9876543210.tmp",
  ]);
});

Deno.test("two processes creating the same key file at once end with one key, both loading it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  const script = `import { loadOrCreateIdentity } from ${
    JSON.stringify(new URL("../src/key_file.ts", import.meta.url).href)
  };
console.log(loadOrCreateIdentity(${JSON.stringify(path)}).nodeId);`;
  const run = () =>
    new Deno.Command(Deno.execPath(), {
      args: ["eval", "--quiet", script],
      stdout: "piped",
      stderr: "piped",
    }).output();
  const results = await Promise.all([run(), run(), run()]);
  const ids = results.map((r) => new TextDecoder().decode(r.stdout).trim());
  for (const r of results) assert(r.success, new TextDecoder().decode(r.stderr));
  const onDisk = loadOrCreateIdentity(path).nodeId;
  assertEquals(ids, [onDisk, onDisk, onDisk]);
  assertEquals([...Deno.readDirSync(dir.path)].map((e) => e.name), ["id.pem"]);
});

Deno.test("a directory as the key file is refused", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/keys`;
  Deno.mkdirSync(path, { mode: 0o700 });
  const error = keyFileError(() => loadOrCreateIdentity(path), path);
  assertMatch(error.message, /not a regular file/);
  // Also when the directory's mode would pass the permission check, and with a trailing slash.
  keyFileError(() => loadOrCreateIdentity(`${path}/`), `${path}/`);
  assertStrictEquals([...Deno.readDirSync(path)].length, 0, "nothing may be created in the directory");
});

Deno.test("a key file that cannot be created (missing directory) is refused", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/missing/id.pem`;
  const error = keyFileError(() => loadOrCreateIdentity(path), path);
  assertMatch(error.message, /^Cannot create key file/);
});

// ------------------------------------------------------------------------------------------ the program

const NODE_ID_LINE = /\bnode id ([0-9a-f-]{36}),/;

/** The node id from the program's info log line `node id <id>, log level ...`. */
function loggedNodeId(stderr: string): string {
  const m = NODE_ID_LINE.exec(stderr);
  assert(m, `no "node id" line on stderr:\n${stderr}`);
  return m[1]!;
}

Deno.test("the program creates identity_file (0600) on first start, logs its node id, and keeps it across restarts", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/server_identity.pem`;

  let firstId: string;
  let firstOutput: string;
  {
    await using server = await startServer({ config: { identity_file: path }, args: ["--DEBUG"] });
    await server.waitForStderr(NODE_ID_LINE);
    firstId = loggedNodeId(server.stderr);
    assertStrictEquals(modeOf(path), 0o600);
    // A keyed client handshakes (signatures, session keys): the handshake's debug logging leaks nothing.
    const identity = loadOrCreateIdentity(path);
    await using client = new P2PClient({
      server: server.addrText,
      bind: "127.0.0.1:0",
      serverKey: identity.publicKeyText,
    });
    const info = await client.connect();
    assertStrictEquals(info.id, firstId);
    await client.send({ hello: "keyed" });
    await client.disconnect();
    await server.stop();
    firstOutput = server.stdout + server.stderr;
  }
  const pem = Deno.readTextFileSync(path);
  assert(pem.startsWith(PEM_HEADER));
  const identity = loadOrCreateIdentity(path);
  assertStrictEquals(firstId, identity.nodeId, "the logged node id is the key file's");
  assertNoSecret(firstOutput, pem, "the first run's output");

  {
    await using server = await startServer({ config: { identity_file: path } });
    await server.waitForStderr(NODE_ID_LINE);
    assertStrictEquals(loggedNodeId(server.stderr), firstId, "the node id changed across a restart");
    await server.stop();
    assertNoSecret(server.stdout + server.stderr, pem, "the second run's output");
  }
  assertStrictEquals(Deno.readTextFileSync(path), pem, "a restart must not rewrite the key file");
  assertStrictEquals(modeOf(path), 0o600);
});

Deno.test("two programs with different identity files have different node ids", async () => {
  await using dir = await tempDir();
  await using a = await startServer({ config: { identity_file: `${dir.path}/a.pem` } });
  await using b = await startServer({ config: { identity_file: `${dir.path}/b.pem` } });
  await a.waitForStderr(NODE_ID_LINE);
  await b.waitForStderr(NODE_ID_LINE);
  const idA = loggedNodeId(a.stderr);
  const idB = loggedNodeId(b.stderr);
  assert(idA !== idB, "two key files, one node id");
  assertStrictEquals(idA, loadOrCreateIdentity(`${dir.path}/a.pem`).nodeId);
  assertStrictEquals(idB, loadOrCreateIdentity(`${dir.path}/b.pem`).nodeId);
});

/** Runs the program until its node id line, stops it with SIGTERM, and returns what it printed. */
async function runUntilNodeId(
  options: { args: string[]; cwd: string; env?: Record<string, string> },
): Promise<{ stdout: string; stderr: string }> {
  const env = childEnv(options.env);
  for (const name of ["STATE_DIRECTORY", "XDG_STATE_HOME"]) if (!options.env?.[name]) delete env[name];
  const child = new Deno.Command(Deno.execPath(), {
    args: [...RUN_FLAGS, "--config", `${PROJECT_ROOT}deno.json`, `${PROJECT_ROOT}main.ts`, ...options.args],
    cwd: options.cwd,
    env,
    clearEnv: true,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const stdout = new Response(child.stdout).text();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  const killer = setTimeout(() => child.kill("SIGKILL"), PROCESS_DEADLINE_MS);
  let stderr = "";
  try {
    while (!NODE_ID_LINE.test(stderr)) {
      const { value, done } = await reader.read();
      if (done) break;
      stderr += value;
    }
    try {
      child.kill("SIGTERM");
    } catch {
      // it exited already
    }
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      stderr += value;
    }
    await child.status; // 0, or 143 when SIGTERM beat the handlers (see the note at the top)
    const out = await stdout;
    assert(/listening on /.test(out), `the program did not start:\n${stderr}`);
    return { stdout: out, stderr };
  } finally {
    clearTimeout(killer);
    reader.releaseLock();
  }
}

Deno.test("without identity_file the key lives next to the config file, named after it, never in the working directory", async () => {
  await using dir = await tempDir();
  await using cwd = await tempDir();
  const configPath = `${dir.path}/eu-1.json`;
  Deno.writeTextFileSync(configPath, JSON.stringify({ ...TEST_CONFIG, identity_file: undefined }));
  const first = await runUntilNodeId({ args: ["-c", configPath], cwd: cwd.path });
  const path = `${dir.path}/eu-1.identity.pem`;
  assertStrictEquals(modeOf(path), 0o600);
  const id = loadOrCreateIdentity(path).nodeId;
  assertStrictEquals(loggedNodeId(first.stderr), id);
  assertMatch(
    first.stderr,
    new RegExp(`created identity key file ${path} \\(mode 0600\\) for node id ${id}`),
  );
  assertMatch(first.stderr, new RegExp(`identity file ${path} \\(config file\\)`));
  const second = await runUntilNodeId({ args: ["-c", configPath], cwd: cwd.path });
  assertStrictEquals(loggedNodeId(second.stderr), id);
  assert(!second.stderr.includes("created identity key file"), "a restart creates nothing");
  assertEquals([...Deno.readDirSync(dir.path)].map((e) => e.name).sort(), ["eu-1.identity.pem", "eu-1.json"]);
  assertEquals([...Deno.readDirSync(cwd.path)], [], "nothing in the working directory");
  assertNoSecret(
    first.stdout + first.stderr + second.stdout + second.stderr,
    Deno.readTextFileSync(path),
    "output",
  );

  // A second config file in the same directory: a second identity.
  const other = `${dir.path}/eu-2.json`;
  Deno.writeTextFileSync(other, JSON.stringify({ ...TEST_CONFIG, identity_file: undefined }));
  const third = await runUntilNodeId({ args: ["-c", other], cwd: cwd.path });
  assert(loggedNodeId(third.stderr) !== id, "two config files, one node id");
  assertStrictEquals(
    loggedNodeId(third.stderr),
    loadOrCreateIdentity(`${dir.path}/eu-2.identity.pem`).nodeId,
  );
});

Deno.test("under systemd ($STATE_DIRECTORY) the key lives in the state directory; a relative identity_file is read from the config's directory", async () => {
  await using dir = await tempDir();
  await using state = await tempDir();
  const configPath = `${dir.path}/config.json`;
  Deno.writeTextFileSync(configPath, JSON.stringify({ ...TEST_CONFIG, identity_file: undefined }));
  const run = await runUntilNodeId({
    args: ["-c", configPath],
    cwd: dir.path,
    env: { STATE_DIRECTORY: `${state.path}:/nonexistent` },
  });
  const path = `${state.path}/p2p_server_identity.pem`;
  assertStrictEquals(loggedNodeId(run.stderr), loadOrCreateIdentity(path).nodeId);
  assertMatch(run.stderr, new RegExp(`identity file ${path} \\(state directory\\)`));
  assertEquals([...Deno.readDirSync(dir.path)].map((e) => e.name), ["config.json"]);

  Deno.mkdirSync(`${dir.path}/keys`);
  Deno.writeTextFileSync(configPath, JSON.stringify({ ...TEST_CONFIG, identity_file: "keys/node.pem" }));
  await using elsewhere = await tempDir();
  const relative = await runUntilNodeId({ args: ["-c", configPath], cwd: elsewhere.path });
  assertStrictEquals(loggedNodeId(relative.stderr), loadOrCreateIdentity(`${dir.path}/keys/node.pem`).nodeId);
  assertMatch(relative.stderr, new RegExp(`identity file ${dir.path}/keys/node.pem \\(identity file\\)`));
});

/** Asserts a run ended with exit 2 and exactly one `error:` line on stderr naming `path`; returns the line. */
function assertOneErrorLine(
  result: { code: number; stdout: string; stderr: string },
  path: string,
): string {
  assertStrictEquals(result.code, 2, `exit code; stderr:\n${result.stderr}`);
  const lines = result.stderr.split("\n").filter((l) => l.trim() !== "");
  assertStrictEquals(lines.length, 1, `exactly one stderr line, got:\n${result.stderr}`);
  const line = lines[0]!;
  assert(line.startsWith("error: "), line);
  assert(line.includes(path), `the line must name the file: ${line}`);
  assertStrictEquals(result.stdout, "", "nothing on stdout");
  return line;
}

Deno.test("the program exits 2 with one line naming the file when identity_file may be read by others (0644)", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  const pem = ed25519Pem();
  writeWithMode(path, pem, 0o644);
  const result = await runScript({ config: { identity_file: path } });
  const line = assertOneErrorLine(result, path);
  assertMatch(line, /mode 0644/);
  assertNoSecret(result.stdout + result.stderr, pem, "output");
  assertStrictEquals(Deno.readTextFileSync(path), pem, "the refused file must be left alone");
  assertStrictEquals(modeOf(path), 0o644);
});

Deno.test("the program exits 2 with one line when identity_file is corrupt, and leaks nothing of it", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  const pem = ed25519Pem();
  const body = pem.trimEnd().split("\n").slice(1, -1).join("");
  // A damaged copy of a real key: the readable part must not be repeated.
  const damaged = `${PEM_HEADER}\n${body.slice(0, 44)}\n${PEM_FOOTER}\n`;
  writeWithMode(path, damaged, 0o600);
  const result = await runScript({ config: { identity_file: path } });
  const line = assertOneErrorLine(result, path);
  assertMatch(line, /corrupt/);
  assert(!(result.stdout + result.stderr).includes(body.slice(0, 44)), "output repeats the file");
  assertNoSecret(result.stdout + result.stderr, pem, "output");
  assertStrictEquals(Deno.readTextFileSync(path), damaged);

  writeWithMode(path, "garbage\n", 0o600);
  const garbage = await runScript({ config: { identity_file: path } });
  assertMatch(assertOneErrorLine(garbage, path), /corrupt/);
});

Deno.test("the program exits 2 with one line when identity_file is a directory or cannot be created", async () => {
  await using dir = await tempDir();
  const asDir = `${dir.path}/keys`;
  Deno.mkdirSync(asDir, { mode: 0o700 });
  assertMatch(
    assertOneErrorLine(await runScript({ config: { identity_file: asDir } }), asDir),
    /not a regular file/,
  );
  const missing = `${dir.path}/missing/id.pem`;
  assertMatch(
    assertOneErrorLine(await runScript({ config: { identity_file: missing } }), missing),
    /Cannot create key file/,
  );
});

Deno.test("with auth off the program neither reads nor creates identity_file", async () => {
  await using dir = await tempDir();
  const path = `${dir.path}/id.pem`;
  {
    await using server = await startServer({ config: { identity_file: path, auth: "off" } });
    await server.waitForStderr(NODE_ID_LINE);
    await server.stop();
  }
  assertThrows(() => Deno.statSync(path), Deno.errors.NotFound);
  // Not even a bad one stops it.
  writeWithMode(path, "garbage\n", 0o644);
  await using server = await startServer({ config: { identity_file: path, auth: "off" } });
  await server.waitForStderr(NODE_ID_LINE);
  assertStrictEquals(server.exited, null, "the program must keep running");
});
