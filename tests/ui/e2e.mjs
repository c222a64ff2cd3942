#!/usr/bin/env node
// Browser end-to-end test of the FaceKey UI, driving Debian's Chromium with playwright-core
// against a running runtime. Run through run.sh, which prepares the fake camera.
//
// Environment:
//   FACEKEY_URL            base URL of the runtime serving the UI (required)
//   FACEKEY_FAKE_CAMERA    absolute path of a .y4m file the fake camera shows (required)
//   FACEKEY_FACE_IMAGE     face image to enrol (required)
//   FACEKEY_API_KEY        an admin API key of the runtime; the test opens its login URL
//                          `${FACEKEY_URL}/#key=${FACEKEY_API_KEY}` (required when the runtime has
//                          API keys, and always with FACEKEY_E2E_STRICT=1)
//   FACEKEY_E2E_SHOTS      directory for screenshots (default: a new temp dir)
//   FACEKEY_E2E_SHOTS_ALL  1 = screenshot every step, not only failures
//   FACEKEY_E2E_STRICT     1 = fail, instead of skipping, the steps whose endpoints the runtime's
//                          openapi.json does not list (face enrolment, verification), and fail
//                          at once without FACEKEY_API_KEY
//   FACEKEY_E2E_SCHEME     light (default) or dark: the colour scheme the page is shown in
//   CHROMIUM               browser binary (default /usr/bin/chromium)
//   FACEKEY_CHALLENGE_CAMERA  absolute path of a .y4m of a person performing the challenge actions
//                          (run.sh makes one with `facekey-eval sequences --y4m` when the eval
//                          binary can); unset: the liveness challenge runs on Chromium's built-in
//                          fake camera pattern, which shows no face, and must end failed or
//                          expired with reasons after "no face found" feedback
//   FACEKEY_CHALLENGE_EXPECT  with FACEKEY_CHALLENGE_CAMERA: `passed` (the challenge must pass and
//                          verify against the enrolled subject), `progress` (face found, at least
//                          one action seen, a final verdict) or `verdict` (default: face found and
//                          a final verdict)

import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
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
const SESSIONS = "POST /v1/liveness/sessions";
const SESSION_FRAMES = "POST /v1/liveness/sessions/{id}/frames";
const SESSION_GET = "GET /v1/liveness/sessions/{id}";
const CHALLENGE_CAMERA = process.env.FACEKEY_CHALLENGE_CAMERA ?? "";
const CHALLENGE_EXPECT = CHALLENGE_CAMERA ? (process.env.FACEKEY_CHALLENGE_EXPECT ?? "verdict") : "noface";

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

