import { describe, expect, it } from "vitest";
import type { FramesAnswer, SessionStatus } from "../api";
import {
  type ChallengeEvent,
  type ChallengeState,
  actionWords,
  challengeReasonWords,
  challengeReducer,
  initialChallenge,
  instructionFor,
  localDeadline,
  progressWords,
} from "./challenge";

const run = (events: ChallengeEvent[], from: ChallengeState = initialChallenge) =>
  events.reduce(challengeReducer, from);

const SESSION = { id: "s1", challenge: ["blink", "turn_left"], expiresAt: "2030-01-01T00:00:00Z", maxFrames: 120 };
const answer = (over: Partial<FramesAnswer> = {}): FramesAnswer => ({
  state: "in_progress",
  framesReceived: 4,
  frames: [0, 1, 2, 3].map((index) => ({ index, faceFound: true })),
  nextAction: "blink",
  actions: [
    { action: "blink", passed: false },
    { action: "turn_left", passed: false },
  ],
  ...over,
});
const status = (over: Partial<SessionStatus> = {}): SessionStatus => ({
  id: "s1",
  state: "passed",
  live: true,
  confidence: 0.9,
  reasons: [],
  actions: [
    { action: "blink", passed: true, atFrame: 3 },
    { action: "turn_left", passed: true, atFrame: 9 },
  ],
  ...over,
});
const RUNNING: ChallengeEvent[] = [
  { type: "open_camera", subject: "alice", verify: true },
  { type: "camera_ready" },
  { type: "session", session: SESSION },
];

describe("instructions", () => {
  it("turn_left is the person's own left: the arrow points left on a mirrored preview, right on an unmirrored one", () => {
    const mirrored = instructionFor("turn_left", true);
    const raw = instructionFor("turn_left", false);
    expect(mirrored.title).toBe("Turn your head to your left");
    expect(raw.title).toBe(mirrored.title);
    expect(mirrored.arrow).toBe("←");
    expect(raw.arrow).toBe("→");
    expect(mirrored.detail).toContain("left shoulder");
    expect(mirrored.detail).toContain("the left of the preview");
    expect(raw.detail).toContain("the right of the preview");
  });

  it("turn_right mirrors turn_left", () => {
    expect(instructionFor("turn_right", true).arrow).toBe("→");
    expect(instructionFor("turn_right", false).arrow).toBe("←");
    expect(instructionFor("turn_right", true).title).toBe("Turn your head to your right");
  });

  it("every contract action has words, and only direction actions have arrows", () => {
    for (const a of ["blink", "turn_left", "turn_right", "look_up", "open_mouth"]) {
      const i = instructionFor(a, true);
      expect(i.title).not.toMatch(/^Do:/);
      expect(i.detail.length).toBeGreaterThan(10);
    }
    expect(instructionFor("blink", true).arrow).toBeUndefined();
    expect(instructionFor("open_mouth", false).arrow).toBeUndefined();
    expect(instructionFor("look_up", false).arrow).toBe("↑");
    expect(instructionFor("smile_wide", true).title).toBe("Do: smile wide");
    expect(actionWords("turn_left")).toBe("turn left");
  });

  it("reasons and progress in words", () => {
    expect(challengeReasonWords(["no_face", "something_new"])).toEqual(["no face was found", "something new"]);
    // The runtime's reason for an action the challenge left out tells the person what to do.
    expect(challengeReasonWords(["unrequested_action"])[0]).toMatch(/do only the action shown/);
    expect(
      progressWords([
        { action: "blink", passed: true },
        { action: "look_up", passed: false },
      ]),
    ).toBe("1 of 2 actions done");
  });
});

