"""Sequential /v1/verify probe: send the same request N times, one at a time, and print the
median client latency, the server's own stage split (timings_ms) and the pure model inference
time (inference_ms, the floor) as JSON. Standard library only.

usage: probe.py URL BODY_FILE N
"""

import json
import os
import statistics
import sys
import time
import urllib.request


def main() -> None:
    url, body_file, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    body = open(body_file, "rb").read()
    client, stages, floors = [], {}, []
    models = {}
    for _ in range(n):
        headers = {"Content-Type": "application/json"}
        if os.environ.get("WRK_AUTH"):
            headers["Authorization"] = os.environ["WRK_AUTH"]
        req = urllib.request.Request(url, data=body, headers=headers)
        t = time.perf_counter()
        with urllib.request.urlopen(req) as r:
            v = json.load(r)
        client.append((time.perf_counter() - t) * 1000)
        for k, ms in v["timings_ms"].items():
            stages.setdefault(k, []).append(ms)
        inf = v["inference_ms"]
        per_model = {k: x for k, x in inf.items() if k != "pnet_runs" and x is not None}
        for k, x in per_model.items():
            models.setdefault(k, []).append(x)
        floors.append(sum(per_model.values()))
    med = statistics.median
    out = {
        "requests": n,
        "client_ms": {"p50": med(client), "p99": sorted(client)[max(0, int(0.99 * n) - 1)]},
        "stages_ms_median": {k: round(med(v), 3) for k, v in stages.items()},
        "models_ms_median": {k: round(med(v), 3) for k, v in models.items()},
        "floor_ms": {"p50": med(floors)},
        "decision_sample": v["decision"],
        "liveness_models": [k for k, x in v["inference_ms"].items() if k in ("dtn", "minifas", "human_liveness") and x],
    }
    out["ratio_p50_client_to_floor"] = out["client_ms"]["p50"] / out["floor_ms"]["p50"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
