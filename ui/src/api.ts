/**
 * The runtime's HTTP API as the UI uses it: every request, every response type, and the
 * normalisers that turn loosely shaped JSON into these types. Field names live here only, so
 * a renamed field is a one-file change. Paths are relative so the UI works wherever the
 * runtime serves it.
 */

import { type Identity, authHeaders, keySession, parseWhoami, retryAfterSeconds } from "./lib/auth";
import { type FusionWeights, type Layers, parseLayers, parseWeights } from "./lib/mlp";
import { type ApiDoc, parseOpenApi } from "./lib/openapi";

export type Decision = "accept" | "reject";

/** `accept` when `score >= threshold`: the runtime's rule for probabilities and live scores. */
export const decideAtLeast = (score: number, threshold: number): Decision => (score >= threshold ? "accept" : "reject");

/**
 * A failed request: the runtime's `{"error":{"code","message"}}`, or a network failure (status 0).
 * `retryAfter` is the `Retry-After` header in seconds (429 and 503 answers).
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly retryAfter?: number,
  ) {
    super(message);
    this.name = "ApiError";
  }
}

/** What to do about the liveness-session errors, by code. */
const SESSION_ADVICE: Record<string, string> = {
  session_not_found:
    "The liveness session is gone (it expired long ago, the runtime restarted, or another replica has it): start a new challenge.",
  session_expired: "The liveness session ran out of time: start a new challenge.",
  session_busy: "The runtime is still checking this session's previous frames: try again in a moment.",
  session_not_passed: "Only a passed challenge can verify or identify: start a new challenge.",
  session_used: "A challenge serves one verification or identification: start a new challenge.",
  session_subject_mismatch: "The session was opened for another subject: start a new challenge for this one.",
  session_bound_to_subject:
    "This challenge was opened for one subject, so it can only verify that subject: start a challenge without a subject to identify.",
  session_required:
    "This runtime decides only with a passed liveness challenge (FACEKEY_REQUIRE_SESSION=on), not from a still image: use the liveness challenge.",
  session_face_mismatch:
    "The image sent beside the session shows another face than the challenge saw: start a new challenge, or send the session alone.",
};

/**
 * What the user can do about an error, in words, for the statuses access control adds:
 * 401 (key not accepted), 403 (missing scope), 429 (rate limit, locked subject or the key's share
 * of upload memory), 408 (an upload slower than the runtime's floor), 507 (the store, or the
 * key's quota of subjects, is full), and for the liveness-session errors (expired, used, too
 * many open sessions, ...).
 */
export function errorAdvice(e: ApiError): string | undefined {
  const wait = e.retryAfter !== undefined ? `try again in ${e.retryAfter} s` : "try again later";
  if (e.code === "too_many_sessions") return `Too many liveness sessions are open: ${wait}.`;
  const session = SESSION_ADVICE[e.code];
  if (session) return session;
  switch (e.status) {
    case 401:
      return "The runtime did not accept the API key: enter a valid key.";
    case 403:
      if (e.code === "not_subject_creator")
        return "Another key created this subject: only the key that created the subject or an admin key may delete it, or enrol its first face while it has none (or only faces of an older model), since that face decides who it is.";
      return "This API key lacks the scope this needs; ask the operator for a key that has it.";
    case 408:
      return e.code === "body_too_slow"
        ? "The upload was too slow and the runtime stopped waiting: check the connection and send it again."
        : undefined;
    case 429:
      if (e.code === "subject_locked") return `Too many failed verifications locked this subject: ${wait}.`;
      if (e.code === "too_many_uploads") return `This API key is already sending many uploads at once: ${wait}.`;
      if (e.code === "too_many_inferences")
        return `This API key is using its share of the runtime while other keys wait for theirs: ${wait}.`;
      return `Too many requests with this key: ${wait}.`;
    case 503:
      return e.retryAfter !== undefined ? `The runtime is busy: ${wait}.` : undefined;
    case 507:
      if (e.code === "key_subject_quota")
        return "This API key holds as many subjects as one key may create: delete some of them (a key may delete the subjects it created) or ask the operator to raise FACEKEY_MAX_SUBJECTS_PER_KEY.";
      if (e.code === "key_template_quota")
        return "This API key holds as many faces as one key may enrol: delete some (a face needs an admin key; deleting a subject this key created removes its faces too) or ask the operator to raise FACEKEY_MAX_TEMPLATES_PER_KEY.";
      return e.code === "store_full"
        ? "The store is full: delete subjects or faces, or ask the operator to raise its limits."
        : undefined;
    default:
      return undefined;
  }
}

export interface Subject {
  id: string;
  name: string;
  faces: number;
  created_at?: string;
  /** Id of the API key that created it (never the key); absent for subjects from before. */
  created_by?: string;
}

export interface AddedFace {
  subject_id: string;
  face_id: string;
  faces: number;
  /** Overall quality of the enrolled face, when reported. */
  quality?: number;
}

