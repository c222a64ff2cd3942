import { useCallback, useEffect, useState } from "react";
import { whoami } from "../api";
import type { KeyQuotas } from "../lib/auth";

/**
 * The signed-in key's use of its store quotas (`GET /v1/auth/whoami`), starting from `initial`
 * and asked again on every `refresh` (after each write), so a key sees its quota coming before
 * its writes answer 507. Undefined from a runtime without quotas; a failed refresh keeps the
 * last answer.
 */
export function useKeyQuotas(initial: KeyQuotas | undefined) {
  const [quotas, setQuotas] = useState(initial);
  const [generation, setGeneration] = useState(0);
  const refresh = useCallback(() => setGeneration((g) => g + 1), []);
  useEffect(() => {
    if (generation === 0) return;
    const controller = new AbortController();
    whoami(controller.signal)
      .then((identity) => setQuotas(identity.quotas))
      .catch(() => undefined);
    return () => controller.abort();
  }, [generation]);
  return { quotas, refresh };
}
