import { describe, expect, it } from "vitest";
import { routeFromPath } from "./route";

describe("routeFromPath", () => {
  it("maps the runtime's app paths to views", () => {
    expect(routeFromPath("/")).toBe("verify");
    expect(routeFromPath("/index.html")).toBe("verify");
    expect(routeFromPath("/verify")).toBe("verify");
    expect(routeFromPath("/identify")).toBe("identify");
    expect(routeFromPath("/enrol")).toBe("enrol");
    expect(routeFromPath("/fusion")).toBe("fusion");
    expect(routeFromPath("/metrics-view")).toBe("metrics-view");
    expect(routeFromPath("/docs")).toBe("docs");
  });

  it("ignores a trailing slash and a mount prefix", () => {
    expect(routeFromPath("/docs/")).toBe("docs");
    expect(routeFromPath("/facekey/fusion")).toBe("fusion");
  });

  it("falls back to verify", () => {
    expect(routeFromPath("/nope")).toBe("verify");
    expect(routeFromPath("")).toBe("verify");
  });
});
