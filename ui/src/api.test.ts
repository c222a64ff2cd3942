import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ApiError,
  KEY_REJECTED,
  MAX_LISTED_SUBJECTS,
  apiUrl,
  decideAtLeast,
  errorAdvice,
  errorFromBody,
  getSubject,
  listSubjects,
  matchThresholdOn,
  parseBox,
  parseScore,
  parseSubjectId,
  typedSubjectId,
  parseSubjects,
  parseVerify,
  releaseLockout,
  score,
  verify,
  whoami,
} from "./api";
import { keySession } from "./lib/auth";

const VERIFY = {
  subject: "s1",
  face: {
    box: { x: 10, y: 20, width: 100, height: 120 },
    landmarks: [
      [40, 60],
      [80, 60],
      [60, 85],
      [45, 110],
      [75, 110],
    ],
    confidence: 0.99,
  },
  match: { distance: 0.31, similarity: 0.84, threshold: 0.6, decision: "accept" },
  liveness: { score: 0.93, decision: "accept", threshold: 0.5, models: { dtn: 0.91, minifas: 0.95 } },
  quality: { score: 0.8, size: 0.9, sharpness: 0.7, pose: 0.85, exposure: 0.9 },
  features: [0.84, 0.93, 0.8],
  probability: 0.88,
  decision: "accept",
  threshold: 0.5,
  layers: { z1: [0.8, -1.2, 0.4, 2.0], a1: [0.8, 0, 0.4, 2.0], z2: [1.1, -0.3, 0.5], a2: [1.1, 0, 0.5], z3: 1.2 },
  timings_ms: { decode: 3, detect: 30, align: 1, embed: 7, liveness: 110, quality: 1, fusion: 0.01, total: 152 },
};

describe("parseVerify", () => {
  it("reads the documented shape", () => {
    const v = parseVerify(VERIFY);
    expect(v.subject).toBe("s1");
    expect(v.face?.box).toEqual({ x: 10, y: 20, width: 100, height: 120 });
    expect(v.face?.landmarks).toHaveLength(5);
    expect(v.face?.confidence).toBe(0.99);
    expect(v.match).toEqual({
      distance: 0.31,
      similarity: 0.84,
      threshold: 0.6,
      decision: "accept",
      thresholdOn: "similarity",
      templates: undefined,
    });
    expect(v.liveness.checked).toBe(true);
    expect(v.reasons).toEqual([]);
    expect(v.liveness.models).toEqual([
      ["dtn", 0.91],
      ["minifas", 0.95],
    ]);
    expect(v.quality.score).toBe(0.8);
    expect(v.quality.parts.map(([k]) => k)).toEqual(["size", "sharpness", "pose", "exposure"]);
    expect(v.quality.measures).toEqual([]);
    expect(v.inference).toEqual([]);
    expect(v.features).toEqual([0.84, 0.93, 0.8]);
    expect(v.decision).toBe("accept");
    expect(v.layers?.z3).toBe(1.2);
    expect(v.timings.map(([k]) => k)).toEqual(["decode", "detect", "align", "embed", "liveness", "quality", "fusion"]);
    expect(v.totalMs).toBe(152);
  });

  it("tolerates a sparse answer and alternative names", () => {
    const v = parseVerify({
      subject_id: "s2",
      faces: [{ box: [1, 2, 11, 22], landmarks: [{ x: 1, y: 2 }, "bad"], score: 0.5 }],
      liveness: { score: 0.1, live: false },
      timings: { detect: 12 },
      decision: "maybe",
      layers: { z1: [1] },
    });
    expect(v.subject).toBe("s2");
    expect(v.face).toEqual({ box: { x: 1, y: 2, width: 10, height: 20 }, landmarks: [[1, 2]], confidence: 0.5 });
    expect(v.liveness.decision).toBe("reject");
    expect(v.match).toEqual({ thresholdOn: "similarity" });
    expect(v.quality).toEqual({ score: undefined, parts: [], measures: [] });
    expect(v.decision).toBeUndefined();
    expect(v.layers).toBeUndefined();
    expect(v.timings).toEqual([["detect", 12]]);
    expect(v.totalMs).toBeUndefined();
  });

  it("survives garbage", () => {
    const v = parseVerify("nope");
    expect(v.face).toBeUndefined();
    expect(v.timings).toEqual([]);
  });

  it("reads the pipeline's own shapes: landmark object, model objects, is_match, measures, inference", () => {
    const v = parseVerify({
      faces_detected: 2,
      face: {
        box: { x: 1, y: 2, width: 3, height: 4 },
        confidence: 0.98,
        landmarks: {
          left_eye: { x: 1, y: 1 },
          right_eye: { x: 2, y: 1 },
          nose: { x: 1.5, y: 2 },
          mouth_left: { x: 1, y: 3 },
          mouth_right: { x: 2, y: 3 },
        },
      },
      match: { distance: 0.7, similarity: 0.4, is_match: false, threshold: 0.6 },
      liveness: {
        score: 0.8,
        live: true,
        threshold: 0.5,
        dtn: { spoof_score: 0.1, live_score: 0.75 },
        minifas: { probabilities: [0.85, 0.1, 0.05], live_score: 0.85 },
      },
      quality: { score: 0.7, size: 1, sharpness: 0.5, pose: 0.9, exposure: 0.6, face_size_px: 180, yaw_degrees: -3.5 },
      inference: { pnet: 20, pnet_runs: 9, rnet: 4, onet: 2, embed: 7, dtn: 100, minifas: null },
    });
    expect(v.facesDetected).toBe(2);
    expect(v.face?.landmarks).toEqual([
      [1, 1],
      [2, 1],
      [1.5, 2],
      [1, 3],
      [2, 3],
    ]);
    expect(v.match.decision).toBe("reject");
    expect(v.liveness.decision).toBe("accept");
    expect(v.liveness.models).toEqual([
      ["dtn", 0.75],
      ["minifas", 0.85],
    ]);
    expect(v.quality.parts.map(([k]) => k)).toEqual(["size", "sharpness", "pose", "exposure"]);
    expect(v.quality.measures).toEqual([
      ["face_size_px", 180],
      ["yaw_degrees", -3.5],
    ]);
    expect(v.inference).toEqual([
      ["pnet", 20],
      ["rnet", 4],
      ["onet", 2],
      ["embed", 7],
      ["dtn", 100],
    ]);
  });
});

