#!/usr/bin/env node
// A stand-in for facekey-runtime that speaks the UI's API contract (shaped like the runtime's own
// answers), for developing the UI without building the runtime. It serves ui/dist at / and keeps
// subjects in memory; verification scores are fixed.
// Not used by the e2e test, which targets the real runtime through FACEKEY_URL (though e2e.mjs
// runs against it too, with FACEKEY_API_KEY set to its admin key).
//
// API keys as the runtime checks them: `Authorization: Bearer fk_…`, scopes per route, answers
// shaped by scope, `GET /v1/auth/whoami`. Three keys: admin (FACEKEY_API_KEY, or a new one),
// kiosk (verify) and desk (enrol); their login URLs are printed at start.
// FACEKEY_MOCK_KEYS=off serves without keys, like a runtime before access control.
//
// Liveness challenge sessions (issue 13's contract): sessions bound to the key that opened them
// (other keys get 404), a random 2-3 action challenge, 1..=8 JPEG frames per call (JSON base64 or
// multipart) with strictly increasing client timestamps, expiry (FACEKEY_MOCK_SESSION_TTL_S,
// default 30), a frame budget (FACEKEY_MOCK_MAX_FRAMES, default 150), and `POST /v1/verify
// {"subject","session"}` or `POST /v1/identify {"session"}` (an unbound session only) once per
// passed session. Identification (`POST /v1/identify`, an image or a session, `limit`) matches
// every subject with a face, the first enrolled best, with fixed scores. The mock has no face models: what it "sees" is
// scripted by FACEKEY_MOCK_CHALLENGE: `pass` (default: a face in every frame, each action seen
// after 5 frames) or `noface` (no face in any frame: the session fails after 24 frames with
// too_few_usable_frames).
//
//   node tests/ui/mock/server.mjs [port]     (default 8080; ui/dist must be built)

import { createServer } from "node:http";
import { readFile, stat } from "node:fs/promises";
import { extname, join, normalize, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { randomBytes, randomUUID } from "node:crypto";

const here = fileURLToPath(new URL(".", import.meta.url));
const DIST = resolve(process.env.FACEKEY_UI_DIST ?? join(here, "../../../ui/dist"));
const PORT = Number(process.argv[2] ?? process.env.PORT ?? 8080);

const WEIGHTS = {
  w1: [[0.5, 0.2, -0.1], [-0.4, 0.6, 0.3], [0.3, -0.2, -0.1], [0.8, 0.4, -0.6]],
  b1: [0.1, -0.8, 0.1, 0.4],
  w2: [[0.5, 0.3, 0.5, 0.2], [-0.5, 0.2, 0.5, -0.1], [0.25, -0.3, 0.5, 0.1]],
  b2: [0.1, 0.1, -0.1],
  w3: [[1.0, -0.5, 0.4]],
  b3: [-0.1],
};
const THRESHOLD = 0.5;

const affine = (w, b, x) => w.map((row, i) => row.reduce((acc, wij, j) => acc + wij * x[j], b[i]));
const relu = (v) => v.map((z) => Math.max(0, z));
function forward(x) {
  const z1 = affine(WEIGHTS.w1, WEIGHTS.b1, x);
  const a1 = relu(z1);
  const z2 = affine(WEIGHTS.w2, WEIGHTS.b2, a1);
  const a2 = relu(z2);
  const z3 = affine(WEIGHTS.w3, WEIGHTS.b3, a2)[0];
  return { probability: 1 / (1 + Math.exp(-z3)), layers: { z1, a1, z2, a2, z3 } };
}

// ---- metrics ----
const REQ_BUCKETS = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
const requests = new Map();
const durations = new Map();
const inference = new Map();
const decisions = { accept: 0, reject: 0 };
let spoofs = 0;

function observe(map, key, seconds) {
  let h = map.get(key);
  if (!h) {
    h = { counts: REQ_BUCKETS.map(() => 0), sum: 0, count: 0 };
    map.set(key, h);
  }
  REQ_BUCKETS.forEach((le, i) => {
    if (seconds <= le) h.counts[i] += 1;
  });
  h.sum += seconds;
  h.count += 1;
}

function renderHistogram(name, label, map) {
  let out = `# HELP ${name} Latency.\n# TYPE ${name} histogram\n`;
  for (const [key, h] of map) {
    REQ_BUCKETS.forEach((le, i) => {
      out += `${name}_bucket{${label}="${key}",le="${le}"} ${h.counts[i]}\n`;
    });
    out += `${name}_bucket{${label}="${key}",le="+Inf"} ${h.count}\n`;
    out += `${name}_sum{${label}="${key}"} ${h.sum}\n${name}_count{${label}="${key}"} ${h.count}\n`;
  }
  return out;
}

function renderMetrics() {
  let out = "# HELP facekey_http_requests_total HTTP requests by route, method and status.\n";
  out += "# TYPE facekey_http_requests_total counter\n";
  for (const [key, n] of requests) {
    const [route, method, status] = key.split(" ");
    out += `facekey_http_requests_total{method="${method}",route="${route}",status="${status}"} ${n}\n`;
  }
  out += renderHistogram("facekey_http_request_duration_seconds", "route", durations);
  out += renderHistogram("facekey_inference_duration_seconds", "model", inference);
  out += "# HELP facekey_decisions_total Authentication decisions by outcome.\n# TYPE facekey_decisions_total counter\n";
  out += `facekey_decisions_total{outcome="accept"} ${decisions.accept}\nfacekey_decisions_total{outcome="reject"} ${decisions.reject}\n`;
  out += "# HELP facekey_spoof_detected_total Spoofs.\n# TYPE facekey_spoof_detected_total counter\n";
  out += `facekey_spoof_detected_total ${spoofs}\n`;
  return out;
}

// ---- helpers ----
class HttpError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function readBody(req, limit = 5 * 1024 * 1024) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > limit) throw new HttpError(413, "payload_too_large", "request body exceeds 5 MB");
    chunks.push(chunk);
  }
  return Buffer.concat(chunks);
}

