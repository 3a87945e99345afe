// The server's face checks, run on the device: YuNet through onnxruntime-web, then the same
// subject choice, alignment and quality measures as src/face_dedup/vision (detect.py,
// pipeline.py, align.py, quality.py). Every threshold comes from /capture/config.json, which the
// server builds from its own settings: this file holds formulas, never limits.
// Known differences (measured by tests/e2e/test_capture_browser.py): the model's input is fixed
// at 640x640 in onnxruntime (OpenCV pads to a multiple of 32 and detects at up to 960 px), the
// browser's JPEG decoder and canvas resampling are not Pillow's and OpenCV's, and only the upright
// orientation is tried (a camera held by its user shows an upright face).
import * as ort from "../ort/ort.wasm.bundle.min.mjs";

// Paths are resolved against the page's folder, not the host's root: in the cloud the page is at
// the API stage's path (/v1/capture), on one machine at /capture.
const PAGE_FOLDER = new URL(".", location.href);
export function here(path) { return new URL(path.replace(/^\//, ""), PAGE_FOLDER).href; }

const INPUT = 640;
const STRIDES = [8, 16, 32];

function hex(buffer) {
  return Array.from(new Uint8Array(buffer), (b) => b.toString(16).padStart(2, "0")).join("");
}

export async function sha256Hex(bytes) {
  return hex(await crypto.subtle.digest("SHA-256", bytes));
}

export async function loadConfig() {
  const response = await fetch(here("/capture/config.json"), { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error("config");
  return response.json();
}

// The model file is checked against the digest the server pins before a byte of it runs.
export async function loadDetector(config) {
  const response = await fetch(here(config.model.url), { cache: "no-store", credentials: "omit" });
  if (!response.ok) throw new Error("model");
  const bytes = new Uint8Array(await response.arrayBuffer());
  if ((await sha256Hex(bytes)) !== config.model.sha256) throw new Error("model-digest");
  ort.env.wasm.numThreads = 1; // no worker, no SharedArrayBuffer: works under the strict CSP
  ort.env.wasm.proxy = false;
  // No wasmPaths: the bundled loader finds its .wasm next to itself (/capture/ort/).
  const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
  return { session, config };
}

function canvas(width, height) {
  const c = document.createElement("canvas");
  c.width = width;
  c.height = height;
  return c;
}

// What the server works on: the photo as decoded, reduced only when it is huge (Pillow's JPEG
// draft mode halves it while it stays at least `max_side` long; decode.py).
export function workingCopy(source, width, height, config) {
  let scale = 1;
  const long = Math.max(width, height);
  if (long > 2 * config.max_side) {
    while (scale > 1 / 8 && long * (scale / 2) >= config.max_side) scale /= 2;
  }
  const c = canvas(Math.round(width * scale), Math.round(height * scale));
  const ctx = c.getContext("2d", { willReadFrequently: true });
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, c.width, c.height);
  return { canvas: c, scale };
}

async function detect(detector, image) {
  const { width, height } = image;
  const factor = Math.min(1, INPUT / Math.max(width, height));
  const padded = canvas(INPUT, INPUT);
  const ctx = padded.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, INPUT, INPUT);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(image, 0, 0, Math.round(width * factor), Math.round(height * factor));
  const rgba = ctx.getImageData(0, 0, INPUT, INPUT).data;
  const plane = INPUT * INPUT;
  const input = new Float32Array(3 * plane);
  for (let i = 0; i < plane; i++) {
    input[i] = rgba[4 * i + 2]; // B, G, R: OpenCV's channel order, raw 0..255
    input[plane + i] = rgba[4 * i + 1];
    input[2 * plane + i] = rgba[4 * i];
  }
  const out = await detector.session.run({ input: new ort.Tensor("float32", input, [1, 3, INPUT, INPUT]) });
  const d = detector.config.detector;
  const found = [];
  for (const stride of STRIDES) {
    const cols = INPUT / stride;
    const cls = out[`cls_${stride}`].data;
    const obj = out[`obj_${stride}`].data;
    const box = out[`bbox_${stride}`].data;
    const kps = out[`kps_${stride}`].data;
    for (let idx = 0; idx < cls.length; idx++) {
      const clamp = (v) => Math.min(1, Math.max(0, v));
      const score = Math.sqrt(clamp(cls[idx]) * clamp(obj[idx]));
      if (!(score > d.candidate_score)) continue;
      const r = Math.floor(idx / cols);
      const c = idx % cols;
      const cx = (c + box[4 * idx]) * stride;
      const cy = (r + box[4 * idx + 1]) * stride;
      const w = Math.exp(box[4 * idx + 2]) * stride;
      const h = Math.exp(box[4 * idx + 3]) * stride;
      const landmarks = [];
      for (let n = 0; n < 5; n++) {
        landmarks.push([(kps[10 * idx + 2 * n] + c) * stride, (kps[10 * idx + 2 * n + 1] + r) * stride]);
      }
      found.push({ score, box: [cx - w / 2, cy - h / 2, w, h], landmarks });
    }
  }
  found.sort((a, b) => b.score - a.score);
  const kept = [];
  for (const face of found.slice(0, d.top_k)) {
    if (kept.every((other) => iou(face.box, other.box) <= d.nms_threshold)) kept.push(face);
  }
  const faces = kept.map((f) => ({
    score: f.score,
    box: f.box.map((v) => v / factor),
    landmarks: f.landmarks.map(([x, y]) => [x / factor, y / factor]),
  }));
  faces.sort((a, b) => b.box[2] * b.box[3] - a.box[2] * a.box[3]); // largest first, as detect.py
  return faces;
}

// OpenCV's NMS works on integer boxes (face_detect.cpp truncates them).
function iou(a, b) {
  const [ax, ay, aw, ah] = a.map(Math.trunc);
  const [bx, by, bw, bh] = b.map(Math.trunc);
  const w = Math.max(0, Math.min(ax + aw, bx + bw) - Math.max(ax, bx));
  const h = Math.max(0, Math.min(ay + ah, by + bh) - Math.max(ay, by));
  const inter = w * h;
  const union = aw * ah + bw * bh - inter;
  return union > 0 ? inter / union : 0;
}

const dist = (p, q) => Math.hypot(p[0] - q[0], p[1] - q[1]);
const interEye = (face) => dist(face.landmarks[1], face.landmarks[0]);

// Least-squares similarity (rotation, scale, shift; no reflection) from landmarks to the
// template: the closed form of align.py's Umeyama fit in two dimensions.
export function fitSimilarity(src, dst) {
  const n = src.length;
  const mean = (pts) => [pts.reduce((s, p) => s + p[0], 0) / n, pts.reduce((s, p) => s + p[1], 0) / n];
  const [sx, sy] = mean(src);
  const [dx, dy] = mean(dst);
  let a = 0;
  let b = 0;
  let variance = 0;
  for (let i = 0; i < n; i++) {
    const x = src[i][0] - sx;
    const y = src[i][1] - sy;
    const u = dst[i][0] - dx;
    const v = dst[i][1] - dy;
    a += x * u + y * v;
    b += x * v - y * u;
    variance += x * x + y * y;
  }
  const theta = Math.atan2(b, a);
  const scale = variance > 0 ? Math.hypot(a, b) / variance : 0;
  const m00 = scale * Math.cos(theta);
  const m10 = scale * Math.sin(theta);
  const matrix = [m00, -m10, dx - (m00 * sx - m10 * sy), m10, m00, dy - (m10 * sx + m00 * sy)];
  const mapped = src.map((p) => apply(matrix, p));
  const eye = dist(dst[1], dst[0]) || 1;
  const residual = Math.sqrt(mapped.reduce((s, p, i) => s + (p[0] - dst[i][0]) ** 2 + (p[1] - dst[i][1]) ** 2, 0) / n) / eye;
  return { matrix, mapped, roll: (-theta * 180) / Math.PI, residual };
}

function apply(m, [x, y]) {
  return [m[0] * x + m[1] * y + m[2], m[3] * x + m[4] * y + m[5]];
}

// cv2.warpAffine (bilinear, constant black border) into the template, as greyscale
// (cv2's RGB2GRAY fixed-point weights): the quality measures only need luminance.
function warpGrey(rgba, width, height, m, size) {
  const det = m[0] * m[4] - m[1] * m[3];
  const inv = [m[4] / det, -m[1] / det, 0, -m[3] / det, m[0] / det, 0];
  inv[2] = -(inv[0] * m[2] + inv[1] * m[5]);
  inv[5] = -(inv[3] * m[2] + inv[4] * m[5]);
  const [w, h] = size;
  const grey = new Float64Array(w * h);
  const at = (x, y, k) => (x < 0 || y < 0 || x >= width || y >= height ? 0 : rgba[4 * (y * width + x) + k]);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const sx = inv[0] * x + inv[1] * y + inv[2];
      const sy = inv[3] * x + inv[4] * y + inv[5];
      const x0 = Math.floor(sx);
      const y0 = Math.floor(sy);
      const fx = sx - x0;
      const fy = sy - y0;
      const rgb = [0, 1, 2].map((k) => {
        const top = at(x0, y0, k) * (1 - fx) + at(x0 + 1, y0, k) * fx;
        const bottom = at(x0, y0 + 1, k) * (1 - fx) + at(x0 + 1, y0 + 1, k) * fx;
        return Math.min(255, Math.max(0, Math.round(top * (1 - fy) + bottom * fy)));
      });
      grey[y * w + x] = (rgb[0] * 4899 + rgb[1] * 9617 + rgb[2] * 1868 + 8192) >> 14;
    }
  }
  return grey;
}

// quality.crop_measures: the inner face region (rows 28..103, columns 18..93 of the 112 crop).
function cropMeasures(grey, width) {
  const top = 28;
  const left = 18;
  const size = 76;
  const v = (y, x) => {
    const ry = y < 0 ? -y : y >= size ? 2 * size - 2 - y : y; // BORDER_REFLECT_101
    const rx = x < 0 ? -x : x >= size ? 2 * size - 2 - x : x;
    return grey[(top + ry) * width + left + rx];
  };
  let sum = 0;
  let lapSum = 0;
  let lapSq = 0;
  let over = 0;
  let under = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const p = v(y, x);
      sum += p;
      if (p >= 250) over++;
      if (p <= 5) under++;
      const lap = v(y - 1, x) + v(y + 1, x) + v(y, x - 1) + v(y, x + 1) - 4 * p;
      lapSum += lap;
      lapSq += lap * lap;
    }
  }
  const count = size * size;
  return {
    sharpness: lapSq / count - (lapSum / count) ** 2,
    brightness: sum / count,
    overexposed: over / count,
    underexposed: under / count,
  };
}

