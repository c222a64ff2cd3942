import { createContext, useCallback, useContext, useEffect, useRef, useState, useSyncExternalStore } from "react";
import { ApiError, whoami } from "../api";
import { type Identity, type KeyState, type Scope, keySession, may } from "../lib/auth";

/** A key a `#key=` link offered this tab, and who the runtime says it is (when it could say). */
export interface OfferedKey {
  key: string;
  identity?: Identity;
}

/** Where the page stands with its API key. */
export type AuthState =
  | { status: "checking" }
  /**
   * No key, or the runtime rejected it (`notice` says so): the key prompt shows, filled in with
   * the key a link `offered`, if any.
   */
  | { status: "signed-out"; notice?: string; offered?: OfferedKey }
  | { status: "signed-in"; identity: Identity }
  /** The runtime could not be asked (down, starting): retried. */
  | { status: "unavailable"; error: unknown };

export interface Auth {
  state: AuthState;
  /** The identity when signed in. */
  identity?: Identity;
  /** Use `key` (it is checked with whoami). */
  signIn: (key: string) => void;
  /** Forget the key (and a key a link offered). */
  signOut: () => void;
}

const RETRY_MS = 3000;

/** How long to wait before asking again: the runtime's `Retry-After` when it names one (a key
 * over its rate), else [`RETRY_MS`]. */
export const retryMs = (error: unknown): number =>
  error instanceof ApiError && error.retryAfter !== undefined ? Math.max(RETRY_MS, error.retryAfter * 1000) : RETRY_MS;

const aborted = (e: unknown) => e instanceof DOMException && e.name === "AbortError";

/**
 * Where a key state stands, by `GET /v1/auth/whoami`. Without a key it is signed out with no
 * request (the runtime would only refuse it, and audit the refusal), unless `askKeyless`: the
 * page has not yet seen whether the runtime has keys at all, and a runtime without access control
 * answers 404 (open). A key a link offers is asked about for its id, to show in the prompt, but
 * not used. Rejects only when aborted.
 */
export async function checkKey(
  { key, offered }: KeyState,
  signal: AbortSignal,
  askKeyless = false,
): Promise<AuthState> {
  if (key === undefined && offered !== undefined) {
    try {
      return { status: "signed-out", offered: { key: offered, identity: await whoami(signal, offered) } };
    } catch (error) {
      if (aborted(error)) throw error;
      return { status: "signed-out", offered: { key: offered } };
    }
  }
  if (key === undefined && !askKeyless) return { status: "signed-out" };
  try {
    return { status: "signed-in", identity: await whoami(signal, key) };
  } catch (error) {
    if (aborted(error)) throw error;
    if (error instanceof ApiError && (error.status === 401 || error.status === 403)) return { status: "signed-out" };
    return { status: "unavailable", error };
  }
}

/** Whether a check showed that the runtime has API keys: it refused a key, or knew one. */
export function showsKeys(result: AuthState): boolean {
  if (result.status === "signed-in") return !result.identity.open;
  if (result.status === "signed-out") return result.offered?.identity?.open !== true;
  return false;
}

/**
 * The page's key and identity: the key from the session, checked with `GET /v1/auth/whoami`
 * whenever it changes, or a key a `#key=` link offers (pasted into the address bar of this tab
 * too), which the key prompt shows until the user signs in with it.
 */
export function useAuthState(): Auth {
  const { key, notice, offered } = useSyncExternalStore(keySession.subscribe, keySession.snapshot);
  const [checked, setChecked] = useState<{ state: KeyState; result: AuthState }>();
  const [attempt, setAttempt] = useState(0);
  // Whether the runtime is known to have keys: from then on, no key means no whoami.
  const keyed = useRef(false);

  useEffect(() => {
    const onHash = () => keySession.adoptFromLocation(window.location, window.history);
    window.addEventListener("hashchange", onHash);
    return () => window.removeEventListener("hashchange", onHash);
  }, []);

  useEffect(() => {
    const controller = new AbortController();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const state = { key, offered };
    checkKey(state, controller.signal, !keyed.current)
      .then((result) => {
        if (controller.signal.aborted) return;
        if (showsKeys(result)) keyed.current = true;
        setChecked({ state, result });
        if (result.status === "unavailable") timer = setTimeout(() => setAttempt((n) => n + 1), retryMs(result.error));
      })
      .catch(() => undefined);
    return () => {
      controller.abort();
      clearTimeout(timer);
    };
  }, [key, offered, attempt]);

  const signIn = useCallback((k: string) => keySession.set(k), []);
  const signOut = useCallback(() => keySession.clear(), []);

  let state: AuthState;
  if (checked === undefined || checked.state.key !== key || checked.state.offered !== offered) {
    state = { status: "checking" };
  } else if (checked.result.status === "signed-out") state = { ...checked.result, notice };
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