export interface Box {
  x: number;
  y: number;
  width: number;
  height: number;
}

export type Point = readonly [number, number];

export const LANDMARK_NAMES = ["left eye", "right eye", "nose", "left mouth", "right mouth"] as const;

export interface Face {
  box: Box;
  /** Up to five points in image pixels, in the order of [`LANDMARK_NAMES`]. */
  landmarks: Point[];
  confidence?: number;
}

export interface Check {
  score?: number;
  threshold?: number;
  decision?: Decision;
}

export interface MatchResult extends Check {
  distance?: number;
  similarity?: number;
  /** Which value the threshold applies to, judged from the decision (similarity by default). */
  thresholdOn: "similarity" | "distance";
  /** Enrolled templates compared. */
  templates?: number;
}

/** The runtime's liveness verdict: `unknown` (on but could not run) never counts as live. */
export type LivenessState = "live" | "spoof" | "unknown" | "off";

export interface LivenessResult extends Check {
  /** Per-model live scores, e.g. `{dtn: 0.91, minifas: 0.95}`. */
  models: [string, number][];
  /** False when no liveness score was measured (liveness off, or unknown). */
  checked: boolean;
  /** The verdict, when the server sends one. */
  state?: LivenessState;
  /** Why liveness could not run (state `unknown`). */
  reason?: string;
}

const LIVENESS_STATES: LivenessState[] = ["live", "spoof", "unknown", "off"];

function livenessState(v: unknown): LivenessState | undefined {
  return LIVENESS_STATES.find((s) => s === v);
}

export interface QualityResult {
  score?: number;
  /** Sub-scores in [0, 1] (size, sharpness, pose, exposure, `*_score`), in the server's order. */
  parts: [string, number][];
  /** Raw measurements behind them (face_size_px, yaw_degrees, ...). */
  measures: [string, number][];
}

export interface VerifyResult {
  subject?: string;
  face?: Face;
  match: MatchResult;
  liveness: LivenessResult;
  quality: QualityResult;
  features?: [number, number, number];
  probability?: number;
  decision?: Decision;
  threshold?: number;
  layers?: Layers;
  /** Stage timings in milliseconds, in pipeline order, without the total. */
  timings: [string, number][];
  totalMs?: number;
  /** Time inside each model in milliseconds, when the server reports it. */
  inference: [string, number][];
  /** How many faces the detector found in the image. */
  facesDetected?: number;
  /** Checks that failed, e.g. `no_match`, `spoof`, `low_probability`, `replayed_session`. */
  reasons: string[];
  /** How the decision was taken, e.g. `strict` or `fusion`. */
  policy?: string;
  /** What the answer should not be read without, e.g. `matched_on_dlib_only: …` (re-enrol). */
  warnings: string[];
  /** Name of the fusion weights used. */
  weightsName?: string;
  /** The liveness session the verification used, when it used one. */
  session?: string;
  /** With a session: whether the probe was an image sent beside it (else the session's best frame). */
  probeFromImage?: boolean;
}

export interface ScoreResult {
  probability: number;
  decision?: Decision;
  threshold?: number;
  /** Name of the weights file that scored it, when the server gives one. */
  weightsName?: string;
  /** Weight matrices, when the server returns them. */
  weights?: FusionWeights;
  layers?: Layers;
}

export interface Health {
  ok: boolean;
  httpStatus: number;
  status: string;
  reason?: string;
}

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => typeof v === "object" && v !== null && !Array.isArray(v);
const num = (v: unknown): number | undefined => (typeof v === "number" && Number.isFinite(v) ? v : undefined);
const str = (v: unknown): string | undefined => (typeof v === "string" ? v : undefined);
const obj = (v: unknown): Json => (isObject(v) ? v : {});

function decision(v: unknown, live?: unknown): Decision | undefined {
  if (v === "accept" || v === "reject") return v;
  if (typeof live === "boolean") return live ? "accept" : "reject";
  return undefined;
}

/** Numeric entries of an object, in key order, leaving out `skip`. */
function numericEntries(v: unknown, skip: readonly string[] = []): [string, number][] {
  return Object.entries(obj(v)).flatMap(([k, x]) => {
    const n = num(x);
    return n === undefined || skip.includes(k) ? [] : [[k, n] as [string, number]];
  });
}

const QUALITY_PARTS = ["size", "sharpness", "pose", "exposure"];
const LANDMARK_KEYS = [
  ["left_eye"],
  ["right_eye"],
  ["nose"],
  ["mouth_left", "left_mouth"],
  ["mouth_right", "right_mouth"],
];

function point(v: unknown): Point | undefined {
  if (Array.isArray(v)) {
    const [x, y] = v.map(num);
    return x !== undefined && y !== undefined ? [x, y] : undefined;
  }
  const o = obj(v);
  const x = num(o.x);
  const y = num(o.y);
  return x !== undefined && y !== undefined ? [x, y] : undefined;
}

