import { describe, expect, it } from "vitest";
import { count, dateTime, fixed, millis, percent, rate, seconds, signed } from "./format";

describe("format", () => {
  it("fixed rounds, dashes missing values and avoids -0", () => {
    expect(fixed(0.76852)).toBe("0.77");
    expect(fixed(0.76852, 4)).toBe("0.7685");
    expect(fixed(-0.001)).toBe("0.00");
    expect(fixed(undefined)).toBe("–");
    expect(fixed(NaN)).toBe("–");
  });

  it("signed marks positives", () => {
    expect(signed(0.8)).toBe("+0.80");
    expect(signed(-1.2)).toBe("-1.20");
    expect(signed(0)).toBe("0.00");
    expect(signed(-0.0001)).toBe("0.00");
  });

  it("percent", () => {
    expect(percent(0.76852)).toBe("76.9 %");
    expect(percent(null)).toBe("–");
  });

  it("millis picks a unit", () => {
    expect(millis(0)).toBe("0 ms");
    expect(millis(0.25)).toBe("250 µs");
    expect(millis(0.004)).toBe("4.0 µs");
    expect(millis(3.14159)).toBe("3.14 ms");
    expect(millis(42.42)).toBe("42.4 ms");
    expect(millis(123.4)).toBe("123 ms");
    expect(millis(1750)).toBe("1.75 s");
    expect(millis(12_345)).toBe("12.3 s");
    expect(seconds(0.0123)).toBe("12.3 ms");
    expect(seconds(undefined)).toBe("–");
  });

  it("rate and count", () => {
    expect(rate(0.4)).toBe("0.40/s");
    expect(rate(12.3)).toBe("12/s");
    expect(rate(NaN)).toBe("–");
    expect(count(1234567.4)).toBe("1,234,567");
  });

  it("dateTime", () => {
    expect(dateTime("not a date")).toBe("not a date");
    expect(dateTime(undefined)).toBe("–");
    expect(dateTime("2024-05-06T07:08:09")).toBe("2024-05-06 07:08");
  });
});
