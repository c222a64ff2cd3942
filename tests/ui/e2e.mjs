#!/usr/bin/env node
// Browser end-to-end test of the FaceKey UI, driving Debian's Chromium with playwright-core
// against a running runtime. Run through run.sh, which prepares the fake camera.
//
// Environment:
//   FACEKEY_URL            base URL of the runtime serving the UI (required)
//   FACEKEY_FAKE_CAMERA    absolute path of a .y4m file the fake camera shows (required)
//   FACEKEY_FACE_IMAGE     face image to enrol (required)
//   FACEKEY_API_KEY        an admin API key of the runtime; the test opens its login URL
//                          `${FACEKEY_URL}/#key=${FACEKEY_API_KEY}` and signs in with the key the
//                          prompt offers (required when the runtime has API keys, and always with
//                          FACEKEY_E2E_STRICT=1)
//   FACEKEY_E2E_SHOTS      directory for screenshots (default: a new temp dir)
//   FACEKEY_E2E_SHOTS_ALL  1 = screenshot every step, not only failures
//   FACEKEY_E2E_STRICT     1 = fail, instead of skipping, the steps whose endpoints the runtime's
//                          openapi.json does not list (face enrolment, verification,
//                          identification), and fail at once without FACEKEY_API_KEY
//   FACEKEY_E2E_SCHEME     light (default) or dark: the colour scheme the page is shown in
//   CHROMIUM               browser binary (default /usr/bin/chromium)
//   FACEKEY_CHALLENGE_CAMERA  absolute path of a .y4m of a person performing the challenge actions
//                          (run.sh makes one with `facekey-eval sequences --y4m` when the eval
//                          binary can); unset: the liveness challenge runs on Chromium's built-in
//                          fake camera pattern, which shows no face, and must end failed or
//                          expired with reasons after "no face found" feedback
//   FACEKEY_CHALLENGE_EXPECT  with FACEKEY_CHALLENGE_CAMERA: `passed` (run.sh's default with the
//                          lab's clip: the challenge must pass within FACEKEY_CHALLENGE_ATTEMPTS
//                          runs, and the verification with the passed session must be shown and
//                          accept the enrolled subject, whose photo the clip animates),
//                          `progress` (face found, at least one action seen, a final verdict) or
//                          `verdict` (default: face found and a final verdict). With `passed` the
//                          identify view's challenge (a session opened without a subject) must
//                          pass too and its identification must name the enrolled subject;
//                          otherwise that step is skipped
//   FACEKEY_CHALLENGE_ACTIONS  the challenge FACEKEY_CHALLENGE_CAMERA performs, in order, e.g.
//                          `open_mouth,blink` (run.sh sets it with the lab's clip): the challenge
//                          browser redraws every session the page opens until the runtime asks
//                          for exactly that (see below); unset, sessions are taken as drawn
//   FACEKEY_CHALLENGE_ATTEMPTS  runs of the challenge `passed` allows (default 3), as a person who
//                          is not seen tries again: a run before the last may only end unfinished
//                          (challenge_incomplete, expired, or a pass whose session expired before
//                          its verification reached it); any other reason (duplicate_frames,
//                          face_changed, timing...) fails at once. Each run's challenge, verdict,
//                          reasons and frames are printed.
//
// What `passed` shows: the real UI, in a real browser, opens a session, follows its instructions
// while Chromium's fake camera plays a synthetic clip, uploads the frames to the real runtime,
// whose models and checker see the actions and pass it, and verifies with it. What it does not:
// a real person. The clip (tests/ui/run.sh) is the evaluation lab's rendering of one photo
// performing one challenge over and over (open mouth, then blink), not a capture; it does not
// follow the instructions. The runtime fails a session in which an action the challenge does not
// hold is done (`unrequested_action`), so no clip can pass every challenge; the challenge browser
// therefore answers the page's session-open request itself: it opens sessions on the runtime and
// closes them until one asks for the clip's challenge (1 in 40 draws), and gives the page that
// one, as a client holding a recording would (the runtime counts those closed sessions in
// facekey_liveness_sessions_unperformed_total). Everything after the open is the page's own. The
// clip holds only its challenge's actions, none of which the runtime counts as left out, so it
// passes from wherever it is when the session opens. The runtime's sessions must end before the
// clip loops (a later loop's frames are exact repeats): with `passed` the test checks the first
// session's lifetime and frame budget against the clip's length and fails with what to change.

import { closeSync, mkdtempSync, mkdirSync, openSync, readSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { chromium } from "playwright-core";

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`e2e: ${name} is not set`);
    process.exit(2);
  }
  return value;
}

const BASE = required("FACEKEY_URL").replace(/\/+$/, "");
const CAMERA = required("FACEKEY_FAKE_CAMERA");
const FACE = required("FACEKEY_FACE_IMAGE");
const SHOTS = process.env.FACEKEY_E2E_SHOTS ?? mkdtempSync(join(tmpdir(), "facekey-e2e-shots-"));
const SHOTS_ALL = process.env.FACEKEY_E2E_SHOTS_ALL === "1";
const STRICT = process.env.FACEKEY_E2E_STRICT === "1";
const STEP_TIMEOUT = 30_000;
const KEY = process.env.FACEKEY_API_KEY ?? "";
const KEY_STORAGE_NAME = "facekey.api_key";
mkdirSync(SHOTS, { recursive: true });

const NO_KEY =
  "e2e: FACEKEY_API_KEY is not set: the UI test needs an admin API key of the runtime at FACEKEY_URL " +
  "(the key in the login URL its start-up log prints, or `facekey-runtime new-api-key e2e --scopes admin` " +
  "with the printed line in its API keys file)";

/** The runtime's answer to whoami with `key`: its status and body. */
async function whoamiStatus(key) {
  try {
    const res = await fetch(`${BASE}/v1/auth/whoami`, { headers: key ? { Authorization: `Bearer ${key}` } : {} });
    return { status: res.status, body: await res.json().catch(() => undefined) };
  } catch (e) {
    return { status: 0, body: String(e) };
  }
}

if (STRICT && !KEY) {
  console.error(NO_KEY);
  process.exit(2);
}
const keyless = await whoamiStatus(undefined);
/** True for a runtime without access control (no whoami route): the key steps are skipped. */
const OPEN_RUNTIME = keyless.status === 404;
if (OPEN_RUNTIME && STRICT) {
  console.error("e2e: the runtime has no GET /v1/auth/whoami (no API keys); FACEKEY_E2E_STRICT=1 needs one with keys");
  process.exit(1);
}
if (!OPEN_RUNTIME && !KEY) {
  console.error(NO_KEY);
  process.exit(2);
}
const identity = KEY && !OPEN_RUNTIME ? await whoamiStatus(KEY) : undefined;
if (identity && identity.status !== 200) {
  console.error(`e2e: the runtime answers ${identity.status} to FACEKEY_API_KEY on GET /v1/auth/whoami: ${JSON.stringify(identity.body)}`);
  process.exit(1);
}
if (identity && !identity.body?.scopes?.includes("admin")) {
  console.error(`e2e: FACEKEY_API_KEY is not an admin key (scopes ${JSON.stringify(identity.body?.scopes)})`);
  process.exit(1);
}

