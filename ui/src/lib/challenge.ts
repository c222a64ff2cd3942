/**
 * The liveness challenge flow as pure logic: what each action asks of the person (in words, with
 * the arrow a mirrored or unmirrored preview needs), the failure reasons in words, and the flow's
 * state machine. The runner (`challengeRun.ts`) feeds it events; the view only renders its state.
 */

import type {
  ActionProgress,
  FramesAnswer,
  IdentifyResult,
  LivenessSession,
  SessionState,
  SessionStatus,
  VerifyResult,
} from "../api";

/** What the person is asked to do for one action. */
export interface Instruction {
  /** Short imperative, e.g. "Turn your head to your left". */
  title: string;
  /** How to do it, one sentence. */
  detail: string;
  /**
   * An arrow for the on-screen direction, when the action has one. Decorative: the words carry
   * the meaning (screen readers skip it).
   */
  arrow?: "←" | "→" | "↑";
}

/**
 * The instruction for an action. `turn_left` is the person's OWN left (the contract): in an
 * unmirrored camera image the nose moves toward the image's right edge. A mirrored preview (the
 * default, like a mirror) shows that same turn moving toward the screen's left, so its arrow
 * points left; an unmirrored preview shows it moving right. The words never depend on the
 * preview: "your left" is right either way.
 */
export function instructionFor(action: string, mirrored: boolean): Instruction {
  const toward = (own: "left" | "right"): "←" | "→" => {
    const screenLeft = own === "left" ? mirrored : !mirrored;
    return screenLeft ? "←" : "→";
  };
  const side = (own: "left" | "right") => (toward(own) === "←" ? "left" : "right");
  switch (action) {
    case "blink":
      return { title: "Blink", detail: "Close both eyes for a moment, then open them again." };
    case "turn_left":
      return {
        title: "Turn your head to your left",
        detail: `Turn slowly toward your left shoulder (the ${side("left")} of the preview), then face the camera again.`,
        arrow: toward("left"),
      };
    case "turn_right":
      return {
        title: "Turn your head to your right",
        detail: `Turn slowly toward your right shoulder (the ${side("right")} of the preview), then face the camera again.`,
        arrow: toward("right"),
      };
    case "look_up":
      return {
        title: "Look up",
        detail: "Tilt your head back a little, nose up, then look at the camera again.",
        arrow: "↑",
      };
    case "open_mouth":
      return { title: "Open your mouth", detail: "Open your mouth wide, then close it." };
    default:
      return {
        title: `Do: ${action.replace(/_/g, " ")}`,
        detail: "The runtime asked for an action this page does not know.",
      };
  }
}

/** An action's name in a few words, for lists and feedback. */
export const actionWords = (action: string): string =>
  ({
    blink: "blink",
    turn_left: "turn left",
    turn_right: "turn right",
    look_up: "look up",
    open_mouth: "open mouth",
  })[action] ?? action.replace(/_/g, " ");

const REASONS: Record<string, string> = {
  expired: "the session ran out of time",
  session_expired: "the session ran out of time",
  timeout: "the session ran out of time",
  no_face: "no face was found",
  face_not_found: "no face was found",
  face_changed: "the face changed during the session",
  different_face: "the face changed during the session",
  multiple_faces: "more than one face was in view",
  action_not_seen: "an action was not seen",
  actions_incomplete: "not every action was seen",
  wrong_order: "the actions came in the wrong order",
  out_of_order: "the actions came in the wrong order",
  too_fast: "the actions came faster than a person can act",
  stale: "the frames were too old",
  stale_frames: "the frames were too old",
  duplicate_frames: "frames were repeated (a replay?)",
  near_duplicate_frames: "frames were nearly identical (a still image?)",
  spoof: "presentation attack suspected",
  passive_spoof: "presentation attack suspected",
  too_many_frames: "the session took too many frames",
  max_frames: "the session took too many frames",
  not_finished: "the runtime had not ended the session",
  timestamps_not_increasing: "the frames' times did not increase (a replay?)",
  frames_too_fast: "frames came faster than a camera sends them",
  clock_mismatch: "the frames claim more time than passed (recorded earlier?)",
  too_few_usable_frames: "too few frames showed the face clearly",
  passive_liveness_low: "the anti-spoofing check judged the frames an attack",
  challenge_incomplete: "the frames ran out before every action was seen",
  unrequested_action: "an action the challenge did not ask for was done (do only the action shown)",
};

