import { describe, expect, it } from "vitest";
import { featureText, parseFeature } from "./FeatureInput";

describe("a feature's number box", () => {
  it("reads a number only from text that is one", () => {
    expect(parseFeature("-0.25")).toBe(-0.25);
    expect(parseFeature("1e-2")).toBe(0.01);
    expect(parseFeature("")).toBeUndefined();
    expect(parseFeature("-")).toBeUndefined();
    expect(parseFeature("1e")).toBeUndefined();
  });

  it("keeps what is typed while it is not a number yet, instead of snapping back", () => {
    // Emptied, or a leading "-" typed, while the feature is still 0.5.
    expect(featureText("", 0.5, 0.5)).toBe("");
    expect(featureText("-", 0.5, 0.5)).toBe("-");
    // A number typed as written, once the feature took it.
    expect(featureText("-0.40", 0.5, -0.4)).toBe("-0.40");
  });

  it("shows the number when it changed elsewhere (the slider, the worked example)", () => {
    expect(featureText("", 0.5, 0.8)).toBe("0.8");
    expect(featureText("0.5", 0.5, -1)).toBe("-1");
    // On blur (NaN: as if changed elsewhere), text that is not the number goes.
    expect(featureText("-", Number.NaN, 0.5)).toBe("0.5");
    expect(featureText("0.50", Number.NaN, 0.5)).toBe("0.50");
  });
});
