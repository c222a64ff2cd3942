/**
 * The app's views and their URL paths. The runtime serves index.html at each of these paths
 * (and at `/`), so every view has a real, shareable URL; links are relative to the app's root.
 */

export const ROUTES = ["verify", "identify", "enrol", "fusion", "metrics-view", "docs"] as const;
export type Route = (typeof ROUTES)[number];

export const ROUTE_TITLES: Record<Route, string> = {
  verify: "Verify",
  identify: "Identify",
  enrol: "Enrol",
  fusion: "Score fusion",
  "metrics-view": "Metrics",
  docs: "API docs",
};

/** The view for a URL path: its last segment names it; anything else is the verify view. */
export function routeFromPath(pathname: string): Route {
  const last = pathname.replace(/\/+$/, "").split("/").pop() ?? "";
  return (ROUTES as readonly string[]).includes(last) ? (last as Route) : "verify";
}
