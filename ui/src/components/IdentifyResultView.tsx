import type { IdentifyResult } from "../api";
import { fixed } from "../lib/format";
import { DecisionBadge } from "./Meter";
import { LivenessSection, QualitySection, TimingsSection, reasonWords } from "./VerifyResultView";

/** Reasons that read differently for a search over every subject than for one subject. */
const IDENTIFY_REASONS: Record<string, string> = {
  no_match: "no enrolled subject matches this face",
};

/** Why an identification's best match was rejected, in words. */
export const identifyReasonWords = (reasons: readonly string[]): string =>
  reasons.map((r) => IDENTIFY_REASONS[r] ?? reasonWords([r])).join(" · ");

/**
 * An identification answer: the decision, the best match and every accepted candidate (subject
 * name and id) best first, or why nobody was accepted. With an admin key also each candidate's
 * similarity, distance and probability, the templates searched, and the probe's liveness,
 * quality and timings; with any other key the runtime answers the subjects alone.
 */
export function IdentifyResultView({ result, admin }: { result: IdentifyResult; admin: boolean }) {
  const { candidates, reasons } = result;
  const best = candidates[0];
  const meta = [
    result.templatesSearched !== undefined
      ? `${result.templatesSearched} template${result.templatesSearched === 1 ? "" : "s"} searched`
      : "",
    result.policy ? `policy ${result.policy}` : "",
    result.threshold !== undefined ? `accept at probability ≥ ${fixed(result.threshold)}` : "",
  ].filter(Boolean);
  return (
    <div className="result" data-testid="identify-result" data-detail={admin ? "full" : "decision"}>
      <div className={`verdict verdict-${result.decision ?? "none"}`}>
        <DecisionBadge decision={result.decision} testId="identify-decision" />
        {best ? (
          <span className="verdict-p" data-testid="identify-best" data-subject={best.subject.id}>
            best match <strong>{best.subject.name}</strong> <code className="id">{best.subject.id}</code>
          </span>
        ) : null}
        {reasons.length > 0 ? (
          <span className="reasons" data-testid="identify-reasons">
            {identifyReasonWords(reasons)}
          </span>
        ) : null}
        {meta.length > 0 ? <span className="muted small">{meta.join(" · ")}</span> : null}
      </div>
      {candidates.length > 0 ? (
        <table className="candidates" data-testid="identify-candidates">
          <caption className="muted small">
            Accepted subjects, best first: the runtime returns only the subjects it accepted the face as.
          </caption>
          <thead>
            <tr>
              <th scope="col" className="num">
                #
              </th>
              <th scope="col">subject</th>
              <th scope="col">id</th>
              {admin ? (
                <>
                  <th scope="col" className="num">
                    similarity
                  </th>
                  <th scope="col" className="num">
                    distance
                  </th>
                  <th scope="col" className="num">
                    probability
                  </th>
                  <th scope="col">models</th>
                </>
              ) : null}
            </tr>
          </thead>
          <tbody>
            {candidates.map((c, i) => (
              <tr key={c.subject.id} data-testid="identify-candidate" data-subject={c.subject.id}>
                <td className="num">{i + 1}</td>
                <td data-testid="candidate-name">{c.subject.name}</td>
                <td>
                  <code className="id">{c.subject.id}</code>
                </td>
                {admin ? (
                  <>
                    <td className="num" data-testid="candidate-similarity">
                      {fixed(c.similarity, 3)}
                    </td>
                    <td className="num" data-testid="candidate-distance">
                      {fixed(c.distance, 3)}
                    </td>
                    <td className="num" data-testid="candidate-probability">
                      {fixed(c.probability, 4)}
                    </td>
                    <td>{c.models.join(", ")}</td>
                  </>
                ) : null}
              </tr>
            ))}
          </tbody>
        </table>
      ) : (
        <p className="placeholder" data-testid="identify-none">
          Nobody was identified: no enrolled subject was accepted for this face.
        </p>
      )}
      {admin ? (
        <div className="grid2">
          <LivenessSection liveness={result.liveness} />
          <QualitySection quality={result.quality} />
          {result.timings.length > 0 ? <TimingsSection result={result} /> : null}
        </div>
      ) : (
        <p className="scope-notice" role="note" data-testid="scores-need-admin">
          Scores need an admin key: with this key the runtime answers only the subjects accepted, the decision and its
          reasons, without similarity, distance, probability, liveness and quality scores.
        </p>
      )}
    </div>
  );
}