describe("the runtime's verify answer", () => {
  const v = parseVerify({
    subject: "s",
    face: { box: { x: 10, y: 10, width: 50, height: 60 }, confidence: 0.99, landmarks: { left_eye: { x: 20, y: 30 } } },
    faces_detected: 1,
    match: { distance: 0.45, similarity: 0.62, threshold: 0.5, decision: "accept", templates: 2 },
    liveness: {
      score: 0.3,
      decision: "reject",
      threshold: 0.5,
      checked: true,
      models: {
        score: 0.3,
        live: false,
        threshold: 0.5,
        dtn: { spoof_score: 2.1, live_score: 0.3 },
        minifas: null,
      },
    },
    quality: null,
    features: [0.62, 0.3, 0.7],
    probability: 0.41,
    decision: "reject",
    threshold: 0.5,
    decision_policy: "strict",
    reasons: ["spoof", "low_probability"],
    weights: "reference",
    timings_ms: {
      decode: 1,
      detect: 2,
      align: 0.1,
      embed: 3,
      liveness: 4,
      quality: 0.2,
      total: 11,
      matching: 0.01,
      fusion: 0.02,
    },
    inference_ms: { pnet: 1, pnet_runs: 5, rnet: 0.5, onet: 0.4, embed: 2.9, dtn: 3.8, minifas: null },
  });

  it("reads models from the nested liveness result, skipping its summary fields", () => {
    expect(v.liveness.models).toEqual([["dtn", 0.3]]);
    expect(v.liveness.decision).toBe("reject");
  });

  it("reads reasons, policy, weights, templates and a missing quality", () => {
    expect(v.reasons).toEqual(["spoof", "low_probability"]);
    expect(v.policy).toBe("strict");
    expect(v.weightsName).toBe("reference");
    expect(v.match.templates).toBe(2);
    expect(v.match.thresholdOn).toBe("similarity");
    expect(v.quality).toEqual({ score: undefined, parts: [], measures: [] });
    expect(v.timings.map(([k]) => k)).toEqual([
      "decode",
      "detect",
      "align",
      "embed",
      "liveness",
      "quality",
      "matching",
      "fusion",
    ]);
    expect(v.totalMs).toBe(11);
  });

  it("marks liveness off", () => {
    expect(parseVerify({ liveness: { checked: false, decision: "accept" } }).liveness.checked).toBe(false);
    expect(parseVerify({ liveness: { state: "off", checked: false } }).liveness.state).toBe("off");
  });

  it("reads an unknown liveness verdict with its reason, not as a model score", () => {
    const v = parseVerify({
      liveness: {
        state: "unknown",
        score: null,
        decision: "reject",
        checked: false,
        reason: "minifas: no crop fits the face box in the image",
        models: { dtn: null, minifas: null, failure: "minifas: no crop fits the face box in the image" },
      },
    });
    expect(v.liveness.state).toBe("unknown");
    expect(v.liveness.decision).toBe("reject");
    expect(v.liveness.reason).toContain("no crop");
    expect(v.liveness.models).toEqual([]);
    expect(parseVerify({ liveness: { state: "bogus" } }).liveness.state).toBeUndefined();
  });
});