/** A box as `{x,y,width,height}`, `{x,y,w,h}` or `[x1,y1,x2,y2]`. */
export function parseBox(v: unknown): Box | undefined {
  if (Array.isArray(v) && v.length === 4) {
    const [x1, y1, x2, y2] = v.map(num);
    if (x1 === undefined || y1 === undefined || x2 === undefined || y2 === undefined) return undefined;
    return { x: x1, y: y1, width: x2 - x1, height: y2 - y1 };
  }
  const o = obj(v);
  const x = num(o.x);
  const y = num(o.y);
  const width = num(o.width ?? o.w);
  const height = num(o.height ?? o.h);
  if (x === undefined || y === undefined || width === undefined || height === undefined) return undefined;
  return { x, y, width, height };
}

/** Landmarks as an array of points, or as an object keyed `left_eye`, `right_eye`, `nose`, `mouth_left`, `mouth_right`. */
function parseLandmarks(v: unknown): Point[] {
  const list = Array.isArray(v)
    ? v
    : LANDMARK_KEYS.map((keys) => keys.map((k) => obj(v)[k]).find((p) => p !== undefined));
  return list.flatMap((p) => {
    const q = point(p);
    return q ? [q] : [];
  });
}

const LIVENESS_SUMMARY_KEYS = ["score", "threshold", "live", "decision", "checked", "state", "reason"];

/**
 * Per-model live scores from `models`, or from the liveness block itself when it has none:
 * numbers by model name, or model objects carrying `live_score` (or `score`).
 */
function livenessModels(l: Json): [string, number][] {
  const source = isObject(l.models) ? l.models : l;
  return Object.entries(source).flatMap(([name, v]): [string, number][] => {
    if (LIVENESS_SUMMARY_KEYS.includes(name)) return [];
    const score = isObject(v) ? (num(v.live_score) ?? num(v.score)) : source === l ? undefined : num(v);
    return score === undefined ? [] : [[name, score]];
  });
}

/** Which value a match threshold applies to: the one whose comparison agrees with the decision. */
export function matchThresholdOn(m: {
  distance?: number;
  similarity?: number;
  threshold?: number;
  decision?: Decision;
}): "similarity" | "distance" {
  const { distance, similarity, threshold, decision } = m;
  if (similarity === undefined && distance !== undefined) return "distance";
  if (threshold === undefined || decision === undefined) return "similarity";
  const bySimilarity = similarity === undefined ? undefined : similarity >= threshold === (decision === "accept");
  const byDistance = distance === undefined ? undefined : distance <= threshold === (decision === "accept");
  return bySimilarity === false && byDistance === true ? "distance" : "similarity";
}

/** Split a quality block into [0, 1] sub-scores and raw measurements. */
export function splitQuality(v: unknown): QualityResult {
  const q = obj(v);
  const parts: [string, number][] = [];
  const measures: [string, number][] = [];
  for (const [k, n] of numericEntries(q, ["score"])) {
    (QUALITY_PARTS.includes(k) || k.endsWith("_score") ? parts : measures).push([k, n]);
  }
  return { score: num(q.score), parts, measures };
}

function parseFace(v: unknown): Face | undefined {
  const o = obj(v);
  const box = parseBox(o.box ?? o.bbox);
  if (!box) return undefined;
  const landmarks = parseLandmarks(o.landmarks);
  return { box, landmarks, confidence: num(o.confidence ?? o.score) };
}

function parseFeatures(v: unknown): [number, number, number] | undefined {
  if (!Array.isArray(v) || v.length !== 3) return undefined;
  const [a, b, c] = v.map(num);
  return a !== undefined && b !== undefined && c !== undefined ? [a, b, c] : undefined;
}

/** The quality block: an object, or (session verification) a bare score with an optional `quality_detail`. */
function verifyQuality(quality: unknown, detail: unknown): QualityResult {
  const score = num(quality);
  if (score === undefined) return splitQuality(quality);
  const full = splitQuality(detail);
  return { ...full, score: full.score ?? score };
}

