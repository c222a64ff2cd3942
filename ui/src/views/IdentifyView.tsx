import { useEffect, useId, useRef, useState } from "react";
import { IDENTIFY_LIMIT, type IdentifyResult, identify } from "../api";
import { ErrorBox } from "../components/ErrorBox";
import { FaceOverlay } from "../components/FaceOverlay";
import { IdentifyResultView } from "../components/IdentifyResultView";
import { ImagePicker, type PickedImage, useRevokeOnChange } from "../components/ImagePicker";
import { RouteLink } from "../components/RouteLink";
import { ScopeNotice } from "../components/ScopeNotice";
import { useAuth } from "../hooks/useAuth";
import { may } from "../lib/auth";
import { readLimit } from "../lib/identify";
import { ChallengeFlow } from "./ChallengeFlow";
import { type Mode, ModeSwitch } from "../components/ModeSwitch";

const TITLE = (
  <>
    <h2>Identify a face</h2>
    <p className="lead">
      Who is this, among every enrolled subject? One face searched against every enrolled template (1:N), judged as a
      verification is.
    </p>
  </>
);

/**
 * 1:N identification (`POST /v1/identify`, scope `verify`): an image, or a liveness challenge
 * opened without a subject whose passed session is then identified. Shows the accepted
 * candidates best first: with an admin key their scores and the probe's face, liveness and
 * quality; with a `verify` key the subjects, the decision and its reasons.
 */
export function IdentifyView() {
  const { identity } = useAuth();
  if (!may(identity, "verify")) {
    return (
      <div className="view identify">
        {TITLE}
        <ScopeNotice needs="verify" what="Identifying a face" identity={identity} />
      </div>
    );
  }
  return <IdentifyModes admin={may(identity, "admin")} />;
}

/** One image, or the camera liveness challenge; switching away from the challenge ends it. */
function IdentifyModes({ admin }: { admin: boolean }) {
  const [mode, setMode] = useState<Mode>("image");
  return (
    <div className="view identify">
      {TITLE}
      <ModeSwitch mode={mode} onChange={setMode} label="How to identify" testIdPrefix="identify-mode" />
      {mode === "image" ? <IdentifyForm admin={admin} /> : <ChallengeFlow admin={admin} purpose="identify" />}
    </div>
  );
}

function IdentifyForm({ admin }: { admin: boolean }) {
  const [image, setImage] = useState<PickedImage>();
  const [limitText, setLimitText] = useState("");
  const [result, setResult] = useState<IdentifyResult>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);
  const inFlight = useRef<AbortController>(undefined);
  const limitId = useId();
  const limitHelpId = useId();
  useRevokeOnChange(image);
  useEffect(() => () => inFlight.current?.abort(), []);
  const limit = readLimit(limitText);

  const submit = async (e: React.FormEvent) => {
    e.preventDefault();
    if (!image || !limit.ok) return;
    inFlight.current?.abort();
    const controller = new AbortController();
    inFlight.current = controller;
    setBusy(true);
    setError(undefined);
    setResult(undefined);
    try {
      setResult(await identify(image.blob, image.filename, controller.signal, limit.limit));
    } catch (err) {
      if (!controller.signal.aborted) setError(err);
    } finally {
      if (!controller.signal.aborted) setBusy(false);
    }
  };

  return (
    <div className="columns">
      <form className="card controls" onSubmit={submit}>
        <ImagePicker
          selected={image?.filename}
          onPick={(img) => {
            // A new image: the answer about the previous one (shown or still coming) is gone.
            inFlight.current?.abort();
            setBusy(false);
            setImage(img);
            setResult(undefined);
            setError(undefined);
          }}
        />
        <div className="field">
          <label htmlFor={limitId}>Subjects to judge (limit)</label>
          <input
            id={limitId}
            type="number"
            inputMode="numeric"
            min={IDENTIFY_LIMIT.min}
            max={IDENTIFY_LIMIT.max}
            step={1}
            value={limitText}
            placeholder={`${IDENTIFY_LIMIT.default} (the runtime's default)`}
            onChange={(e) => {
              // Another limit: an answer judged under the previous one is not this one's.
              inFlight.current?.abort();
              setBusy(false);
              setLimitText(e.currentTarget.value);
              setResult(undefined);
              setError(undefined);
            }}
            aria-invalid={!limit.ok}
            aria-describedby={limitHelpId}
            data-testid="identify-limit"
          />
          <p
            id={limitHelpId}
            className={limit.ok ? "muted small" : "fail-text small"}
            data-testid="identify-limit-help"
          >
            {limit.ok
              ? `The nearest ${limit.limit ?? IDENTIFY_LIMIT.default} subjects are judged as a verification would judge them; the accepted ones come back, best first.`
              : limit.problem}
          </p>
        </div>
        <button type="submit" disabled={!image || !limit.ok || busy} data-testid="identify-submit">
          {busy ? "Identifying…" : "Identify"}
        </button>
        <ErrorBox error={error} title="Identification failed" />
        {image ? (
          <FaceOverlay src={image.url} face={result?.face} alt={`Image to identify: ${image.filename}`} />
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
        {!result || result.templatesSearched === 0 ? (
          <p className="muted small" data-testid="identify-enrol-hint">
            {result ? "Nobody is enrolled yet: " : "Nobody enrolled yet? "}
            <RouteLink to="enrol">Enrol a subject</RouteLink> first.
          </p>
        ) : null}
      </form>
      <div className="results" aria-live="polite">
        {result ? (
          <IdentifyResultView result={result} admin={admin} />
        ) : (
          <p className="placeholder">The result appears here.</p>
        )}
      </div>
    </div>
  );
}