describe("decideAtLeast", () => {
  it("accepts at the threshold", () => {
    expect(decideAtLeast(0.5, 0.5)).toBe("accept");
    expect(decideAtLeast(0.49, 0.5)).toBe("reject");
  });
});

describe("matchThresholdOn", () => {
  it("picks the value whose comparison agrees with the decision", () => {
    expect(matchThresholdOn({ similarity: 0.62, distance: 0.45, threshold: 0.5, decision: "accept" })).toBe(
      "similarity",
    );
    expect(matchThresholdOn({ similarity: 0.4, distance: 0.5, threshold: 0.6, decision: "accept" })).toBe("distance");
    expect(matchThresholdOn({ similarity: 0.7, distance: 0.7, threshold: 0.6, decision: "reject" })).toBe("distance");
    expect(matchThresholdOn({ similarity: 0.4, threshold: 0.6 })).toBe("similarity");
    expect(matchThresholdOn({ distance: 0.4, threshold: 0.6, decision: "accept" })).toBe("distance");
  });
});

describe("parseBox", () => {
  it("accepts w/h keys and rejects partial boxes", () => {
    expect(parseBox({ x: 1, y: 2, w: 3, h: 4 })).toEqual({ x: 1, y: 2, width: 3, height: 4 });
    expect(parseBox({ x: 1, y: 2 })).toBeUndefined();
  });
});

describe("parseScore", () => {
  it("reads the score answer with layers", () => {
    const s = parseScore({
      probability: 0.7685,
      decision: "accept",
      threshold: 0.5,
      weights: "reference",
      layers: VERIFY.layers,
    });
    expect(s.probability).toBe(0.7685);
    expect(s.weightsName).toBe("reference");
    expect(s.weights).toBeUndefined();
    expect(s.layers?.a1).toEqual([0.8, 0, 0.4, 2.0]);
  });

  it("requires a probability", () => {
    expect(() => parseScore({ decision: "accept" })).toThrow(ApiError);
  });
});

describe("parseSubjects", () => {
  it("reads the list and skips entries without an id", () => {
    const list = parseSubjects({
      subjects: [{ id: "a", name: "Ann", faces: 2, created_at: "2024-01-01T00:00:00Z" }, { name: "x" }, { id: "b" }],
    });
    expect(list).toEqual([
      { id: "a", name: "Ann", faces: 2, created_at: "2024-01-01T00:00:00Z" },
      { id: "b", name: "b", faces: 0, created_at: undefined },
    ]);
    expect(parseSubjects([{ id: "c", name: "C", faces: 1 }])).toHaveLength(1);
    expect(parseSubjects([{ id: "d", created_by: "app" }])[0]?.created_by).toBe("app");
    expect(parseSubjects(null)).toEqual([]);
  });
});

