// The officers' console. Every value from the server reaches the page as text (textContent,
// createElement); no HTML is ever parsed from data, and the CSP allows no inline script or style.
"use strict";

// -- every string the page shows, in one place (translate here) ---------------------------------
const T = {
  title: "face-dedup case review", tokenLabel: "Access token", signIn: "Sign in", signOut: "Sign out",
  signInForm: "Sign in",
  signedOut: "Signed out. Enter your access token to sign in.",
  signedIn: (me) => `${me.name} · ${T.roles[me.role] || me.role} · ${me.tenant}`,
  roles: { officer: "case officer", supervisor: "supervisor", auditor: "auditor", admin: "administrator" },
  sessionGone: (why) => `Your session is no longer valid (${why}). Sign in again.`,
  serverDown: "The server cannot be reached. Nothing was changed; the list below may be out of date. Try again.",
  loaded: (from, to, total) => (total ? `Cases ${from}–${to} of ${total}` : "No cases match these filters"),
  queueCaption: "Cases, oldest first unless sorted otherwise",
  columns: ["Application", "Channel", "Age", "Best score", "Status", "Claimed by"],
  wideColumns: [1, 5],
  status: {
    open: "open", awaiting_confirmation: "waiting for a supervisor", closed: "closed",
  },
  outcome: {
    same_person: "same person", confirmed_same_person: "same person (confirmed)",
    different_people: "different people", cannot_tell: "cannot tell", closed: "closed",
  },
  escalated: "escalated",
  band: {
    far_above: "far above the duplicate threshold",
    above: "above the duplicate threshold",
    between: "between the review and duplicate thresholds",
    near_threshold: "near the review threshold",
  },
  bandShort: { far_above: "far above", above: "above", between: "between", near_threshold: "near threshold" },
  fmr: (p) => (p.beyond_calibration
    ? "two different people score this high more rarely than the calibration could measure"
    : `two different people score this high about 1 in ${Math.round(1 / p.false_match_rate).toLocaleString()} times`),
  age: (hours) => (hours < 1 ? "under 1 h" : hours < 48 ? `${Math.floor(hours)} h` : `${Math.floor(hours / 24)} d`),
  filters: {
    status: "Status", any: "any", escalated: "Escalated", yes: "yes", no: "no", mine: "Mine only",
    sort: "Sort", oldest: "oldest first", newest: "newest first", score: "highest score first",
    age: "Older than", ageAny: "any age", hours: (h) => (h < 24 ? `${h} hours` : `${h / 24} days`),
  },
  prev: "Previous", next: "Next",
  caseTitle: (c) => `Case ${c.case_id}`,
  caseState: (c) => [T.status[c.status] || c.status, c.escalated && c.status !== "closed" ? T.escalated : "",
                     c.outcome ? `outcome: ${T.outcome[c.outcome] || c.outcome}` : ""].filter(Boolean).join(" · "),
  claimedBy: (name) => `Claimed by ${name}`,
  unclaimed: "Not claimed",
  claim: "Claim", release: "Release claim",
  probe: "New application",
  candidate: (i) => `Candidate ${i}`,
  application: (p) => `application ${p.application_id || "—"}`,
  channel: (p) => `${p.channel || ""}${p.source_name ? ", file " + p.source_name : ""}`,
  channelShort: { "registry import": "import", selfie: "selfie" },
  recordStatus: {
    enrolled: "enrolled", pending_review: "pending review", linked_duplicate: "held as a possible duplicate",
    confirmed_duplicate: "confirmed duplicate",
  },
  erased: "erased",
  quality: (q) => `sharpness ${Math.round(q.sharpness)}, brightness ${Math.round(q.brightness)}, eyes ${Math.round(q.inter_eye_px)} px apart`,
  score: (p) => `score ${p.score.toFixed(3)}: ${T.band[p.band] || p.band}`,
  crop: "aligned face", photo: "full photo",
  zoomHint: (what) => `${what} (open at full size)`,
  unavailable: " (unavailable)",
  isSame: "Same person as the new application",
  thresholds: (t) => `Review threshold ${t.review}; duplicate threshold ${t.duplicate}; gallery ${t.gallery_size}.`,
  comment: "Comment (required to overturn)",
  same: (i, p) => `Same person as candidate ${i} (${p.application_id || "—"})`,
  sameNone: "Same person (choose a candidate first)",
  different: "Different people", cannotTell: "Cannot tell", confirm: "Confirm", overturn: "Overturn",
  whatSame: (i, p) => `The new application will be held as a duplicate of candidate ${i} (application ${p.application_id || "—"}). A supervisor must confirm before it is final.`,
  whatDifferent: "The case closes and the new application is enrolled as a different person from every candidate. This cannot be undone here.",
  whatCannot: "The case goes to a supervisor (escalated). Your claim is released.",
  whatConfirm: (c) => `The new application becomes a confirmed duplicate of ${c.matched_record_id}. The case closes.`,
  whatOverturn: "The decision is undone; the case reopens for a supervisor.",
  reasonNeeded: "Write why you overturn in the comment field first.",
  goAhead: "Go ahead", cancel: "Cancel", close: "Close",
  done: { same_person: "Decided: same person. Waiting for a supervisor.", different_people: "Decided: different people. Case closed.",
          cannot_tell: "Escalated to a supervisor.", confirmed: "Confirmed. Case closed.", overturned: "Overturned. Case reopened.",
          claimed: "Claimed.", released: "Claim released.", undone: "Decision taken back." },
  ownDecision: "You made this decision: a different supervisor confirms it.",
  undo: (minutes) => `Undo my decision (within ${minutes} minutes)`,
  whatUndo: "Your decision is taken back; the case returns to the queue, claimed by you.",
  notYours: "Only a supervisor confirms or overturns.",
  readOnly: "Auditors see cases and the audit log; they decide nothing.",
  history: "History", historyCols: ["When", "Who", "Role", "What", "Comment"],
  audit: "Audit log", auditFilter: "Filter (action, person, case)", export: "Export (JSON Lines)",
  auditCols: ["When", "Who", "Action", "Details"], auditCount: (n, total) => `${n} of ${total} events shown (newest first)`,
  tabCases: "Cases", tabAudit: "Audit log",
  keys: "Keys: j / k next / previous case, Enter open, 1–9 choose candidate, s same person, d different people, c cannot tell, y confirm, o overturn, u undo, Esc close a dialog.",
  noCase: "No case open",
};

