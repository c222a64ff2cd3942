import { useState } from "react";
import { type Health, apiUrl, health } from "../api";
import { usePolling } from "../hooks/usePolling";
import { RouteLink } from "./RouteLink";

function Badge({ label, value, testId }: { label: string; value: Health | undefined; testId: string }) {
  const state = value === undefined ? "pending" : value.ok ? "ok" : "bad";
  const text = value === undefined ? "checking…" : value.status;
  const title = value?.reason ? `${label}: ${value.status} (${value.reason})` : `${label}: ${text}`;
  return (
    <span className={`badge badge-${state}`} title={title} data-testid={testId} data-state={state}>
      <span className="dot" aria-hidden="true" />
      <span className="badge-label">{label}</span> {text}
    </span>
  );
}

/** Title bar: service health and readiness (polled), and links to the API docs. */
export function Header() {
  const [live, setLive] = useState<Health>();
  const [ready, setReady] = useState<Health>();
  usePolling(
    async (signal) => {
      const [l, r] = await Promise.all([health("/healthz", signal), health("/readyz", signal)]);
      setLive(l);
      setReady(r);
    },
    live?.ok && ready?.ok ? 10_000 : 2_000,
  );
  return (
    <header className="topbar">
      <div className="brand">
        <img src="./favicon.svg" alt="" width={28} height={28} />
        <span>FaceKey</span>
      </div>
      <div className="health" role="status" aria-label="Service health">
        <Badge label="health" value={live} testId="health-badge" />
        <Badge label="ready" value={ready} testId="ready-badge" />
        {ready && !ready.ok && ready.reason ? <span className="muted small">{ready.reason}</span> : null}
      </div>
      <nav className="doclinks" aria-label="API documentation">
        <RouteLink to="docs" data-testid="docs-link">
          API docs
        </RouteLink>
        <a href={apiUrl("/openapi.json")}>openapi.json</a>
      </nav>
    </header>
  );
}
