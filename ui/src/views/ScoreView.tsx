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

/** Set x1..x3, see the server's forward pass layer by layer. */
function ScoreExplorer() {
  const [features, setFeatures] = useState<number[]>([...DEFAULT_FEATURES]);
  const [shown, setShown] = useState<{ features: number[]; result: ScoreResult }>();
  const [error, setError] = useState<unknown>();
  const [busy, setBusy] = useState(false);

  useEffect(() => {
    const controller = new AbortController();
    const timer = setTimeout(() => {
      setBusy(true);
      score(features, controller.signal)
        .then((result) => {
          setShown({ features, result });
          setError(undefined);
        })
        .catch((e: unknown) => {
          if (!controller.signal.aborted) setError(e);
        })
        .finally(() => {
          if (!controller.signal.aborted) setBusy(false);
        });
    }, DEBOUNCE_MS);
    return () => {
      clearTimeout(timer);
      controller.abort();
    };
  }, [features]);

  const result = shown?.result;
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
          {shown && result ? (
            <>
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
            </>
          ) : (
            <p className="placeholder">{busy ? "Scoring…" : "No result yet."}</p>
          )}
        </div>
      </div>
    </div>
  );
}
