import { afterEach, describe, expect, it, vi } from "vitest";
import {
  ApiError,
  blobToBase64,
  errorAdvice,
  framesBody,
  parseFramesAnswer,
  parseSession,
  parseSessionStatus,
  parseVerify,
  sendFrames,
  sessionStatus,
  startSession,
  verifySession,
} from "./api";
import { keySession } from "./lib/auth";
import { ChallengeRun, type Timers } from "./lib/challengeRun";
import { challengeApi } from "./views/ChallengeFlow";

const jpeg = (...bytes: number[]) =>
  new Blob([new Uint8Array([0xff, 0xd8, ...bytes, 0xff, 0xd9])], { type: "image/jpeg" });
const answer = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json", ...headers } });
const KEY = "fk_" + "b".repeat(43);

describe("session answers", () => {
  it("read the contract's shapes", () => {
    expect(
      parseSession({ id: "s1", challenge: ["blink", "turn_left"], expires_at: "2026-12-03T04:00:30Z", max_frames: 90 }),
    ).toEqual({ id: "s1", challenge: ["blink", "turn_left"], expiresAt: "2026-12-03T04:00:30Z", maxFrames: 90 });
    // The answer's Date header gives the server's clock (the middle of its second).
    expect(parseSession({ id: "s1", challenge: [] }, "Thu, 03 Dec 2026 04:00:00 GMT").serverTime).toBe(
      Date.parse("2026-12-03T04:00:00Z") + 500,
    );
    expect(parseSession({ id: "s1", challenge: [] }, "not a date").serverTime).toBeUndefined();
    const frames = parseFramesAnswer({
      state: "in_progress",
      frames_received: 8,
      frames: [
        { index: 6, face_found: true, action_seen: null },
        { index: 7, face_found: false, action_seen: "blink" },
      ],
      next_action: "turn_left",
      actions: [
        { action: "blink", passed: true, at_frame: 7 },
        { action: "turn_left", passed: false, at_frame: null },
      ],
    });
    expect(frames).toEqual({
      state: "in_progress",
      framesReceived: 8,
      frames: [
        { index: 6, faceFound: true, actionSeen: undefined },
        { index: 7, faceFound: false, actionSeen: "blink" },
      ],
      nextAction: "turn_left",
      actions: [
        { action: "blink", passed: true, atFrame: 7 },
        { action: "turn_left", passed: false, atFrame: undefined },
      ],
    });
    expect(
      parseSessionStatus({
        id: "s1",
        state: "failed",
        frames_received: 12,
        live: false,
        confidence: null,
        reasons: ["no_face", 3],
        actions: [],
      }),
    ).toEqual({
      id: "s1",
      state: "failed",
      framesReceived: 12,
      live: false,
      confidence: undefined,
      reasons: ["no_face"],
      actions: [],
      expiresAt: undefined,
      detail: [],
    });
    // An admin key also gets the session's diagnostics.
    const admin = parseSessionStatus({
      id: "s1",
      state: "passed",
      live: true,
      confidence: 0.8,
      reasons: [],
      actions: [],
      detail: { challenge: ["blink"], usable_frames: 30, passive_median: 0.7, max_face_distance: null, used: false },
    });
    expect(admin.detail).toEqual([
      ["usable_frames", 30],
      ["passive_median", 0.7],
    ]);
  });

  it("read a verification with a session: bare quality score, session id, probe source", () => {
    const v = parseVerify({
      subject: "alice",
      session: "s1",
      challenge: ["blink", "look_up"],
      probe_from_image: false,
      match: { similarity: 0.8, threshold: 0.5, decision: "accept" },
      liveness: { state: "live", score: 0.9, decision: "accept", threshold: 0.5, checked: true },
      quality: 0.73,
      quality_detail: null,
      features: [0.8, 0.9, 0.73],
      probability: 0.7,
      decision: "accept",
      threshold: 0.5,
      reasons: [],
    });
    expect(v.session).toBe("s1");
    expect(v.probeFromImage).toBe(false);
    expect(v.quality).toEqual({ score: 0.73, parts: [], measures: [] });
    expect(v.liveness.score).toBe(0.9);
    const withImage = parseVerify({ quality: 0.6, quality_detail: { score: 0.61, size: 0.9, face_size_px: 180 } });
    expect(withImage.quality).toEqual({ score: 0.61, parts: [["size", 0.9]], measures: [["face_size_px", 180]] });
  });

  it("refuse a session without id and an unknown state", () => {
    expect(() => parseSession({ challenge: [] })).toThrow(ApiError);
    expect(() => parseFramesAnswer({ state: "maybe" })).toThrow(/unknown session state/);
  });
});