/** "POST /v1/subjects/{id}/faces" and "POST /v1/subjects/{subject_id}/faces" are one operation. */
const operationKey = (op) => op.replace(/\{[^}]*\}/g, "{}");

/** The operations the runtime documents, e.g. "POST /v1/verify"; undefined when it documents none. */
async function documentedOperations() {
  try {
    const res = await fetch(`${BASE}/openapi.json`);
    if (!res.ok) return undefined;
    const doc = await res.json();
    return new Set(
      Object.entries(doc.paths ?? {}).flatMap(([path, item]) =>
        Object.keys(item).map((m) => operationKey(`${m.toUpperCase()} ${path}`)),
      ),
    );
  } catch {
    return undefined;
  }
}
const operations = await documentedOperations();
/** Why a step cannot run against this runtime, or undefined when it can. */
function missing(...ops) {
  if (STRICT || operations === undefined) return undefined;
  const absent = ops.filter((op) => !operations.has(operationKey(op)));
  return absent.length > 0 ? `the runtime's openapi.json has no ${absent.join(", ")}` : undefined;
}
const FACES = "POST /v1/subjects/{id}/faces";
const VERIFY = "POST /v1/verify";
const IDENTIFY = "POST /v1/identify";
const SESSIONS = "POST /v1/liveness/sessions";
const SESSION_FRAMES = "POST /v1/liveness/sessions/{id}/frames";
const SESSION_GET = "GET /v1/liveness/sessions/{id}";
const CHALLENGE_CAMERA = process.env.FACEKEY_CHALLENGE_CAMERA ?? "";
/** The challenge the camera's clip performs, in order; empty: sessions are taken as drawn. */
const CHALLENGE_ACTIONS = CHALLENGE_CAMERA
  ? (process.env.FACEKEY_CHALLENGE_ACTIONS ?? "").split(",").map((a) => a.trim()).filter((a) => a !== "")
  : [];
/** Draws a redrawn session open may take: 80 challenges, the clip's drawn 1 in 40 or 1 in 120. */
const REDRAWS_MAX = 1200;
/**
 * When each session the challenge browser kept was opened (ms since the epoch, taken before its
 * open was sent), by id: a redrawn open answers the page long after its request left.
 */
const OPENED_AT = new Map();
/** The least session lifetime in which the looping clip can pass (see expectPassableSession). */
const SESSION_MIN_SECONDS = 12;
const CHALLENGE_EXPECT = CHALLENGE_CAMERA ? (process.env.FACEKEY_CHALLENGE_EXPECT ?? "verdict") : "noface";
if (!["passed", "progress", "verdict", "noface"].includes(CHALLENGE_EXPECT)) {
  console.error(`e2e: FACEKEY_CHALLENGE_EXPECT is ${CHALLENGE_EXPECT}, not passed, progress or verdict`);
  process.exit(2);
}
/** Runs of the challenge a `passed` expectation allows, as a person who is not seen tries again. */
const CHALLENGE_ATTEMPTS = Number(process.env.FACEKEY_CHALLENGE_ATTEMPTS ?? 3);
/** Reasons that only say the challenge was not finished: the one kind of try that may be repeated. */
const UNFINISHED = new Set(["challenge_incomplete", "expired", "session_expired"]);

/**
 * Seconds one loop of a y4m lasts (its frames over its frame rate), or undefined when the file is
 * not a plain 4:2:0 y4m whose size is a whole number of frames.
 */
function y4mSeconds(file) {
  try {
    const fd = openSync(file, "r");
    const head = Buffer.alloc(256);
    const n = readSync(fd, head, 0, head.length, 0);
    closeSync(fd);
    const line = head.subarray(0, n).toString("latin1").split("\n")[0];
    const tag = (t) => line.split(" ").find((p) => p.startsWith(t))?.slice(1);
    const [w, h] = [Number(tag("W")), Number(tag("H"))];
    const [num, den] = (tag("F") ?? "").split(":").map(Number);
    const chroma = tag("C") ?? "420";
    if (!line.startsWith("YUV4MPEG2 ") || !(w > 0 && h > 0 && num > 0 && den > 0) || !chroma.startsWith("420")) return undefined;
    const frame = "FRAME\n".length + w * h + 2 * Math.ceil(w / 2) * Math.ceil(h / 2);
    const frames = (statSync(file).size - line.length - 1) / frame;
    return Number.isInteger(frames) && frames > 0 ? (frames * den) / num : undefined;
  } catch {
    return undefined;
  }
}
/** How long the challenge camera's clip plays before Chromium starts it again. */
const CHALLENGE_LOOP_SECONDS = CHALLENGE_CAMERA ? y4mSeconds(CHALLENGE_CAMERA) : undefined;

const pageErrors = [];
/** Every camera track the page opens, so a test can check they were all stopped. */
const TRACK_SPY = () => {
  const md = navigator.mediaDevices;
  if (!md?.getUserMedia) return;
  const original = md.getUserMedia.bind(md);
  window.__facekeyTracks = [];
  md.getUserMedia = async (constraints) => {
    const stream = await original(constraints);
    window.__facekeyTracks.push(...stream.getTracks());
    return stream;
  };
};

/** A fresh Chromium profile whose fake camera shows `cameraFile` (a y4m), or the built-in pattern. */
async function launch(cameraFile) {
  const dir = mkdtempSync(join(tmpdir(), "facekey-e2e-profile-"));
  const ctx = await chromium.launchPersistentContext(dir, {
    executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
    headless: true,
    viewport: { width: 1280, height: 900 },
    colorScheme: process.env.FACEKEY_E2E_SCHEME === "dark" ? "dark" : "light",
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--use-fake-ui-for-media-stream",
      "--use-fake-device-for-media-stream",
      ...(cameraFile ? [`--use-file-for-fake-video-capture=${cameraFile}`] : []),
    ],
  });
  ctx.setDefaultTimeout(STEP_TIMEOUT);
  await ctx.addInitScript(TRACK_SPY);
  const pg = ctx.pages()[0] ?? (await ctx.newPage());
  pg.on("pageerror", (e) => pageErrors.push(e.message));
  pg.on("console", (m) => {
    if (m.type() === "error") console.log(`  browser console: ${m.text()}`);
  });
  return { ctx, pg, dir };
}

const main = await launch(CAMERA);
const context = main.ctx;
const userDataDir = main.dir;
/** The page the steps drive (the challenge steps switch it to their own browser). */
let page = main.pg;

let passed = 0;
let failed = 0;
let skipped = 0;

async function shot(name) {
  const file = join(SHOTS, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true }).catch(() => undefined);
  return file;
}

/**
 * Run one step; after the first failure the remaining steps are skipped, and so is a step
 * whose `needs` the runtime does not offer yet (unless FACEKEY_E2E_STRICT=1).
 */
