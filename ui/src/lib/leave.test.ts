import { describe, expect, it } from "vitest";
import { whenLeaving } from "./leave";

describe("leaving the page", () => {
  it("calls back on pagehide and on cleanup, and no longer after cleanup", () => {
    const page = new EventTarget();
    let left = 0;
    const stop = whenLeaving(page, () => {
      left += 1;
    });
    page.dispatchEvent(new Event("pagehide"));
    expect(left).toBe(1);
    stop();
    expect(left).toBe(2);
    page.dispatchEvent(new Event("pagehide"));
    expect(left).toBe(2);
  });
});
