import { assertStrictEquals } from "./deps/assert.ts";
import { closest, editDistance } from "../src/suggest.ts";

Deno.test("editDistance counts insertions, deletions, substitutions and adjacent swaps as one edit each", () => {
  for (
    const [a, b, d] of [
      ["", "", 0],
      ["abc", "", 3],
      ["", "abc", 3],
      ["config", "config", 0],
      ["max-conections", "max-connections", 1],
      ["max-connectionss", "max-connections", 1],
      ["adress", "address", 1],
      ["auht", "auth", 1],
      ["lgo-fromat", "log-format", 2],
      ["kitten", "sitting", 3],
      ["ca", "abc", 3], // optimal string alignment: no edit of a swapped pair
    ] as const
  ) {
    assertStrictEquals(editDistance(a, b), d, `${a} -> ${b}`);
    assertStrictEquals(editDistance(b, a), d, `${b} -> ${a}`);
  }
});

Deno.test("closest suggests only a near name, ignoring case and - versus _", () => {
  const flags = ["--address", "--max-connections", "--config", "--cluster", "--DEBUG", "--instance-id"];
  assertStrictEquals(closest("--max-conections", flags), "--max-connections");
  assertStrictEquals(closest("--debug", flags), "--DEBUG");
  assertStrictEquals(closest("--instance_id", flags), "--instance-id");
  assertStrictEquals(closest("--port", flags), undefined);
  assertStrictEquals(closest("--bogus", flags), undefined);
  assertStrictEquals(closest("-x", flags), undefined);
  assertStrictEquals(closest("--", flags), undefined);
});

Deno.test("closest allows one edit per three characters and at most two", () => {
  assertStrictEquals(closest("ab", ["abc"]), undefined); // 2 characters: exact (up to case) only
  assertStrictEquals(closest("abd", ["abc"]), "abc");
  assertStrictEquals(closest("abxy", ["abcd"]), undefined); // 2 edits in 4 characters
  assertStrictEquals(closest("max_conectins", ["max_connections"]), "max_connections"); // 2 edits
  assertStrictEquals(closest("mx_conectins", ["max_connections"]), undefined); // 3 edits
});

Deno.test("closest prefers the nearest candidate, then the earlier one, and never the word itself", () => {
  assertStrictEquals(closest("rto_mix_ms", ["rto_max_ms", "rto_min_ms"]), "rto_max_ms");
  assertStrictEquals(closest("rto_mun_ms", ["rto_max_ms", "rto_min_ms"]), "rto_min_ms");
  assertStrictEquals(closest("auth", ["auth"]), undefined);
});
