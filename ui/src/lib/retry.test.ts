import { describe, expect, it, vi } from "vitest";
import { ApiError } from "../api";
import { abortableSleep, onceMore, retryWaitMs } from "./retry";

describe("retryWaitMs", () => {
  it("waits the Retry-After of a 429 or 503, and sends nothing else again", () => {
    expect(retryWaitMs(new ApiError(429, "rate_limited", "", 2))).toBe(2000);
    expect(retryWaitMs(new ApiError(503, "overloaded", "", 1))).toBe(1000);
    expect(retryWaitMs(new ApiError(503, "overloaded", ""))).toBeUndefined();
    expect(retryWaitMs(new ApiError(422, "invalid_features", "", 1))).toBeUndefined();
    expect(retryWaitMs(new TypeError("down"))).toBeUndefined();
  });
});

describe("onceMore", () => {
  const limited = new ApiError(429, "rate_limited", "slow down", 3);

  it("reports a refusal at once, then sends again once after its wait", async () => {
    const call = vi.fn().mockRejectedValueOnce(limited).mockResolvedValueOnce("scored");
    const sleep = vi.fn(async () => undefined);
    const refused = vi.fn();
    await expect(onceMore(call, sleep, refused)).resolves.toBe("scored");
    expect(refused).toHaveBeenCalledWith(limited);
    expect(sleep).toHaveBeenCalledWith(3000);
    expect(call).toHaveBeenCalledTimes(2);
  });

  it("sends again only once, and not after other failures", async () => {
    const always = vi.fn().mockRejectedValue(limited);
    await expect(
      onceMore(
        always,
        async () => undefined,
        () => undefined,
      ),
    ).rejects.toBe(limited);
    expect(always).toHaveBeenCalledTimes(2);
    const invalid = new ApiError(422, "invalid_features", "out of range");
    const call = vi.fn().mockRejectedValue(invalid);
    const refused = vi.fn();
    await expect(onceMore(call, async () => undefined, refused)).rejects.toBe(invalid);
    expect(call).toHaveBeenCalledTimes(1);
    expect(refused).not.toHaveBeenCalled();
  });

  it("an abort during the wait ends it", async () => {
    const controller = new AbortController();
    const wait = abortableSleep(60_000, controller.signal);
    controller.abort();
    await expect(wait).rejects.toMatchObject({ name: "AbortError" });
    await expect(abortableSleep(1, new AbortController().signal)).resolves.toBeUndefined();
  });
});