function poseMeasures(mapped, templatePitch) {
  const [re, le, nose, mr, ml] = mapped;
  const eyeMid = [(re[0] + le[0]) / 2, (re[1] + le[1]) / 2];
  const mouthMid = [(mr[0] + ml[0]) / 2, (mr[1] + ml[1]) / 2];
  const eyeDistance = dist(le, re) || 1;
  const span = mouthMid[1] - eyeMid[1] || 1;
  return { yaw: (nose[0] - eyeMid[0]) / eyeDistance, pitch: (nose[1] - eyeMid[1]) / span - templatePitch };
}

// quality.assess: every failed check, the most likely cause first; the first is the reason.
function assess(t, m) {
  const issues = [];
  if (m.brightness < t.min_brightness) issues.push("TOO_DARK");
  else if (m.underexposed > t.max_underexposed) issues.push("TOO_DARK");
  else if (m.brightness > t.max_brightness) issues.push("TOO_BRIGHT");
  else if (m.overexposed > t.max_overexposed) issues.push("TOO_BRIGHT");
  if (m.score < t.min_detection_score) issues.push("LOW_CONFIDENCE");
  if (m.inter_eye_px < t.min_inter_eye_px) issues.push("FACE_TOO_SMALL");
  if (Math.abs(m.yaw) > t.max_yaw_ratio) issues.push("EXTREME_POSE");
  else if (Math.abs(m.pitch) > t.max_pitch_offset) issues.push("EXTREME_POSE");
  if (m.sharpness < t.min_sharpness) issues.push("BLURRY");
  return issues;
}