async function step(name, fn, needs = []) {
  const absent = missing(...needs);
  if (failed > 0 || absent) {
    skipped += 1;
    console.log(`skip ${name}${absent ? `: ${absent} (FACEKEY_E2E_STRICT=1 fails instead)` : ""}`);
    return;
  }
  const t0 = Date.now();
  try {
    await fn();
    if (pageErrors.length > 0) throw new Error(`uncaught page error: ${pageErrors.join("; ")}`);
    passed += 1;
    console.log(`ok   ${name} (${Date.now() - t0} ms)`);
    if (SHOTS_ALL) await shot(name);
  } catch (e) {
    failed += 1;
    const file = await shot(`FAILED-${name}`);
    console.log(`FAIL ${name}: ${e instanceof Error ? e.message : e}`);
    for (const box of await page.getByTestId("error").allTextContents().catch(() => [])) {
      console.log(`     error shown: ${box}`);
    }
    console.log(`     screenshot: ${file}`);
  }
}

function expect(condition, message) {
  if (!condition) throw new Error(message);
}

async function text(selector) {
  return ((await page.locator(selector).first().textContent()) ?? "").trim();
}

/** Wait until the element's trimmed text satisfies `test`, then return it. */
async function waitText(selector, test, what) {
  const deadline = Date.now() + STEP_TIMEOUT;
  let last = "";
  while (Date.now() < deadline) {
    last = await text(selector).catch(() => "");
    if (test(last)) return last;
    await page.waitForTimeout(100);
  }
  throw new Error(`${what}: ${selector} shows ${JSON.stringify(last)}`);
}

const number = (s) => Number(s.replace(/[^0-9.\-]/g, ""));
const subjectName = `E2E Astronaut ${Date.now()}`;

const storedKey = () => page.evaluate((name) => sessionStorage.getItem(name), KEY_STORAGE_NAME);

/** The header shows the key id and the scopes whoami gives for it. */
async function expectSignedIn() {
  await waitText('[data-testid="key-id"]', (t) => t === identity.body.key_id, "key id in the header");
  const scopes = await page.getByTestId("key-scopes").getAttribute("data-scopes");
  expect(scopes === identity.body.scopes.join(" "), `header scopes ${scopes}, whoami ${identity.body.scopes}`);
  const can = await text('[data-testid="key-can"]');
  expect(can.includes("verify faces") && can.includes("delete subjects"), `header says the key ${JSON.stringify(can)}`);
}

/**
 * Open `path` by the login URL (`#key=`) and sign in: the key prompt shows the link's key, filled
 * in, and signs in with it only on a click.
 */
async function openLoginUrl(path) {
  if (OPEN_RUNTIME) {
    await page.goto(`${BASE}${path}`);
    return;
  }
  await page.goto(`${BASE}${path}#key=${KEY}`);
  await page.getByTestId("key-offered").waitFor();
  expect((await storedKey()) === null, "the login URL signed in without a click");
  await page.getByTestId("key-submit").click();
}

await step("login-url-and-health-badge", async () => {
  await openLoginUrl("/");
  await page.locator('[data-testid="health-badge"][data-state="ok"]').waitFor();
  await page.locator('[data-testid="ready-badge"][data-state="ok"]').waitFor({ timeout: 90_000 });
  expect((await page.title()) === "Verify · FaceKey", `page title is ${await page.title()}`);
  if (OPEN_RUNTIME) {
    console.log("     the runtime has no API keys: key steps skipped");
    await page.locator('[data-testid="key-badge"][data-open="true"]').waitFor();
    return;
  }
  await expectSignedIn();
  const url = page.url();
  expect(!url.includes(KEY) && !url.includes("key="), `the key is still in the address: ${url}`);
  expect(new URL(url).hash === "", `the address keeps a fragment: ${url}`);
  expect((await storedKey()) === KEY, "the key is not in sessionStorage");
  const inHistory = await page.evaluate(() => `${location.href} ${JSON.stringify(history.state)}`);
  expect(!inHistory.includes(KEY), "the key is in the history entry");
});

await step("score-fusion-worked-example", async () => {
  await page.getByTestId("tab-fusion").click();
  await waitText('[data-testid="score-probability"]', (t) => t === "0.77", "probability");
  expect((await text('[data-testid="score-probability-exact"]')) === "(0.7685)", "exact probability is not 0.7685");
  expect((await text('[data-testid="score-decision"]')).includes("accept"), "decision is not accept");
  const layers = {
    z1: "[+0.80, -1.20, +0.40, +2.00]",
    a1: "[+0.80, 0.00, +0.40, +2.00]",
    z2: "[+1.10, -0.30, +0.50]",
    a2: "[+1.10, 0.00, +0.50]",
    z3: "[+1.20]",
    p: "[0.7685]",
  };
  for (const [name, want] of Object.entries(layers)) {
    const got = await text(`[data-testid="layer-${name}"]`);
    expect(got === want, `layer ${name} shows ${got}, expected ${want}`);
  }
  const drawn = {
    "node-h1_0": ["0.80", "z +0.80"],
    "node-h1_1": ["0.00", "z -1.20"],
    "node-h1_2": ["0.40", "z +0.40"],
    "node-h1_3": ["2.00", "z +2.00"],
    "node-h2_0": ["1.10", "z +1.10"],
    "node-h2_1": ["0.00", "z -0.30"],
    "node-h2_2": ["0.50", "z +0.50"],
    "node-out": ["0.77", "z3 +1.20"],
  };
  for (const [id, [a, z]] of Object.entries(drawn)) {
    const gotA = await text(`[data-testid="${id}"] .node-a`);
    const gotZ = await text(`[data-testid="${id}"] .node-z`);
    expect(gotA === a && gotZ === z, `${id} drawn as ${gotA} / ${gotZ}, expected ${a} / ${z}`);
  }
  expect((await text('[data-testid="node-out"] .node-p')) === "0.7685", "output node does not show p = 0.7685");
  expect((await page.locator('[data-testid="network"] .edges line').count()) === 27, "the network has not 27 edges");
  expect((await page.locator('[data-testid="node-h1_1"] circle[stroke-dasharray]').count()) === 1, "inactive node not dashed");
});

await step("score-fusion-interactive-and-error", async () => {
  await page.getByTestId("feature-0").fill("0");
  await waitText('[data-testid="score-probability"]', (t) => t !== "0.77" && t !== "", "probability after x1 = 0");
  const z3 = number(await text('[data-testid="layer-z3"]'));
  const p = number(await text('[data-testid="score-probability-exact"]'));
  expect(Math.abs(1 / (1 + Math.exp(-z3)) - p) < 0.006, `p ${p} is not sigmoid(z3 ${z3})`);
  await page.getByTestId("feature-0").fill("10000000");
  await waitText('[data-testid="error"]', (t) => t.includes("HTTP 422") && t.includes("invalid_features"), "error box");
  await page.getByTestId("reset-features").click();
  await waitText('[data-testid="score-probability"]', (t) => t === "0.77", "probability after reset");
  await page.getByTestId("error").waitFor({ state: "detached" });
});

await step("enrol-create-subject", async () => {
  await page.getByTestId("tab-enrol").click();
  await page.getByTestId("subject-name").fill(subjectName);
  await page.getByTestId("create-subject").click();
  await waitText('[data-testid="enrol-status"]', (t) => t.startsWith("Created"), "status after create");
  expect((await text('[data-testid="face-target"]')) === subjectName, "the new subject is not selected");
  await page.locator(`[data-testid="subject-row"][data-name="${subjectName}"]`).waitFor();
});