// -- state ---------------------------------------------------------------------------------------
let token = "";
let hosted = null; // the Cognito hosted-UI settings in the cloud (signin.js); null: a pasted token
let me = null;
let page = { cases: [], total: 0, offset: 0, limit: 20, next_offset: null };
let cursor = 0;
let current = null;
let chosen = null; // the candidate index (0-based) "same person" links to
const $ = (id) => document.getElementById(id);

// Bidirectional override and isolate controls in a value (a file named "\u202Egpj.exe" reads as
// "exe.jpg") are shown as their code points, so text reads as it is stored.
const BIDI_CONTROLS = /[\u202A-\u202E\u2066-\u2069]/g;
function visible(text) {
  return text.replace(BIDI_CONTROLS, (ch) => `[U+${ch.codePointAt(0).toString(16).toUpperCase()}]`);
}

// el("p", {className: "x"}, "text", child): strings become text nodes, never markup.
function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("aria-") || key === "role" || key === "for" || key === "scope") node.setAttribute(key, value);
    else node[key] = value;
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(typeof child === "string" || typeof child === "number" ? visible(String(child)) : child);
  }
  return node;
}

// "2026-12-01 22:15:22" from an ISO time: short enough for a table cell.
function when(iso) { return typeof iso === "string" ? iso.slice(0, 19).replace("T", " ") : ""; }

