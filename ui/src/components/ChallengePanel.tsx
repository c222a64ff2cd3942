import type { IdentifyResult, SessionStatus } from "../api";
import {
  type ChallengeState,
  actionWords,
  challengeReasonWords,
  instructionFor,
  localDeadline,
  progressWords,
} from "../lib/challenge";
import { fixed, millis } from "../lib/format";

const VERDICT_WORDS: Record<SessionStatus["state"], string> = {
  passed: "challenge passed: a live person",
  failed: "challenge failed",
  expired: "session expired",
  in_progress: "still in progress",
};

/** An identification in a few words, for the announcement: who, or that nobody was identified. */
export const identificationWords = (r: IdentifyResult): string => {
  const best = r.candidates[0];
  return best ? `${best.subject.name} (${best.subject.id})` : "nobody identified";
};

/** Frames in a row without a face before the instruction says so. */
export const NO_FACE_HINT_AFTER = 4;

/**
 * The action asked for now, in words, as a polite live region: a screen reader announces each new
 * action once (the arrow is decorative). It also says when no face has been found for a while.
 */
export function ChallengeInstruction({ state, mirrored }: { state: ChallengeState; mirrored: boolean }) {
  const { phase, current, actions, feedback } = state;
  const step = current ? actions.findIndex((a) => a.action === current && !a.passed) : -1;
  const instruction = current ? instructionFor(current, mirrored) : undefined;
  const noFace = phase === "running" && feedback !== undefined && feedback.facelessRun >= NO_FACE_HINT_AFTER;
  let text: React.ReactNode;
  if (phase === "camera") text = <p className="challenge-title">Starting the camera…</p>;
  else if (phase === "starting") text = <p className="challenge-title">Opening a challenge session…</p>;
  else if (phase === "running" && instruction) {
    text = (
      <>
        <p className="challenge-title" data-testid="challenge-action-title">
          {step >= 0 ? <span className="muted small">{`Step ${step + 1} of ${actions.length}: `}</span> : null}
          {instruction.arrow ? (
            <span className="challenge-arrow" aria-hidden="true">
              {instruction.arrow}
            </span>
          ) : null}
          {instruction.title}
        </p>
        <p className="challenge-detail">{instruction.detail}</p>
      </>
    );
  } else if (phase === "running") text = <p className="challenge-title">Hold still while the runtime checks…</p>;
  else if (phase === "finishing") text = <p className="challenge-title">Checking the result…</p>;
  else if (phase === "verifying") text = <p className="challenge-title">Challenge passed: verifying…</p>;
  else if (phase === "identifying") text = <p className="challenge-title">Challenge passed: identifying…</p>;
  else if (phase === "done" && state.verdict) {
    // Said once to screen readers; the verdict card shows it on screen.
    const reasons = challengeReasonWords(state.verdict.reasons);
    text = (
      <p className="sr-only" data-testid="challenge-announce">
        {`${VERDICT_WORDS[state.verdict.state]}${reasons.length > 0 ? `: ${reasons.join(", ")}` : ""}.`}
        {state.result?.decision ? ` Verification: ${state.result.decision}.` : ""}
        {state.identification ? ` Identification: ${identificationWords(state.identification)}.` : ""}
      </p>
    );
  } else text = null;
  return (
    <div
      className={`challenge-instruction${phase === "done" || text === null ? " quiet" : ""}`}
      role="status"
      aria-live="polite"
      aria-atomic="true"
      data-testid="challenge-instruction"
      data-phase={phase}
      data-action={current ?? ""}
    >
      {text}
      {noFace ? (
        <p className="challenge-hint" data-testid="challenge-no-face-hint">
          No face found: face the camera, in good light, with your whole face in view.
        </p>
      ) : null}
    </div>
  );
}

/** The challenge's actions in order (done, current, to do) and how many are done. */
export function ChallengeProgress({ state }: { state: ChallengeState }) {
  const { actions, current } = state;
  if (actions.length === 0) return null;
  const done = actions.filter((a) => a.passed).length;
  return (
    <div className="challenge-progress">
      <div className="row">
        <progress
          max={actions.length}
          value={done}
          aria-label="Challenge actions done"
          aria-valuetext={progressWords(actions)}
        />
        <span data-testid="challenge-progress" data-done={done} data-total={actions.length}>
          {progressWords(actions)}
        </span>
      </div>
      <ol className="challenge-steps" aria-label="Challenge actions">
        {actions.map((a, i) => {
          const isCurrent = !a.passed && a.action === current;
          const tag = a.passed ? "done" : isCurrent ? "current" : "to do";
          return (
            <li
              key={`${a.action}-${i}`}
              className={`step step-${tag.replace(" ", "-")}`}
              aria-current={isCurrent ? "step" : undefined}
              data-testid="challenge-action"
              data-action={a.action}
              data-state={tag}
            >
              <span aria-hidden="true" className="step-mark">
                {a.passed ? "✓" : isCurrent ? "▶" : "○"}
              </span>
              {actionWords(a.action)}
              <span className="muted small">
                {" "}
                ({tag}
                {a.passed && a.atFrame !== undefined ? `, frame ${a.atFrame}` : ""})
              </span>
            </li>
          );
        })}
      </ol>
    </div>
  );
}

