import { useEffect, useRef } from "react";

/**
 * Call `tick` now and then every `intervalMs` while mounted, never overlapping two calls;
 * the signal aborts the call in flight on unmount.
 */
export function usePolling(tick: (signal: AbortSignal) => Promise<void>, intervalMs: number): void {
  const latest = useRef(tick);
  useEffect(() => {
    latest.current = tick;
  });
  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      try {
        await latest.current(controller.signal);
      } catch {
        // Each tick reports its own errors; polling goes on.
      }
      if (!controller.signal.aborted) timer = setTimeout(run, intervalMs);
    };
    void run();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [intervalMs]);
}
