// The selfie capture page: live guidance from the on-device checks (analysis.js), a still the
// person can retake, and an upload only when they press "Use this photo". Nothing is stored in
// the browser (no cookies, storage or caches); every text from outside is set as text.
import { STRINGS as S } from "./strings.js";
import { analyze, here, loadConfig, loadDetector, sha256Hex, workingCopy } from "./analysis.js";

const $ = (id) => document.getElementById(id);
const CHECKS = {
  found: ["NO_FACE", "LOW_CONFIDENCE", "IMPLAUSIBLE_LANDMARKS"],
  one: ["MULTIPLE_FACES"],
  big: ["FACE_TOO_SMALL", "TOO_SMALL"],
  centred: [],
  frontal: ["EXTREME_POSE"],
  bright: ["TOO_DARK", "TOO_BRIGHT"],
  sharp: ["BLURRY"],
};
// Advice only: the server has no centring rule, so an off-centre face is not refused here either.
const CENTRE_ADVICE = 0.12;
const LIVE_INTERVAL_MS = 250;
const POLL_MS = 2000;
const POLL_LIMIT = 60;

const state = { token: null, config: null, detector: null, stream: null, still: null, phase: "loading", said: "", pickerOnly: false, candidate: "", seen: 0 };

function phase(name) {
  state.phase = name;
  document.body.dataset.phase = name;
}

function say(text) {
  // The live region changes only when the advice does: a screen reader hears each change once.
  if (text !== state.said) {
    state.said = text;
    $("status").textContent = text;
  }
}

// Live advice is announced once it has held for two analysed frames: camera noise flipping
// between two reasons must not make a screen reader chatter.
function advise(text) {
  if (text === state.candidate) state.seen += 1;
  else [state.candidate, state.seen] = [text, 1];
  if (state.seen >= 2) say(text);
}

function setup() {
  document.documentElement.lang = S.lang;
  document.title = S.title;
  $("title").textContent = S.title;
  $("intro").textContent = S.intro;
  $("video").setAttribute("aria-label", S.videoLabel);
  $("still").setAttribute("aria-label", S.stillLabel);
  $("still").setAttribute("role", "img");
  $("checks").setAttribute("aria-label", S.checksLabel);
  $("capture").textContent = S.take;
  $("retake").textContent = S.retake;
  $("use").textContent = S.use;
  $("again").textContent = S.again;
  $("file-label").textContent = S.pickerLabel;
  for (const name of Object.keys(CHECKS)) {
    const item = document.createElement("li");
    item.dataset.check = name;
    item.dataset.state = "unknown";
    const mark = document.createElement("span");
    mark.className = "mark";
    mark.setAttribute("aria-hidden", "true");
    mark.textContent = S.unknown;
    const label = document.createElement("span");
    label.textContent = S.checks[name];
    item.append(mark, label);
    $("checks").append(item);
  }
  $("capture").addEventListener("click", takeStill);
  $("retake").addEventListener("click", retake);
  $("again").addEventListener("click", retake);
  $("use").addEventListener("click", usePhoto);
  $("file").addEventListener("change", pickFile);
  // The token travels in the fragment (never sent to a server); keep it in memory only and take
  // it out of the address bar, history and any screenshot.
  state.token = new URLSearchParams(location.hash.slice(1)).get("token");
  if (location.hash) history.replaceState(null, "", location.pathname);
}

function showChecks(verdict) {
  const issues = new Set(verdict ? verdict.issues : []);
  const early = verdict && ["NO_FACE", "IMPLAUSIBLE_LANDMARKS", "MULTIPLE_FACES", "TOO_SMALL", "TOO_LARGE"].includes(verdict.reason);
  for (const [name, reasons] of Object.entries(CHECKS)) {
    const item = document.querySelector(`#checks li[data-check="${name}"]`);
    let value = "unknown";
    if (verdict && name === "centred") {
      value = verdict.centre === null ? "unknown" : verdict.centre <= CENTRE_ADVICE ? "ok" : "fail";
    } else if (verdict && reasons.some((r) => issues.has(r))) {
      value = "fail";
    } else if (verdict && (!early || (name === "found" && verdict.faces > 0))) {
      value = "ok";
    }
    item.dataset.state = value;
    item.querySelector(".mark").textContent = S[value === "ok" ? "pass" : value === "fail" ? "fail" : "unknown"];
  }
}

