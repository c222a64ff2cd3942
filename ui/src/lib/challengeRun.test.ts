import { describe, expect, it, vi } from "vitest";
import {
  ApiError,
  type ChallengeFrame,
  type FramesAnswer,
  type IdentifyResult,
  type LivenessSession,
  type SessionState,
  type SessionStatus,
  type VerifyResult,
  parseIdentify,
  parseVerify,
} from "../api";
import { type ChallengeEvent, type ChallengeState, challengeReducer, initialChallenge } from "./challenge";
import {
  type ChallengeApi,
  ChallengeRun,
  DEFAULT_RUN_OPTIONS,
  type FrameSource,
  browserTimers,
  type RunOptions,
  type Timers,
  captureFps,
} from "./challengeRun";

/** Timers the test moves by hand: `every` callbacks fire on `tick`, `sleep` advances the clock at once. */
class ManualTimers implements Timers {
  t = Date.parse("2026-12-03T04:00:00Z");
  private intervals = new Set<{ ms: number; fn: () => void }>();
  sleeps: number[] = [];
  now = () => this.t;
  periods: number[] = [];
  every(ms: number, fn: () => void) {
    this.periods.push(ms);
    const h = { ms, fn };
    this.intervals.add(h);
    return () => void this.intervals.delete(h);
  }
  sleep(ms: number) {
    this.sleeps.push(ms);
    this.t += ms;
    return Promise.resolve();
  }
  get running() {
    return this.intervals.size;
  }
  /** Fire the capture interval `n` times, letting every promise settle in between. */
  async tick(n = 1) {
    for (let i = 0; i < n; i += 1) {
      const hs = [...this.intervals];
      this.t += hs[0]?.ms ?? 100;
      for (const h of hs) h.fn();
      await settle();
    }
  }
}

const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** A camera that yields a distinct small JPEG-like blob per frame. */
class FakeCamera implements FrameSource {
  count = 0;
  async capture() {
    this.count += 1;
    return new Blob([new Uint8Array([0xff, 0xd8, this.count & 0xff, 0xff, 0xd9])], { type: "image/jpeg" });
  }
}

interface Script {
  challenge?: string[];
  /** Whether frame `i` (0-based, over the session) shows a face. */
  face?: (i: number) => boolean;
  /** Frames of action-in-view needed to see each action (in order); 0 = never seen. */
  framesPerAction?: number;
  maxFrames?: number;
  ttlMs?: number;
  /** How far the server's clock is ahead of this device's (ms; negative: this device is fast). */
  clockSkewMs?: number;
  /** Throw this from the n-th frames call (0-based), before taking its frames. */
  framesErrors?: Map<number, unknown>;
  /** Take the frames of these calls (0-based), then fail with this instead of answering. */
  lostAnswers?: Map<number, unknown>;
  startError?: unknown;
  /** Refuse this many session openings first. */
  startRefusals?: unknown[];
  statusError?: unknown;
  verifyError?: unknown;
  identifyError?: unknown;
  /** Refuse this many verifications and identifications first (before using the session). */
  useRefusals?: unknown[];
  /** Fail the session after this many faceless frames. */
  failAfterFaceless?: number;
  /** Simulated checking time per frame: the clock moves on by this much per frame uploaded. */
  msPerFrame?: number;
}

/**
 * A stand-in for the runtime's session API with the contract's rules: 1..=8 frames per call,
 * frames in timestamp order, one session, actions seen in order, final states stick.
 */
class ContractServer implements ChallengeApi {
  calls: ChallengeFrame[][] = [];
  received = 0;
  state: SessionState = "in_progress";
  actions: { action: string; passed: boolean; at_frame: number | null }[] = [];
  reasons: string[] = [];
  inFlight = 0;
  maxInFlight = 0;
  verifyCalls: [string, string, boolean][] = [];
  identifyCalls: string[] = [];
  /** The subject each session was opened for (undefined: none). */
  opened: (string | undefined)[] = [];
  statusCalls = 0;
  hold: Promise<void> | undefined;
  private frameCalls = 0;
  private lastTs = -Infinity;
  private faceless = 0;
  private progress = 0;

  constructor(
    private readonly timers: ManualTimers,
    private readonly script: Script = {},
  ) {}