/** Normalise a `POST /v1/verify` answer; missing parts stay undefined or empty. */
export function parseVerify(raw: unknown): VerifyResult {
  const r = obj(raw);
  const m = obj(r.match);
  const l = obj(r.liveness);
  const timingsRaw = r.timings_ms ?? r.timings;
  const timings = numericEntries(timingsRaw, ["total"]);
  const faceRaw = r.face ?? (Array.isArray(r.faces) ? r.faces[0] : undefined);
  const matchCore = {
    distance: num(m.distance),
    similarity: num(m.similarity),
    threshold: num(m.threshold),
    decision: decision(m.decision, m.is_match),
  };
  return {
    subject: str(r.subject) ?? str(r.subject_id),
    face: parseFace(faceRaw),
    match: {
      ...matchCore,
      thresholdOn: matchThresholdOn(matchCore),
      templates: num(m.templates),
    },
    liveness: {
      score: num(l.score),
      threshold: num(l.threshold),
      decision: decision(l.decision, l.live),
      models: livenessModels(l),
      checked: l.checked !== false,
      state: livenessState(l.state),
      reason: str(l.reason),
    },
    quality: verifyQuality(r.quality, r.quality_detail),
    features: parseFeatures(r.features),
    probability: num(r.probability),
    decision: decision(r.decision),
    threshold: num(r.threshold),
    layers: parseLayers(r.layers),
    timings,
    totalMs: num(obj(timingsRaw).total),
    inference: numericEntries(r.inference_ms ?? r.inference).filter(([k]) => !k.endsWith("_runs")),
    facesDetected: num(r.faces_detected),
    reasons: (Array.isArray(r.reasons) ? r.reasons : []).flatMap((x) => (typeof x === "string" ? [x] : [])),
    policy: str(r.decision_policy),
    warnings: strings(r.warnings),
    weightsName: str(r.weights) ?? str(obj(r.weights).name),
    session: str(r.session),
    probeFromImage: typeof r.probe_from_image === "boolean" ? r.probe_from_image : undefined,
  };
}

/** Normalise a `POST /v1/score` answer (single feature vector). */
export function parseScore(raw: unknown): ScoreResult {
  const r = obj(raw);
  const probability = num(r.probability);
  if (probability === undefined) {
    throw new ApiError(200, "bad_response", "the score answer has no numeric probability");
  }
  return {
    probability,
    decision: decision(r.decision),
    threshold: num(r.threshold),
    weightsName: str(r.weights) ?? str(obj(r.weights).name),
    weights: parseWeights(r.weights),
    layers: parseLayers(r.layers),
  };
}

function parseSubject(v: unknown): Subject | undefined {
  const o = obj(v);
  const id = str(o.id);
  if (id === undefined) return undefined;
  return {
    id,
    name: str(o.name) ?? id,
    faces: num(o.faces) ?? 0,
    created_at: str(o.created_at),
    created_by: str(o.created_by),
  };
}

/** Normalise `GET /v1/subjects` (`{"subjects":[...]}` or a bare array). */
export function parseSubjects(raw: unknown): Subject[] {
  const list = Array.isArray(raw) ? raw : obj(raw).subjects;
  return (Array.isArray(list) ? list : []).flatMap((s) => {
    const subject = parseSubject(s);
    return subject ? [subject] : [];
  });
}

/** The error a failed response carries, from its JSON body when it has one. */
export function errorFromBody(status: number, body: string, retryAfter?: number): ApiError {
  try {
    const e = obj(obj(JSON.parse(body)).error);
    const code = str(e.code);
    const message = str(e.message);
    if (code || message) return new ApiError(status, code ?? `http_${status}`, message ?? "", retryAfter);
  } catch {
    // Not JSON: fall through to the plain text.
  }
  const text = body.trim().slice(0, 300);
  return new ApiError(status, `http_${status}`, text || `HTTP ${status}`, retryAfter);
}

/** Resolve an API path against the page, so a UI served under a prefix still works. */
export const apiUrl = (path: string): string => path.replace(/^\//, "");

/** What the key prompt says after the runtime answered 401 to the stored key. */
export const KEY_REJECTED =
  "The runtime did not accept the API key (HTTP 401): it was mistyped, or removed from the runtime's keys. Enter a key again.";

/**
 * Every API request goes through here: it carries the session's key (or `key`) as
 * `Authorization: Bearer`, and a 401 to the session's key forgets it, which brings up the key
 * prompt.
 */
async function send(path: string, init?: RequestInit, key: string | undefined = keySession.key()): Promise<Response> {
  const headers = new Headers(init?.headers);
  for (const [name, value] of Object.entries(authHeaders(key))) headers.set(name, value);
  let res: Response;
  try {
    res = await fetch(apiUrl(path), { ...init, headers });
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    throw new ApiError(0, "network", `cannot reach the runtime: ${(e as Error).message}`);
  }
  if (!res.ok) {
    const error = errorFromBody(res.status, await res.text(), retryAfterSeconds(res.headers.get("Retry-After")));
    if (res.status === 401 && key !== undefined && keySession.key() === key) keySession.clear(KEY_REJECTED);
    throw error;
  }
  return res;
}

async function json(path: string, init?: RequestInit, key?: string): Promise<unknown> {
  return bodyOf(path, await send(path, init, key));
}

/** The JSON body of `res`, the answer from `path`; `bad_response` when it is not JSON. */
async function bodyOf(path: string, res: Response): Promise<unknown> {
  try {
    return await res.json();
  } catch {
    throw new ApiError(res.status, "bad_response", `${path} did not answer JSON`);
  }
}

const postJson = (body: unknown, signal?: AbortSignal): RequestInit => ({
  method: "POST",
  headers: { "Content-Type": "application/json" },
  body: JSON.stringify(body),
  signal,
});

/**
 * `GET /v1/auth/whoami`: the id and scopes of the session's key, or of `key` (one a link offers).
 * A runtime without access control (no such route: 404) is reported as an open identity that
 * may do everything.
 */
export async function whoami(signal?: AbortSignal, key?: string): Promise<Identity> {
  try {
    return parseWhoami(await json("/v1/auth/whoami", { signal, cache: "no-store" }, key));
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) {
      return { keyId: "", scopes: ["verify", "enrol", "admin", "metrics"], open: true };
    }
    throw e;
  }
}

