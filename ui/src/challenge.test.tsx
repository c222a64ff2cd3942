import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import type { SessionStatus } from "./api";
import {
  ChallengeCue,
  ChallengeFeedback,
  ChallengeInstruction,
  ChallengeProgress,
  ChallengeVerdict,
  NO_FACE_HINT_AFTER,
  secondsLeft,
} from "./components/ChallengePanel";
import { type Auth, AuthContext } from "./hooks/useAuth";
import { type ChallengeState, initialChallenge } from "./lib/challenge";
import type { Identity, Scope } from "./lib/auth";
import { ChallengeFlow } from "./views/ChallengeFlow";
import { VerifyView } from "./views/VerifyView";

const identity = (keyId: string, ...scopes: Scope[]): Identity => ({ keyId, scopes });
function render(node: React.ReactNode, who: Identity): string {
  const auth: Auth = {
    state: { status: "signed-in", identity: who },
    identity: who,
    signIn: () => undefined,
    signOut: () => undefined,
  };
  return renderToStaticMarkup(<AuthContext.Provider value={auth}>{node}</AuthContext.Provider>);
}
const testIds = (html: string) => new Set([...html.matchAll(/data-testid="([^"]+)"/g)].map((m) => m[1]));

const running = (over: Partial<ChallengeState> = {}): ChallengeState => ({
  ...initialChallenge,
  phase: "running",
  subject: "alice",
  verify: true,
  session: { id: "s1", challenge: ["blink", "turn_left"], maxFrames: 120 },
  actions: [
    { action: "blink", passed: true, atFrame: 6 },
    { action: "turn_left", passed: false },
  ],
  current: "turn_left",
  framesSent: 12,
  framesReceived: 8,
  feedback: { faceFound: true, facelessRun: 0, actionsSeen: ["blink"] },
  sessionState: "in_progress",
  ...over,
});

describe("the challenge in the verify view", () => {
  it("is reachable from the verify view for a verify key, as a second mode", () => {
    const ids = testIds(render(<VerifyView />, identity("kiosk", "verify")));
    expect(ids.has("verify-mode-image")).toBe(true);
    expect(ids.has("verify-mode-challenge")).toBe(true);
    expect(ids.has("verify-submit")).toBe(true);
  });

  it("is not offered without verify", () => {
    const ids = testIds(render(<VerifyView />, identity("desk", "enrol")));
    expect(ids.has("verify-mode-challenge")).toBe(false);
  });

  it("admin picks an optional subject from the list; a verify key types it; the camera is off until start", () => {
    const admin = render(<ChallengeFlow admin />, identity("admin", "admin"));
    expect(admin).toContain('data-testid="challenge-subject"');
    expect(admin).toContain('<option value="" selected="">none: check liveness only</option>');
    expect(testIds(admin).has("challenge-start")).toBe(true);
    expect(testIds(admin).has("challenge-video")).toBe(false);
    const kiosk = render(<ChallengeFlow admin={false} />, identity("kiosk", "verify"));
    expect(testIds(kiosk).has("challenge-subject-id")).toBe(true);
    expect(testIds(kiosk).has("challenge-subject")).toBe(false);
    expect(kiosk).toMatch(/data-testid="challenge-mirror" checked=""/);
  });
});

describe("the challenge in the identify view", () => {
  it("opens its session without a subject: no subject field, and says the passed session is identified", () => {
    for (const admin of [true, false]) {
      const html = render(
        <ChallengeFlow admin={admin} purpose="identify" />,
        identity("k", admin ? "admin" : "verify"),
      );
      const ids = testIds(html);
      expect(ids.has("challenge-start")).toBe(true);
      expect(ids.has("challenge-subject")).toBe(false);
      expect(ids.has("challenge-subject-id")).toBe(false);
      expect(html).toContain("identified among every enrolled subject");
    }
  });

  it("says it is identifying, and announces who was identified", () => {
    const identifying = renderToStaticMarkup(
      <ChallengeInstruction state={running({ phase: "identifying", current: undefined })} mirrored />,
    );
    expect(identifying).toContain("Challenge passed: identifying");
    const done = renderToStaticMarkup(
      <ChallengeInstruction
        state={running({
          phase: "done",
          current: undefined,
          subject: undefined,
          verify: false,
          identify: true,
          verdict: { id: "s1", state: "passed", live: true, reasons: [], actions: [] },
          identification: {
            candidates: [{ subject: { id: "a1", name: "Alice" }, models: [] }],
            decision: "accept",
            reasons: [],
            challenge: [],
            timings: [],
            inference: [],
            liveness: { models: [], checked: false },
            quality: { parts: [], measures: [] },
          },
        })}
        mirrored
      />,
    );
    expect(done).toContain("challenge passed: a live person. Identification: Alice (a1).");
  });
});

describe("the instruction (accessibility)", () => {
  it("is a polite, atomic live region whose words carry the action; the arrow is hidden from screen readers", () => {
    const html = renderToStaticMarkup(<ChallengeInstruction state={running()} mirrored />);
    expect(html).toMatch(/^<div class="challenge-instruction" role="status" aria-live="polite" aria-atomic="true"/);
    const idle = renderToStaticMarkup(<ChallengeInstruction state={initialChallenge} mirrored />);
    expect(idle).toMatch(/^<div class="challenge-instruction quiet" role="status" aria-live="polite"/);
    expect(html).toContain('data-action="turn_left"');
    expect(html).toContain("Step 2 of 2: ");
    expect(html).toContain("Turn your head to your left");
    expect(html).toContain('<span class="challenge-arrow" aria-hidden="true">←</span>');
    expect(html).toContain("left shoulder (the left of the preview)");
  });

  it("follows the preview: unmirrored, the person's left is the screen's right", () => {
    const html = renderToStaticMarkup(<ChallengeInstruction state={running()} mirrored={false} />);
    expect(html).toContain("Turn your head to your left");
    expect(html).toContain('aria-hidden="true">→</span>');
    expect(html).toContain("(the right of the preview)");
  });

  it("says when no face has been found for a while", () => {
    const quiet = renderToStaticMarkup(
      <ChallengeInstruction
        state={running({ feedback: { faceFound: false, facelessRun: NO_FACE_HINT_AFTER - 1, actionsSeen: [] } })}
        mirrored
      />,
    );
    expect(quiet).not.toContain("challenge-no-face-hint");
    const hint = renderToStaticMarkup(
      <ChallengeInstruction
        state={running({ feedback: { faceFound: false, facelessRun: NO_FACE_HINT_AFTER, actionsSeen: [] } })}
        mirrored
      />,
    );
    expect(hint).toContain('data-testid="challenge-no-face-hint"');
    expect(hint).toContain("No face found");
  });

  it("says what happens between steps", () => {
    for (const [phase, words] of [
      ["camera", "Starting the camera"],
      ["starting", "Opening a challenge session"],
      ["finishing", "Checking the result"],
      ["verifying", "verifying"],
    ] as const) {
      const html = renderToStaticMarkup(
        <ChallengeInstruction state={running({ phase, current: undefined })} mirrored />,
      );
      expect(html).toContain(words);
      expect(html).toContain(`data-phase="${phase}"`);
    }
  });
});

describe("the verdict, announced", () => {
  it("goes into the instruction's live region once the flow is done, with its reasons", () => {
    const html = renderToStaticMarkup(
      <ChallengeInstruction
        state={running({
          phase: "done",
          current: undefined,
          verdict: { id: "s1", state: "failed", live: false, reasons: ["duplicate_frames"], actions: [] },
        })}
        mirrored
      />,
    );
    expect(html).toContain('role="status"');
    expect(html).toContain('class="sr-only" data-testid="challenge-announce">challenge failed: frames were repeated');
  });
});

describe("progress and feedback", () => {
  it("lists the actions in order with the current one marked as the step, and counts them in words", () => {
    const html = renderToStaticMarkup(<ChallengeProgress state={running()} />);
    expect(html).toContain('<ol class="challenge-steps" aria-label="Challenge actions">');
    expect(html).toContain('aria-valuetext="1 of 2 actions done"');
    expect(html).toContain('data-done="1" data-total="2"');
    const items = [...html.matchAll(/<li [^>]*>/g)].map((m) => m[0]);
    expect(items).toHaveLength(2);
    expect(items[0]).toContain('data-state="done"');
    expect(items[0]).not.toContain("aria-current");
    expect(items[1]).toContain('aria-current="step"');
    expect(items[1]).toContain('data-state="current"');
    expect(html).toContain("(done, frame 6)");
  });

  it("shows face found or not, what was seen and the frame counts", () => {
    const found = renderToStaticMarkup(<ChallengeFeedback state={running()} />);
    expect(found).toContain('data-found="true"');
    expect(found).toContain("face found");
    expect(found).toContain('data-testid="challenge-seen">blink<');
    expect(found).toContain("12 sent · 8 checked");
    expect(found).not.toContain("challenge-answer-time");
    const timed = renderToStaticMarkup(<ChallengeFeedback state={running({ lastAnswerMs: 1250 })} />);
    expect(timed).toMatch(/last answer in 1\.2\d? s/);
    const lost = renderToStaticMarkup(
      <ChallengeFeedback state={running({ feedback: { faceFound: false, facelessRun: 3, actionsSeen: [] } })} />,
    );
    expect(lost).toContain('data-found="false"');
    expect(lost).toContain("no face found (3 frames in a row)");
    expect(renderToStaticMarkup(<ChallengeFeedback state={running({ phase: "camera" })} />)).toBe("");
  });
});

describe("the verdict", () => {
  const verdict = (over: Partial<SessionStatus>): SessionStatus => ({
    id: "s1",
    state: "failed",
    live: false,
    reasons: [],
    actions: [],
    ...over,
  });

  it("failed: not live, with each reason in words", () => {
    const html = renderToStaticMarkup(<ChallengeVerdict verdict={verdict({ reasons: ["no_face", "too_fast"] })} />);
    expect(html).toContain('data-state="failed"');
    expect(html).toContain("✗ not live");
    expect(html).toContain('<li data-reason="no_face">no face was found</li>');
    expect(html).toContain("faster than a person can act");
  });

  it("expired, and a failure without reasons says so", () => {
    const html = renderToStaticMarkup(<ChallengeVerdict verdict={verdict({ state: "expired" })} />);
    expect(html).toContain("✗ expired");
    expect(html).toContain("The runtime gave no reason.");
  });

  it("passed: live, with its confidence", () => {
    const html = renderToStaticMarkup(
      <ChallengeVerdict verdict={verdict({ state: "passed", live: true, confidence: 0.934 })} />,
    );
    expect(html).toContain("✓ live");
    expect(html).toContain("confidence 0.93");
    expect(html).not.toContain("challenge-reasons");
    expect(html).not.toContain("challenge-detail");
  });

  it("admin: the session's diagnostics", () => {
    const html = renderToStaticMarkup(
      <ChallengeVerdict
        verdict={verdict({
          detail: [
            ["usable_frames", 28],
            ["min_frame_difference", 3.14159],
          ],
        })}
      />,
    );
    expect(html).toContain('<dt>usable frames</dt><dd class="num">28</dd>');
    expect(html).toContain('<dt>min frame difference</dt><dd class="num">3.142</dd>');
  });
});

describe("the cue over the preview", () => {
  it("repeats the action for the eyes only, with the preview's arrow, and only while running", () => {
    const html = renderToStaticMarkup(<ChallengeCue state={running()} mirrored />);
    expect(html).toContain('aria-hidden="true"');
    expect(html).toContain("←");
    expect(html).toContain("Turn your head to your left");
    expect(renderToStaticMarkup(<ChallengeCue state={running({ phase: "finishing" })} mirrored />)).toBe("");
  });
});

describe("the seconds left", () => {
  const t0 = Date.parse("2026-12-03T04:00:00Z");
  const withExpiry = running({
    session: { id: "s1", challenge: ["blink"], expiresAt: "2026-12-03T04:00:30Z" },
    startedAt: t0,
  });

  it("count down from the session's expiry while it runs", () => {
    expect(secondsLeft(withExpiry, t0 + 10_200)).toBe(20);
    expect(secondsLeft(withExpiry, t0 + 40_000)).toBe(0);
    const html = renderToStaticMarkup(<ChallengeFeedback state={withExpiry} now={t0 + 26_000} />);
    expect(html).toContain('data-testid="challenge-time-left" class="fail-text">4 s<');
  });

  it("are not shown for an implausible expiry, or once the session ended", () => {
    const skewed = { ...withExpiry, startedAt: t0 + 60_000 };
    expect(secondsLeft(skewed, t0)).toBeUndefined();
    const done = renderToStaticMarkup(<ChallengeFeedback state={{ ...withExpiry, phase: "done" }} now={t0} />);
    expect(done).not.toContain("challenge-time-left");
  });
});
