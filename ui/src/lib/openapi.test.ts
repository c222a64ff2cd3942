import { describe, expect, it } from "vitest";
import { codeSpans, parseOpenApi, typeRuns, typeText } from "./openapi";

describe("typeText", () => {
  it("writes primitives, refs, enums and unions", () => {
    expect(typeText({ type: "string" })).toBe("string");
    expect(typeText({ type: "string", format: "binary" })).toBe("file");
    expect(typeText({ $ref: "#/components/schemas/Subject" })).toBe("Subject");
    expect(typeText({ type: "string", enum: ["accept", "reject"] })).toBe('"accept" | "reject"');
    expect(typeText({ type: ["number", "null"] })).toBe("number | null");
    expect(typeText({ oneOf: [{ $ref: "#/a/A" }, { $ref: "#/a/B" }] })).toBe("A | B");
    expect(typeText({ allOf: [{ $ref: "#/a/A" }, { type: "object" }] })).toBe("A & object");
    expect(typeText({ const: 3 })).toBe("3");
    expect(typeText(undefined)).toBe("any");
  });

  it("writes arrays, fixed-length arrays and nested arrays", () => {
    expect(typeText({ type: "array", items: { type: "number" } })).toBe("number[]");
    expect(typeText({ type: "array", items: { type: "number" }, minItems: 4, maxItems: 4 })).toBe("number[4]");
    expect(typeText({ type: "array", items: { type: "array", items: { type: "number" } } })).toBe("number[][]");
    expect(typeText({ type: "array", items: { type: ["string", "null"] } })).toBe("(string | null)[]");
  });

  it("writes objects with optional fields, maps, and stops at depth", () => {
    const s = {
      type: "object",
      required: ["name"],
      properties: { name: { type: "string" }, faces: { type: "integer" } },
    };
    expect(typeText(s)).toBe("{ name: string; faces?: integer }");
    expect(typeText({ type: "object", additionalProperties: { type: "number" } })).toBe("Record<string, number>");
    expect(typeText({ type: "object" })).toBe("object");
    const deep = {
      type: "object",
      properties: { a: { type: "object", properties: { b: { type: "object", properties: { c: {} } } } } },
    };
    expect(typeText(deep)).toBe("{ a?: { b?: object } }");
  });
});

describe("codeSpans", () => {
  it("splits on backticks", () => {
    expect(codeSpans("is `accept` when `p >= t`.")).toEqual([
      { code: false, text: "is " },
      { code: true, text: "accept" },
      { code: false, text: " when " },
      { code: true, text: "p >= t" },
      { code: false, text: "." },
    ]);
    expect(codeSpans("")).toEqual([]);
  });
});

describe("parseOpenApi", () => {
  const doc = {
    openapi: "3.1.0",
    info: { title: "FaceKey runtime API", version: "0.1.0", description: "Errors are `{error}`." },
    paths: {
      "/v1/subjects/{id}": {
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" }, description: "Subject id" }],
        get: {
          tags: ["subjects"],
          summary: "Get a subject",
          responses: {
            "404": {
              description: "Unknown",
              content: { "application/json": { schema: { $ref: "#/components/schemas/ErrorBody" } } },
            },
            "200": {
              description: "The subject",
              content: { "application/json": { schema: { $ref: "#/components/schemas/Subject" } } },
            },
          },
        },
        delete: { summary: "Delete", responses: { "204": { description: "Deleted" } } },
      },
      "/v1/score": {
        post: {
          tags: ["fusion"],
          summary: "Score",
          requestBody: {
            required: true,
            content: { "application/json": { schema: { $ref: "#/components/schemas/ScoreRequest" } } },
          },
          responses: { "200": { description: "Scored" } },
        },
      },
    },
    components: {
      schemas: {
        Subject: {
          type: "object",
          description: "An enrolled person.",
          required: ["id"],
          properties: { id: { type: "string", description: "UUID" }, faces: { type: "integer" } },
        },
        Decision: { type: "string", enum: ["accept", "reject"] },
      },
    },
  };
  const api = parseOpenApi(doc);

  it("reads the info", () => {
    expect(api.title).toBe("FaceKey runtime API");
    expect(api.version).toBe("0.1.0");
  });

  it("lists operations in method order with shared parameters and sorted responses", () => {
    expect(api.operations.map((o) => `${o.method} ${o.path}`)).toEqual([
      "GET /v1/subjects/{id}",
      "DELETE /v1/subjects/{id}",
      "POST /v1/score",
    ]);
    const get = api.operations[0];
    expect(get?.tag).toBe("subjects");
    expect(get?.parameters).toEqual([
      { name: "id", in: "path", required: true, type: "string", description: "Subject id" },
    ]);
    expect(get?.responses.map((r) => r.status)).toEqual(["200", "404"]);
    expect(get?.responses[0]?.contents).toEqual([{ mediaType: "application/json", type: "Subject" }]);
    expect(api.operations[1]?.tag).toBe("other");
    expect(api.operations[2]?.requestBody).toEqual({
      required: true,
      contents: [{ mediaType: "application/json", type: "ScoreRequest" }],
    });
  });

  it("lists schemas by name with their fields", () => {
    expect(api.schemas.map((s) => s.name)).toEqual(["Decision", "Subject"]);
    expect(api.schemas[0]?.type).toBe('"accept" | "reject"');
    expect(api.schemas[1]?.fields).toEqual([
      { name: "id", type: "string", required: true, description: "UUID" },
      { name: "faces", type: "integer", required: false, description: "" },
    ]);
  });

  it("reads garbage as empty", () => {
    expect(parseOpenApi(null)).toEqual({ title: "", version: "", description: "", operations: [], schemas: [] });
  });
});

describe("typeRuns", () => {
  it("marks known schema names only", () => {
    const names = new Set(["Subject", "ErrorBody"]);
    expect(typeRuns("{ subjects: Subject[]; note?: string }", names)).toEqual([
      { text: "{ subjects: " },
      { text: "Subject", schema: "Subject" },
      { text: "[]; note?: string }" },
    ]);
    expect(typeRuns("Subject | ErrorBody", names)).toEqual([
      { text: "Subject", schema: "Subject" },
      { text: " | " },
      { text: "ErrorBody", schema: "ErrorBody" },
    ]);
    expect(typeRuns("string", names)).toEqual([{ text: "string" }]);
    expect(typeRuns("SubjectList", names)).toEqual([{ text: "SubjectList" }]);
  });
});