  async startSession(subject: string | undefined): Promise<LivenessSession> {
    if (this.script.startError) throw this.script.startError;
    const refusal = this.script.startRefusals?.shift();
    if (refusal) throw refusal;
    this.opened.push(subject);
    const challenge = this.script.challenge ?? ["blink", "turn_left"];
    this.actions = challenge.map((action) => ({ action, passed: false, at_frame: null }));
    const serverNow = this.timers.now() + (this.script.clockSkewMs ?? 0);
    return {
      id: "sess-1",
      challenge,
      expiresAt: new Date(serverNow + (this.script.ttlMs ?? 20_000)).toISOString(),
      maxFrames: this.script.maxFrames ?? 200,
      serverTime: serverNow,
    };
  }

  async sendFrames(id: string, frames: readonly ChallengeFrame[]): Promise<FramesAnswer> {
    this.inFlight += 1;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      if (this.hold) await this.hold;
      const call = this.frameCalls++;
      this.timers.t += (this.script.msPerFrame ?? 0) * frames.length;
      this.calls.push([...frames]);
      const err = this.script.framesErrors?.get(call);
      if (err) throw err;
      expect(id).toBe("sess-1");
      expect(frames.length).toBeGreaterThanOrEqual(1);
      expect(frames.length).toBeLessThanOrEqual(8);
      if (this.state !== "in_progress") throw new ApiError(409, "session_finished", "final");
      const out: FramesAnswer["frames"] = [];
      for (const f of frames) {
        // As the runtime: frames from before those already taken (a batch sent twice) fail it.
        if (f.timestampMs <= this.lastTs) {
          this.state = "failed";
          this.reasons = ["timestamps_not_increasing"];
          return { state: this.state, framesReceived: this.received, frames: [], actions: [] };
        }
        this.lastTs = f.timestampMs;
        const index = this.received++;
        const face = this.script.face?.(index) ?? true;
        this.faceless = face ? 0 : this.faceless + 1;
        let seen: string | null = null;
        const open = this.actions.find((a) => !a.passed);
        const per = this.script.framesPerAction ?? 3;
        if (face && open && per > 0 && ++this.progress >= per) {
          this.progress = 0;
          open.passed = true;
          open.at_frame = index;
          seen = open.action;
        }
        out.push({ index, faceFound: face, actionSeen: seen ?? undefined });
      }
      if (this.actions.every((a) => a.passed)) this.state = "passed";
      else if (this.script.failAfterFaceless && this.faceless >= this.script.failAfterFaceless) {
        this.state = "failed";
        this.reasons = ["no_face"];
      } else if (this.received >= (this.script.maxFrames ?? 200)) {
        this.state = "failed";
        this.reasons = ["actions_incomplete"];
      }
      const lost = this.script.lostAnswers?.get(call);
      if (lost) throw lost;
      return {
        state: this.state,
        framesReceived: this.received,
        frames: out,
        nextAction: this.actions.find((a) => !a.passed)?.action,
        actions: this.actions.map((a) => ({ action: a.action, passed: a.passed, atFrame: a.at_frame ?? undefined })),
      };
    } finally {
      this.inFlight -= 1;
    }
  }

  closed: string[] = [];
  async closeSession(id: string): Promise<void> {
    this.closed.push(id);
  }

  async sessionStatus(id: string): Promise<SessionStatus> {
    this.statusCalls += 1;
    if (this.script.statusError) throw this.script.statusError;
    return {
      id,
      state: this.state,
      framesReceived: this.received,
      live: this.state === "in_progress" ? undefined : this.state === "passed",
      confidence: this.state === "passed" ? 0.93 : undefined,
      reasons: this.reasons,
      actions: this.actions.map((a) => ({ action: a.action, passed: a.passed, atFrame: a.at_frame ?? undefined })),
    };
  }

  async verifySession(subject: string, session: string, _signal: AbortSignal, layers: boolean): Promise<VerifyResult> {
    this.verifyCalls.push([subject, session, layers]);
    const refusal = this.script.useRefusals?.shift();
    if (refusal) throw refusal;
    if (this.script.verifyError) throw this.script.verifyError;
    return parseVerify({ subject, decision: "accept", reasons: [] });
  }

  async identifySession(session: string): Promise<IdentifyResult> {
    this.identifyCalls.push(session);
    const refusal = this.script.useRefusals?.shift();
    if (refusal) throw refusal;
    if (this.script.identifyError) throw this.script.identifyError;
    return parseIdentify({
      candidates: [{ subject: { id: "alice-id", name: "Alice" } }],
      decision: "accept",
      reasons: [],
    });
  }
}

