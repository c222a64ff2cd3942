import { describe, expect, it } from "vitest";
import { ApiError } from "../api";
import { MAX_BACKOFF_MS, afterFailures, pollAfter } from "./polling";

describe("pollAfter", () => {
  it("stops on refusals and waits what the runtime asks", () => {
    expect(pollAfter(new ApiError(403, "forbidden", "needs the `metrics` scope"))).toBe(false);
    expect(pollAfter(new ApiError(401, "unauthorized", ""))).toBe(false);
    expect(pollAfter(new ApiError(429, "rate_limited", "", 7))).toBe(7000);
    expect(pollAfter(new ApiError(503, "overloaded", "", 1))).toBe(1000);
    expect(pollAfter(new ApiError(503, "overloaded", ""))).toBeUndefined();
    expect(pollAfter(new TypeError("network down"))).toBeUndefined();
  });
});

describe("afterFailures", () => {
  it("doubles the wait for each failure in a row, up to a bound, and keeps what the runtime asks", () => {
    const down = new TypeError("network down");
    expect([1, 2, 3, 4].map((n) => afterFailures(down, n, 3000))).toEqual([3000, 6000, 12_000, 24_000]);
    expect(afterFailures(down, 5, 3000)).toBe(MAX_BACKOFF_MS);
    expect(afterFailures(down, 500, 3000)).toBe(MAX_BACKOFF_MS);
    expect(afterFailures(new ApiError(429, "rate_limited", "", 60), 1, 3000)).toBe(60_000);
    expect(afterFailures(new ApiError(403, "forbidden", ""), 1, 3000)).toBe(false);
  });
});
