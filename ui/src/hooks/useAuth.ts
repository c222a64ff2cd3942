import { createContext, useCallback, useContext, useEffect, useState, useSyncExternalStore } from "react";
import { ApiError, whoami } from "../api";
import { type Identity, type Scope, keySession, may } from "../lib/auth";

/** Where the page stands with its API key. */
export type AuthState =
  | { status: "checking" }
  /** No key, or the runtime rejected it (`notice` says so): the key prompt shows. */
  | { status: "signed-out"; notice?: string }
  | { status: "signed-in"; identity: Identity }
  /** The runtime could not be asked (down, starting): retried. */
  | { status: "unavailable"; error: unknown };

export interface Auth {
  state: AuthState;
  /** The identity when signed in. */
  identity?: Identity;
  /** Use `key` (it is checked with whoami). */
  signIn: (key: string) => void;
  /** Forget the key. */
  signOut: () => void;
}

const RETRY_MS = 3000;

/** How long to wait before asking again: the runtime's `Retry-After` when it names one (a key
 * over its rate), else [`RETRY_MS`]. */
export const retryMs = (error: unknown): number =>
  error instanceof ApiError && error.retryAfter !== undefined ? Math.max(RETRY_MS, error.retryAfter * 1000) : RETRY_MS;

/**
 * The page's key and identity: the key from the session (or a `#key=` pasted into the address
 * bar), checked with `GET /v1/auth/whoami` whenever it changes.
 */
export function useAuthState(): Auth {
  const { key, notice } = useSyncExternalStore(keySession.subscribe, keySession.snapshot);
  const [checked, setChecked] = useState<{ key: string | undefined; result: AuthState }>();
  const [attempt, setAttempt] = useState(0);

  useEffect(() => {
    const onHash = () => keySession.adoptFromLocation(window.location, window.history);
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    whoami(controller.signal)
      .then((identity) => setChecked({ key, result: { status: "signed-in", identity } }))
      .catch((error: unknown) => {
        if (controller.signal.aborted) return;
        if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
          setChecked({ key, result: { status: "signed-out" } });
        } else {
          setChecked({ key, result: { status: "unavailable", error } });
          timer = setTimeout(() => setAttempt((n) => n + 1), retryMs(error));
        }
      });
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [key, attempt]);

  const signIn = useCallback((k: string) => keySession.set(k), []);
  const signOut = useCallback(() => keySession.clear(), []);

  let state: AuthState;
  if (checked === undefined || checked.key !== key) state = { status: "checking" };
  else if (checked.result.status === "signed-out") state = { status: "signed-out", notice };
  else state = checked.result;
  return { state, identity: state.status === "signed-in" ? state.identity : undefined, signIn, signOut };
}

export const AuthContext = createContext<Auth>({
  state: { status: "checking" },
  signIn: (k) => keySession.set(k),
  signOut: () => keySession.clear(),
});

export const useAuth = () => useContext(AuthContext);

/** Whether the signed-in key grants `scope` (`admin` grants every scope). */
export function useMay(scope: Scope): boolean {
  return may(useAuth().identity, scope);
}
