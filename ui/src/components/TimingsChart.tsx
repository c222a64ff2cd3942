import { millis } from "../lib/format";

interface TimingsChartProps {
  timings: [string, number][];
  totalMs?: number;
  /** Label of the sum shown below the bars. */
  totalLabel?: string;
  testId?: string;
}

/** Timings as horizontal bars, scaled to the slowest entry, with the total below. */
export function TimingsChart({ timings, totalMs, totalLabel = "total", testId = "timings" }: TimingsChartProps) {
  if (timings.length === 0) return <p className="muted">No timings in the answer.</p>;
  const max = Math.max(...timings.map(([, ms]) => ms), 1e-9);
  const sum = timings.reduce((a, [, ms]) => a + ms, 0);
  return (
    <figure className="bars" data-testid={testId}>
      <ul>
        {timings.map(([stage, ms]) => (
          <li key={stage}>
            <span className="bar-label">{stage}</span>
            <span className="bar-track" aria-hidden="true">
              <span className="bar-fill" style={{ width: `${Math.max(0.5, (ms / max) * 100)}%` }} />
            </span>
            <span className="num">{millis(ms)}</span>
          </li>
        ))}
      </ul>
      <figcaption className="muted small">
        {totalLabel} {millis(totalMs ?? sum)}
        {totalMs !== undefined && totalMs > sum * 1.05 ? ` (stages ${millis(sum)})` : ""}
      </figcaption>
    </figure>
  );
}
