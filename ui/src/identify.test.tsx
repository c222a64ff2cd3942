import { renderToStaticMarkup } from "react-dom/server";
import { afterEach, describe, expect, it, vi } from "vitest";
import { ApiError, IDENTIFY_LIMIT, errorAdvice, identify, identifySession, parseIdentify } from "./api";
import { identificationWords } from "./components/ChallengePanel";
import { ErrorBox } from "./components/ErrorBox";
import { IdentifyResultView, identifyReasonWords } from "./components/IdentifyResultView";
import { keySession } from "./lib/auth";
import { readLimit } from "./lib/identify";

const KEY = "fk_" + "c".repeat(43);
const answer = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });
const testIds = (html: string) => new Set([...html.matchAll(/data-testid="([^"]+)"/g)].map((m) => m[1]));

/** The runtime's answer to an admin key identifying an image (recorded from the debug runtime, trimmed). */
const ADMIN_IMAGE = {
  request_id: "5b331193",
  candidates: [
    {
      subject: { id: "8ced5dd0", name: "Astro" },
      similarity: 0.9980596303939819,
      distance: 0.0,
      models: ["dlib", "faceres"],
      probability: 0.6766815494836733,
    },
    {
      subject: { id: "11aa", name: "Twin" },
      similarity: 0.71,
      distance: 0.41,
      models: ["dlib"],
      probability: 0.55,
    },
  ],
  decision: "accept",
  reasons: [],
  face: {
    box: { x: 181.59819, y: 63.725506, width: 82.95474, height: 107.35353 },
    confidence: 0.9991204,
    landmarks: {
      left_eye: { x: 203.5, y: 100.1 },
      right_eye: { x: 245.4, y: 102.2 },
      nose: { x: 224.2, y: 126.4 },
      mouth_left: { x: 201.8, y: 138.6 },
      mouth_right: { x: 244.4, y: 140.4 },
    },
  },
  faces_detected: 1,
  liveness: {
    state: "live",
    score: 0.998,
    decision: "accept",
    threshold: 0.5,
    checked: true,
    models: { score: 0.998, dtn: null, minifas: { probabilities: [0.95, 0.04, 0.001], live_score: 0.9557 } },
  },
  quality: { score: 0.817, size: 0.787, sharpness: 0.645, pose: 0.882, exposure: 0.997, face_size_px: 82.95 },
  templates_searched: 3,
  threshold: 0.5,
  decision_policy: "strict",
  timings_ms: { decode: 42.4, detect: 122.5, embed: 31.2, total: 201.8, matching: 0.06, fusion: 0.5 },
  inference_ms: { pnet: 23.6, pnet_runs: 10, rnet: 14.8, embed: 6.2, dtn: null, minifas: 13.1 },
};

/** The same to a `verify` key: the subjects, the decision and its reasons, no scores. */
const VERIFY_KEY = {
  candidates: [{ subject: { id: "8ced5dd0", name: "Astro" } }],
  decision: "accept",
  reasons: [],
  request_id: "2cc25164",
};

/** An admin key identifying with a passed session: the challenge's liveness, a bare quality score. */
const ADMIN_SESSION = {
  request_id: "r3",
  candidates: [
    {
      subject: { id: "8ced5dd0", name: "Astro" },
      similarity: 0.97,
      distance: 0.2,
      models: ["dlib"],
      probability: 0.66,
    },
  ],
  decision: "accept",
  reasons: [],
  session: "9b1e",
  challenge: ["blink", "turn_left"],
  probe_from_image: false,
  liveness: { state: "live", score: 0.93, decision: "accept", threshold: 0.5, checked: true },
  quality: 0.81,
  quality_detail: null,
  templates_searched: 3,
  threshold: 0.5,
  decision_policy: "strict",
};

describe("parseIdentify", () => {
  it("reads an admin answer: candidates best first with their scores, the probe's face, liveness, quality, timings", () => {
    const r = parseIdentify(ADMIN_IMAGE);
    expect(r.candidates).toEqual([
      {
        subject: { id: "8ced5dd0", name: "Astro" },
        similarity: 0.9980596303939819,
        distance: 0,
        probability: 0.6766815494836733,
        models: ["dlib", "faceres"],
      },
      { subject: { id: "11aa", name: "Twin" }, similarity: 0.71, distance: 0.41, probability: 0.55, models: ["dlib"] },
    ]);
    expect(r.decision).toBe("accept");
    expect(r.reasons).toEqual([]);
    expect(r.templatesSearched).toBe(3);
    expect(r.threshold).toBe(0.5);
    expect(r.policy).toBe("strict");
    expect(r.face?.box).toEqual({ x: 181.59819, y: 63.725506, width: 82.95474, height: 107.35353 });
    expect(r.face?.landmarks).toHaveLength(5);
    expect(r.facesDetected).toBe(1);
    expect(r.liveness).toMatchObject({ state: "live", score: 0.998, checked: true, models: [["minifas", 0.9557]] });
    expect(r.quality.score).toBe(0.817);
    expect(r.quality.parts.map(([k]) => k)).toEqual(["size", "sharpness", "pose", "exposure"]);
    expect(r.timings.map(([k]) => k)).toEqual(["decode", "detect", "embed", "matching", "fusion"]);
    expect(r.totalMs).toBe(201.8);
    expect(r.inference.map(([k]) => k)).toEqual(["pnet", "rnet", "embed", "minifas"]);
    expect(r.session).toBeUndefined();
    expect(r.challenge).toEqual([]);
  });

  it("reads a verify key's answer: the subjects alone", () => {
    const r = parseIdentify(VERIFY_KEY);
    expect(r.candidates).toEqual([
      {
        subject: { id: "8ced5dd0", name: "Astro" },
        similarity: undefined,
        distance: undefined,
        probability: undefined,
        models: [],
      },
    ]);
    expect(r.face).toBeUndefined();
    expect(r.templatesSearched).toBeUndefined();
  });

  it("reads a session answer: the session, its challenge, the probe's source and a bare quality score", () => {
    const r = parseIdentify(ADMIN_SESSION);
    expect(r.session).toBe("9b1e");
    expect(r.challenge).toEqual(["blink", "turn_left"]);
    expect(r.probeFromImage).toBe(false);
    expect(r.quality.score).toBe(0.81);
    expect(r.liveness.score).toBe(0.93);
    expect(r.timings).toEqual([]);
  });

  it("reads nobody identified, skips candidates without an id, and refuses an answer without candidates", () => {
    const none = parseIdentify({ candidates: [], decision: "reject", reasons: ["no_match"] });
    expect(none.candidates).toEqual([]);
    expect(none.decision).toBe("reject");
    expect(none.reasons).toEqual(["no_match"]);
    const odd = parseIdentify({ candidates: [{ subject: { name: "no id" } }, null, { subject: { id: "x" } }] });
    expect(odd.candidates.map((c) => c.subject)).toEqual([{ id: "x", name: "x" }]);
    expect(() => parseIdentify({ subject: "s1", decision: "accept" })).toThrow(ApiError);
    expect(() => parseIdentify(null)).toThrow(/no candidates list/);
  });
});

describe("identify requests", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
    keySession.clear();
  });

  it("an image goes as multipart `image`, with `limit` only when given, with the key", async () => {
    keySession.set(KEY);
    const fetchMock = vi.fn(async () => answer(200, VERIFY_KEY));
    vi.stubGlobal("fetch", fetchMock);
    const r = await identify(new Blob(["x"], { type: "image/png" }), "a.png");
    expect(r.candidates[0]?.subject.name).toBe("Astro");
    await identify(new Blob(["x"]), "a.png", undefined, 3);
    const calls = fetchMock.mock.calls as unknown as [string, RequestInit][];
    expect(calls.map(([url, init]) => `${init.method} ${url}`)).toEqual(["POST v1/identify", "POST v1/identify"]);
    const [first, second] = calls.map(([, init]) => init.body as FormData);
    expect([...first!.keys()]).toEqual(["image"]);
    expect((first!.get("image") as File).name).toBe("a.png");
    expect(second!.get("limit")).toBe("3");
    for (const [, init] of calls) expect(new Headers(init.headers).get("Authorization")).toBe(`Bearer ${KEY}`);
  });

  it("a passed session goes as JSON {session, limit?}", async () => {
    const fetchMock = vi.fn(async () => answer(200, ADMIN_SESSION));
    vi.stubGlobal("fetch", fetchMock);
    expect((await identifySession("9b1e")).session).toBe("9b1e");
    await identifySession("9b1e", undefined, 10);
    const calls = fetchMock.mock.calls as unknown as [string, RequestInit][];
    expect(calls.map(([url]) => url)).toEqual(["v1/identify", "v1/identify"]);
    expect(new Headers(calls[0]![1].headers).get("Content-Type")).toBe("application/json");
    expect(calls.map(([, init]) => JSON.parse(init.body as string))).toEqual([
      { session: "9b1e" },
      { session: "9b1e", limit: 10 },
    ]);
  });

  it("refusals carry the runtime's codes, with what to do about them", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(async () =>
        answer(422, { error: { code: "session_bound_to_subject", message: "the session was opened for a subject" } }),
      ),
    );
    const bound = (await identifySession("s").catch((e: unknown) => e)) as ApiError;
    expect(bound).toMatchObject({ status: 422, code: "session_bound_to_subject" });
    expect(errorAdvice(bound)).toMatch(/without a subject to identify/);
    vi.stubGlobal(
      "fetch",
      vi.fn(async () =>
        answer(422, { error: { code: "session_required", message: "identification needs a session" } }),
      ),
    );
    const required = (await identify(new Blob(["x"]), "a.png").catch((e: unknown) => e)) as ApiError;
    expect(required.code).toBe("session_required");
    expect(errorAdvice(required)).toMatch(/use the liveness challenge/);
    const box = renderToStaticMarkup(<ErrorBox error={required} title="Identification failed" />);
    expect(box).toContain("HTTP 422");
    expect(box).toContain("<code>session_required</code>");
    expect(box).toContain('data-testid="error-advice"');
    expect(errorAdvice(new ApiError(422, "session_face_mismatch", ""))).toMatch(/another face/);
    expect(errorAdvice(new ApiError(409, "session_not_passed", ""))).toMatch(/verify or identify/);
    expect(errorAdvice(new ApiError(409, "session_used", ""))).toMatch(/one verification or identification/);
    // Bad input keeps the runtime's own message.
    expect(errorAdvice(new ApiError(422, "invalid_request", "field `limit` must be an integer"))).toBeUndefined();
  });
});

