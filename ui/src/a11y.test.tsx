import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it, vi } from "vitest";
import { Meter } from "./components/Meter";
import { SubjectTable } from "./components/SubjectTable";
import { type RouteDocument, announceRoute, pageTitle } from "./hooks/useRoute";

describe("moving to another view", () => {
  it("names the view in the title and moves focus to the main region", () => {
    const main = { focus: vi.fn() };
    const doc: RouteDocument = {
      title: "FaceKey",
      getElementById: vi.fn((id: string) => (id === "main" ? main : null)),
    };
    announceRoute("enrol", doc);
    expect(doc.title).toBe("Enrol · FaceKey");
    expect(main.focus).toHaveBeenCalledTimes(1);
    expect(pageTitle("metrics-view")).toBe("Metrics · FaceKey");
  });
});

describe("a meter without a value", () => {
  it("is not announced as its minimum", () => {
    const html = renderToStaticMarkup(<Meter label="liveness" value={undefined} threshold={0.5} />);
    expect(html).not.toContain("aria-valuenow");
    expect(html).toContain('aria-valuetext="no value"');
    const shown = renderToStaticMarkup(<Meter label="liveness" value={0.93} threshold={0.5} />);
    expect(shown).toContain('aria-valuenow="0.93"');
    expect(shown).not.toContain("aria-valuetext");
  });
});

describe("the subjects' row buttons", () => {
  it("name the subject they act on, told apart in a list of buttons", () => {
    const subjects = [
      { id: "3f0c2a1e-9b7d-4c5e-8f6a-1b2c3d4e5f60", name: "Eileen Collins", faces: 1 },
      { id: "4a1d3b2f-0c8e-4d6f-9a7b-2c3d4e5f6071", name: "Sally Ride", faces: 2 },
    ];
    const html = renderToStaticMarkup(
      <SubjectTable
        subjects={subjects}
        selected={undefined}
        onSelect={() => undefined}
        onDelete={() => undefined}
        onUnlock={() => undefined}
        busy={false}
      />,
    );
    for (const name of ["Eileen Collins", "Sally Ride"]) {
      expect(html).toContain(`aria-label="Delete ${name}…"`);
      expect(html).toContain(`aria-label="Unlock ${name}"`);
    }
  });
});