function parseMultipart(body, contentType) {
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType ?? "");
  if (!m) throw new HttpError(415, "unsupported_media_type", "expected multipart/form-data");
  const boundary = Buffer.from(`--${m[1] ?? m[2]}`);
  const parts = {};
  let start = body.indexOf(boundary);
  while (start >= 0) {
    const next = body.indexOf(boundary, start + boundary.length);
    if (next < 0) break;
    const part = body.subarray(start + boundary.length + 2, next - 2);
    const split = part.indexOf("\r\n\r\n");
    const head = part.subarray(0, split).toString();
    const name = /name="([^"]*)"/.exec(head)?.[1];
    if (name) parts[name] = part.subarray(split + 4);
    start = next;
  }
  return parts;
}

function imageSize(buf) {
  if (buf.length > 24 && buf.readUInt32BE(0) === 0x89504e47) {
    return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
  }
  if (buf[0] === 0xff && buf[1] === 0xd8) {
    let i = 2;
    while (i + 9 < buf.length) {
      if (buf[i] !== 0xff) {
        i += 1;
        continue;
      }
      const marker = buf[i + 1];
      const len = buf.readUInt16BE(i + 2);
      if (marker >= 0xc0 && marker <= 0xcf && ![0xc4, 0xc8, 0xcc].includes(marker)) {
        return { width: buf.readUInt16BE(i + 7), height: buf.readUInt16BE(i + 5) };
      }
      i += 2 + len;
    }
  }
  throw new HttpError(422, "invalid_image", "the image is not a PNG or JPEG this mock can read");
}

function requireImage(parts) {
  const image = parts.image;
  if (!image || image.length === 0) throw new HttpError(422, "missing_image", "multipart field `image` is required");
  return imageSize(image);
}

