import { ApiError } from "../api";

/**
 * How long to wait before sending a refused request once more, ms: the `Retry-After` of a 429
 * (the key's rate or share) or a 503 (the runtime busy); undefined for any other failure, which
 * the same request sent again would only meet again.
 */
export function retryWaitMs(e: unknown): number | undefined {
  if (!(e instanceof ApiError) || e.retryAfter === undefined) return undefined;
  return e.status === 429 || e.status === 503 ? Math.max(0, e.retryAfter) * 1000 : undefined;
}

/**
 * `call`, made once more after a refusal that names a wait ([`retryWaitMs`]); `onRefused` hears
 * the refusal at once, before the wait. Rejects with the last failure.
 */
export async function onceMore<T>(
  call: () => Promise<T>,
  sleep: (ms: number) => Promise<void>,
  onRefused: (e: unknown) => void,
): Promise<T> {
  try {
    return await call();
  } catch (e) {
    const wait = retryWaitMs(e);
    if (wait === undefined) throw e;
    onRefused(e);
    await sleep(wait);
    return call();
  }
}

/** Resolve after `ms`, or reject as soon as `signal` aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal.aborted) {
      reject(signal.reason);
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(signal.reason);
    };
    const timer = setTimeout(() => {
      signal.removeEventListener("abort", onAbort);
      resolve();
    }, ms);
    signal.addEventListener("abort", onAbort, { once: true });
  });
}
