-- wrk script: POST /v1/verify with a JSON body read from the file named by WRK_BODY_FILE
-- ({"subject": "<id>", "image": "<base64 JPEG>"}), so every request carries the full image.
-- Usage: WRK_BODY_FILE=body.json wrk -t1 -c1 -d20s --latency -s verify.lua http://HOST:PORT/v1/verify

local f = assert(io.open(os.getenv("WRK_BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- The runtime's API key header ("Bearer <key>"), set by run.sh.
if os.getenv("WRK_AUTH") then wrk.headers["Authorization"] = os.getenv("WRK_AUTH") end

local non200 = 0
function response(status, headers, body)
   if status ~= 200 then non200 = non200 + 1 end
end

-- One machine-readable line, latencies in microseconds.
function done(summary, latency, requests)
   io.write(string.format(
      "FACEKEY_WRK {\"requests\":%d,\"duration_us\":%d,\"non200\":%d,\"errors\":%d," ..
      "\"latency_us\":{\"mean\":%.1f,\"p50\":%d,\"p90\":%d,\"p99\":%d,\"max\":%d}}\n",
      summary.requests, summary.duration, non200,
      summary.errors.connect + summary.errors.read + summary.errors.write +
      summary.errors.status + summary.errors.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max))
end