/** Whole seconds until the session's `expires_at`, from `now`; undefined without a usable expiry. */
export function secondsLeft(state: ChallengeState, now: number): number | undefined {
  const deadline = localDeadline(state.session?.expiresAt, state.startedAt ?? now, state.session?.serverTime);
  return deadline === undefined ? undefined : Math.max(0, Math.ceil((deadline - now) / 1000));
}

/**
 * What the runtime said about the latest frames: face found or not, actions seen, frame counts,
 * and while it runs the seconds left (`now` is the page's clock).
 */
export function ChallengeFeedback({ state, now }: { state: ChallengeState; now?: number }) {
  const { feedback, framesSent, framesReceived, phase } = state;
  if (phase === "idle" || phase === "camera" || phase === "starting") return null;
  const left = phase === "running" && now !== undefined ? secondsLeft(state, now) : undefined;
  return (
    <dl className="challenge-feedback measures" data-testid="challenge-feedback">
      <dt>Face</dt>
      <dd
        data-testid="challenge-face"
        data-found={feedback ? String(feedback.faceFound) : ""}
        className={feedback ? (feedback.faceFound ? "pass-text" : "fail-text") : "muted"}
      >
        {feedback === undefined
          ? "waiting for the first answer"
          : feedback.faceFound
            ? "face found"
            : `no face found (${feedback.facelessRun} frame${feedback.facelessRun === 1 ? "" : "s"} in a row)`}
      </dd>
      <dt>Seen</dt>
      <dd data-testid="challenge-seen">
        {feedback && feedback.actionsSeen.length > 0 ? feedback.actionsSeen.map(actionWords).join(", ") : "–"}
      </dd>
      <dt>Frames</dt>
      <dd data-testid="challenge-frames">
        {framesSent} sent · {framesReceived} checked
        {state.lastAnswerMs !== undefined ? (
          <span className="muted" data-testid="challenge-answer-time">
            {" "}
            · last answer in {millis(state.lastAnswerMs)}
          </span>
        ) : null}
      </dd>
      {left !== undefined ? (
        <>
          <dt>Time left</dt>
          <dd data-testid="challenge-time-left" className={left <= 5 ? "fail-text" : undefined}>
            {left} s
          </dd>
        </>
      ) : null}
    </dl>
  );
}

/** The session's verdict: passed or not, confidence, and the reasons in words. */
export function ChallengeVerdict({ verdict }: { verdict: SessionStatus }) {
  const passed = verdict.state === "passed";
  const reasons = challengeReasonWords(verdict.reasons);
  return (
    <div className="result" data-testid="challenge-verdict" data-state={verdict.state}>
      <div className={`verdict verdict-${passed ? "accept" : "reject"}`}>
        <span className={`decision decision-${passed ? "accept" : "reject"}`} data-testid="challenge-verdict-state">
          {passed ? "✓ live" : verdict.state === "expired" ? "✗ expired" : "✗ not live"}
        </span>
        <span>{VERDICT_WORDS[verdict.state]}</span>
        {verdict.confidence !== undefined ? (
          <span className="muted" data-testid="challenge-confidence">
            confidence {fixed(verdict.confidence, 2)}
          </span>
        ) : null}
      </div>
      {reasons.length > 0 ? (
        <ul className="reasons" data-testid="challenge-reasons" aria-label="Why">
          {verdict.reasons.map((code, i) => (
            <li key={code} data-reason={code}>
              {reasons[i]}
            </li>
          ))}
        </ul>
      ) : !passed ? (
        <p className="muted" data-testid="challenge-reasons">
          The runtime gave no reason.
        </p>
      ) : null}
      {verdict.detail && verdict.detail.length > 0 ? (
        <dl className="measures" data-testid="challenge-detail" aria-label="Session diagnostics">
          {verdict.detail.map(([name, value]) => (
            <div key={name}>
              <dt>{name.replace(/_/g, " ")}</dt>
              <dd className="num">{Number.isInteger(value) ? value : fixed(value, 3)}</dd>
            </div>
          ))}
        </dl>
      ) : null}
    </div>
  );
}

/**
 * The current action over the camera preview, large, where the person is looking. Hidden from
 * screen readers: the instruction's live region says the same.
 */
export function ChallengeCue({ state, mirrored }: { state: ChallengeState; mirrored: boolean }) {
  if (state.phase !== "running" || !state.current) return null;
  const instruction = instructionFor(state.current, mirrored);
  return (
    <div className="challenge-cue" aria-hidden="true" data-testid="challenge-cue">
      {instruction.arrow ? <span className="challenge-arrow">{instruction.arrow}</span> : null}
      {instruction.title}
    </div>
  );
}
