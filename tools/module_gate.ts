/**
 * The module gate: structural rules of the source tree that `deno task ok` enforces (through
 * `tests/module_gate_test.ts`), and that `deno run -A tools/module_gate.ts` prints as a report.
 *
 * - **Purity of the core.** No file under `src/core/` (recursively) may use `Deno.*`, timers, the clock,
 *   `Math.random`, `console`, `await`/`async`/`Promise`, or import anything outside `src/core/` except the
 *   allow-list {@linkcode CORE_RULES}. Uses are found by a token-level scan that skips comments and string
 *   literals (so a comment naming `Date.now` is fine and a call is not); imports come from the resolved module
 *   graph of `deno info --json`, so type-only imports and re-exports count too.
 * - **No import cycles** among the files under `src/`, type-only imports included (a circle of types is
 *   still two modules that cannot be understood apart).
 * - **No file in `src/` over {@linkcode MAX_LINES} lines** unless one of its comments says why it is one
 *   piece ({@linkcode ONE_PIECE_MARKER}).
 * - **No test-only dependency** ({@linkcode TEST_ONLY_DEPENDENCIES}) reached from what the server and the
 *   library load (`main.ts`, `mod.ts`).
 *
 * @module
 */

/** A module the core may import from outside its own folder. */
export interface AllowedImport {
  /** A path relative to the checked root: a folder when it ends in `/`, else one file. */
  readonly path: string;
  /** Whether the files reached under it are held to the same purity scan as the core itself. */
  readonly scan: boolean;
  /** Why the core may import it. */
  readonly why: string;
}

/** The purity rules: which folder is pure and what it may import from outside itself. */
export interface PurityRules {
  /** The pure folder, relative to the checked root, ending in `/`. */
  readonly pureRoot: string;
  /** What files under {@linkcode PurityRules.pureRoot} may import from outside it. */
  readonly allowedImports: readonly AllowedImport[];
}

/**
 * THE allow-list of the core (edit it here, and only here). Everything under `src/core/` may import files
 * under `src/core/` and these; nothing else (no other `src/` module, no `node:`, `npm:` or `jsr:` specifier,
 * no bare name from the import map). Wire-format modules are scanned like the core, since they run inside it;
 * dependency shims are thin wrappers of a library and are trusted as listed.
 */
export const CORE_RULES: PurityRules = {
  pureRoot: "src/core/",
  allowedImports: [
    { path: "src/wire/", scan: true, why: "the wire format (envelope, payload shapes, sums) is pure data" },
    { path: "src/deps/crypto.ts", scan: false, why: "HMAC, Ed25519 and X25519 as pure functions of bytes" },
    { path: "src/deps/uuid.ts", scan: false, why: "validating ids on input" },
    { path: "src/deps/crc32.ts", scan: false, why: "the datagram sum: CRC-32 from the runtime's zlib" },
  ],
};

/**
 * Packages and built-ins only tests may load: npm package names (matched with any version) and `node:`
 * specifiers.
 */
export const TEST_ONLY_DEPENDENCIES: readonly string[] = [
  "playwright-core",
  "node:assert",
  "node:assert/strict",
];

/** The longest a file under `src/` may be without a comment saying why it is one piece. */
export const MAX_LINES = 600;

/** A comment matching this (e.g. `// One piece: the transition table reads best whole`) lets a file be long. */
export const ONE_PIECE_MARKER: RegExp = /\bone piece:\s*\S/i;

/** What a purity violation is about. */
export type ViolationKind =
  | "deno"
  | "timer"
  | "clock"
  | "random"
  | "console"
  | "async"
  | "global"
  | "dynamic-import"
  | "import";

/** One forbidden use or import in a pure file. */
export interface Violation {
  /** The file, relative to the checked root. */
  file: string;
  /** 1-based line. */
  line: number;
  /** 1-based column. */
  column: number;
  /** What rule it breaks. */
  kind: ViolationKind;
  /** The offending code, e.g. `Date.now` or `import "../stats.ts"`. */
  text: string;
}

