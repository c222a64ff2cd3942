import { millis } from "../lib/format";

/** Per-stage timings as horizontal bars, scaled to the slowest stage, with the total below. */
export function TimingsChart({ timings, totalMs }: { timings: [string, number][]; totalMs?: number }) {
  if (timings.length === 0) return <p className="muted">No stage timings in the answer.</p>;
  const max = Math.max(...timings.map(([, ms]) => ms), 1e-9);
  const sum = timings.reduce((a, [, ms]) => a + ms, 0);
  return (
    <figure className="bars" data-testid="timings">
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
        total {millis(totalMs ?? sum)}
        {totalMs !== undefined && totalMs > sum * 1.05 ? ` (stages ${millis(sum)})` : ""}
      </figcaption>
    </figure>
  );
}
