import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { Main } from "./App";
import { ApiError, parseVerify } from "./api";
import { ErrorBox } from "./components/ErrorBox";
import { KeyBadge } from "./components/Header";
import { SubjectTable } from "./components/SubjectTable";
import { VerifyDecisionView, VerifyResultView } from "./components/VerifyResultView";
import { type Auth, AuthContext, retryMs } from "./hooks/useAuth";
import type { Identity, Scope } from "./lib/auth";
import { EnrolView, SubjectsCard } from "./views/EnrolView";
import { IdentifyView } from "./views/IdentifyView";
import { ScoreView } from "./views/ScoreView";
import { VerifyView } from "./views/VerifyView";

const identity = (keyId: string, ...scopes: Scope[]): Identity => ({ keyId, scopes });

const signedIn = (who: Identity): Auth => ({
  state: { status: "signed-in", identity: who },
  identity: who,
  signIn: () => undefined,
  signOut: () => undefined,
});

function render(node: React.ReactNode, who?: Identity): string {
  const auth: Auth = who
    ? signedIn(who)
    : { state: { status: "signed-out" }, signIn: () => undefined, signOut: () => undefined };
  return renderToStaticMarkup(<AuthContext.Provider value={auth}>{node}</AuthContext.Provider>);
}

const testIds = (html: string) => new Set([...html.matchAll(/data-testid="([^"]+)"/g)].map((m) => m[1]));

const ADMIN = identity("admin", "admin");
const KIOSK = identity("kiosk", "verify");
const ENROLLER = identity("desk", "enrol");
const SCRAPER = identity("prom", "metrics");

describe("the verify view by scope", () => {
  it("admin: picks the subject from the list", () => {
    const ids = testIds(render(<VerifyView />, ADMIN));
    expect(ids.has("verify-subject")).toBe(true);
    expect(ids.has("verify-subject-id")).toBe(false);
    expect(ids.has("verify-submit")).toBe(true);
  });

  it("verify: types the subject id, since listing needs admin", () => {
    const html = render(<VerifyView />, KIOSK);
    const ids = testIds(html);
    expect(ids.has("verify-subject")).toBe(false);
    expect(ids.has("verify-subject-id")).toBe(true);
    expect(ids.has("subjects-need-admin")).toBe(true);
    expect(ids.has("verify-submit")).toBe(true);
  });

  it("without verify: says which scope is missing and offers no form", () => {
    const html = render(<VerifyView />, SCRAPER);
    expect(testIds(html).has("verify-submit")).toBe(false);
    expect(html).toContain('data-needs="verify"');
    expect(html).toContain("<code>prom</code>) may read metrics");
  });
});

describe("the identify view by scope", () => {
  it("admin and verify: an image or the liveness challenge, and no subject to pick", () => {
    for (const who of [ADMIN, KIOSK]) {
      const ids = testIds(render(<IdentifyView />, who));
      expect(ids.has("identify-submit")).toBe(true);
      expect(ids.has("identify-mode-image")).toBe(true);
      expect(ids.has("identify-mode-challenge")).toBe(true);
      expect(ids.has("file-input")).toBe(true);
      expect(ids.has("identify-limit")).toBe(true);
      expect(ids.has("verify-subject")).toBe(false);
      expect(ids.has("verify-subject-id")).toBe(false);
      expect(ids.has("scope-notice")).toBe(false);
    }
  });

  it("without verify: says which scope is missing and offers no form", () => {
    for (const [who, can] of [
      [ENROLLER, "may enrol subjects and faces"],
      [SCRAPER, "may read metrics"],
    ] as const) {
      const html = render(<IdentifyView />, who);
      const ids = testIds(html);
      expect(ids.has("identify-submit")).toBe(false);
      expect(ids.has("identify-mode-challenge")).toBe(false);
      expect(html).toContain('data-needs="verify"');
      expect(html).toContain("Identifying a face needs an API key with the <code>verify</code> scope");
      expect(html).toContain(can);
    }
  });

  it("has its own route and tab title", () => {
    const html = render(<Main route="identify" auth={signedIn(KIOSK)} />, KIOSK);
    expect(testIds(html).has("identify-submit")).toBe(true);
    expect(html).toContain("<h2>Identify a face</h2>");
  });
});

describe("the enrol view by scope", () => {
  it("admin: create, add faces, list and delete", () => {
    const html = render(<EnrolView />, ADMIN);
    const ids = testIds(html);
    expect(ids.has("create-subject")).toBe(true);
    expect(ids.has("add-face")).toBe(true);
    expect(ids.has("subjects-need-admin")).toBe(false);
    expect(ids.has("face-target-id")).toBe(false);
  });

  it("admin rows offer unlock and delete; without the actions, neither", () => {
    const subjects = [{ id: "s1", name: "Eileen", faces: 1 }];
    const noop = () => undefined;
    const admin = testIds(
      render(
        <SubjectTable
          subjects={subjects}
          selected={undefined}
          onSelect={noop}
          onDelete={noop}
          onUnlock={noop}
          busy={false}
        />,
      ),
    );
    expect(admin.has("subject-unlock")).toBe(true);
    const plain = testIds(
      render(<SubjectTable subjects={subjects} selected={undefined} onSelect={noop} busy={false} />),
    );
    expect(plain.has("subject-unlock")).toBe(false);
  });

  it("enrol: create and add faces, but listing and deleting others' subjects need admin", () => {
    const html = render(<EnrolView />, ENROLLER);
    const ids = testIds(html);
    expect(ids.has("create-subject")).toBe(true);
    expect(ids.has("add-face")).toBe(true);
    expect(ids.has("face-target-id")).toBe(true);
    expect(ids.has("subjects-need-admin")).toBe(true);
    expect(ids.has("subjects")).toBe(false);
    expect(html).toContain("Listing and renaming subjects, or deleting those other keys created, needs an API key");
    expect(html).toContain("This key may delete the subjects it created");
  });

  it("enrol: the subjects created here can be deleted, as the runtime lets their creator's key", () => {
    const card = (admin: boolean, who: Identity) =>
      render(
        <SubjectsCard
          admin={admin}
          subjects={[{ id: "s1", name: "Eileen", faces: 1, created_by: who.keyId }]}
          selected={undefined}
          onSelect={() => undefined}
          onDelete={() => undefined}
          onUnlock={admin ? () => undefined : undefined}
          onReload={() => undefined}
          busy={false}
          status=""
          error={undefined}
          listError={undefined}
        />,
        who,
      );
    const enrol = card(false, ENROLLER);
    const ids = testIds(enrol);
    expect(enrol).toContain("Created here");
    expect(ids.has("subject-row")).toBe(true);
    expect(ids.has("subject-delete")).toBe(true);
    expect(ids.has("subject-unlock")).toBe(false);
    expect(ids.has("subjects-need-admin")).toBe(true);
    expect(enrol).not.toContain("Listing, renaming and deleting subjects needs");
    const admin = testIds(card(true, ADMIN));
    expect(admin.has("subject-delete")).toBe(true);
    expect(admin.has("subject-unlock")).toBe(true);
    expect(admin.has("subjects-need-admin")).toBe(false);
  });

  it("verify only: no enrolment at all, and why", () => {
    const html = render(<EnrolView />, KIOSK);
    const ids = testIds(html);
    expect(ids.has("create-subject")).toBe(false);
    expect(ids.has("add-face")).toBe(false);
    expect(html).toContain('data-needs="enrol"');
    expect(html).toContain("may verify faces");
  });
});

describe("the score view by scope", () => {
  it("needs verify", () => {
    expect(testIds(render(<ScoreView />, KIOSK)).has("reset-features")).toBe(true);
    expect(testIds(render(<ScoreView />, ADMIN)).has("reset-features")).toBe(true);
    const html = render(<ScoreView />, ENROLLER);
    expect(testIds(html).has("reset-features")).toBe(false);
    expect(html).toContain('data-needs="verify"');
  });
});

describe("verification answers by scope", () => {
  const full = parseVerify({
    subject: "s1",
    features: [0.9, 0.9, 0.8],
    probability: 0.7,
    threshold: 0.5,
    decision: "accept",
    reasons: [],
    match: { similarity: 0.9, threshold: 0.5, decision: "accept" },
    layers: { z1: [0.8, -1.2, 0.4, 2.0], a1: [0.8, 0, 0.4, 2.0], z2: [1.1, -0.3, 0.5], a2: [1.1, 0, 0.5], z3: 1.2 },
  });
  const slim = parseVerify({ subject: "s1", decision: "reject", reasons: ["no_match", "spoof"], request_id: "r1" });

  it("the runtime's warnings are shown, to admin and verify keys alike", () => {
    const warning = "matched_on_dlib_only: the subject's faces were enrolled before faceres-deep";
    for (const html of [
      render(<VerifyResultView result={{ ...full, warnings: [warning] }} />, ADMIN),
      render(<VerifyDecisionView result={{ ...slim, warnings: [warning] }} />, KIOSK),
    ]) {
      expect(html).toContain('data-testid="verify-warnings"');
      expect(html).toContain("enrolled before faceres-deep");
    }
    expect(testIds(render(<VerifyResultView result={full} />, ADMIN)).has("verify-warnings")).toBe(false);
    expect(parseVerify({ decision: "accept", warnings: [warning, 3] }).warnings).toEqual([warning]);
  });

  it("admin: scores and the forward pass", () => {
    const ids = testIds(render(<VerifyResultView result={full} />, ADMIN));
    expect(ids.has("verify-probability")).toBe(true);
    expect(ids.has("network")).toBe(true);
    expect(ids.has("scores-need-admin")).toBe(false);
  });

  it("verify: the decision and its reasons, and that scores need an admin key", () => {
    const html = render(<VerifyDecisionView result={slim} />, KIOSK);
    const ids = testIds(html);
    expect(ids.has("verify-decision")).toBe(true);
    expect(ids.has("verify-probability")).toBe(false);
    expect(ids.has("network")).toBe(false);
    expect(html).toContain("not the enrolled person · presentation attack suspected");
    expect(html).toContain("Scores need an admin key");
  });
});

describe("while the key cannot be checked", () => {
  const auth = (error: unknown): Auth => ({
    state: { status: "unavailable", error },
    signIn: () => undefined,
    signOut: () => undefined,
  });

  it("a key over its rate is told to slow down, and asked again after the runtime's wait", () => {
    const limited = new ApiError(429, "rate_limited", "too many requests", 7);
    expect(renderToStaticMarkup(<Main route="verify" auth={auth(limited)} />)).toContain("asks this key to slow down");
    expect(retryMs(limited)).toBe(7000);
    const down = new ApiError(0, "network", "cannot reach the runtime");
    expect(renderToStaticMarkup(<Main route="verify" auth={auth(down)} />)).toContain("Cannot reach the runtime");
    expect(retryMs(down)).toBe(3000);
  });
});

describe("the key in the header", () => {
  it("shows the key id and its scopes in words, with sign out", () => {
    const html = renderToStaticMarkup(<KeyBadge identity={{ ...KIOSK, rps: 5 }} onSignOut={() => undefined} />);
    expect(html).toContain('data-testid="key-id">kiosk<');
    expect(html).toContain('data-scopes="verify"');
    expect(html).toContain("may verify faces (at most 5 requests/s)");
    expect(testIds(html).has("sign-out")).toBe(true);
  });

  it("says when the runtime has no keys", () => {
    const html = renderToStaticMarkup(
      <KeyBadge identity={{ keyId: "", scopes: [], open: true }} onSignOut={() => undefined} />,
    );
    expect(html).toContain("no API keys");
    expect(testIds(html).has("sign-out")).toBe(false);
  });
});

describe("the key prompt", () => {
  const auth = (state: Auth["state"]): Auth => ({ state, signIn: () => undefined, signOut: () => undefined });

  it("replaces the views without a key, saying where keys come from", () => {
    const html = renderToStaticMarkup(<Main route="enrol" auth={auth({ status: "signed-out" })} />);
    const ids = testIds(html);
    expect(ids.has("key-prompt")).toBe(true);
    expect(ids.has("key-notice")).toBe(false);
    expect(ids.has("create-subject")).toBe(false);
    expect(html).toContain("#key=fk_");
    expect(html).toContain("facekey-runtime new-api-key");
    expect(html).toContain("-api-keys</code>");
  });

  it("says why after a rejected key", () => {
    const html = renderToStaticMarkup(
      <Main route="verify" auth={auth({ status: "signed-out", notice: "The runtime did not accept" })} />,
    );
    expect(html).toContain('data-testid="key-notice"');
    expect(html).toContain("The runtime did not accept");
  });

  it("leaves the API docs readable without a key", () => {
    const html = renderToStaticMarkup(<Main route="docs" auth={auth({ status: "signed-out" })} />);
    expect(testIds(html).has("key-prompt")).toBe(false);
  });

  it("shows the view once signed in", () => {
    const html = render(<Main route="enrol" auth={signedIn(ADMIN)} />, ADMIN);
    expect(testIds(html).has("create-subject")).toBe(true);
    expect(testIds(html).has("key-prompt")).toBe(false);
  });
});

describe("access-control errors", () => {
  it("show the scope the key lacks and when to retry", () => {
    const forbidden = renderToStaticMarkup(
      <ErrorBox error={new ApiError(403, "forbidden", "listing subjects needs the `admin` scope")} />,
    );
    expect(forbidden).toContain("HTTP 403");
    expect(forbidden).toContain("needs the `admin` scope");
    expect(forbidden).toContain("lacks the scope");
    const limited = renderToStaticMarkup(<ErrorBox error={new ApiError(429, "rate_limited", "rate limited", 2)} />);
    expect(limited).toContain("try again in 2 s");
  });
});