function centreOffset(face, width, height) {
  const [x, y, w, h] = face.box;
  return Math.hypot(x + w / 2 - width / 2, y + h / 2 - height / 2) / Math.hypot(width, height);
}

// One image (a canvas at working size; `scale` = working pixels per original pixel) through the
// server's steps. Returns the server's reason code (null when it would accept) and the checks.
export async function analyze(detector, image, scale = 1) {
  const config = detector.config;
  const t = config.quality;
  const { width, height } = image;
  const result = { reason: null, issues: [], faces: 0, subject: null, centre: null };
  // decode.py's size limits, on the photo as it was before any reduction.
  const [ow, oh] = [Math.round(width / scale), Math.round(height / scale)];
  const size = ow * oh > config.decode.max_pixels ? "TOO_LARGE" : Math.min(ow, oh) < config.decode.min_side ? "TOO_SMALL" : null;
  if (size) {
    result.reason = size;
    result.issues = [size];
    return result;
  }
  const faces = await detect(detector, image);
  result.faces = faces.length;
  const plausible = [];
  for (const face of faces) {
    const fit = fitSimilarity(face.landmarks, config.template);
    if (Math.abs(fit.roll) <= t.max_roll_degrees && fit.residual <= t.max_landmark_residual) plausible.push({ face, fit });
  }
  const confident = plausible.filter((p) => p.face.score >= t.min_detection_score);
  const pool = confident.length ? confident : plausible.slice(0, 1);
  if (!pool.length) {
    result.reason = faces.length ? "IMPLAUSIBLE_LANDMARKS" : "NO_FACE";
    result.issues = [result.reason];
    return result;
  }
  const largest = Math.max(...pool.map((p) => interEye(p.face)));
  const eligible = pool.filter((p) => interEye(p.face) >= 0.5 * largest);
  eligible.sort((a, b) => centreOffset(a.face, width, height) - centreOffset(b.face, width, height));
  const { face: subject, fit } = eligible[0];
  const offset = centreOffset(subject, width, height);
  result.subject = { box: subject.box, score: subject.score };
  result.centre = offset;
  const rivals = faces.filter(
    (other) =>
      other !== subject &&
      other.score >= t.min_detection_score &&
      interEye(other) >= t.rival_face_ratio * interEye(subject) &&
      centreOffset(other, width, height) < offset + t.rival_center_margin,
  );
  if (rivals.length) {
    result.reason = "MULTIPLE_FACES";
    result.issues = ["MULTIPLE_FACES"];
    return result;
  }
  const ctx = image.getContext("2d", { willReadFrequently: true });
  const rgba = ctx.getImageData(0, 0, width, height).data;
  const grey = warpGrey(rgba, width, height, fit.matrix, config.template_size);
  const crop = cropMeasures(grey, config.template_size[0]);
  const pose = poseMeasures(fit.mapped, config.template_pitch);
  const measures = { ...crop, ...pose, score: subject.score, inter_eye_px: interEye(subject) / scale };
  result.measures = measures;
  result.issues = assess(t, measures);
  result.reason = result.issues[0] || null;
  return result;
}
