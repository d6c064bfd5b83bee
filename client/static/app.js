// The recognition client's page: a drawing pad (pointer events: mouse, pen, touch), photo
// upload (file input or drag and drop), POST /recognize, and the bundle from GET /bundle.
// No libraries, no build step; everything talks to this page's own origin.
"use strict";

const TOP_K = 5;
const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ctx = pad.getContext("2d");
const prediction = $("prediction");
let inked = false;   // anything drawn since the last clear
let sequence = 0;    // answers to older requests are dropped
let lastPoint = null;
let autoTimer = null;

// White ink on black: shared/image/ finds the ink on either polarity, and an opaque
// background keeps the PNG free of transparency (transparent pixels would be background too).
function clearPad() {
  ctx.fillStyle = "#000";
  ctx.fillRect(0, 0, pad.width, pad.height);
  inked = false;
}

function strokeWidth(event) {
  // a pen's pressure varies the width a little; mice report 0.5 while a button is down
  const base = pad.width / 14;
  const pressure = event.pointerType === "pen" && event.pressure > 0 ? event.pressure : 0.5;
  return base * (0.7 + 0.6 * pressure);
}

function padPoint(event) {
  const rect = pad.getBoundingClientRect();
  return {
    x: ((event.clientX - rect.left) * pad.width) / rect.width,
    y: ((event.clientY - rect.top) * pad.height) / rect.height,
  };
}

function drawSegment(from, to, width) {
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.lineWidth = width;
  ctx.beginPath();
  ctx.moveTo(from.x, from.y);
  ctx.lineTo(to.x, to.y);
  ctx.stroke();
}

function showPad() {
  $("preview").hidden = true;
  $("preview-note").hidden = true;
  pad.hidden = false;
}

// The chosen file in place of the pad, once the browser has decoded it; a file it cannot
// show (a PDF, a broken image) gets a line of text instead of a broken-image icon.
function showPreview(file) {
  const preview = $("preview");
  const note = $("preview-note");
  if (preview.src) URL.revokeObjectURL(preview.src);
  pad.hidden = true;
  preview.hidden = true;
  note.hidden = true;
  preview.onload = () => { preview.hidden = false; };
  preview.onerror = () => {
    note.textContent = `No preview: this browser cannot show ${file.name || "the file"} as an image.`;
    note.hidden = false;
  };
  preview.src = URL.createObjectURL(file);
}

pad.addEventListener("pointerdown", (event) => {
  if (event.button !== 0 && event.pointerType === "mouse") return;
  event.preventDefault();
  showPad();
  clearTimeout(autoTimer);
  try {
    pad.setPointerCapture(event.pointerId); // keep the stroke when the pointer leaves the pad
  } catch (err) {
    // a synthetic or already-lifted pointer cannot be captured; drawing works without
  }
  lastPoint = padPoint(event);
  drawSegment(lastPoint, lastPoint, strokeWidth(event)); // a tap leaves a dot
  inked = true;
});

pad.addEventListener("pointermove", (event) => {
  if (lastPoint === null) return;
  event.preventDefault();
  // coalesced events: the full-rate path of a fast stroke, not only one point per frame
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) {
    const point = padPoint(e);
    drawSegment(lastPoint, point, strokeWidth(e));
    lastPoint = point;
  }
});

function endStroke(event) {
  if (lastPoint === null) return;
  lastPoint = null;
  if (pad.hasPointerCapture(event.pointerId)) pad.releasePointerCapture(event.pointerId);
  clearTimeout(autoTimer);
  autoTimer = setTimeout(recognizeDrawing, 350); // after a pause, not between strokes of a 4
}
pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

function padBlob() {
  return new Promise((resolve) => pad.toBlob(resolve, "image/png"));
}

async function recognizeDrawing() {
  clearTimeout(autoTimer);
  if (!inked) {
    setPrediction("idle", "Draw something first.");
    return;
  }
  const blob = await padBlob();
  await send(blob, "drawing.png");
}

function setPrediction(state, text) {
  prediction.dataset.state = state;
  prediction.textContent = text;
}

function errorText(body, status) {
  if (body && body.error && body.error.message) return body.error.message;
  return `the client answered HTTP ${status}`;
}

// A request that failed leaves no answer of an earlier one on the page: no bars, no timings.
function showError(text) {
  $("classes").replaceChildren();
  $("timing").textContent = "";
  delete prediction.dataset.label;
  setPrediction("error", text);
}

async function send(blob, filename) {
  const mine = ++sequence;
  setPrediction("busy", "Recognising…");
  const form = new FormData();
  form.append("file", blob, filename);
  let response, body;
  try {
    response = await fetch("/recognize", { method: "POST", body: form });
    body = await response.json().catch(() => null);
  } catch (err) {
    if (mine === sequence) showError(`Cannot reach the client: ${err.message}`);
    return;
  }
  if (mine !== sequence) return;
  if (!response.ok || !body || !body.results) {
    showError(`Not recognised: ${errorText(body, response.status)}`);
    return;
  }
  showResult(body);
}

