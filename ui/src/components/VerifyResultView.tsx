import { type LivenessResult, type QualityResult, type VerifyResult, decideAtLeast } from "../api";
import { fixed, percent } from "../lib/format";
import { FEATURE_NAMES } from "../lib/mlp";
import { DecisionBadge, Meter } from "./Meter";
import { NetworkView } from "./NetworkView";
import { TimingsChart } from "./TimingsChart";

const REASONS: Record<string, string> = {
  no_match: "not the enrolled person",
  spoof: "presentation attack suspected",
  liveness_unknown: "liveness could not be checked",
  low_probability: "fused probability below threshold",
  replayed_session: "the liveness session repeats an earlier accepted one (a replayed recording)",
};

/** The runtime's warnings about an answer (e.g. a match on dlib alone: re-enrol the face). */
function Warnings({ warnings }: { warnings: readonly string[] }) {
  return warnings.length > 0 ? (
    <p className="warning" role="note" data-testid="verify-warnings">
      {warnings.join(" ")}
    </p>
  ) : null;
}

/** The reasons a verification failed, in words. */
export const reasonWords = (reasons: readonly string[]): string =>
  reasons.map((r) => REASONS[r] ?? r.replace(/_/g, " ")).join(" · ");

/**
 * A verification answer as a key without the `admin` scope gets it: the decision and its
 * reasons only. Scores, features and the forward pass need an admin key.
 */
export function VerifyDecisionView({ result }: { result: VerifyResult }) {
  return (
    <div className="result" data-testid="verify-result" data-detail="decision">
      <div className={`verdict verdict-${result.decision ?? "none"}`}>
        <DecisionBadge decision={result.decision} testId="verify-decision" />
        {result.reasons.length > 0 ? (
          <span className="reasons" data-testid="verify-reasons">
            {reasonWords(result.reasons)}
          </span>
        ) : result.decision === "accept" ? (
          <span className="muted">the enrolled person, and a live face</span>
        ) : null}
      </div>
      <Warnings warnings={result.warnings} />
      <p className="scope-notice" role="note" data-testid="scores-need-admin">
        Scores need an admin key: with this key the runtime answers only the decision and its reasons, without match,
        liveness and quality scores or the score-fusion forward pass.
      </p>
    </div>
  );
}

export function Section({
  title,
  children,
  decision,
}: {
  title: string;
  children: React.ReactNode;
  decision?: VerifyResult["decision"];
}) {
  return (
    <section className="card">
      <h3>
        {title}
        {decision ? <DecisionBadge decision={decision} /> : null}
      </h3>
      {children}
    </section>
  );
}

