import { createContext, useCallback, useContext, useEffect, useState } from "react";
import { type Route, routeFromPath } from "../lib/route";

/** The current view from the URL path, and a function that moves to another with pushState. */
export function useRoute(): [Route, (route: Route) => void] {
  const [route, setRoute] = useState<Route>(() => routeFromPath(window.location.pathname));
  useEffect(() => {
    const onPop = () => setRoute(routeFromPath(window.location.pathname));
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((to: Route) => {
    window.history.pushState(null, "", to);
    setRoute(to);
    window.scrollTo(0, 0);
  }, []);
  return [route, navigate];
}

/** In-page navigation for links deep in the tree; a full page load when no provider is set. */
export const NavigateContext = createContext<(route: Route) => void>((to) => window.location.assign(to));

export const useNavigate = () => useContext(NavigateContext);
