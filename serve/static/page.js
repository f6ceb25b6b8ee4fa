// The page at /: sign-in, upload, and drawing the /recordings answer as plain SVG and HTML (with common.js).
// Everything it shows comes from the service's JSON routes; it talks to no other host.
"use strict";

const state = {answer: null, downloads: []};

// ------------------------------------------------------------------ sign-in

function showSignedIn(signedIn, message = "") {
  $("signed-in").hidden = !signedIn;
  $("sign-in").hidden = signedIn;
  $("upload-button").disabled = !signedIn;
  $("sign-in-message").textContent = message;
}

function refused(detail) {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignedIn(false, `The service did not accept the token (${detail}). Enter the service's bearer token and sign in again.`);
  $("token").focus();
}

async function checkToken() {
  // GET /drift is guarded: 401 means a wrong token; 200, or 404 without a drift reference, means it was accepted.
  const {response, body} = await api("/drift");
  if (response.status === 401) return;
  showSignedIn(true);
  renderLiveDrift(response, body);
}

function signOut() {
  sessionStorage.removeItem(TOKEN_KEY);
  showSignedIn(false, "Signed out.");
  $("sign-in-message").classList.add("ok");
  $("live-drift").replaceChildren(el("p", {text: "Sign in to see the live drift summary."}));
}

// ------------------------------------------------------------------ upload

function upload(files) {
  $("upload-error").textContent = "";
  let pair;
  try { pair = pickPair(files); } catch (error) { $("upload-error").textContent = error.message; return; }
  $("upload-button").disabled = true;
  sendPair("/recordings", pair, "Reading, fusing and scoring the recording…", (status, body, text, requestId) => {
    $("upload-button").disabled = false;
    if (status === 0) { $("upload-error").textContent = "The service could not be reached."; return; }
    if (status === 200 && body) { render(body, text); return; }
    const detail = detailOf(status, body, requestId);
    if (status === 401) { refused(detail); return; }
    $("upload-error").textContent = detail;
  });
}

// ------------------------------------------------------------------ the answer

function render(answer, text) {
  state.answer = answer;
  $("answer").hidden = false;
  const rec = answer.recording || {};
  const origin = clockOrigin(rec.start_time);
  const day = rec.start_time ? rec.start_time.slice(0, 10) : "";
  $("answer-title").textContent = `Recording ${rec.id || ""}`;
  $("answer-summary").textContent = `${day} from ${clock(origin, 0)}: ${answer.windows} windows of ` +
    `${fmt(answer.window_s, 1)} s cover ${fmt(answer.covered_minutes, 1)} minutes; model ` +
    `${(answer.model || {}).name || "?"} ${(answer.model || {}).version || ""}.`;
  drawTimeline(answer, origin);
  drawMinutes(answer);
  fillEpisodes(answer, origin);
  fillQuality(answer);
  fillRecordingDrift(answer.drift);
  makeDownloads(answer, text);
  refreshLiveDrift();
  $("answer-title").scrollIntoView({block: "start"});
}

function drawTimeline(answer, origin) {
  const box = $("timeline-box");
  const episodes = answer.episodes || [];
  const from = Math.min(0, ...episodes.map((e) => e.start_s));
  const to = Math.max(from + 1, ...episodes.map((e) => e.end_s));
  const {svg, gaps} = timelineSvg(episodes, origin, from, to, Math.max(280, box.clientWidth || 800), {id: "timeline"});
  box.replaceChildren(svg);
  $("timeline-caption").textContent = `Activity timeline over wall-clock time, ${clock(origin, from)} to ` +
    `${clock(origin, to)}${gaps.length ? `, with ${gaps.length} gap(s) without data` : ""}`;
  const shown = [...new Set(episodes.map((e) => e.label))];
  if (gaps.length) shown.push("gap");
  $("legend").replaceChildren(...legendItems(shown));
}

