/** What the metrics view shows, computed from one or two scrapes of `/metrics`. */

import { type Exposition, histogramDelta, histogramQuantile, histogramsBy, ratesBy, sumBy, total } from "./prom";

export const METRIC = {
  requests: "facekey_http_requests_total",
  requestDuration: "facekey_http_request_duration_seconds",
  inferenceDuration: "facekey_inference_duration_seconds",
  stageDuration: "facekey_stage_duration_seconds",
  decisions: "facekey_decisions_total",
  spoofs: "facekey_spoof_detected_total",
} as const;

export interface Scrape {
  /** Milliseconds since the epoch when the scrape finished. */
  at: number;
  exposition: Exposition;
}

export interface RouteRow {
  route: string;
  requests: number;
  /** Requests per second since the previous scrape; undefined on the first scrape. */
  rate?: number;
  /** Latency quantiles in seconds over the last interval, or since start without one. */
  p50: number;
  p99: number;
}

export interface LatencyRow {
  /** The label value: a model or a pipeline stage. */
  name: string;
  count: number;
  meanSeconds: number;
  p50: number;
  p99: number;
}

export interface Summary {
  routes: RouteRow[];
  totalRequests: number;
  totalRate?: number;
  decisions: [string, number][];
  spoofs: number;
  models: LatencyRow[];
  stages: LatencyRow[];
  /** True when quantiles cover only the interval since the previous scrape. */
  windowed: boolean;
}

/** Count, mean and quantiles (seconds, since start) of each histogram of `name` by `label`. */
function latencyRows(exp: Exposition, name: string, label: string): LatencyRow[] {
  return [...histogramsBy(exp, name, label).entries()]
    .map(([key, h]): LatencyRow => ({
      name: key,
      count: h.count,
      meanSeconds: h.count > 0 ? h.sum / h.count : NaN,
      p50: histogramQuantile(0.5, h.buckets),
      p99: histogramQuantile(0.99, h.buckets),
    }))
    .sort((a, b) => a.name.localeCompare(b.name));
}

/** Summarise `current`, with rates and recent-window quantiles when `previous` is given. */
export function summarize(current: Scrape, previous?: Scrape): Summary {
  const cur = current.exposition;
  const prev = previous?.exposition;
  const seconds = previous ? (current.at - previous.at) / 1000 : 0;
  const counts = sumBy(cur, METRIC.requests, "route");
  const rates = prev && seconds > 0 ? ratesBy(sumBy(prev, METRIC.requests, "route"), counts, seconds) : undefined;
  const hists = histogramsBy(cur, METRIC.requestDuration, "route");
  const prevHists = prev ? histogramsBy(prev, METRIC.requestDuration, "route") : undefined;
  const windowed = prevHists !== undefined;

  const routes = [...counts.entries()]
    .map(([route, requests]): RouteRow => {
      const h = hists.get(route);
      const recent = h && prevHists ? histogramDelta(prevHists.get(route), h) : h;
      const useRecent = recent && recent.count > 0 ? recent : h;
      return {
        route,
        requests,
        rate: rates?.get(route),
        p50: useRecent ? histogramQuantile(0.5, useRecent.buckets) : NaN,
        p99: useRecent ? histogramQuantile(0.99, useRecent.buckets) : NaN,
      };
    })
    .sort((a, b) => b.requests - a.requests || a.route.localeCompare(b.route));

  const models = latencyRows(cur, METRIC.inferenceDuration, "model");
  const stages = latencyRows(cur, METRIC.stageDuration, "stage");

  const decisions = [...sumBy(cur, METRIC.decisions, "outcome").entries()].sort(([a], [b]) => a.localeCompare(b));
  const totalRate = rates ? [...rates.values()].reduce((a, b) => a + b, 0) : undefined;

  return {
    routes,
    totalRequests: [...counts.values()].reduce((a, b) => a + b, 0),
    totalRate,
    decisions,
    spoofs: total(cur, METRIC.spoofs),
    models,
    stages,
    windowed,
  };
}
