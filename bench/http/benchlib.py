#!/usr/bin/env python3
"""Helpers for bench/http/run.sh (standard library only).

  benchlib.py freeport
  benchlib.py wait URL PID [SECONDS]        poll URL until 200, fail if PID dies
  benchlib.py parity RUST_URL PEER_URL      both answer the contract identically
  benchlib.py measure NAME URL PID OUT.json -- wrk ARGS...
                                            run wrk, record its output, the server's CPU
                                            (PID and its descendants), wrk's CPU and the
                                            machine's CPU over the run
  benchlib.py report OUT_DIR [JSON_PATH]    table, ratio, target verdict, optional JSON
"""

from __future__ import annotations

import json
import math
import os
import re
import resource
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
NPROC = os.cpu_count() or 1


def freeport() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        print(s.getsockname()[1])


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def wait(url: str, pid: str, seconds: str = "60") -> None:
    deadline = time.monotonic() + float(seconds)
    while time.monotonic() < deadline:
        if not alive(int(pid)):
            sys.exit(f"server pid {pid} exited before answering {url}")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    sys.exit(f"{url} did not answer 200 within {seconds}s")


def post(url: str, body: bytes, ctype: str = "application/json") -> tuple[int, dict]:
    headers = {"Content-Type": ctype}
    if os.environ.get("WRK_AUTH"):  # the runtime's API key header; the peer ignores it
        headers["Authorization"] = os.environ["WRK_AUTH"]
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def close(a, b, tol: float = 1e-9) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y, tol) for x, y in zip(a, b))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(close(a[k], b[k], tol) for k in a)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(a, b, rel_tol=0, abs_tol=tol)
    return a == b


def parity(rust_url: str, peer_url: str) -> None:
    """Same answers (numbers within 1e-9) on the worked example and the contract's edges."""
    cases = [
        ("worked example", b'{"features":[1,0.5,-1]}', "application/json", "full"),
        ("with layers", b'{"features":[1,0.5,-1],"include_layers":true}', "application/json", "full"),
        ("reject side", b'{"features":[-1,-1,1]}', "application/json", "full"),
        ("batch", b'{"batch":[[1,0.5,-1],[0,0,0],[-1,-1,1]]}', "application/json", "full"),
        ("wrong feature count", b'{"features":[1,0.5]}', "application/json", "error"),
        ("too large a feature", b'{"features":[1,0.5,2e6]}', "application/json", "error"),
        ("unknown field", b'{"features":[1,0.5,-1],"x":1}', "application/json", "status"),
        ("empty batch", b'{"batch":[]}', "application/json", "error"),
        ("invalid JSON", b'{"features":', "application/json", "error"),
        ("wrong content type", b'{"features":[1,0.5,-1]}', "text/plain", "error"),
    ]
    failures = 0
    for name, body, ctype, how in cases:
        (rs, rb), (ps, pb) = post(rust_url, body, ctype), post(peer_url, body, ctype)
        if how == "full":
            same = rs == ps == 200 and close(rb, pb)
        elif how == "error":
            same = rs == ps and rs >= 400 and rb["error"]["code"] == pb["error"]["code"]
        else:
            same = rs == ps and rs >= 400
        detail = f"rust {rs}, peer {ps}"
        if name == "worked example" and rs == ps == 200:
            detail += f"; p = {rb['probability']!r} vs {pb['probability']!r}, {rb['decision']}/{pb['decision']}"
        if how == "error" and rs >= 400 and ps >= 400:
            detail += f"; code {rb['error']['code']} / {pb['error']['code']}"
        print(f"  {'ok  ' if same else 'DIFF'} {name:22s} {detail}")
        if not same:
            failures += 1
            print(f"       rust: {json.dumps(rb)}\n       peer: {json.dumps(pb)}")
    if failures:
        sys.exit(f"parity check failed in {failures} case(s): the two servers do not serve the same contract")


def descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def tree_cpu_seconds(pid: int) -> dict[int, float]:
    """utime + stime of `pid` and every live descendant, per pid."""
    out = {}
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            out[p] = (int(fields[11]) + int(fields[12])) / CLK_TCK
        except (OSError, IndexError, ValueError):
            pass
    return out


def machine_jiffies() -> tuple[int, int]:
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v[:8]) - idle, sum(v[:8])


def loadavg() -> list[float]:
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def background_cores(seconds: float = 2.0) -> float:
    """Cores busy while both servers sit idle: other people's work on the machine."""
    b0, t0 = machine_jiffies()
    time.sleep(seconds)
    b1, t1 = machine_jiffies()
    return (b1 - b0) / max(t1 - t0, 1) * NPROC