const json = (ref) => ({ content: { "application/json": { schema: { $ref: `#/components/schemas/${ref}` } } } });
const OPENAPI = {
  openapi: "3.1.0",
  info: { title: "FaceKey runtime API (mock)", version: "0.0.0", description: "Every error is `{\"error\":{\"code\",\"message\"}}`." },
  paths: {
    "/v1/score": { post: { tags: ["fusion"], summary: "Fuse three features", requestBody: { required: true, ...json("ScoreRequest") }, responses: { 200: { description: "Scored" }, 422: { description: "Bad features", ...json("ErrorBody") } } } },
    "/v1/subjects": {
      get: { tags: ["subjects"], summary: "List subjects", responses: { 200: { description: "Subjects" } } },
      post: { tags: ["subjects"], summary: "Create a subject", responses: { 201: { description: "Created" } } },
    },
    "/v1/subjects/{id}": {
      parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
      get: { tags: ["subjects"], summary: "Get a subject", responses: { 200: { description: "The subject" } } },
      delete: { tags: ["subjects"], summary: "Delete a subject", responses: { 204: { description: "Deleted" } } },
    },
    "/v1/subjects/{id}/faces": {
      post: { tags: ["subjects"], summary: "Enrol a face image", responses: { 201: { description: "Enrolled" } } },
    },
    "/v1/verify": { post: { tags: ["verification"], summary: "Verify a face against a subject", responses: { 200: { description: "Verified" } } } },
    "/v1/identify": { post: { tags: ["verification"], summary: "Identify a face among all enrolled subjects (1:N)", responses: { 200: { description: "Searched (candidates may be empty)" } } } },
    "/v1/liveness/sessions": { post: { tags: ["liveness"], summary: "Open a challenge session", responses: { 201: { description: "Opened" } } } },
    "/v1/liveness/sessions/{id}": { get: { tags: ["liveness"], summary: "A session's state and verdict", responses: { 200: { description: "The session" } } } },
    "/v1/liveness/sessions/{id}/frames": { post: { tags: ["liveness"], summary: "Upload frames", responses: { 200: { description: "Live feedback" } } } },
  },
  components: {
    schemas: {
      ScoreRequest: { type: "object", properties: { features: { type: "array", items: { type: "number" } }, include_layers: { type: "boolean" } } },
      ErrorBody: { type: "object", required: ["error"], properties: { error: { type: "object", properties: { code: { type: "string" }, message: { type: "string" } } } } },
    },
  },
};

const subjects = new Map();

// ---- API keys ----
const KEYED = process.env.FACEKEY_MOCK_KEYS !== "off";
const newKey = () => `fk_${randomBytes(32).toString("base64url")}`;
const KEYS = new Map([
  [process.env.FACEKEY_API_KEY || newKey(), { key_id: "admin", scopes: ["admin"], rps: null }],
  [newKey(), { key_id: "kiosk", scopes: ["verify"], rps: 5 }],
  [newKey(), { key_id: "desk", scopes: ["enrol"], rps: null }],
]);

/** The scope a request needs, or undefined when it is open. */
function requiredScope(method, path) {
  if (["/v1/score", "/v1/verify", "/v1/identify", "/v1/liveness"].includes(path)) return "verify";
  if (path.startsWith("/v1/liveness/")) return "verify";
  if (path === "/v1/auth/whoami") return "any";
  if (method === "POST" && (path === "/v1/subjects" || /^\/v1\/subjects\/[^/]+\/faces$/.test(path))) return "enrol";
  if (path.startsWith("/v1/subjects")) return "admin";
  if (path.startsWith("/v1/")) return "any";
  return undefined;
}

const has = (caller, scope) => caller.scopes.includes(scope) || caller.scopes.includes("admin");

/** The caller of a request, or an HttpError when its key is missing, wrong or lacks the scope. */
function authenticate(req, path) {
  const scope = requiredScope(req.method, path);
  if (!KEYED || scope === undefined) return { key_id: "open", scopes: ["admin"] };
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
  const caller = m ? KEYS.get(m[1]) : undefined;
  if (!caller) throw new HttpError(401, "unauthorized", m ? "unknown API key" : "this needs an API key: Authorization: Bearer <key>");
  if (scope !== "any" && !has(caller, scope)) throw new HttpError(403, "forbidden", `${req.method} ${path} needs the \`${scope}\` scope`);
  return caller;
}

// ---- liveness challenge sessions ----
const ACTIONS = ["blink", "turn_left", "turn_right", "look_up", "open_mouth"];
const SESSION_TTL_MS = Number(process.env.FACEKEY_MOCK_SESSION_TTL_S ?? 30) * 1000;
const SESSION_MAX_FRAMES = Number(process.env.FACEKEY_MOCK_MAX_FRAMES ?? 150);
const CHALLENGE_SCRIPT = process.env.FACEKEY_MOCK_CHALLENGE ?? "pass";
const FRAMES_PER_ACTION = 5;
const NO_FACE_LIMIT = 24;
const MAX_SESSIONS = 64;
const sessions = new Map();

