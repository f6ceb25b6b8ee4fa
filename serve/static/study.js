// The study page at /study: participants, one participant's days (Observable Plot charts), a day's
// timeline across its recordings (common.js's drawing), upload and erasure. Every figure comes from the
// study store's routes (GET /subjects/...); the page talks to no other host.
"use strict";

const STATES = ["uncertain", "not_worn"]; // drawn after the activities, as patterns
const study = {access: null, subject: null, timezone: "UTC", days: [], cells: [], recordings: [], profiles: null,
               activities: []};
const enc = encodeURIComponent;

// Plot puts a <style> element of its defaults into every chart; the page's content security policy refuses
// inline styles (and should), so the element is taken out before the chart joins the page and page.css holds
// the same rules (.plot-d6a7b5).
function plotted(node) {
  for (const style of node.querySelectorAll("style")) style.remove();
  return node;
}

// ------------------------------------------------------------------ sign-in and access

function showSignedIn(signedIn, message = "") {
  $("signed-in").hidden = !signedIn;
  $("sign-in").hidden = signedIn;
  $("participants").hidden = !signedIn;
  $("sign-in-message").textContent = message;
  if (!signedIn) { $("upload").hidden = true; $("participant").hidden = true; }
}

function refused(detail) {
  sessionStorage.removeItem(TOKEN_KEY);
  study.access = null;
  showSignedIn(false, `The service did not accept the token (${detail}). Enter a token of the service and sign in again.`);
  $("token").focus();
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  study.access = null;
  showSignedIn(false, "Signed out.");
}

// The answer to a request study-early.js started (once: a later call asks again), else a new call.
async function takeEarly(name, path) {
  const early = window.studyEarly || {};
  const pending = early[name];
  delete early[name];
  if (!pending) return api(path);
  const response = await pending;
  let body = null;
  try { body = await response.clone().json(); } catch (_) { body = null; }
  if (response.status === 401) refused(detailOf(401, body, requestIdOf(response)));
  return {response, body};
}

// Which token this is: the service's (reads and writes) or the read-only one. The controls follow; the
// server refuses a read-only token's writes whatever the page shows.
async function start() {
  const [{response, body}] = await Promise.all([takeEarly("access", "/study/access"),
                                                shared.labels.length ? null : loadLabels()]);
  if (response.status === 401) return;
  if (!response.ok) { showSignedIn(false, detailOf(response.status, body, requestIdOf(response))); return; }
  study.access = body;
  showSignedIn(true);
  $("access").textContent = body.write ? "Signed in for this tab." : "Signed in read-only for this tab.";
  $("upload").hidden = !body.write;
  $("erase-start").hidden = !body.write;
  // A participant's address (/study#P001) opens its charts first; the list follows (its rows cost requests too).
  await openFromHash();
  await loadParticipants();
}

// ------------------------------------------------------------------ participants

function worn(day) { return day.recorded_minutes > 0 ? day.worn_minutes / 60 : NaN; }

function lastUpload(recordings) {
  const times = recordings.flatMap((r) => (r.scorings || []).map((s) => s.scored_at)).filter(Boolean).sort();
  return times.length ? times[times.length - 1].slice(0, 16).replace("T", " ") : "—";
}

function sparkline(days) {
  const svg = plotted(Plot.plot({width: 160, height: 28, margin: 2, axis: null, x: {type: "band"},
    y: {domain: [0, 24]}, marks: [Plot.barY(days, {x: "date", y: worn, fill: (d) => d.valid ? "#0072B2" : "#9a9a9a"})]}));
  svg.setAttribute("aria-label", `Worn hours per day, ${days.length} days`);
  svg.classList.add("sparkline");
  svg.dataset.wornHours = JSON.stringify(days.map((d) => Number.isNaN(worn(d)) ? null : worn(d)));
  return svg;
}