describe("the challenge state machine", () => {
  it("walks camera → starting → running → finishing → verifying → done", () => {
    let s = run(RUNNING.slice(0, 1));
    expect(s.phase).toBe("camera");
    s = run(RUNNING.slice(1, 2), s);
    expect(s.phase).toBe("starting");
    s = run(RUNNING.slice(2), s);
    expect(s.phase).toBe("running");
    expect(s.current).toBe("blink");
    expect(s.actions.map((a) => a.passed)).toEqual([false, false]);
    s = run(
      [
        { type: "frames_sent", count: 4 },
        { type: "answer", answer: answer() },
      ],
      s,
    );
    expect(s.framesSent).toBe(4);
    expect(s.feedback).toEqual({ faceFound: true, facelessRun: 0, actionsSeen: [] });
    const progressed = answer({
      framesReceived: 8,
      frames: [4, 5, 6, 7].map((index) => ({ index, faceFound: true, actionSeen: index === 6 ? "blink" : undefined })),
      nextAction: "turn_left",
      actions: [
        { action: "blink", passed: true, atFrame: 6 },
        { action: "turn_left", passed: false },
      ],
    });
    s = run([{ type: "answer", answer: progressed }], s);
    expect(s.current).toBe("turn_left");
    expect(s.feedback?.actionsSeen).toEqual(["blink"]);
    expect(progressWords(s.actions)).toBe("1 of 2 actions done");
    s = run([{ type: "answer", answer: answer({ state: "passed", nextAction: undefined }) }], s);
    expect(s.phase).toBe("finishing");
    expect(s.endCause).toBe("passed");
    expect(s.current).toBeUndefined();
    s = run([{ type: "verdict", status: status() }], s);
    expect(s.phase).toBe("verifying");
    expect(s.actions.every((a) => a.passed)).toBe(true);
    s = run([{ type: "verified", result: { reasons: [] } as never }], s);
    expect(s.phase).toBe("done");
  });

  it("a passed session without a subject, or without verify, is done at its verdict", () => {
    const noSubject = run([
      { type: "open_camera", subject: "", verify: true },
      ...RUNNING.slice(1),
      { type: "end", cause: "deadline" },
      { type: "verdict", status: status() },
    ]);
    expect(noSubject.subject).toBeUndefined();
    expect(noSubject.phase).toBe("done");
    const noScope = run([
      { type: "open_camera", subject: "alice", verify: false },
      ...RUNNING.slice(1),
      { type: "end", cause: "deadline" },
      { type: "verdict", status: status() },
    ]);
    expect(noScope.phase).toBe("done");
  });

  it("identifying: no subject is bound, and a passed session goes on to identifying → done", () => {
    const opened = run([{ type: "open_camera", subject: "alice", verify: true, identify: true }]);
    expect(opened).toMatchObject({ phase: "camera", verify: false, identify: true });
    expect(opened.subject).toBeUndefined();
    const passed = run(
      [
        ...RUNNING.slice(1),
        { type: "answer", answer: answer({ state: "passed", nextAction: undefined }) },
        { type: "verdict", status: status() },
      ],
      opened,
    );
    expect(passed.phase).toBe("identifying");
    // A verification's answer does not end an identification.
    expect(run([{ type: "verified", result: { reasons: [] } as never }], passed)).toBe(passed);
    const result = { candidates: [], reasons: ["no_match"], decision: "reject" } as never;
    const done = run([{ type: "identified", result }], passed);
    expect(done.phase).toBe("done");
    expect(done.identification).toBe(result);
    // A refused identification keeps the verdict.
    const refused = run([{ type: "error", error: new Error("used") }], passed);
    expect(refused).toMatchObject({ phase: "done", errorDuring: "identifying", verdict: { state: "passed" } });
    // A failed challenge is not identified.
    const failed = run(
      [
        ...RUNNING.slice(1),
        { type: "end", cause: "deadline" },
        { type: "verdict", status: status({ state: "failed" }) },
      ],
      opened,
    );
    expect(failed.phase).toBe("done");
    // Out of phase, an identification's answer is ignored.
    const running = run(RUNNING);
    expect(run([{ type: "identified", result }], running)).toBe(running);
  });

  it("counts frames without a face across uploads", () => {
    const noFace = (from: number) =>
      answer({ frames: [from, from + 1, from + 2].map((index) => ({ index, faceFound: false })) });
    let s = run([...RUNNING, { type: "answer", answer: noFace(0) }, { type: "answer", answer: noFace(3) }]);
    expect(s.feedback).toEqual({ faceFound: false, facelessRun: 6, actionsSeen: [] });
    s = run([{ type: "answer", answer: answer() }], s);
    expect(s.feedback?.facelessRun).toBe(0);
  });

  it("ignores events out of phase", () => {
    const idle = run([
      { type: "answer", answer: answer() },
      { type: "verdict", status: status() },
    ]);
    expect(idle).toEqual(initialChallenge);
    const running = run(RUNNING);
    expect(run([{ type: "open_camera", verify: true }], running)).toBe(running);
    expect(run([{ type: "verified", result: {} as never }], running)).toBe(running);
  });

  it("an error stops the flow where it happened; a failed verification keeps the verdict", () => {
    const e = new Error("boom");
    const s = run([...RUNNING, { type: "error", error: e }]);
    expect(s.phase).toBe("error");
    expect(s.errorDuring).toBe("running");
    expect(s.error).toBe(e);
    const v = run([
      ...RUNNING,
      { type: "answer", answer: answer({ state: "passed" }) },
      { type: "verdict", status: status() },
      { type: "error", error: e },
    ]);
    expect(v.phase).toBe("done");
    expect(v.errorDuring).toBe("verifying");
    expect(v.verdict?.state).toBe("passed");
  });

  it("cancel returns to idle from anywhere, and a new start is possible after done or error", () => {
    expect(run([...RUNNING, { type: "cancel" }])).toEqual(initialChallenge);
    const again = run([...RUNNING, { type: "error", error: 1 }, { type: "open_camera", verify: false }]);
    expect(again.phase).toBe("camera");
    expect(again.error).toBeUndefined();
  });
});

describe("localDeadline", () => {
  const now = Date.parse("2026-12-03T04:00:00Z");
  it("takes a plausible expiry", () => {
    expect(localDeadline("2026-12-03T04:00:30Z", now)).toBe(now + 30_000);
  });
  it("reads the time left on the server's clock when it is known", () => {
    // This device runs 8 s fast: the server said 03:59:52 when it was 04:00:00 here.
    const server = Date.parse("2026-12-03T03:59:52Z");
    expect(localDeadline("2026-12-03T04:00:30Z", now, server)).toBe(now + 38_000);
    // 8 s slow: the session has 22 s left, not 30.
    expect(localDeadline("2026-12-03T04:00:30Z", now, now + 8_000)).toBe(now + 22_000);
    // Already past on the server's clock, whatever this device says.
    expect(localDeadline("2026-12-03T04:00:30Z", now, now + 31_000)).toBeUndefined();
  });
  it("ignores a missing, bad, past or far expiry (clock skew)", () => {
    expect(localDeadline(undefined, now)).toBeUndefined();
    expect(localDeadline("soon", now)).toBeUndefined();
    expect(localDeadline("2026-12-03T03:59:59Z", now)).toBeUndefined();
    expect(localDeadline("2026-12-03T05:00:00Z", now)).toBeUndefined();
  });
});