function pickChallenge() {
  const pool = [...ACTIONS];
  const n = 2 + (randomBytes(1)[0] % 2);
  const out = [];
  while (out.length < n) out.push(pool.splice(randomBytes(1)[0] % pool.length, 1)[0]);
  return out;
}

const sessionActions = (s) => s.actions.map((a) => ({ action: a.action, passed: a.passed, at_frame: a.at_frame }));

/** The session a caller may see: another key's session is "not found", never "forbidden". */
function ownSession(caller, id) {
  const s = sessions.get(id);
  if (!s || s.owner !== caller.key_id) throw new HttpError(404, "session_not_found", `no liveness session ${id}`);
  if (s.state === "in_progress" && Date.now() > s.expires) {
    s.state = "expired";
    s.reasons = ["expired"];
  }
  return s;
}

/** The frames of one upload, from JSON `{"frames":[{image,timestamp_ms}]}` or multipart (`timestamp_ms` before each `frame`). */
function uploadedFrames(body, contentType) {
  if ((contentType ?? "").startsWith("application/json")) {
    const list = JSON.parse(body.toString() || "null")?.frames;
    if (!Array.isArray(list)) throw new HttpError(422, "invalid_request", "frames must be an array");
    return list.map((f) => ({ image: Buffer.from(String(f?.image ?? "").replace(/^data:[^,]*,/, ""), "base64"), ts: f?.timestamp_ms }));
  }
  const m = /boundary=(?:"([^"]+)"|([^;]+))/i.exec(contentType ?? "");
  if (!m) throw new HttpError(415, "unsupported_media_type", "expected JSON or multipart/form-data");
  const boundary = Buffer.from(`--${m[1] ?? m[2]}`);
  const frames = [];
  let ts;
  let start = body.indexOf(boundary);
  while (start >= 0) {
    const next = body.indexOf(boundary, start + boundary.length);
    if (next < 0) break;
    const part = body.subarray(start + boundary.length + 2, next - 2);
    const split = part.indexOf("\r\n\r\n");
    const name = /name="([^"]*)"/.exec(part.subarray(0, split).toString())?.[1];
    const data = part.subarray(split + 4);
    if (name === "timestamp_ms") ts = Number(data.toString());
    if (name === "frame") frames.push({ image: data, ts });
    start = next;
  }
  return frames;
}

function sessionFrames(caller, s, frames) {
  if (s.state === "expired") throw new HttpError(410, "session_expired", "the liveness session expired");
  if (frames.length < 1 || frames.length > 8) throw new HttpError(422, "invalid_request", `1 to 8 frames per call, not ${frames.length}`);
  if (s.received + frames.length > s.max_frames) throw new HttpError(413, "too_many_frames", `the session takes at most ${s.max_frames} frames`);
  const out = [];
  for (const f of frames) {
    if (!(f.image[0] === 0xff && f.image[1] === 0xd8)) throw new HttpError(415, "unsupported_media_type", "frames must be JPEG");
    if (!Number.isInteger(f.ts) || f.ts < 0) throw new HttpError(422, "invalid_request", "timestamp_ms must be a non-negative integer");
    if (s.state !== "in_progress") {
      // Frames after the verdict (the rest of a batch) are looked at but change nothing.
      out.push({ index: s.received++, face_found: CHALLENGE_SCRIPT !== "noface", action_seen: null });
      continue;
    }
    if (s.lastTs !== undefined && f.ts <= s.lastTs) {
      s.state = "failed";
      s.reasons = ["timestamps_not_increasing"];
    }
    s.lastTs = f.ts;
    const index = s.received++;
    const face = CHALLENGE_SCRIPT !== "noface";
    s.faceless = face ? 0 : s.faceless + 1;
    let seen = null;
    const open = s.actions.find((a) => !a.passed);
    if (face && open && ++s.progress >= FRAMES_PER_ACTION) {
      s.progress = 0;
      open.passed = true;
      open.at_frame = index;
      seen = open.action;
    }
    out.push({ index, face_found: face, action_seen: seen });
    if (s.state !== "in_progress") continue;
    if (s.actions.every((a) => a.passed)) s.state = "passed";
    else if (s.faceless >= NO_FACE_LIMIT) {
      s.state = "failed";
      s.reasons = ["too_few_usable_frames"];
    } else if (s.received >= s.max_frames) {
      s.state = "failed";
      s.reasons = ["challenge_incomplete"];
    }
  }
  const next = s.state === "in_progress" ? s.actions.find((a) => !a.passed)?.action ?? null : null;
  return { state: s.state, frames_received: s.received, frames: out, next_action: next, actions: sessionActions(s) };
}