describe("frame uploads", () => {
  it("JSON: base64 images with integer client timestamps, in order", async () => {
    const init = await framesBody(
      [
        { jpeg: jpeg(1), timestampMs: 1000.4 },
        { jpeg: jpeg(2), timestampMs: 1100 },
      ],
      "json",
    );
    const body = JSON.parse(init.body as string) as { frames: { image: string; timestamp_ms: number }[] };
    expect(body.frames.map((f) => f.timestamp_ms)).toEqual([1000, 1100]);
    expect([...atob(body.frames[1]?.image ?? "")].map((c) => c.charCodeAt(0))).toEqual([0xff, 0xd8, 2, 0xff, 0xd9]);
    expect(new Headers(init.headers).get("Content-Type")).toBe("application/json");
  });

  it("multipart: a timestamp_ms part before each frame part", async () => {
    const init = await framesBody(
      [
        { jpeg: jpeg(1), timestampMs: 5 },
        { jpeg: jpeg(2), timestampMs: 9 },
      ],
      "multipart",
    );
    const form = init.body as FormData;
    const parts = [...form.entries()].map(([name, v]) =>
      typeof v === "string" ? `${name}=${v}` : `${name}:${v.type}`,
    );
    expect(parts).toEqual(["timestamp_ms=5", "frame:image/jpeg", "timestamp_ms=9", "frame:image/jpeg"]);
  });

  it("hold 1 to 8 frames", async () => {
    await expect(framesBody([], "json")).rejects.toThrow(RangeError);
    const nine = Array.from({ length: 9 }, (_, i) => ({ jpeg: jpeg(i), timestampMs: i }));
    await expect(framesBody(nine, "json")).rejects.toThrow(RangeError);
    await expect(framesBody(nine.slice(0, 8), "json")).resolves.toBeDefined();
  });

  it("base64 of a large blob survives the chunking", async () => {
    const bytes = new Uint8Array(100_000).map((_, i) => (i * 7) & 0xff);
    const b64 = await blobToBase64(new Blob([bytes]));
    const back = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
    expect(back).toEqual(bytes);
  });
});

