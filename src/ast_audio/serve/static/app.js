// ast-audio page: upload or record audio, then show /v1/tag, /v1/events and /v1/explain results.
// Plain JavaScript, no build step, nothing loaded from outside this server.
"use strict";

const $ = (id) => document.getElementById(id);
// Class colours come from the server (the same colour as in the PNG timelines: by the class's index in the model's
// label order); a class it gave none is drawn in grey.
const NO_COLOUR = "#888";
const TARGET_RATE = 16000; // recordings are converted to 16 kHz mono 16-bit WAV before upload

let source = null; // {blob, name}: what "Analyse" sends
let recorder = null;
let recordTimer = null;
let lastTimeline = null; // redrawn on resize

function setStatus(text, isError = false) {
  const status = $("status");
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function showError(id, message) {
  const el = $(id);
  el.textContent = message;
  el.hidden = !message;
}

function fmt(x, digits = 2) {
  return Number(x).toFixed(digits);
}

async function loadModelInfo() {
  try {
    const response = await fetch("healthz");
    const info = await response.json();
    $("model-info").textContent = `Model with ${info.labels} labels (${info.precision}), ast-audio ${info.version}. ` +
      `Uploads up to ${info.limits.max_upload_mb} MiB and ${info.limits.max_duration_s} s.`;
  } catch (err) {
    $("model-info").textContent = "The server does not answer /healthz.";
  }
}

// POST the current source to `path` with extra form fields; throws Error("<status>: <server message>").
async function post(path, fields) {
  const form = new FormData();
  form.append("file", source.blob, source.name);
  for (const [key, value] of Object.entries(fields)) {
    if (value !== "" && value !== null && value !== undefined) form.append(key, value);
  }
  const response = await fetch(path, { method: "POST", body: form });
  if (!response.ok) {
    let message = response.statusText;
    try {
      message = (await response.json()).error || message;
    } catch (err) { /* not JSON */ }
    throw new Error(`${response.status}: ${message}`);
  }
  return response;
}

function option(id) {
  return $(id).value.trim();
}

// ---- tags ------------------------------------------------------------------------------------------------------

// One list item per label: name, a bar as long as the score (0-1) and the score; for the file's tags and the live view.
function renderScoreList(list, labels) {
  list.replaceChildren();
  for (const { label, score } of labels) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.setAttribute("aria-hidden", "true");
    const fill = document.createElement("span");
    fill.style.width = `${Math.max(0, Math.min(1, score)) * 100}%`;
    bar.append(fill);
    const value = document.createElement("span");
    value.className = "score";
    value.textContent = fmt(score, 3);
    item.append(name, bar, value);
    list.append(item);
  }
}

function renderTags(result) {
  renderScoreList($("tags"), result.labels);
  const windows = result.windows.length;
  $("tags-meta").textContent = `${result.file}: ${fmt(result.duration_s)} s` +
    (windows > 1 ? `, ${windows} windows, ${result.aggregate} over windows` : "");
}

// ---- timeline --------------------------------------------------------------------------------------------------

// Size a canvas's backing store to its CSS box at the screen's pixel ratio (sharp lines on high-DPI screens) and
// return a 2-d context that draws in CSS pixels, with the box's size (defaultHeight when it has none yet).
function sizeCanvas(canvas, defaultHeight) {
  const ratio = window.devicePixelRatio || 1;
  const cssWidth = canvas.clientWidth || 900;
  const cssHeight = canvas.clientHeight || defaultHeight;
  canvas.width = Math.round(cssWidth * ratio);
  canvas.height = Math.round(cssHeight * ratio);
  const ctx = canvas.getContext("2d");
  ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
  return { ctx, cssWidth, cssHeight };
}

// The score axes of a timeline: the left and bottom lines, score ticks at `ticks`; leaves the text centred above
// its anchor for the caller's time ticks.
function drawAxes(ctx, pad, width, height, y, colour, ticks) {
  ctx.strokeStyle = colour;
  ctx.fillStyle = colour;
  ctx.lineWidth = 1;
  ctx.font = "12px system-ui, sans-serif";
  ctx.beginPath();
  ctx.moveTo(pad.left, pad.top);
  ctx.lineTo(pad.left, pad.top + height);
  ctx.lineTo(pad.left + width, pad.top + height);
  ctx.stroke();
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  for (const s of ticks) ctx.fillText(fmt(s, 1), pad.left - 6, y(s));
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
}