await step("enrol-upload-face", async () => {
  await page.getByTestId("file-input").setInputFiles(FACE);
  await page.getByTestId("add-face").click();
  await waitText('[data-testid="enrol-status"]', (t) => t.startsWith("Added face"), "status after adding the face");
  const row = page.locator(`[data-testid="subject-row"][data-name="${subjectName}"]`);
  await row.waitFor();
  await waitText(`[data-testid="subject-row"][data-name="${subjectName}"] [data-testid="subject-faces"]`, (t) => t === "1", "face count");
  // The subject names the key that created it (the e2e signs in with its admin key).
  const by = await text(`[data-testid="subject-row"][data-name="${subjectName}"] [data-testid="subject-created-by"]`);
  expect(/by key \S+/.test(by), `the subject's creator reads ${JSON.stringify(by)}`);
  // The key's use of its quotas, asked again after the write (an admin key has no per-key limit).
  await waitText('[data-testid="key-quotas"]', (t) => /[1-9][\d,]* (of [\d,]+ )?faces? enrolled/.test(t), "the key's quotas");
  // An admin row lifts a lockout through the real route (nothing is locked yet: it says so).
  await row.getByTestId("subject-unlock").click();
  await waitText('[data-testid="enrol-status"]', (t) => t.startsWith(`${subjectName} was not locked`), "status after unlock");
}, [FACES]);

await step("verify-with-camera", async () => {
  await page.getByTestId("tab-verify").click();
  const select = page.getByTestId("verify-subject");
  await select.locator("option", { hasText: subjectName }).waitFor({ state: "attached" });
  const value = await select.locator("option", { hasText: subjectName }).getAttribute("value");
  await select.selectOption(value);
  await page.locator('label:has([data-testid="source-camera"])').click();
  const capture = page.getByTestId("capture");
  await page.waitForFunction(() => {
    const b = document.querySelector('[data-testid="capture"]');
    return b instanceof HTMLButtonElement && !b.disabled;
  });
  await capture.click();
  await page.locator('img[alt^="Image to verify"]').waitFor();
  // The frame taken, the camera is off (no camera light while the result is read), until Retake.
  await page.getByTestId("retake").waitFor();
  await page.waitForFunction(() => (window.__facekeyTracks ?? []).every((t) => t.readyState !== "live"));
  await page.getByTestId("verify-submit").click();
  await page.locator('[data-testid="verify-result"], [data-testid="error"]').first().waitFor({ timeout: 60_000 });
  if (await page.getByTestId("error").count()) {
    throw new Error(`verification failed: ${await text('[data-testid="error"]')}`);
  }
  const decision = await text('[data-testid="verify-decision"]');
  expect(/accept|reject/.test(decision), `no decision shown (${decision})`);
  const probability = number(await text('[data-testid="verify-probability"]'));
  expect(probability >= 0 && probability <= 1, `probability ${probability} outside [0, 1]`);
  await page.getByTestId("face-overlay").waitFor();
  expect((await page.locator('[data-testid="face-overlay"] circle').count()) === 5, "not 5 landmarks drawn");
  expect((await page.locator('[data-testid="timings"] li').count()) > 0, "no stage timings shown");
  const drawn = page.locator('[data-testid="verify-result"] [data-testid="network"] [data-testid="node-out"] .node-p');
  expect(
    Math.abs(number(await drawn.textContent()) - probability) < 1e-4,
    "the verification's forward pass (include_layers) is not drawn with its probability",
  );
  console.log(`     decision: ${decision}, probability ${probability}`);
}, [FACES, VERIFY]);

await step("verify-new-image-drops-the-answer-in-flight", async () => {
  // A verification is sent, then another image is picked before its answer: the answer about
  // the first image must not be shown (nor its face box drawn) over the second.
  await page.locator('label:has([data-testid="source-upload"])').click();
  await page.getByTestId("file-input").setInputFiles(FACE);
  await page.locator('img[alt^="Image to verify"]').waitFor();
  const ended = page.waitForEvent("requestfailed", (r) => r.url().endsWith("/v1/verify"));
  const answered = page.waitForEvent("requestfinished", (r) => r.url().endsWith("/v1/verify"));
  await page.getByTestId("verify-submit").click();
  await waitText('[data-testid="verify-submit"]', (t) => t.startsWith("Verifying"), "the busy button");
  await page.getByTestId("file-input").setInputFiles(FACE);
  const first = await Promise.race([ended.then(() => "dropped"), answered.then(() => "answered")]);
  expect(first === "dropped", "the first image's verification was not dropped when the second was picked");
  // Give an answer that did arrive the time to be drawn, then look.
  await page.waitForTimeout(500);
  expect((await page.getByTestId("verify-result").count()) === 0, `the first image's answer (${first}) is shown over the second`);
  expect(!(await page.getByTestId("verify-submit").isDisabled()), "the form stays busy after the new image");
}, [FACES, VERIFY]);

/**
 * The identification the page shows: its decision, the best match's name, and the candidates
 * (name, subject id, probability when the key may see scores), read in one go.
 */
function shownIdentification(scope) {
  return page.evaluate((root) => {
    const within = document.querySelector(root) ?? document;
    const t = (el) => (el?.textContent ?? "").trim();
    return {
      decision: t(within.querySelector('[data-testid="identify-decision"]')),
      best: t(within.querySelector('[data-testid="identify-best"] strong')),
      reasons: t(within.querySelector('[data-testid="identify-reasons"]')),
      candidates: [...within.querySelectorAll('[data-testid="identify-candidate"]')].map((row) => ({
        id: row.getAttribute("data-subject") ?? "",
        name: t(row.querySelector('[data-testid="candidate-name"]')),
        probability: t(row.querySelector('[data-testid="candidate-probability"]')),
      })),
    };
  }, scope);
}

/** The enrolled subject is among the candidates shown, accepted, with a probability in [0, 1] (admin). */
function expectIdentified(shown, where) {
  const mine = shown.candidates.find((c) => c.name === subjectName);
  expect(/accept/.test(shown.decision), `${where}: decision ${JSON.stringify(shown.decision)} (${shown.reasons}), not accept`);
  expect(mine !== undefined, `${where}: ${subjectName} is not among the candidates ${JSON.stringify(shown.candidates)}`);
  expect(mine.id !== "", `${where}: the candidate has no subject id`);
  const p = number(mine.probability);
  expect(mine.probability !== "" && p >= 0 && p <= 1, `${where}: the candidate's probability reads ${JSON.stringify(mine.probability)}`);
  return mine;
}

