// What both pages share: the token in the tab, the service's words for a refusal, the clock, the colours
// and patterns of activities and states, and the drawing of one recording's timeline (plain SVG).
"use strict";

const TOKEN_KEY = "har.token"; // sessionStorage: this tab only, gone when the tab closes
const SPECIAL = {
  not_worn: {name: "not worn", pattern: "pattern-not-worn", swatch: "#d9d9d9"},
  uncertain: {name: "uncertain", pattern: "pattern-uncertain", swatch: "#f2f2f2"},
  gap: {name: "gap (no data)", pattern: "pattern-gap", swatch: "#ffffff"},
};
// Okabe-Ito, then Paul Tol's muted scheme: told apart by colour-blind readers; labels are also written out.
const PALETTE = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#332288",
                 "#88CCEE", "#44AA99", "#117733", "#999933", "#DDCC77", "#882255", "#AA4499", "#661100",
                 "#6699CC", "#888888"];
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
// The model's labels in its own order (GET /model): an activity keeps its colour on every chart of both pages.
const shared = {labels: [], refused: null};

// ------------------------------------------------------------------ small helpers

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined) continue;
    if (key === "text") node.textContent = value;
    else if (key === "class") node.setAttribute("class", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

function token() { return sessionStorage.getItem(TOKEN_KEY); }

function fmt(value, digits = 2) {
  return typeof value === "number" && isFinite(value) ? value.toFixed(digits) : "—";
}

// The service writes wall-clock times as ISO text in the recording's own zone; the page shows that
// clock as written (never converted to the browser's zone): seconds of the day from the text, plus offsets.
function clockOrigin(iso) {
  const match = /T(\d\d):(\d\d):(\d\d(?:\.\d+)?)/.exec(iso || "");
  return match ? Number(match[1]) * 3600 + Number(match[2]) * 60 + Number(match[3]) : null;
}

function clock(origin, seconds, withSeconds = true) {
  if (origin === null) return `${fmt(seconds / 60, 1)} min`;
  const total = Math.round(origin + seconds);
  const day = ((total % 86400) + 86400) % 86400;
  const parts = [Math.floor(day / 3600), Math.floor(day / 60) % 60, day % 60].map((n) => String(n).padStart(2, "0"));
  return withSeconds ? parts.join(":") : parts.slice(0, 2).join(":");
}

function colour(label) {
  if (SPECIAL[label]) return SPECIAL[label].swatch;
  const index = shared.labels.indexOf(label);
  return PALETTE[(index >= 0 ? index : shared.labels.length) % PALETTE.length];
}

function fill(label) { return SPECIAL[label] ? `url(#${SPECIAL[label].pattern})` : colour(label); }

function labelName(label) { return SPECIAL[label] ? SPECIAL[label].name : label.replaceAll("_", " "); }

function detailOf(status, body, requestId = null) {
  // The service's words: Litestar's {"detail": ...} or the inference protocol's {"error": ...}, with the
  // request id the service logged the request under (X-Request-ID), for the user to quote.
  const words = body && typeof body === "object" && (body.detail || body.error)
    ? String(body.detail || body.error) : `the service answered HTTP ${status}`;
  return requestId ? `${words} (request id ${requestId})` : words;
}

function requestIdOf(response) { return response.headers.get("X-Request-ID"); }

// The sign-in form's submit: the token into the tab's sessionStorage (and out of the field), then `next()`.
async function takeToken(event, next) {
  event.preventDefault();
  const value = $("token").value.trim();
  $("token").value = ""; // nothing of the token stays in the page
  if (!value) return;
  sessionStorage.setItem(TOKEN_KEY, value);
  await next();
}

// A call to the service's JSON routes with the tab's token; a 401 goes to the page's `shared.refused`.
async function api(path, options = {}) {
  const headers = {...(options.headers || {}), Authorization: `Bearer ${token()}`};
  const response = await fetch(path, {...options, headers, cache: "no-store"});
  let body = null;
  try { body = await response.clone().json(); } catch (_) { body = null; }
  if (response.status === 401 && shared.refused) shared.refused(detailOf(401, body, requestIdOf(response)));
  return {response, body};
}

// ------------------------------------------------------------------ uploading a session (both pages)

function pickPair(files) {
  const acc = files.filter((f) => /accelerometer/i.test(f.name));
  const gyr = files.filter((f) => /gyroscope/i.test(f.name));
  if (files.length !== 2 || acc.length !== 1 || gyr.length !== 1) {
    const names = files.map((f) => f.name).join(", ") || "no file";
    throw new Error(`Choose the two workbooks of one session: one …-accelerometer_data.xlsx and one ` +
                    `…-gyroscope_data.xlsx (chosen: ${names}).`);
  }
  return {accelerometer: acc[0], gyroscope: gyr[0]};
}

function progress(text, fraction) {
  const bar = $("progress");
  bar.hidden = text === "";
  if (fraction === null) bar.removeAttribute("value"); // indeterminate while the service works on it
  else bar.value = fraction;
  $("progress-text").textContent = text;
}

// POST the pair as the multipart form of /recordings, showing the upload's progress, then `working` until
// the answer; `done(status, body, text, requestId)` gets it (status 0: the service could not be reached).
function sendPair(path, pair, working, done) {
  const form = new FormData();
  form.append("accelerometer", pair.accelerometer);
  form.append("gyroscope", pair.gyroscope);
  const request = new XMLHttpRequest(); // fetch cannot report upload progress
  request.open("POST", path);
  request.setRequestHeader("Authorization", `Bearer ${token()}`);
  request.responseType = "text"; // kept as sent: re-encoding would turn 1.0 into 1 in the downloaded files
  request.upload.onprogress = (e) => {
    if (e.lengthComputable) progress(`Uploading… ${Math.round(100 * e.loaded / e.total)} %`, e.loaded / e.total);
  };
  request.upload.onload = () => progress(working, null);
  request.onerror = () => { progress("", 0); done(0, null, "", null); };
  request.onload = () => {
    progress("", 0);
    let body = null;
    try { body = JSON.parse(request.responseText); } catch (_) { body = null; }
    done(request.status, body, request.responseText, request.getResponseHeader("X-Request-ID"));
  };
  progress("Uploading… 0 %", 0);
  request.send(form);
}

// ------------------------------------------------------------------ a recording's timeline

function gapsBetween(episodes) {
  const sorted = [...episodes].sort((a, b) => a.start_s - b.start_s);
  const gaps = [];
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].start_s - sorted[i - 1].end_s > 1e-6) {
      gaps.push({label: "gap", start_s: sorted[i - 1].end_s, end_s: sorted[i].start_s});
    }
  }
  return gaps;
}

