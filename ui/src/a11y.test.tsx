import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it, vi } from "vitest";
import { Meter } from "./components/Meter";
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
