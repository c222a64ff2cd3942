/**
 * A small parser for the Prometheus text exposition format (version 0.0.4) and the few
 * queries the metrics view needs: sums by label, histogram quantiles and counter rates.
 */

export type MetricType = "counter" | "gauge" | "histogram" | "summary" | "untyped";

export type Labels = Readonly<Record<string, string>>;

export interface Sample {
  /** Full sample name, e.g. `x_bucket` for a histogram family `x`. */
  name: string;
  labels: Labels;
  value: number;
}

export interface Family {
  name: string;
  type: MetricType;
  help: string;
  samples: Sample[];
}

/** Every family of one scrape, by family name. */
export type Exposition = Map<string, Family>;

export class PromParseError extends Error {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(`line ${line}: ${message}`);
    this.name = "PromParseError";
  }
}

const TYPES: ReadonlySet<string> = new Set(["counter", "gauge", "histogram", "summary", "untyped"]);
const NAME_RE = /^[a-zA-Z_:][a-zA-Z0-9_:]*/;
const LABEL_NAME_RE = /^[a-zA-Z_][a-zA-Z0-9_]*/;

/** Parse a float as Prometheus writes it, including `NaN`, `+Inf` and `-Inf`. */
export function parsePromNumber(text: string): number {
  switch (text) {
    case "+Inf":
    case "Inf":
      return Infinity;
    case "-Inf":
      return -Infinity;
    case "NaN":
      return NaN;
    default: {
      const v = Number(text);
      if (text.trim() === "" || Number.isNaN(v)) {
        throw new Error(`not a number: ${JSON.stringify(text)}`);
      }
      return v;
    }
  }
}

/** The family a sample belongs to, given the families declared so far. */
function familyOf(sampleName: string, families: Exposition): string {
  for (const suffix of ["_bucket", "_sum", "_count", "_created"]) {
    if (sampleName.endsWith(suffix)) {
      const base = sampleName.slice(0, -suffix.length);
      const fam = families.get(base);
      if (fam && (fam.type === "histogram" || fam.type === "summary")) {
        return base;
      }
    }
  }
  return sampleName;
}

function family(families: Exposition, name: string): Family {
  let fam = families.get(name);
  if (!fam) {
    fam = { name, type: "untyped", help: "", samples: [] };
    families.set(name, fam);
  }
  return fam;
}