/** A session's failure reasons in words; unknown codes are shown with spaces. */
export const challengeReasonWords = (reasons: readonly string[]): string[] =>
  reasons.map((r) => REASONS[r] ?? r.replace(/_/g, " "));

/** The flow's phases, in order; `error` can follow any of them, `idle` follows a cancel. */
export type Phase =
  | "idle" // choosing a subject
  | "camera" // waiting for the camera (permission, first frame)
  | "starting" // opening the session
  | "running" // capturing and uploading frames
  | "finishing" // the session ended: asking for the verdict
  | "verifying" // the session passed: verifying against the subject
  | "identifying" // the session (opened without a subject) passed: identifying among every subject
  | "done" // verdict (and verification or identification) shown
  | "error"; // something failed: the error is shown, the camera is off

/** Why capture stopped. */
export type EndCause = SessionState | "max_frames" | "deadline";

/** What the runtime said about the latest upload, for live feedback. */
export interface LiveFeedback {
  /** Whether the newest frame of the upload had a face. */
  faceFound: boolean;
  /** Frames in a row (newest last) without a face. */
  facelessRun: number;
  /** Actions seen in this upload, in order, without repeats. */
  actionsSeen: string[];
}

export interface ChallengeState {
  phase: Phase;
  /** The subject the session is bound to and the verification runs against, when one was chosen. */
  subject?: string;
  /** Whether a passed session is verified against the subject (needs a subject and `verify`). */
  verify: boolean;
  /**
   * Whether a passed session is identified among every enrolled subject (1:N). Only a session
   * opened without a subject identifies, so an identifying run never has one.
   */
  identify: boolean;
  session?: LivenessSession;
  /** When the session opened, on this page's clock (ms since the epoch). */
  startedAt?: number;
  /** The challenge's actions with their progress, in order. */
  actions: ActionProgress[];
  /** The action asked for now. */
  current?: string;
  framesSent: number;
  framesReceived: number;
  feedback?: LiveFeedback;
  /** How long the last upload took to answer, in milliseconds (the runtime checks every frame). */
  lastAnswerMs?: number;
  /** The session's state as the last answer gave it. */
  sessionState?: SessionState;
  endCause?: EndCause;
  verdict?: SessionStatus;
  /** The verification of a passed session. */
  result?: VerifyResult;
  /** The identification of a passed session. */
  identification?: IdentifyResult;
  /** A failure that stopped the flow (phase `error`), or of the verification or identification alone (phase `done`). */
  error?: unknown;
  /** The phase the error happened in. */
  errorDuring?: Phase;
}

export type ChallengeEvent =
  | { type: "open_camera"; subject?: string; verify: boolean; identify?: boolean }
  | { type: "camera_ready" }
  | { type: "session"; session: LivenessSession; at?: number }
  | { type: "frames_sent"; count: number }
  | { type: "answer"; answer: FramesAnswer; ms?: number }
  | { type: "end"; cause: EndCause }
  | { type: "verdict"; status: SessionStatus }
  | { type: "verified"; result: VerifyResult }
  | { type: "identified"; result: IdentifyResult }
  | { type: "error"; error: unknown }
  | { type: "cancel" };

export const initialChallenge: ChallengeState = {
  phase: "idle",
  verify: false,
  identify: false,
  actions: [],
  framesSent: 0,
  framesReceived: 0,
};

/** Whether the camera and capture are in use in this phase. */
export const capturing = (phase: Phase): boolean => phase === "camera" || phase === "starting" || phase === "running";

/** Whether a passed session is being used (verified or identified) in this phase. */
export const usesSession = (phase: Phase): boolean => phase === "verifying" || phase === "identifying";

/** Whether the flow is between start and result (a new start must cancel first). */
export const busy = (phase: Phase): boolean => phase !== "idle" && phase !== "done" && phase !== "error";

/** The first action not yet passed, or undefined when all are. */
export const firstOpen = (actions: readonly ActionProgress[]): string | undefined =>
  actions.find((a) => !a.passed)?.action;

/** Progress in the session's order: the server's list when it names the actions, else ours updated. */
function mergeActions(mine: readonly ActionProgress[], theirs: readonly ActionProgress[]): ActionProgress[] {
  return theirs.length > 0 ? [...theirs] : [...mine];
}

