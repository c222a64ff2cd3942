import { useEffect, useRef } from "react";

/**
 * Call `tick` now and then every `intervalMs` while mounted, never overlapping two calls;
 * the signal aborts the call in flight on unmount. A tick may answer `false` to stop polling,
 * or a longer delay (milliseconds) before the next call.
 */
export function usePolling(tick: (signal: AbortSignal) => Promise<void | number | false>, intervalMs: number): void {
  const latest = useRef(tick);
  useEffect(() => {
    latest.current = tick;
  });
  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const run = async () => {
      let next: void | number | false = undefined;
      try {
        next = await latest.current(controller.signal);
      } catch {
        // Each tick reports its own errors; polling goes on.
      }
      if (next === false || controller.signal.aborted) return;
      timer = setTimeout(run, Math.max(intervalMs, typeof next === "number" ? next : 0));
    };
    void run();
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [intervalMs]);
}
