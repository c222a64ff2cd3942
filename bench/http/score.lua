-- wrk script: POST the seed's worked example to /v1/score as JSON.
-- Usage: wrk -t2 -c64 -d20s --latency -s bench/http/score.lua http://127.0.0.1:PORT/v1/score
-- Override the body with WRK_BODY='{"features":[...]}' in the environment.

wrk.method = "POST"
wrk.body = os.getenv("WRK_BODY") or '{"features":[1,0.5,-1]}'
wrk.headers["Content-Type"] = "application/json"
-- The runtime's API key header ("Bearer <key>"), set by run.sh.
if os.getenv("WRK_AUTH") then wrk.headers["Authorization"] = os.getenv("WRK_AUTH") end

-- One machine-readable line after wrk's own report, read by bench/http/run.sh.
-- Latencies are in microseconds.
function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "FACEKEY_WRK {\"requests\":%d,\"duration_us\":%d,\"bytes\":%d," ..
      "\"errors\":{\"connect\":%d,\"read\":%d,\"write\":%d,\"status\":%d,\"timeout\":%d}," ..
      "\"latency_us\":{\"mean\":%.1f,\"stdev\":%.1f,\"max\":%d,\"p50\":%d,\"p90\":%d,\"p99\":%d,\"p999\":%d}}\n",
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency.stdev, latency.max,
      latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
