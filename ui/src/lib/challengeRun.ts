/**
 * Runs one liveness challenge once the camera is on: opens the session, captures frames at a
 * steady rate, uploads them in batches (one upload in flight at a time, so the runtime sees
 * frames in order), turns each answer into state-machine events, and on a final state asks for
 * the verdict and, for a passed session, verifies it against its subject or identifies it among
 * every subject (a session opened without one). The API, the frame source and the clock are
 * injected, so the whole flow is unit-tested without a browser.
 */

import {
  ApiError,
  type ChallengeFrame,
  type FramesAnswer,
  type IdentifyResult,
  type LivenessSession,
  MAX_FRAMES_PER_CALL,
  type SessionStatus,
  type VerifyResult,
} from "../api";
import { type ChallengeEvent, type EndCause, localDeadline } from "./challenge";

/** The API calls a run makes (`src/api.ts` in the app, a mock in tests). */
export interface ChallengeApi {
  startSession(subject: string | undefined, signal: AbortSignal): Promise<LivenessSession>;
  sendFrames(id: string, frames: readonly ChallengeFrame[], signal: AbortSignal): Promise<FramesAnswer>;
  sessionStatus(id: string, signal: AbortSignal): Promise<SessionStatus>;
  /** Give the session up (not tied to the run's signal: it is sent as the run stops). */
  closeSession(id: string): Promise<void>;
  verifySession(subject: string, session: string, signal: AbortSignal, includeLayers: boolean): Promise<VerifyResult>;
  identifySession(session: string, signal: AbortSignal): Promise<IdentifyResult>;
}

/** Where frames come from: the camera in the app. Undefined when no frame is available yet. */
export interface FrameSource {
  capture(): Promise<Blob | undefined>;
}

/** Time, for capture timestamps and pacing. */
export interface Timers {
  /** Milliseconds since the epoch (the frames' `timestamp_ms`). */
  now(): number;
  /** Call `fn` every `ms`; returns a function that stops it. */
  every(ms: number, fn: () => void): () => void;
  /** Resolve after `ms`. */
  sleep(ms: number): Promise<void>;
}

