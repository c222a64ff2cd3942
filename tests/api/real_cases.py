#!/usr/bin/env python3
"""Real requests through every operation of the runtime's OpenAPI document, each answer checked
against the document by schemathesis's own checks (status code documented, content type, body
schema, headers). Generated data never carries a real face, so the fuzzing run cannot reach the
success answers of verify, identify, liveness, enrolment or session frames; these cases do,
with the sample photos, in both request forms the document describes (JSON base64 and multipart).

Answers differ by the key's scope (without `admin`, verify, identify and liveness answer the
decision only), so the image operations also run with a `verify` key and enrolment with an
`enrol` key, and each of those answers is checked against the same document.

Usage: real_cases.py RUNTIME_URL FACES_DIR   (API keys: FACEKEY_API_KEY with `admin`,
       FACEKEY_KEY_VERIFY with `verify`, FACEKEY_KEY_ENROL with `enrol`)
"""
import base64
import os
import sys

import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

URL, FACES = sys.argv[1:3]
KEYS = {"admin": os.environ["FACEKEY_API_KEY"], "verify": os.environ["FACEKEY_KEY_VERIFY"],
        "enrol": os.environ["FACEKEY_KEY_ENROL"]}
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_headers_conformance, response_schema_conformance]
schema = schemathesis.openapi.from_url(f"{URL}/openapi.json")
seen = set()


def call(method, path, expect, *, path_parameters=None, query=None, body=None, media_type=None, auth=True,
         key="admin"):
    """One request with the `key` scope's key (none when not `auth`), its answer checked against
    the document; returns the JSON body."""
    op = schema[path][method]
    kwargs = {"path_parameters": path_parameters or {}, "query": query}
    if body is not None:
        kwargs["body"] = body
        kwargs["media_type"] = media_type or "application/json"
    case = op.Case(**kwargs)
    headers = {"Authorization": f"Bearer {KEYS[key]}"} if auth else {}
    response = case.call(base_url=URL, headers=headers)
    try:
        case.validate_response(response, checks=CHECKS, headers=headers)
    except Exception as e:  # schemathesis raises a FailureGroup naming every failed check
        sys.exit(f"FAIL: {method} {path} -> {response.status_code}: the answer does not conform to the document:\n{e}")
    if response.status_code != expect:
        sys.exit(f"FAIL: {method} {path}: {response.status_code} {response.text[:300]}, expected {expect}")
    seen.add((method, path))
    print(f"  {method:6} {path:42} {response.status_code} conforms ({key if auth else 'no'} key)")
    try:
        return response.json()
    except ValueError:
        return None


def photo(name):
    with open(os.path.join(FACES, name), "rb") as f:
        return f.read()


astronaut = photo("astronaut_640x480.jpg")
b64 = base64.b64encode(astronaut).decode()

call("GET", "/healthz", 200, auth=False)
call("GET", "/readyz", 200, auth=False)
call("GET", "/metrics", 200, auth=False)
call("GET", "/v1/auth/whoami", 200)
call("GET", "/v1/auth/whoami", 401, auth=False)
call("POST", "/v1/score", 200, body={"features": [0.9, 0.8, 0.7], "include_layers": True})
call("POST", "/v1/score", 200, body={"batch": [[0.9, 0.8, 0.7], [0.1, 0.2, 0.3]]})
subject = call("POST", "/v1/subjects", 201, body={"name": "Contract Test"})["id"]
call("GET", "/v1/subjects", 200, query={"limit": 10})
call("GET", "/v1/subjects/{id}", 200, path_parameters={"id": subject})
call("PATCH", "/v1/subjects/{id}", 200, path_parameters={"id": subject}, body={"name": "Contract Test 2"})
face = call("POST", "/v1/subjects/{id}/faces", 201, path_parameters={"id": subject},
            body={"image": astronaut}, media_type="multipart/form-data")
call("POST", "/v1/subjects/{id}/faces", 201, path_parameters={"id": subject}, body={"image": b64})
verdict = call("POST", "/v1/verify", 200, body={"subject": subject, "image": b64, "include_layers": True})
if verdict.get("decision") != "accept":
    sys.exit(f"FAIL: the enrolled face was not accepted: {verdict}")