/** A token of TypeScript source; comments are kept (the one-piece marker lives in them). */
export interface Token {
  /** Its class. */
  type: "ident" | "private" | "number" | "string" | "template" | "regex" | "punct" | "comment";
  /** Its text (for strings and templates, the raw literal part). */
  value: string;
  /** 1-based line of its first character. */
  line: number;
  /** 1-based column of its first character. */
  column: number;
}

const REGEX_AFTER_KEYWORDS = new Set([
  "return",
  "typeof",
  "instanceof",
  "in",
  "of",
  "new",
  "delete",
  "void",
  "throw",
  "case",
  "do",
  "else",
  "yield",
  "await",
]);
const PUNCTUATORS = ["...", "?.", "=>", "??", "&&", "||", "==", "!=", "<=", ">=", "++", "--", "**"];

function isIdentStart(c: string): boolean {
  return /[A-Za-z_$\u00a0-\uffff]/.test(c);
}
function isIdentPart(c: string): boolean {
  return /[\w$\u00a0-\uffff]/.test(c);
}

/**
 * Splits TypeScript source into tokens: identifiers, literals, punctuators and comments. Template literals
 * are followed into their `${...}` holes, whose code is tokenized like any other; a `/` starts a regular
 * expression where an operand is expected. Enough for finding names in code, not a parser.
 */
export function tokenize(source: string): Token[] {
  const tokens: Token[] = [];
  // One entry per open `{`: true when it opened a template literal's `${` hole.
  const braces: boolean[] = [];
  let i = 0;
  let line = 1;
  let lineStart = 0;
  let lastCode: Token | undefined;
  const push = (type: Token["type"], start: number, startLine: number, startCol: number): void => {
    const token: Token = { type, value: source.slice(start, i), line: startLine, column: startCol };
    tokens.push(token);
    if (type !== "comment") lastCode = token;
  };
  const advance = (to: number): void => {
    for (; i < to && i < source.length; i++) {
      if (source[i] === "\n") {
        line++;
        lineStart = i + 1;
      }
    }
  };
  // Scans a template literal's text from i (just after "`" or "}") to the closing "`" or a "${".
  const templateText = (): void => {
    const start = i;
    const startLine = line;
    const startCol = i - lineStart + 1;
    while (i < source.length) {
      const c = source[i];
      if (c === "\\") {
        advance(i + 2);
      } else if (c === "`") {
        advance(i + 1);
        push("template", start, startLine, startCol);
        return;
      } else if (c === "$" && source[i + 1] === "{") {
        advance(i + 2);
        push("template", start, startLine, startCol);
        braces.push(true);
        return;
      } else {
        advance(i + 1);
      }
    }
    push("template", start, startLine, startCol);
  };
  const regexAllowed = (): boolean => {
    if (lastCode === undefined) return true;
    if (lastCode.type === "ident") return REGEX_AFTER_KEYWORDS.has(lastCode.value);
    if (lastCode.type === "punct") return ![")", "]", "}"].includes(lastCode.value);
    return false;
  };
  while (i < source.length) {
    const c = source[i]!;
    const next = source[i + 1];
    const start = i;
    const startLine = line;
    const startCol = i - lineStart + 1;
    if (c === "\n" || c === " " || c === "\t" || c === "\r" || c === "\f" || c === "\v" || c === "\ufeff") {
      advance(i + 1);
    } else if (c === "/" && next === "/") {
      const end = source.indexOf("\n", i);
      advance(end < 0 ? source.length : end);
      push("comment", start, startLine, startCol);
    } else if (c === "/" && next === "*") {
      const end = source.indexOf("*/", i + 2);
      advance(end < 0 ? source.length : end + 2);
      push("comment", start, startLine, startCol);
    } else if (c === "'" || c === '"') {
      advance(i + 1);
      while (i < source.length && source[i] !== c && source[i] !== "\n") {
        advance(source[i] === "\\" ? i + 2 : i + 1);
      }
      advance(i + 1);
      push("string", start, startLine, startCol);
    } else if (c === "`") {
      advance(i + 1);
      templateText();
    } else if (c === "}" && braces.length > 0 && braces[braces.length - 1] === true) {
      braces.pop();
      advance(i + 1);
      templateText();
    } else if (c === "/" && regexAllowed()) {
      advance(i + 1);
      let inClass = false;
      while (i < source.length && source[i] !== "\n") {
        const r = source[i];
        if (r === "\\") {
          advance(i + 2);
          continue;
        }
        if (r === "[") inClass = true;
        else if (r === "]") inClass = false;
        else if (r === "/" && !inClass) break;
        advance(i + 1);
      }
      advance(i + 1);
      while (i < source.length && isIdentPart(source[i]!)) advance(i + 1);
      push("regex", start, startLine, startCol);
    } else if (c === "#" && next !== undefined && isIdentStart(next)) {
      advance(i + 1);
      while (i < source.length && isIdentPart(source[i]!)) advance(i + 1);
      push("private", start, startLine, startCol);
    } else if (isIdentStart(c)) {
      while (i < source.length && isIdentPart(source[i]!)) advance(i + 1);
      push("ident", start, startLine, startCol);
    } else if (/[0-9]/.test(c) || (c === "." && next !== undefined && /[0-9]/.test(next))) {
      while (i < source.length && /[\w.]/.test(source[i]!)) advance(i + 1);
      push("number", start, startLine, startCol);
    } else {
      const long = PUNCTUATORS.find((p) => source.startsWith(p, i));
      // `a?.5:b` is a conditional, not optional chaining.
      const len = long === "?." && /[0-9]/.test(source[i + 2] ?? "") ? 1 : long?.length ?? 1;
      if (c === "{") braces.push(false);
      else if (c === "}") braces.pop();
      advance(i + len);
      push("punct", start, startLine, startCol);
    }
  }
  return tokens;
}