function drawTimeline(data) {
  lastTimeline = data;
  const canvas = $("timeline");
  const { ctx, cssWidth, cssHeight } = sizeCanvas(canvas, 280);
  const style = getComputedStyle(document.body);
  const textColour = style.color;
  ctx.fillStyle = getComputedStyle(canvas).backgroundColor === "rgba(0, 0, 0, 0)" ?
    style.backgroundColor : getComputedStyle(canvas).backgroundColor;
  ctx.fillRect(0, 0, cssWidth, cssHeight);

  const timeline = data.timeline;
  const colour = new Map(timeline.classes.map((c) => [c.label, c.colour || NO_COLOUR]));
  // One lane per class with events above the plot, so overlapping events of different classes stay apart.
  const lanes = timeline.classes.map((c) => c.label).filter((label) => data.events.some((e) => e.label === label));
  const lane = 9;
  const pad = { left: 44, right: 12, top: 12 + lanes.length * lane, bottom: 32 };
  const width = cssWidth - pad.left - pad.right;
  const height = cssHeight - pad.top - pad.bottom;
  const duration = Math.max(data.duration_s, 1e-6);
  const x = (t) => pad.left + (t / duration) * width;
  const y = (s) => pad.top + (1 - s) * height;

  // Events: a bar in the class's lane, and a faint shade over the plot.
  for (const event of data.events) {
    const row = lanes.indexOf(event.label);
    const x0 = x(event.onset_s);
    const w = Math.max(2, x(event.offset_s) - x0);
    ctx.fillStyle = colour.get(event.label) || NO_COLOUR;
    ctx.globalAlpha = 1;
    ctx.fillRect(x0, 6 + row * lane, w, lane - 3);
    ctx.globalAlpha = 0.08;
    ctx.fillRect(x0, pad.top, w, height);
  }
  ctx.globalAlpha = 1;

  // Axes, ticks and labels.
  drawAxes(ctx, pad, width, height, y, textColour, [0, 0.5, 1]);
  const step = niceStep(duration / 8);
  for (let t = 0; t <= duration + 1e-9; t += step) {
    ctx.fillText(`${+t.toFixed(2)}`, x(t), pad.top + height + 4);
  }
  ctx.fillText("time (s)", pad.left + width / 2, pad.top + height + 17);

  // Threshold.
  ctx.setLineDash([5, 4]);
  ctx.beginPath();
  ctx.moveTo(pad.left, y(timeline.threshold));
  ctx.lineTo(pad.left + width, y(timeline.threshold));
  ctx.stroke();
  for (const cls of timeline.classes) { // calibrated per-class thresholds, in the class's colour
    if (cls.threshold === undefined || cls.threshold === timeline.threshold) continue;
    ctx.strokeStyle = colour.get(cls.label);
    ctx.beginPath();
    ctx.moveTo(pad.left, y(cls.threshold));
    ctx.lineTo(pad.left + width, y(cls.threshold));
    ctx.stroke();
  }
  ctx.setLineDash([]);

  // One line per class through the window centres (a single window is drawn as a flat segment).
  ctx.lineWidth = 2;
  for (const cls of timeline.classes) {
    ctx.strokeStyle = colour.get(cls.label);
    ctx.beginPath();
    const n = cls.scores.length;
    for (let i = 0; i < n; i++) {
      const t = n === 1 ? timeline.starts_s[0] : (timeline.starts_s[i] + timeline.ends_s[i]) / 2;
      if (i === 0) ctx.moveTo(x(t), y(cls.scores[i]));
      else ctx.lineTo(x(t), y(cls.scores[i]));
    }
    if (n === 1) ctx.lineTo(x(timeline.ends_s[0]), y(cls.scores[0]));
    ctx.stroke();
  }

  const legend = $("legend");
  legend.replaceChildren();
  for (const cls of timeline.classes) {
    const item = document.createElement("span");
    const swatch = document.createElement("i");
    swatch.style.background = colour.get(cls.label);
    item.append(swatch, `${cls.label} (peak ${fmt(cls.peak, 2)})`);
    legend.append(item);
  }
  const summary = data.events.length ?
    data.events.map((e) => `${e.label} ${fmt(e.onset_s)} to ${fmt(e.offset_s)} s`).join("; ") :
    "no events above the threshold";
  canvas.setAttribute("aria-label", `Event timeline of ${fmt(data.duration_s)} s: ${summary}`);
  canvas.dataset.drawn = "true";
}