describe("typedSubjectId", () => {
  it("sends a typed UUID in its canonical spelling, anything else as typed", () => {
    const id = "3f0c2a1e-9b7d-4c5e-8f6a-1b2c3d4e5f60";
    expect(typedSubjectId(` ${id.toUpperCase()} `)).toBe(id);
    expect(typedSubjectId(" Eileen ")).toBe("Eileen");
  });
});

describe("parseSubjectId", () => {
  it("takes a UUID in the runtime's spelling, trimmed and lower-cased, and nothing else", () => {
    const id = "3f0c2a1e-8b4d-4c1a-9e2f-5a6b7c8d9e0f";
    expect(parseSubjectId(id)).toBe(id);
    expect(parseSubjectId(`  ${id.toUpperCase()}\n`)).toBe(id);
    expect(parseSubjectId("")).toBeUndefined();
    expect(parseSubjectId("Eileen")).toBeUndefined();
    expect(parseSubjectId(id.replaceAll("-", ""))).toBeUndefined();
    expect(parseSubjectId(`{${id}}`)).toBeUndefined();
    expect(parseSubjectId(`${id}/faces`)).toBeUndefined();
  });
});

describe("errorFromBody", () => {
  it("reads the JSON error body", () => {
    const e = errorFromBody(422, '{"error":{"code":"invalid_features","message":"features must hold 3 numbers"}}');
    expect(e).toBeInstanceOf(ApiError);
    expect(e.status).toBe(422);
    expect(e.code).toBe("invalid_features");
    expect(e.message).toBe("features must hold 3 numbers");
  });

  it("falls back to the text of a non-JSON body", () => {
    const e = errorFromBody(502, "Bad Gateway\n");
    expect(e.code).toBe("http_502");
    expect(e.message).toBe("Bad Gateway");
    expect(errorFromBody(500, "").message).toBe("HTTP 500");
  });
});

describe("apiUrl", () => {
  it("makes paths relative to the page", () => {
    expect(apiUrl("/v1/score")).toBe("v1/score");
  });
});

