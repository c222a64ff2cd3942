import { describe, expect, it } from "vitest";
import {
  PromParseError,
  counterRate,
  histogramDelta,
  histogramQuantile,
  histogramsBy,
  parsePromNumber,
  parsePrometheus,
  ratesBy,
  samples,
  sumBy,
  total,
} from "./prom";

const TEXT = `# HELP facekey_decisions_total Authentication decisions by outcome.
# TYPE facekey_decisions_total counter
facekey_decisions_total{outcome="accept"} 3
facekey_decisions_total{outcome="reject"} 1
# HELP facekey_spoof_detected_total Faces the liveness check judged a presentation attack.
# TYPE facekey_spoof_detected_total counter
facekey_spoof_detected_total 2
# HELP facekey_http_requests_total HTTP requests by route, method and status.
# TYPE facekey_http_requests_total counter
facekey_http_requests_total{method="GET",route="/healthz",status="200"} 10
facekey_http_requests_total{method="POST",route="/v1/score",status="200"} 4
facekey_http_requests_total{method="POST",route="/v1/score",status="422"} 1
# HELP facekey_http_request_duration_seconds HTTP request latency by route.
# TYPE facekey_http_request_duration_seconds histogram
facekey_http_request_duration_seconds_bucket{route="/v1/score",le="0.001"} 2
facekey_http_request_duration_seconds_bucket{route="/v1/score",le="0.01"} 4
facekey_http_request_duration_seconds_bucket{route="/v1/score",le="0.1"} 5
facekey_http_request_duration_seconds_bucket{route="/v1/score",le="+Inf"} 5
facekey_http_request_duration_seconds_sum{route="/v1/score"} 0.05
facekey_http_request_duration_seconds_count{route="/v1/score"} 5
# HELP facekey_build_info Build information; the value is always 1.
# TYPE facekey_build_info gauge
facekey_build_info{version="0.1.0"} 1
`;

describe("parsePromNumber", () => {
  it("reads plain, exponent and special values", () => {
    expect(parsePromNumber("1.5")).toBe(1.5);
    expect(parsePromNumber("2.5e-3")).toBe(0.0025);
    expect(parsePromNumber("+Inf")).toBe(Infinity);
    expect(parsePromNumber("-Inf")).toBe(-Infinity);
    expect(parsePromNumber("NaN")).toBeNaN();
  });
  it("rejects garbage", () => {
    expect(() => parsePromNumber("abc")).toThrow();
    expect(() => parsePromNumber("")).toThrow();
  });
});

describe("parsePrometheus", () => {
  const exp = parsePrometheus(TEXT);

  it("groups samples into typed families with help", () => {
    expect(exp.get("facekey_decisions_total")?.type).toBe("counter");
    expect(exp.get("facekey_build_info")?.type).toBe("gauge");
    expect(exp.get("facekey_decisions_total")?.help).toBe("Authentication decisions by outcome.");
    const hist = exp.get("facekey_http_request_duration_seconds");
    expect(hist?.type).toBe("histogram");
    expect(hist?.samples).toHaveLength(6);
    expect(exp.has("facekey_http_request_duration_seconds_bucket")).toBe(false);
  });

  it("reads labels and values", () => {
    expect(samples(exp, "facekey_decisions_total", { outcome: "reject" })[0]?.value).toBe(1);
    expect(samples(exp, "facekey_build_info")[0]?.labels).toEqual({ version: "0.1.0" });
    expect(total(exp, "facekey_spoof_detected_total")).toBe(2);
    expect(total(exp, "facekey_missing")).toBe(0);
  });

  it("handles escapes, spaces, timestamps, untyped samples and CRLF", () => {
    const e = parsePrometheus(
      'x{a="q\\"uote",b="back\\\\slash",c="new\\nline" , } 7 1700000000000\r\n' + "y 1e3\r\n# a comment\r\n",
    );
    expect(samples(e, "x")[0]?.labels).toEqual({ a: 'q"uote', b: "back\\slash", c: "new\nline" });
    expect(samples(e, "x")[0]?.value).toBe(7);
    expect(e.get("y")?.type).toBe("untyped");
    expect(total(e, "y")).toBe(1000);
  });

  it("keeps a label value holding braces and commas", () => {
    const e = parsePrometheus('m{path="/a,{b}"} 1\n');
    expect(samples(e, "m")[0]?.labels.path).toBe("/a,{b}");
  });

  it("reports the line of a malformed sample", () => {
    expect(() => parsePrometheus("ok 1\nbad{x=1} 2\n")).toThrow(PromParseError);
    expect(() => parsePrometheus("ok 1\nbad{x=1} 2\n")).toThrow(/line 2/);
    expect(() => parsePrometheus("novalue\n")).toThrow(/missing value/);
    expect(() => parsePrometheus("# TYPE x weird\n")).toThrow(/unknown metric type/);
    expect(() => parsePrometheus('x{a="open} 1\n')).toThrow(/unterminated/);
  });

  it("parses an empty exposition", () => {
    expect(parsePrometheus("").size).toBe(0);
  });
});