const TIMERS = new Set([
  "setTimeout",
  "setInterval",
  "clearTimeout",
  "clearInterval",
  "queueMicrotask",
  "setImmediate",
  "clearImmediate",
  "requestAnimationFrame",
  "cancelAnimationFrame",
  "requestIdleCallback",
  "cancelIdleCallback",
]);
/** Ambient names that are a violation wherever they appear as a name of their own (not after `.`). */
const AMBIENT: ReadonlyMap<string, ViolationKind> = new Map<string, ViolationKind>([
  ...[...TIMERS].map((name) => [name, "timer"] as [string, ViolationKind]),
  ["Deno", "deno"],
  ["console", "console"],
  ["performance", "clock"],
  ["await", "async"],
  ["Promise", "async"],
  ["globalThis", "global"],
]);

/** The forbidden uses in one file's source, in order (their `file` is left empty). */
export function scanSource(source: string): Violation[] {
  const code = tokenize(source).filter((t) => t.type !== "comment");
  const found: Violation[] = [];
  const at = (k: number): Token | undefined => code[k];
  const is = (k: number, value: string): boolean => {
    const t = code[k];
    return t !== undefined && t.value === value && (t.type === "ident" || t.type === "punct");
  };
  const report = (t: Token, kind: ViolationKind, text: string): void => {
    found.push({ file: "", line: t.line, column: t.column, kind, text });
  };
  for (let k = 0; k < code.length; k++) {
    const t = code[k]!;
    if (t.type !== "ident") continue;
    // `x.console`, `x?.setTimeout`: somebody's property, not the global.
    if (is(k - 1, ".") || is(k - 1, "?.")) continue;
    // `{ console: ... }`, `{ a: 1; setTimeout?: number }`: a property name in an object or type literal.
    if (
      (is(k - 1, "{") || is(k - 1, ",") || is(k - 1, ";")) &&
      (is(k + 1, ":") || (is(k + 1, "?") && is(k + 2, ":")))
    ) {
      continue;
    }
    const name = t.value;
    const member = is(k + 1, ".") || is(k + 1, "?.") ? at(k + 2)?.value : undefined;
    const ambient = AMBIENT.get(name);
    if (ambient !== undefined) {
      report(t, ambient, member !== undefined ? `${name}.${member}` : name);
    } else if (name === "async" && !is(k + 1, "=") && !is(k + 1, ":") && !is(k + 1, ")") && !is(k + 1, ",")) {
      report(t, "async", "async");
    } else if (name === "Date") {
      if (member === "now") report(t, "clock", "Date.now");
      else if (is(k - 1, "new") && !(is(k + 1, "(") && !is(k + 2, ")"))) report(t, "clock", "new Date()");
      else if (!is(k - 1, "new") && is(k + 1, "(")) report(t, "clock", "Date()");
    } else if (name === "Math" && member === "random") {
      report(t, "random", "Math.random");
    } else if (name === "crypto" && (member === "getRandomValues" || member === "randomUUID")) {
      report(t, "random", `crypto.${member}`);
    } else if (name === "import" && is(k + 1, "(")) {
      report(t, "dynamic-import", "import()");
    }
  }
  return found;
}

