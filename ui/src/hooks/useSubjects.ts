import { useCallback, useEffect, useState } from "react";
import { type Subject, listSubjects } from "../api";

/**
 * The enrolled subjects, loaded on mount, with a reload function and the last error. Listing
 * needs the `admin` scope: with `enabled` false nothing is requested and `subjects` stays
 * undefined.
 */
export function useSubjects(enabled = true) {
  const [subjects, setSubjects] = useState<Subject[]>();
  const [error, setError] = useState<unknown>();
  const [generation, setGeneration] = useState(0);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  useEffect(() => {
    if (!enabled) return;
    const controller = new AbortController();
    listSubjects(controller.signal)
      .then((list) => {
        setSubjects(list);
        setError(undefined);
      })
      .catch((e: unknown) => {
        if (!controller.signal.aborted) setError(e);
      });
    return () => controller.abort();
  }, [generation, enabled]);
  return { subjects: enabled ? subjects : undefined, error: enabled ? error : undefined, reload };
}