async function liveness(req, path, caller) {
  if (path === "/v1/liveness/sessions" && req.method === "POST") {
    const body = JSON.parse((await readBody(req)).toString() || "{}");
    const subject = typeof body?.subject === "string" ? body.subject : undefined;
    if (subject !== undefined && !subjects.has(subject)) throw new HttpError(404, "subject_not_found", `no subject ${subject}`);
    for (const [id, s] of sessions) if (Date.now() > s.expires + 60_000) sessions.delete(id);
    if (sessions.size >= MAX_SESSIONS) throw new HttpError(429, "too_many_sessions", "too many open liveness sessions");
    const challenge = pickChallenge();
    const s = {
      id: randomUUID(),
      owner: caller.key_id,
      subject,
      challenge,
      actions: challenge.map((action) => ({ action, passed: false, at_frame: null })),
      expires: Date.now() + SESSION_TTL_MS,
      max_frames: SESSION_MAX_FRAMES,
      state: "in_progress",
      reasons: [],
      received: 0,
      progress: 0,
      faceless: 0,
      used: false,
    };
    sessions.set(s.id, s);
    return { route: path, status: 201, body: { id: s.id, challenge, expires_at: new Date(s.expires).toISOString(), max_frames: s.max_frames } };
  }
  const m = /^\/v1\/liveness\/sessions\/([^/]+)(\/frames)?$/.exec(path);
  if (!m) return undefined;
  const route = m[2] ? "/v1/liveness/sessions/{id}/frames" : "/v1/liveness/sessions/{id}";
  try {
    const s = ownSession(caller, decodeURIComponent(m[1]));
    if (m[2] && req.method === "POST") {
      const frames = uploadedFrames(await readBody(req), req.headers["content-type"]);
      return { route, body: sessionFrames(caller, s, frames) };
    }
    if (!m[2] && req.method === "GET") {
      const final = s.state !== "in_progress";
      return {
        route,
        body: {
          id: s.id,
          state: s.state,
          live: final ? s.state === "passed" : null,
          confidence: s.state === "passed" ? 0.91 : final ? 0.12 : null,
          reasons: s.reasons,
          actions: sessionActions(s),
          expires_at: new Date(s.expires).toISOString(),
        },
      };
    }
  } catch (e) {
    throw Object.assign(e, { route });
  }
  return undefined;
}

/** The session a verification names: passed, this key's, this subject's (if bound), unused. */
function sessionForVerify(caller, id, subject) {
  const s = ownSession(caller, id);
  if (s.state === "expired") throw new HttpError(410, "session_expired", "the liveness session expired");
  if (s.state !== "passed") throw new HttpError(409, "session_not_passed", `the liveness session ${s.state === "failed" ? "failed" : "has not passed yet"}`);
  if (s.subject !== undefined && s.subject !== subject) throw new HttpError(404, "session_not_found", `no liveness session ${id}`);
  if (s.used) throw new HttpError(409, "session_used", "the liveness session already verified once");
  s.used = true;
  return s;
}

function subjectJson(s) {
  return { id: s.id, name: s.name, faces: s.faces, created_at: s.created_at, created_by: s.created_by };
}