describe("session calls", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
    keySession.clear();
  });

  it("open (bound to a subject or not), upload, read and verify with the key", async () => {
    keySession.set(KEY);
    const fetchMock = vi.fn(async (url: string) => {
      if (url === "v1/liveness/sessions")
        return answer(
          201,
          { id: "a b", challenge: ["blink"], max_frames: 50 },
          { date: "Thu, 03 Dec 2026 04:00:00 GMT" },
        );
      if (url.endsWith("/frames")) return answer(200, { state: "passed", frames_received: 1, frames: [], actions: [] });
      if (url === "v1/verify") return answer(200, { subject: "alice", decision: "accept", reasons: [] });
      return answer(200, { id: "a b", state: "passed", live: true, reasons: [], actions: [] });
    });
    vi.stubGlobal("fetch", fetchMock);
    const s = await startSession("alice");
    expect(s.serverTime).toBe(Date.parse("2026-12-03T04:00:00Z") + 500);
    await startSession(undefined);
    await sendFrames(s.id, [{ jpeg: jpeg(), timestampMs: 1 }]);
    expect((await sessionStatus(s.id)).live).toBe(true);
    expect((await verifySession("alice", s.id, undefined, false)).decision).toBe("accept");
    await verifySession("alice", s.id, undefined, true);
    const calls = fetchMock.mock.calls as unknown as [string, RequestInit][];
    expect(calls.map(([url, init]) => `${init.method ?? "GET"} ${url}`)).toEqual([
      "POST v1/liveness/sessions",
      "POST v1/liveness/sessions",
      "POST v1/liveness/sessions/a%20b/frames",
      "GET v1/liveness/sessions/a%20b",
      "POST v1/verify",
      "POST v1/verify",
    ]);
    const bodies = calls.map(([, init]) => (typeof init.body === "string" ? JSON.parse(init.body) : undefined));
    expect(bodies[0]).toEqual({ subject: "alice" });
    expect(bodies[1]).toEqual({});
    expect(bodies[4]).toEqual({ subject: "alice", session: "a b" });
    expect(bodies[5]).toEqual({ subject: "alice", session: "a b", include_layers: true });
    for (const [, init] of calls) expect(new Headers(init.headers).get("Authorization")).toBe(`Bearer ${KEY}`);
  });

  it("errors carry the contract's codes and Retry-After", async () => {
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(410, { error: { code: "session_expired", message: "expired" } })),
    );
    await expect(sendFrames("s", [{ jpeg: jpeg(), timestampMs: 1 }])).rejects.toMatchObject({
      status: 410,
      code: "session_expired",
    });
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => answer(429, { error: { code: "too_many_sessions", message: "busy" } }, { "Retry-After": "4" })),
    );
    await expect(startSession()).rejects.toMatchObject({ status: 429, code: "too_many_sessions", retryAfter: 4 });
    vi.stubGlobal(
      "fetch",
      vi.fn(async () => {
        throw new TypeError("Failed to fetch");
      }),
    );
    await expect(sessionStatus("s")).rejects.toMatchObject({ status: 0, code: "network" });
  });
});

describe("giving a session up", () => {
  afterEach(() => {
    vi.unstubAllGlobals();
    keySession.clear();
  });

  /** Timers that never fire: the run opens its session and waits. */
  const idle: Timers = { now: () => Date.now(), every: () => () => undefined, sleep: async () => undefined };

  it("a run closes its session with the key it started with, after signing out cleared the tab's key", async () => {
    keySession.set(KEY);
    const fetchMock = vi.fn(async (_url: string, init?: RequestInit) =>
      init?.method === "DELETE"
        ? new Response(null, { status: 204 })
        : answer(201, { id: "s1", challenge: ["blink"], max_frames: 50 }),
    );
    vi.stubGlobal("fetch", fetchMock);
    const run = new ChallengeRun(challengeApi(keySession.key()), () => undefined, idle);
    await run.start({ verify: false, includeLayers: false }, { capture: async () => undefined });
    // Sign out clears the key first; the challenge view then unmounts and cancels its run.
    keySession.clear();
    run.cancel();
    await vi.waitFor(() => expect(fetchMock).toHaveBeenCalledTimes(2));
    const [url, init] = fetchMock.mock.calls[1] as unknown as [string, RequestInit];
    expect(`${init.method} ${url}`).toBe("DELETE v1/liveness/sessions/s1");
    expect(new Headers(init.headers).get("Authorization")).toBe(`Bearer ${KEY}`);
    // Sent to outlive the page (closed or reloaded while the run was on).
    expect(init.keepalive).toBe(true);
    // The key stays forgotten.
    expect(keySession.key()).toBeUndefined();
  });
});

describe("session errors in words", () => {
  it("say what to do", () => {
    expect(errorAdvice(new ApiError(429, "too_many_sessions", "full", 5))).toBe(
      "Too many liveness sessions are open: try again in 5 s.",
    );
    expect(errorAdvice(new ApiError(503, "too_many_sessions", "full"))).toContain("try again later");
    expect(errorAdvice(new ApiError(409, "session_used", "used"))).toContain("one verification or identification");
    expect(errorAdvice(new ApiError(410, "session_expired", "expired"))).toContain("ran out of time");
    expect(errorAdvice(new ApiError(404, "session_not_found", "gone"))).toContain("start a new challenge");
    // Other errors keep their advice.
    expect(errorAdvice(new ApiError(429, "rate_limited", "slow down", 2))).toBe(
      "Too many requests with this key: try again in 2 s.",
    );
    expect(errorAdvice(new ApiError(404, "subject_not_found", "no"))).toBeUndefined();
  });
});
