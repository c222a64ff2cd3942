import { useCallback, useEffect, useState, useSyncExternalStore } from "react";
import { type SubjectList, listSubjects } from "../api";
import { knownSubjects, offeredSubjects } from "../lib/subjects";

/**
 * The enrolled subjects, loaded on mount, with a reload function and the last error. Listing
 * needs the `admin` scope: with `enabled` false nothing is requested and `subjects` stays
 * undefined. The listing stops at `MAX_LISTED_SUBJECTS` (the oldest): then `truncated` is true
 * and `subjects` also holds the subjects this tab created or looked up by id (`knownSubjects`),
 * first, so that they can still be picked.
 */
export function useSubjects(enabled = true) {
  const [listing, setListing] = useState<SubjectList>();
  const [error, setError] = useState<unknown>();
  const [generation, setGeneration] = useState(0);
  const known = useSyncExternalStore(knownSubjects.subscribe, knownSubjects.snapshot, knownSubjects.snapshot);
  const reload = useCallback(() => setGeneration((g) => g + 1), []);
  useEffect(() => {
    if (!enabled) return;
    const controller = new AbortController();
    listSubjects(controller.signal)
      .then((list) => {
        setListing(list);
        setError(undefined);
      })
      .catch((e: unknown) => {
        if (!controller.signal.aborted) setError(e);
      });
    return () => controller.abort();
  }, [generation, enabled]);
  const truncated = listing?.truncated === true;
  return {
    subjects: enabled ? offeredSubjects(listing?.subjects, truncated, known) : undefined,
    truncated: enabled && truncated,
    error: enabled ? error : undefined,
    reload,
  };
}