// The estimated minutes per activity (they share out the uncertain time), each with its 90 % interval drawn over
// its bar and the counted minutes in its tooltip; then the two states as the timeline has them.
function drawMinutes(answer) {
  const rows = Object.entries(answer.minutes_per_activity || {}).sort((a, b) => b[1] - a[1]);
  const special = [["uncertain", answer.uncertain_minutes], ["not_worn", answer.not_worn_minutes]]
    .filter(([, minutes]) => typeof minutes === "number");
  const intervals = answer.minutes_interval_90 || {}, counted = answer.counted_minutes_per_activity || {};
  const all = [...rows, ...special];
  const most = Math.max(1e-9, ...all.map(([, m]) => m), ...Object.values(intervals).map((i) => (i ? i[1] : 0)));
  $("minutes").replaceChildren(...all.map(([label, minutes]) => {
    const bar = el("span", {class: "bar"});
    bar.style.width = `${(100 * minutes) / most}%`;
    bar.style.background = fill(label).startsWith("url") ? colour(label) : fill(label);
    if (SPECIAL[label]) bar.style.backgroundImage = "repeating-linear-gradient(45deg, #777 0 1px, transparent 1px 5px)";
    const track = el("span", {class: "track"}, bar);
    const interval = intervals[label];
    const attributes = {"data-label": label, "data-minutes": minutes, class: SPECIAL[label] ? "special" : null};
    if (interval) {
      const whisker = el("span", {class: "interval"});
      whisker.style.left = `${(100 * interval[0]) / most}%`;
      whisker.style.width = `${(100 * (interval[1] - interval[0])) / most}%`;
      track.append(whisker);
      Object.assign(attributes, {"data-low": interval[0], "data-high": interval[1]});
    }
    const item = el("li", attributes, el("span", {class: "name", text: labelName(label)}), track,
      el("span", {class: "value", text: `${fmt(minutes, 1)} min`}));
    if (label in counted) item.title = `estimated ${fmt(minutes, 1)} min` + (interval ? ` (90 % interval ` +
      `${fmt(interval[0], 1)} to ${fmt(interval[1], 1)})` : "") + `; counted ${fmt(counted[label], 1)} min`;
    return item;
  }));
}

function fillEpisodes(answer, origin) {
  $("episodes").tBodies[0].replaceChildren(...(answer.episodes || []).map((e) => el("tr", {"data-label": e.label},
    el("td", {}, el("span", {class: "swatch", "aria-hidden": "true"}), labelName(e.label)),
    el("td", {text: clock(origin, e.start_s)}), el("td", {text: clock(origin, e.end_s)}),
    el("td", {text: fmt(((e.duration_s ?? e.end_s - e.start_s)) / 60, 2)}), el("td", {text: e.windows}),
    el("td", {text: fmt(e.mean_confidence, 2)}))));
  for (const row of $("episodes").tBodies[0].rows) {
    row.querySelector(".swatch").style.background = colour(row.dataset.label);
  }
}