function advice(verdict) {
  if (verdict.reason) return S.reasons[verdict.reason] || S.reasons.OTHER;
  return verdict.centre !== null && verdict.centre > CENTRE_ADVICE ? S.readyOffCentre : S.ready;
}

async function openCamera() {
  const video = $("video");
  state.stream = await navigator.mediaDevices.getUserMedia({
    video: { facingMode: "user", width: { ideal: 1280 }, height: { ideal: 960 } },
    audio: false,
  });
  video.srcObject = state.stream;
  await video.play();
  phase("live");
  liveLoop();
}

function closeCamera() {
  if (state.stream) for (const track of state.stream.getTracks()) track.stop();
  state.stream = null;
  $("video").srcObject = null;
}

async function liveLoop() {
  if (state.phase !== "live") return;
  const video = $("video");
  try {
    if (video.readyState >= 2 && video.videoWidth) {
      const frame = workingCopy(video, video.videoWidth, video.videoHeight, state.config);
      const verdict = await analyze(state.detector, frame.canvas, frame.scale);
      if (state.phase !== "live") return;
      showChecks(verdict);
      advise(advice(verdict));
      $("capture").disabled = verdict.reason !== null;
      document.body.dataset.verdict = verdict.reason || "READY";
    }
  } catch (error) {
    console.error("capture page: a frame could not be analysed:", error); // the next one may be
  }
  setTimeout(liveLoop, LIVE_INTERVAL_MS);
}

async function showStill(source, width, height) {
  const copy = workingCopy(source, width, height, state.config);
  const verdict = await analyze(state.detector, copy.canvas, copy.scale);
  const still = $("still");
  still.width = copy.canvas.width;
  still.height = copy.canvas.height;
  still.getContext("2d").drawImage(copy.canvas, 0, 0);
  state.still = copy.canvas;
  still.hidden = false;
  $("video").hidden = true;
  showChecks(verdict);
  say(verdict.reason ? S.stillProblem + (S.reasons[verdict.reason] || S.reasons.OTHER) : S.stillReady);
  document.body.dataset.verdict = verdict.reason || "READY";
  $("capture").hidden = true;
  $("retake").hidden = false;
  $("use").hidden = false;
  // What the page refuses, the server would refuse too: no point sending it.
  $("use").disabled = verdict.reason !== null;
  phase("still");
  (verdict.reason ? $("retake") : $("use")).focus();
}

async function takeStill() {
  const video = $("video");
  phase("capturing");
  await showStill(video, video.videoWidth, video.videoHeight);
  closeCamera(); // the camera light goes off while the person decides
}

async function pickFile() {
  const file = $("file").files[0];
  if (!file) return;
  try {
    const bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
    await showStill(bitmap, bitmap.width, bitmap.height);
    bitmap.close();
  } catch {
    say(S.reasons.UNDECODABLE);
  } finally {
    $("file").value = "";
  }
}

function forget() {
  const still = $("still");
  still.getContext("2d").clearRect(0, 0, still.width, still.height);
  still.width = still.height = 0;
  state.still = null;
}

async function retake() {
  forget();
  $("result").hidden = true;
  $("again").hidden = true;
  $("still").hidden = true;
  $("retake").hidden = true;
  $("use").hidden = true;
  showChecks(null);
  if (state.pickerOnly) {
    phase("picker");
    say(S.noCamera);
    return;
  }
  $("video").hidden = false;
  $("capture").hidden = false;
  $("capture").disabled = true;
  try {
    await openCamera();
  } catch {
    showPicker();
  }
}