await step("identify-upload", async () => {
  await page.getByTestId("tab-identify").click();
  expect(new URL(page.url()).pathname.endsWith("/identify"), `the identify tab went to ${page.url()}`);
  // The limit box refuses what the runtime would (1 to 100), before anything is sent.
  await page.getByTestId("file-input").setInputFiles(FACE);
  await page.locator('img[alt^="Image to identify"]').waitFor();
  await page.getByTestId("identify-limit").fill("0");
  await waitText('[data-testid="identify-limit-help"]', (t) => t.includes("from 1 to 100"), "limit help");
  expect(await page.getByTestId("identify-submit").isDisabled(), "identify is offered with limit 0");
  await page.getByTestId("identify-limit").fill("3");
  await page.getByTestId("identify-submit").click();
  await page.locator('[data-testid="identify-result"], [data-testid="error"]').first().waitFor({ timeout: 60_000 });
  if (await page.getByTestId("error").count()) {
    throw new Error(`identification failed: ${await text('[data-testid="error"]')}`);
  }
  const shown = await shownIdentification('[data-testid="identify-result"]');
  // The uploaded image is the enrolled photo: its subject must be found.
  const mine = expectIdentified(shown, "identification of the enrolled photo");
  expect(shown.candidates.length <= 3, `limit 3, but ${shown.candidates.length} candidates shown`);
  expect((await page.getByTestId("identify-enrol-hint").count()) === 0, "the enrol hint is still shown though templates were searched");
  expect(shown.best !== "", "no best match shown");
  await page.getByTestId("face-overlay").waitFor();
  expect((await page.locator('[data-testid="face-overlay"] circle').count()) === 5, "not 5 landmarks drawn");
  expect((await page.locator('[data-testid="identify-result"] [data-testid="timings"] li').count()) > 0, "no stage timings shown");
  console.log(`     best match ${shown.best}; ${subjectName} (${mine.id}) with probability ${mine.probability}; ${shown.candidates.length} candidate(s)`);
  // Another limit: the answer judged under limit 3 goes, rather than stand beside a help text
  // naming the new one.
  await page.getByTestId("identify-limit").fill("5");
  await page.locator('[data-testid="identify-result"]').waitFor({ state: "detached" });
}, [FACES, IDENTIFY]);

// The identify view has its own URL: a reload keeps it (runtime/src/api/ui.rs APP_PATHS).
await step("identify-direct-url", async () => {
  await page.reload();
  await page.getByTestId("identify-submit").waitFor();
  expect((await page.getByTestId("tab-identify").getAttribute("aria-current")) === "page", "the identify tab is not current after a reload");
});

/** Camera tracks the page opened and how many of them still run. */
async function cameraTracks() {
  return page.evaluate(() => {
    const tracks = window.__facekeyTracks ?? [];
    return { opened: tracks.length, live: tracks.filter((t) => t.readyState === "live").length };
  });
}

/** Wait until the challenge runs (camera on, session open); an error box instead fails at once. */
async function untilRunning() {
  await page
    .locator('[data-testid="challenge-instruction"][data-phase="running"], [data-testid="error"]')
    .first()
    .waitFor({ timeout: 60_000 });
  if ((await page.getByTestId("error").count()) > 0) {
    throw new Error(`the challenge did not start: ${await text('[data-testid="error"]')}`);
  }
}

/** turn_left is the person's own left: on a mirrored preview the arrow points left, unmirrored right. */
const ACTION_WORDS = { blink: "Blink", turn_left: "your left", turn_right: "your right", look_up: "Look up", open_mouth: "Open your mouth" };

/** What the challenge instruction shows, read in one go (the action may change at any answer). */
function shownInstruction() {
  return page.evaluate(() => {
    const r = document.querySelector('[data-testid="challenge-instruction"]');
    const mirror = document.querySelector('[data-testid="challenge-mirror"]');
    return {
      action: r?.getAttribute("data-action") ?? "",
      title: r?.querySelector('[data-testid="challenge-action-title"]')?.textContent?.trim() ?? "",
      arrow: r?.querySelector(".challenge-arrow")?.textContent ?? "",
      mirrored: mirror instanceof HTMLInputElement && mirror.checked,
    };
  });
}

/** The action is named in words, and a turn's arrow points the person's way on the preview. */
function checkInstruction(v) {
  if (v.action === "") return;
  expect(v.action in ACTION_WORDS && v.title.includes(ACTION_WORDS[v.action]), `action ${v.action} shown as ${JSON.stringify(v.title)}`);
  if (v.action === "turn_left" || v.action === "turn_right") {
    const screenLeft = (v.action === "turn_left") === v.mirrored;
    expect(v.arrow === (screenLeft ? "←" : "→"), `${v.action} on a ${v.mirrored ? "" : "un"}mirrored preview has arrow ${v.arrow}`);
  }
}

/**
 * One run of the challenge in the verify view, from its start button to the verdict: checks the
 * instruction (a polite live region, the action in words, the arrows on mirrored and unmirrored
 * previews), the 2–3 actions and a live camera track while it runs, collects the live face
 * feedback, and returns what the verdict shows.
 */
async function challengeAttempt() {
  const t0 = Date.now();
  const outcome = { faceFound: new Set(), noFace: "" };
  await page.getByTestId("challenge-start").click();
  // Starting again clears the previous run's error box, if it had one.
  await page.getByTestId("error").waitFor({ state: "detached", timeout: 5_000 });
  await untilRunning();
  // The instruction is a live region naming the action in words; the progress counts the actions.
  const region = page.getByTestId("challenge-instruction");
  expect((await region.getAttribute("role")) === "status", "the instruction is not a status region");
  expect((await region.getAttribute("aria-live")) === "polite", "the instruction is not a polite live region");
  const first = await shownInstruction();
  expect(first.action !== "", "no action asked for while running");
  checkInstruction(first);
  await page.getByTestId("challenge-mirror").uncheck();
  checkInstruction(await shownInstruction());
  await page.getByTestId("challenge-mirror").check();
  checkInstruction(await shownInstruction());
  const total = Number(await page.getByTestId("challenge-progress").getAttribute("data-total"));
  expect(total >= 2 && total <= 3, `the challenge has ${total} actions`);
  outcome.challenge = await page.getByTestId("challenge-action").evaluateAll((els) => els.map((e) => e.dataset.action ?? ""));
  expect((await cameraTracks()).live >= 1, "no live camera track while the challenge runs");
  // Live feedback from each answer, until the verdict.
  const deadline = Date.now() + 150_000;
  while (Date.now() < deadline && (await page.getByTestId("challenge-verdict").count()) === 0) {
    const found = await page.getByTestId("challenge-face").getAttribute("data-found").catch(() => null);
    if (found) outcome.faceFound.add(found);
    if (found === "false") outcome.noFace = await text('[data-testid="challenge-face"]');
    if ((await page.getByTestId("error").count()) > 0) throw new Error(`the challenge stopped: ${await text('[data-testid="error"]')}`);
    await page.waitForTimeout(100);
  }
  const verdict = page.getByTestId("challenge-verdict");
  await verdict.waitFor({ timeout: 5_000 });
  // The last answer's feedback stays on screen with the verdict.
  const last = await page.getByTestId("challenge-face").getAttribute("data-found").catch(() => null);
  if (last) outcome.faceFound.add(last);
  if (last === "false") outcome.noFace = await text('[data-testid="challenge-face"]');
  outcome.state = await verdict.getAttribute("data-state");
  outcome.reasons = await page.locator('[data-testid="challenge-reasons"] li').evaluateAll((els) => els.map((e) => e.dataset.reason ?? ""));
  outcome.reasonText = (await page.getByTestId("challenge-reasons").allTextContents()).join(" ").trim();
  outcome.frames = await text('[data-testid="challenge-frames"]');
  outcome.done = Number(await page.getByTestId("challenge-progress").getAttribute("data-done"));
  outcome.seconds = (Date.now() - t0) / 1000;
  return outcome;
}