function fillQuality(answer) {
  const rec = answer.recording || {};
  const quality = rec.quality || {};
  const pairs = [["Fused samples", rec.fused_samples], ["Fused seconds", rec.fused_seconds],
                 ["Continuous segments", rec.segments]];
  const wear = answer.wear;
  if (wear) pairs.push(["Worn minutes", fmt(wear.worn_minutes, 1)], ["Not worn minutes", fmt(wear.not_worn_minutes, 1)]);
  else pairs.push(["Wear time", "not reported by this service version"]);
  const blocks = [el("dl", {class: "pairs"}, ...pairs.flatMap(([k, v]) => [el("dt", {text: k}), el("dd", {text: v ?? "—"})]))];
  const sensors = [["acc", "Accelerometer"], ["gyr", "Gyroscope"]].filter(([key]) => quality[key]);
  if (sensors.length) {
    const rows = [["samples_read", "Samples read"], ["duplicates", "Duplicates"], ["out_of_order", "Out of order"],
                  ["gaps", "Gaps"], ["gap_seconds", "Seconds in gaps"], ["native_hz", "Native rate (Hz)"],
                  ["samples_used", "Samples used"]];
    blocks.push(el("table", {id: "quality-table"},
      el("thead", {}, el("tr", {}, el("th", {scope: "col", text: "Per sensor"}),
        ...sensors.map(([, name]) => el("th", {scope: "col", text: name})))),
      el("tbody", {}, ...rows.filter(([key]) => sensors.some(([s]) => key in quality[s])).map(([key, name]) =>
        el("tr", {}, el("th", {scope: "row", text: name}),
          ...sensors.map(([s]) => el("td", {"data-key": `${s}.${key}`, text: quality[s][key] ?? "—"})))))));
  } else {
    blocks.push(el("p", {text: "Samples read, duplicates and gaps per sensor are not reported by this service version."}));
  }
  $("quality").replaceChildren(...blocks);
}

function severityBadge(severity) {
  const marks = {none: "✓", warning: "▲", critical: "■"}; // shape and word, not colour alone
  return el("span", {class: `severity ${severity}`, text: `${marks[severity] || ""} ${severity}`});
}

function fillRecordingDrift(drift) {
  const box = $("recording-drift");
  if (!drift) {
    box.replaceChildren(el("p", {text: "No drift reference beside the model: drift cannot be judged."}));
    return;
  }
  const parts = [el("p", {}, "Severity: ", severityBadge(drift.severity),
    ` over ${drift.windows} worn windows${drift.enough_data ? "" : ` (fewer than ${drift.min_windows}: not judged)`}.`)];
  // The drift report's own sentences, non-wear first: a watch on a desk is said, not judged.
  parts.push(...(drift.drifted || []).map((line) => el("p", {class: "drifted", text: line})));
  parts.push(el("table", {id: "drifted-channels"},
    el("thead", {}, el("tr", {}, ...["Channel", "PSI", "Binned KS", "Severity"].map((h) => el("th", {scope: "col", text: h})))),
    el("tbody", {}, ...(drift.most_drifted || []).map((c) => el("tr", {},
      el("td", {text: `${c.channel} (${c.unit})`}), el("td", {text: fmt(c.psi)}), el("td", {text: fmt(c.ks_binned)}),
      el("td", {}, severityBadge(c.severity)))))));
  if (drift.outputs) {
    parts.push(el("p", {text: `Model outputs: label PSI ${fmt(drift.outputs.label_psi)}, mean entropy ` +
      `${fmt(drift.outputs.production.mean_entropy)} vs ${fmt(drift.outputs.reference.mean_entropy)} at training ` +
      `(${drift.outputs.severity}).`}));
  }
  box.replaceChildren(...parts);
}

async function makeDownloads(answer, text) {
  for (const url of state.downloads) URL.revokeObjectURL(url);
  state.downloads = [];
  const list = $("downloads");
  list.replaceChildren(el("li", {text: "preparing…"}));
  // serve.batch's own writer makes the files, on the service, from this very answer.
  const {response, body} = await api("/recordings/files", {method: "POST", body: text,
    headers: {"Content-Type": "application/json"}});
  if (!response.ok) { list.replaceChildren(el("li", {text: detailOf(response.status, body, requestIdOf(response))})); return; }
  const id = (answer.recording || {}).id || "recording";
  list.replaceChildren(...Object.entries(body).map(([name, text]) => {
    const type = name.endsWith(".json") ? "application/json" : "text/csv";
    const url = URL.createObjectURL(new Blob([text], {type}));
    state.downloads.push(url);
    return el("li", {}, el("a", {href: url, download: `${id}-${name}`, "data-file": name, text: name}));
  }));
}

// ------------------------------------------------------------------ the model and live drift