/** Every part of a verification answer: decision, match, liveness, quality, fusion, timings. */
export function VerifyResultView({ result }: { result: VerifyResult }) {
  const { match, liveness, quality } = result;
  const fusionDecision =
    result.probability !== undefined && result.threshold !== undefined
      ? decideAtLeast(result.probability, result.threshold)
      : result.decision;
  return (
    <div className="result" data-testid="verify-result">
      <div className={`verdict verdict-${result.decision ?? "none"}`}>
        <DecisionBadge decision={result.decision} testId="verify-decision" />
        <span className="verdict-p">
          probability <strong data-testid="verify-probability">{fixed(result.probability, 4)}</strong>
          {result.threshold !== undefined ? (
            <span className="muted"> (accept at ≥ {fixed(result.threshold)})</span>
          ) : null}
        </span>
        {result.reasons.length > 0 ? (
          <span className="reasons" data-testid="verify-reasons">
            {reasonWords(result.reasons)}
          </span>
        ) : null}
        {result.policy || result.weightsName ? (
          <span className="muted small">
            {[result.policy ? `policy ${result.policy}` : "", result.weightsName ? `weights ${result.weightsName}` : ""]
              .filter(Boolean)
              .join(" · ")}
          </span>
        ) : null}
      </div>
      <Warnings warnings={result.warnings} />
      <div className="grid2">
        <Section title="Match" decision={match.decision}>
          <Meter
            label="similarity"
            value={match.similarity}
            threshold={match.thresholdOn === "similarity" ? match.threshold : undefined}
          />
          <Meter
            label="distance"
            value={match.distance}
            threshold={match.thresholdOn === "distance" ? match.threshold : undefined}
            max={1.2}
            lowerIsBetter
          />
          {match.templates !== undefined ? (
            <p className="muted small">
              closest of {match.templates} enrolled template{match.templates === 1 ? "" : "s"}
            </p>
          ) : null}
        </Section>
        <LivenessSection liveness={liveness} />
        <QualitySection quality={quality} />
        <TimingsSection result={result} />
      </div>
      <Section title="Score fusion" decision={fusionDecision}>
        {fusionDecision !== result.decision ? (
          <p className="muted small">
            The fused probability alone would {fusionDecision}; the final decision also requires the checks above
            {result.policy ? ` (policy ${result.policy})` : ""}.
          </p>
        ) : null}
        {result.features ? (
          <table className="features">
            <thead>
              <tr>
                {result.features.map((_, i) => (
                  <th key={i} scope="col" className="num">
                    x{i + 1} {FEATURE_NAMES[i]}
                  </th>
                ))}
                <th scope="col" className="num">
                  probability
                </th>
              </tr>
            </thead>
            <tbody>
              <tr>
                {result.features.map((v, i) => (
                  <td key={i} className="num">
                    {fixed(v, 3)}
                  </td>
                ))}
                <td className="num">{percent(result.probability)}</td>
              </tr>
            </tbody>
          </table>
        ) : (
          <p className="muted">The answer has no feature vector.</p>
        )}
        <Meter label="probability" value={result.probability} threshold={result.threshold} />
        {result.features && result.layers ? (
          <NetworkView features={result.features} layers={result.layers} title="Forward pass of this verification" />
        ) : null}
      </Section>
    </div>
  );
}

/** The liveness check of an answer: live score against its threshold and per-model scores, or why it was not checked. */
export function LivenessSection({ liveness }: { liveness: LivenessResult }) {
  return (
    <Section
      title="Liveness"
      decision={liveness.checked || liveness.state === "unknown" ? liveness.decision : undefined}
    >
      {liveness.checked ? (
        <>
          <Meter label="live score" value={liveness.score} threshold={liveness.threshold} />
          {liveness.models.map(([model, value]) => (
            <Meter key={model} label={model} value={value} />
          ))}
        </>
      ) : liveness.state === "unknown" ? (
        <p className="muted" data-testid="liveness-unknown">
          Could not check liveness{liveness.reason ? `: ${liveness.reason}` : ""}. An unchecked face never counts as
          live.
        </p>
      ) : (
        <p className="muted">Not checked: liveness is off on this server (every face counts as live).</p>
      )}
    </Section>
  );
}

/** The face quality of an answer: the overall score, its sub-scores and the raw measurements. */
export function QualitySection({ quality }: { quality: QualityResult }) {
  return (
    <Section title="Quality">
      <Meter label="overall" value={quality.score} />
      {quality.parts.map(([part, value]) => (
        <Meter key={part} label={part} value={value} />
      ))}
      {quality.measures.length > 0 ? (
        <dl className="measures">
          {quality.measures.map(([name, value]) => (
            <div key={name}>
              <dt>{name.replace(/_/g, " ")}</dt>
              <dd className="num">{fixed(value, Math.abs(value) >= 100 ? 0 : 2)}</dd>
            </div>
          ))}
        </dl>
      ) : null}
    </Section>
  );
}

/** Per-stage wall times of an answer and the time inside each model. */
export function TimingsSection({ result }: { result: Pick<VerifyResult, "timings" | "totalMs" | "inference"> }) {
  return (
    <Section title="Timings">
      <TimingsChart timings={result.timings} totalMs={result.totalMs} />
      {result.inference.length > 0 ? (
        <>
          <h4>Inside the models</h4>
          <TimingsChart timings={result.inference} totalLabel="inference" testId="inference-timings" />
        </>
      ) : null}
    </Section>
  );
}