function jpeg(canvas) {
  return new Promise((resolve, reject) =>
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error("encode"))), "image/jpeg", 0.92),
  );
}

async function usePhoto() {
  if (!state.still) return;
  $("use").disabled = true;
  $("retake").disabled = true;
  phase("uploading");
  say(S.sending);
  let outcome;
  try {
    const blob = await jpeg(state.still);
    const digest = await sha256Hex(await blob.arrayBuffer());
    outcome = state.config.upload === "direct" ? await uploadDirect(blob) : await uploadPresigned(blob, digest);
  } catch (error) {
    const known = error && ["expired", "used"].includes(error.message);
    outcome = { state: known ? error.message : "error" };
  }
  forget();
  showOutcome(outcome);
}

function headers(extra) {
  return { "X-Capture-Token": state.token || "", ...extra };
}

async function reply(response) {
  if (response.status === 401) throw new Error("expired");
  if (response.status === 409) throw new Error("used"); // this link has sent its photo already
  if (!response.ok) throw new Error("upload");
  return response.json();
}

async function uploadDirect(blob) {
  const response = await fetch(here("/capture/upload"), {
    method: "POST",
    headers: headers({ "Content-Type": "image/jpeg" }),
    body: blob,
    credentials: "omit",
    cache: "no-store",
  });
  return reply(response);
}

async function uploadPresigned(blob, digest) {
  const grant = await reply(
    await fetch(here("/capture/upload-url"), { method: "POST", headers: headers({}), credentials: "omit", cache: "no-store" }),
  );
  const form = new FormData();
  for (const [name, value] of Object.entries(grant.fields)) form.append(name, value);
  form.append("file", blob, "photo.jpg"); // last: S3 reads the policy's fields before the file
  // A form POST needs no CORS rule on the uploads bucket; its answer is opaque to the page (a
  // refused policy is not seen here), so the outcome is what the page waits for.
  await fetch(grant.url, { method: "POST", body: form, mode: "no-cors", credentials: "omit", cache: "no-store" });
  phase("waiting");
  say(S.waiting);
  for (let i = 0; i < POLL_LIMIT; i++) {
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    const outcome = await reply(
      await fetch(here(`/capture/outcome?digest=${digest}`), { headers: headers({}), credentials: "omit", cache: "no-store" }),
    );
    if (outcome.state !== "pending") return outcome;
  }
  return { state: "pending" };
}

function showOutcome(outcome) {
  const known = Object.prototype.hasOwnProperty.call(S.outcomes, outcome.state) ? outcome.state : "error";
  const [title, text] = S.outcomes[known];
  $("result-title").textContent = title;
  $("result-text").textContent =
    known === "retake" ? S.reasons[outcome.reason] || S.reasons.OTHER : text;
  $("result").hidden = false;
  $("result").dataset.outcome = known;
  $("use").hidden = true;
  $("retake").hidden = true;
  $("retake").disabled = false;
  $("still").hidden = true;
  $("again").hidden = !["retake", "error"].includes(known);
  phase("done");
  say(title + ". " + $("result-text").textContent);
  $("result-title").focus();
}

function showPicker() {
  state.pickerOnly = true;
  closeCamera();
  $("video").hidden = true;
  $("capture").hidden = true;
  $("picker").hidden = false;
  phase("picker");
  say(S.noCamera);
}

async function main() {
  setup();
  say(S.loading);
  if (!state.token) {
    phase("error");
    say(S.noToken);
    return;
  }
  try {
    state.config = await loadConfig();
    state.detector = await loadDetector(state.config);
  } catch (error) {
    console.error("capture page: loading failed:", error); // for whoever debugs this device
    phase("error");
    say(error && error.message === "model-digest" ? S.modelMismatch : S.loadFailed);
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showPicker();
    return;
  }
  try {
    await openCamera();
  } catch {
    showPicker();
  }
}

main();