await step("login-url-and-health-badge", async () => {
  await page.goto(OPEN_RUNTIME ? `${BASE}/` : `${BASE}/#key=${KEY}`);
  await page.locator('[data-testid="health-badge"][data-state="ok"]').waitFor();
  await page.locator('[data-testid="ready-badge"][data-state="ok"]').waitFor({ timeout: 90_000 });
  expect((await page.title()) === "FaceKey", `page title is ${await page.title()}`);
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
  try {
    await step("liveness-challenge", async () => {
      await page.goto(OPEN_RUNTIME ? `${BASE}/verify` : `${BASE}/verify#key=${KEY}`);
      await page.locator('label:has([data-testid="verify-mode-challenge"])').click();
      const subjectSelect = page.getByTestId("challenge-subject");
      await subjectSelect.waitFor();
      if (CHALLENGE_EXPECT === "passed") {
        const option = subjectSelect.locator("option", { hasText: subjectName });
        await option.waitFor({ state: "attached" });
        await subjectSelect.selectOption(await option.getAttribute("value"));
      }
      const outcome = { instruction: "", faceFound: new Set(), noFace: "" };
      await page.getByTestId("challenge-start").click();
      await untilRunning();
      // The instruction is a live region naming the action in words; the progress counts the actions.
      const region = page.getByTestId("challenge-instruction");
      expect((await region.getAttribute("role")) === "status", "the instruction is not a status region");
      expect((await region.getAttribute("aria-live")) === "polite", "the instruction is not a polite live region");
      // What the instruction shows, read in one go (the action may change at any answer).
      const shown = () =>
        page.evaluate(() => {
          const r = document.querySelector('[data-testid="challenge-instruction"]');
          const mirror = document.querySelector('[data-testid="challenge-mirror"]');
          return {
            action: r?.getAttribute("data-action") ?? "",
            title: r?.querySelector('[data-testid="challenge-action-title"]')?.textContent?.trim() ?? "",
            arrow: r?.querySelector(".challenge-arrow")?.textContent ?? "",
            mirrored: mirror instanceof HTMLInputElement && mirror.checked,
          };
        });
      const words = { blink: "Blink", turn_left: "your left", turn_right: "your right", look_up: "Look up", open_mouth: "Open your mouth" };
      /** turn_left is the person's own left: on a mirrored preview the arrow points left, unmirrored right. */
      const checkShown = (v) => {
        if (v.action === "") return;
        expect(v.action in words && v.title.includes(words[v.action]), `action ${v.action} shown as ${JSON.stringify(v.title)}`);
        if (v.action === "turn_left" || v.action === "turn_right") {
          const screenLeft = (v.action === "turn_left") === v.mirrored;
          expect(v.arrow === (screenLeft ? "←" : "→"), `${v.action} on a ${v.mirrored ? "" : "un"}mirrored preview has arrow ${v.arrow}`);
        }
      };
      const first = await shown();
      expect(first.action !== "", "no action asked for while running");
      outcome.instruction = first.title;
      checkShown(first);
      await page.getByTestId("challenge-mirror").uncheck();
      checkShown(await shown());
      await page.getByTestId("challenge-mirror").check();
      checkShown(await shown());
      const total = Number(await page.getByTestId("challenge-progress").getAttribute("data-total"));
      expect(total >= 2 && total <= 3, `the challenge has ${total} actions`);
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
      const state = await verdict.getAttribute("data-state");
      const reasons = (await page.getByTestId("challenge-reasons").allTextContents()).join(" ").trim();
      const frames = await text('[data-testid="challenge-frames"]');
      console.log(`     challenge ${JSON.stringify(outcome.instruction)}: verdict ${state}, reasons ${JSON.stringify(reasons)}, frames ${frames}`);
      if (CHALLENGE_EXPECT === "noface") {
        expect(outcome.faceFound.has("false") && !outcome.faceFound.has("true"), `face feedback ${[...outcome.faceFound]} on a camera without a face`);
        expect(/no face found/.test(outcome.noFace), `no-face feedback reads ${JSON.stringify(outcome.noFace)}`);
        expect(state === "failed" || state === "expired", `verdict ${state} on a camera without a face`);
        expect(reasons.length > 0 && !reasons.includes("gave no reason"), `no reasons shown: ${JSON.stringify(reasons)}`);
        expect((await page.getByTestId("challenge-verification").count()) === 0, "a failed challenge was verified");
      } else {
        expect(outcome.faceFound.has("true"), "the challenge camera's face was never found");
        const done = Number(await page.getByTestId("challenge-progress").getAttribute("data-done"));
        if (CHALLENGE_EXPECT === "progress") expect(done >= 1, `no action of the challenge was seen (${done} done)`);
        if (CHALLENGE_EXPECT === "passed") {
          expect(state === "passed", `verdict ${state} (${reasons}) on the challenge video`);
          await page.getByTestId("challenge-verification").waitFor({ timeout: 60_000 });
          const decision = await text('[data-testid="challenge-verification"] [data-testid="verify-decision"]');
          expect(/accept|reject/.test(decision), `no verification decision shown (${decision})`);
          console.log(`     verification with the session: ${decision}`);
        }
      }
      // The camera is off once the challenge ends.
      expect((await page.getByTestId("challenge-video").count()) === 0, "the preview is still shown after the verdict");
      const tracks = await cameraTracks();
      expect(tracks.opened >= 1 && tracks.live === 0, `camera tracks after the verdict: ${JSON.stringify(tracks)}`);
    }, needs);

    await step("liveness-challenge-leave-stops-camera", async () => {
      await page.getByTestId("challenge-start").click();
      await untilRunning();
      expect((await cameraTracks()).live >= 1, "no live camera track while the challenge runs");
      await page.getByTestId("tab-enrol").click();
      await page.getByTestId("create-subject").waitFor();
      const tracks = await cameraTracks();
      expect(tracks.live === 0, `leaving the view left ${tracks.live} camera track(s) running`);
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
      await page.goto(OPEN_RUNTIME ? `${BASE}/verify` : `${BASE}/verify#key=${KEY}`);
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
  await row.getByRole("button", { name: "Delete…" }).click();
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
