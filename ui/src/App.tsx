import { Header } from "./components/Header";
import { RouteLink } from "./components/RouteLink";
import { NavigateContext, useRoute } from "./hooks/useRoute";
import { ROUTE_TITLES, type Route } from "./lib/route";
import { DocsView } from "./views/DocsView";
import { EnrolView } from "./views/EnrolView";
import { MetricsView } from "./views/MetricsView";
import { ScoreView } from "./views/ScoreView";
import { VerifyView } from "./views/VerifyView";

const TABS: readonly Route[] = ["verify", "enrol", "fusion", "metrics-view"];

function View({ route }: { route: Route }) {
  switch (route) {
    case "verify":
      return <VerifyView />;
    case "enrol":
      return <EnrolView />;
    case "fusion":
      return <ScoreView />;
    case "metrics-view":
      return <MetricsView />;
    case "docs":
      return <DocsView />;
  }
}

export function App() {
  const [route, navigate] = useRoute();
  return (
    <NavigateContext.Provider value={navigate}>
      <a className="skip" href="#main">
        Skip to content
      </a>
      <Header />
      <nav className="tabs" aria-label="Views">
        {TABS.map((r) => (
          <RouteLink key={r} to={r} aria-current={r === route ? "page" : undefined} data-testid={`tab-${r}`}>
            {ROUTE_TITLES[r]}
          </RouteLink>
        ))}
      </nav>
      <main id="main" tabIndex={-1} aria-label={ROUTE_TITLES[route]}>
        <View route={route} />
      </main>
    </NavigateContext.Provider>
  );
}