function harness(script: Script = {}, options: Partial<RunOptions> = {}) {
  const timers = new ManualTimers();
  const server = new ContractServer(timers, script);
  const events: ChallengeEvent[] = [];
  let state: ChallengeState = initialChallenge;
  const dispatch = (e: ChallengeEvent) => {
    events.push(e);
    state = challengeReducer(state, e);
  };
  const runner = new ChallengeRun(server, dispatch, timers, { fps: 10, batchMin: 4, batchMax: 6, ...options });
  const camera = new FakeCamera();
  const begin = async (
    { subject, verify, identify }: { subject?: string; verify: boolean; identify?: boolean } = {
      subject: "alice",
      verify: true,
    },
  ) => {
    dispatch({ type: "open_camera", subject, verify, identify });
    await runner.start({ subject, verify, identify, includeLayers: true }, camera);
    await settle();
  };
  return { timers, server, events, runner, camera, begin, state: () => state };
}

describe("a challenge run", () => {
  it("passes: steady capture, batches of 4..6 in order with capture-time stamps, verdict, then verify", async () => {
    const h = harness({ challenge: ["blink", "turn_left", "look_up"], framesPerAction: 5 });
    await h.begin();
    expect(h.state().phase).toBe("running");
    expect(h.timers.running).toBe(1);
    for (let i = 0; i < 40 && h.state().phase === "running"; i += 1) await h.timers.tick();
    await h.runner.finished;
    const s = h.state();
    expect(s.phase).toBe("done");
    expect(s.verdict?.state).toBe("passed");
    expect(s.result?.decision).toBe("accept");
    expect(h.server.verifyCalls).toEqual([["alice", "sess-1", true]]);
    // 15 frames pass it; each call holds 4 to 6 frames, 100 ms apart, in capture order.
    expect(h.server.received).toBeGreaterThanOrEqual(15);
    for (const call of h.server.calls) {
      expect(call.length).toBeGreaterThanOrEqual(4);
      expect(call.length).toBeLessThanOrEqual(6);
    }
    const stamps = h.server.calls.flat().map((f) => f.timestampMs);
    expect(stamps.slice(1).map((t, i) => t - (stamps[i] as number))).toEqual(stamps.slice(1).map(() => 100));
    expect(s.framesSent).toBe(h.server.received);
    expect(s.framesReceived).toBe(h.server.received);
    expect(s.actions.map((a) => a.passed)).toEqual([true, true, true]);
    // Capture stopped with the verdict.
    expect(h.timers.running).toBe(0);
    expect(h.server.maxInFlight).toBe(1);
  });

  it("shows the next action after each answer", async () => {
    const h = harness({ challenge: ["turn_right", "open_mouth"], framesPerAction: 4 });
    await h.begin();
    expect(h.state().current).toBe("turn_right");
    await h.timers.tick(4);
    expect(h.state().current).toBe("open_mouth");
    expect(h.state().feedback?.actionsSeen).toEqual(["turn_right"]);
    expect(h.state().lastAnswerMs).toBe(0);
  });

  it("without a subject: the verdict only, no verification", async () => {
    const h = harness({ framesPerAction: 2 });
    await h.begin({ verify: true });
    await h.timers.tick(8);
    await h.runner.finished;
    expect(h.state().phase).toBe("done");
    expect(h.state().verdict?.state).toBe("passed");
    expect(h.server.verifyCalls).toEqual([]);
  });

  it("identify: opens the session without a subject and identifies the passed one, never verifies it", async () => {
    const h = harness({ framesPerAction: 2 });
    // A subject handed to an identifying run is dropped: only an unbound session identifies.
    await h.begin({ subject: "alice", verify: true, identify: true });
    await h.timers.tick(8);
    await h.runner.finished;
    const s = h.state();
    expect(h.server.opened).toEqual([undefined]);
    expect(s.subject).toBeUndefined();
    expect(s.phase).toBe("done");
    expect(s.verdict?.state).toBe("passed");
    expect(h.server.identifyCalls).toEqual(["sess-1"]);
    expect(h.server.verifyCalls).toEqual([]);
    expect(s.identification?.candidates.map((c) => c.subject)).toEqual([{ id: "alice-id", name: "Alice" }]);
    expect(s.result).toBeUndefined();
    expect(h.events.map((e) => e.type)).toContain("identified");
  });

  it("identify: a challenge that did not pass is not identified", async () => {
    const h = harness({ face: () => false, failAfterFaceless: 8 });
    await h.begin({ verify: false, identify: true });
    for (let i = 0; i < 10 && h.state().phase === "running"; i += 1) await h.timers.tick();
    await h.runner.finished;
    expect(h.state().verdict?.state).toBe("failed");
    expect(h.state().phase).toBe("done");
    expect(h.server.identifyCalls).toEqual([]);
    expect(h.state().identification).toBeUndefined();
  });

  it("a verification or identification refused with a wait is asked again: the session is still unused", async () => {
    for (const identify of [false, true]) {
      const useRefusals = [
        new ApiError(503, "overloaded", "busy", 1),
        new ApiError(429, "too_many_inferences", "share", 1),
      ];
      const h = harness({ framesPerAction: 1, useRefusals });
      await h.begin(identify ? { verify: false, identify: true } : { subject: "alice", verify: true });
      await h.timers.tick(4);
      await h.runner.finished;
      const s = h.state();
      expect(s.phase).toBe("done");
      expect(identify ? h.server.identifyCalls : h.server.verifyCalls).toHaveLength(3);
      expect(identify ? s.identification?.decision : s.result?.decision).toBe("accept");
      expect(h.timers.sleeps.filter((ms) => ms === 1000)).toHaveLength(2);
    }
  });

  it("identify: a refused identification keeps the passed verdict and says where it failed", async () => {
    const refused = new ApiError(409, "session_used", "used");
    const h = harness({ framesPerAction: 1, identifyError: refused });
    await h.begin({ verify: false, identify: true });
    await h.timers.tick(4);
    await h.runner.finished;
    const s = h.state();
    expect(s.phase).toBe("done");
    expect(s.verdict?.state).toBe("passed");
    expect(s.error).toBe(refused);
    expect(s.errorDuring).toBe("identifying");
    expect(s.identification).toBeUndefined();
  });

  it("no face in view: feedback says so and the run ends failed with the runtime's reasons, unverified", async () => {
    const h = harness({ face: () => false, failAfterFaceless: 12 });
    await h.begin();
    await h.timers.tick(4);
    expect(h.state().feedback).toEqual({ faceFound: false, facelessRun: 4, actionsSeen: [] });
    for (let i = 0; i < 20 && h.state().phase === "running"; i += 1) await h.timers.tick();
    await h.runner.finished;
    const s = h.state();
    expect(s.phase).toBe("done");
    expect(s.verdict?.state).toBe("failed");
    expect(s.verdict?.reasons).toEqual(["no_face"]);
    expect(s.verdict?.live).toBe(false);
    expect(h.server.verifyCalls).toEqual([]);
  });

  it("one upload in flight at a time; a slow upload holds capture at batchMax frames", async () => {
    const h = harness({ framesPerAction: 0 });
    await h.begin();
    let release = () => undefined as void;
    h.server.hold = new Promise<void>((r) => (release = r));
    await h.timers.tick(4); // first batch goes out and hangs
    expect(h.server.inFlight).toBe(1);
    const captured = h.camera.count;
    await h.timers.tick(20);
    expect(h.camera.count - captured).toBe(6);
    h.server.hold = undefined;
    release();
    await settle();
    await settle();
    expect(h.server.maxInFlight).toBe(1);
    expect(h.server.calls.map((c) => c.length)).toEqual([4, 6]);
  });

  it("the frame budget ends capture: the last frames go in a short batch, then the verdict", async () => {
    const h = harness({ framesPerAction: 0, maxFrames: 10 });
    await h.begin();
    await h.timers.tick(15);
    await h.runner.finished;
    expect(h.camera.count).toBe(10);
    expect(h.server.calls.map((c) => c.length)).toEqual([4, 4, 2]);
    expect(h.state().phase).toBe("done");
    expect(h.state().verdict?.reasons).toEqual(["actions_incomplete"]);
  });

  it("410 session_expired on upload: the verdict is asked for, and a gone session reads as expired", async () => {
    const expired = new ApiError(410, "session_expired", "the session expired");
    const h = harness({ framesPerAction: 0, framesErrors: new Map([[1, expired]]), statusError: expired });
    await h.begin();
    await h.timers.tick(8);
    await h.runner.finished;
    const s = h.state();
    expect(s.endCause).toBe("expired");
    expect(s.phase).toBe("done");
    expect(s.verdict).toMatchObject({ state: "expired", reasons: ["session_expired"] });
  });

  it("the local deadline ends capture; a verdict still in progress is polled, then reported as not finished", async () => {
    const h = harness({ framesPerAction: 0, ttlMs: 1000 }, { graceMs: 500, verdictPolls: 2 });
    await h.begin();
    await h.timers.tick(20);
    await h.runner.finished;
    const s = h.state();
    expect(s.endCause).toBe("deadline");
    expect(h.camera.count).toBeLessThanOrEqual(15);
    expect(h.server.statusCalls).toBe(3);
    expect(s.verdict).toMatchObject({ state: "failed", reasons: ["not_finished"] });
    expect(h.timers.running).toBe(0);
  });

  it("a network failure is retried with the same frames; persistent failure stops the run with the error", async () => {
    const net = new ApiError(0, "network", "cannot reach the runtime");
    const once = harness({ framesPerAction: 2, framesErrors: new Map([[0, net]]) });
    await once.begin();
    await once.timers.tick(8);
    await once.runner.finished;
    expect(once.server.calls[0]).toEqual(once.server.calls[1]);
    expect(once.state().verdict?.state).toBe("passed");

    const down = harness({ framesPerAction: 2, framesErrors: new Map([0, 1, 2].map((i) => [i, net])) });
    await down.begin();
    await down.timers.tick(8);
    await down.runner.finished;
    expect(down.server.calls).toHaveLength(3);
    expect(down.state().phase).toBe("error");
    expect(down.state().errorDuring).toBe("running");
    expect(down.state().error).toBe(net);
    expect(down.timers.running).toBe(0);
  });

  it("a batch the runtime took is not sent again, whether its answer was lost or its commit unknown", async () => {
    for (const lost of [
      new ApiError(0, "network", "the answer was lost"),
      new ApiError(503, "store_unavailable", "the commit's outcome is unknown", 5),
    ]) {
      const h = harness({ framesPerAction: 4, lostAnswers: new Map([[0, lost]]) });
      await h.begin();
      await h.timers.tick(12);
      await h.runner.finished;
      // Sent once: the next call carries the next frames, and the session passes (a resent batch
      // would fail it as timestamps_not_increasing).
      expect(h.server.calls[1]?.[0]?.timestampMs, lost.code).toBeGreaterThan(
        h.server.calls[0]?.at(-1)?.timestampMs ?? Infinity,
      );
      expect(h.server.statusCalls).toBeGreaterThanOrEqual(1);
      expect(h.state().verdict?.state, lost.code).toBe("passed");
      expect(h.state().result?.decision).toBe("accept");
    }
  });

  it("the wait before a resend does not count as the runtime's checking time", async () => {
    const h = harness({ framesPerAction: 4, framesErrors: new Map([[0, new ApiError(503, "overloaded", "busy", 2)]]) });
    await h.begin();
    await h.timers.tick(8);
    await h.runner.finished;
    expect(h.state().verdict?.state).toBe("passed");
    // The 2 s wait would have read as 500 ms per frame and slowed capture to 2 frames/s.
    expect(h.timers.periods.every((p) => p === 100)).toBe(true);
  });

  it("a refusal that adds no frame is sent again after its Retry-After", async () => {
    for (const refusal of [
      new ApiError(429, "rate_limited", "too many requests", 2),
      new ApiError(429, "too_many_inferences", "share", 1),
      new ApiError(503, "overloaded", "busy", 1),
      new ApiError(409, "session_busy", "busy", 1),
    ]) {
      const h = harness({ framesPerAction: 2, framesErrors: new Map([[0, refusal]]) });
      await h.begin();
      await h.timers.tick(8);
      await h.runner.finished;
      expect(h.server.calls[0]).toEqual(h.server.calls[1]);
      expect(h.timers.sleeps).toContain((refusal.retryAfter ?? 0) * 1000);
      expect(h.state().verdict?.state, refusal.code).toBe("passed");
    }
  });

  it("an opening refused as busy is sent again after its Retry-After", async () => {
    const busy = new ApiError(503, "overloaded", "busy", 2);
    const h = harness({ framesPerAction: 2, startRefusals: [busy] });
    await h.begin();
    await h.timers.tick(8);
    await h.runner.finished;
    expect(h.server.opened).toHaveLength(1);
    expect(h.timers.sleeps).toContain(2000);
    expect(h.state().verdict?.state).toBe("passed");
  });

  it("a refusal that is not about seconds, or waits past the session's end, stops the run with its error", async () => {
    const locked = new ApiError(429, "subject_locked", "locked", 900);
    const h = harness({ framesErrors: new Map([[0, locked]]) });
    await h.begin();
    await h.timers.tick(6);
    await h.runner.finished;
    expect(h.state().phase).toBe("error");
    expect((h.state().error as ApiError).retryAfter).toBe(900);
    expect(h.server.calls).toHaveLength(1);
    expect(h.timers.running).toBe(0);

    const late = new ApiError(503, "overloaded", "busy", 30);
    const l = harness({ framesErrors: new Map([[0, late]]), ttlMs: 20_000 });
    await l.begin();
    await l.timers.tick(6);
    await l.runner.finished;
    expect(l.state().error).toBe(late);
    expect(l.server.calls).toHaveLength(1);
  });

  it("403 opening the session: no capture at all", async () => {
    const h = harness({ startError: new ApiError(403, "forbidden", "needs the `verify` scope") });
    await h.begin();
    await h.runner.finished;
    expect(h.state().phase).toBe("error");
    expect(h.state().errorDuring).toBe("starting");
    expect(h.timers.running).toBe(0);
    expect(h.camera.count).toBe(0);
  });

  it("a verification refused (409 session_used) keeps the passed verdict", async () => {
    const h = harness({ framesPerAction: 1, verifyError: new ApiError(409, "session_used", "used") });
    await h.begin();
    await h.timers.tick(4);
    await h.runner.finished;
    const s = h.state();
    expect(s.phase).toBe("done");
    expect(s.verdict?.state).toBe("passed");
    expect((s.error as ApiError).code).toBe("session_used");
    expect(s.errorDuring).toBe("verifying");
  });

  it("cancel stops capture and uploads; nothing is dispatched after it", async () => {
    const h = harness({ framesPerAction: 0 });
    await h.begin();
    await h.timers.tick(2);
    h.runner.cancel();
    const n = h.events.length;
    await h.timers.tick(10);
    expect(h.events.length).toBe(n);
    expect(h.timers.running).toBe(0);
    expect(h.server.calls).toHaveLength(0);
    // The session is given up on the runtime, once.
    expect(h.server.closed).toEqual(["sess-1"]);
    h.runner.cancel();
    expect(h.server.closed).toEqual(["sess-1"]);
  });

  it("an error during capture gives the session up; a finished run does not", async () => {
    const refused = new ApiError(429, "subject_locked", "locked", 900);
    const h = harness({ framesErrors: new Map([[0, refused]]) });
    await h.begin();
    await h.timers.tick(6);
    await h.runner.finished;
    expect(h.state().phase).toBe("error");
    expect(h.server.closed).toEqual(["sess-1"]);

    const done = harness({ framesPerAction: 1 });
    await done.begin();
    await done.timers.tick(8);
    await done.runner.finished;
    expect(done.state().verdict?.state).toBe("passed");
    done.runner.cancel();
    expect(done.server.closed).toEqual([]);
  });

  it("a passed session nothing uses is given up; one the runtime failed is not", async () => {
    // Liveness only: passed, no subject to verify.
    const alone = harness({ framesPerAction: 1 });
    await alone.begin({ verify: false });
    await alone.timers.tick(8);
    await alone.runner.finished;
    expect(alone.state().verdict?.state).toBe("passed");
    expect(alone.server.closed).toEqual(["sess-1"]);

    // Passed, and its verification failed: the session would only hold a place.
    const refused = harness({ framesPerAction: 1, verifyError: new ApiError(404, "subject_not_found", "gone") });
    await refused.begin();
    await refused.timers.tick(8);
    await refused.runner.finished;
    expect(refused.state().errorDuring).toBe("verifying");
    expect(refused.server.closed).toEqual(["sess-1"]);

    // Failed by the runtime: nothing to give up.
    const failed = harness({ face: () => false, failAfterFaceless: 3 });
    await failed.begin();
    await failed.timers.tick(8);
    await failed.runner.finished;
    expect(failed.state().verdict?.state).toBe("failed");
    failed.runner.cancel();
    expect(failed.server.closed).toEqual([]);
  });
});

