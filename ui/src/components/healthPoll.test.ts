import { describe, expect, it } from "vitest";
import { healthPollAfter } from "./Header";

describe("healthPollAfter", () => {
  it("polls a healthy runtime every 10 s", () => {
    expect(healthPollAfter(0)).toBe(10_000);
  });
  it("polls a failing one soon at first, then backs off to 10 s", () => {
    expect([1, 2, 3, 4, 50].map(healthPollAfter)).toEqual([2_000, 4_000, 8_000, 10_000, 10_000]);
  });
});
