import { describe, expect, it } from "vitest";
import { pushBounded, sparkPath } from "./sparkline";

describe("sparkPath", () => {
  it("spans the box with zero at the bottom", () => {
    expect(sparkPath([0, 2, 1], 100, 20, 0)).toBe("M0.0,20.0 L50.0,0.0 L100.0,10.0");
  });

  it("handles empty, single, flat and non-finite series", () => {
    expect(sparkPath([], 100, 20)).toBe("");
    expect(sparkPath([3], 100, 20, 0)).toBe("M0.0,0.0");
    expect(sparkPath([0, 0], 100, 20, 0)).toBe("M0.0,20.0 L100.0,20.0");
    expect(sparkPath([NaN, 1], 10, 10, 0)).toBe("M0.0,10.0 L10.0,0.0");
  });
});

describe("pushBounded", () => {
  it("keeps the most recent entries", () => {
    expect(pushBounded([1, 2, 3], 4, 3)).toEqual([2, 3, 4]);
    expect(pushBounded([], 1, 3)).toEqual([1]);
  });
});