/**
 * Makes the page's session opens in `ctx` ask for CHALLENGE_ACTIONS: each POST
 * /v1/liveness/sessions is sent to the runtime again and again, each session drawing another
 * challenge closed with DELETE, until one asks for the clip's; the page gets that answer (or the
 * first that is not a 201, unchanged), and each open is logged with the draws it took.
 */
async function redrawToTheClip(ctx) {
  await ctx.route(/\/v1\/liveness\/sessions$/, async (route) => {
    const request = route.request();
    if (request.method() !== "POST") return route.continue();
    const headers = await request.allHeaders();
    for (let drawn = 1; drawn <= REDRAWS_MAX; drawn += 1) {
      const sent = Date.now();
      const res = await route.fetch();
      const body = res.status() === 201 ? await res.json().catch(() => undefined) : undefined;
      if (!body) return route.fulfill({ response: res });
      if (body.challenge?.join(",") === CHALLENGE_ACTIONS.join(",")) {
        OPENED_AT.set(body.id, sent);
        console.log(`     session open: the runtime drew ${CHALLENGE_ACTIONS.join(",")} on draw ${drawn} (${drawn - 1} redrawn and closed)`);
        return route.fulfill({ response: res });
      }
      await res.dispose();
      const closed = await ctx.request.delete(`${request.url()}/${body.id}`, { headers: headers.authorization ? { authorization: headers.authorization } : {}, failOnStatusCode: false });
      const closedStatus = closed.status();
      await closed.dispose();
      if (closedStatus !== 204) {
        return route.fulfill({ status: 500, json: { error: { code: "e2e_redraw", message: `closing a redrawn session answered ${closedStatus}` } } });
      }
    }
    return route.fulfill({ status: 500, json: { error: { code: "e2e_redraw", message: `no session in ${REDRAWS_MAX} asked for ${CHALLENGE_ACTIONS.join(",")}` } } });
  });
}

/**
 * With `passed` expected: the runtime's session must suit the looping clip, or a pass is luck.
 * It must end before the clip comes round again (a later loop's frames are exact repeats, which
 * fail it as duplicate_frames) and last at least SESSION_MIN_SECONDS: the lab's clip performs its
 * challenge every 2 s or so, and the debug runtime checks about 4 frames a second, so a session
 * opened anywhere in it sees the whole challenge within a few seconds, then an answer takes a
 * second or two. Its frame budget must not end it first at the UI's top capture rate (10
 * frames/s).
 */
function expectPassableSession(session) {
  expect(session !== undefined, "the page's session-open answer was not seen");
  if (CHALLENGE_LOOP_SECONDS === undefined) {
    console.log(`     the challenge camera's loop length is unknown: the session's lifetime (${(session.ttlMs / 1000).toFixed(1)} s) is not checked against it`);
    return;
  }
  // expires_at has whole seconds: the session lives up to a second longer than it says.
  const ttl = session.ttlMs / 1000;
  const fix = "start the runtime with FACEKEY_RUNTIME_ARGS=\"--session-ttl-secs 22 --session-max-frames 240 --session-replay-window-secs 0\" (tests/run.sh does), or set FACEKEY_CHALLENGE_EXPECT=progress";
  expect(
    ttl + 1 < CHALLENGE_LOOP_SECONDS && ttl >= SESSION_MIN_SECONDS,
    `the runtime's sessions live ${ttl.toFixed(1)}–${(ttl + 1).toFixed(1)} s; passing on the ${CHALLENGE_LOOP_SECONDS.toFixed(1)} s looping clip needs ${SESSION_MIN_SECONDS} s to a loop: ${fix}`,
  );
  expect(
    session.maxFrames >= 10 * (ttl + 1),
    `the runtime's sessions take ${session.maxFrames} frames, under ${Math.ceil(10 * (ttl + 1))} (${(ttl + 1).toFixed(1)} s at 10 frames/s): ${fix}`,
  );
}

/**
 * Runs the challenge from its start button: once, or with `passed` expected until it passes and
 * what the passed session was used for (`use`: its verification or identification, shown in
 * `resultTestId`) is shown, at most CHALLENGE_ATTEMPTS runs, each before the last ending only
 * unfinished (a person who is not seen starts again). `afterFirst` checks the first run's session.
 * The camera must be off after each verdict. Returns the last run's outcome.
 */
async function runChallenge(resultTestId, use, afterFirst = () => undefined) {
  const attempts = CHALLENGE_EXPECT === "passed" ? CHALLENGE_ATTEMPTS : 1;
  let outcome;
  for (let attempt = 1; attempt <= attempts; attempt += 1) {
    outcome = await challengeAttempt();
    console.log(
      `     attempt ${attempt}: challenge ${outcome.challenge.join(",")}: verdict ${outcome.state}, ` +
        `reasons ${JSON.stringify(outcome.reasons)} (${JSON.stringify(outcome.reasonText)}), frames ${outcome.frames}, ${outcome.seconds.toFixed(1)} s`,
    );
    if (CHALLENGE_ACTIONS.length > 0) {
      expect(outcome.challenge.join(",") === CHALLENGE_ACTIONS.join(","), `the page shows the challenge ${outcome.challenge.join(",")}, not the clip's`);
    }
    // The camera is off once the challenge ends.
    expect((await page.getByTestId("challenge-video").count()) === 0, "the preview is still shown after the verdict");
    const tracks = await cameraTracks();
    expect(tracks.opened >= 1 && tracks.live === 0, `camera tracks after the verdict: ${JSON.stringify(tracks)}`);
    if (CHALLENGE_EXPECT !== "passed") break;
    if (attempt === 1) afterFirst();
    if (outcome.state === "passed") {
      await page.locator(`[data-testid="${resultTestId}"], [data-testid="error"]`).first().waitFor({ timeout: 60_000 });
      const error = (await page.getByTestId("error").count()) > 0 ? await text('[data-testid="error"]') : "";
      if (error === "") break;
      // A pass in the session's last moment can expire before its verification or identification
      // reaches it (410 session_expired): unfinished as well, and a person would start again.
      expect(/session_expired/.test(error), `${use} with the passed session failed: ${error}`);
      console.log(`     attempt ${attempt}: the session expired before its ${use}: ${error}`);
      outcome.state = `expired_before_${use}`;
      continue;
    }
    // A person who is not seen tries again; only an unfinished challenge may end a try.
    expect(
      (outcome.state === "failed" || outcome.state === "expired") &&
        outcome.reasons.length > 0 &&
        outcome.reasons.every((r) => UNFINISHED.has(r)),
      `verdict ${outcome.state} (${outcome.reasons.join(", ") || "no reason"}) on the challenge video: ` +
        `only an unfinished challenge (${[...UNFINISHED].join(", ")}) may be tried again`,
    );
    expect((await page.getByTestId(resultTestId).count()) === 0, `a challenge that did not pass went on to its ${use}`);
  }
  return { outcome, attempts };
}