function percent(p) {
  return `${(100 * p).toFixed(p >= 0.995 || p < 0.001 ? 1 : 2)} %`;
}

function showResult(body) {
  const result = body.results[0];
  const names = body.class_names;
  // the text starts with the class name: automation reads it from there
  setPrediction("done", `${result.class_name} — ${percent(result.confidence)}`);
  prediction.dataset.label = String(result.label);
  const ranked = result.probabilities
    .map((p, i) => ({ p, i }))
    .sort((a, b) => b.p - a.p)
    .slice(0, Math.min(TOP_K, names.length));
  const items = ranked.map(({ p, i }) => {
    const li = document.createElement("li");
    li.className = i === result.label ? "top" : "";
    const name = document.createElement("span");
    name.className = "name";
    name.textContent = names[i];
    const track = document.createElement("span");
    track.className = "track";
    const bar = document.createElement("span");
    bar.className = "bar";
    bar.style.width = `${Math.max(0.5, 100 * p)}%`;
    track.append(bar);
    const value = document.createElement("span");
    value.className = "value";
    value.textContent = percent(p);
    li.append(name, track, value);
    li.setAttribute("aria-label", `${names[i]}: ${percent(p)}`);
    return li;
  });
  $("classes").replaceChildren(...items);
  const t = body.timings_ms || {};
  $("timing").textContent =
    `preprocess ${fmt(t.preprocess)} ms · inference ${fmt(t.inference)} ms · total ${fmt(t.total)} ms`;
}

function fmt(v) {
  return typeof v === "number" ? v.toFixed(1) : "–";
}

function sendFile(file) {
  if (!file) return;
  showPreview(file);
  clearPad();
  send(file, file.name || "upload");
}

$("upload").addEventListener("change", (event) => {
  sendFile(event.target.files[0]);
  event.target.value = ""; // choosing the same file again still sends it
});

const drop = $("drop");
drop.addEventListener("dragover", (event) => {
  event.preventDefault();
  drop.classList.add("over");
  $("drop-hint").hidden = false;
});
drop.addEventListener("dragleave", () => {
  drop.classList.remove("over");
  $("drop-hint").hidden = true;
});
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  $("drop-hint").hidden = true;
  const file = [...(event.dataTransfer?.files || [])].find((f) => f.type.startsWith("image/"));
  if (file) sendFile(file);
  else showError("That was not an image file.");
});

$("recognize").addEventListener("click", () => {
  if (!pad.hidden) recognizeDrawing();
  else setPrediction("idle", "Draw on the pad (press Clear), or choose another photo.");
});
$("clear").addEventListener("click", () => {
  sequence++; // an answer still on its way is for a drawing that is gone
  clearTimeout(autoTimer);
  clearPad();
  showPad();
  $("classes").replaceChildren();
  $("timing").textContent = "";
  delete prediction.dataset.label;
  setPrediction("idle", "Draw something, or choose a photo.");
});

function addBundleField(list, term, value, title) {
  const pair = document.createElement("div"); // keeps a term and its value on one line
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  dd.textContent = value;
  if (title) dd.title = title;
  pair.append(dt, dd);
  list.append(pair);
}

async function loadBundle() {
  const list = $("bundle");
  let response, body;
  try {
    response = await fetch("/bundle");
    body = await response.json().catch(() => null);
  } catch (err) {
    body = null;
  }
  list.replaceChildren();
  if (!response || !response.ok || !body) {
    addBundleField(list, "bundle", body ? errorText(body, response.status) : "client unreachable");
    list.dataset.state = "error";
    setTimeout(loadBundle, 3000); // the client may still be fetching its first bundle
    return;
  }
  const m = body.metrics || {};
  addBundleField(list, "bundle", body.id.slice(0, 12), body.id);
  addBundleField(list, "data set", body.dataset);
  addBundleField(list, "bits", `W${body.weight_bits} A${body.activation_bits}`,
    "weight bits (codebook size 2^b) and activation bits");
  if (typeof m.quantized_accuracy === "number") {
    addBundleField(list, "accuracy", percent(m.quantized_accuracy),
      "measured by the server on the test set with the integer engine this client runs");
  }
  addBundleField(list, "size", `${(body.bytes / 1024).toFixed(1)} KiB`);
  if (body.network) {
    const ops = Object.entries(body.network.ops).map(([op, n]) => `${op} ${n}`).join(", ");
    addBundleField(list, "network", `${body.network.nodes} nodes`, ops);
  }
  if (body.backend) {
    addBundleField(list, "engine", body.backend, "the integer engine that answers here");
  }
  list.dataset.state = "ready";
  list.dataset.bundleId = body.id;
  setTimeout(loadBundle, 60000); // the client swaps in new bundles while it runs
  const photo = body.preprocess && body.preprocess.kind === "photo";
  $("input-title").firstChild.textContent = photo ? "Choose or drop a photo " : "Draw a digit ";
  $("input-title").querySelector("span").textContent = photo
    ? `(${body.class_names.join(", ")})`
    : "or drop a photo";
}

clearPad();
loadBundle();
