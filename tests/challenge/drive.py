#!/usr/bin/env python3
"""Drives the runtime's challenge-session API with synthetic clips from `facekey-eval sequences`.

For each case: open a session (bound to the subject), read its random challenge, render a clip of
the requested kind performing (or faking) exactly that challenge, send its frames in real time
(client timestamps = wall clock, up to 4 frames per call, paced by the clip's timestamps), then
read the session. Genuine: the session must pass and verify the subject once (a second use is
409 session_used). Attacks (static photo, flat print): the session must not pass, and verify with
it must be refused with 409 session_not_passed (or the session failed).

Usage: drive.py URL SUBJECT EVAL_BIN WORKDIR KIND [KIND...]   (API key in FACEKEY_API_KEY)
Standard library only.
"""
import base64
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request

URL, SUBJECT, EVAL_BIN, WORK = sys.argv[1:5]
KINDS = sys.argv[5:]
KEY = os.environ["FACEKEY_API_KEY"]
FPS = os.environ.get("CHALLENGE_FPS", "8")
FRAME = os.environ.get("CHALLENGE_FRAME", "640x480")


def call(method, path, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(URL + path, data=data, method=method)
    req.add_header("authorization", f"Bearer {KEY}")
    if data is not None:
        req.add_header("content-type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read() or b"null")
    except urllib.error.HTTPError as e:
        raw = e.read()
        try:
            return e.code, json.loads(raw)
        except ValueError:
            return e.code, raw.decode(errors="replace")


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def run_case(kind):
    status, session = call("POST", "/v1/liveness/sessions", {"subject": SUBJECT})
    if status != 201:
        fail(f"open session: {status} {session}")
    sid, challenge = session["id"], session["challenge"]
    max_frames = session.get("max_frames", 32)
    out = os.path.join(WORK, f"{kind}-{sid}")
    subprocess.run(
        [EVAL_BIN, "sequences", "--out", out, "--photos", "astronaut.png", "--kinds", kind,
         "--actions", ",".join(challenge), "--fps", FPS, "--frame", FRAME, "--seed", str(int(time.time()))],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    with open(os.path.join(out, "manifest.json")) as f:
        clip = json.load(f)["sequences"][0]
    frames = list(zip(clip["frames"], clip["timestamps_ms"]))[:max_frames]
    start = time.time() * 1000.0
    base = int(start)
    i, last = 0, None
    while i < len(frames):
        # Wait until the next frame's capture time, then send what is due (at most 4).
        due_at = start + frames[i][1]
        time.sleep(max(0.0, (due_at - time.time() * 1000.0) / 1000.0))
        now = time.time() * 1000.0
        batch = []
        while i < len(frames) and len(batch) < 4 and start + frames[i][1] <= now + 1:
            path, ts = frames[i]
            with open(os.path.join(out, path), "rb") as f:
                batch.append({"image": base64.b64encode(f.read()).decode(), "timestamp_ms": base + ts})
            i += 1
        status, last = call("POST", f"/v1/liveness/sessions/{sid}/frames", {"frames": batch})
        if status != 200:
            fail(f"{kind}: frames: {status} {last}")
        if last["state"] in ("passed", "failed", "expired"):
            break
    status, final = call("GET", f"/v1/liveness/sessions/{sid}")
    if status != 200:
        fail(f"{kind}: get session: {status} {final}")
    seen = [a["action"] for a in final["actions"] if a["passed"]]
    print(f"{kind}: challenge {','.join(challenge)}, {i} frames sent, state {final['state']}, "
          f"actions seen {seen}, reasons {final.get('reasons')}")
    vstatus, verdict = call("POST", "/v1/verify", {"subject": SUBJECT, "session": sid})
    if kind == "genuine":
        if final["state"] != "passed" or final.get("live") is not True:
            fail(f"genuine clip did not pass: {final}")
        if vstatus != 200:
            fail(f"verify with a passed session: {vstatus} {verdict}")
        if verdict.get("match", {}).get("decision") != "accept" or verdict.get("decision") != "accept":
            fail(f"verify with the passed session did not accept the subject: {verdict}")
        again, body = call("POST", "/v1/verify", {"subject": SUBJECT, "session": sid})
        if again != 409 or "session_used" not in json.dumps(body):
            fail(f"second verify with the same session: {again} {body}")
        print(f"  verify: {vstatus} decision {verdict['decision']} (match distance "
              f"{verdict['match']['distance']:.3f}, features {verdict['features']}), second use: {again} session_used")
    else:
        if final["state"] == "passed" or final.get("live") is True:
            fail(f"{kind} attack passed: {final}")
        if vstatus == 200:
            fail(f"verify accepted a {kind} session: {verdict}")
        print(f"  verify: {vstatus} {verdict.get('error', verdict) if isinstance(verdict, dict) else verdict}")


for k in KINDS:
    run_case(k)
print("ok: challenge sessions end to end")