function niceStep(raw) {
  const power = 10 ** Math.floor(Math.log10(Math.max(raw, 1e-6)));
  for (const m of [1, 2, 5, 10]) if (m * power >= raw) return m * power;
  return 10 * power;
}

function renderEvents(data) {
  drawTimeline(data);
  const body = $("events-table").querySelector("tbody");
  body.replaceChildren();
  for (const e of data.events) {
    const row = document.createElement("tr");
    for (const value of [e.label, fmt(e.onset_s), fmt(e.offset_s), fmt(e.score, 3)]) {
      const cell = document.createElement("td");
      cell.textContent = value;
      row.append(cell);
    }
    body.append(row);
  }
  $("events-table").hidden = data.events.length === 0;
  $("events-empty").hidden = data.events.length !== 0;
}

// ---- explanation picture ---------------------------------------------------------------------------------------

function renderExplanation(blob, name) {
  const img = $("explain-img");
  return new Promise((resolve, reject) => {
    const url = URL.createObjectURL(blob);
    img.onload = () => resolve();
    img.onerror = () => reject(new Error("the explanation picture could not be displayed"));
    if (img.dataset.url) URL.revokeObjectURL(img.dataset.url);
    img.dataset.url = url;
    img.alt = `Log-mel spectrogram of ${name} with the model's evidence overlaid`;
    img.src = url;
    img.hidden = false;
  });
}

// ---- analyse ---------------------------------------------------------------------------------------------------

async function analyse() {
  if (!source) {
    setStatus("Choose an audio file or record one first.", true);
    $("file").focus();
    return;
  }
  const results = $("results");
  results.dataset.state = "loading";
  $("analyse").disabled = true;
  for (const id of ["tags-error", "events-error", "explain-error"]) showError(id, "");
  setStatus(`Analysing ${source.name}…`);
  const common = { hop_s: option("hop_s") };
  const jobs = [
    post("v1/tag", { ...common, top_k: option("top_k") })
      .then((r) => r.json()).then(renderTags)
      .catch((err) => { $("tags").replaceChildren(); showError("tags-error", `Tags: ${err.message}`); throw err; }),
    post("v1/events", { ...common, threshold: option("threshold"), median: option("median"),
                        min_duration: option("min_duration"), merge_gap: option("merge_gap") })
      .then((r) => r.json()).then(renderEvents)
      .catch((err) => { showError("events-error", `Events: ${err.message}`); throw err; }),
    post("v1/explain", { start_s: option("start_s") })
      .then((r) => r.blob()).then((blob) => renderExplanation(blob, source.name))
      .catch((err) => { $("explain-img").hidden = true; showError("explain-error", `Explanation: ${err.message}`);
                        throw err; }),
  ];
  const outcomes = await Promise.allSettled(jobs);
  const failed = outcomes.filter((o) => o.status === "rejected");
  $("analyse").disabled = false;
  if (failed.length === 0) {
    setStatus(`Done: ${source.name}.`);
    results.dataset.state = "done";
  } else {
    setStatus(`${failed.length} of ${jobs.length} requests failed: ${failed[0].reason.message}`, true);
    results.dataset.state = "error";
  }
}

function useSource(blob, name) {
  source = { blob, name };
  const player = $("player");
  if (player.dataset.url) URL.revokeObjectURL(player.dataset.url);
  player.dataset.url = URL.createObjectURL(blob);
  player.src = player.dataset.url;
  player.hidden = false;
}

// ---- recording -------------------------------------------------------------------------------------------------

