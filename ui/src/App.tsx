import { Header } from "./components/Header";
import { useHashRoute } from "./hooks/useHashRoute";
import { EnrolView } from "./views/EnrolView";
import { MetricsView } from "./views/MetricsView";
import { ScoreView } from "./views/ScoreView";
import { VerifyView } from "./views/VerifyView";

const ROUTES = ["verify", "enrol", "score", "metrics"] as const;
type Route = (typeof ROUTES)[number];

const TITLES: Record<Route, string> = {
  verify: "Verify",
  enrol: "Enrol",
  score: "Score fusion",
  metrics: "Metrics",
};

function View({ route }: { route: Route }) {
  switch (route) {
    case "verify":
      return <VerifyView />;
    case "enrol":
      return <EnrolView />;
    case "score":
      return <ScoreView />;
    case "metrics":
      return <MetricsView />;
  }
}

export function App() {
  const route = useHashRoute(ROUTES, "verify");
  return (
    <>
      <Header />
      <nav className="tabs" aria-label="Views">
        {ROUTES.map((r) => (
          <a key={r} href={`#/${r}`} aria-current={r === route ? "page" : undefined} data-testid={`tab-${r}`}>
            {TITLES[r]}
          </a>
        ))}
      </nav>
      <main id="main" aria-label={TITLES[route]}>
        <View route={route} />
      </main>
    </>
  );
}
