/**
 * A strict parser of the Prometheus text format (0.0.4), for tests: every sample belongs to a declared
 * family (HELP then TYPE), names and labels are valid, counters end in `_total` and are not negative, and
 * histogram buckets are ascending, cumulative, and end with `+Inf` equal to `_count`.
 *
 * @module
 */
/** One parsed sample line. */
export interface Sample {
  name: string;
  labels: Record<string, string>;
  value: number;
}

/** A parsed metric family. */
export interface Family {
  type: string;
  help: string;
  samples: Sample[];
}

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;
const LABEL = /^[a-zA-Z_][a-zA-Z0-9_]*$/;

function parseValue(text: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  if (text === "NaN") return NaN;
  if (!/^-?\d+(\.\d+)?([eE][-+]?\d+)?$/.test(text)) throw new SyntaxError(`Bad value "${text}"`);
  return Number(text);
}

function parseLabels(text: string): Record<string, string> {
  const labels: Record<string, string> = {};
  let rest = text;
  while (rest.length > 0) {
    const m = /^([^=]+)="((?:[^"\\]|\\.)*)"(,|$)/.exec(rest);
    if (!m) throw new SyntaxError(`Bad labels "${text}"`);
    const name = m[1]!;
    if (!LABEL.test(name) || name.startsWith("__")) throw new SyntaxError(`Bad label name "${name}"`);
    if (Object.hasOwn(labels, name)) throw new SyntaxError(`Repeated label "${name}"`);
    labels[name] = m[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    rest = rest.slice(m[0].length);
  }
  return labels;
}

/** Parses the text format strictly; throws on anything out of place. */
export function parseExposition(text: string): Map<string, Family> {
  if (!text.endsWith("\n")) throw new SyntaxError("Exposition must end with a newline");
  const families = new Map<string, Family>();
  let current: string | null = null;
  const lines = text.slice(0, -1).split("\n");
  for (const [i, line] of lines.entries()) {
    const where = `line ${i + 1}: ${JSON.stringify(line)}`;
    let m: RegExpExecArray | null;
    if ((m = /^# HELP (\S+) (.*)$/.exec(line))) {
      const name = m[1]!;
      if (!NAME.test(name)) throw new SyntaxError(`Bad family name at ${where}`);
      if (families.has(name)) throw new SyntaxError(`Family declared twice at ${where}`);
      families.set(name, { type: "", help: m[2]!, samples: [] });
      current = name;
    } else if ((m = /^# TYPE (\S+) (counter|gauge|histogram|summary|untyped)$/.exec(line))) {
      const family = families.get(m[1]!);
      if (!family || current !== m[1] || family.type !== "" || family.samples.length > 0) {
        throw new SyntaxError(`TYPE without its HELP just before, at ${where}`);
      }
      family.type = m[2]!;
    } else if (line.startsWith("#") || line.trim() === "") {
      throw new SyntaxError(`Unexpected line at ${where}`);
    } else {
      m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
      if (!m) throw new SyntaxError(`Bad sample at ${where}`);
      const name = m[1]!;
      const family = current === null ? undefined : families.get(current);
      if (!family || family.type === "") throw new SyntaxError(`Sample outside a typed family at ${where}`);
      const allowed = family.type === "histogram"
        ? [`${current}_bucket`, `${current}_sum`, `${current}_count`]
        : [current];
      if (!allowed.includes(name)) {
        throw new SyntaxError(`Sample "${name}" not in family "${current}" at ${where}`);
      }
      if (family.type === "counter" && !current!.endsWith("_total")) {
        throw new SyntaxError(`Counter "${current}" does not end in _total`);
      }
      const value = parseValue(m[3]!);
      if (family.type === "counter" && !(value >= 0)) throw new SyntaxError(`Negative counter at ${where}`);
      family.samples.push({ name, labels: parseLabels(m[2] ?? ""), value });
    }
  }
  for (const [name, family] of families) {
    if (family.type === "") throw new SyntaxError(`Family "${name}" has no TYPE`);
    if (family.samples.length === 0) throw new SyntaxError(`Family "${name}" has no samples`);
    const seen = new Set<string>();
    for (const s of family.samples) {
      const key = s.name + JSON.stringify(Object.entries(s.labels).sort());
      if (seen.has(key)) throw new SyntaxError(`Duplicate sample ${key}`);
      seen.add(key);
    }
    if (family.type === "histogram") checkHistogram(name, family);
  }
  return families;
}

function checkHistogram(name: string, family: Family): void {
  const buckets = family.samples.filter((s) => s.name === `${name}_bucket`);
  const count = family.samples.find((s) => s.name === `${name}_count`);
  const sum = family.samples.find((s) => s.name === `${name}_sum`);
  if (!count || !sum || buckets.length === 0) throw new SyntaxError(`Histogram "${name}" is incomplete`);
  let lastLe = -Infinity;
  let lastCount = 0;
  for (const b of buckets) {
    const le = b.labels.le;
    if (le === undefined) throw new SyntaxError(`Bucket of "${name}" without le`);
    const bound = parseValue(le);
    if (!(bound > lastLe)) throw new SyntaxError(`Buckets of "${name}" not in ascending order`);
    if (b.value < lastCount) throw new SyntaxError(`Buckets of "${name}" are not cumulative`);
    lastLe = bound;
    lastCount = b.value;
  }
  if (lastLe !== Infinity) throw new SyntaxError(`Histogram "${name}" has no +Inf bucket`);
  if (lastCount !== count.value) throw new SyntaxError(`+Inf bucket of "${name}" is not _count`);
}

/** The value of one sample, by name and labels. */
export function sampleValue(
  families: Map<string, Family>,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  for (const family of families.values()) {
    for (const s of family.samples) {
      if (s.name !== name) continue;
      const keys = Object.keys(labels);
      if (keys.length === Object.keys(s.labels).length && keys.every((k) => s.labels[k] === labels[k])) {
        return s.value;
      }
    }
  }
  return undefined;
}
