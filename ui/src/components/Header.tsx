import { useRef, useState } from "react";
import { type Health, apiUrl, health } from "../api";
import { useAuth } from "../hooks/useAuth";
import { usePolling } from "../hooks/usePolling";
import { type Identity, describeScopes, grantedScopes } from "../lib/auth";
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

/** The signed-in key: its id, what its scopes allow in words, and a control to forget it. */
export function KeyBadge({ identity, onSignOut }: { identity: Identity; onSignOut: () => void }) {
  if (identity.open) {
    return (
      <div className="key-badge" data-testid="key-badge" data-open="true">
        <span className="muted small">This runtime has no API keys: everything is open.</span>
      </div>
    );
  }
  const scopes = grantedScopes(identity.scopes);
  return (
    <div className="key-badge" data-testid="key-badge">
      <span className="small">
        key <code data-testid="key-id">{identity.keyId}</code>
      </span>
      <span className="scopes" data-testid="key-scopes" data-scopes={identity.scopes.join(" ")}>
        {identity.scopes.map((s) => (
          <span key={s} className="scope">
            {s}
          </span>
        ))}
        <span className="muted small" data-testid="key-can">
          {describeScopes(identity.scopes)}
          {identity.rps !== undefined ? ` (at most ${identity.rps} requests/s)` : ""}
        </span>
      </span>
      <span className="sr-only">Granted scopes: {scopes.join(", ")}.</span>
      <button type="button" className="secondary small-button" onClick={onSignOut} data-testid="sign-out">
        Sign out
      </button>
    </div>
  );
}

/** The shortest wait between two health polls. */
const HEALTH_POLL_MIN_MS = 2_000;
/** The wait between health polls of a healthy runtime, and the longest one of a failing one. */
const HEALTH_POLL_MAX_MS = 10_000;

/**
 * The wait before the next health poll after `failing` polls in a row found the runtime not
 * healthy or not ready (0: it was both): 2 s at first, so that a runtime coming up is seen soon,
 * doubling up to 10 s for one that stays down; 10 s while all is well.
 */
export function healthPollAfter(failing: number): number {
  if (failing === 0) return HEALTH_POLL_MAX_MS;
  return Math.min(HEALTH_POLL_MAX_MS, HEALTH_POLL_MIN_MS * 2 ** Math.min(failing - 1, 8));
}

/** Title bar: service health and readiness (polled), the API key, and links to the API docs. */
export function Header() {
  const { identity, signOut } = useAuth();
  const [live, setLive] = useState<Health>();
  const [ready, setReady] = useState<Health>();
  const down = useRef(0);
  usePolling(async (signal) => {
    const [l, r] = await Promise.all([health("/healthz", signal), health("/readyz", signal)]);
    setLive(l);
    setReady(r);
    down.current = l.ok && r.ok ? 0 : down.current + 1;
    return healthPollAfter(down.current);
  }, HEALTH_POLL_MIN_MS);
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
      {identity ? <KeyBadge identity={identity} onSignOut={signOut} /> : null}
      <nav className="doclinks" aria-label="API documentation">
        <RouteLink to="docs" data-testid="docs-link">
          API docs
        </RouteLink>
        <a href={apiUrl("/openapi.json")}>openapi.json</a>
      </nav>
    </header>
  );
}