// Decode what MediaRecorder produced (webm/ogg/mp4, which the server's decoder may not read) and re-encode it as
// 16 kHz mono 16-bit PCM WAV, which it always reads.
async function toWav(blob) {
  const Context = window.AudioContext || window.webkitAudioContext;
  const context = new Context();
  let decoded;
  try {
    decoded = await context.decodeAudioData(await blob.arrayBuffer());
  } finally {
    context.close();
  }
  const length = Math.max(1, Math.ceil(decoded.duration * TARGET_RATE));
  const offline = new OfflineAudioContext(1, length, TARGET_RATE); // 1 channel: the mix-down averages channels
  const node = offline.createBufferSource();
  node.buffer = decoded;
  node.connect(offline.destination);
  node.start();
  const samples = (await offline.startRendering()).getChannelData(0);
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + samples.length * 2, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, TARGET_RATE, true); view.setUint32(28, TARGET_RATE * 2, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return new Blob([buffer], { type: "audio/wav" });
}

async function toggleRecording() {
  const button = $("record");
  if (recorder && recorder.state === "recording") {
    recorder.stop();
    return;
  }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.MediaRecorder) {
    setStatus("Recording needs a browser with MediaRecorder, on https:// or localhost.", true);
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    setStatus(`Cannot use the microphone: ${err.message}`, true);
    return;
  }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
  recorder.onstop = async () => {
    clearInterval(recordTimer);
    $("record-time").textContent = "";
    stream.getTracks().forEach((track) => track.stop());
    button.textContent = "Record from microphone";
    button.setAttribute("aria-pressed", "false");
    const raw = new Blob(chunks, { type: recorder.mimeType || "audio/webm" });
    let blob = raw;
    let name = "recording.wav";
    try {
      blob = await toWav(raw);
    } catch (err) { // let the server try the original container
      name = `recording.${(raw.type.split("/")[1] || "webm").split(";")[0]}`;
    }
    $("file").value = "";
    useSource(blob, name);
    await analyse();
  };
  recorder.start();
  const started = Date.now();
  recordTimer = setInterval(() => {
    $("record-time").textContent = `${((Date.now() - started) / 1000).toFixed(0)} s`;
  }, 250);
  button.textContent = "Stop recording";
  button.setAttribute("aria-pressed", "true");
  setStatus("Recording… press Stop recording to analyse.");
}

// ---- live ------------------------------------------------------------------------------------------------------
// The microphone streams to the WebSocket /v1/stream as 32-bit float PCM at the audio context's rate (the server
// resamples); every hop the server answers with the window's top labels and the events it opened or closed (and,
// for a frame model, the scores of the frame columns the hop completed, drawn one point per column).

const LIVE_SPAN_S = 30; // seconds of history on the live timeline
const LIVE_BLOCK = 4096; // samples per ScriptProcessor callback (85 ms at 48 kHz: about 12 messages a second)
let live = null;

function setLiveStatus(text, isError = false) {
  $("live-status").textContent = text;
  $("live-status").classList.toggle("error", isError);
}

function liveOptions(rate) {
  const declared = { rate: Math.round(rate), format: "f32le", channels: 1 };
  const numbers = { hop_s: "hop_s", threshold: "threshold", median: "median", min_duration: "min_duration",
                    merge_gap: "merge_gap", top_k: "top_k" };
  for (const [field, id] of Object.entries(numbers)) {
    if (option(id) !== "") declared[field] = Number(option(id));
  }
  return declared;
}