/** The dependencies of one module in the graph. */
export interface ModuleNode {
  /** Its specifier (`file:///...`, `npm:/name@version`, `node:...`). */
  specifier: string;
  /** The npm package (`name@version`) for npm modules. */
  npmPackage?: string;
  /** What it imports: resolved specifiers with the 1-based line of the import, type-only or not. */
  imports: { specifier: string; resolved: string; line: number; typeOnly: boolean }[];
  /** A resolution or load error, if any. */
  error?: string;
}

interface DenoInfoDependency {
  specifier: string;
  code?: { specifier?: string; span?: { start: { line: number } } };
  type?: { specifier?: string; span?: { start: { line: number } } };
}
interface DenoInfoModule {
  specifier: string;
  kind?: string;
  npmPackage?: string;
  error?: string;
  dependencies?: DenoInfoDependency[];
}

/** The repository's own `deno.json` (import map, compiler options) used for every graph. */
export const REPO_ROOT: URL = new URL("../", import.meta.url);

/**
 * The resolved module graph reached from `entries` (absolute paths), by one `deno info --json` run over a
 * temporary module that imports them all. Keyed by specifier.
 */
export async function moduleGraph(entries: readonly string[]): Promise<Map<string, ModuleNode>> {
  const entry = await Deno.makeTempFile({ prefix: "module_gate_", suffix: ".ts" });
  try {
    const body = entries.map((path) => `import ${JSON.stringify(toFileUrl(path))};\n`).join("");
    await Deno.writeTextFile(entry, body);
    const config = new URL("deno.json", REPO_ROOT).pathname;
    const out = await new Deno.Command(Deno.execPath(), {
      args: ["info", "--json", "--config", config, entry],
      stdout: "piped",
      stderr: "piped",
      env: { NO_COLOR: "1" },
    }).output();
    if (!out.success) {
      throw new Error(
        `deno info failed for ${entries.length} entries: ${new TextDecoder().decode(out.stderr)}`,
      );
    }
    const info = JSON.parse(new TextDecoder().decode(out.stdout)) as {
      modules: DenoInfoModule[];
      redirects: Record<string, string>;
    };
    const redirect = (s: string): string => info.redirects[s] ?? s;
    const entryUrl = toFileUrl(entry);
    const graph = new Map<string, ModuleNode>();
    for (const m of info.modules) {
      if (m.specifier === entryUrl) continue;
      const node: ModuleNode = { specifier: m.specifier, imports: [] };
      if (m.npmPackage !== undefined) node.npmPackage = m.npmPackage;
      if (m.error !== undefined) node.error = m.error;
      for (const d of m.dependencies ?? []) {
        const target = d.code?.specifier ?? d.type?.specifier;
        if (target === undefined) continue;
        const span = d.code?.span ?? d.type?.span;
        node.imports.push({
          specifier: d.specifier,
          resolved: redirect(target),
          line: (span?.start.line ?? 0) + 1,
          typeOnly: d.code === undefined,
        });
      }
      graph.set(m.specifier, node);
    }
    return graph;
  } finally {
    await Deno.remove(entry);
  }
}

