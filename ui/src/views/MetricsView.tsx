import { useRef, useState } from "react";
import { type Health, health, metricsText } from "../api";
import { ErrorBox } from "../components/ErrorBox";
import { usePolling } from "../hooks/usePolling";
import { count, rate, seconds } from "../lib/format";
import { afterFailures } from "../lib/polling";
import { pushBounded, sparkPath } from "../lib/sparkline";
import { parsePrometheus } from "../lib/prom";
import { type LatencyRow, type Scrape, type Summary, summarize } from "../lib/summary";

const POLL_MS = 3000;
const HISTORY = 60;

function Sparkline({ values }: { values: number[] }) {
  if (values.length < 2) return null;
  return (
    <svg className="spark" viewBox="0 0 120 28" preserveAspectRatio="none" aria-hidden="true">
      <path d={sparkPath(values, 120, 28, 2)} />
    </svg>
  );
}

interface StatProps {
  label: string;
  value: string;
  sub?: string;
  testId?: string;
  children?: React.ReactNode;
}

function Stat({ label, value, sub, testId, children }: StatProps) {
  return (
    <div className="stat">
      <span className="stat-label">{label}</span>
      <span className="stat-value" data-testid={testId}>
        {value}
      </span>
      {sub ? <span className="muted small">{sub}</span> : null}
      {children}
    </div>
  );
}

function Routes({ summary }: { summary: Summary }) {
  if (summary.routes.length === 0) return <p className="placeholder">No requests recorded yet.</p>;
  return (
    <table className="metrics" data-testid="routes">
      <caption className="sr-only">HTTP requests by route</caption>
      <thead>
        <tr>
          <th scope="col">Route</th>
          <th scope="col" className="num">
            Requests
          </th>
          <th scope="col" className="num">
            Rate
          </th>
          <th scope="col" className="num">
            p50
          </th>
          <th scope="col" className="num">
            p99
          </th>
        </tr>
      </thead>
      <tbody>
        {summary.routes.map((r) => (
          <tr key={r.route} data-route={r.route}>
            <th scope="row">
              <code>{r.route || "(no route)"}</code>
            </th>
            <td className="num" data-testid="route-requests">
              {count(r.requests)}
            </td>
            <td className="num">{rate(r.rate)}</td>
            <td className="num">{seconds(r.p50)}</td>
            <td className="num">{seconds(r.p99)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

function Latency({ rows, what, testId }: { rows: LatencyRow[]; what: string; testId: string }) {
  if (rows.length === 0) return <p className="placeholder">No {what} recorded yet.</p>;
  return (
    <table className="metrics" data-testid={testId}>
      <caption className="sr-only">Latency by {what}</caption>
      <thead>
        <tr>
          <th scope="col">{what}</th>
          <th scope="col" className="num">
            Runs
          </th>
          <th scope="col" className="num">
            Mean
          </th>
          <th scope="col" className="num">
            p50
          </th>
          <th scope="col" className="num">
            p99
          </th>
        </tr>
      </thead>
      <tbody>
        {rows.map((m) => (
          <tr key={m.name}>
            <th scope="row">{m.name}</th>
            <td className="num">{count(m.count)}</td>
            <td className="num">{seconds(m.meanSeconds)}</td>
            <td className="num">{seconds(m.p50)}</td>
            <td className="num">{seconds(m.p99)}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Live service metrics: `/metrics` polled and parsed in the browser, and `/readyz`. */
export function MetricsView() {
  const previous = useRef<Scrape>(undefined);
  // Failed scrapes in a row: a runtime that keeps failing is asked less and less often.
  const failures = useRef(0);
  const [summary, setSummary] = useState<Summary>();
  const [ready, setReady] = useState<Health>();
  const [error, setError] = useState<unknown>();
  const [updated, setUpdated] = useState<Date>();
  const [rates, setRates] = useState<number[]>([]);

  usePolling(async (signal) => {
    let failed: unknown;
    const [text, readiness] = await Promise.all([
      metricsText(signal).catch((e: unknown) => {
        failed = e;
        if (!signal.aborted) setError(e);
        return undefined;
      }),
      health("/readyz", signal),
    ]);
    setReady(readiness);
    // A refused scrape stops the polling (open the view again with a `metrics` key); a busy
    // runtime is asked again when it says.
    if (text === undefined) {
      failures.current += 1;
      return afterFailures(failed, failures.current, POLL_MS);
    }
    failures.current = 0;
    try {
      const current = { at: Date.now(), exposition: parsePrometheus(text) };
      const next = summarize(current, previous.current);
      setSummary(next);
      if (next.totalRate !== undefined) setRates((r) => pushBounded(r, next.totalRate ?? 0, HISTORY));
      previous.current = current;
      setError(undefined);
      setUpdated(new Date());
    } catch (e) {
      setError(e);
    }
  }, POLL_MS);

  const accept = summary?.decisions.find(([k]) => k === "accept")?.[1];
  const reject = summary?.decisions.find(([k]) => k === "reject")?.[1];

  return (
    <div className="view metrics-view">
      <h2>Metrics</h2>
      <p className="lead">
        The runtime's Prometheus metrics, read from <code>/metrics</code> every {POLL_MS / 1000} s
        {updated ? ` (last ${updated.toLocaleTimeString()})` : ""}. Rates and latency quantiles cover the interval since
        the previous read; p50 and p99 are estimated from histogram buckets.
      </p>
      <ErrorBox error={error} title="Cannot read metrics" />
      <div className="stats">
        <Stat
          label="readiness"
          value={ready ? (ready.ok ? "ready" : ready.status) : "…"}
          sub={ready?.reason}
          testId="metrics-ready"
        />
        <Stat
          label="requests"
          value={count(summary?.totalRequests)}
          sub={summary?.totalRate !== undefined ? rate(summary.totalRate) : undefined}
          testId="metrics-total"
        >
          <Sparkline values={rates} />
        </Stat>
        <Stat label="accepted" value={count(accept)} testId="metrics-accept" />
        <Stat label="rejected" value={count(reject)} testId="metrics-reject" />
        <Stat label="spoofs detected" value={count(summary?.spoofs)} testId="metrics-spoofs" />
      </div>
      {summary ? (
        <div className="grid2">
          <section className="card">
            <h3>Requests by route</h3>
            <Routes summary={summary} />
            {!summary.windowed ? <p className="muted small">Quantiles since start until the second read.</p> : null}
          </section>
          <section className="card">
            <h3>Inference latency by model</h3>
            <Latency rows={summary.models} what="model" testId="models" />
            {summary.stages.length > 0 ? (
              <>
                <h4>Pipeline stages</h4>
                <Latency rows={summary.stages} what="stage" testId="stages" />
              </>
            ) : null}
            {summary.decisions.length > 2 ? (
              <p className="muted small">
                Other outcomes:{" "}
                {summary.decisions
                  .filter(([k]) => k !== "accept" && k !== "reject")
                  .map(([k, v]) => `${k} ${count(v)}`)
                  .join(", ")}
              </p>
            ) : null}
            <p className="muted small">Model and stage latency since start.</p>
          </section>
        </div>
      ) : null}
    </div>
  );
}
