/**
 * "Did you mean ...?" for a mistyped flag or config key: the nearest known name by edit distance, only when
 * it is close. Pure; the callers word the message.
 *
 * @module
 */

/**
 * The optimal string alignment distance (Damerau-Levenshtein without substring re-edits): the fewest
 * insertions, deletions, substitutions and swaps of two adjacent characters that turn `a` into `b`.
 *
 * @example
 * ```ts
 * import { editDistance } from "./suggest.ts";
 * if (editDistance("max-conections", "max-connections") !== 1) throw new Error("one insertion");
 * if (editDistance("auht", "auth") !== 1) throw new Error("one swap");
 * ```
 */
export function editDistance(a: string, b: string): number {
  // Three rows of the dynamic-programming table: two back (for swaps), one back, and the current one.
  let before = new Array<number>(b.length + 1).fill(0);
  let previous = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const current = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      let d = Math.min(previous[j]! + 1, current[j - 1]! + 1, previous[j - 1]! + cost);
      if (i > 1 && j > 1 && a[i - 1] === b[j - 2] && a[i - 2] === b[j - 1]) {
        d = Math.min(d, before[j - 2]! + 1);
      }
      current.push(d);
    }
    [before, previous] = [previous, current];
  }
  return previous[b.length]!;
}

/**
 * The candidate nearest to `word`, or `undefined` when none is close: at most 2 edits away and at most one
 * edit per three characters of `word`, so that short words match only near-exact names. Case, and the
 * difference between `-` and `_`, do not count; leading dashes are compared as written. On a tie the
 * earlier candidate wins.
 *
 * @example
 * ```ts
 * import { closest } from "./suggest.ts";
 * const flags = ["--address", "--max-connections", "--config"];
 * if (closest("--max-conections", flags) !== "--max-connections") throw new Error("not suggested");
 * if (closest("--port", flags) !== undefined) throw new Error("nothing is close to --port");
 * ```
 */
export function closest(word: string, candidates: readonly string[]): string | undefined {
  const normal = (text: string) => text.toLowerCase().replaceAll("_", "-");
  const bare = normal(word).replace(/^-+/, "");
  const limit = Math.min(2, Math.floor(bare.length / 3));
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of candidates) {
    if (candidate === word) continue;
    const d = editDistance(normal(word), normal(candidate));
    if (d <= limit && d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return best;
}