def measure(name: str, url: str, pid: str, out: str, wrk_cmd: list[str]) -> None:
    background = background_cores()
    server_before = tree_cpu_seconds(int(pid))
    busy0, total0 = machine_jiffies()
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    load_before = loadavg()
    t0 = time.monotonic()
    proc = subprocess.run(wrk_cmd + [url], capture_output=True, text=True)
    wall = time.monotonic() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    busy1, total1 = machine_jiffies()
    server_after = tree_cpu_seconds(int(pid))
    sys.stdout.write(proc.stdout)
    sys.stderr.write(proc.stderr)
    if proc.returncode != 0:
        sys.exit(f"wrk failed against {name} (exit {proc.returncode})")
    m = re.search(r"^FACEKEY_WRK (\{.*\})$", proc.stdout, re.M)
    if not m:
        sys.exit(f"no FACEKEY_WRK line in wrk's output for {name}: is score.lua in use?")
    stats = json.loads(m.group(1))
    text_rps = re.search(r"^Requests/sec:\s+([\d.]+)", proc.stdout, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", proc.stdout)
    server_cpu = sum(server_after.get(p, 0.0) - server_before.get(p, 0.0) for p in server_after)
    wrk_cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    machine_cores = (busy1 - busy0) / max(total1 - total0, 1) * NPROC
    result = {
        "name": name,
        "url": url,
        "requests": stats["requests"],
        "duration_s": stats["duration_us"] / 1e6,
        "rps": stats["requests"] / (stats["duration_us"] / 1e6),
        "rps_wrk_text": float(text_rps.group(1)) if text_rps else None,
        "latency_ms": {k: v / 1000.0 for k, v in stats["latency_us"].items()},
        "errors": stats["errors"],
        "non_2xx": int(non2xx.group(1)) if non2xx else 0,
        "server_processes": len(server_after),
        "server_cpu_cores": server_cpu / wall,
        "wrk_cpu_cores": wrk_cpu / wall,
        "machine_busy_cores": machine_cores,
        # Busy CPU charged to neither: the kernel's loopback TCP work (softirq, not charged to
        # a process) plus any other process on the machine.
        "other_cpu_cores": max(machine_cores - server_cpu / wall - wrk_cpu / wall, 0.0),
        "background_cores_before": background,
        "loadavg_before": load_before,
        "wrk_stdout": proc.stdout,
    }
    with open(out, "w") as f:
        json.dump(result, f, indent=2)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown"


def report(out_dir: str, json_path: str = "") -> None:
    with open(os.path.join(out_dir, "meta.json")) as f:
        meta = json.load(f)
    runs: dict[str, list[dict]] = {"rust": [], "peer": []}
    for fn in sorted(os.listdir(out_dir)):
        m = re.match(r"^(rust|peer)-(\d+)\.json$", fn)
        if m:
            with open(os.path.join(out_dir, fn)) as f:
                runs[m.group(1)].append(json.load(f))

    def agg(rs: list[dict]) -> dict:
        med = lambda xs: statistics.median(xs)  # noqa: E731
        return {
            "rounds": len(rs),
            "rps": med([r["rps"] for r in rs]),
            "p50_ms": med([r["latency_ms"]["p50"] for r in rs]),
            "p90_ms": med([r["latency_ms"]["p90"] for r in rs]),
            "p99_ms": med([r["latency_ms"]["p99"] for r in rs]),
            "max_ms": max(r["latency_ms"]["max"] for r in rs),
            "errors": sum(sum(r["errors"].values()) for r in rs),
            "non_2xx": sum(r["non_2xx"] for r in rs),
            "server_processes": rs[0]["server_processes"],
            "server_cpu_cores": med([r["server_cpu_cores"] for r in rs]),
            "wrk_cpu_cores": med([r["wrk_cpu_cores"] for r in rs]),
            "other_cpu_cores": med([r["other_cpu_cores"] for r in rs]),
            "background_cores_before": max(r["background_cores_before"] for r in rs),
            "rps_per_server_core": med([r["rps"] / max(r["server_cpu_cores"], 1e-9) for r in rs]),
            "per_round_rps": [round(r["rps"], 1) for r in rs],
        }

    rust, peer = agg(runs["rust"]), agg(runs["peer"])
    ratio = rust["rps"] / peer["rps"] if peer["rps"] else float("inf")
    p99_ratio = peer["p99_ms"] / rust["p99_ms"] if rust["p99_ms"] else float("inf")
    clean = rust["errors"] == rust["non_2xx"] == peer["errors"] == peer["non_2xx"] == 0
    met = ratio >= 10 and rust["p99_ms"] < peer["p99_ms"]

    print()
    print(f"POST /v1/score  wrk -t{meta['threads']} -c{meta['connections']} -d{meta['duration']} "
          f"(warm-up {meta['warmup']}), rounds: {meta['rounds']}, body {meta['body']}")
    print(f"machine: {meta['nproc']} cores, {meta['cpu_model']}; load average before the load "
          f"{' '.join(f'{x:.2f}' for x in meta['loadavg_start'])} (includes this script's build/install)")
    print(f"peer: FastAPI + uvicorn ({meta['peer_workers']} workers) + numpy; "
          f"rust: facekey-runtime (tokio, {meta['nproc']} worker threads)")
    print()
    hdr = f"{'server':<8}{'req/s':>11}{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'max ms':>9}" \
          f"{'errors':>8}{'srv CPU':>9}{'wrk CPU':>9}{'rest':>7}{'req/s/core':>12}"
    print(hdr)
    print("-" * len(hdr))
    for name, a in (("rust", rust), ("peer", peer)):
        print(f"{name:<8}{a['rps']:>11.0f}{a['p50_ms']:>9.2f}{a['p90_ms']:>9.2f}{a['p99_ms']:>9.2f}"
              f"{a['max_ms']:>9.1f}{a['errors'] + a['non_2xx']:>8d}{a['server_cpu_cores']:>9.2f}"
              f"{a['wrk_cpu_cores']:>9.2f}{a['other_cpu_cores']:>7.2f}{a['rps_per_server_core']:>12.0f}")
    print()
    print(f"throughput ratio rust/peer: {ratio:.1f}x    p99: rust {rust['p99_ms']:.2f} ms vs peer "
          f"{peer['p99_ms']:.2f} ms (peer/rust {p99_ratio:.1f}x)")
    print(f"target (>= 10x peer req/s at a lower p99): {'MET' if met else 'NOT MET'}")
    background = max(rust["background_cores_before"], peer["background_cores_before"])
    print("CPU columns are cores busy over the run (of "
          f"{meta['nproc']}): the server's processes, wrk's, and the rest of the machine (the kernel's")
    print("loopback TCP work, which is charged to no process, plus anything else running).")
    print(f"Background load (machine busy with both servers idle, 2 s before each run): "
          f"up to {background:.2f} cores.")
    print("Caveat: wrk runs on the same cores as the server under test, so neither server gets the "
          "whole machine; req/s/core divides by the server's own CPU use.")
    if not clean:
        print("WARNING: socket errors or non-2xx responses during the load: the figures are not valid.")
    if background > 0.25:
        print(f"WARNING: the machine was busy with other work ({background:.2f} cores busy while the "
              "servers were idle): treat these figures as provisional and re-run on a quiet machine.")

    if json_path:
        os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
        summary = {
            "date": meta["date"],
            "machine": {"nproc": meta["nproc"], "cpu_model": meta["cpu_model"],
                        "loadavg_start": meta["loadavg_start"],
                        "background_cores_before_runs": background},
            "settings": {k: meta[k] for k in ("threads", "connections", "duration", "warmup", "rounds",
                                              "peer_workers", "body")},
            "versions": meta.get("versions", {}),
            "rust": rust,
            "peer": peer,
            "rps_ratio_rust_over_peer": ratio,
            "p99_ratio_peer_over_rust": p99_ratio,
            "target_met": met,
            "valid": clean,
            "runs": {k: [{x: r[x] for x in r if x != "wrk_stdout"} for r in v] for k, v in runs.items()},
        }
        with open(json_path, "w") as f:
            json.dump(summary, f, indent=2)
            f.write("\n")
        print(f"summary written to {json_path}")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit(__doc__)
    cmd, args = argv[0], argv[1:]
    if cmd == "freeport":
        freeport()
    elif cmd == "wait":
        wait(*args)
    elif cmd == "parity":
        parity(*args)
    elif cmd == "measure":
        sep = args.index("--")
        measure(*args[:sep], wrk_cmd=args[sep + 1:])
    elif cmd == "report":
        report(*args)
    elif cmd == "meta":
        # meta OUT.json key=value...: machine facts plus the given settings
        out, kv = args[0], dict(a.split("=", 1) for a in args[1:])
        kv.update(date=time.strftime("%Y-%m-%dT%H:%M:%S%z"), nproc=NPROC, cpu_model=cpu_model(),
                  loadavg_start=loadavg())
        if "versions" in kv:
            kv["versions"] = json.loads(kv["versions"])
        with open(out, "w") as f:
            json.dump(kv, f, indent=2)
    else:
        sys.exit(f"unknown command {cmd!r}\n{__doc__}")


if __name__ == "__main__":
    main(sys.argv[1:])