async function startLive() {
  showError("live-error", "");
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia || !window.WebSocket) {
    setLiveStatus("Live mode needs a browser with microphone access, on https:// or localhost.", true);
    return;
  }
  let stream;
  try { // the raw signal: the browser's voice processing would change what the model hears
    stream = await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: false, noiseSuppression: false,
                                                                 autoGainControl: false, channelCount: 1 } });
  } catch (err) {
    setLiveStatus(`Cannot use the microphone: ${err.message}`, true);
    return;
  }
  const Context = window.AudioContext || window.webkitAudioContext;
  const context = new Context();
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const socket = new WebSocket(`${scheme}://${location.host}/v1/stream`);
  socket.binaryType = "arraybuffer";
  live = { socket, context, stream, node: null, events: [], open: new Map(), history: [], endS: 0, hops: 0,
           skipped: 0, stopping: false, colours: {} };
  $("live").dataset.state = "connecting";
  $("live-toggle").textContent = "Stop listening";
  $("live-toggle").setAttribute("aria-pressed", "true");
  setLiveStatus("Connecting…");
  socket.onopen = () => socket.send(JSON.stringify(liveOptions(context.sampleRate)));
  socket.onmessage = (message) => onLiveMessage(JSON.parse(message.data));
  socket.onerror = () => showError("live-error", "Live: the connection to the server failed.");
  socket.onclose = () => stopLive(false);
}

function startCapture(ready) {
  const { context, stream, socket } = live;
  const input = context.createMediaStreamSource(stream);
  const node = context.createScriptProcessor(LIVE_BLOCK, 1, 1);
  node.onaudioprocess = (event) => {
    if (socket.readyState === WebSocket.OPEN && !live.stopping) {
      socket.send(new Float32Array(event.inputBuffer.getChannelData(0)).buffer); // a copy: the buffer is reused
    }
  };
  input.connect(node);
  node.connect(context.destination); // a ScriptProcessor only runs when connected; it outputs silence
  live.node = node;
  live.colours = ready.colours || {};
  $("live").dataset.state = "listening";
  setLiveStatus(`Listening: window ${fmt(ready.window_s)} s, a result every ${fmt(ready.hop_s)} s.`);
}

function onLiveMessage(msg) {
  if (!live) return;
  if (msg.error) {
    showError("live-error", `Live: ${msg.error}`);
    $("live").dataset.state = "error";
    return;
  }
  if (msg.ready) {
    startCapture(msg);
    return;
  }
  if (msg.done) return;
  live.hops += 1;
  live.endS = Math.max(live.endS, msg.end_s);
  live.skipped = msg.skipped;
  for (const e of msg.opened) live.open.set(e.label, e);
  for (const e of msg.closed) {
    live.open.delete(e.label);
    live.events.unshift(e);
  }
  if (msg.frames) { // a frame model: one point per column the hop completed, at the column's centre
    const f = msg.frames;
    f.scores.forEach((row, j) => live.history.push({ t: f.start_s + (j + 0.5) * f.column_s,
                                                     top: f.classes.map((label, c) => ({ label, score: row[c] })) }));
  } else if (msg.top.length) {
    live.history.push({ t: (msg.start_s + msg.end_s) / 2, top: msg.top });
  }
  if (msg.top.length) {
    while (live.history.length && live.history[0].t < live.endS - LIVE_SPAN_S) live.history.shift();
    renderLiveTags(msg.top);
  }
  renderLiveEvents();
  drawLiveTimeline();
  $("live").dataset.hops = String(live.hops);
  if (!live.stopping) {
    setLiveStatus(`Listening: ${fmt(live.endS, 1)} s` + (live.skipped ? `, ${live.skipped} windows skipped ` +
      "(the server is slower than the hop)" : ""));
  }
}

function renderLiveTags(top) {
  renderScoreList($("live-tags"), top);
}

function renderLiveEvents() {
  const list = $("live-events");
  list.replaceChildren();
  for (const e of live.open.values()) {
    const item = document.createElement("li");
    item.className = "open";
    item.textContent = `${e.label}: from ${fmt(e.onset_s)} s (going on)`;
    list.append(item);
  }
  for (const e of live.events.slice(0, 50)) {
    const item = document.createElement("li");
    item.textContent = `${e.label}: ${fmt(e.onset_s)} to ${fmt(e.offset_s)} s (peak ${fmt(e.score)})`;
    list.append(item);
  }
}

