import { useEffect, useId, useRef, useState } from "react";
import { type VerifyResult, typedSubjectId, verify } from "../api";
import { ErrorBox } from "../components/ErrorBox";
import { FaceOverlay } from "../components/FaceOverlay";
import { RouteLink } from "../components/RouteLink";
import { ImagePicker, type PickedImage, useRevokeOnChange } from "../components/ImagePicker";
import { ScopeNotice } from "../components/ScopeNotice";
import { SubjectLookup } from "../components/SubjectLookup";
import { VerifyDecisionView, VerifyResultView } from "../components/VerifyResultView";
import { useAuth } from "../hooks/useAuth";
import { useSubjects } from "../hooks/useSubjects";
import { may } from "../lib/auth";
import { ChallengeFlow } from "./ChallengeFlow";
import { type Mode, ModeSwitch } from "../components/ModeSwitch";

const TITLE = (
  <>
    <h2>Verify a face</h2>
    <p className="lead">Is this the enrolled person, and is it a live face? One image against one subject.</p>
  </>
);

/**
 * 1:1 verification: pick a subject and an image, send it, and show what the pipeline found:
 * everything with an admin key, the decision and its reasons with a `verify` key.
 */
export function VerifyView() {
  const { identity } = useAuth();
  if (!may(identity, "verify")) {
    return (
      <div className="view verify">
        {TITLE}
        <ScopeNotice needs="verify" what="Verifying a face" identity={identity} />
      </div>
    );
  }
  return <VerifyModes admin={may(identity, "admin")} />;
}

/**
 * One image against a subject, or the camera liveness challenge (whose passed session can then be
 * verified against a subject). Switching away from the challenge ends it and turns the camera off.
 */
function VerifyModes({ admin, initial = "image" }: { admin: boolean; initial?: Mode }) {
  const [mode, setMode] = useState<Mode>(initial);
  return (
    <div className="view verify">
      {TITLE}
      <ModeSwitch mode={mode} onChange={setMode} label="How to verify" testIdPrefix="verify-mode" />
      {mode === "image" ? <VerifyForm admin={admin} /> : <ChallengeFlow admin={admin} />}
    </div>
  );
}

function VerifyForm({ admin }: { admin: boolean }) {
  const { subjects, truncated, error: listError, reload } = useSubjects(admin);
  const [subjectId, setSubjectId] = useState("");
  const [image, setImage] = useState<PickedImage>();
  const [result, setResult] = useState<VerifyResult>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const inFlight = useRef<AbortController>(undefined);
  const selectId = useId();
  useRevokeOnChange(image);
  useEffect(() => () => inFlight.current?.abort(), []);

  // With an admin key the subject comes from the list; otherwise its id is typed in.
  const chosen = admin
    ? (subjects?.find((s) => s.id === subjectId) ?? subjects?.[0])
    : subjectId.trim()
      ? { id: typedSubjectId(subjectId) }
      : undefined;

  // A new image or subject: the answer about the previous one (shown or still coming) is gone,
  // so it is never drawn over the new image.
  const startOver = () => {
    inFlight.current?.abort();
    setBusy(false);
    setResult(undefined);
    setError(undefined);
  };

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    if (!chosen || !image) return;
    inFlight.current?.abort();
    const controller = new AbortController();
    inFlight.current = controller;
    setBusy(true);
    setError(undefined);
    setResult(undefined);
    try {
      setResult(await verify(chosen.id, image.blob, image.filename, controller.signal, admin));
    } catch (err) {
      if (!controller.signal.aborted) setError(err);
    } finally {
      if (!controller.signal.aborted) setBusy(false);
    }
  };

  return (
    <>
      <div className="columns">
        <form className="card controls" onSubmit={submit}>
          {admin ? (
            <div className="field">
              <label htmlFor={selectId}>Subject</label>
              <div className="row">
                <select
                  id={selectId}
                  value={chosen?.id ?? ""}
                  onChange={(e) => {
                    setSubjectId(e.currentTarget.value);
                    startOver();
                  }}
                  disabled={!subjects || subjects.length === 0}
                  data-testid="verify-subject"
                >
                  {subjects?.length === 0 ? <option value="">no subjects enrolled</option> : null}
                  {subjects?.map((s) => (
                    <option key={s.id} value={s.id}>
                      {s.name} · {s.faces} face{s.faces === 1 ? "" : "s"}
                    </option>
                  ))}
                </select>
                <button type="button" className="secondary" onClick={reload}>
                  Reload
                </button>
              </div>
              {subjects?.length === 0 ? (
                <p className="muted small">
                  Nobody is enrolled yet: <RouteLink to="enrol">enrol a subject</RouteLink> first.
                </p>
              ) : null}
              <ErrorBox error={listError} title="Cannot list subjects" />
              <SubjectLookup
                truncated={truncated}
                onFound={(s) => {
                  setSubjectId(s.id);
                  startOver();
                }}
              />
            </div>
          ) : (
            <div className="field">
              <label htmlFor={selectId}>Subject id</label>
              <input
                id={selectId}
                value={subjectId}
                onChange={(e) => {
                  setSubjectId(e.currentTarget.value);
                  startOver();
                }}
                placeholder="the id enrolment gave, e.g. 3f0c…"
                autoComplete="off"
                spellCheck={false}
                data-testid="verify-subject-id"
              />
              <p className="muted small" data-testid="subjects-need-admin">
                Listing subjects needs an admin key: enter the subject&apos;s id.
              </p>
            </div>
          )}
          <ImagePicker
            selected={image?.filename}
            onPick={(img) => {
              setImage(img);
              startOver();
            }}
          />
          <button type="submit" disabled={!chosen || !image || busy} data-testid="verify-submit">
            {busy ? "Verifying…" : "Verify"}
          </button>
          <ErrorBox error={error} title="Verification failed" />
          {image ? (
            <FaceOverlay src={image.url} face={result?.face} alt={`Image to verify: ${image.filename}`} />
          ) : (
            <p className="placeholder">Upload an image or capture a camera frame.</p>
          )}
          {result?.face ? (
            <p className="muted small" data-testid="face-note">
              Face detected
              {result.face.confidence !== undefined ? ` with confidence ${result.face.confidence.toFixed(3)}` : ""}
              {result.facesDetected !== undefined && result.facesDetected > 1
                ? ` (the chosen one of ${result.facesDetected} faces)`
                : ""}
              .
            </p>
          ) : null}
        </form>
        <div className="results" aria-live="polite">
          {result ? (
            admin ? (
              <VerifyResultView result={result} />
            ) : (
              <VerifyDecisionView result={result} />
            )
          ) : (
            <p className="placeholder">The result appears here.</p>
          )}
        </div>
      </div>
    </>
  );
}
