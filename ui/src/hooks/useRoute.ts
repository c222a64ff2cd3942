import { createContext, useCallback, useContext, useEffect, useRef, useState } from "react";
import { ROUTE_TITLES, type Route, routeFromPath } from "../lib/route";

/** The page's title on a view: "Enrol · FaceKey". */
export const pageTitle = (route: Route): string => `${ROUTE_TITLES[route]} · FaceKey`;

/** The part of the document a view change touches. */
export interface RouteDocument {
  title: string;
  getElementById(id: string): { focus(options?: FocusOptions): void } | null;
}

/**
 * After moving to another view: the title names it, and focus goes to `<main id="main">`
 * (`tabIndex` -1), so a screen reader announces the new view and the next Tab starts in it
 * rather than at the link that was followed.
 */
export function announceRoute(route: Route, doc: RouteDocument = document): void {
  doc.title = pageTitle(route);
  doc.getElementById("main")?.focus({ preventScroll: true });
}

/**
 * The current view from the URL path, and a function that moves to another with pushState. The
 * title follows the view; focus moves to the new view once it is shown ([`announceRoute`]), not
 * on the page's first load (where it starts before the skip link).
 */
export function useRoute(): [Route, (route: Route) => void] {
  const [route, setRoute] = useState<Route>(() => routeFromPath(window.location.pathname));
  const moved = useRef(false);
  useEffect(() => {
    if (moved.current) announceRoute(route);
    else document.title = pageTitle(route);
  }, [route]);
  useEffect(() => {
    const onPop = () => {
      moved.current = true;
      setRoute(routeFromPath(window.location.pathname));
    };
    window.addEventListener("popstate", onPop);
    return () => window.removeEventListener("popstate", onPop);
  }, []);
  const navigate = useCallback((to: Route) => {
    window.history.pushState(null, "", to);
    moved.current = true;
    setRoute(to);
    window.scrollTo(0, 0);
  }, []);
  return [route, navigate];
}

/** In-page navigation for links deep in the tree; a full page load when no provider is set. */
export const NavigateContext = createContext<(route: Route) => void>((to) => window.location.assign(to));

export const useNavigate = () => useContext(NavigateContext);