describe("the capture rate", () => {
  it("is 10 fps, lowered toward 4 fps when the frame budget would last under 20 s", () => {
    expect(captureFps(undefined, DEFAULT_RUN_OPTIONS)).toBe(10);
    expect(captureFps(240, DEFAULT_RUN_OPTIONS)).toBe(10);
    // The runtime's default budget: 20 s at 8 fps.
    expect(captureFps(160, DEFAULT_RUN_OPTIONS)).toBe(8);
    // An older runtime's 64 frames last 16 s at 4 fps rather than 6.4 s at 10.
    expect(captureFps(64, DEFAULT_RUN_OPTIONS)).toBe(4);
    expect(captureFps(10, DEFAULT_RUN_OPTIONS)).toBe(4);
  });

  it("spreads the budget only over the time the session has left", () => {
    expect(captureFps(64, DEFAULT_RUN_OPTIONS, 8)).toBe(8);
    expect(captureFps(240, DEFAULT_RUN_OPTIONS, 21)).toBe(10);
    expect(captureFps(64, DEFAULT_RUN_OPTIONS, 0)).toBe(4);
  });

  it("spreads the frame budget over the session's capture", async () => {
    const h = harness({ maxFrames: 64, ttlMs: 60_000 });
    await h.begin();
    expect(h.timers.periods).toEqual([250]);
    h.runner.cancel();
    const short = harness({ maxFrames: 64, ttlMs: 8_000 });
    await short.begin();
    expect(short.timers.periods).toEqual([125]);
    short.runner.cancel();
  });

  it("reads the session's time left on the server's clock", async () => {
    // This device runs 6 s fast: the session's 8 s would look like 2 s on its clock.
    const fast = harness({ maxFrames: 64, ttlMs: 8_000, clockSkewMs: -6_000 });
    await fast.begin();
    expect(fast.timers.periods).toEqual([125]);
    fast.runner.cancel();
  });

  it("paces the run's capture timer", async () => {
    const h = harness({ maxFrames: 32 }, { fps: 10, minFps: 8, budgetSeconds: 5 });
    await h.begin();
    expect(h.timers.periods).toEqual([125]);
    h.runner.cancel();
  });
});