/**
 * The liveness challenge in the verify view, in its own browser (its camera shows the challenge
 * y4m, or Chromium's built-in pattern with no face): instruction and progress while it runs,
 * live face feedback, the verdict with reasons, the verification of a passed session, and the
 * camera tracks stopped when it ends and when the view is left mid-run.
 */
async function challengeSteps() {
  const needs = [SESSIONS, SESSION_FRAMES, SESSION_GET];
  const absent = missing(...needs);
  if (failed > 0 || absent) {
    await step("liveness-challenge", async () => undefined, needs);
    return;
  }
  const own = await launch(CHALLENGE_CAMERA || undefined);
  const previous = page;
  page = own.pg;
  if (CHALLENGE_ACTIONS.length > 0) await redrawToTheClip(own.ctx);
  try {
    await step("liveness-challenge", async () => {
      await openLoginUrl("/verify");
      await page.locator('label:has([data-testid="verify-mode-challenge"])').click();
      const subjectSelect = page.getByTestId("challenge-subject");
      await subjectSelect.waitFor();
      let subjectId = "";
      if (CHALLENGE_EXPECT === "passed") {
        const option = subjectSelect.locator("option", { hasText: subjectName });
        await option.waitFor({ state: "attached" });
        subjectId = (await option.getAttribute("value")) ?? "";
        await subjectSelect.selectOption(subjectId);
      }
      // The sessions the page opens, as the runtime answered them (lifetime and frame budget).
      const opened = [];
      page.on("response", async (res) => {
        if (res.request().method() !== "POST" || !/\/v1\/liveness\/sessions$/.test(new URL(res.url()).pathname)) return;
        // From when the request left (or, redrawn, when the kept open left): never shorter
        // than the session's real lifetime.
        const body = await res.json().catch(() => undefined);
        const sent = OPENED_AT.get(body?.id) ?? res.request().timing().startTime;
        if (res.status() === 201 && body) opened.push({ ttlMs: Date.parse(body.expires_at) - sent, maxFrames: body.max_frames });
      });
      const { outcome, attempts } = await runChallenge("challenge-verification", "verification", () => expectPassableSession(opened[0]));
      const { state, reasonText } = outcome;
      if (CHALLENGE_EXPECT === "noface") {
        expect(outcome.faceFound.has("false") && !outcome.faceFound.has("true"), `face feedback ${[...outcome.faceFound]} on a camera without a face`);
        expect(/no face found/.test(outcome.noFace), `no-face feedback reads ${JSON.stringify(outcome.noFace)}`);
        expect(state === "failed" || state === "expired", `verdict ${state} on a camera without a face`);
        expect(reasonText.length > 0 && !reasonText.includes("gave no reason"), `no reasons shown: ${JSON.stringify(reasonText)}`);
        expect((await page.getByTestId("challenge-verification").count()) === 0, "a failed challenge was verified");
      } else {
        expect(outcome.faceFound.has("true"), "the challenge camera's face was never found");
        if (CHALLENGE_EXPECT === "progress") expect(outcome.done >= 1, `no action of the challenge was seen (${outcome.done} done)`);
        if (CHALLENGE_EXPECT === "passed") {
          expect(state === "passed", `the challenge did not pass in ${attempts} attempts; last verdict ${state} (${reasonText})`);
          expect(outcome.done === outcome.challenge.length, `passed with ${outcome.done} of ${outcome.challenge.length} actions shown done`);
          const probe = await text('[data-testid="challenge-probe"]');
          expect(subjectId !== "" && probe.includes(subjectId) && probe.includes("the session's best frame"), `the verification's probe reads ${JSON.stringify(probe)}`);
          const decision = await text('[data-testid="challenge-verification"] [data-testid="verify-decision"]');
          // The clip's face is the enrolled photo's, animated: the enrolled subject must be accepted.
          expect(/accept/.test(decision) && !/reject/.test(decision), `verification with the passed session shows ${JSON.stringify(decision)}, not accept`);
          // Scores are shown to admin keys only (the decision alone otherwise).
          const shownProbability = page.locator('[data-testid="challenge-verification"] [data-testid="verify-probability"]');
          const probability = (await shownProbability.count()) > 0 ? number(await shownProbability.textContent()) : undefined;
          expect(probability === undefined || (probability >= 0 && probability <= 1), `verification probability ${probability} outside [0, 1]`);
          console.log(`     verification with the session: ${decision}${probability === undefined ? "" : `, probability ${probability}`}`);
          const tracks = await cameraTracks();
          expect(tracks.live === 0, `camera tracks after the verification: ${JSON.stringify(tracks)}`);
        }
      }
    }, needs);

    // The identify view's challenge: a session opened without a subject, identified once passed.
    // Only the lab's clip of the enrolled photo can pass it; without it the step is skipped.
    if (CHALLENGE_EXPECT === "passed") {
      await step("identify-with-challenge", async () => {
        await page.getByTestId("tab-identify").click();
        await page.locator('label:has([data-testid="identify-mode-challenge"])').click();
        await page.getByTestId("challenge-start").waitFor();
        expect((await page.getByTestId("challenge-subject").count()) === 0, "the identify challenge offers a subject to bind");
        const opened = [];
        const onRequest = (r) => {
          if (r.method() === "POST" && /\/v1\/liveness\/sessions$/.test(new URL(r.url()).pathname)) opened.push(r.postData() ?? "");
        };
        page.on("request", onRequest);
        let outcome;
        try {
          ({ outcome } = await runChallenge("challenge-identification", "identification"));
        } finally {
          page.off("request", onRequest);
        }
        expect(opened.length >= 1 && opened.every((body) => !/"subject"/.test(body)), `sessions opened with a subject: ${JSON.stringify(opened)}`);
        expect(outcome.state === "passed", `the identify challenge did not pass in ${CHALLENGE_ATTEMPTS} attempts; last verdict ${outcome.state} (${outcome.reasonText})`);
        const probe = await text('[data-testid="challenge-identification"] [data-testid="challenge-probe"]');
        expect(probe.includes("the session's best frame"), `the identification's probe reads ${JSON.stringify(probe)}`);
        // The clip's face is the enrolled photo's, animated: the enrolled subject must be identified.
        const shown = await shownIdentification('[data-testid="challenge-identification"]');
        const mine = expectIdentified(shown, "identification with the passed session");
        console.log(`     identification with the session: best match ${shown.best}; ${subjectName} with probability ${mine.probability}`);
        const tracks = await cameraTracks();
        expect(tracks.live === 0, `camera tracks after the identification: ${JSON.stringify(tracks)}`);
      }, [...needs, IDENTIFY]);
    } else {
      skipped += 1;
      console.log(`skip identify-with-challenge: FACEKEY_CHALLENGE_EXPECT=${CHALLENGE_EXPECT}; only the lab's clip (passed) can pass a challenge to identify`);
    }

    await step("liveness-challenge-leave-stops-camera", async () => {
      await page.getByTestId("challenge-start").click();
      await untilRunning();
      expect((await cameraTracks()).live >= 1, "no live camera track while the challenge runs");
      await page.getByTestId("tab-enrol").click();
      await page.getByTestId("create-subject").waitFor();
      const tracks = await cameraTracks();
      expect(tracks.live === 0, `leaving the view left ${tracks.live} camera track(s) running`);
    }, needs);

    await step("liveness-challenge-camera-lost", async () => {
      await page.getByTestId("tab-verify").click();
      await page.locator('label:has([data-testid="verify-mode-challenge"])').click();
      const closed = page.waitForRequest((r) => r.method() === "DELETE" && r.url().includes("/v1/liveness/sessions/"), {
        timeout: 30_000,
      });
      await page.getByTestId("challenge-start").click();
      await untilRunning();
      // The camera goes away on its own (unplugged, permission revoked): its track fires "ended".
      await page.evaluate(() =>
        (window.__facekeyTracks ?? [])
          .filter((t) => t.kind === "video" && t.readyState === "live")
          .forEach((t) => t.dispatchEvent(new Event("ended"))),
      );
      await waitText('[data-testid="error"]', (t) => t.includes("The camera stopped"), "the camera-stopped error");
      // The run gave its session up rather than leaving it to expire.
      await closed;
      const tracks = await cameraTracks();
      expect(tracks.live === 0, `a lost camera left ${tracks.live} camera track(s) running`);
    }, needs);
  } finally {
    page = previous;
    await own.ctx.close().catch(() => undefined);
    rmSync(own.dir, { recursive: true, force: true });
  }

  // Without a camera the flow says so and opens no session.
  const blind = await launch(join(tmpdir(), `facekey-e2e-no-camera-${process.pid}.y4m`));
  page = blind.pg;
  try {
    await step("liveness-challenge-no-camera", async () => {
      const opened = [];
      page.on("request", (r) => {
        if (r.method() === "POST" && r.url().includes("/v1/liveness/sessions")) opened.push(r.url());
      });
      await openLoginUrl("/verify");
      await page.locator('label:has([data-testid="verify-mode-challenge"])').click();
      await page.getByTestId("challenge-start").click();
      const error = await waitText('[data-testid="error"]', (t) => t.includes("Camera unavailable"), "camera error");
      expect(/No camera found|Cannot start the camera|permission/i.test(error), `camera error reads ${JSON.stringify(error)}`);
      expect(opened.length === 0, `a session was opened without a camera: ${opened.join(", ")}`);
      await page.getByTestId("challenge-start").waitFor();
    }, needs);
  } finally {
    page = previous;
    await blind.ctx.close().catch(() => undefined);
    rmSync(blind.dir, { recursive: true, force: true });
  }
}