describe("API keys on requests", () => {
  const KEY = "fk_" + "a".repeat(43);
  const answer = (status: number, body: unknown, headers: Record<string, string> = {}) =>
    new Response(body === undefined ? null : JSON.stringify(body), {
      status,
      headers: { "content-type": "application/json", ...headers },
    });

  afterEach(() => {
    vi.unstubAllGlobals();
    keySession.clear();
  });

  it("sends the session's key as a Bearer header on every API call", async () => {
    keySession.set(KEY);
    const fetchMock = vi.fn(async () => answer(200, { subjects: [] }));
    vi.stubGlobal("fetch", fetchMock);
    await listSubjects();
    await expect(score([1, 0.5, -1])).rejects.toThrow();
    for (const call of fetchMock.mock.calls as unknown as [string, RequestInit][]) {
      expect(new Headers(call[1].headers).get("Authorization")).toBe(`Bearer ${KEY}`);
    }
    const [, scoreInit] = fetchMock.mock.calls[1] as unknown as [string, RequestInit];
    expect(new Headers(scoreInit.headers).get("Content-Type")).toBe("application/json");
  });

  it("lists every page of subjects, following the next cursors", async () => {
    const page = (ids: string[], next?: string) => ({
      subjects: ids.map((id) => ({ id, name: id, faces: 1 })),
      next: next ?? null,
    });
    const fetchMock = vi.fn(async (url: string) =>
      url.includes("after=b") ? answer(200, page(["c"])) : answer(200, page(["a", "b"], "b")),
    );
    vi.stubGlobal("fetch", fetchMock);
    const list = await listSubjects();
    expect(list.subjects.map((s) => s.id)).toEqual(["a", "b", "c"]);
    expect(list.truncated).toBe(false);
    const urls = (fetchMock.mock.calls as unknown as [string][]).map((c) => c[0]);
    expect(urls).toEqual(["v1/subjects?limit=1000", "v1/subjects?limit=1000&after=b"]);
  });

  it("stops listing at MAX_LISTED_SUBJECTS and says the list was cut off", async () => {
    // 11 full pages of 1 000: the runtime would go on, the UI stops after 10 and says so.
    const fetchMock = vi.fn(async (url: string) => {
      const at = Number(new URL(url, "http://ui/").searchParams.get("after") ?? "0");
      const ids = Array.from({ length: 1000 }, (_, i) => String(at + i + 1));
      const last = at + 1000 >= 11_000;
      return answer(200, {
        subjects: ids.map((id) => ({ id, name: `subject ${id}`, faces: 1 })),
        next: last ? null : String(at + 1000),
      });
    });
    vi.stubGlobal("fetch", fetchMock);
    const list = await listSubjects();
    expect(MAX_LISTED_SUBJECTS).toBe(10_000);
    expect(fetchMock).toHaveBeenCalledTimes(10);
    expect(list.subjects).toHaveLength(MAX_LISTED_SUBJECTS);
    expect(list.subjects[0]?.id).toBe("1");
    expect(list.subjects.at(-1)?.id).toBe("10000");
    expect(list.truncated).toBe(true);
  });

  it("a listing that ends exactly at the bound is complete", async () => {
    const fetchMock = vi.fn(async (url: string) => {
      const at = Number(new URL(url, "http://ui/").searchParams.get("after") ?? "0");
      const ids = Array.from({ length: 1000 }, (_, i) => String(at + i + 1));
      return answer(200, {
        subjects: ids.map((id) => ({ id, name: id, faces: 0 })),
        next: at + 1000 >= 10_000 ? null : String(at + 1000),
      });
    });
    vi.stubGlobal("fetch", fetchMock);
    const list = await listSubjects();
    expect(list.subjects).toHaveLength(10_000);
    expect(list.truncated).toBe(false);
  });

  it("looks a subject up by id with GET /v1/subjects/{id}", async () => {
    const id = "3f0c2a1e-8b4d-4c1a-9e2f-5a6b7c8d9e0f";
    const fetchMock = vi.fn(async () =>
      answer(200, {
        id,
        name: "Eileen",
        faces: 2,
        created_at: "2025-01-02T03:04:05Z",
        created_by: "desk",
        templates: [{ id: "t1", model: "dlib", created_at: "2025-01-02T03:04:06Z" }],
      }),
    );
    vi.stubGlobal("fetch", fetchMock);
    expect(await getSubject(id)).toEqual({
      id,
      name: "Eileen",
      faces: 2,
      created_at: "2025-01-02T03:04:05Z",
      created_by: "desk",
    });
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe(`v1/subjects/${id}`);
    expect(init.method).toBeUndefined();
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(404, { error: { code: "subject_not_found", message: "no such subject" } })),
    );
    const missing = (await getSubject(id).catch((e: unknown) => e)) as ApiError;
    expect(missing.status).toBe(404);
    expect(missing.code).toBe("subject_not_found");
  });

  it("lifts a lockout and reads what it did", async () => {
    const fetchMock = vi.fn(async () => answer(200, { subject: "s 1", was_locked: true, seconds_left: 42 }));
    vi.stubGlobal("fetch", fetchMock);
    expect(await releaseLockout("s 1")).toEqual({ subject: "s 1", wasLocked: true, secondsLeft: 42 });
    const [url, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(url).toBe("v1/subjects/s%201/lockout");
    expect(init.method).toBe("DELETE");
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(200, { subject: "s1", was_locked: false, seconds_left: null })),
    );
    expect(await releaseLockout("s1")).toEqual({ subject: "s1", wasLocked: false, secondsLeft: undefined });
  });

  it("sends no Authorization header without a key", async () => {
    const fetchMock = vi.fn(async () => answer(200, { subjects: [] }));
    vi.stubGlobal("fetch", fetchMock);
    await listSubjects();
    const [, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect(new Headers(init.headers).has("Authorization")).toBe(false);
  });

  it("forgets the key on a 401, which brings up the key prompt", async () => {
    keySession.set(KEY);
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(401, { error: { code: "unauthorized", message: "unknown API key" } })),
    );
    const error = await listSubjects().catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect((error as ApiError).status).toBe(401);
    expect(keySession.snapshot()).toEqual({ key: undefined, notice: KEY_REJECTED });
  });

  it("keeps the key on a 403 and reads Retry-After on a 429", async () => {
    keySession.set(KEY);
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(403, { error: { code: "forbidden", message: "needs the `admin` scope" } })),
    );
    const forbidden = (await listSubjects().catch((e: unknown) => e)) as ApiError;
    expect(forbidden.code).toBe("forbidden");
    expect(keySession.key()).toBe(KEY);
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(429, { error: { code: "rate_limited", message: "slow down" } }, { "Retry-After": "3" })),
    );
    const limited = (await listSubjects().catch((e: unknown) => e)) as ApiError;
    expect(limited.retryAfter).toBe(3);
    expect(keySession.key()).toBe(KEY);
  });

  it("whoami reads the key's identity; a runtime without keys is open", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(200, { key_id: "admin", scopes: ["admin"], rps: null })),
    );
    expect(await whoami()).toEqual({ keyId: "admin", scopes: ["admin"], rps: undefined });
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(404, { error: { code: "not_found", message: "no route" } })),
    );
    expect((await whoami()).open).toBe(true);
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(401, { error: { code: "unauthorized", message: "no key" } })),
    );
    await expect(whoami()).rejects.toMatchObject({ status: 401 });
  });

  it("asks for the forward pass only when told to (admin keys)", async () => {
    const fetchMock = vi.fn(async () => answer(200, { decision: "accept", reasons: [], subject: "s1" }));
    vi.stubGlobal("fetch", fetchMock);
    await verify("s1", new Blob(["x"]), "a.png", undefined, false);
    const [, init] = fetchMock.mock.calls[0] as unknown as [string, RequestInit];
    expect((init.body as FormData).has("include_layers")).toBe(false);
    await verify("s1", new Blob(["x"]), "a.png");
    const [, admin] = fetchMock.mock.calls[1] as unknown as [string, RequestInit];
    expect((admin.body as FormData).get("include_layers")).toBe("true");
  });
});

