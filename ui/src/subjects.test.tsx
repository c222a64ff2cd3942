import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import type { Subject } from "./api";
import { SubjectLookup } from "./components/SubjectLookup";
import { type Auth, AuthContext } from "./hooks/useAuth";
import type { Identity } from "./lib/auth";
import { TRUNCATED_NOTICE } from "./lib/subjects";
import { SubjectsCard } from "./views/EnrolView";
import { VerifyView } from "./views/VerifyView";

const ADMIN: Identity = { keyId: "admin", scopes: ["admin"] };
const ENROLLER: Identity = { keyId: "desk", scopes: ["enrol"] };

function render(node: React.ReactNode, who: Identity = ADMIN): string {
  const auth: Auth = {
    state: { status: "signed-in", identity: who },
    identity: who,
    signIn: () => undefined,
    signOut: () => undefined,
  };
  return renderToStaticMarkup(<AuthContext.Provider value={auth}>{node}</AuthContext.Provider>);
}

const testIds = (html: string) => new Set([...html.matchAll(/data-testid="([^"]+)"/g)].map((m) => m[1]));
const noop = () => undefined;

describe("a cut-off subject list", () => {
  it("says so and offers a labelled id field to pick a subject that is not listed", () => {
    const html = render(<SubjectLookup truncated onFound={noop} />);
    const ids = testIds(html);
    expect(ids.has("subjects-truncated")).toBe(true);
    expect(ids.has("subject-lookup-id")).toBe(true);
    expect(ids.has("subject-lookup-submit")).toBe(true);
    expect(html).toContain(TRUNCATED_NOTICE);
    // The notice and the lookup's outcome are announced; the field has a label and its help.
    expect(html).toMatch(/<p class="warn small" role="status" data-testid="subjects-truncated">/);
    expect(html).toMatch(/role="status" data-testid="subject-lookup-status"/);
    expect(html).toMatch(/aria-live="polite" data-testid="subject-lookup-help"/);
    const input = /<input id="([^"]+)"[^>]*aria-describedby="([^"]+)"[^>]*data-testid="subject-lookup-id"/.exec(html);
    expect(input).not.toBeNull();
    expect(html).toContain(`<label for="${input?.[1]}">`);
    expect(html).toContain(`id="${input?.[2]}"`);
    // Not a nested form: Find is a plain button, disabled until an id is typed.
    expect(html).not.toContain("<form");
    expect(html).toMatch(/<button type="button" class="secondary" disabled="" data-testid="subject-lookup-submit">/);
  });

  it("a complete list shows neither", () => {
    expect(render(<SubjectLookup truncated={false} onFound={noop} />)).toBe("");
  });

  const card = (admin: boolean, truncated: boolean | undefined, who: Identity) => {
    const subjects: Subject[] = [{ id: "s1", name: "Eileen", faces: 1 }];
    return testIds(
      render(
        <SubjectsCard
          admin={admin}
          subjects={subjects}
          truncated={truncated}
          selected={undefined}
          onSelect={noop}
          onDelete={noop}
          onUnlock={admin ? noop : undefined}
          onReload={noop}
          busy={false}
          status=""
          error={undefined}
          listError={undefined}
        />,
        who,
      ),
    );
  };

  it("the enrol list says it is cut off and offers the lookup (admin)", () => {
    const cut = card(true, true, ADMIN);
    expect(cut.has("subjects-truncated")).toBe(true);
    expect(cut.has("subject-lookup-id")).toBe(true);
    expect(cut.has("subject-row")).toBe(true);
    const whole = card(true, false, ADMIN);
    expect(whole.has("subjects-truncated")).toBe(false);
    expect(whole.has("subject-lookup-id")).toBe(false);
    expect(card(true, undefined, ADMIN).has("subject-lookup")).toBe(false);
  });

  it("an enrol key lists no subjects, so there is nothing cut off to say", () => {
    const own = card(false, true, ENROLLER);
    expect(own.has("subject-lookup")).toBe(false);
    expect(own.has("subjects-need-admin")).toBe(true);
  });

  it("the verify picker offers no lookup before the list is known to be cut off", () => {
    const ids = testIds(render(<VerifyView />));
    expect(ids.has("verify-subject")).toBe(true);
    expect(ids.has("subject-lookup")).toBe(false);
  });
});