async function loadParticipants() {
  const {response, body} = await api("/subjects");
  if (!response.ok) { $("participants-empty").hidden = false; $("participants-empty").textContent = detailOf(response.status, body, requestIdOf(response)); return; }
  const people = Array.isArray(body) ? body : (body.subjects || []);
  $("participants-empty").hidden = people.length > 0;
  const rows = await Promise.all(people.map(async (person) => {
    const subject = person.subject;
    const [days, recordings] = await Promise.all([api(`/subjects/${enc(subject)}/days`), api(`/subjects/${enc(subject)}/recordings`)]);
    const link = el("a", {href: `#${enc(subject)}`, class: "open", text: subject});
    return el("tr", {"data-subject": subject},
      el("th", {scope: "row"}, link), el("td", {class: "days", text: person.days}),
      el("td", {class: "valid-days", text: person.valid_days}), el("td", {class: "first-day", text: person.first_day || "—"}),
      el("td", {class: "last-day", text: person.last_day || "—"}),
      el("td", {class: "last-upload", text: recordings.response.ok ? lastUpload(recordings.body) : "—"}),
      el("td", {class: "spark"}, days.response.ok ? sparkline(days.body) : detailOf(days.response.status, days.body, requestIdOf(days.response))));
  }));
  $("participants-table").tBodies[0].replaceChildren(...rows);
}

// ------------------------------------------------------------------ one participant

async function openFromHash() {
  const subject = decodeURIComponent(location.hash.slice(1));
  if (subject && study.access) await openParticipant(subject);
  else $("participant").hidden = true;
}

// The heatmap, day bars and trend need the days and the hour rows only: they are drawn as soon as those
// two answers are in; the profiles and the recordings (for the summary and a day's timelines) follow.
async function openParticipant(subject) {
  $("participant-message").textContent = "";
  $("upload-subject").value = subject;
  const base = `/subjects/${enc(subject)}`;
  const ask = (window.studyEarly || {}).subject === subject ? takeEarly : (_, path) => api(path);
  const [days, cells] = await Promise.all([ask("days", `${base}/days`), ask("cells", `/study/subjects/${enc(subject)}/hours`)]);
  // Asked for only now, so that they do not queue before the two the heatmap waits for; drawn meanwhile.
  study.pending = Promise.all([api(`${base}/hours`), api(`${base}/recordings`)]);
  $("participant").hidden = false;
  $("participant-title").textContent = `Participant ${subject}`;
  const failed = [days, cells].find((r) => !r.response.ok);
  if (failed) { $("participant-message").textContent = detailOf(failed.response.status, failed.body, requestIdOf(failed.response)); return; }
  Object.assign(study, {subject, days: days.body, cells: mergeHours(cells.body.hours), recordings: [], profiles: null,
                        timezone: cells.body.timezone || study.timezone});
  study.activities = activitiesOf(study.days);
  $("day").hidden = true;
  $("erase-id").textContent = subject;
  $("erase-form").hidden = true;
  fillModes();
  drawHeatmap();
  drawDayBars();
  drawTrend();
  const [profiles, stored] = await study.pending;
  if (study.subject !== subject) return; // another participant was opened meanwhile
  const failedLater = [profiles, stored].find((r) => !r.response.ok);
  if (failedLater) { $("participant-message").textContent = detailOf(failedLater.response.status, failedLater.body, requestIdOf(failedLater.response)); return; }
  Object.assign(study, {profiles: profiles.body, recordings: stored.body, timezone: profiles.body.timezone || study.timezone});
  drawProfiles();
  const valid = study.days.filter((d) => d.valid).length;
  $("participant-summary").textContent = `${study.days.length} days from ${study.days[0]?.date || "—"} ` +
    `to ${study.days.at(-1)?.date || "—"}, ${valid} valid; ${study.recordings.length} recordings; ` +
    `time zone ${study.timezone}.`;
}

function activitiesOf(days) {
  const found = new Set(days.flatMap((d) => Object.keys(d.minutes_per_activity || {})));
  return [...shared.labels.filter((l) => found.has(l)), ...[...found].filter((l) => !shared.labels.includes(l))];
}