async function api(req, url) {
  const path = url.pathname;
  const method = req.method;
  const caller = authenticate(req, path);
  if (path === "/v1/auth/whoami" && KEYED) {
    // Every subject and face counts against whoever asks (the mock keeps no creators); admin
    // keys have no per-key limit, the others the runtime's defaults.
    const admin = caller.scopes.includes("admin");
    const faces = [...subjects.values()].reduce((n, s) => n + s.faces, 0);
    const quotas = {
      subjects: { held: subjects.size, limit: admin ? null : 10000 },
      templates: { held: faces, limit: admin ? null : 5000 },
    };
    return { route: path, body: { ...caller, quotas } };
  }
  if (path === "/healthz") return { route: path, body: { status: "ok" } };
  if (path === "/readyz") return { route: path, body: { status: "ready" } };
  if (path === "/openapi.json") return { route: path, body: OPENAPI };
  if (path === "/metrics") return { route: path, text: renderMetrics() };
  if (path.startsWith("/v1/liveness/")) {
    const out = await liveness(req, path, caller);
    if (out) return out;
  }
  if (path === "/v1/score" && method === "POST") {
    const body = JSON.parse((await readBody(req)).toString() || "null");
    const x = body?.features;
    if (!Array.isArray(x) || x.length !== 3 || !x.every((v) => typeof v === "number" && Number.isFinite(v) && Math.abs(v) <= 1e6)) {
      throw new HttpError(422, "invalid_features", "features must hold exactly 3 finite numbers of magnitude at most 1e6 [match_similarity, liveness, quality]");
    }
    const t0 = performance.now();
    const f = forward(x);
    observe(inference, "fusion", (performance.now() - t0) / 1000);
    const decision = f.probability >= THRESHOLD ? "accept" : "reject";
    decisions[decision] += 1;
    return {
      route: path,
      body: { probability: f.probability, decision, threshold: THRESHOLD, weights: "reference", ...(body.include_layers ? { layers: f.layers } : {}) },
    };
  }
  if (path === "/v1/subjects" && method === "GET") {
    return { route: path, body: { subjects: [...subjects.values()].map(subjectJson) } };
  }
  if (path === "/v1/subjects" && method === "POST") {
    const body = JSON.parse((await readBody(req)).toString() || "null");
    const name = typeof body?.name === "string" ? body.name.trim() : "";
    if (!name) throw new HttpError(422, "invalid_request", "name must be a non-empty string");
    const s = { id: randomUUID(), name, faces: 0, created_at: new Date().toISOString(), created_by: caller.key_id };
    subjects.set(s.id, s);
    return { route: path, status: 201, body: subjectJson(s) };
  }
  let m = /^\/v1\/subjects\/([^/]+)(\/faces)?$/.exec(path);
  if (m) {
    const route = m[2] ? "/v1/subjects/{id}/faces" : "/v1/subjects/{id}";
    const s = subjects.get(decodeURIComponent(m[1]));
    if (!s) throw Object.assign(new HttpError(404, "subject_not_found", `no subject ${m[1]}`), { route });
    if (!m[2] && method === "GET") return { route, body: subjectJson(s) };
    if (!m[2] && method === "DELETE") {
      subjects.delete(s.id);
      return { route, status: 204 };
    }
    if (m[2] && method === "POST") {
      requireImage(parseMultipart(await readBody(req), req.headers["content-type"]));
      s.faces += 1;
      return { route, status: 201, body: { subject_id: s.id, face_id: randomUUID(), faces: s.faces, quality: { score: 0.82 } } };
    }
  }
  if (path === "/v1/identify" && method === "POST") return identify(req, path, caller);
  if (path === "/v1/verify" && method === "POST") {
    const t0 = performance.now();
    const parts = await imageRequestParts(req);
    const id = parts.subject?.toString();
    const s = id ? subjects.get(id) : undefined;
    if (!s) throw Object.assign(new HttpError(404, "subject_not_found", `no subject ${id ?? "(missing field subject)"}`), { route: path });
    if (s.faces === 0) throw Object.assign(new HttpError(409, "no_faces", `${s.name} has no enrolled face`), { route: path });
    const sessionId = parts.session?.toString();
    if (sessionId) {
      try {
        sessionForVerify(caller, sessionId, s.id);
      } catch (e) {
        throw Object.assign(e, { route: path });
      }
    }
    const { width, height } = sessionId && !parts.image ? { width: 640, height: 480 } : requireImage(parts);
    const { face, liveness, quality } = analysis(width, height);
    const match = { distance: 0.31, similarity: 0.84, threshold: 0.5, decision: "accept", templates: s.faces };
    const features = [match.similarity, liveness.score, quality.score];
    const f = forward(features);
    const decision = f.probability >= THRESHOLD ? "accept" : "reject";
    decisions[decision] += 1;
    for (const [model, ms] of [["mtcnn_pnet", 22], ["dlib_resnet", 7], ["dtn", 110], ["fusion", 0.01]]) observe(inference, model, ms / 1000);
    const total = performance.now() - t0;
    if (!has(caller, "admin")) {
      return { route: path, body: { subject: s.id, decision, reasons: decision === "accept" ? [] : ["low_probability"], request_id: randomUUID() } };
    }
    return {
      route: path,
      body: {
        subject: s.id,
        faces_detected: 1,
        face,
        match,
        liveness,
        quality,
        features,
        probability: f.probability,
        decision,
        threshold: THRESHOLD,
        decision_policy: "strict",
        reasons: decision === "accept" ? [] : ["low_probability"],
        weights: "reference",
        ...(parts.include_layers?.toString() === "true" ? { layers: f.layers } : {}),
        inference_ms: { pnet: 22.1, pnet_runs: 9, rnet: 4.2, onet: 2.9, embed: 7.1, dtn: 108.4 },
        timings_ms: { decode: 3.2, detect: 31.5, align: 0.8, embed: 7.4, liveness: 112.3, quality: 0.9, total: 156.1 + total, matching: 0.01, fusion: 0.02 },
      },
    };
  }
  return undefined;
}

