import { describe, expect, it } from "vitest";
import { parsePrometheus } from "./prom";
import { summarize } from "./summary";

function scrape(at: number, text: string) {
  return { at, exposition: parsePrometheus(text) };
}

const FIRST = `# TYPE facekey_http_requests_total counter
facekey_http_requests_total{route="/v1/score",method="POST",status="200"} 10
facekey_http_requests_total{route="/healthz",method="GET",status="200"} 2
# TYPE facekey_http_request_duration_seconds histogram
facekey_http_request_duration_seconds_bucket{route="/v1/score",le="0.001"} 10
facekey_http_request_duration_seconds_bucket{route="/v1/score",le="0.01"} 10
facekey_http_request_duration_seconds_bucket{route="/v1/score",le="+Inf"} 10
facekey_http_request_duration_seconds_sum{route="/v1/score"} 0.005
facekey_http_request_duration_seconds_count{route="/v1/score"} 10
# TYPE facekey_decisions_total counter
facekey_decisions_total{outcome="reject"} 1
facekey_decisions_total{outcome="accept"} 9
# TYPE facekey_spoof_detected_total counter
facekey_spoof_detected_total 0
# TYPE facekey_inference_duration_seconds histogram
facekey_inference_duration_seconds_bucket{model="fusion",le="0.00001"} 4
facekey_inference_duration_seconds_bucket{model="fusion",le="0.0001"} 10
facekey_inference_duration_seconds_bucket{model="fusion",le="+Inf"} 10
facekey_inference_duration_seconds_sum{model="fusion"} 0.0003
facekey_inference_duration_seconds_count{model="fusion"} 10
`;

const SECOND = FIRST.replace('status="200"} 10', 'status="200"} 30')
  .replace('le="0.001"} 10', 'le="0.001"} 10')
  .replace('route="/v1/score",le="0.01"} 10', 'route="/v1/score",le="0.01"} 30')
  .replace('route="/v1/score",le="+Inf"} 10', 'route="/v1/score",le="+Inf"} 30')
  .replace('_count{route="/v1/score"} 10', '_count{route="/v1/score"} 30')
  .replace("facekey_spoof_detected_total 0", "facekey_spoof_detected_total 3");

describe("summarize", () => {
  it("summarises one scrape with since-start quantiles", () => {
    const s = summarize(scrape(1000, FIRST));
    expect(s.totalRequests).toBe(12);
    expect(s.totalRate).toBeUndefined();
    expect(s.windowed).toBe(false);
    expect(s.routes.map((r) => r.route)).toEqual(["/v1/score", "/healthz"]);
    const score = s.routes[0];
    expect(score?.rate).toBeUndefined();
    expect(score?.p50).toBeCloseTo(0.0005, 12);
    expect(s.routes[1]?.p50).toBeNaN();
    expect(s.decisions).toEqual([
      ["accept", 9],
      ["reject", 1],
    ]);
    expect(s.spoofs).toBe(0);
    expect(s.models).toHaveLength(1);
    expect(s.models[0]?.name).toBe("fusion");
    expect(s.stages).toEqual([]);
    expect(s.models[0]?.meanSeconds).toBeCloseTo(0.00003, 12);
    expect(s.models[0]?.p50).toBeCloseTo(0.00001 + 0.00009 * (1 / 6), 12);
  });

  it("reads pipeline stage latency", () => {
    const s = summarize(
      scrape(
        0,
        `# TYPE facekey_stage_duration_seconds histogram
facekey_stage_duration_seconds_bucket{stage="detect",le="0.01"} 1
facekey_stage_duration_seconds_bucket{stage="detect",le="0.1"} 3
facekey_stage_duration_seconds_bucket{stage="detect",le="+Inf"} 3
facekey_stage_duration_seconds_sum{stage="detect"} 0.12
facekey_stage_duration_seconds_count{stage="detect"} 3
`,
      ),
    );
    expect(s.stages.map((r) => r.name)).toEqual(["detect"]);
    expect(s.stages[0]?.meanSeconds).toBeCloseTo(0.04, 12);
    expect(s.stages[0]?.p50).toBeCloseTo(0.01 + 0.09 * 0.25, 12);
  });

  it("computes rates and recent-window quantiles from two scrapes", () => {
    const s = summarize(scrape(5000, SECOND), scrape(1000, FIRST));
    expect(s.windowed).toBe(true);
    expect(s.routes[0]?.rate).toBe(5);
    expect(s.routes[1]?.rate).toBe(0);
    expect(s.totalRate).toBe(5);
    // The 20 new requests all fell in (0.001, 0.01].
    expect(s.routes[0]?.p50).toBeCloseTo(0.0055, 12);
    expect(s.spoofs).toBe(3);
  });

  it("handles an empty scrape", () => {
    const s = summarize(scrape(0, ""));
    expect(s).toEqual({
      routes: [],
      totalRequests: 0,
      totalRate: undefined,
      decisions: [],
      spoofs: 0,
      models: [],
      stages: [],
      windowed: false,
    });
  });
});