async function loadModel() {
  const response = await fetch("/model", {cache: "no-store"});
  if (!response.ok) return;
  const card = await response.json();
  shared.labels = card.labels || [];
  const contract = card.input_contract || {};
  const metrics = Object.entries(card.metrics || {}).filter(([, v]) => typeof v === "number");
  $("model-card").append(
    el("dt", {text: "Name"}), el("dd", {id: "model-name", text: card.name}),
    el("dt", {text: "Version"}), el("dd", {id: "model-version", text: card.version}),
    el("dt", {text: "Labels"}), el("dd", {id: "model-labels", text: shared.labels.join(", ")}),
    el("dt", {text: "Input"}), el("dd", {id: "model-input", text: `${contract.dtype || "float32"} ` +
      `[n, ${contract.window_length}, ${(contract.channels || []).length}] windows of ` +
      `${(contract.channels || []).join(", ")} at ${contract.target_hz} Hz; units ` +
      Object.entries(contract.units || {}).map(([k, v]) => `${k} ${v}`).join(", ")}));
  $("model-details").replaceChildren(el("h3", {text: "Test metrics"}), metrics.length
    ? el("table", {id: "model-metrics"}, el("tbody", {}, ...metrics.map(([k, v]) =>
        el("tr", {}, el("th", {scope: "row", text: k.replaceAll("_", " ")}), el("td", {text: fmt(v, 3)})))))
    : el("p", {text: "No test metrics in the model's metadata."}));
}

function renderLiveDrift(response, body) {
  const box = $("live-drift");
  if (response.status === 404) { box.replaceChildren(el("p", {text: detailOf(404, body, requestIdOf(response))})); return; }
  if (!response.ok) { box.replaceChildren(el("p", {text: detailOf(response.status, body, requestIdOf(response))})); return; }
  const worst = Object.entries(body.channels || {}).sort((a, b) => b[1].psi - a[1].psi).slice(0, 3);
  box.replaceChildren(
    el("p", {}, "Severity: ", severityBadge(body.severity), ` over ${body.windows} windows received since the ` +
      `service started${body.enough_data ? "" : ` (fewer than ${body.min_windows}: not judged yet)`}.`),
    el("p", {text: worst.length ? `Highest PSI: ${worst.map(([n, c]) => `${n} ${fmt(c.psi)}`).join(", ")}.` : ""}),
    ...(body.drifted || []).map((line) => el("p", {class: "drifted", text: line})));
}

async function refreshLiveDrift() {
  if (!token()) return;
  const {response, body} = await api("/drift");
  if (response.status !== 401) renderLiveDrift(response, body);
}

async function downloadReport(event) {
  event.preventDefault(); // the report is guarded: fetch it with the token, then hand it over as a file
  const {response, body} = await api("/drift/report");
  if (!response.ok) { $("upload-error").textContent = detailOf(response.status, body, requestIdOf(response)); return; }
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", {href: url, download: "drift.html"});
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

// ------------------------------------------------------------------ wiring

document.addEventListener("DOMContentLoaded", () => {
  shared.refused = refused;
  $("sign-in-form").addEventListener("submit", (event) => takeToken(event, checkToken));
  $("sign-out").addEventListener("click", signOut);
  $("refresh-drift").addEventListener("click", refreshLiveDrift);
  $("upload-form").addEventListener("submit", (e) => { e.preventDefault(); upload([...$("files").files]); });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (!token()) { $("upload-error").textContent = "Sign in first."; return; }
    upload([...e.dataTransfer.files]);
  });
  const report = $("drift-report-link");
  if (report) report.addEventListener("click", downloadReport);
  let resized = null;
  window.addEventListener("resize", () => {
    clearTimeout(resized);
    resized = setTimeout(() => state.answer && drawTimeline(state.answer, clockOrigin((state.answer.recording || {}).start_time)), 150);
  });
  loadModel().then(() => { if (token()) checkToken(); else showSignedIn(false); });
});