call("POST", "/v1/verify", 200, body={"subject": subject, "image": astronaut}, media_type="multipart/form-data")
call("POST", "/v1/identify", 200, body={"image": b64, "limit": 3})
call("POST", "/v1/identify", 200, body={"image": astronaut}, media_type="multipart/form-data")
call("POST", "/v1/liveness", 200, body={"image": b64})
call("POST", "/v1/liveness", 200, body={"image": astronaut}, media_type="multipart/form-data")
session = call("POST", "/v1/liveness/sessions", 201, body={"subject": subject})["id"]
call("POST", "/v1/liveness/sessions/{id}/frames", 200, path_parameters={"id": session},
     body={"frames": [{"image": b64, "timestamp_ms": 1000}]})
call("GET", "/v1/liveness/sessions/{id}", 200, path_parameters={"id": session})
call("POST", "/v1/verify", 409, body={"subject": subject, "session": session})
call("POST", "/v1/identify", 409, body={"session": session})
# The same operations with narrower keys: the answers without scores must fit the document too.
call("POST", "/v1/verify", 200, body={"subject": subject, "image": b64}, key="verify")
call("POST", "/v1/verify", 200, body={"subject": subject, "image": astronaut}, media_type="multipart/form-data",
     key="verify")
call("POST", "/v1/identify", 200, body={"image": b64}, key="verify")
call("POST", "/v1/liveness", 200, body={"image": b64}, key="verify")
call("POST", "/v1/score", 200, body={"features": [0.9, 0.8, 0.7]}, key="verify")
own = call("POST", "/v1/liveness/sessions", 201, body={"subject": subject}, key="verify")["id"]
call("POST", "/v1/liveness/sessions/{id}/frames", 200, path_parameters={"id": own},
     body={"frames": [{"image": b64, "timestamp_ms": 1000}]}, key="verify")
call("GET", "/v1/liveness/sessions/{id}", 200, path_parameters={"id": own}, key="verify")
call("GET", "/v1/liveness/sessions/{id}", 404, path_parameters={"id": session}, key="verify")
call("POST", "/v1/identify", 409, body={"session": own}, media_type="multipart/form-data", key="verify")
call("POST", "/v1/identify", 404, body={"session": session}, key="verify")
# Another key's session is not found; the key's own is closed, then gone.
call("DELETE", "/v1/liveness/sessions/{id}", 404, path_parameters={"id": session}, key="verify")
call("DELETE", "/v1/liveness/sessions/{id}", 204, path_parameters={"id": own}, key="verify")
call("GET", "/v1/liveness/sessions/{id}", 404, path_parameters={"id": own}, key="verify")
call("GET", "/v1/subjects", 403, key="verify")
call("GET", "/v1/auth/whoami", 200, key="verify")
desk = call("POST", "/v1/subjects", 201, body={"name": "Desk Enrolment"}, key="enrol")["id"]
call("POST", "/v1/subjects/{id}/faces", 201, path_parameters={"id": desk}, body={"image": b64}, key="enrol")
call("POST", "/v1/verify", 403, body={"subject": desk, "image": b64}, key="enrol")
call("DELETE", "/v1/subjects/{id}", 204, path_parameters={"id": desk})

call("DELETE", "/v1/subjects/{id}/lockout", 200, path_parameters={"id": subject})
call("DELETE", "/v1/subjects/{id}/lockout", 403, path_parameters={"id": subject}, key="verify")
call("DELETE", "/v1/subjects/{id}/faces/{face_id}", 204, path_parameters={"id": subject, "face_id": face["face_id"]})
call("DELETE", "/v1/subjects/{id}", 204, path_parameters={"id": subject})
call("GET", "/v1/subjects/{id}", 404, path_parameters={"id": subject})

documented = {(m.upper(), p) for p, item in schema.raw_schema["paths"].items() for m in item
              if m in ("get", "post", "patch", "delete", "put")}
missing = sorted(documented - seen)
if missing:
    sys.exit(f"FAIL: operations without a real case: {missing}")
print(f"ok: {len(seen)} operations answered real requests as the document says")