function feedbackOf(previous: LiveFeedback | undefined, answer: FramesAnswer): LiveFeedback | undefined {
  if (answer.frames.length === 0) return previous;
  let run = previous?.facelessRun ?? 0;
  for (const f of answer.frames) run = f.faceFound ? 0 : run + 1;
  const seen: string[] = [];
  for (const f of answer.frames) if (f.actionSeen && !seen.includes(f.actionSeen)) seen.push(f.actionSeen);
  return { faceFound: run === 0, facelessRun: run, actionsSeen: seen };
}

/** The state machine: events that do not fit the current phase leave the state unchanged. */
export function challengeReducer(s: ChallengeState, e: ChallengeEvent): ChallengeState {
  switch (e.type) {
    case "open_camera":
      if (busy(s.phase)) return s;
      // Identifying takes a session opened without a subject: the subject is dropped, not bound.
      if (e.identify) return { ...initialChallenge, phase: "camera", verify: false, identify: true };
      return { ...initialChallenge, phase: "camera", subject: e.subject || undefined, verify: e.verify };
    case "camera_ready":
      return s.phase === "camera" ? { ...s, phase: "starting" } : s;
    case "session": {
      if (s.phase !== "starting") return s;
      const actions = e.session.challenge.map((action) => ({ action, passed: false }));
      return {
        ...s,
        phase: "running",
        session: e.session,
        startedAt: e.at,
        actions,
        current: actions[0]?.action,
        sessionState: "in_progress",
      };
    }
    case "frames_sent":
      return s.phase === "running" ? { ...s, framesSent: s.framesSent + e.count } : s;
    case "answer": {
      if (s.phase !== "running") return s;
      const actions = mergeActions(s.actions, e.answer.actions);
      const ended = e.answer.state !== "in_progress";
      return {
        ...s,
        actions,
        current: ended ? undefined : (e.answer.nextAction ?? firstOpen(actions)),
        framesReceived: Math.max(s.framesReceived, e.answer.framesReceived),
        feedback: feedbackOf(s.feedback, e.answer),
        lastAnswerMs: e.ms ?? s.lastAnswerMs,
        sessionState: e.answer.state,
        phase: ended ? "finishing" : "running",
        endCause: ended ? e.answer.state : undefined,
      };
    }
    case "end":
      return s.phase === "running" ? { ...s, phase: "finishing", endCause: e.cause, current: undefined } : s;
    case "verdict": {
      if (s.phase !== "finishing") return s;
      const actions = e.status.actions.length > 0 ? e.status.actions : s.actions;
      const passed = e.status.state === "passed";
      const verifying = passed && s.verify && s.subject !== undefined;
      const identifying = passed && s.identify && s.subject === undefined;
      return {
        ...s,
        verdict: e.status,
        actions,
        sessionState: e.status.state,
        phase: verifying ? "verifying" : identifying ? "identifying" : "done",
      };
    }
    case "verified":
      return s.phase === "verifying" ? { ...s, result: e.result, phase: "done" } : s;
    case "identified":
      return s.phase === "identifying" ? { ...s, identification: e.result, phase: "done" } : s;
    case "error":
      if (!busy(s.phase)) return s;
      // A failed verification or identification keeps the verdict: the challenge itself is over.
      if (usesSession(s.phase)) return { ...s, phase: "done", error: e.error, errorDuring: s.phase };
      return { ...s, phase: "error", error: e.error, errorDuring: s.phase, current: undefined };
    case "cancel":
      return { ...initialChallenge };
  }
}

/** "1 of 3 actions done". */
export function progressWords(actions: readonly ActionProgress[]): string {
  const done = actions.filter((a) => a.passed).length;
  return `${done} of ${actions.length} action${actions.length === 1 ? "" : "s"} done`;
}

/**
 * The session's deadline on this page's clock, from the server's `expires_at` and, when known,
 * the server's own time as the session arrived at `now` (`serverTime`): the time left is read on
 * the server's clock, so a device clock seconds fast or slow neither ends capture early nor
 * keeps it going after the session expired. Without `serverTime`, this device's clock stands in
 * for the server's. Undefined when the expiry is missing or implausible (in the past or beyond
 * 10 minutes): the server's own `expired` state then ends the session.
 */
export function localDeadline(expiresAt: string | undefined, now: number, serverTime?: number): number | undefined {
  if (!expiresAt) return undefined;
  const t = Date.parse(expiresAt);
  if (!Number.isFinite(t)) return undefined;
  const left = t - (serverTime !== undefined && Number.isFinite(serverTime) ? serverTime : now);
  return left > 0 && left <= 10 * 60_000 ? now + left : undefined;
}
