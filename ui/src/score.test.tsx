import { renderToStaticMarkup } from "react-dom/server";
import { describe, expect, it } from "vitest";
import { ApiError, parseScore } from "./api";
import { type ShownScore, ScoreResultView, isStale } from "./views/ScoreView";

const shown: ShownScore = {
  features: [1, 0.5, -1],
  result: parseScore({ probability: 0.7685, threshold: 0.5, decision: "accept" }),
};
const limited = new ApiError(429, "rate_limited", "slow down", 2);

describe("the score shown after a failed request", () => {
  it("is stale when scoring the features now set failed", () => {
    expect(isStale(shown, [0.2, 0.5, -1], limited)).toBe(true);
    expect(isStale(shown, [0.2, 0.5, -1], new ApiError(422, "invalid_features", ""))).toBe(true);
    // Current: no failure, or the features shown are the ones set.
    expect(isStale(shown, [0.2, 0.5, -1], undefined)).toBe(false);
    expect(isStale(shown, [1, 0.5, -1], limited)).toBe(false);
    expect(isStale(undefined, [1, 0.5, -1], limited)).toBe(false);
  });

  it("is dimmed and says so, and for which features it is", () => {
    const html = renderToStaticMarkup(<ScoreResultView shown={shown} stale />);
    expect(html).toContain('class="score-result stale"');
    expect(html).toContain('data-stale="true"');
    expect(html).toContain('data-testid="score-stale"');
    expect(html).toContain(
      "Out of date: scoring the current features failed; this is the result for [1.00, 0.50, -1.00].",
    );
    expect(html).toContain('data-testid="score-probability">0.77<');
  });

  it("a current result has no such note", () => {
    const html = renderToStaticMarkup(<ScoreResultView shown={shown} stale={false} />);
    expect(html).not.toContain("score-stale");
    expect(html).toContain('data-stale="false"');
  });
});