describe("errorAdvice", () => {
  it("says what to do about access-control errors", () => {
    expect(errorAdvice(new ApiError(401, "unauthorized", ""))).toMatch(/did not accept the API key/);
    expect(errorAdvice(new ApiError(403, "forbidden", "needs the `admin` scope"))).toMatch(/lacks the scope/);
    expect(errorAdvice(new ApiError(403, "not_subject_creator", ""))).toMatch(/key that created the subject/);
    expect(errorAdvice(new ApiError(429, "rate_limited", "", 4))).toBe(
      "Too many requests with this key: try again in 4 s.",
    );
    expect(errorAdvice(new ApiError(429, "subject_locked", "", 60))).toBe(
      "Too many failed verifications locked this subject: try again in 60 s.",
    );
    expect(errorAdvice(new ApiError(429, "rate_limited", ""))).toMatch(/try again later/);
    expect(errorAdvice(new ApiError(429, "too_many_uploads", "", 1))).toBe(
      "This API key is already sending many uploads at once: try again in 1 s.",
    );
    expect(errorAdvice(new ApiError(429, "too_many_inferences", "", 1))).toBe(
      "This API key is using its share of the runtime while other keys wait for theirs: try again in 1 s.",
    );
    expect(errorAdvice(new ApiError(408, "body_too_slow", ""))).toMatch(/upload was too slow/);
    expect(errorAdvice(new ApiError(503, "overloaded", "", 1))).toBe("The runtime is busy: try again in 1 s.");
    expect(errorAdvice(new ApiError(507, "key_subject_quota", ""))).toMatch(/FACEKEY_MAX_SUBJECTS_PER_KEY/);
    expect(errorAdvice(new ApiError(507, "key_template_quota", ""))).toMatch(/FACEKEY_MAX_TEMPLATES_PER_KEY/);
    expect(errorAdvice(new ApiError(507, "store_full", ""))).toMatch(/store is full/);
    expect(errorAdvice(new ApiError(422, "session_bound_to_subject", ""))).toMatch(/without a subject/);
    expect(errorAdvice(new ApiError(422, "no_face", ""))).toBeUndefined();
  });
});