/** Most subjects the UI lists (pages of 1 000 followed to the end, up to this many). */
export const MAX_LISTED_SUBJECTS = 10_000;

/** What `listSubjects` found: the subjects, oldest first, and whether more were left out. */
export interface SubjectList {
  subjects: Subject[];
  /** More subjects exist past the last listed: the listing stopped at [`MAX_LISTED_SUBJECTS`]. */
  truncated: boolean;
}

/**
 * `GET /v1/subjects`, every page: the runtime answers a page at a time (oldest first) with a
 * `next` cursor, so one page would leave every subject past the first hundred out of the
 * pickers. It stops at [`MAX_LISTED_SUBJECTS`] and says so (`truncated`): the newer subjects
 * are then reached by id ([`getSubject`]).
 */
export async function listSubjects(signal?: AbortSignal): Promise<SubjectList> {
  const subjects: Subject[] = [];
  let after: string | undefined;
  do {
    const query = new URLSearchParams({ limit: "1000" });
    if (after) query.set("after", after);
    const raw = await json(`/v1/subjects?${query.toString()}`, { signal });
    subjects.push(...parseSubjects(raw));
    after = Array.isArray(raw) ? undefined : str(obj(raw).next);
  } while (after && subjects.length < MAX_LISTED_SUBJECTS);
  return { subjects, truncated: Boolean(after) };
}

const SUBJECT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * A typed subject id as the runtime names subjects: a UUID in its canonical spelling
 * (hyphenated, lower case; the stores compare ids byte for byte, so another spelling names no
 * subject). The text is trimmed and lower-cased; undefined when it is not a UUID.
 */
export function parseSubjectId(text: string): string | undefined {
  const id = text.trim().toLowerCase();
  return SUBJECT_ID.test(id) ? id : undefined;
}

/**
 * A subject id typed in, as sent: its canonical spelling when it is a UUID (an upper-case copy
 * names the subject too), else as typed (trimmed), for the runtime to answer that no such
 * subject exists.
 */
export function typedSubjectId(text: string): string {
  return parseSubjectId(text) ?? text.trim();
}

/** `GET /v1/subjects/{id}` (admin): one subject, by its id (404 `subject_not_found` if unknown). */
export async function getSubject(subjectId: string, signal?: AbortSignal): Promise<Subject> {
  const subject = parseSubject(
    await json(`/v1/subjects/${encodeURIComponent(subjectId)}`, { signal, cache: "no-store" }),
  );
  if (!subject) throw new ApiError(200, "bad_response", "the subject has no id");
  return subject;
}

/** `POST /v1/subjects {"name"}` */
export async function createSubject(name: string): Promise<Subject> {
  const subject = parseSubject(await json("/v1/subjects", postJson({ name })));
  if (!subject) throw new ApiError(201, "bad_response", "the new subject has no id");
  return subject;
}

/** `POST /v1/subjects/{id}/faces` with multipart field `image`. */
export async function addFace(subjectId: string, image: Blob, filename: string): Promise<AddedFace> {
  const form = new FormData();
  form.append("image", image, filename);
  const r = obj(await json(`/v1/subjects/${encodeURIComponent(subjectId)}/faces`, { method: "POST", body: form }));
  return {
    subject_id: str(r.subject_id) ?? subjectId,
    face_id: str(r.face_id) ?? "",
    faces: num(r.faces) ?? 0,
    quality: splitQuality(r.quality).score,
  };
}

/** `DELETE /v1/subjects/{id}` */
export async function deleteSubject(subjectId: string): Promise<void> {
  await send(`/v1/subjects/${encodeURIComponent(subjectId)}`, { method: "DELETE" });
}

/** What `DELETE /v1/subjects/{id}/lockout` did. */
export interface LockoutReleased {
  subject: string;
  /** Whether the subject was locked (the lock is lifted). */
  wasLocked: boolean;
  /** Seconds that were left on the lock. */
  secondsLeft?: number;
}

/** `DELETE /v1/subjects/{id}/lockout` (admin): lift the subject's lock, forget its failures. */
export async function releaseLockout(subjectId: string): Promise<LockoutReleased> {
  const r = obj(await json(`/v1/subjects/${encodeURIComponent(subjectId)}/lockout`, { method: "DELETE" }));
  return {
    subject: str(r.subject) ?? subjectId,
    wasLocked: r.was_locked === true,
    secondsLeft: num(r.seconds_left),
  };
}

/**
 * `POST /v1/verify` with multipart fields `subject`, `image` and, for the forward pass,
 * `include_layers=true` (only an admin key gets scores and layers back).
 */