// The store's hour rows (one per hour of absolute time) as one cell per date and local hour: the
// repeated hour of a 25-hour day is added into one cell; a 23-hour day has no cell for its missing hour.
function mergeHours(rows) {
  const cells = new Map();
  for (const row of rows) {
    const key = `${row.date} ${row.hour}`;
    const cell = cells.get(key) || {date: row.date, hour: row.hour, hour_start: row.hour_start, recorded_minutes: 0,
                                    not_worn_minutes: 0, uncertain_minutes: 0, minutes_per_activity: {}};
    cell.recorded_minutes += row.recorded_minutes;
    cell.not_worn_minutes += row.not_worn_minutes;
    cell.uncertain_minutes += row.uncertain_minutes;
    for (const [label, minutes] of Object.entries(row.minutes_per_activity || {})) {
      cell.minutes_per_activity[label] = (cell.minutes_per_activity[label] || 0) + minutes;
    }
    cells.set(key, cell);
  }
  return [...cells.values()];
}

function minutesOf(cell, label) {
  if (label === "not_worn") return cell.not_worn_minutes;
  if (label === "uncertain") return cell.uncertain_minutes;
  return (cell.minutes_per_activity || {})[label] || 0;
}

// The estimated minutes of the activities share out all worn time, uncertain time included: an hour is the
// activity with the most estimated minutes, or not worn.
function dominant(cell) {
  if (!(cell.recorded_minutes > 0)) return "gap";
  let best = null, most = -1;
  for (const label of [...study.activities, "not_worn"]) {
    const minutes = minutesOf(cell, label);
    if (minutes > most) { best = label; most = minutes; }
  }
  return best;
}

function fillModes() {
  const select = $("heatmap-mode");
  const chosen = select.value;
  select.replaceChildren(el("option", {value: "", text: "the dominant activity of the hour"}),
    ...study.activities.map((a) => el("option", {value: a, text: `minutes of ${labelName(a)}`})));
  select.value = study.activities.includes(chosen) ? chosen : "";
}

function drawAll() {
  drawHeatmap();
  drawDayBars();
  drawTrend();
  if (study.profiles) drawProfiles();
}

// Plot's render hook: the drawn elements in the order of `index`, each given its datum's data-* attributes
// (the browser tests read the figures there) and a click that opens its day.
function annotated(data, attributes) {
  return function render(index, scales, values, dimensions, context, next) {
    const g = next(index, scales, values, dimensions, context);
    const shapes = g.querySelectorAll("rect, circle, line");
    index.forEach((i, k) => {
      const shape = shapes[k];
      for (const [name, value] of Object.entries(attributes(data[i]))) shape.setAttribute(`data-${name}`, value);
    });
    g.classList.add("clickable"); // one listener for all its shapes: each carries its day in data-date
    g.addEventListener("click", (event) => { const date = event.target.dataset?.date; if (date) openDay(date); });
    return g;
  };
}

function chartWidth(id) { return Math.max(320, $(id).clientWidth || 900); }

function dateTicks(dates, width) {
  const every = Math.max(1, Math.ceil(dates.length / Math.max(2, Math.floor(width / 56))));
  return dates.filter((_, i) => i % every === 0);
}

function weekdayOf(date) { return (study.days.find((d) => d.date === date) || {}).weekday || ""; }

