import { useEffect, useState } from "react";
import { type ScoreResult, score } from "../api";
import { ErrorBox } from "../components/ErrorBox";
import { FeatureInput } from "../components/FeatureInput";
import { LayerTable } from "../components/LayerTable";
import { DecisionBadge, Meter } from "../components/Meter";
import { NetworkView } from "../components/NetworkView";
import { ScopeNotice } from "../components/ScopeNotice";
import { useAuth } from "../hooks/useAuth";
import { may } from "../lib/auth";
import { fixed } from "../lib/format";
import { DEFAULT_FEATURES, FEATURE_NAMES } from "../lib/mlp";
import { abortableSleep, onceMore } from "../lib/retry";

const DEBOUNCE_MS = 120;

const LEAD = (
  <p className="lead">
    The three pipeline features go through a 3-4-3-1 network (ReLU, ReLU, sigmoid) that gives the authentication
    probability. Values come from the runtime&apos;s <code>POST /v1/score</code>.
  </p>
);

/** The score-fusion MLP explorer (the `verify` scope). */
export function ScoreView() {
  const { identity } = useAuth();
  if (!may(identity, "verify")) {
    return (
      <div className="view score">
        <h2>Score fusion</h2>
        {LEAD}
        <ScopeNotice needs="verify" what="Scoring features" identity={identity} />
      </div>
    );
  }
  return <ScoreExplorer />;
}

/** A score and the features it is for. */
export interface ShownScore {
  features: number[];
  result: ScoreResult;
}

const sameFeatures = (a: readonly number[], b: readonly number[]) =>
  a.length === b.length && a.every((v, i) => Object.is(v, b[i]));

/**
 * Whether the result shown is out of date: scoring the features now set failed, so it is the
 * answer for earlier ones.
 */
export const isStale = (shown: ShownScore | undefined, features: readonly number[], error: unknown): boolean =>
  shown !== undefined && error !== undefined && !sameFeatures(shown.features, features);

/** Set x1..x3, see the server's forward pass layer by layer. */
function ScoreExplorer() {
  const [features, setFeatures] = useState<number[]>([...DEFAULT_FEATURES]);
  const [shown, setShown] = useState<ShownScore>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const controller = new AbortController();
    const { signal } = controller;
    const timer = setTimeout(() => {
      setBusy(true);
      // A 429 or 503 shows at once and the features go once more after its Retry-After; newer
      // features abort the wait and are sent instead.
      onceMore(
        () => score(features, signal),
        (ms) => abortableSleep(ms, signal),
        setError,
      )
        .then((result) => {
          setShown({ features, result });
          setError(undefined);
        })
        .catch((e: unknown) => {
          if (!signal.aborted) setError(e);
        })
        .finally(() => {
          if (!signal.aborted) setBusy(false);
        });
    }, DEBOUNCE_MS);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [features]);

  const set = (i: number) => (v: number) => setFeatures((f) => f.map((old, j) => (j === i ? v : old)));

  return (
    <div className="view score">
      <h2>Score fusion</h2>
      {LEAD}
      <div className="columns narrow-left">
        <div className="card controls">
          <h3>Features</h3>
          {FEATURE_NAMES.map((name, i) => (
            <FeatureInput key={name} index={i} name={name} value={features[i] ?? 0} onChange={set(i)} />
          ))}
          <button
            type="button"
            className="secondary"
            onClick={() => setFeatures([...DEFAULT_FEATURES])}
            data-testid="reset-features"
          >
            Worked example [1, 0.5, −1]
          </button>
          <ErrorBox error={error} title="Scoring failed" />
        </div>
        <div className="card" aria-busy={busy}>
          {shown ? (
            <ScoreResultView shown={shown} stale={isStale(shown, features, error)} />
          ) : (
            <p className="placeholder">{busy ? "Scoring…" : "No result yet."}</p>
          )}
        </div>
      </div>
    </div>
  );
}

/**
 * A score's decision, probability and forward pass; `stale`: it is not for the features now set
 * (scoring those failed), so it is dimmed and says for which features it is.
 */
export function ScoreResultView({ shown, stale }: { shown: ShownScore; stale: boolean }) {
  const { result } = shown;
  return (
    <div className={stale ? "score-result stale" : "score-result"} data-testid="score-result" data-stale={stale}>
      {stale ? (
        <p className="stale-note" role="note" data-testid="score-stale">
          Out of date: scoring the current features failed; this is the result for [
          {shown.features.map((v) => fixed(v, 2)).join(", ")}].
        </p>
      ) : null}
      <div className={`verdict verdict-${result.decision ?? "none"}`}>
        <DecisionBadge decision={result.decision} testId="score-decision" />
        <span className="verdict-p">
          probability <strong data-testid="score-probability">{fixed(result.probability, 2)}</strong>{" "}
          <span className="muted" data-testid="score-probability-exact">
            ({fixed(result.probability, 4)})
          </span>
        </span>
        {result.weightsName ? <span className="muted small">weights: {result.weightsName}</span> : null}
      </div>
      <Meter label="probability" value={result.probability} threshold={result.threshold} />
      {result.layers ? (
        <>
          <NetworkView features={shown.features} layers={result.layers} weights={result.weights} />
          <LayerTable layers={result.layers} />
        </>
      ) : (
        <p className="muted">The runtime returned no layer values.</p>
      )}
    </div>
  );
}
