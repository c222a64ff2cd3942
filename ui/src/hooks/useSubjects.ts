import { useCallback, useEffect, useState } from "react";
import { type Subject, listSubjects } from "../api";

/** The enrolled subjects, loaded on mount, with a reload function and the last error. */
export function useSubjects() {
  const [subjects, setSubjects] = useState<Subject[]>();
  const [error, setError] = useState<unknown>();
  const [generation, setGeneration] = useState(0);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  useEffect(() => {
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
  }, [generation]);
  return { subjects, error, reload };
}