export async function verify(
  subjectId: string,
  image: Blob,
  filename: string,
  signal?: AbortSignal,
  includeLayers = true,
): Promise<VerifyResult> {
  const form = new FormData();
  form.append("subject", subjectId);
  if (includeLayers) form.append("include_layers", "true");
  form.append("image", image, filename);
  return parseVerify(await json("/v1/verify", { method: "POST", body: form, signal }));
}

/** `POST /v1/score {"features","include_layers":true}` */
export async function score(features: readonly number[], signal?: AbortSignal): Promise<ScoreResult> {
  return parseScore(await json("/v1/score", postJson({ features, include_layers: true }, signal)));
}

/** `GET /healthz` or `GET /readyz`: never throws; a failure is a not-ok health. */
export async function health(path: "/healthz" | "/readyz", signal?: AbortSignal): Promise<Health> {
  try {
    const res = await fetch(apiUrl(path), { signal, cache: "no-store" });
    let body: Json = {};
    try {
      body = obj(await res.json());
    } catch {
      body = {};
    }
    return {
      ok: res.ok,
      httpStatus: res.status,
      status: str(body.status) ?? (res.ok ? "ok" : `HTTP ${res.status}`),
      reason: str(body.reason) ?? str(obj(body.error).message),
    };
  } catch (e) {
    if (e instanceof DOMException && e.name === "AbortError") throw e;
    return { ok: false, httpStatus: 0, status: "unreachable", reason: (e as Error).message };
  }
}

/** `GET /metrics` as text. */
export async function metricsText(signal?: AbortSignal): Promise<string> {
  const res = await send("/metrics", { signal, cache: "no-store" });
  return res.text();
}

/** `GET /openapi.json`, read into the docs view's shape. */
export async function openApi(signal?: AbortSignal): Promise<ApiDoc> {
  return parseOpenApi(await json("/openapi.json", { signal }));
}

// ---- Liveness challenge sessions (issue 13) ----

/** What a challenge asks the person to do; snake_case as in the runtime's API. */
export const CHALLENGE_ACTIONS = ["blink", "turn_left", "turn_right", "look_up", "open_mouth"] as const;
export type ChallengeAction = (typeof CHALLENGE_ACTIONS)[number];

/** Where a challenge session stands; anything but `in_progress` is final. */
export type SessionState = "in_progress" | "passed" | "failed" | "expired";
const SESSION_STATES: SessionState[] = ["in_progress", "passed", "failed", "expired"];

/** One action of the challenge: done or not, and the frame index where it was seen. */
export interface ActionProgress {
  /** An action name; one the UI does not know is kept as sent and shown by name. */
  action: string;
  passed: boolean;
  atFrame?: number;
}

/** `POST /v1/liveness/sessions` → a new session. */
export interface LivenessSession {
  id: string;
  /** The actions, in the order they must be performed. */
  challenge: string[];
  /** RFC 3339, the server's clock. */
  expiresAt?: string;
  /** How many frames the session takes in all. */
  maxFrames?: number;
  /**
   * The server's clock when the session arrived (ms since the epoch, from the answer's `Date`
   * header, the middle of its second), so that `expiresAt` can be read on this device's clock
   * whatever their skew; undefined without a usable header.
   */
  serverTime?: number;
}

/** What the runtime saw in one uploaded frame. */
export interface FrameFeedback {
  index: number;
  faceFound: boolean;
  /** The action this frame completed or showed, if any. */
  actionSeen?: string;
}

/** `POST /v1/liveness/sessions/{id}/frames` → live feedback. */
export interface FramesAnswer {
  state: SessionState;
  framesReceived: number;
  frames: FrameFeedback[];
  /** The action asked for now; undefined when none is left. */
  nextAction?: string;
  actions: ActionProgress[];
}

/** `GET /v1/liveness/sessions/{id}` → the verdict. */
export interface SessionStatus {
  id: string;
  state: SessionState;
  /** Frames the session has taken so far (undefined from a runtime that does not say). */
  framesReceived?: number;
  /** Undefined while the session runs. */
  live?: boolean;
  confidence?: number;
  /** Why a session failed or expired, as codes. */
  reasons: string[];
  actions: ActionProgress[];
  expiresAt?: string;
  /** Diagnostics (admin keys only): numbers by name, e.g. `usable_frames`, `passive_median`. */
  detail?: [string, number][];
}

/** A camera frame to upload: a JPEG and the client's capture time in milliseconds. */
export interface ChallengeFrame {
  jpeg: Blob;
  timestampMs: number;
}

/** The contract's bounds on frames per upload call. */
export const MAX_FRAMES_PER_CALL = 8;

function sessionState(v: unknown): SessionState {
  const s = SESSION_STATES.find((x) => x === v);
  if (!s) throw new ApiError(200, "bad_response", `unknown session state ${JSON.stringify(v)}`);
  return s;
}

const strings = (v: unknown): string[] =>
  (Array.isArray(v) ? v : []).flatMap((x) => (typeof x === "string" ? [x] : []));