function toFileUrl(path: string): string {
  return new URL(`file://${path.split("/").map(encodeURIComponent).join("/")}`).href;
}

function rootPath(root: string | URL): string {
  const path = typeof root === "string" ? root : decodeURIComponent(root.pathname);
  return path.endsWith("/") ? path : `${path}/`;
}

/** Every `.ts`/`.tsx`/`.js`/`.mjs` file under `dir` (absolute), recursively, sorted. */
export async function sourceFiles(dir: string): Promise<string[]> {
  const files: string[] = [];
  const walk = async (d: string): Promise<void> => {
    let entries: Deno.DirEntry[];
    try {
      entries = await Array.fromAsync(Deno.readDir(d));
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return;
      throw error;
    }
    for (const e of entries) {
      const path = `${d}/${e.name}`;
      if (e.isDirectory) await walk(path);
      else if (e.isFile && /\.(ts|tsx|js|mjs)$/.test(e.name)) files.push(path);
    }
  };
  await walk(dir.replace(/\/$/, ""));
  return files.sort();
}

/** The result of the purity check. */
export interface PurityReport {
  /** The files scanned (relative to the root): the pure folder and allowed scanned modules it reaches. */
  scanned: string[];
  /** Every violation, by file and position. */
  violations: Violation[];
}

/**
 * Checks the pure folder under `root` (the repository by default) against `rules`: token scan of every file
 * in it (and of reached allowed modules marked `scan`), and every import of a pure file against the
 * allow-list.
 */
export async function checkPurity(
  root: string | URL = REPO_ROOT,
  rules: PurityRules = CORE_RULES,
): Promise<PurityReport> {
  const base = rootPath(root);
  const pureFiles = await sourceFiles(base + rules.pureRoot);
  const report: PurityReport = { scanned: [], violations: [] };
  if (pureFiles.length === 0) return report;
  const graph = await moduleGraph(pureFiles);
  const rel = (specifier: string): string | undefined => {
    if (!specifier.startsWith("file://")) return undefined;
    const path = decodeURIComponent(new URL(specifier).pathname);
    return path.startsWith(base) ? path.slice(base.length) : path;
  };
  const allowed = (path: string): AllowedImport | undefined =>
    rules.allowedImports.find((a) => a.path.endsWith("/") ? path.startsWith(a.path) : path === a.path);
  const inPure = (path: string): boolean => path.startsWith(rules.pureRoot);
  const toScan = new Set<string>();
  for (const node of graph.values()) {
    const path = rel(node.specifier);
    if (path === undefined) continue;
    const allow = allowed(path);
    const pure = inPure(path);
    if (pure || allow?.scan === true) toScan.add(path);
    if (!pure) continue;
    if (node.error !== undefined) {
      report.violations.push({ file: path, line: 1, column: 1, kind: "import", text: node.error });
    }
    for (const imp of node.imports) {
      const target = rel(imp.resolved);
      if (target !== undefined && (inPure(target) || allowed(target) !== undefined)) continue;
      report.violations.push({
        file: path,
        line: imp.line,
        column: 1,
        kind: "import",
        text: `import ${imp.typeOnly ? "type " : ""}"${imp.specifier}" (${target ?? imp.resolved})`,
      });
    }
  }
  for (const path of [...toScan].sort()) {
    const source = await Deno.readTextFile(base + path);
    for (const v of scanSource(source)) report.violations.push({ ...v, file: path });
  }
  report.scanned = [...toScan].sort();
  report.violations.sort((a, b) => a.file.localeCompare(b.file) || a.line - b.line || a.column - b.column);
  return report;
}

/**
 * The import cycles among the files under `dir` (relative to `root`): each strongly connected component of
 * more than one file (or a file importing itself), as one cycle through it, paths relative to the root.
 * Type-only imports and re-exports are edges too.
 */
