import { ApiError } from "../api";

/**
 * What a poll does after a failed call: `false` stops it on 401/403 (asking again changes
 * nothing, and each refusal is audited and counted as an authentication failure, which feeds the
 * operator's alert); on 429/503 it waits the `Retry-After` the runtime sent (milliseconds);
 * otherwise `undefined`, the usual interval.
 */
export function pollAfter(e: unknown): number | false | undefined {
  if (!(e instanceof ApiError)) return undefined;
  if (e.status === 401 || e.status === 403) return false;
  return e.retryAfter !== undefined ? e.retryAfter * 1000 : undefined;
}

/** The longest wait between two polls of a runtime that keeps failing. */
export const MAX_BACKOFF_MS = 30_000;

/**
 * The wait before the next poll after `failures` failed calls in a row (at least one): the
 * interval doubled for each failure after the first, up to [`MAX_BACKOFF_MS`], or longer when
 * the failure itself asks it ([`pollAfter`]); `false` stops the polling.
 */
export function afterFailures(e: unknown, failures: number, intervalMs: number): number | false {
  const asked = pollAfter(e);
  if (asked === false) return false;
  const doubled = intervalMs * 2 ** Math.min(Math.max(failures - 1, 0), 16);
  return Math.max(asked ?? 0, Math.min(MAX_BACKOFF_MS, doubled));
}
