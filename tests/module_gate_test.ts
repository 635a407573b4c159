/**
 * The module gate (tools/module_gate.ts) on the real tree, and on planted violations in
 * tests/fixtures/module_gate/ to prove that each check can fail.
 */
import { assert, assertEquals } from "./deps/assert.ts";
import {
  checkPurity,
  findCycles,
  formatViolations,
  longFiles,
  MAX_LINES,
  type PurityRules,
  reachedDependencies,
  scanSource,
  testOnly,
  TIMER_SHELLS,
  timerUsers,
} from "../tools/module_gate.ts";

/**
 * Import cycles in src/ that exist today and are being removed by the split of src/endpoint.ts (issue 14).
 * The ratchet test below fails on any other cycle, and when one of these disappears (then delete it here).
 * When this list is empty, the strict test "no import cycle in src/" runs.
 */
const KNOWN_CYCLES: string[][] = [];

/**
 * Files in src/ over MAX_LINES lines without a one-piece comment today, being split by issue 14. Same
 * ratchet: a new long file fails, a listed file that got short fails until it is deleted here; when the list
 * is empty the strict test runs.
 */
const KNOWN_LONG_FILES: string[] = [];

if (KNOWN_CYCLES.length > 0) {
  console.log(
    `module_gate_test: "no import cycle in src/" is ignored while KNOWN_CYCLES lists ${KNOWN_CYCLES.length} ` +
      `cycle(s) being removed (${KNOWN_CYCLES.map((c) => c.join(" -> ")).join("; ")})`,
  );
}
if (KNOWN_LONG_FILES.length > 0) {
  console.log(
    `module_gate_test: "no file in src/ over ${MAX_LINES} lines" is ignored while KNOWN_LONG_FILES lists ` +
      `${KNOWN_LONG_FILES.length} file(s) being split (${KNOWN_LONG_FILES.join(", ")})`,
  );
}

const FIXTURES = new URL("./fixtures/module_gate/", import.meta.url);
const FIXTURE_RULES: PurityRules = {
  pureRoot: "core/",
  allowedImports: [
    { path: "wire/", scan: true, why: "stands for src/wire/" },
    { path: "deps/shim.ts", scan: false, why: "stands for a dependency shim" },
  ],
};

// ---- the real tree ----

Deno.test("every file under src/core/ is pure and imports only the core, the wire format and allowed shims", async () => {
  const report = await checkPurity();
  if (report.scanned.length === 0) {
    console.log("module_gate_test: src/core/ has no files yet; nothing to scan");
  }
  assertEquals(formatViolations(report.violations), "");
});

Deno.test("main.ts and mod.ts reach no test-only dependency and no file under tests/", async () => {
  const { external, local } = await reachedDependencies(["main.ts", "mod.ts"]);
  assert(local.includes("src/server.ts"), `the graph was not read: ${local.join(", ")}`);
  assertEquals(testOnly(external), []);
  assertEquals(local.filter((f) => f.startsWith("tests/")), []);
});

Deno.test("the import cycles in src/ are exactly the known ones being removed", async () => {
  assertEquals(await findCycles(), KNOWN_CYCLES);
});

Deno.test({ name: "no import cycle in src/", ignore: KNOWN_CYCLES.length > 0 }, async () => {
  assertEquals(await findCycles(), []);
});

Deno.test(`the files in src/ over ${MAX_LINES} lines are exactly the known ones being split`, async () => {
  const long = (await longFiles()).filter((f) => !f.onePiece).map((f) => f.file);
  assertEquals(long, KNOWN_LONG_FILES);
});

Deno.test(
  {
    name: `no file in src/ over ${MAX_LINES} lines without a one-piece comment`,
    ignore: KNOWN_LONG_FILES.length > 0,
  },
  async () => {
    const long = (await longFiles()).filter((f) => !f.onePiece);
    assertEquals(long, []);
  },
);

Deno.test("only the allowed shells arm timers: the client's requests and the server's periodic work are core deadlines", async () => {
  const users = await timerUsers();
  assert(users.includes("src/driver.ts"), `the scan found nothing: ${users.join(", ")}`);
  assertEquals(users.filter((f) => !(f in TIMER_SHELLS)), []);
  for (const shell of ["src/client.ts", "src/server.ts"]) assert(!users.includes(shell), shell);
});

// ---- the checks themselves, on planted violations ----

Deno.test("the purity check finds each planted violation in its own file, and nothing in the clean ones", async () => {
  const report = await checkPurity(FIXTURES, FIXTURE_RULES);
  const found = report.violations.map((v) => `${v.file}:${v.line}: ${v.kind}: ${v.text}`);
  assertEquals(found, [
    "core/uses_async.ts:2: async: async",
    "core/uses_async.ts:2: async: Promise",
    "core/uses_async.ts:3: async: await",
    "core/uses_clock.ts:3: clock: Date.now",
    "core/uses_clock.ts:3: clock: new Date()",
    "core/uses_clock.ts:3: clock: performance.now",
    "core/uses_console.ts:3: console: console.log",
    "core/uses_deno.ts:3: deno: Deno.env",
    'core/uses_import.ts:2: import: import "../outside.ts" (outside.ts)',
    'core/uses_import.ts:4: import: import "node:path" (node:path)',
    "core/uses_random.ts:3: random: Math.random",
    "core/uses_timer.ts:2: timer: setTimeout",
    "core/uses_timer.ts:3: timer: setTimeout",
    "wire/clocked.ts:3: clock: Date.now",
  ]);
  // The allowed shim is trusted, not scanned; the pure folder is scanned recursively.
  assert(!report.scanned.includes("deps/shim.ts"));
  assert(report.scanned.includes("core/util/inner.ts"));
  assert(report.scanned.includes("wire/frame.ts"));
});