export const browserTimers: Timers = {
  // The page's monotonic clock, anchored at its wall-clock start: frame timestamps must increase
  // within a session (the runtime fails it otherwise), which a wall clock stepped back by NTP or
  // by hand mid-session would break.
  now: () => Math.round(performance.timeOrigin + performance.now()),
  every: (ms, fn) => {
    const id = setInterval(fn, ms);
    return () => clearInterval(id);
  },
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export interface RunOptions {
  /** Capture rate, frames per second, when the session's frame budget allows it. */
  fps: number;
  /** The lowest capture rate a small frame budget may bring it down to. */
  minFps: number;
  /**
   * Seconds of capture the frame budget should last (`max_frames / fps`, or until the session
   * expires if sooner), within the rates above: a budget spent before the last action fails the
   * session as `challenge_incomplete`, which the runtime counts as a spoof attempt.
   */
  budgetSeconds: number;
  /** Frames to collect before an upload (fewer only for the last one). */
  batchMin: number;
  /** Most frames per upload (the contract allows 8); also the most kept waiting while one is in flight. */
  batchMax: number;
  /** Times a batch is sent again after a network failure before the run fails. */
  networkRetries: number;
  retryDelayMs: number;
  /**
   * Times a batch is sent again after a refusal that added no frame and names a wait
   * (`Retry-After`: the runtime busy, the key's share or rate, the previous call still running),
   * while the session has that long left.
   */
  refusalRetries: number;
  /** How long after the local deadline capture goes on, for clock skew, before the run ends. */
  graceMs: number;
  /** How often, and how many times, to ask again for a verdict that is still `in_progress`. */
  verdictPollMs: number;
  verdictPolls: number;
}

export const DEFAULT_RUN_OPTIONS: RunOptions = {
  fps: 10,
  minFps: 4,
  budgetSeconds: 20,
  batchMin: 4,
  batchMax: 8,
  networkRetries: 2,
  retryDelayMs: 500,
  refusalRetries: 20,
  graceMs: 1500,
  verdictPollMs: 1000,
  verdictPolls: 5,
};

export interface RunRequest {
  subject?: string;
  /** Verify a passed session against the subject. */
  verify: boolean;
  /** Identify a passed session among every subject (the session is opened without a subject). */
  identify?: boolean;
  /** Ask for the forward pass in the verification (admin keys get it). */
  includeLayers: boolean;
}

/**
 * The capture rate for a session: `fps`, lowered toward `minFps` when the frame budget would
 * otherwise last less than `budgetSeconds`, or less than the `secondsLeft` before the session
 * expires when that is sooner (the runtime's default 160 frames: 8 fps for 20 s).
 */
export function captureFps(
  maxFrames: number | undefined,
  o: Pick<RunOptions, "fps" | "minFps" | "budgetSeconds">,
  secondsLeft?: number,
): number {
  if (maxFrames === undefined || maxFrames <= 0) return o.fps;
  const span = secondsLeft !== undefined && secondsLeft > 0 ? Math.min(o.budgetSeconds, secondsLeft) : o.budgetSeconds;
  return Math.min(o.fps, Math.max(Math.min(o.minFps, o.fps), maxFrames / span));
}

/**
 * How long to wait before sending a refused batch again, ms: for refusals that add no frame and
 * name a wait (503 `overloaded` or `store_unavailable`, 429 for the key's share or rate, 409
 * `session_busy`); undefined for every other error (a locked subject or too many sessions is not
 * a matter of seconds within one session).
 */
export function refusalWaitMs(e: unknown): number | undefined {
  if (!(e instanceof ApiError) || e.retryAfter === undefined) return undefined;
  const retryable =
    (e.status === 409 && e.code === "session_busy") ||
    (e.status === 429 && e.code !== "subject_locked" && e.code !== "too_many_sessions") ||
    (e.status === 503 && e.code !== "too_many_sessions");
  return retryable ? Math.max(0, e.retryAfter) * 1000 : undefined;
}

/** API errors that end the session rather than the run: the verdict is still asked for. */
function endCauseOf(e: unknown): EndCause | undefined {
  if (!(e instanceof ApiError)) return undefined;
  if (e.code === "session_expired" || e.status === 410) return "expired";
  if (e.code === "too_many_frames") return "max_frames";
  return undefined;
}

const aborted = (e: unknown) => e instanceof DOMException && e.name === "AbortError";

export class ChallengeRun {
  private readonly controller = new AbortController();
  private readonly opts: RunOptions;
  private stopCapture: (() => void) | undefined;
  private source: FrameSource | undefined;
  /** The capture timer's period now, ms. */
  private period = 0;
  private queue: ChallengeFrame[] = [];
  private captured = 0;
  /** Frames the runtime has taken, from its last answer. */
  private received = 0;
  /** When the current upload's last attempt was sent (its time per frame paces capture). */
  private attemptAt = 0;
  private capturingNow = false;
  private captureDone = false;
  private inFlight = false;
  private ended = false;
  /** The session is spent (ended by the runtime, used, or closed): nothing to give up. */
  private released = false;
  private session: LivenessSession | undefined;
  private deadline: number | undefined;
  /** The session's capture rate ([`captureFps`]), frames per second. */
  private fps = 0;
  private req: RunRequest = { verify: false, includeLayers: false };
  /** Settles when the run has nothing left to do (verdict, verification, error or cancel). */
  readonly finished: Promise<void>;
  private settle: () => void = () => undefined;

  constructor(
    private readonly api: ChallengeApi,
    private readonly dispatch: (e: ChallengeEvent) => void,
    private readonly timers: Timers = browserTimers,
    options: Partial<RunOptions> = {},
  ) {
    this.opts = { ...DEFAULT_RUN_OPTIONS, ...options };
    this.opts.batchMax = Math.min(Math.max(1, this.opts.batchMax), MAX_FRAMES_PER_CALL);
    this.opts.batchMin = Math.min(Math.max(1, this.opts.batchMin), this.opts.batchMax);
    this.finished = new Promise((resolve) => (this.settle = resolve));
  }

  private get signal() {
    return this.controller.signal;
  }

  /** Start with the camera on: open the session and capture until it ends. */
  async start(req: RunRequest, source: FrameSource): Promise<void> {
    // Only a session opened without a subject identifies: an identifying run binds none.
    this.req = req.identify ? { ...req, subject: undefined, verify: false } : req;
    this.dispatch({ type: "camera_ready" });
    let session: LivenessSession;
    try {
      // Opening a session bound to a subject takes an inference place for its lockout read, so
      // it can be refused as busy (503, 429 with Retry-After) like a verification.
      session = await this.refusedAgain(() => this.api.startSession(this.req.subject, this.signal));
    } catch (e) {
      this.fail(e);
      return;
    }
    if (this.signal.aborted) return;
    this.session = session;
    this.deadline = localDeadline(session.expiresAt, this.timers.now(), session.serverTime);
    this.dispatch({ type: "session", session, at: this.timers.now() });
    this.source = source;
    const now = this.timers.now();
    const left = this.deadline === undefined ? undefined : (this.deadline - now) / 1000;
    this.fps = captureFps(session.maxFrames, this.opts, left);
    this.pace(1000 / this.fps);
  }

  /** (Re)start the capture timer at `period` ms. */
  private pace(period: number): void {
    const source = this.source;
    if (!source || this.ended || this.captureDone) return;
    this.stopCapture?.();
    this.period = period;
    this.stopCapture = this.timers.every(period, () => void this.tick(source));
  }

  /**
   * Match capture to what the runtime can check: when an upload took longer per frame than the
   * capture period, frames would only pile up and capture would stall in bursts; spacing them
   * evenly at the runtime's pace covers the person's movement without gaps. Never faster than
   * the session's rate, never slower than 1 frame/s; changes under 20 % are ignored.
   */
  private adapt(ms: number, frames: number): void {
    const base = 1000 / this.fps;
    const wanted = Math.min(1000, Math.max(base, ms / Math.max(1, frames)));
    if (Math.abs(wanted - this.period) > 0.2 * this.period) this.pace(wanted);
  }

  /** Stop everything: timers, uploads in flight. No further events. */
  cancel(): void {
    this.close();
    this.ended = true;
    this.stopCapture?.();
    this.controller.abort();
    this.settle();
  }

  /**
   * Give the session up on the runtime when the run will not use it (Cancel, leaving the view
   * or the page, an error during capture or verification, a passed session with nothing to
   * verify), so that its place is free at once rather than at its expiry; a failure is ignored
   * (the session then expires). Not once it is spent: ended by the runtime (failed, expired) or
   * used by a verification or identification, or closed already.
   */
  private close(): void {
    const session = this.session;
    if (!session || this.released) return;
    this.released = true;
    this.api.closeSession(session.id).catch(() => undefined);
  }

  private fail(e: unknown): void {
    this.stopCapture?.();
    if (this.signal.aborted || aborted(e)) return;
    this.close();
    this.ended = true;
    this.dispatch({ type: "error", error: e });
    this.settle();
  }

  private async tick(source: FrameSource): Promise<void> {
    if (this.ended || this.captureDone || this.capturingNow) return;
    const now = this.timers.now();
    if (this.deadline !== undefined && now > this.deadline + this.opts.graceMs) {
      void this.end("deadline");
      return;
    }
    // Back-pressure: while an upload is slow, skip ticks rather than pile up frames.
    if (this.queue.length >= this.opts.batchMax) return;
    this.capturingNow = true;
    let jpeg: Blob | undefined;
    try {
      jpeg = await source.capture();
    } catch (e) {
      this.capturingNow = false;
      this.fail(e);
      return;
    }
    this.capturingNow = false;
    if (this.ended || !jpeg) return;
    this.queue.push({ jpeg, timestampMs: now });
    this.captured += 1;
    const max = this.session?.maxFrames;
    if (max !== undefined && this.captured >= max) {
      this.captureDone = true;
      this.stopCapture?.();
    }
    void this.pump();
  }

  /** Upload the next batch when none is in flight and enough frames wait (any, once capture is done). */
  private async pump(): Promise<void> {
    const session = this.session;
    if (this.ended || this.inFlight || !session) return;
    if (this.queue.length < (this.captureDone ? 1 : this.opts.batchMin)) {
      if (this.captureDone && this.queue.length === 0) void this.end("max_frames");
      return;
    }
    const batch = this.queue.splice(0, this.opts.batchMax);
    this.inFlight = true;
    this.dispatch({ type: "frames_sent", count: batch.length });
    let answer: FramesAnswer;
    try {
      answer = await this.upload(session.id, batch);
    } catch (e) {
      this.inFlight = false;
      const cause = endCauseOf(e);
      if (cause && !this.signal.aborted) void this.end(cause);
      else this.fail(e);
      return;
    }
    this.inFlight = false;
    if (this.ended) return;
    const ms = this.timers.now() - this.attemptAt;
    this.received = Math.max(this.received, answer.framesReceived);
    this.dispatch({ type: "answer", answer, ms });
    if (answer.state !== "in_progress") {
      void this.finish();
      return;
    }
    this.adapt(ms, batch.length);
    void this.pump();
  }

  /**
   * One upload, sent again after a network failure (status 0) up to `networkRetries` times, and
   * after a refusal that added no frame ([`refusalWaitMs`]) up to `refusalRetries` times while
   * the session has the wait left. A failed call may have been applied all the same (a network
   * failure after the runtime took the batch, a database commit whose outcome it could not learn):
   * before every resend the session's `frames_received` says so, and a batch it took is not sent
   * again (its frames would fail the session as a replay).
   */
  private async upload(id: string, batch: ChallengeFrame[]): Promise<FramesAnswer> {
    const before = this.received;
    let networkFailures = 0;
    let refusals = 0;
    for (let attempt = 0; ; attempt += 1) {
      try {
        // Before any resend: a failed call may have been applied all the same (an answer lost
        // on the way, or a database commit whose outcome the runtime could not learn).
        if (attempt > 0) {
          const taken = await this.takenSince(id, before + batch.length);
          if (taken) return taken;
        }
        this.attemptAt = this.timers.now();
        return await this.api.sendFrames(id, batch, this.signal);
      } catch (e) {
        if (this.signal.aborted) throw e;
        if (e instanceof ApiError && e.status === 0) {
          networkFailures += 1;
          if (networkFailures > this.opts.networkRetries) throw e;
          await this.timers.sleep(this.opts.retryDelayMs);
          continue;
        }
        const wait = refusalWaitMs(e);
        const left = this.deadline === undefined ? Infinity : this.deadline - this.timers.now();
        if (wait === undefined || refusals >= this.opts.refusalRetries || wait >= left) throw e;
        refusals += 1;
        await this.timers.sleep(wait);
      }
    }
  }

  /**
   * The session as an answer when the runtime has taken `frames` frames or more, or has ended;
   * undefined when the batch has not arrived (or the runtime does not say how many it took).
   */
  private async takenSince(id: string, frames: number): Promise<FramesAnswer | undefined> {
    const s = await this.api.sessionStatus(id, this.signal);
    const ended = s.state !== "in_progress";
    if (!ended && (s.framesReceived === undefined || s.framesReceived < frames)) return undefined;
    return {
      state: s.state,
      framesReceived: s.framesReceived ?? this.received,
      frames: [],
      nextAction: ended ? undefined : s.actions.find((a) => !a.passed)?.action,
      actions: s.actions,
    };
  }

  /** Capture ended on this side (deadline, frame budget, an expired answer): ask for the verdict. */
  private async end(cause: EndCause): Promise<void> {
    if (this.ended) return;
    this.dispatch({ type: "end", cause });
    await this.finish();
  }

  /**
   * `call`, made again after a refusal that names a wait ([`refusalWaitMs`]: the runtime busy, the
   * key's share or rate), up to `refusalRetries` times: the runtime refuses a verification or
   * identification with a session before using the session, which stays for the retry.
   */
  private async refusedAgain<T>(call: () => Promise<T>): Promise<T> {
    for (let refusals = 0; ; refusals += 1) {
      try {
        return await call();
      } catch (e) {
        const wait = refusalWaitMs(e);
        if (wait === undefined || refusals >= this.opts.refusalRetries || this.signal.aborted) throw e;
        await this.timers.sleep(wait);
      }
    }
  }

  private async finish(): Promise<void> {
    if (this.ended) return;
    this.ended = true;
    this.stopCapture?.();
    this.queue = [];
    const session = this.session;
    if (!session) return;
    let status: SessionStatus | undefined;
    try {
      status = await this.api.sessionStatus(session.id, this.signal);
      for (let i = 0; status.state === "in_progress" && i < this.opts.verdictPolls; i += 1) {
        await this.timers.sleep(this.opts.verdictPollMs);
        status = await this.api.sessionStatus(session.id, this.signal);
      }
    } catch (e) {
      if (endCauseOf(e) === "expired") {
        status = { id: session.id, state: "expired", reasons: ["session_expired"], actions: [] };
      } else {
        this.fail(e);
        return;
      }
    }
    if (this.signal.aborted) return;
    if (status.state === "in_progress") {
      // The runtime never ended it: say so rather than guess a verdict.
      status = { ...status, state: "failed", live: undefined, reasons: [...status.reasons, "not_finished"] };
    }
    this.dispatch({ type: "verdict", status });
    // Failed or expired, the runtime ended it: it holds no place.
    if (status.state === "failed" && !status.reasons.includes("not_finished")) this.released = true;
    if (status.state === "expired") this.released = true;
    const subject = this.req.subject;
    try {
      if (status.state === "passed" && this.req.verify && subject) {
        const result = await this.refusedAgain(() =>
          this.api.verifySession(subject, session.id, this.signal, this.req.includeLayers),
        );
        this.released = true;
        if (!this.signal.aborted) this.dispatch({ type: "verified", result });
      } else if (status.state === "passed" && this.req.identify) {
        const result = await this.refusedAgain(() => this.api.identifySession(session.id, this.signal));
        this.released = true;
        if (!this.signal.aborted) this.dispatch({ type: "identified", result });
      }
    } catch (e) {
      if (!this.signal.aborted && !aborted(e)) this.dispatch({ type: "error", error: e });
    }
    // A passed session nothing used (liveness only, or a verification that failed), or one the
    // runtime never ended: given up rather than left holding a place until it expires.
    this.close();
    this.settle();
  }
}