function say(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

// Paths are resolved against the page's folder, not the host's root: in the cloud the page is at
// the API stage's path (/v1/), on one machine at /.
const PAGE_FOLDER = new URL(".", location.href);
function here(path) { return new URL(path.replace(/^\//, ""), PAGE_FOLDER).href; }

async function api(method, path, body) {
  let response;
  try {
    response = await fetch(here(path), {
      method,
      headers: Object.assign({ "Authorization": "Bearer " + token }, body ? { "Content-Type": "application/json" } : {}),
      body: body ? JSON.stringify(body) : undefined,
      cache: "no-store",
    });
  } catch (error) {
    throw new ApiError(0, T.serverDown);
  }
  const text = await response.text();
  const isJson = (response.headers.get("content-type") || "").startsWith("application/json");
  let data = text;
  if (isJson && text) { try { data = JSON.parse(text); } catch (error) { data = {}; } }
  if (response.status === 401) {
    signOut(T.sessionGone((data && data.error) || "not signed in"), true);
    throw new ApiError(401, T.sessionGone((data && data.error) || "not signed in"));
  }
  if (!response.ok) throw new ApiError(response.status, (data && data.error) || `HTTP ${response.status}`);
  return data;
}

function fail(error) {
  say(error.message, true);
  if (error.status === 0) $("queue").setAttribute("aria-busy", "false");
}

// -- sign in / out -------------------------------------------------------------------------------
async function signIn(value) {
  token = value;
  try {
    me = await api("GET", "/me");
  } catch (error) { $("token").value = ""; if (error.status !== 401) fail(error); return; }
  $("token").value = "";
  $("login").hidden = true;
  $("session").hidden = false;
  $("who").textContent = T.signedIn(me);
  $("tabs").hidden = !["auditor", "admin"].includes(me.role);
  buildFilters();
  showView("cases");
  await loadQueue(0);
}

function signOut(message, isError) {
  token = ""; me = null; current = null; chosen = null;
  page = { cases: [], total: 0, offset: 0, limit: 20, next_offset: null };
  $("login").hidden = false;
  $("session").hidden = true;
  $("tabs").hidden = true;
  $("who").textContent = "";
  $("queue").tBodies[0].replaceChildren();
  $("page").textContent = "";
  clearCase();
  say(message || T.signedOut, isError);
  $("token").focus(); // keyboard users start again where they sign in (focus was lost to the page)
}

// -- the queue -----------------------------------------------------------------------------------
function select(id, label, options, value) {
  const box = el("select", { id });
  for (const [v, text] of options) box.append(el("option", { value: v, selected: v === value }, text));
  box.addEventListener("change", () => loadQueue(0).catch(fail));
  return el("label", { for: id }, label, box);
}

function buildFilters() {
  const f = T.filters;
  const supervisor = me.role === "supervisor";
  const filters = $("filters");
  filters.replaceChildren(
    select("f-status", f.status, [["open", T.status.open], ["awaiting_confirmation", T.status.awaiting_confirmation],
                                  ["closed", T.status.closed], ["", f.any]],
           me.role === "supervisor" ? "open" : "open"),
    select("f-escalated", f.escalated, [["", f.any], ["true", f.yes], ["false", f.no]],
           me.role === "officer" ? "false" : (supervisor ? "" : "")),
    select("f-sort", f.sort, [["oldest", f.oldest], ["newest", f.newest], ["score", f.score]], "oldest"),
    select("f-age", f.age, [["", f.ageAny], ["4", f.hours(4)], ["24", f.hours(24)], ["72", f.hours(72)]], ""),
  );
  if (me.role !== "auditor") {
    const mine = el("input", { type: "checkbox", id: "f-mine" });
    mine.addEventListener("change", () => loadQueue(0).catch(fail));
    filters.append(el("label", { for: "f-mine", className: "inline" }, mine, f.mine));
  }
  const head = el("tr", {});
  T.columns.forEach((name, i) => head.append(el("th", { scope: "col", className: T.wideColumns.includes(i) ? "wide" : "" }, name)));
  $("queue").tHead.replaceChildren(head);
  $("queue-caption").textContent = T.queueCaption;
}

function query(offset) {
  const params = new URLSearchParams({ limit: String(page.limit), offset: String(offset) });
  const pick = (id, name) => { const v = $(id) && $(id).value; if (v) params.set(name, v); };
  pick("f-status", "status"); pick("f-escalated", "escalated"); pick("f-sort", "sort"); pick("f-age", "older_than_hours");
  if ($("f-mine") && $("f-mine").checked) params.set("mine", "true");
  return "/cases?" + params.toString();
}

async function loadQueue(offset, keepCursor) {
  page = await api("GET", query(offset));
  if (!keepCursor) cursor = 0;
  cursor = Math.max(0, Math.min(cursor, page.cases.length - 1));
  const rows = page.cases.map((c, i) => {
    const hours = (Date.now() - Date.parse(c.created_at)) / 3600000;
    const open = el("button", { type: "button", className: "open", dataset: { caseId: c.case_id, index: String(i) } },
                    c.application_id || c.case_id);
    open.addEventListener("click", () => { cursor = i; markCursor(); openCase(c.case_id).catch(fail); });
    const state = c.outcome ? (T.outcome[c.outcome] || c.outcome) : (T.status[c.status] || c.status);
    const cells = [open, T.channelShort[c.channel] || c.channel || "", T.age(hours), c.best_band ? `${T.bandShort[c.best_band]} (${c.best_score})` : "—",
                   state + (c.escalated && c.status !== "closed" ? ` · ${T.escalated}` : ""), c.claimed_by || "—"];
    const row = el("tr", { "aria-selected": "false" });
    cells.forEach((cell, j) => row.append(el("td", { className: T.wideColumns.includes(j) ? "wide" : "" }, cell)));
    return row;
  });
  $("queue").tBodies[0].replaceChildren(...rows);
  const from = page.total ? page.offset + 1 : 0;
  $("page").textContent = T.loaded(from, page.offset + page.cases.length, page.total);
  $("prev").disabled = page.offset === 0;
  $("next").disabled = page.next_offset === null;
  markCursor();
  say(T.loaded(from, page.offset + page.cases.length, page.total));
}

function queueButtons() { return [...document.querySelectorAll("#queue tbody button.open")]; }

function markCursor() {
  [...$("queue").tBodies[0].rows].forEach((row, i) => row.setAttribute("aria-selected", String(i === cursor)));
}

// -- a case --------------------------------------------------------------------------------------
function clearCase() {
  $("case-title").textContent = T.noCase;
  $("case-body").replaceChildren();
}

async function imageInto(img, url) {
  if (!url.startsWith("/")) { img.src = url; return; } // a presigned link (the CSP lists its origin)
  try {
    const response = await fetch(here(url), { headers: { "Authorization": "Bearer " + token }, cache: "no-store" });
    if (!response.ok) throw new Error(String(response.status));
    img.src = URL.createObjectURL(await response.blob());
  } catch (error) { img.alt += T.unavailable; }
}

function zoom(title, img) {
  $("zoom-title").textContent = title;
  $("zoom-img").src = img.src;
  $("zoom-img").alt = img.alt;
  $("zoom").showModal();
}

function personFigure(p, label, index) {
  const figure = el("figure", { className: index === null ? "probe" : "" });
  if (p.erased) {
    figure.append(el("figcaption", {}, el("strong", {}, label), ` — ${T.erased}`));
    return figure;
  }
  const pair = el("div", { className: "pair" });
  for (const [kind, url] of [[T.crop, p.crop_url], [T.photo, p.photo_url]]) {
    const img = el("img", { alt: `${label}: ${kind}` });
    const button = el("button", { type: "button", "aria-label": T.zoomHint(`${label}: ${kind}`) }, img);
    button.addEventListener("click", () => zoom(`${label}: ${kind}`, img));
    pair.append(button);
    if (url) imageInto(img, url);
  }
  figure.append(pair);
  const lines = [
    el("div", {}, el("strong", {}, label), ` — ${T.application(p)}`),
    el("div", {}, T.channel(p)),
    el("div", {}, T.recordStatus[p.status] || p.status || ""),
    p.score !== undefined ? el("div", {}, el("span", { className: "band" }, T.score(p)), el("br", {}), T.fmr(p)) : null,
    p.quality ? el("div", {}, T.quality(p.quality)) : null,
    p.quality && p.quality.notes && p.quality.notes.length ? el("div", { className: "flags" }, p.quality.notes.join("; ")) : null,
  ];
  const caption = el("figcaption", {}, ...lines);
  if (index !== null && canDecide()) {
    const radio = el("input", { type: "radio", name: "chosen", id: `choose-${index}`, value: p.record_id, checked: chosen === index });
    radio.addEventListener("change", () => choose(index));
    caption.append(el("label", { className: "choose", for: `choose-${index}` }, radio, `${T.isSame} (${index + 1})`));
  }
  figure.append(caption);
  if (index !== null) figure.dataset.index = String(index);
  return figure;
}

function canDecide() {
  return me && ["officer", "supervisor"].includes(me.role) && current && current.status === "open" &&
         (!current.escalated || me.role === "supervisor") && (!current.claimed_by || current.claimed_by === me.name);
}

function canConfirm() {
  return me && me.role === "supervisor" && current && current.status === "awaiting_confirmation" && current.decided_by !== me.name;
}

function canUndo() {
  if (!me || !current || current.decided_by !== me.name || !current.decided_at) return false;
  const minutes = (Date.now() - Date.parse(current.decided_at)) / 60000;
  const pending = current.status === "awaiting_confirmation" ||
                  (current.status === "open" && current.escalated && current.decision === "cannot_tell" && !current.claimed_by);
  return pending && minutes < current.undo_minutes;
}

function choose(index) {
  if (!current || index < 0 || index >= current.candidates.length || current.candidates[index].erased) return;
  chosen = index;
  document.querySelectorAll(".faces figure[data-index]").forEach((f) => f.classList.toggle("chosen", f.dataset.index === String(index)));
  const radio = $(`choose-${index}`);
  if (radio) radio.checked = true;
  const same = document.querySelector('.actions button[data-key="s"]');
  if (same) { same.textContent = T.same(index + 1, current.candidates[index]); same.disabled = false; }
}

async function openCase(caseId, keepChoice) {
  const scroll = window.scrollY;
  current = await api("GET", "/cases/" + encodeURIComponent(caseId));
  if (!keepChoice) chosen = current.candidates.length === 1 ? 0 : null;
  $("case-title").textContent = T.caseTitle(current);
  const body = $("case-body");
  const claim = current.claimed_by ? T.claimedBy(current.claimed_by) : T.unclaimed;
  const faces = el("div", { className: "faces", role: "group", "aria-label": `${T.probe} / ${T.candidate("1…")}` },
                   personFigure(current.probe, T.probe, null),
                   ...current.candidates.map((c, i) => personFigure(c, T.candidate(i + 1), i)));
  body.replaceChildren(
    el("p", {}, T.caseState(current), " · ", claim),
    claimButtons(),
    faces,
    el("p", { className: "explain" }, T.thresholds(current.thresholds)),
    actions(),
    historyTable(),
  );
  if (chosen !== null) choose(chosen);
  $("case-title").focus({ preventScroll: true });
  window.scrollTo({ top: scroll });
  // Stacked in one column (phone, 200% zoom) the case is below the queue: opening one from the
  // queue must show it, or nothing seems to happen. Side by side, the scroll position stays.
  if (!keepChoice && $("case").offsetTop > $("queue-pane").offsetTop + $("queue-pane").offsetHeight / 2) {
    $("case-title").scrollIntoView({ block: "start" });
  }
}

function claimButtons() {
  const box = el("div", { className: "actions" });
  if (!me || !["officer", "supervisor"].includes(me.role) || current.status !== "open") return box;
  if (!current.claimed_by && canDecide()) box.append(button(T.claim, null, () => act("claim", {}, "claimed")));
  if (current.claimed_by && (current.claimed_by === me.name || me.role === "supervisor")) {
    box.append(button(T.release, null, () => act("release", {}, "released")));
  }
  return box;
}

function button(text, key, handler) {
  const b = el("button", { type: "button", dataset: key ? { key } : {} }, text);
  if (key) b.setAttribute("aria-keyshortcuts", key);
  b.addEventListener("click", handler);
  return b;
}

function actions() {
  const box = el("div", { className: "actions" });
  if (me.role === "auditor" || me.role === "admin") { box.append(el("p", {}, T.readOnly)); return box; }
  if (canDecide() || canConfirm()) {
    const comment = el("textarea", { id: "comment", maxLength: 2000 });
    box.append(el("label", { for: "comment" }, T.comment, comment));
  }
  if (canDecide()) {
    const same = button(T.sameNone, "s", () => decide("same_person"));
    same.disabled = chosen === null;
    box.append(same, button(T.different, "d", () => decide("different_people")),
               button(T.cannotTell, "c", () => decide("cannot_tell")));
  } else if (canConfirm()) {
    box.append(button(T.confirm, "y", () => confirmCase(true)), button(T.overturn, "o", () => confirmCase(false)));
  } else if (current.status === "awaiting_confirmation") {
    box.append(el("p", {}, me.name === current.decided_by ? T.ownDecision : T.notYours));
  }
  if (canUndo()) {
    box.append(button(T.undo(current.undo_minutes), "u", async () => {
      if (await ask(T.undo(current.undo_minutes), T.whatUndo)) await act("undo", {}, "undone");
    }));
  }
  return box;
}

function historyTable() {
  const table = el("table", {}, el("caption", {}, T.history));
  const head = el("tr", {}, ...T.historyCols.map((h) => el("th", { scope: "col" }, h)));
  table.append(el("thead", {}, head));
  const rows = current.history.map((e) => el("tr", {}, el("td", { className: "nowrap" }, when(e.at)),
    ...[e.actor, e.role, [e.action, e.decision, e.matched_record_id].filter(Boolean).join(" "), e.comment]
      .map((v) => el("td", { className: "anywhere" }, v || ""))));
  table.append(el("tbody", {}, ...rows));
  return table;
}

// Ask before anything that changes a case; the dialog says what will happen.
function ask(title, text) {
  return new Promise((resolve) => {
    const dialog = $("confirm");
    $("confirm-title").textContent = title;
    $("confirm-text").textContent = text;
    $("confirm-yes").textContent = T.goAhead;
    $("confirm-no").textContent = T.cancel;
    const finish = (answer) => { dialog.close(); resolve(answer); };
    $("confirm-yes").onclick = () => finish(true);
    $("confirm-no").onclick = () => finish(false);
    dialog.oncancel = () => resolve(false);
    dialog.showModal();
    $("confirm-no").focus();
  });
}

async function act(path, body, done) {
  try {
    await api("POST", `/cases/${encodeURIComponent(current.case_id)}/${path}`, body);
    say(T.done[done]);
    await loadQueue(page.offset, true); // the cursor stays on the same row: j moves exactly one
    await openCase(current.case_id, true);
  } catch (error) { fail(error); }
}

async function decide(decision) {
  if (!canDecide()) return;
  const comment = $("comment") ? $("comment").value : "";
  if (decision === "same_person") {
    if (chosen === null) { say(T.sameNone, true); return; }
    const candidate = current.candidates[chosen];
    if (!(await ask(T.same(chosen + 1, candidate), T.whatSame(chosen + 1, candidate)))) return;
    await act("decision", { decision, comment, matched_record_id: candidate.record_id }, decision);
  } else {
    const what = decision === "different_people" ? T.whatDifferent : T.whatCannot;
    if (!(await ask(decision === "different_people" ? T.different : T.cannotTell, what))) return;
    await act("decision", { decision, comment }, decision);
  }
}

async function confirmCase(confirm) {
  if (!canConfirm()) return;
  const comment = $("comment") ? $("comment").value : "";
  if (!confirm && !comment.trim()) { say(T.reasonNeeded, true); $("comment").focus(); return; }
  if (!(await ask(confirm ? T.confirm : T.overturn, confirm ? T.whatConfirm(current) : T.whatOverturn))) return;
  await act("confirmation", { confirm, comment }, confirm ? "confirmed" : "overturned");
}

// -- the audit view (auditors) ------------------------------------------------------------------
let auditEvents = [];

async function loadAudit() {
  const text = await api("GET", "/audit");
  auditEvents = String(text).split("\n").filter(Boolean).map((line) => JSON.parse(line)).reverse();
  renderAudit();
}

function renderAudit() {
  const needle = ($("audit-filter") ? $("audit-filter").value : "").toLowerCase();
  const shown = auditEvents.filter((e) => !needle || JSON.stringify(e).toLowerCase().includes(needle)).slice(0, 200);
  const details = (d) => Object.entries(d || {}).filter(([, v]) => v !== null && v !== "")
    .map(([k, v]) => `${k}: ${typeof v === "string" ? v : JSON.stringify(v)}`).join("; ");
  const rows = shown.map((e) => el("tr", {}, el("td", { className: "nowrap" }, when(e.at)),
    el("td", { className: "anywhere" }, e.actor || ""), el("td", { className: "nowrap" }, e.action || ""),
    el("td", { className: "anywhere" }, details(e.details))));
  $("audit-rows").replaceChildren(...rows);
  say(T.auditCount(shown.length, auditEvents.length));
}

function showView(which) {
  $("tab-cases").setAttribute("aria-pressed", String(which === "cases"));
  $("tab-audit").setAttribute("aria-pressed", String(which === "audit"));
  $("cases-view").hidden = which !== "cases";
  $("queue-title").textContent = which === "cases" ? T.tabCases : T.tabAudit;
  if (which === "audit") {
    clearCase();
    $("case-title").textContent = T.audit;
    const filter = el("input", { type: "text", id: "audit-filter" });
    filter.addEventListener("input", renderAudit);
    const exportButton = button(T.export, null, () => {
      const blob = new Blob(auditEvents.slice().reverse().map((e) => JSON.stringify(e) + "\n"), { type: "application/x-ndjson" });
      const link = el("a", { href: URL.createObjectURL(blob), download: "audit.jsonl" });
      link.click();
    });
    const table = el("table", {}, el("caption", {}, T.audit),
                     el("thead", {}, el("tr", {}, ...T.auditCols.map((h) => el("th", { scope: "col" }, h)))),
                     el("tbody", { id: "audit-rows" }));
    $("case-body").replaceChildren(el("div", { className: "filters" }, el("label", { for: "audit-filter" }, T.auditFilter, filter), exportButton), table);
    loadAudit().catch(fail);
  } else if (me) {
    clearCase();
  }
}

// -- keyboard: never from a field, never with a modifier, never under a dialog -------------------
function onKey(event) {
  if (!me || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
  const target = event.target;
  if (target && (target.isContentEditable || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName))) return;
  if (document.querySelector("dialog[open]")) return;
  const key = event.key;
  const buttons = queueButtons();
  if (key === "j" || key === "k") {
    if (!buttons.length) return;
    event.preventDefault();
    const inQueue = buttons.includes(document.activeElement);
    // From outside the list the first press lands on the current row; inside, each press moves one.
    if (inQueue) cursor = Math.max(0, Math.min(buttons.length - 1, cursor + (key === "j" ? 1 : -1)));
    markCursor();
    buttons[cursor].focus();
  } else if (/^[1-9]$/.test(key) && current && canDecide()) {
    choose(Number(key) - 1);
  } else if (["s", "d", "c", "y", "o", "u"].includes(key)) {
    const action = document.querySelector(`.actions button[data-key="${key}"]`);
    if (action && !action.disabled) { event.preventDefault(); action.click(); }
  }
}

// -- wiring --------------------------------------------------------------------------------------
function start() {
  document.title = T.title;
  $("title").textContent = T.title;
  $("token-label").textContent = T.tokenLabel;
  $("sign-in").textContent = T.signIn;
  $("sign-out").textContent = T.signOut;
  $("login").setAttribute("aria-label", T.signInForm);
  $("queue-title").textContent = T.tabCases;
  $("case-title").textContent = T.noCase;
  $("keys").textContent = T.keys;
  $("prev").textContent = T.prev;
  $("next").textContent = T.next;
  $("zoom-close").textContent = T.close;
  $("tab-cases").textContent = T.tabCases;
  $("tab-audit").textContent = T.tabAudit;
  $("zoom-close").addEventListener("click", () => $("zoom").close());
  $("login").addEventListener("submit", (event) => {
    event.preventDefault();
    if (hosted) FaceDedupSignIn.begin(hosted).catch(fail); else signIn($("token").value).catch(fail);
  });
  $("sign-out").addEventListener("click", () => signOut());
  $("prev").addEventListener("click", () => loadQueue(Math.max(0, page.offset - page.limit)).catch(fail));
  $("next").addEventListener("click", () => { if (page.next_offset !== null) loadQueue(page.next_offset).catch(fail); });
  $("tab-cases").addEventListener("click", () => { showView("cases"); loadQueue(0).catch(fail); });
  $("tab-audit").addEventListener("click", () => showView("audit"));
  document.addEventListener("keydown", onKey);
  say(T.signedOut);
  useHostedSignIn().catch(fail);
}

// In the cloud the deployment publishes the hosted-UI settings: sign in there (code + PKCE) and
// keep the ID token in memory only. Locally there are none and the pasted token stays.
async function useHostedSignIn() {
  if (typeof FaceDedupSignIn === "undefined") return;
  hosted = await FaceDedupSignIn.config();
  if (!hosted) return;
  $("token").hidden = true;
  $("token").required = false;
  $("token-label").hidden = true;
  const idToken = await FaceDedupSignIn.finish(hosted);
  if (idToken) await signIn(idToken);
}

start();