export async function findCycles(root: string | URL = REPO_ROOT, dir = "src/"): Promise<string[][]> {
  const base = rootPath(root);
  const files = await sourceFiles(base + dir);
  if (files.length === 0) return [];
  const graph = await moduleGraph(files);
  const inside = (specifier: string): string | undefined => {
    if (!specifier.startsWith("file://")) return undefined;
    const path = decodeURIComponent(new URL(specifier).pathname);
    return path.startsWith(base + dir) ? path.slice(base.length) : undefined;
  };
  const edges = new Map<string, string[]>();
  for (const node of graph.values()) {
    const from = inside(node.specifier);
    if (from === undefined) continue;
    const targets = node.imports.map((i) => inside(i.resolved)).filter((t): t is string => t !== undefined);
    edges.set(from, [...new Set(targets)].sort());
  }
  return stronglyConnected(edges).map((scc) => cycleThrough(scc, edges));
}

/** Tarjan's algorithm: the components with a cycle (size > 1, or a self-loop), each sorted, in name order. */
function stronglyConnected(edges: Map<string, string[]>): string[][] {
  let counter = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const out: string[][] = [];
  const visit = (v: string): void => {
    index.set(v, counter);
    low.set(v, counter);
    counter++;
    stack.push(v);
    onStack.add(v);
    for (const w of edges.get(v) ?? []) {
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) {
        low.set(v, Math.min(low.get(v)!, index.get(w)!));
      }
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || (edges.get(v) ?? []).includes(v)) out.push(scc.sort());
    }
  };
  for (const v of [...edges.keys()].sort()) if (!index.has(v)) visit(v);
  return out.sort((a, b) => a[0]!.localeCompare(b[0]!));
}

/** One shortest cycle from the component's first file back to itself, staying inside the component. */
function cycleThrough(scc: string[], edges: Map<string, string[]>): string[] {
  const start = scc[0]!;
  const members = new Set(scc);
  const previous = new Map<string, string>();
  const queue = [start];
  while (queue.length > 0) {
    const v = queue.shift()!;
    for (const w of edges.get(v) ?? []) {
      if (!members.has(w)) continue;
      if (w === start) {
        const path = [v];
        while (path[0] !== start) path.unshift(previous.get(path[0]!)!);
        return [...path, start];
      }
      if (!previous.has(w) && w !== start) {
        previous.set(w, v);
        queue.push(w);
      }
    }
  }
  return [...scc, start];
}

/** A file over the line limit. */
export interface LongFile {
  /** The file, relative to the root. */
  file: string;
  /** Its line count. */
  lines: number;
  /** Whether a comment says why it is one piece (then it is allowed). */
  onePiece: boolean;
}

/** The files under `dir` (relative to `root`) longer than `limit` lines, with whether each is marked. */
export async function longFiles(
  root: string | URL = REPO_ROOT,
  options: { dir?: string; limit?: number } = {},
): Promise<LongFile[]> {
  const base = rootPath(root);
  const { dir = "src/", limit = MAX_LINES } = options;
  const out: LongFile[] = [];
  for (const path of await sourceFiles(base + dir)) {
    const source = await Deno.readTextFile(path);
    const lines = source.endsWith("\n") ? source.split("\n").length - 1 : source.split("\n").length;
    if (lines <= limit) continue;
    const onePiece = tokenize(source).some((t) => t.type === "comment" && ONE_PIECE_MARKER.test(t.value));
    out.push({ file: path.slice(base.length), lines, onePiece });
  }
  return out;
}

/**
 * The only files under `src/` that may arm a timer, each with why. The protocol's deadlines, a client's
 * request retries and the shells' periodic work (stats line, traffic history, cluster refresh) are all in
 * the core's timer table, served by the driver's one timer; what remains here is I/O of side services.
 */
