import { useCallback, useEffect, useId, useReducer, useRef, useState } from "react";
import {
  closeSession,
  identifySession,
  sendFrames,
  sessionStatus,
  startSession,
  typedSubjectId,
  verifySession,
} from "../api";
import {
  ChallengeCue,
  ChallengeFeedback,
  ChallengeInstruction,
  ChallengeProgress,
  ChallengeVerdict,
} from "../components/ChallengePanel";
import { ErrorBox } from "../components/ErrorBox";
import { IdentifyResultView } from "../components/IdentifyResultView";
import { SubjectLookup } from "../components/SubjectLookup";
import { VerifyDecisionView, VerifyResultView } from "../components/VerifyResultView";
import { useCamera } from "../hooks/useCamera";
import { useSubjects } from "../hooks/useSubjects";
import { keySession } from "../lib/auth";
import { type ChallengeState, busy, capturing, challengeReducer, initialChallenge } from "../lib/challenge";
import { type ChallengeApi, ChallengeRun, browserTimers } from "../lib/challengeRun";
import { whenLeaving } from "../lib/leave";

/** The page's clock, ticking every `ms` while `on` (for the seconds left); undefined while off. */
function useClock(on: boolean, ms: number): number | undefined {
  const [now, setNow] = useState<number>();
  useEffect(() => {
    if (!on) return undefined;
    // The run's clock: its deadline is on it, not on a wall clock that may be stepped.
    const id = setInterval(() => setNow(browserTimers.now()), ms);
    return () => clearInterval(id);
  }, [on, ms]);
  return on ? now : undefined;
}

/**
 * The runtime's session API as a run calls it, started with `key`: the run gives its session up
 * with that key, as signing out ends the run after the tab's key is gone (a DELETE without a key
 * would only be refused, and audited).
 */
export const challengeApi = (key: string | undefined): ChallengeApi => ({
  startSession: (subject, signal) => startSession(subject, signal),
  sendFrames: (id, frames, signal) => sendFrames(id, frames, signal),
  sessionStatus: (id, signal) => sessionStatus(id, signal),
  closeSession: (id) => closeSession(id, key),
  verifySession: (subject, session, signal, includeLayers) => verifySession(subject, session, signal, includeLayers),
  identifySession: (session, signal) => identifySession(session, signal),
});

/** Titles of the error box by where the flow failed. */
const ERROR_TITLES: Partial<Record<ChallengeState["phase"], string>> = {
  camera: "Camera unavailable",
  starting: "Cannot open a challenge session",
  running: "The challenge stopped",
  finishing: "Cannot read the challenge's verdict",
  verifying: "Verification failed",
  identifying: "Identification failed",
};

/** What a passed session is used for: verifying a subject (optional), or identifying who it is. */
export type ChallengePurpose = "verify" | "identify";

/**
 * The liveness challenge: optionally pick a subject, turn the camera on, open a session, follow
 * the actions it asks for with live feedback, then the verdict and, for a passed session with a
 * subject, its verification. The camera opens before the session, so a permission prompt does
 * not eat the session's few seconds and no session is opened without a camera.
 * With `purpose` `identify` there is no subject: the session is opened without one and, once
 * passed, identified among every enrolled subject.
 */
