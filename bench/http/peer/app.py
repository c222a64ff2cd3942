"""The seed's stack, as a benchmark peer: FastAPI + uvicorn + numpy serving the FaceKey 3-4-3-1
score-fusion MLP with the same weights file and the same JSON contract as `POST /v1/score` of
`facekey-runtime` (see runtime/src/api/score.rs).

Run: FACEKEY_WEIGHTS_FILE=runtime/weights/reference.json \
     uvicorn app:app --app-dir bench/http/peer --workers "$(nproc)" --no-access-log

Written the way the seed would: pydantic models for the request and response, numpy for the
maths, FastAPI's default JSON response. Only the error bodies are shaped to match the runtime's
`{"error":{"code","message"}}`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
from fastapi import Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

INPUTS = 3
MAX_FEATURE_MAGNITUDE = 1e6
MAX_BATCH = int(os.environ.get("FACEKEY_MAX_BATCH", "1024"))

_DEFAULT_WEIGHTS = Path(__file__).resolve().parents[3] / "runtime" / "weights" / "reference.json"
WEIGHTS_FILE = Path(os.environ.get("FACEKEY_WEIGHTS_FILE", str(_DEFAULT_WEIGHTS)))


class Model:
    """The MLP: z1 = W1 x + b1, a1 = relu(z1), z2 = W2 a1 + b2, a2 = relu(z2),
    z3 = W3 a2 + b3, p = sigmoid(z3)."""

    def __init__(self, path: Path) -> None:
        doc = json.loads(path.read_text())
        self.name: str = doc["name"]
        self.threshold: float = float(os.environ.get("FACEKEY_THRESHOLD", doc.get("threshold", 0.5)))
        self.w1 = np.asarray(doc["w1"], dtype=np.float64)
        self.b1 = np.asarray(doc["b1"], dtype=np.float64)
        self.w2 = np.asarray(doc["w2"], dtype=np.float64)
        self.b2 = np.asarray(doc["b2"], dtype=np.float64)
        self.w3 = np.asarray(doc["w3"], dtype=np.float64)
        self.b3 = np.asarray(doc["b3"], dtype=np.float64)
        shapes = {"w1": (4, 3), "b1": (4,), "w2": (3, 4), "b2": (3,), "w3": (1, 3), "b3": (1,)}
        for field, shape in shapes.items():
            arr = getattr(self, field)
            if arr.shape != shape:
                raise ValueError(f"{path}: {field} has shape {arr.shape}, expected {shape}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{path}: {field} holds a non-finite value")

    @staticmethod
    def sigmoid(z: np.ndarray) -> np.ndarray:
        # Same numerically stable form as the runtime.
        e = np.exp(-np.abs(z))
        return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))

    def forward(self, x: np.ndarray) -> dict:
        z1 = self.w1 @ x + self.b1
        a1 = np.maximum(z1, 0.0)
        z2 = self.w2 @ a1 + self.b2
        a2 = np.maximum(z2, 0.0)
        z3 = float((self.w3 @ a2 + self.b3)[0])
        return {
            "probability": float(self.sigmoid(np.float64(z3))),
            "layers": {
                "z1": z1.tolist(),
                "a1": a1.tolist(),
                "z2": z2.tolist(),
                "a2": a2.tolist(),
                "z3": z3,
            },
        }

    def probabilities(self, xs: np.ndarray) -> np.ndarray:
        """Rows of `xs` (n x 3) scored as matrix products."""
        a1 = np.maximum(xs @ self.w1.T + self.b1, 0.0)
        a2 = np.maximum(a1 @ self.w2.T + self.b2, 0.0)
        z3 = (a2 @ self.w3.T + self.b3)[:, 0]
        return self.sigmoid(z3)


MODEL = Model(WEIGHTS_FILE)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    features: Optional[List[float]] = None
    batch: Optional[List[List[float]]] = None
    include_layers: bool = False


class Layers(BaseModel):
    z1: List[float]
    a1: List[float]
    z2: List[float]
    a2: List[float]
    z3: float


class ScoreResult(BaseModel):
    probability: float
    decision: Literal["accept", "reject"]
    layers: Optional[Layers] = None


class ScoreResponse(ScoreResult):
    threshold: float
    weights: str


class BatchScoreResponse(BaseModel):
    results: List[ScoreResult]
    threshold: float
    weights: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


def error_response(status: int, code: str, message: str) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"code": code, "message": message}})


app = FastAPI(title="facekey-peer (FastAPI + numpy)")


@app.exception_handler(ApiError)
async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.code, exc.message)


@app.exception_handler(RequestValidationError)
async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(400, "invalid_json", "body is not valid JSON")
    if any(e.get("type") == "missing" and tuple(e.get("loc", ())) == ("body",) for e in errors):
        return error_response(400, "empty_body", "request body is empty; send a JSON object")
    first = errors[0] if errors else {}
    where = ".".join(str(p) for p in first.get("loc", ())[1:]) or "body"
    return error_response(422, "invalid_request", f"{where}: {first.get('msg', 'invalid request')}")


def require_json(request: Request) -> None:
    """415 unless Content-Type is application/json or application/*+json (as the runtime)."""
    mime = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if not (mime == "application/json" or (mime.startswith("application/") and mime.endswith("+json"))):
        raise ApiError(415, "unsupported_media_type", "expected Content-Type: application/json")


def validate_features(values: List[float], what: str) -> List[float]:
    if len(values) != INPUTS:
        raise ApiError(
            422,
            "invalid_features",
            f"{what} must hold exactly {INPUTS} numbers [match_similarity, liveness, quality], "
            f"got {len(values)}",
        )
    for i, v in enumerate(values):
        if not math.isfinite(v) or abs(v) > MAX_FEATURE_MAGNITUDE:
            raise ApiError(
                422,
                "invalid_features",
                f"{what}[{i}] must be a finite number with magnitude at most 1e6",
            )
    return values


def decide(p: float) -> str:
    return "accept" if p >= MODEL.threshold else "reject"


@app.get("/healthz")
async def healthz() -> dict:
    return {"status": "ok"}


@app.post(
    "/v1/score",
    response_model=ScoreResponse | BatchScoreResponse,
    response_model_exclude_none=True,
    dependencies=[Depends(require_json)],
)
async def score(req: ScoreRequest):
    if req.features is not None and req.batch is not None:
        raise ApiError(422, "invalid_request", "send either `features` or `batch`, not both")
    if req.features is not None:
        x = np.asarray(validate_features(req.features, "features"), dtype=np.float64)
        out = MODEL.forward(x)
        p = out["probability"]
        return ScoreResponse(
            probability=p,
            decision=decide(p),
            layers=Layers(**out["layers"]) if req.include_layers else None,
            threshold=MODEL.threshold,
            weights=MODEL.name,
        )
    if req.batch is not None:
        if not req.batch:
            raise ApiError(422, "invalid_request", "batch must hold at least one row")
        if len(req.batch) > MAX_BATCH:
            raise ApiError(
                422,
                "invalid_request",
                f"batch holds {len(req.batch)} rows; the limit is {MAX_BATCH} (FACEKEY_MAX_BATCH)",
            )
        rows = [validate_features(r, f"batch[{i}]") for i, r in enumerate(req.batch)]
        xs = np.asarray(rows, dtype=np.float64)
        if req.include_layers:
            results = []
            for x in xs:
                out = MODEL.forward(x)
                p = out["probability"]
                results.append(ScoreResult(probability=p, decision=decide(p), layers=Layers(**out["layers"])))
        else:
            results = [ScoreResult(probability=float(p), decision=decide(float(p))) for p in MODEL.probabilities(xs)]
        return BatchScoreResponse(results=results, threshold=MODEL.threshold, weights=MODEL.name)
    raise ApiError(
        422, "invalid_request", "missing `features` (one vector of 3 numbers) or `batch` (a list of them)"
    )
