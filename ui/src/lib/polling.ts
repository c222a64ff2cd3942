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
