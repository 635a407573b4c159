/**
 * The README is a short front page, not the manual: it stays under 10 KiB, opens with the two commands a
 * newcomer needs, and every relative link in it and in docs/*.md leads to a file (and heading) that exists.
 */
import { assert, assertEquals } from "./deps/assert.ts";
import { usage } from "../src/cli.ts";

const ROOT = new URL("../", import.meta.url);
const README = new URL("README.md", ROOT);

async function docsFiles(): Promise<URL[]> {
  const files = [README];
  for await (const entry of Deno.readDir(new URL("docs/", ROOT))) {
    if (entry.isFile && entry.name.endsWith(".md")) files.push(new URL(`docs/${entry.name}`, ROOT));
  }
  return files.sort((a, b) => a.href.localeCompare(b.href));
}

/** Markdown without its fenced code blocks and inline code spans, where link syntax is only text. */
function prose(markdown: string): string {
  return markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[ \t]*$/gm, "").replace(/`[^`\n]*`/g, "");
}

/** Link targets: `[text](target)` and `![alt](target)`, with an optional "title" dropped. */
function links(markdown: string): string[] {
  return [...prose(markdown).matchAll(/\]\(([^)\s]+)(?:\s+"[^"]*")?\)/g)].map((m) => m[1]!);
}

/** The anchors GitHub gives a file's headings: lower case, punctuation dropped, spaces as dashes, repeats -1, -2. */
function anchors(markdown: string): Set<string> {
  const seen = new Map<string, number>();
  const out = new Set<string>();
  const text = markdown.replace(/^(```|~~~)[^\n]*\n[\s\S]*?^\1[ \t]*$/gm, "");
  for (const m of text.matchAll(/^#{1,6}[ \t]+(.+?)[ \t]*#*[ \t]*$/gm)) {
    const base = m[1]!.toLowerCase().replace(/[^\p{L}\p{N}\s_-]/gu, "").replace(/\s/g, "-");
    const n = seen.get(base) ?? 0;
    seen.set(base, n + 1);
    out.add(n === 0 ? base : `${base}-${n}`);
  }
  return out;
}

Deno.test("README.md is at most 10,240 bytes", async () => {
  const size = (await Deno.stat(README)).size;
  assert(size <= 10_240, `README.md is ${size} bytes; move reference material to docs/`);
});

Deno.test("README.md opens with the two commands", async () => {
  const head = (await Deno.readTextFile(README)).split("\n").slice(0, 12).join("\n");
  for (
    const command of [
      "npx --yes deno@2.9.6 task start",
      "npx --yes deno@2.9.6 task test",
      "`deno task start`",
      "`deno task test`",
    ]
  ) {
    assert(head.includes(command), `the first 12 lines of README.md do not contain ${command}`);
  }
});

Deno.test("every relative link in README.md and docs/*.md points to an existing file and heading", async () => {
  const broken: string[] = [];
  const headings = new Map<string, Set<string>>();
  const headingsOf = async (file: URL) => {
    let set = headings.get(file.href);
    if (!set) {
      set = anchors(await Deno.readTextFile(file));
      headings.set(file.href, set);
    }
    return set;
  };
  let checked = 0;
  for (const file of await docsFiles()) {
    const name = file.href.slice(ROOT.href.length);
    for (const link of links(await Deno.readTextFile(file))) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(link)) continue; // https:, mailto:: not a file of this repository
      checked++;
      const [path, fragment] = link.split("#", 2) as [string, string | undefined];
      const target = path === "" ? file : new URL(path, file);
      let stat: Deno.FileInfo;
      try {
        stat = await Deno.stat(target);
      } catch {
        broken.push(`${name}: ${link} (no such file)`);
        continue;
      }
      if (fragment && stat.isFile && target.pathname.endsWith(".md")) {
        if (!(await headingsOf(target)).has(decodeURIComponent(fragment))) {
          broken.push(`${name}: ${link} (no such heading)`);
        }
      }
    }
  }
  assertEquals(broken, []);
  assert(checked > 50, `only ${checked} relative links found: the link pattern is broken`);
});

Deno.test("docs/operations.md quotes --help exactly as the program prints it", async () => {
  const doc = await Deno.readTextFile(new URL("docs/operations.md", ROOT));
  const quoted = doc.match(/^The flags, exactly as `--help` prints them:\n\n```\n([\s\S]*?)\n```$/m);
  assert(quoted, "docs/operations.md has no quoted --help block");
  assertEquals(quoted[1], usage().trimEnd());
});

Deno.test("the link checker sees links, skips code, and spells anchors as GitHub does", () => {
  const md =
    "# A `b` c: d\n\nSee [x](docs/x.md#y) and ![i](p.png).\n\n```\n[no](code.md)\n```\n`[no](span.md)`\n## A b c d\n";
  assertEquals(links(md), ["docs/x.md#y", "p.png"]);
  assertEquals([...anchors(md)], ["a-b-c-d", "a-b-c-d-1"]);
  assertEquals([...anchors("## `p2p_server status`\n## Node authentication: keys, roaming\n")], [
    "p2p_server-status",
    "node-authentication-keys-roaming",
  ]);
});