describe("pacing to the runtime", () => {
  it("spaces capture at the runtime's checking pace when it is slower than the capture rate", async () => {
    const h = harness({ framesPerAction: 0, msPerFrame: 250 });
    await h.begin();
    expect(h.timers.periods).toEqual([100]);
    await h.timers.tick(4); // the first batch takes 4 x 250 ms to answer
    expect(h.timers.periods).toEqual([100, 250]);
    expect(h.timers.running).toBe(1);
    await h.timers.tick(8);
    // Frames of later uploads are 250 ms apart (the manual clock also jumps while an upload is checked).
    expect(h.server.calls.length).toBeGreaterThan(1);
    for (const call of h.server.calls.slice(1)) {
      const stamps = call.map((f) => f.timestampMs);
      expect(stamps.slice(1).map((t, i) => t - (stamps[i] as number))).toEqual(stamps.slice(1).map(() => 250));
    }
    h.runner.cancel();
  });

  it("never below 1 frame/s, and small changes keep the pace", async () => {
    const slow = harness({ framesPerAction: 0, msPerFrame: 3000 });
    await slow.begin();
    await slow.timers.tick(4);
    expect(slow.timers.periods).toEqual([100, 1000]);
    slow.runner.cancel();
    const near = harness({ framesPerAction: 0, msPerFrame: 115 });
    await near.begin();
    await near.timers.tick(8);
    expect(near.timers.periods).toEqual([100]);
    near.runner.cancel();
  });
});

describe("the browser's clock for frame timestamps", () => {
  it("keeps increasing when the wall clock is stepped back", () => {
    const before = browserTimers.now();
    const wall = vi.spyOn(Date, "now").mockReturnValue(before - 3_600_000);
    try {
      expect(browserTimers.now()).toBeGreaterThanOrEqual(before);
    } finally {
      wall.mockRestore();
    }
    expect(Math.abs(browserTimers.now() - Date.now())).toBeLessThan(60_000);
  });
});