// The last LIVE_SPAN_S seconds: each class's score (while it is among the top labels) and its events as bars
// above the plot, open ones reaching the present; it scrolls as the stream goes on.
function drawLiveTimeline() {
  const canvas = $("live-timeline");
  const { ctx, cssWidth, cssHeight } = sizeCanvas(canvas, 160);
  const style = getComputedStyle(document.body);
  ctx.fillStyle = style.backgroundColor;
  ctx.fillRect(0, 0, cssWidth, cssHeight);
  const end = Math.max(live.endS, LIVE_SPAN_S);
  const begin = end - LIVE_SPAN_S;
  const labels = [];
  for (const h of live.history) for (const { label } of h.top) if (!labels.includes(label)) labels.push(label);
  const eventLabels = [...new Set([...live.open.keys(), ...live.events.map((e) => e.label)])];
  for (const label of eventLabels) if (!labels.includes(label)) labels.push(label);
  const colour = (label) => live.colours[label] || NO_COLOUR;
  const lane = 9;
  const pad = { left: 44, right: 12, top: 10 + eventLabels.length * lane, bottom: 24 };
  const width = cssWidth - pad.left - pad.right;
  const height = cssHeight - pad.top - pad.bottom;
  const x = (t) => pad.left + ((t - begin) / LIVE_SPAN_S) * width;
  const y = (s) => pad.top + (1 - s) * height;
  const bars = [...live.events.map((e) => [e, e.offset_s]), ...[...live.open.values()].map((e) => [e, live.endS])];
  for (const [e, offset] of bars) {
    if (offset < begin) continue;
    const x0 = x(Math.max(begin, e.onset_s));
    ctx.fillStyle = colour(e.label);
    ctx.fillRect(x0, 4 + eventLabels.indexOf(e.label) * lane, Math.max(2, x(offset) - x0), lane - 3);
  }
  drawAxes(ctx, pad, width, height, y, style.color, [0, 1]);
  for (let t = Math.ceil(begin / 5) * 5; t <= end; t += 5) ctx.fillText(`${t} s`, x(t), pad.top + height + 4);
  ctx.lineWidth = 2;
  for (const label of labels) {
    ctx.strokeStyle = colour(label);
    ctx.beginPath();
    let drawing = false;
    for (const h of live.history) {
      const hit = h.top.find((entry) => entry.label === label);
      if (!hit) { drawing = false; continue; }
      if (drawing) ctx.lineTo(x(h.t), y(hit.score));
      else ctx.moveTo(x(h.t), y(hit.score));
      drawing = true;
    }
    ctx.stroke();
  }
  const open = [...live.open.keys()];
  canvas.setAttribute("aria-label", `Live event timeline, last ${LIVE_SPAN_S} s up to ${fmt(live.endS, 1)} s: ` +
    (open.length ? `going on: ${open.join(", ")}` : "no event going on"));
  canvas.dataset.drawn = "true";
}

// Stop capturing; with `sayEnd` ask the server for the last hops first (it closes the socket after them).
function stopLive(sayEnd = true) {
  if (!live) return;
  const current = live;
  if (!current.stopping) { // release the microphone once
    current.stopping = true;
    if (current.node) current.node.disconnect();
    current.stream.getTracks().forEach((track) => track.stop());
    current.context.close().catch(() => {});
  }
  if (sayEnd && current.socket.readyState === WebSocket.OPEN) {
    current.socket.send(JSON.stringify({ end: true }));
    setLiveStatus("Stopping…");
    return; // onclose comes back here with sayEnd = false
  }
  if ($("live").dataset.state !== "error") $("live").dataset.state = "idle";
  $("live-toggle").textContent = "Listen live";
  $("live-toggle").setAttribute("aria-pressed", "false");
  setLiveStatus(`Stopped after ${fmt(current.endS, 1)} s` +
    (current.skipped ? `, ${current.skipped} windows skipped.` : "."));
  live = null;
}

function toggleLive() {
  if (live) stopLive(true);
  else startLive();
}

// ---- wiring ----------------------------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  loadModelInfo();
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    if (file) {
      useSource(file, file.name);
      setStatus(`${file.name} selected; press Analyse.`);
    }
  });
  $("analyse-form").addEventListener("submit", (event) => {
    event.preventDefault();
    analyse();
  });
  $("record").addEventListener("click", toggleRecording);
  $("live-toggle").addEventListener("click", toggleLive);
  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => { if (lastTimeline) drawTimeline(lastTimeline); }, 150);
  });
});