export const TIMER_SHELLS: Readonly<Record<string, string>> = {
  "src/driver.ts": "the one timer, re-armed at the core's next deadline",
  "src/ops_http.ts": "the ops port's connection timeouts (idle, header, write) and its accept backoff",
  "src/cluster.ts": "Redis I/O: one pipeline per burst, a pipeline's time limit, the liveness retry wait",
  "src/deps/redis.ts":
    "Redis I/O: the retry of the probe that confirms a Redis Cluster's sharded subscription",
  "src/status_page.ts": "the status page's refresh, a script that runs in the browser",
};

/** The files under `dir` (outside `src/core/`, whose purity check covers it) that arm a timer. */
export async function timerUsers(root: string | URL = REPO_ROOT, dir = "src/"): Promise<string[]> {
  const base = rootPath(root);
  const out: string[] = [];
  for (const path of await sourceFiles(base + dir)) {
    const file = path.slice(base.length);
    if (file.startsWith("src/core/")) continue;
    const source = await Deno.readTextFile(path);
    if (scanSource(source).some((v) => v.kind === "timer")) out.push(file);
  }
  return out.sort();
}

/**
 * The external dependencies (npm packages as `name@version`, `node:` built-ins, remote URLs) and the local
 * files outside `src/` reached from `entries` (paths relative to the repository root).
 */
export async function reachedDependencies(
  entries: readonly string[],
  root: string | URL = REPO_ROOT,
): Promise<{ external: string[]; local: string[] }> {
  const base = rootPath(root);
  const graph = await moduleGraph(entries.map((e) => base + e));
  const external = new Set<string>();
  const local = new Set<string>();
  for (const node of graph.values()) {
    if (node.npmPackage !== undefined) external.add(node.npmPackage);
    else if (node.specifier.startsWith("file://")) {
      const path = decodeURIComponent(new URL(node.specifier).pathname);
      local.add(path.startsWith(base) ? path.slice(base.length) : path);
    } else if (!node.specifier.endsWith("deno.json")) external.add(node.specifier);
  }
  return { external: [...external].sort(), local: [...local].sort() };
}

/** The reached dependencies that are test-only (see {@linkcode TEST_ONLY_DEPENDENCIES}). */
export function testOnly(external: readonly string[]): string[] {
  return external.filter((dep) =>
    TEST_ONLY_DEPENDENCIES.some((t) => dep === t || (!t.startsWith("node:") && dep.startsWith(`${t}@`)))
  );
}

function formatViolation(v: Violation): string {
  return `${v.file}:${v.line}:${v.column}: ${v.kind}: ${v.text}`;
}

/** Formats violations one per line, `file:line:column: kind: text`. */
export function formatViolations(violations: readonly Violation[]): string {
  return violations.map(formatViolation).join("\n");
}

if (import.meta.main) {
  const purity = await checkPurity();
  const cycles = await findCycles();
  const long = (await longFiles()).filter((f) => !f.onePiece);
  const deps = await reachedDependencies(["main.ts", "mod.ts"]);
  const leaked = [...testOnly(deps.external), ...deps.local.filter((f) => f.startsWith("tests/"))];
  console.log(`purity: ${purity.scanned.length} files scanned, ${purity.violations.length} violations`);
  if (purity.violations.length > 0) console.log(formatViolations(purity.violations));
  console.log(`cycles in src/: ${cycles.length}`);
  for (const cycle of cycles) console.log(`  ${cycle.join(" -> ")}`);
  console.log(`files in src/ over ${MAX_LINES} lines without a one-piece comment: ${long.length}`);
  for (const f of long) console.log(`  ${f.file}: ${f.lines} lines`);
  console.log(`test-only dependencies reached from main.ts and mod.ts: ${leaked.length}`);
  for (const dep of leaked) console.log(`  ${dep}`);
  const timers = (await timerUsers()).filter((f) => !(f in TIMER_SHELLS));
  console.log(`files in src/ arming a timer outside the allowed shells: ${timers.length}`);
  for (const f of timers) console.log(`  ${f}`);
  const bad = purity.violations.length + cycles.length + long.length + leaked.length + timers.length;
  Deno.exit(bad > 0 ? 1 : 0);
}