describe("queries", () => {
  const exp = parsePrometheus(TEXT);

  it("sums by a label", () => {
    const byRoute = sumBy(exp, "facekey_http_requests_total", "route");
    expect(byRoute.get("/healthz")).toBe(10);
    expect(byRoute.get("/v1/score")).toBe(5);
    expect(sumBy(exp, "facekey_spoof_detected_total", "route").get("")).toBe(2);
  });

  it("collects histograms by label with sorted buckets", () => {
    const h = histogramsBy(exp, "facekey_http_request_duration_seconds", "route").get("/v1/score");
    expect(h?.count).toBe(5);
    expect(h?.sum).toBeCloseTo(0.05);
    expect(h?.buckets.map((b) => b.le)).toEqual([0.001, 0.01, 0.1, Infinity]);
  });
});

describe("histogramQuantile", () => {
  const buckets = [
    { le: 0.001, count: 2 },
    { le: 0.01, count: 4 },
    { le: 0.1, count: 5 },
    { le: Infinity, count: 5 },
  ];

  it("interpolates linearly inside the bucket holding the rank", () => {
    // rank 2.5 of 5 falls in (0.001, 0.01] which holds observations 3..4.
    expect(histogramQuantile(0.5, buckets)).toBeCloseTo(0.001 + 0.009 * 0.25, 12);
    // rank 4.95 falls in (0.01, 0.1].
    expect(histogramQuantile(0.99, buckets)).toBeCloseTo(0.01 + 0.09 * 0.95, 12);
    // The first bucket starts at zero.
    expect(histogramQuantile(0.2, buckets)).toBeCloseTo(0.0005, 12);
  });

  it("answers the highest finite bound when the rank is in +Inf", () => {
    const b = [
      { le: 0.1, count: 1 },
      { le: Infinity, count: 10 },
    ];
    expect(histogramQuantile(0.99, b)).toBe(0.1);
  });

  it("is NaN without observations and clamps q", () => {
    expect(
      histogramQuantile(0.5, [
        { le: 1, count: 0 },
        { le: Infinity, count: 0 },
      ]),
    ).toBeNaN();
    expect(histogramQuantile(0.5, [])).toBeNaN();
    expect(histogramQuantile(-1, buckets)).toBe(-Infinity);
    expect(histogramQuantile(2, buckets)).toBe(Infinity);
  });

  it("accepts unsorted buckets", () => {
    expect(histogramQuantile(0.5, [...buckets].reverse())).toBeCloseTo(0.00325, 12);
  });
});

describe("rates", () => {
  it("divides the increase by the interval and survives resets", () => {
    expect(counterRate(10, 25, 5)).toBe(3);
    expect(counterRate(100, 4, 2)).toBe(2);
    expect(counterRate(1, 2, 0)).toBeNaN();
  });

  it("computes rates per key, new keys from zero", () => {
    const r = ratesBy(
      new Map([["a", 1]]),
      new Map([
        ["a", 5],
        ["b", 2],
      ]),
      2,
    );
    expect(r.get("a")).toBe(2);
    expect(r.get("b")).toBe(1);
  });

  it("subtracts histograms for a recent window", () => {
    const prev = {
      buckets: [
        { le: 1, count: 1 },
        { le: Infinity, count: 2 },
      ],
      sum: 3,
      count: 2,
    };
    const curr = {
      buckets: [
        { le: 1, count: 4 },
        { le: Infinity, count: 6 },
      ],
      sum: 10,
      count: 6,
    };
    expect(histogramDelta(prev, curr)).toEqual({
      buckets: [
        { le: 1, count: 3 },
        { le: Infinity, count: 4 },
      ],
      sum: 7,
      count: 4,
    });
    expect(histogramDelta(undefined, curr)).toBe(curr);
    expect(histogramDelta(curr, prev)).toBe(prev);
  });
});