Deno.test("a type-only import from outside the pure folder is a violation too", async () => {
  // ../outside.ts is imported both for a value and for a type on separate lines; deno info merges the two
  // into one dependency, so a file with only the type import is checked on its own.
  const dir = await Deno.makeTempDir({ prefix: "module_gate_" });
  try {
    await Deno.mkdir(`${dir}/core`);
    await Deno.writeTextFile(`${dir}/outside.ts`, "export interface Outside {\n  name: string;\n}\n");
    await Deno.writeTextFile(
      `${dir}/core/types.ts`,
      'import type { Outside } from "../outside.ts";\nexport type Name = Outside["name"];\n',
    );
    const report = await checkPurity(dir, { pureRoot: "core/", allowedImports: [] });
    assertEquals(
      formatViolations(report.violations),
      'core/types.ts:1:1: import: import type "../outside.ts" (outside.ts)',
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the scan tells code from comments, strings, templates, regular expressions and properties", () => {
  const kinds = (source: string) => scanSource(source).map((v) => v.text);
  assertEquals(kinds("// Date.now()\n/* console.log(1) */ const a = 'Math.random()';"), []);
  assertEquals(kinds("const t = `at ${Date.now()} in console.log`;"), ["Date.now"]);
  assertEquals(kinds("const t = `outer ${`inner ${setTimeout}`} ${ { a: 1 }.a }`; console;"), [
    "setTimeout",
    "console",
  ]);
  assertEquals(kinds("const r = /Date.now()/.test(x) ? a / b / c : 0;"), []);
  assertEquals(kinds("o.console; o?.setTimeout; this.#performance; ({ Deno: 1 });"), []);
  assertEquals(kinds("new Date(ms); new Date(); new Date; Date();"), ["new Date()", "new Date()", "Date()"]);
  assertEquals(kinds("const f = async () => 1; for await (const x of y) {}"), ["async", "await"]);
  assertEquals(kinds("queueMicrotask(f); globalThis.setTimeout(f); crypto.getRandomValues(b);"), [
    "queueMicrotask",
    "globalThis.setTimeout",
    "crypto.getRandomValues",
  ]);
  assertEquals(kinds('const m = await import("./x.ts");'), ["await", "import()"]);
  assertEquals(kinds("let d: Deno.NetAddr; let p: Promise<void>;"), ["Deno.NetAddr", "Promise"]);
});

Deno.test("the cycle check finds a planted cycle with a type-only edge, and not the file importing it", async () => {
  assertEquals(await findCycles(FIXTURES, "cycle/"), [[
    "cycle/a.ts",
    "cycle/b.ts",
    "cycle/c.ts",
    "cycle/a.ts",
  ]]);
  assertEquals(await findCycles(FIXTURES, "wire/"), []);
});

Deno.test("the length check finds a long file and lets one with a one-piece comment be", async () => {
  const dir = await Deno.makeTempDir({ prefix: "module_gate_" });
  try {
    const body = "export const x = 1;\n".repeat(12);
    await Deno.writeTextFile(`${dir}/short.ts`, "export const x = 1;\n".repeat(10));
    await Deno.writeTextFile(`${dir}/long.ts`, body);
    await Deno.writeTextFile(`${dir}/marked.ts`, `// One piece: a table that reads best whole.\n${body}`);
    await Deno.writeTextFile(`${dir}/string_only.ts`, `const s = "// one piece: not a comment";\n${body}`);
    const found = await longFiles(dir, { dir: "", limit: 10 });
    assertEquals(found, [
      { file: "long.ts", lines: 12, onePiece: false },
      { file: "marked.ts", lines: 13, onePiece: true },
      { file: "string_only.ts", lines: 13, onePiece: false },
    ]);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the dependency check sees a test-only dependency reached from an entry point", async () => {
  const { external, local } = await reachedDependencies(["tests/fixtures/module_gate/leaky_entry.ts"]);
  assertEquals(testOnly(external), ["node:assert/strict"]);
  assert(local.includes("tests/deps/assert.ts"));
  assertEquals(testOnly(["playwright-core@1.65.1", "uuid@14.0.3", "node:crypto"]), [
    "playwright-core@1.65.1",
  ]);
});

Deno.test("the timer check finds a planted interval in a shell, and not a mention of one", async () => {
  assertEquals(await timerUsers(new URL("shell/", FIXTURES)), ["src/ticker.ts"]);
});
