"""Open-loop load for POST /v1/verify: requests are sent at a fixed rate whatever the server
answers (unlike wrk, a closed-loop generator that slows down with the server and so never
offers 4x a rate), each on its own connection, and every request's status and latency is kept,
so accepted answers and 503s are measured apart. The server's RSS is sampled every second.
Standard library only.

usage: loadgen.py phases.json
  phases.json: {"url", "body_file", "auth", "pid", "phases": [{"name", "rate", "seconds",
                "closed": <connections, optional: closed loop instead of a rate>,
                "streams": <optional: [{"name", "rate", "auth"}] sent side by side instead,
                            each with its own API key and summary>}],
                "out": <results file>}
Prints one JSON summary per phase and writes them all, with the RSS series, to "out".
429s (a key refused beyond its share) are counted apart from 503s and from errors.
"""

import asyncio
import json
import statistics
import sys
import time
import urllib.parse


def pct(xs, p):
    if not xs:
        return None
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, int(round(p / 100 * len(xs))) - 1))]


async def one(host, port, request):
    t = time.perf_counter()
    try:
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(request)
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = 0
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":", 1)[1])
        await reader.readexactly(length)
        writer.close()
        return status, (time.perf_counter() - t) * 1000
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        return 0, (time.perf_counter() - t) * 1000


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def sampler(pid, t0, series, stop):
    while not stop.is_set():
        series.append((round(time.perf_counter() - t0, 1), rss_kib(pid)))
        try:
            await asyncio.wait_for(stop.wait(), 1.0)
        except asyncio.TimeoutError:
            pass


def request_for(url, body, auth):
    u = urllib.parse.urlsplit(url)
    return (
        f"POST {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nContent-Type: application/json\r\n"
        f"Authorization: {auth}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


async def streams(host, port, cfg, body, spec, t0):
    """The phase's streams side by side, each summarised as a phase of its own."""
    parts = [
        phase(host, port, request_for(cfg["url"], body, st["auth"]),
              {"name": st["name"], "rate": st["rate"], "seconds": spec["seconds"]}, t0)
        for st in spec["streams"]
    ]
    done = await asyncio.gather(*parts)
    return {"name": spec["name"], "seconds": spec["seconds"], "streams": done}


async def phase(host, port, request, spec, t0):
    results = []  # (send time since phase start, status, latency ms)
    start = time.perf_counter()
    tasks = []

    async def fire(at):
        status, ms = await one(host, port, request)
        results.append((at, status, ms))

    if spec.get("closed"):
        async def loop():
            while time.perf_counter() - start < spec["seconds"]:
                await fire(time.perf_counter() - start)
        await asyncio.gather(*(loop() for _ in range(spec["closed"])))
    else:
        interval = 1.0 / spec["rate"]
        n = int(spec["seconds"] * spec["rate"])
        for i in range(n):
            at = i * interval
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(fire(at)))
        await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - start
    ok = [ms for _, s, ms in results if s == 200]
    shed = [ms for _, s, ms in results if s == 503]
    refused = [ms for _, s, ms in results if s == 429]
    other = [s for _, s, _ in results if s not in (200, 503, 429)]
    # Accepted throughput per 5 s window, to see recovery and stability.
    windows = {}
    for at, s, _ in results:
        if s == 200:
            windows[int(at // 5)] = windows.get(int(at // 5), 0) + 1
    first5 = [ms for at, s, ms in results if s == 200 and at < 5]
    return {
        "name": spec["name"],
        "offered_rate": round(len(results) / spec["seconds"], 2),
        "target_rate": spec.get("rate"),
        "seconds": round(elapsed, 1),
        "requests": len(results),
        "accepted": len(ok),
        "accepted_rps": round(len(ok) / elapsed, 2),
        "shed_503": len(shed),
        "refused_429": len(refused),
        "refused_429_ms": {"p50": pct(refused, 50), "p99": pct(refused, 99)},
        "errors": len(other),
        "error_statuses": sorted(set(other)),
        "accepted_ms": {"p50": pct(ok, 50), "p90": pct(ok, 90), "p99": pct(ok, 99), "max": max(ok) if ok else None},
        "accepted_first_5s_ms": {"p50": pct(first5, 50), "p99": pct(first5, 99), "n": len(first5)},
        "shed_ms": {"p50": pct(shed, 50), "p99": pct(shed, 99), "max": max(shed) if shed else None},
        "accepted_per_5s": [windows.get(i, 0) for i in range(int(spec["seconds"] // 5))],
    }


async def main(cfg):
    u = urllib.parse.urlsplit(cfg["url"])
    body = open(cfg["body_file"], "rb").read()
    request = request_for(cfg["url"], body, cfg["auth"])
    t0 = time.perf_counter()
    series, stop = [], asyncio.Event()
    rss_task = asyncio.create_task(sampler(cfg["pid"], t0, series, stop))
    out = []
    for spec in cfg["phases"]:
        began = round(time.perf_counter() - t0, 1)
        if spec.get("streams"):
            r = await streams(u.hostname, u.port, cfg, body, spec, t0)
        else:
            r = await phase(u.hostname, u.port, request, spec, t0)
        r["began_at_s"] = began
        print(json.dumps(r), flush=True)
        out.append(r)
    stop.set()
    await rss_task
    json.dump({"phases": out, "rss_kib": series}, open(cfg["out"], "w"))


if __name__ == "__main__":
    asyncio.run(main(json.load(open(sys.argv[1]))))