function unescapeLabel(value: string): string {
  return value.replace(/\\(["\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
}

function unescapeHelp(value: string): string {
  return value.replace(/\\([\\n])/g, (_, c: string) => (c === "n" ? "\n" : c));
}

/** Parse `{a="x",b="y"}` starting at `text[0] === "{"`; returns the labels and the rest. */
function parseLabels(text: string, lineNo: number): [Record<string, string>, string] {
  const labels: Record<string, string> = {};
  let rest = text.slice(1).trimStart();
  while (!rest.startsWith("}")) {
    const m = LABEL_NAME_RE.exec(rest);
    if (!m) throw new PromParseError(`bad label name in ${JSON.stringify(text)}`, lineNo);
    const key = m[0];
    rest = rest.slice(key.length).trimStart();
    if (!rest.startsWith("=")) throw new PromParseError(`expected '=' after label ${key}`, lineNo);
    rest = rest.slice(1).trimStart();
    if (!rest.startsWith('"')) throw new PromParseError(`expected '"' for label ${key}`, lineNo);
    let i = 1;
    let raw = "";
    for (;;) {
      const c = rest[i];
      if (c === undefined) throw new PromParseError(`unterminated value of label ${key}`, lineNo);
      if (c === "\\") {
        raw += c + (rest[i + 1] ?? "");
        i += 2;
        continue;
      }
      if (c === '"') break;
      raw += c;
      i += 1;
    }
    labels[key] = unescapeLabel(raw);
    rest = rest.slice(i + 1).trimStart();
    if (rest.startsWith(",")) {
      rest = rest.slice(1).trimStart();
    } else if (!rest.startsWith("}")) {
      throw new PromParseError(`expected ',' or '}' after label ${key}`, lineNo);
    }
  }
  return [labels, rest.slice(1)];
}

/** Parse a whole exposition. Throws [`PromParseError`] on a malformed line. */
export function parsePrometheus(text: string): Exposition {
  const families: Exposition = new Map();
  const lines = text.split("\n");
  lines.forEach((rawLine, index) => {
    const lineNo = index + 1;
    const line = rawLine.trim();
    if (line === "") return;
    if (line.startsWith("#")) {
      const m = /^#\s*(HELP|TYPE)\s+(\S+)(?:\s+(.*))?$/.exec(line);
      if (!m) return;
      const [, kind, name = "", arg = ""] = m;
      const fam = family(families, name);
      if (kind === "HELP") {
        fam.help = unescapeHelp(arg);
      } else {
        const type = arg.trim();
        if (!TYPES.has(type)) throw new PromParseError(`unknown metric type ${JSON.stringify(type)}`, lineNo);
        fam.type = type as MetricType;
      }
      return;
    }
    const nameMatch = NAME_RE.exec(line);
    if (!nameMatch) throw new PromParseError(`bad metric name in ${JSON.stringify(line)}`, lineNo);
    const name = nameMatch[0];
    let rest = line.slice(name.length).trimStart();
    let labels: Record<string, string> = {};
    if (rest.startsWith("{")) {
      [labels, rest] = parseLabels(rest, lineNo);
    }
    const [valueText] = rest.trim().split(/\s+/);
    if (valueText === undefined || valueText === "") {
      throw new PromParseError(`missing value for ${name}`, lineNo);
    }
    let value: number;
    try {
      value = parsePromNumber(valueText);
    } catch (e) {
      throw new PromParseError((e as Error).message, lineNo);
    }
    family(families, familyOf(name, families)).samples.push({ name, labels, value });
  });
  return families;
}

/** Samples named `sampleName` (any family) whose labels include every pair of `match`. */
export function samples(exp: Exposition, sampleName: string, match: Labels = {}): Sample[] {
  const out: Sample[] = [];
  for (const fam of exp.values()) {
    for (const s of fam.samples) {
      if (s.name !== sampleName) continue;
      if (Object.entries(match).every(([k, v]) => s.labels[k] === v)) out.push(s);
    }
  }
  return out;
}

/** `sum by (label) (sampleName)`: missing labels group under "". */
export function sumBy(exp: Exposition, sampleName: string, label: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const s of samples(exp, sampleName)) {
    const key = s.labels[label] ?? "";
    out.set(key, (out.get(key) ?? 0) + s.value);
  }
  return out;
}

/** Sum of every sample named `sampleName`; 0 when there is none. */
export function total(exp: Exposition, sampleName: string): number {
  return samples(exp, sampleName).reduce((acc, s) => acc + s.value, 0);
}

export interface Bucket {
  /** Upper bound (inclusive); `Infinity` for the last bucket. */
  le: number;
  /** Cumulative count of observations `<= le`. */
  count: number;
}

export interface Histogram {
  buckets: Bucket[];
  sum: number;
  count: number;
}

/**
 * The histograms of family `name`, grouped by `label` (other labels summed), with buckets
 * sorted by bound.
 */
export function histogramsBy(exp: Exposition, name: string, label: string): Map<string, Histogram> {
  const acc = new Map<string, { buckets: Map<number, number>; sum: number; count: number }>();
  const entry = (key: string) => {
    let e = acc.get(key);
    if (!e) {
      e = { buckets: new Map(), sum: 0, count: 0 };
      acc.set(key, e);
    }
    return e;
  };
  for (const s of samples(exp, `${name}_bucket`)) {
    const le = s.labels.le;
    if (le === undefined) continue;
    const bound = parsePromNumber(le);
    const e = entry(s.labels[label] ?? "");
    e.buckets.set(bound, (e.buckets.get(bound) ?? 0) + s.value);
  }
  for (const s of samples(exp, `${name}_sum`)) entry(s.labels[label] ?? "").sum += s.value;
  for (const s of samples(exp, `${name}_count`)) entry(s.labels[label] ?? "").count += s.value;
  const out = new Map<string, Histogram>();
  for (const [key, e] of acc) {
    const buckets = [...e.buckets.entries()].map(([le, count]) => ({ le, count })).sort((a, b) => a.le - b.le);
    out.set(key, { buckets, sum: e.sum, count: e.count });
  }
  return out;
}

/**
 * Estimate quantile `q` (0..1) from cumulative buckets the way PromQL's `histogram_quantile`
 * does: linear interpolation inside the bucket holding the rank, the lower bound of the first
 * bucket taken as 0, and the upper bound of the highest finite bucket when the rank falls in
 * `+Inf`. Returns NaN without observations.
 */
export function histogramQuantile(q: number, buckets: readonly Bucket[]): number {
  if (Number.isNaN(q)) return NaN;
  if (q < 0) return -Infinity;
  if (q > 1) return Infinity;
  const sorted = [...buckets].sort((a, b) => a.le - b.le);
  const last = sorted[sorted.length - 1];
  if (!last || last.count <= 0) return NaN;
  if (sorted.length < 2 && last.le === Infinity) return NaN;
  const totalCount = last.count;
  const rank = q * totalCount;
  let i = sorted.findIndex((b) => b.count >= rank);
  if (i < 0) i = sorted.length - 1;
  const bucket = sorted[i];
  if (!bucket) return NaN;
  if (bucket.le === Infinity) {
    return sorted[sorted.length - 2]?.le ?? NaN;
  }
  const prev = i > 0 ? sorted[i - 1] : undefined;
  const lower = prev ? prev.le : bucket.le > 0 ? 0 : bucket.le;
  const below = prev ? prev.count : 0;
  const inBucket = bucket.count - below;
  if (inBucket <= 0) return bucket.le;
  return lower + (bucket.le - lower) * ((rank - below) / inBucket);
}

/** Per-second rate of a counter between two readings; a reset (drop) counts from zero. */
export function counterRate(previous: number, current: number, seconds: number): number {
  if (!(seconds > 0)) return NaN;
  const delta = current >= previous ? current - previous : current;
  return delta / seconds;
}

/** Rates for every key of two `sumBy` results; keys only in `current` start from zero. */
export function ratesBy(
  previous: ReadonlyMap<string, number>,
  current: ReadonlyMap<string, number>,
  seconds: number,
): Map<string, number> {
  const out = new Map<string, number>();
  for (const [key, value] of current) {
    out.set(key, counterRate(previous.get(key) ?? 0, value, seconds));
  }
  return out;
}

/** The observations between two readings of one histogram (for a recent-window quantile). */
export function histogramDelta(previous: Histogram | undefined, current: Histogram): Histogram {
  if (!previous || current.count < previous.count) return current;
  const before = new Map(previous.buckets.map((b) => [b.le, b.count]));
  return {
    buckets: current.buckets.map((b) => ({ le: b.le, count: b.count - (before.get(b.le) ?? 0) })),
    sum: current.sum - previous.sum,
    count: current.count - previous.count,
  };
}