export function ChallengeFlow({ admin, purpose = "verify" }: { admin: boolean; purpose?: ChallengePurpose }) {
  const identifying = purpose === "identify";
  const [state, dispatch] = useReducer(challengeReducer, initialChallenge);
  const [subjectId, setSubjectId] = useState("");
  const [mirrored, setMirrored] = useState(true);
  const { subjects, truncated, error: listError, reload } = useSubjects(admin && !identifying);
  // Each start is a new camera attempt; the camera is on only while capturing.
  const [attempt, setAttempt] = useState(0);
  const {
    videoRef,
    status: cameraStatus,
    error: cameraError,
    frames,
  } = useCamera(capturing(state.phase) ? attempt : undefined);
  const runner = useRef<ChallengeRun>(undefined);
  const subjectFieldId = useId();
  const mirrorId = useId();

  // Leaving the view ends the run (the camera hook stops the tracks itself); so does leaving
  // the page (closing the tab, reloading, following a link), which unmounts nothing: the
  // session's DELETE is sent with `keepalive` so that it outlives the page.
  useEffect(() => whenLeaving(window, () => runner.current?.cancel()), []);

  // The camera is on: start the run (once per start).
  useEffect(() => {
    if (state.phase !== "camera") return;
    if (cameraStatus === "error") {
      dispatch({ type: "error", error: new Error(cameraError ?? "The camera could not start.") });
      return;
    }
    if (cameraStatus !== "on" || runner.current) return;
    const run = new ChallengeRun(challengeApi(keySession.key()), dispatch);
    runner.current = run;
    const subject = state.subject;
    void run.start({ subject, verify: state.verify, identify: state.identify, includeLayers: admin }, frames);
  }, [state.phase, state.subject, state.verify, state.identify, cameraStatus, cameraError, frames, admin]);

  const subject = identifying ? "" : typedSubjectId(subjectId);
  const start = () => {
    runner.current?.cancel();
    runner.current = undefined;
    setAttempt((a) => a + 1);
    dispatch(
      identifying
        ? { type: "open_camera", verify: false, identify: true }
        : { type: "open_camera", subject: subject || undefined, verify: subject !== "" },
    );
  };
  const cancel = useCallback(() => {
    runner.current?.cancel();
    runner.current = undefined;
    dispatch({ type: "cancel" });
  }, []);

  const now = useClock(state.phase === "running", 1000);
  const active = busy(state.phase);
  const live = capturing(state.phase);
  return (
    <div className="columns challenge">
      <div className="card controls">
        {identifying ? null : admin ? (
          <div className="field">
            <label htmlFor={subjectFieldId}>Subject (optional)</label>
            <div className="row">
              <select
                id={subjectFieldId}
                value={subjectId}
                onChange={(e) => setSubjectId(e.currentTarget.value)}
                disabled={active}
                data-testid="challenge-subject"
              >
                <option value="">none: check liveness only</option>
                {subjects?.map((s) => (
                  <option key={s.id} value={s.id}>
                    {s.name} · {s.faces} face{s.faces === 1 ? "" : "s"}
                  </option>
                ))}
              </select>
              <button type="button" className="secondary" onClick={reload} disabled={active}>
                Reload
              </button>
            </div>
            <ErrorBox error={listError} title="Cannot list subjects" />
            <SubjectLookup truncated={truncated} onFound={(s) => setSubjectId(s.id)} disabled={active} />
          </div>
        ) : (
          <div className="field">
            <label htmlFor={subjectFieldId}>Subject id (optional)</label>
            <input
              id={subjectFieldId}
              value={subjectId}
              onChange={(e) => setSubjectId(e.currentTarget.value)}
              placeholder="leave empty to check liveness only"
              autoComplete="off"
              spellCheck={false}
              disabled={active}
              data-testid="challenge-subject-id"
            />
          </div>
        )}
        <p className="muted small">
          {identifying
            ? "The challenge is opened without a subject; once passed, its best frame is identified among every enrolled subject."
            : subject
              ? "A passed challenge is then verified against this subject, with the session's best frame as the image."
              : "Without a subject the challenge only says whether a live person is in front of the camera."}
        </p>
        <div className="row">
          {active ? (
            <button type="button" className="secondary" onClick={cancel} data-testid="challenge-cancel">
              Cancel
            </button>
          ) : (
            <button type="button" onClick={start} data-testid="challenge-start">
              {state.phase === "idle" ? "Start the challenge" : "Start again"}
            </button>
          )}
          <label className="check" htmlFor={mirrorId}>
            <input
              id={mirrorId}
              type="checkbox"
              checked={mirrored}
              onChange={(e) => setMirrored(e.currentTarget.checked)}
              data-testid="challenge-mirror"
            />
            Mirror the preview
          </label>
        </div>
        {live ? (
          <div className="challenge-stage">
            <video
              ref={videoRef}
              className={mirrored ? "mirrored" : undefined}
              autoPlay
              muted
              playsInline
              aria-label={`Camera preview${mirrored ? ", mirrored" : ""}`}
              data-testid="challenge-video"
              data-camera={cameraStatus}
            />
            <ChallengeCue state={state} mirrored={mirrored} />
          </div>
        ) : (
          <p className="placeholder">
            The camera turns on when the challenge starts and off when it ends. Frames go to the runtime only.
          </p>
        )}
        {state.phase === "error" ? (
          <ErrorBox
            error={state.error}
            title={ERROR_TITLES[state.errorDuring ?? "running"] ?? "The challenge failed"}
          />
        ) : null}
      </div>
      <div className="results">
        <ChallengeInstruction state={state} mirrored={mirrored} />
        <ChallengeProgress state={state} />
        <ChallengeFeedback state={state} now={now} />
        {state.verdict ? <ChallengeVerdict verdict={state.verdict} /> : null}
        {state.phase === "done" && state.errorDuring === "verifying" ? (
          <ErrorBox error={state.error} title="Verification with the session failed" />
        ) : null}
        {state.phase === "done" && state.errorDuring === "identifying" ? (
          <ErrorBox error={state.error} title="Identification with the session failed" />
        ) : null}
        {state.identification ? (
          <section data-testid="challenge-identification">
            <h3>Identification with the session</h3>
            <p className="muted small" data-testid="challenge-probe">
              Among every enrolled subject; the probe is{" "}
              {state.identification.probeFromImage ? "the image sent beside the session" : "the session's best frame"},
              and the challenge&apos;s confidence is the liveness feature.
            </p>
            <IdentifyResultView result={state.identification} admin={admin} />
          </section>
        ) : null}
        {state.result ? (
          <section data-testid="challenge-verification">
            <h3>Verification with the session</h3>
            <p className="muted small" data-testid="challenge-probe">
              Against <code>{state.subject}</code>; the probe is{" "}
              {state.result.probeFromImage ? "the image sent beside the session" : "the session's best frame"}, and the
              challenge&apos;s confidence is the liveness feature.
            </p>
            {admin ? <VerifyResultView result={state.result} /> : <VerifyDecisionView result={state.result} />}
          </section>
        ) : null}
        {state.phase === "idle" ? (
          <p className="placeholder">
            The runtime picks 2–3 actions at random (blink, turn left or right, look up, open your mouth); each one
            appears here when it is asked for.
          </p>
        ) : null}
      </div>
    </div>
  );
}
