import { useEffect, useState } from "react";

function readRoute<T extends string>(routes: readonly T[], fallback: T): T {
  const name = window.location.hash.replace(/^#\/?/, "");
  return (routes as readonly string[]).includes(name) ? (name as T) : fallback;
}

/** The current `#/name` route, or `fallback` when the hash names none of `routes`. */
export function useHashRoute<T extends string>(routes: readonly T[], fallback: T): T {
  const [route, setRoute] = useState<T>(() => readRoute(routes, fallback));
  useEffect(() => {
    const onChange = () => setRoute(readRoute(routes, fallback));
    window.addEventListener("hashchange", onChange);
    return () => window.removeEventListener("hashchange", onChange);
  }, [routes, fallback]);
  return route;
}
