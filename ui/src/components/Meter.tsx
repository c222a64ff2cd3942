import type { Decision } from "../api";
import { fixed } from "../lib/format";

export function DecisionBadge({ decision, testId }: { decision: Decision | undefined; testId?: string }) {
  if (!decision) return <span className="decision decision-none">no decision</span>;
  return (
    <span className={`decision decision-${decision}`} data-testid={testId}>
      {decision === "accept" ? "✓ accept" : "✗ reject"}
    </span>
  );
}

interface MeterProps {
  label: string;
  value: number | undefined;
  threshold?: number;
  /** Range of the bar; values outside are clipped. */
  min?: number;
  max?: number;
  digits?: number;
  /** `true` when lower values are better (distances): the pass region lies below the threshold. */
  lowerIsBetter?: boolean;
}

/**
 * A labelled horizontal bar with the value and an optional threshold marker. Without a value the
 * meter says "no value" to assistive technology rather than its minimum.
 */
export function Meter({ label, value, threshold, min = 0, max = 1, digits = 2, lowerIsBetter = false }: MeterProps) {
  const span = max - min || 1;
  const pos = (v: number) => Math.min(100, Math.max(0, ((v - min) / span) * 100));
  const pass =
    value === undefined || threshold === undefined
      ? undefined
      : lowerIsBetter
        ? value <= threshold
        : value >= threshold;
  const tone = pass === undefined ? "neutral" : pass ? "pass" : "fail";
  return (
    <div className="meter">
      <div className="meter-head">
        <span>{label}</span>
        <span className="num">
          {fixed(value, digits)}
          {threshold !== undefined ? (
            <span className="muted">
              {" "}
              {lowerIsBetter ? "≤" : "≥"} {fixed(threshold, digits)}
            </span>
          ) : null}
        </span>
      </div>
      <div
        className="meter-track"
        role="meter"
        aria-label={label}
        aria-valuemin={min}
        aria-valuemax={max}
        aria-valuenow={value}
        aria-valuetext={value === undefined ? "no value" : undefined}
      >
        {value !== undefined ? (
          <div className={`meter-fill meter-${tone}`} style={{ width: `${pos(value)}%` }} />
        ) : null}
        {threshold !== undefined ? <div className="meter-threshold" style={{ left: `${pos(threshold)}%` }} /> : null}
      </div>
    </div>
  );
}