function parseActions(v: unknown): ActionProgress[] {
  return (Array.isArray(v) ? v : []).flatMap((a) => {
    const o = obj(a);
    const action = str(o.action);
    return action === undefined ? [] : [{ action, passed: o.passed === true, atFrame: num(o.at_frame) }];
  });
}

/** Normalise a new session; a session without an id is an error. */
export function parseSession(raw: unknown, date?: string | null): LivenessSession {
  const r = obj(raw);
  const id = str(r.id);
  if (!id) throw new ApiError(201, "bad_response", "the new liveness session has no id");
  const at = date ? Date.parse(date) : NaN;
  return {
    id,
    challenge: strings(r.challenge),
    expiresAt: str(r.expires_at),
    maxFrames: num(r.max_frames),
    serverTime: Number.isFinite(at) ? at + 500 : undefined,
  };
}

/** Normalise the feedback to one upload of frames. */
export function parseFramesAnswer(raw: unknown): FramesAnswer {
  const r = obj(raw);
  return {
    state: sessionState(r.state),
    framesReceived: num(r.frames_received) ?? 0,
    frames: (Array.isArray(r.frames) ? r.frames : []).map((f, i) => {
      const o = obj(f);
      return { index: num(o.index) ?? i, faceFound: o.face_found === true, actionSeen: str(o.action_seen) };
    }),
    nextAction: str(r.next_action),
    actions: parseActions(r.actions),
  };
}

/** Normalise a session's status (its verdict once final). */
export function parseSessionStatus(raw: unknown): SessionStatus {
  const r = obj(raw);
  return {
    id: str(r.id) ?? "",
    state: sessionState(r.state),
    framesReceived: num(r.frames_received),
    live: typeof r.live === "boolean" ? r.live : undefined,
    confidence: num(r.confidence),
    reasons: strings(r.reasons),
    actions: parseActions(r.actions),
    expiresAt: str(r.expires_at),
    detail: numericEntries(r.detail),
  };
}

/** Base64 of a blob's bytes (no `data:` prefix), in chunks so large frames do not overflow the stack. */
export async function blobToBase64(blob: Blob): Promise<string> {
  const bytes = new Uint8Array(await blob.arrayBuffer());
  let binary = "";
  for (let i = 0; i < bytes.length; i += 0x8000) {
    binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
  }
  return btoa(binary);
}

/** How frames travel: JSON with base64 images, or multipart with one `timestamp_ms` part before each `frame`. */
export type FrameEncoding = "json" | "multipart";

/** The request body for one upload of frames, in either of the contract's encodings. */
export async function framesBody(frames: readonly ChallengeFrame[], encoding: FrameEncoding): Promise<RequestInit> {
  if (frames.length === 0 || frames.length > MAX_FRAMES_PER_CALL) {
    throw new RangeError(`a frames upload holds 1 to ${MAX_FRAMES_PER_CALL} frames, not ${frames.length}`);
  }
  if (encoding === "multipart") {
    const form = new FormData();
    frames.forEach((f, i) => {
      form.append("timestamp_ms", String(Math.round(f.timestampMs)));
      form.append("frame", f.jpeg, `frame-${i}.jpg`);
    });
    return { method: "POST", body: form };
  }
  const list = await Promise.all(
    frames.map(async (f) => ({ image: await blobToBase64(f.jpeg), timestamp_ms: Math.round(f.timestampMs) })),
  );
  return postJson({ frames: list });
}

const sessionPath = (id: string) => `/v1/liveness/sessions/${encodeURIComponent(id)}`;

/** `POST /v1/liveness/sessions {"subject"?}`: open a challenge session (scope `verify`). */
export async function startSession(subject?: string, signal?: AbortSignal): Promise<LivenessSession> {
  const body = subject ? { subject } : {};
  const path = "/v1/liveness/sessions";
  const res = await send(path, postJson(body, signal));
  return parseSession(await bodyOf(path, res), res.headers.get("date"));
}

/** `POST /v1/liveness/sessions/{id}/frames`: upload 1 to 8 frames, get live feedback. */
export async function sendFrames(
  id: string,
  frames: readonly ChallengeFrame[],
  signal?: AbortSignal,
  encoding: FrameEncoding = "json",
): Promise<FramesAnswer> {
  const init = await framesBody(frames, encoding);
  return parseFramesAnswer(await json(`${sessionPath(id)}/frames`, { ...init, signal }));
}

/**
 * `DELETE /v1/liveness/sessions/{id}`: give the session up; the runtime frees its place at once.
 * `key`: the key that opened it, when the session's key may be gone by then (signed out).
 * `keepalive`: the request outlives the page (sent as the tab closes or reloads).
 */
export async function closeSession(id: string, key?: string): Promise<void> {
  await send(sessionPath(id), { method: "DELETE", keepalive: true }, key);
}

