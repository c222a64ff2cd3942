/**
 * Reading an OpenAPI 3.x document into what the API docs view lists: operations with their
 * parameters, bodies and responses, and the component schemas, each schema written as a short
 * TypeScript-like type (`{ name: string; faces?: integer }`).
 */

export interface Content {
  mediaType: string;
  type: string;
}

export interface Parameter {
  name: string;
  in: string;
  required: boolean;
  type: string;
  description: string;
}

export interface ResponseDoc {
  status: string;
  description: string;
  contents: Content[];
}

export interface Operation {
  method: string;
  path: string;
  summary: string;
  description: string;
  tag: string;
  parameters: Parameter[];
  requestBody?: { required: boolean; contents: Content[] };
  responses: ResponseDoc[];
}

export interface Field {
  name: string;
  type: string;
  required: boolean;
  description: string;
}

export interface SchemaDoc {
  name: string;
  description: string;
  type: string;
  fields: Field[];
}

export interface ApiDoc {
  title: string;
  version: string;
  description: string;
  operations: Operation[];
  schemas: SchemaDoc[];
}

type Json = Record<string, unknown>;
const obj = (v: unknown): Json => (typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Json) : {});
const str = (v: unknown): string => (typeof v === "string" ? v : "");
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

const METHODS = ["get", "put", "post", "delete", "options", "head", "patch", "trace"];
const MAX_DEPTH = 2;

const refName = (ref: string): string => ref.split("/").pop() ?? ref;

function wrapUnion(text: string): string {
  return text.includes(" | ") || text.includes(" & ") ? `(${text})` : text;
}

/** A schema as a compact TypeScript-like type; nested objects deeper than two levels read `object`. */
export function typeText(schema: unknown, depth = 0): string {
  const s = obj(schema);
  if (typeof s.$ref === "string") return refName(s.$ref);
  if ("const" in s) return JSON.stringify(s.const);
  if (Array.isArray(s.enum)) return s.enum.map((v) => JSON.stringify(v)).join(" | ");
  for (const [key, sep] of [
    ["oneOf", " | "],
    ["anyOf", " | "],
    ["allOf", " & "],
  ] as const) {
    const parts = arr(s[key]);
    if (parts.length > 0) return parts.map((p) => typeText(p, depth)).join(sep);
  }
  if (Array.isArray(s.type)) {
    return s.type.map((t) => typeText({ ...s, type: t }, depth)).join(" | ");
  }
  switch (s.type) {
    case "array": {
      const item = wrapUnion(typeText(s.items, depth));
      const min = s.minItems;
      return typeof min === "number" && min === s.maxItems ? `${item}[${min}]` : `${item}[]`;
    }
    case "object":
      return objectText(s, depth);
    case "string":
      return s.format === "binary" ? "file" : "string";
    case "integer":
    case "number":
    case "boolean":
    case "null":
      return s.type;
    default:
      return s.properties ? objectText(s, depth) : "any";
  }
}

function objectText(s: Json, depth: number): string {
  const props = Object.entries(obj(s.properties));
  if (props.length === 0) {
    const extra = s.additionalProperties;
    return extra && typeof extra === "object" ? `Record<string, ${typeText(extra, depth + 1)}>` : "object";
  }
  if (depth >= MAX_DEPTH) return "object";
  const required = new Set(arr(s.required).map(str));
  const fields = props.map(([name, p]) => `${name}${required.has(name) ? "" : "?"}: ${typeText(p, depth + 1)}`);
  return `{ ${fields.join("; ")} }`;
}

function contents(v: unknown): Content[] {
  return Object.entries(obj(v)).map(([mediaType, c]) => ({ mediaType, type: typeText(obj(c).schema) }));
}

/** Split text on backticks into plain and code runs, for rendering `code` in descriptions. */
export function codeSpans(text: string): { code: boolean; text: string }[] {
  return text
    .split("`")
    .map((t, i) => ({ code: i % 2 === 1, text: t }))
    .filter((r) => r.text !== "");
}

/** Read an OpenAPI document; anything missing reads as empty. */
export function parseOpenApi(doc: unknown): ApiDoc {
  const d = obj(doc);
  const info = obj(d.info);
  const operations: Operation[] = [];
  for (const [path, item] of Object.entries(obj(d.paths))) {
    const shared = arr(obj(item).parameters);
    for (const method of METHODS) {
      const op = obj(obj(item)[method]);
      if (Object.keys(op).length === 0) continue;
      const body = obj(op.requestBody);
      operations.push({
        method: method.toUpperCase(),
        path,
        summary: str(op.summary),
        description: str(op.description),
        tag: str(arr(op.tags)[0]) || "other",
        parameters: [...shared, ...arr(op.parameters)].map((p) => {
          const q = obj(p);
          return {
            name: str(q.name),
            in: str(q.in),
            required: q.required === true,
            type: typeText(q.schema),
            description: str(q.description),
          };
        }),
        requestBody:
          Object.keys(body).length > 0
            ? { required: body.required === true, contents: contents(body.content) }
            : undefined,
        responses: Object.entries(obj(op.responses))
          .map(([status, r]) => ({ status, description: str(obj(r).description), contents: contents(obj(r).content) }))
          .sort((a, b) => a.status.localeCompare(b.status)),
      });
    }
  }
  const schemas = Object.entries(obj(obj(d.components).schemas))
    .map(([name, schema]): SchemaDoc => {
      const s = obj(schema);
      const required = new Set(arr(s.required).map(str));
      return {
        name,
        description: str(s.description),
        type: typeText(s),
        fields: Object.entries(obj(s.properties)).map(([field, p]) => ({
          name: field,
          type: typeText(p, 1),
          required: required.has(field),
          description: str(obj(p).description),
        })),
      };
    })
    .sort((a, b) => a.name.localeCompare(b.name));
  return {
    title: str(info.title),
    version: str(info.version),
    description: str(info.description),
    operations,
    schemas,
  };
}

/** Split a type string into runs, marking the names of known schemas so they can be linked. */
export function typeRuns(text: string, schemaNames: ReadonlySet<string>): { text: string; schema?: string }[] {
  const runs: { text: string; schema?: string }[] = [];
  let plain = "";
  let last = 0;
  for (const m of text.matchAll(/[A-Za-z_][A-Za-z0-9_]*/g)) {
    if (!schemaNames.has(m[0])) continue;
    plain += text.slice(last, m.index);
    if (plain) runs.push({ text: plain });
    plain = "";
    runs.push({ text: m[0], schema: m[0] });
    last = m.index + m[0].length;
  }
  plain += text.slice(last);
  if (plain) runs.push({ text: plain });
  return runs;
}