/** The fields of an image request, JSON (`image` in base64) or multipart, as buffers by name. */
async function imageRequestParts(req) {
  const raw = await readBody(req);
  const isJson = (req.headers["content-type"] ?? "").startsWith("application/json");
  if (!isJson) return parseMultipart(raw, req.headers["content-type"]);
  const jsonBody = JSON.parse(raw.toString() || "null") ?? {};
  return Object.fromEntries(
    Object.entries(jsonBody).map(([k, v]) => [k, k === "image" ? Buffer.from(String(v), "base64") : Buffer.from(String(v))]),
  );
}

/** What the mock "finds" in a width x height image: one centred face, live, of fixed quality. */
function analysis(width, height) {
  const bw = Math.round(Math.min(width, height) * 0.4);
  const box = { x: Math.round(width / 2 - bw / 2), y: Math.round(height / 2 - bw * 0.6), width: bw, height: Math.round(bw * 1.2) };
  const lm = (fx, fy) => [box.x + fx * box.width, box.y + fy * box.height];
  const face = {
    box,
    confidence: 0.99,
    landmarks: Object.fromEntries(
      ["left_eye", "right_eye", "nose", "mouth_left", "mouth_right"].map((k, i) => {
        const [x, y] = [lm(0.3, 0.4), lm(0.7, 0.4), lm(0.5, 0.6), lm(0.35, 0.8), lm(0.65, 0.8)][i];
        return [k, { x, y }];
      }),
    ),
  };
  const live = { score: 0.93, live: true, threshold: 0.5, dtn: { spoof_score: 0.2, live_score: 0.91 }, minifas: { probabilities: [0.95, 0.03, 0.02], live_score: 0.95 } };
  const liveness = { score: 0.93, decision: "accept", threshold: 0.5, checked: true, models: live };
  const quality = { score: 0.8, size: 0.9, sharpness: 0.7, pose: 0.85, exposure: 0.9, face_size_px: bw, yaw_degrees: -2.4 };
  return { face, liveness, quality };
}

/**
 * `POST /v1/identify`: an image or an unbound passed session (a bound one is refused and left
 * unused), `limit` 1-100 (default 5). Every subject with a face "matches", the first enrolled
 * best; those whose fused probability passes are the candidates.
 */