function drawHeatmap() {
  const mode = $("heatmap-mode").value;
  const dates = study.days.map((d) => d.date);
  const invalid = new Set(study.days.filter((d) => !d.valid).map((d) => d.date));
  const ramp = d3.scaleSequential([0, 60], d3.interpolateBlues);
  const fillOf = (cell) => {
    const top = dominant(cell);
    if (!mode || SPECIAL[top]) return fill(top); // no data, not worn, uncertain: their patterns in both modes
    return ramp(minutesOf(cell, mode));
  };
  const width = chartWidth("heatmap");
  const rowHeight = dates.length > 60 ? 9 : dates.length > 30 ? 12 : 18;
  const svg = plotted(Plot.plot({
    width, height: 40 + rowHeight * dates.length, marginLeft: 112, marginRight: 64, marginTop: 28, padding: 0.06,
    x: {type: "band", domain: d3.range(24), label: "local hour", axis: "top", tickSize: 0},
    y: {type: "band", domain: dates, label: null, tickSize: 0, ticks: dates.filter((_, i) => i % Math.ceil(11 / rowHeight) === 0),
        tickFormat: (d) => `${d} ${weekdayOf(d).slice(0, 3)}`},
    color: {type: "identity"},
    marks: [Plot.cell(study.cells, {x: "hour", y: "date", fill: fillOf, inset: 0.5,
      title: (c) => `${c.date} ${String(c.hour).padStart(2, "0")}:00 · ${labelName(dominant(c))}` +
        (mode ? ` · ${fmt(minutesOf(c, mode), 1)} min of ${labelName(mode)}` : "") + ` · ${fmt(c.recorded_minutes, 1)} min recorded`,
      render: annotated(study.cells, (c) => ({
        date: c.date, hour: c.hour, dominant: dominant(c), "recorded-minutes": c.recorded_minutes,
        minutes: JSON.stringify({...c.minutes_per_activity, not_worn: c.not_worn_minutes, uncertain: c.uncertain_minutes})}))}),
      Plot.text([...invalid], {y: (d) => d, frameAnchor: "right", textAnchor: "start", dx: 6, text: () => "✗ invalid",
        fill: "#8a1c00", className: "invalid-day"})]}));
  svg.id = "heatmap-svg";
  svg.dataset.mode = mode;
  $("heatmap").replaceChildren(svg);
  performance.mark("heatmap-drawn"); // bench/page.py: from the page's navigation to here
  $("heatmap-caption").textContent = `Each cell is one local hour of one day (${dates.length} days), coloured by ` +
    (mode ? `the minutes of ${labelName(mode)} in the hour (0 to 60)` : "the activity with the most minutes in the hour") +
    `; ✗ marks an invalid day.`;
  const legend = mode ? [] : legendItems(study.activities);
  if (mode) {
    const scale = plotted(Plot.legend({color: {type: "sequential", domain: [0, 60], scheme: "blues", label: `minutes of ${labelName(mode)}`}}));
    legend.push(el("li", {}, scale));
  }
  legend.push(...legendItems([...STATES, "gap"]));
  $("heatmap-legend").replaceChildren(...legend);
}

// A day's bar: the estimated minutes of each activity (they share out the worn time, uncertain time included),
// then the not-worn minutes: together the recorded minutes.
function dayRows() {
  return study.days.flatMap((day) => [...study.activities, "not_worn"].map((label) => ({
    date: day.date, label, valid: day.valid,
    minutes: label === "not_worn" ? day.not_worn_minutes : (day.minutes_per_activity || {})[label] || 0,
    interval: label === "not_worn" ? null : (day.minutes_interval_90 || {})[label] || null})));
}

function intervalText(interval) {
  return interval ? ` (90 % interval ${fmt(interval[0], 1)} to ${fmt(interval[1], 1)})` : "";
}

function drawDayBars() {
  const dates = study.days.map((d) => d.date);
  const rows = dayRows();
  const width = chartWidth("day-bars");
  const invalid = study.days.filter((d) => !d.valid);
  const svg = plotted(Plot.plot({
    width, height: 260, marginLeft: 48, marginBottom: 36,
    x: {type: "band", domain: dates, label: null, ticks: dateTicks(dates, width), tickFormat: (d) => d.slice(5)},
    y: {label: "minutes", grid: true},
    color: {type: "identity"},
    marks: [
      Plot.barY(rows, {x: "date", y: "minutes", z: "label", fill: (r) => fill(r.label), order: [...study.activities, "not_worn"],
        fillOpacity: (r) => r.valid ? 1 : 0.45, stroke: "#fff", strokeWidth: 0.3,
        title: (r) => `${r.date}: ${fmt(r.minutes, 1)} min ${labelName(r.label)}${intervalText(r.interval)}` +
          `${r.valid ? "" : " (invalid day)"}`,
        render: annotated(rows, (r) => ({date: r.date, label: r.label, minutes: r.minutes, valid: r.valid}))}),
      Plot.text(invalid, {x: "date", y: (d) => d.recorded_minutes, text: () => "✗", dy: -7, fill: "#8a1c00",
        className: "invalid-day"}),
      Plot.ruleY([0])]}));
  svg.id = "day-bars-svg";
  $("day-bars").replaceChildren(svg);
  // The keyboard's way to a day (the charts' shapes take clicks, not focus).
  $("day-pick").replaceChildren(el("option", {value: "", text: "choose a day"}), ...study.days.map((d) =>
    el("option", {value: d.date, text: `${d.date} ${d.weekday}${d.valid ? "" : " (invalid)"}`})));
  $("bars-legend").replaceChildren(...legendItems([...study.activities, "not_worn"]));
}

