import { ApiError, errorAdvice } from "../api";

/**
 * An error from the API (code, status, message, and what to do about a 401, 403 or 429) or any
 * other failure, announced to screen readers.
 */
export function ErrorBox({ error, title = "Request failed" }: { error: unknown; title?: string }) {
  if (error === undefined || error === null) return null;
  const api = error instanceof ApiError ? error : undefined;
  const message = error instanceof Error ? error.message : String(error);
  const advice = api ? errorAdvice(api) : undefined;
  return (
    <div className="error" role="alert" data-testid="error">
      <strong>{title}</strong>
      {api ? (
        <span className="error-code">
          {api.status > 0 ? `HTTP ${api.status} · ` : ""}
          <code>{api.code}</code>
        </span>
      ) : null}
      <p>{message}</p>
      {advice ? <p data-testid="error-advice">{advice}</p> : null}
    </div>
  );
}