async function identify(req, path, caller) {
  const parts = await imageRequestParts(req);
  const sessionId = parts.session?.toString();
  try {
    if (sessionId) {
      if (ownSession(caller, sessionId).subject !== undefined) {
        throw new HttpError(422, "session_bound_to_subject", "the liveness session was opened for one subject: it verifies that subject and cannot identify");
      }
      sessionForVerify(caller, sessionId, undefined);
    }
  } catch (e) {
    throw Object.assign(e, { route: path });
  }
  const limitText = parts.limit?.toString();
  const limit = limitText === undefined ? 5 : Number(limitText);
  if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
    throw Object.assign(new HttpError(422, "invalid_request", `field \`limit\` must be an integer from 1 to 100, got ${JSON.stringify(limitText)}`), { route: path });
  }
  const { width, height } = sessionId && !parts.image ? { width: 640, height: 480 } : requireImage(parts);
  const { face, liveness, quality } = analysis(width, height);
  const enrolled = [...subjects.values()].filter((s) => s.faces > 0);
  const candidates = enrolled
    .slice(0, limit)
    .map((s, i) => {
      const similarity = 0.84 - 0.2 * i;
      return { subject: { id: s.id, name: s.name }, similarity, distance: 0.31 + 0.2 * i, models: ["dlib"], probability: forward([similarity, liveness.score, quality.score]).probability };
    })
    .filter((c) => c.probability >= THRESHOLD);
  const decision = candidates.length > 0 ? "accept" : "reject";
  decisions[decision] += 1;
  const reasons = decision === "accept" ? [] : ["no_match"];
  if (!has(caller, "admin")) {
    return { route: path, body: { candidates: candidates.map((c) => ({ subject: c.subject })), decision, reasons, request_id: randomUUID() } };
  }
  const common = { request_id: randomUUID(), candidates, decision, reasons, templates_searched: enrolled.reduce((n, s) => n + s.faces, 0), threshold: THRESHOLD, decision_policy: "strict" };
  if (sessionId) {
    return { route: path, body: { ...common, session: sessionId, challenge: ownSession(caller, sessionId).challenge, probe_from_image: Boolean(parts.image), liveness: { state: "live", score: 0.91, decision: "accept", threshold: 0.5, checked: true }, quality: quality.score, quality_detail: null } };
  }
  return {
    route: path,
    body: {
      ...common,
      face,
      faces_detected: 1,
      liveness,
      quality,
      timings_ms: { decode: 3.2, detect: 31.5, align: 0.8, embed: 7.4, liveness: 112.3, quality: 0.9, total: 156.1, matching: 0.01, fusion: 0.02 },
      inference_ms: { pnet: 22.1, pnet_runs: 9, rnet: 4.2, onet: 2.9, embed: 7.1, dtn: 108.4 },
    },
  };
}

const TYPES = { ".html": "text/html; charset=utf-8", ".js": "text/javascript", ".css": "text/css", ".svg": "image/svg+xml", ".png": "image/png", ".json": "application/json" };

const APP_PATHS = ["/", "/verify", "/identify", "/enrol", "/fusion", "/metrics-view", "/docs"];

async function staticFile(path) {
  const rel = normalize(APP_PATHS.includes(path) ? "/index.html" : path).replace(/^(\.\.[/\\])+/, "");
  const file = join(DIST, rel);
  if (!file.startsWith(DIST)) return undefined;
  try {
    if (!(await stat(file)).isFile()) return undefined;
    return { type: TYPES[extname(file)] ?? "application/octet-stream", data: await readFile(file) };
  } catch {
    return undefined;
  }
}

const server = createServer(async (req, res) => {
  const t0 = performance.now();
  const url = new URL(req.url ?? "/", "http://localhost");
  let route = "unmatched";
  let status = 200;
  try {
    const out = await api(req, url);
    if (out) {
      route = out.route;
      status = out.status ?? 200;
      if (out.text !== undefined) {
        res.writeHead(status, { "content-type": "text/plain; version=0.0.4; charset=utf-8" }).end(out.text);
      } else if (out.body === undefined) {
        res.writeHead(status).end();
      } else {
        res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify(out.body));
      }
    } else if (req.method === "GET" && (await staticFile(url.pathname))) {
      route = "/";
      const file = await staticFile(url.pathname);
      res.writeHead(200, { "content-type": file.type }).end(file.data);
    } else {
      throw new HttpError(404, "not_found", `no route for ${req.method} ${url.pathname}`);
    }
  } catch (e) {
    const err = e instanceof HttpError ? e : new HttpError(e instanceof SyntaxError ? 400 : 500, e instanceof SyntaxError ? "invalid_json" : "internal", e.message);
    route = e.route ?? route;
    status = err.status;
    res.writeHead(status, { "content-type": "application/json" }).end(JSON.stringify({ error: { code: err.code, message: err.message } }));
  }
  const key = `${route} ${req.method} ${status}`;
  requests.set(key, (requests.get(key) ?? 0) + 1);
  observe(durations, route, (performance.now() - t0) / 1000);
});

server.listen(PORT, "127.0.0.1", () => {
  const base = `http://127.0.0.1:${server.address().port}`;
  console.log(`mock facekey-runtime on ${base} serving ${DIST}`);
  if (KEYED) {
    for (const [key, { key_id, scopes }] of KEYS) console.log(`  ${key_id} (${scopes.join(",")}): ${base}/#key=${key}`);
  } else {
    console.log("  without API keys (FACEKEY_MOCK_KEYS=off)");
  }
});
