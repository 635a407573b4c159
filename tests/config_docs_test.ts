// The configuration reference (docs/configuration.md) and the editors' schema (config.schema.json) are
// generated from where each setting is declared (tools/gen_config_docs.ts): a test fails when either is stale,
// and config.json names the schema, which the loader accepts without a warning.
import { assert, assertEquals, assertStrictEquals } from "./deps/assert.ts";
import { CONFIG_FILE_KEYS, DEFAULT_CONFIG, parseConfigFile } from "../src/config.ts";
import { configurationMarkdown, configurationSchema, fieldDocs } from "../tools/gen_config_docs.ts";

const ROOT = new URL("../", import.meta.url);

Deno.test("docs/configuration.md and config.schema.json are what the generator makes from the code", () => {
  assertStrictEquals(
    Deno.readTextFileSync(new URL("docs/configuration.md", ROOT)),
    configurationMarkdown(),
    "docs/configuration.md is stale: run deno task gen:config",
  );
  assertStrictEquals(
    Deno.readTextFileSync(new URL("config.schema.json", ROOT)),
    configurationSchema(),
    "config.schema.json is stale: run deno task gen:config",
  );
});

Deno.test("every config file key is in the schema with its default, and config.json's values are the defaults", () => {
  const schema = JSON.parse(configurationSchema());
  for (const [key, field] of Object.entries(CONFIG_FILE_KEYS)) {
    assert(key in schema.properties, key);
    if (key !== "cluster") {
      assertEquals(
        schema.properties[key].default,
        (DEFAULT_CONFIG as unknown as Record<string, unknown>)[field],
      );
    }
  }
  const text = Deno.readTextFileSync(new URL("config.json", ROOT));
  const { config, unknownKeys } = parseConfigFile(text, "config.json");
  assertEquals(unknownKeys, [], "$schema is not an unknown key");
  for (const [field, value] of Object.entries(config)) {
    assertEquals(value, (DEFAULT_CONFIG as unknown as Record<string, unknown>)[field], field);
  }
});

Deno.test("the generator reads doc comments per field, without their @default", () => {
  const docs = fieldDocs(
    "export interface X {\n  /**\n   * One line,\n   * two.\n   * @default {1}\n   */\n  a: number;\n  /** B. */\n  b?: string;\n}\n",
    "X",
  );
  assertEquals([...docs], [["a", "One line, two."], ["b", "B."]]);
});
