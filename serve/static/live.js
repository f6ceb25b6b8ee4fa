// The study page's live view: the open participant's live streams (GET /subjects/{subject}/live, read every
// second), each a timeline filling in as the watch records. Final labels are drawn as every stored timeline is;
// provisional ones (the model's label on a window as soon as its samples are in, before the wear rule and the
// smoother have decided it) follow them, paler, until their final labels replace them. A browser cannot put the
// bearer token on a WebSocket, so the page reads this route with the tab's token instead of streaming itself.
"use strict";

const LIVE_EVERY_MS = 1000;
const PROVISIONAL_OPACITY = "0.45";
const live = {busy: false, streams: new Set()};

// The participant open on the page (study.js shows #participant for the address's #subject), if signed in.
function liveSubject() {
  if (!token() || $("participant").hidden) return null;
  return decodeURIComponent(location.hash.slice(1)) || null;
}

async function pollLive() {
  const subject = liveSubject();
  if (!subject) { $("live").hidden = true; live.streams.clear(); return; }
  if (live.busy) return; // the last answer is still on its way
  live.busy = true;
  try {
    const {response, body} = await api(`/subjects/${encodeURIComponent(subject)}/live`);
    if (liveSubject() !== subject) return; // another participant was opened meanwhile
    if (!response.ok) { $("live-message").textContent = detailOf(response.status, body, requestIdOf(response)); return; }
    $("live-message").textContent = "";
    const names = new Set(body.streams.map((s) => s.stream));
    const ended = [...live.streams].some((name) => !names.has(name));
    live.streams = names;
    drawLive(body.streams);
    // A stream that ended is a stored recording now: the participant's days and charts take it in.
    if (ended && typeof openParticipant === "function") openParticipant(subject);
  } finally {
    live.busy = false;
  }
}

function drawLive(streams) {
  $("live").hidden = streams.length === 0;
  if (!streams.length) { $("live-timelines").replaceChildren(); return; }
  const width = Math.max(280, $("live-timelines").clientWidth || 800);
  const shown = new Set();
  const figures = streams.map((s) => {
    const parts = [...s.episodes, ...s.provisional];
    parts.forEach((p) => shown.add(p.label));
    const to = Math.max(s.window_s || 1, ...parts.map((p) => p.end_s));
    const {svg} = timelineSvg(parts, clockOrigin(s.start_time), 0, to, width, {
      class: "live-timeline", "data-stream": s.stream, "data-windows": s.windows,
      "data-final-end-s": s.episodes.length ? s.episodes.at(-1).end_s : 0});
    const firstProvisional = s.provisional.length ? s.provisional[0].start_s : Infinity;
    for (const rect of svg.querySelectorAll("rect.segment")) {
      if (rect.dataset.label !== "gap" && Number(rect.dataset.startS) >= firstProvisional - 1e-9) {
        rect.classList.add("provisional");
        rect.setAttribute("fill-opacity", PROVISIONAL_OPACITY);
        // on white, not on the band's gap hatching (which would read as "no data")
        rect.before(el("svg:rect", {x: rect.getAttribute("x"), y: rect.getAttribute("y"), width: rect.getAttribute("width"),
                                    height: rect.getAttribute("height"), fill: "#ffffff"}));
      }
    }
    const started = s.start_time ? ` from ${s.start_time.slice(0, 19).replace("T", " ")}` : "";
    return el("figure", {}, el("figcaption", {text: `Stream ${s.stream}${started}${s.connected ? ", connected" : ""}: ` +
      `${s.windows} windows final${s.provisional.length ? ", the newest provisional (paler)" : ""}`}), svg);
  });
  $("live-timelines").replaceChildren(...figures);
  $("live-legend").replaceChildren(...legendItems([...shown, "gap"]));
}

document.addEventListener("DOMContentLoaded", () => {
  setInterval(pollLive, LIVE_EVERY_MS);
});
