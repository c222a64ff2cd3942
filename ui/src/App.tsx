import { Header } from "./components/Header";
import { KeyPrompt } from "./components/KeyPrompt";
import { RouteLink } from "./components/RouteLink";
import { ErrorBox } from "./components/ErrorBox";
import { ApiError } from "./api";
import { type Auth, AuthContext, useAuthState } from "./hooks/useAuth";
import { NavigateContext, useRoute } from "./hooks/useRoute";
import { ROUTE_TITLES, type Route } from "./lib/route";
import { DocsView } from "./views/DocsView";
import { EnrolView } from "./views/EnrolView";
import { IdentifyView } from "./views/IdentifyView";
import { MetricsView } from "./views/MetricsView";
import { ScoreView } from "./views/ScoreView";
import { VerifyView } from "./views/VerifyView";

const TABS: readonly Route[] = ["verify", "identify", "enrol", "fusion", "metrics-view"];

function View({ route }: { route: Route }) {
  switch (route) {
    case "verify":
      return <VerifyView />;
    case "identify":
      return <IdentifyView />;
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

/** The view, once a key is in place; the key prompt without one. The API docs need no key. */
export function Main({ route, auth }: { route: Route; auth: Auth }) {
  const { state } = auth;
  if (route === "docs" || state.status === "signed-in") return <View route={route} />;
  if (state.status === "signed-out") {
    // A new offer (a `#key=` link) fills the field afresh.
    return (
      <KeyPrompt
        key={state.offered?.key}
        notice={state.notice}
        offered={state.offered}
        onKey={auth.signIn}
        onDismiss={auth.signOut}
      />
    );
  }
  if (state.status === "unavailable") {
    const limited = state.error instanceof ApiError && state.error.status === 429;
    return (
      <div className="view">
        <ErrorBox
          error={state.error}
          title={
            limited
              ? "The runtime asks this key to slow down (retrying after its wait)"
              : "Cannot reach the runtime to check the API key (retrying)"
          }
        />
      </div>
    );
  }
  return (
    <p className="placeholder" data-testid="key-checking">
      Checking the API key…
    </p>
  );
}

export function App() {
  const [route, navigate] = useRoute();
  const auth = useAuthState();
  return (
    <AuthContext.Provider value={auth}>
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
          <Main route={route} auth={auth} />
        </main>
      </NavigateContext.Provider>
    </AuthContext.Provider>
  );
}