describe("the limit box", () => {
  it("leaves the runtime's default when empty, takes 1 to 100, refuses anything else", () => {
    expect(readLimit("")).toEqual({ ok: true, limit: undefined });
    expect(readLimit(" 7 ")).toEqual({ ok: true, limit: 7 });
    expect(readLimit(String(IDENTIFY_LIMIT.max))).toEqual({ ok: true, limit: 100 });
    for (const bad of ["0", "101", "2.5", "-1", "five", "1e2"]) {
      expect(readLimit(bad)).toEqual({ ok: false, problem: "limit is a whole number from 1 to 100" });
    }
  });
});

describe("the identification shown", () => {
  it("admin: the best match and every candidate with similarity, distance and probability, and the probe's checks", () => {
    const html = renderToStaticMarkup(<IdentifyResultView result={parseIdentify(ADMIN_IMAGE)} admin />);
    const ids = testIds(html);
    expect(html).toContain('data-testid="identify-decision">✓ accept<');
    expect(html).toContain('data-testid="identify-best" data-subject="8ced5dd0"');
    expect(html).toContain("best match <strong>Astro</strong>");
    const rows = [...html.matchAll(/<tr data-testid="identify-candidate" data-subject="([^"]+)"/g)].map((m) => m[1]);
    expect(rows).toEqual(["8ced5dd0", "11aa"]);
    expect(html).toContain('<th scope="col" class="num">similarity</th>');
    expect(html).toContain('data-testid="candidate-similarity">0.998<');
    expect(html).toContain('data-testid="candidate-distance">0.000<');
    expect(html).toContain('data-testid="candidate-probability">0.6767<');
    expect(html).toContain("dlib, faceres");
    expect(html).toContain("3 templates searched · policy strict · accept at probability ≥ 0.50");
    expect(html).toContain("Liveness");
    expect(html).toContain("Quality");
    expect(ids.has("timings")).toBe(true);
    expect(ids.has("scores-need-admin")).toBe(false);
    expect(ids.has("identify-none")).toBe(false);
  });

  it("verify key: the subjects, the decision, and that scores need an admin key", () => {
    const html = renderToStaticMarkup(<IdentifyResultView result={parseIdentify(VERIFY_KEY)} admin={false} />);
    const ids = testIds(html);
    expect(ids.has("identify-candidate")).toBe(true);
    expect(html).toContain('data-testid="candidate-name">Astro<');
    expect(ids.has("candidate-probability")).toBe(false);
    expect(html).not.toContain('<th scope="col" class="num">similarity</th>');
    expect(ids.has("scores-need-admin")).toBe(true);
    expect(html).toContain('data-detail="decision"');
  });

  it("nobody identified: the reject and why, in words", () => {
    const html = renderToStaticMarkup(
      <IdentifyResultView
        result={parseIdentify({ candidates: [], decision: "reject", reasons: ["no_match"] })}
        admin
      />,
    );
    expect(html).toContain("✗ reject");
    expect(html).toContain('data-testid="identify-none"');
    expect(html).toContain("no enrolled subject matches this face");
    expect(html).not.toContain("identify-best");
    expect(identifyReasonWords(["spoof", "low_probability"])).toBe(
      "presentation attack suspected · fused probability below threshold",
    );
    expect(identifyReasonWords(["replayed_session"])).toBe(
      "the liveness session repeats an earlier accepted one (a replayed recording)",
    );
  });

  it("a session's answer, timed by the challenge, shows no timings", () => {
    const html = renderToStaticMarkup(<IdentifyResultView result={parseIdentify(ADMIN_SESSION)} admin />);
    expect(testIds(html).has("timings")).toBe(false);
    expect(identificationWords(parseIdentify(ADMIN_SESSION))).toBe("Astro (8ced5dd0)");
    expect(identificationWords(parseIdentify({ candidates: [], decision: "reject" }))).toBe("nobody identified");
  });
});