function drawTrend() {
  // Every calendar day from the first to the last, so that the 7-day window is 7 days, not 7 recorded days.
  const byDate = new Map(study.days.map((d) => [d.date, d]));
  const first = study.days[0]?.date, last = study.days.at(-1)?.date;
  if (!first) { $("trend").replaceChildren(); return; }
  const all = d3.utcDay.range(new Date(`${first}T00:00Z`), d3.utcDay.offset(new Date(`${last}T00:00Z`), 1));
  const rows = study.activities.flatMap((label) => all.map((day) => {
    const date = day.toISOString().slice(0, 10), row = byDate.get(date);
    const recorded = row && row.recorded_minutes > 0;
    const interval = recorded ? (row.minutes_interval_90 || {})[label] || null : null;
    return {day, date, label, minutes: recorded ? (row.minutes_per_activity || {})[label] || 0 : NaN,
            low: interval ? interval[0] : NaN, high: interval ? interval[1] : NaN};
  }));
  const intervals = rows.filter((r) => Number.isFinite(r.low));
  const svg = plotted(Plot.plot({
    width: chartWidth("trend"), height: 40 + 90 * study.activities.length, marginLeft: 48, marginRight: 90,
    x: {type: "utc", label: null}, y: {label: "minutes", grid: true},
    fy: {label: null, tickFormat: labelName}, color: {type: "identity"},
    marks: [
      // each day's 90 % interval of the estimate, behind its dot
      Plot.ruleX(intervals, {x: "day", y1: "low", y2: "high", fy: "label", stroke: (r) => colour(r.label),
        strokeOpacity: 0.35, strokeWidth: 3,
        render: annotated(intervals, (r) => ({date: r.date, label: r.label, low: r.low, high: r.high}))}),
      Plot.dot(rows, {x: "day", y: "minutes", fy: "label", r: 2, fill: (r) => colour(r.label), fillOpacity: 0.6,
        title: (r) => `${r.date}: ${fmt(r.minutes, 1)} min ${labelName(r.label)}` +
          intervalText(Number.isFinite(r.low) ? [r.low, r.high] : null),
        render: annotated(rows, (r) => ({date: r.date, label: r.label, minutes: r.minutes}))}),
      Plot.lineY(rows, Plot.windowY({k: 7, anchor: "end", reduce: "mean", strict: false},
        {x: "day", y: "minutes", fy: "label", z: "label", stroke: (r) => colour(r.label), strokeWidth: 2})),
      Plot.frame({stroke: "#ddd"})]}));
  svg.id = "trend-svg";
  $("trend").replaceChildren(svg);
}

function drawProfiles() {
  const groups = [["weekday", "weekdays"], ["weekend", "weekend days"]];
  const rows = groups.flatMap(([key, name]) => (study.profiles[key] || []).flatMap((hour) =>
    [...study.activities, "not_worn"].map((label) => ({group: name, hour: hour.hour, label, days: hour.days,
      minutes: label === "not_worn" ? hour.not_worn_minutes : (hour.minutes_per_activity || {})[label] || 0}))));
  const svg = plotted(Plot.plot({
    width: chartWidth("profiles"), height: 260, marginLeft: 48,
    x: {label: "local hour", domain: [0, 23], ticks: [0, 6, 12, 18, 23]}, y: {label: "mean minutes", grid: true},
    fx: {label: null, domain: groups.map(([, name]) => name)}, color: {type: "identity"},
    marks: [
      Plot.lineY(rows, {x: "hour", y: "minutes", fx: "group", z: "label", strokeWidth: 2,
        stroke: (r) => r.label === "not_worn" ? "#6b6b6b" : colour(r.label),
        strokeDasharray: (r) => r.label === "not_worn" ? "4 3" : null}),
      Plot.dot(rows, {x: "hour", y: "minutes", fx: "group", r: 1.5, fill: (r) => r.label === "not_worn" ? "#6b6b6b" : colour(r.label),
        title: (r) => `${r.group}, ${r.hour}:00: ${fmt(r.minutes, 1)} min ${labelName(r.label)} (mean of ${r.days} days)`}),
      Plot.frame({stroke: "#ddd"})]}));
  svg.id = "profiles-svg";
  $("profiles").replaceChildren(svg, el("ul", {class: "legend"}, ...legendItems([...study.activities, "not_worn"])));
}