await challengeSteps();

await step("metrics", async () => {
  await page.getByTestId("tab-metrics-view").click();
  await waitText('[data-testid="metrics-total"]', (t) => number(t) > 0, "total requests");
  await waitText('[data-testid="metrics-ready"]', (t) => t === "ready", "readiness");
  const score = await text('tr[data-route="/v1/score"] [data-testid="route-requests"]');
  expect(number(score) >= 3, `/v1/score shows ${score} requests`);
  if (!missing(VERIFY)) {
    const verify = await text('tr[data-route="/v1/verify"] [data-testid="route-requests"]');
    expect(number(verify) >= 1, `/v1/verify shows ${verify} requests`);
  }
  if (!missing(IDENTIFY)) {
    const identified = await text('tr[data-route="/v1/identify"] [data-testid="route-requests"]');
    expect(number(identified) >= 1, `/v1/identify shows ${identified} requests`);
  }
  const decisions = number(await text('[data-testid="metrics-accept"]')) + number(await text('[data-testid="metrics-reject"]'));
  expect(decisions >= 1, "no decisions counted");
  await page.getByTestId("models").waitFor();
});

await step("api-docs", async () => {
  await page.getByTestId("docs-link").click();
  expect(new URL(page.url()).pathname.endsWith("/docs"), `docs link went to ${page.url()}`);
  await page.locator('[data-testid="operation"][data-method="POST"][data-path="/v1/score"]').waitFor();
  await page.reload();
  await page.locator('[data-testid="operation"][data-method="GET"][data-path="/v1/subjects"]').waitFor();
  await page.locator('[data-testid="operation"][data-path="/v1/score"] summary').click();
  await page.locator('[data-testid="operation"][data-path="/v1/score"] .op-body').waitFor();
});

await step("delete-subject", async () => {
  await page.getByTestId("tab-enrol").click();
  const row = page.locator(`[data-testid="subject-row"][data-name="${subjectName}"]`);
  await row.getByRole("button", { name: `Delete ${subjectName}…` }).click();
  await row.getByRole("button", { name: `Delete ${subjectName}` }).click();
  await waitText('[data-testid="enrol-status"]', (t) => t.startsWith("Deleted"), "status after delete");
  await row.waitFor({ state: "detached" });
});

/** A step about the key prompt: skipped on a runtime without API keys. */
async function keySteps(name, fn) {
  if (OPEN_RUNTIME) {
    skipped += 1;
    console.log(`skip ${name}: the runtime has no API keys`);
    return;
  }
  await step(name, fn);
}

await keySteps("key-prompt-when-session-cleared", async () => {
  await page.getByTestId("tab-verify").click();
  await page.evaluate(() => sessionStorage.clear());
  await page.reload();
  await page.getByTestId("key-prompt").waitFor();
  expect((await page.getByTestId("key-id").count()) === 0, "a key id is shown without a key");
  expect((await page.getByTestId("verify-submit").count()) === 0, "the verify form is shown without a key");
  const body = await page.locator("main").textContent();
  expect(body.includes("new-api-key") && body.includes("-api-keys") && body.includes("#key="), "the prompt does not say where keys come from");
});

await keySteps("key-prompt-rejects-a-wrong-key", async () => {
  await page.getByTestId("key-input").fill("not a key");
  await page.getByTestId("key-submit").click();
  await page.getByTestId("key-problem").waitFor();
  await page.getByTestId("key-input").fill(`fk_${"A".repeat(43)}`);
  await page.getByTestId("key-submit").click();
  await waitText('[data-testid="key-notice"]', (t) => t.includes("did not accept"), "notice after a wrong key");
  expect((await storedKey()) === null, "a rejected key stays in sessionStorage");
});

await keySteps("key-prompt-signs-in", async () => {
  await page.getByTestId("key-input").fill(KEY);
  await page.getByTestId("key-submit").click();
  await expectSignedIn();
  await page.getByTestId("verify-submit").waitFor();
  expect((await storedKey()) === KEY, "the key is not in sessionStorage");
  await page.locator('[data-testid="verify-subject"] option').first().waitFor({ state: "attached" });
});

await keySteps("sign-out", async () => {
  await page.getByTestId("sign-out").click();
  await page.getByTestId("key-prompt").waitFor();
  expect((await storedKey()) === null, "sign out left the key in sessionStorage");
  expect((await page.getByTestId("key-badge").count()) === 0, "the header still shows a key");
});

await context.close();
rmSync(userDataDir, { recursive: true, force: true });
if (failed === 0 && !SHOTS_ALL) rmSync(SHOTS, { recursive: true, force: true });
else console.log(`screenshots in ${SHOTS}`);
console.log(`${passed} passed, ${failed} failed, ${skipped} skipped`);
process.exit(failed === 0 ? 0 : 1);
