import { describe, expect, it } from "vitest";
import { ApiError } from "../api";
import { pollAfter } from "./polling";

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