// ------------------------------------------------------------------ a day across its recordings

// Seconds since 1970 of local midnight of `date` in the participant's zone (the offset read from Intl).
function offsetSeconds(epochS, timeZone) {
  const parts = new Intl.DateTimeFormat("en-US", {timeZone, hourCycle: "h23", year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit", second: "2-digit"}).formatToParts(new Date(epochS * 1000));
  const v = Object.fromEntries(parts.map((p) => [p.type, Number(p.value)]));
  return (Date.UTC(v.year, v.month - 1, v.day, v.hour, v.minute, v.second) / 1000) - Math.floor(epochS);
}

function localMidnight(date, timeZone) {
  const wall = Date.parse(`${date}T00:00:00Z`) / 1000;
  let guess = wall - offsetSeconds(wall, timeZone);
  guess = wall - offsetSeconds(guess, timeZone); // once more: the offset at midnight itself, not at UTC midnight
  return guess;
}

function nextDate(date) { return new Date(Date.parse(`${date}T00:00:00Z`) + 86400000).toISOString().slice(0, 10); }

async function openDay(date) {
  await study.pending; // the participant's recordings
  const midnight = localMidnight(date, study.timezone);
  const length = localMidnight(nextDate(date), study.timezone) - midnight;
  const touching = study.recordings.filter((r) => (r.days || []).includes(date));
  const answers = await Promise.all(touching.map((r) => api(`/subjects/${enc(study.subject)}/recordings/${enc(r.id)}`)));
  const section = $("day");
  section.hidden = false;
  const day = study.days.find((d) => d.date === date) || {};
  $("day-title").textContent = `${date} (${day.weekday || ""})`;
  $("day-summary").textContent = `${touching.length} recording(s); ${fmt(day.recorded_minutes, 1)} min recorded, ` +
    `${fmt(day.worn_minutes, 1)} worn, ${fmt(day.not_worn_minutes, 1)} not worn, ${fmt(day.uncertain_minutes, 1)} uncertain; ` +
    `${day.valid ? "a valid day" : "✗ not a valid day"}. Times from local midnight${length !== 86400 ? ` (a ${length / 3600}-hour day)` : ""}.`;
  const width = Math.max(280, $("day-timelines").clientWidth || 800);
  const shown = new Set();
  const figures = touching.map((rec, k) => {
    const {response, body} = answers[k];
    if (!response.ok) return el("p", {class: "message", text: detailOf(response.status, body, requestIdOf(response))});
    const offset = Date.parse(rec.start_time) / 1000 - midnight; // the recording's start, in seconds of this day
    const episodes = (body.answer.episodes || []).map((e) => ({label: e.label, start_s: Math.max(0, e.start_s + offset),
      end_s: Math.min(length, e.end_s + offset)})).filter((e) => e.end_s > e.start_s);
    episodes.forEach((e) => shown.add(e.label));
    const {svg} = timelineSvg(episodes, 0, 0, length, width, {class: "day-timeline", "data-recording": rec.id,
                                                              "data-offset-s": offset});
    return el("figure", {}, el("figcaption", {text: `Recording ${rec.id} (${rec.name || ""}): ` +
      `${rec.start_time.slice(0, 19).replace("T", " ")} to ${rec.end_time.slice(0, 19).replace("T", " ")}`}), svg);
  });
  $("day-timelines").replaceChildren(...figures);
  $("day-legend").replaceChildren(...legendItems([...shown, "gap"]));
  section.scrollIntoView({block: "nearest"});
}

// ------------------------------------------------------------------ actions

function upload(event) {
  event.preventDefault();
  $("upload-error").textContent = "";
  $("upload-done").textContent = "";
  const subject = $("upload-subject").value.trim();
  let pair;
  try { pair = pickPair([...$("files").files]); } catch (error) { $("upload-error").textContent = error.message; return; }
  $("upload-button").disabled = true;
  sendPair(`/subjects/${enc(subject)}/recordings`, pair, "Reading, scoring and storing the session…", async (status, body, text, requestId) => {
    $("upload-button").disabled = false;
    if (status === 0) { $("upload-error").textContent = "The service could not be reached."; return; }
    if ((status === 201 || status === 200) && body) {
      $("upload-done").textContent = `${status === 201 ? "Stored" : "Already stored (nothing new)"}: recording ` +
        `${body.id} of ${subject}, ${(body.start_time || "").slice(0, 19).replace("T", " ")} to ` +
        `${(body.end_time || "").slice(0, 19).replace("T", " ")}, days ${(body.days || []).join(", ")}.`;
      await loadParticipants();
      if (location.hash === `#${enc(subject)}`) openParticipant(subject); else location.hash = enc(subject);
      return;
    }
    const detail = detailOf(status, body, requestId);
    if (status === 401) { refused(detail); return; }
    $("upload-error").textContent = detail; // the reader's refusal, word for word
  });
}

async function downloadDays(event) {
  event.preventDefault(); // the route is guarded: fetch with the token, then hand the text over as a file
  const {response, body} = await api(`/subjects/${enc(study.subject)}/days`, {headers: {Accept: "text/csv"}});
  if (!response.ok) { $("participant-message").textContent = detailOf(response.status, body, requestIdOf(response)); return; }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", {href: url, download: `${study.subject}-days.csv`});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function erase(event) {
  event.preventDefault();
  const subject = study.subject;
  if ($("erase-confirm").value !== subject) return;
  const {response, body} = await api(`/subjects/${enc(subject)}`, {method: "DELETE"});
  if (!response.ok) { $("participant-message").textContent = detailOf(response.status, body, requestIdOf(response)); return; }
  $("erase-form").hidden = true;
  $("participant").hidden = true;
  history.replaceState(null, "", location.pathname);
  $("upload-done").textContent = `Erased ${subject}: ` + Object.entries(body || {})
    .filter(([, v]) => typeof v === "number").map(([k, v]) => `${v} ${k.replaceAll("_", " ")}`).join(", ") + ".";
  await loadParticipants();
}

// ------------------------------------------------------------------ wiring

async function loadLabels() {
  const early = (window.studyEarly || {}).model;
  delete (window.studyEarly || {}).model;
  const response = await (early || fetch("/model", {cache: "no-store"}));
  if (response.ok) shared.labels = (await response.json()).labels || [];
}

document.addEventListener("DOMContentLoaded", () => {
  shared.refused = refused;
  $("sign-in-form").addEventListener("submit", (event) => takeToken(event, start));
  $("sign-out").addEventListener("click", signOut);
  $("upload-form").addEventListener("submit", upload);
  $("days-csv").addEventListener("click", downloadDays);
  $("heatmap-mode").addEventListener("change", drawHeatmap);
  $("day-pick").addEventListener("change", () => { if ($("day-pick").value) openDay($("day-pick").value); });
  $("erase-start").addEventListener("click", () => {
    $("erase-form").hidden = false;
    $("erase-confirm").value = "";
    $("erase-button").disabled = true;
    $("erase-confirm").focus();
  });
  $("erase-confirm").addEventListener("input", () => { $("erase-button").disabled = $("erase-confirm").value !== study.subject; });
  $("erase-cancel").addEventListener("click", () => { $("erase-form").hidden = true; });
  $("erase-form").addEventListener("submit", erase);
  window.addEventListener("hashchange", openFromHash);
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => { if (!$("participant").hidden) drawAll(); }, 200);
  });
  if (token()) start(); else { showSignedIn(false); loadLabels(); }
});