/** `GET /v1/liveness/sessions/{id}`: the session's state, and its verdict once final. */
export async function sessionStatus(id: string, signal?: AbortSignal): Promise<SessionStatus> {
  return parseSessionStatus(await json(sessionPath(id), { signal, cache: "no-store" }));
}

/**
 * `POST /v1/verify {"subject","session"}`: verify with a passed challenge session instead of an
 * image (its best frame is the probe). A session verifies once.
 */
export async function verifySession(
  subjectId: string,
  sessionId: string,
  signal?: AbortSignal,
  includeLayers = true,
): Promise<VerifyResult> {
  const body = { subject: subjectId, session: sessionId, ...(includeLayers ? { include_layers: true } : {}) };
  return parseVerify(await json("/v1/verify", postJson(body, signal)));
}

// ---- Identification (1:N) ----

/** A subject as an identification names it. */
export interface CandidateSubject {
  id: string;
  name: string;
}

/**
 * One subject an identification accepted the face as. The scores come to an admin key only
 * (another key gets the subject alone).
 */
export interface IdentifyCandidate {
  subject: CandidateSubject;
  /** Similarity in [0, 1] of the subject's closest template. */
  similarity?: number;
  /** Euclidean distance of that template. */
  distance?: number;
  /** The fused probability for this subject. */
  probability?: number;
  /** The embedding models the similarity came from, e.g. `["dlib", "faceres"]`. */
  models: string[];
}

/**
 * A `POST /v1/identify` answer: the subjects the face was accepted as, best first (empty when
 * none), the decision and why the best match was rejected; for an admin key also the probe's
 * face, liveness, quality and timings, read as a verification's (`face`, `faces_detected`,
 * `liveness`, `quality`, `decision_policy`, `timings_ms`, `inference_ms`), or, with a session,
 * the session, its challenge and the probe's source.
 */
export interface IdentifyResult extends Pick<
  VerifyResult,
  | "face"
  | "facesDetected"
  | "liveness"
  | "quality"
  | "decision"
  | "threshold"
  | "reasons"
  | "policy"
  | "timings"
  | "totalMs"
  | "inference"
  | "session"
  | "probeFromImage"
> {
  candidates: IdentifyCandidate[];
  /** Templates of the serving model searched (every one: the search is exact). */
  templatesSearched?: number;
  /** With a session (admin): the challenge it passed. */
  challenge: string[];
}

/** The contract's bounds of `limit`, how many of the nearest subjects an identification judges. */
export const IDENTIFY_LIMIT = { min: 1, max: 100, default: 5 } as const;

function parseCandidate(v: unknown): IdentifyCandidate | undefined {
  const o = obj(v);
  const subject = obj(o.subject);
  const id = str(subject.id);
  if (id === undefined) return undefined;
  return {
    subject: { id, name: str(subject.name) ?? id },
    similarity: num(o.similarity),
    distance: num(o.distance),
    probability: num(o.probability),
    models: strings(o.models),
  };
}

/** Normalise a `POST /v1/identify` answer; one without a `candidates` list is an error. */
export function parseIdentify(raw: unknown): IdentifyResult {
  const r = obj(raw);
  if (!Array.isArray(r.candidates)) {
    throw new ApiError(200, "bad_response", "the identification answer has no candidates list");
  }
  const v = parseVerify(raw);
  return {
    candidates: r.candidates.flatMap((c) => {
      const candidate = parseCandidate(c);
      return candidate ? [candidate] : [];
    }),
    templatesSearched: num(r.templates_searched),
    challenge: strings(r.challenge),
    face: v.face,
    facesDetected: v.facesDetected,
    liveness: v.liveness,
    quality: v.quality,
    decision: v.decision,
    threshold: v.threshold,
    reasons: v.reasons,
    policy: v.policy,
    timings: v.timings,
    totalMs: v.totalMs,
    inference: v.inference,
    session: v.session,
    probeFromImage: v.probeFromImage,
  };
}

/**
 * `POST /v1/identify` with multipart fields `image` and, when given, `limit`: who is this among
 * every enrolled subject? (scope `verify`; only an admin key gets scores back).
 */
export async function identify(
  image: Blob,
  filename: string,
  signal?: AbortSignal,
  limit?: number,
): Promise<IdentifyResult> {
  const form = new FormData();
  if (limit !== undefined) form.append("limit", String(limit));
  form.append("image", image, filename);
  return parseIdentify(await json("/v1/identify", { method: "POST", body: form, signal }));
}

/**
 * `POST /v1/identify {"session","limit"?}`: identify with a passed challenge session opened
 * without a subject (its best frame is the probe). A session serves one identification or
 * verification; one bound to a subject is refused (422 `session_bound_to_subject`).
 */
export async function identifySession(
  sessionId: string,
  signal?: AbortSignal,
  limit?: number,
): Promise<IdentifyResult> {
  const body = { session: sessionId, ...(limit !== undefined ? { limit } : {}) };
  return parseIdentify(await json("/v1/identify", postJson(body, signal)));
}