function patterns() {
  const hatch = (id, bg, stroke, d) => el("svg:pattern", {id, width: 6, height: 6, patternUnits: "userSpaceOnUse"},
    el("svg:rect", {width: 6, height: 6, fill: bg}), el("svg:path", {d, stroke, "stroke-width": 1.2}));
  return el("svg:defs", {},
    hatch("pattern-not-worn", "#d9d9d9", "#6b6b6b", "M0,6 L6,0"),
    hatch("pattern-uncertain", "#f2f2f2", "#9a9a9a", "M0,3 L6,3 M3,0 L3,6"),
    hatch("pattern-gap", "#ffffff", "#bdbdbd", "M0,0 L6,6"));
}

function niceStep(span, width) {
  const steps = [10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800, 21600];
  const wanted = span / Math.max(2, Math.floor(width / 90));
  return steps.find((s) => s >= wanted) || steps[steps.length - 1];
}

// One recording's timeline as an SVG band over [from, to] seconds after its start (`origin`: the start's
// second of the day on its own clock, for the tick labels); the gaps between its episodes drawn as gaps.
// Both pages draw with it: the page at / one answer, the study page each recording of a day.
function timelineSvg(episodes, origin, from, to, width, attrs = {}) {
  const gaps = gapsBetween(episodes);
  const height = 74, top = 6, band = 40;
  const x = (s) => ((s - from) / (to - from)) * (width - 2);
  const svg = el("svg:svg", {role: "img", width, height, viewBox: `0 0 ${width} ${height}`,
    "aria-label": `Activity timeline from ${clock(origin, from)} to ${clock(origin, to)}`,
    "data-from-s": from, "data-to-s": to, "data-from-time": clock(origin, from), "data-to-time": clock(origin, to),
    ...attrs});
  svg.append(patterns(), el("svg:rect", {x: 0, y: top, width: width - 2, height: band, fill: "url(#pattern-gap)"}));
  for (const part of [...episodes, ...gaps]) {
    const left = x(part.start_s), w = Math.max(0.6, x(part.end_s) - left);
    const rect = el("svg:rect", {x: left, y: top, width: w, height: band, fill: fill(part.label),
      class: "segment", "data-label": part.label, "data-start-s": part.start_s, "data-end-s": part.end_s},
      el("svg:title", {text: `${labelName(part.label)}: ${clock(origin, part.start_s)}–${clock(origin, part.end_s)}`}));
    svg.append(rect);
    if (w > 70 && part.label !== "gap") {
      svg.append(el("svg:text", {x: left + 4, y: top + band / 2 + 4, "pointer-events": "none",
        fill: "#1b1b1b", stroke: "#fff", "stroke-width": 3, "paint-order": "stroke", text: labelName(part.label)}));
    }
  }
  const step = niceStep(to - from, width);
  const first = origin === null ? Math.ceil(from / step) * step : Math.ceil((origin + from) / step) * step - origin;
  for (let t = first; t <= to + 1e-9; t += step) {
    const at = x(t);
    svg.append(el("svg:line", {x1: at, x2: at, y1: top + band, y2: top + band + 5, stroke: "#555"}),
      el("svg:text", {x: Math.min(Math.max(at, 18), width - 18), y: height - 10, "text-anchor": "middle",
        text: clock(origin, t, step < 60)}));
  }
  return {svg, gaps};
}

function legendItems(labels) {
  return labels.map((label) => el("li", {},
    el("svg:svg", {viewBox: "0 0 18 12", "aria-hidden": "true"}, patterns(),
      el("svg:rect", {width: 18, height: 12, fill: fill(label)})), labelName(label)));
}
