// The training server's dashboard: jobs with live progress (polling), the submit form, one
// job's SIQ iterations (#job/<id>), and the bundles with an accuracy-against-size chart.
// No libraries, no build step; it calls only this server's own API. When a request answers
// 401 (or 403: a wrong token) it asks for SIQ_API_TOKEN and keeps it in sessionStorage.
"use strict";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "siq-api-token";
const ACTIVE = new Set(["queued", "running"]);
const COLORS = ["#2458d3", "#d9822b", "#2e9e5b", "#b3261e", "#7b4fc9", "#4d5b70"];
const manifests = new Map(); // bundle id -> manifest (ids name fixed bytes: cache forever)
let jobsTimer = null, jobTimer = null, bundlesTimer = null;
let lastStatuses = new Map();
let tokenPrompt = null;
let declined = false; // the user cancelled the token dialog: background polls stop asking

// ---------------------------------------------------------------- API with the token

function token() {
  return sessionStorage.getItem(TOKEN_KEY) || "";
}

function showTokenState() {
  const has = Boolean(token());
  $("token-text").textContent = has ? "token set for this tab" : "no token in this tab";
  $("forget-token").hidden = !has;
}

function askToken(reason) {
  // one dialog at a time: concurrent 401s wait for the same answer
  if (tokenPrompt) return tokenPrompt;
  const dialog = $("token-dialog");
  $("token-reason").textContent = reason;
  $("token-input").value = "";
  tokenPrompt = new Promise((resolve) => {
    dialog.addEventListener("close", () => {
      const value = $("token-input").value.trim();
      tokenPrompt = null;
      if (dialog.returnValue === "ok" && value) {
        sessionStorage.setItem(TOKEN_KEY, value);
        showTokenState();
        resolve(value);
      } else {
        resolve(null);
      }
    }, { once: true });
  });
  dialog.showModal();
  $("token-input").focus();
  return tokenPrompt;
}

$("token-cancel").addEventListener("click", () => $("token-dialog").close("cancel"));

async function api(path, options = {}) {
  for (;;) {
    const headers = { ...(options.headers || {}) };
    if (token()) headers.Authorization = `Bearer ${token()}`;
    let response;
    try {
      response = await fetch(path, { ...options, headers });
    } catch (err) {
      return { ok: false, status: 0, body: { error: { message: `server unreachable: ${err.message}` } } };
    }
    const body = await response.json().catch(() => null);
    if (response.status === 401 || response.status === 403) {
      const reason = body?.error?.message || `HTTP ${response.status}`;
      sessionStorage.removeItem(TOKEN_KEY);
      showTokenState();
      const userAction = (options.method || "GET") !== "GET";
      if (declined && !userAction) return { ok: false, status: response.status, body };
      if ((await askToken(reason)) === null) {
        declined = true;
        return { ok: false, status: response.status, body };
      }
      declined = false;
      continue; // retry with the new token
    }
    return { ok: response.ok, status: response.status, body };
  }
}

function errorText(result) {
  return result.body?.error?.message || `HTTP ${result.status}`;
}

// ---------------------------------------------------------------- formatting

const pct = (v, digits = 2) => (typeof v === "number" ? `${(100 * v).toFixed(digits)} %` : "–");
const short = (id) => (id ? id.slice(0, 8) : "–");

function bytes(n) {
  if (typeof n !== "number") return "–";
  if (n < 1024) return `${n} B`;
  if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KiB`;
  return `${(n / 1024 / 1024).toFixed(2)} MiB`;
}

function siBytes(n) {
  // chart ticks fall on 1, 2, 5 x 10^k: decimal units keep them round numbers
  if (n < 1000) return `${n} B`;
  if (n < 1e6) return `${+(n / 1e3).toPrecision(3)} kB`;
  return `${+(n / 1e6).toPrecision(3)} MB`;
}

function when(iso) {
  if (!iso) return "–";
  const d = new Date(iso);
  return d.toLocaleString(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
}

function cell(row, content, className) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content);
  else td.textContent = content;
  if (className) td.className = className;
  row.append(td);
  return td;
}

function statusBadge(status) {
  const span = document.createElement("span");
  span.className = `status ${status}`;
  span.dataset.status = status;
  span.textContent = status;
  return span;
}

function progressBar(fraction, label) {
  const wrap = document.createElement("div");
  wrap.className = "progress";
  wrap.title = label || "";
  const bar = document.createElement("span");
  bar.style.width = `${Math.round(100 * (fraction || 0))}%`;
  wrap.append(bar);
  return wrap;
}

// Each cell carries its column's name: on a phone a table row is shown as a card of
// "name value" lines (style.css, table.cards) instead of being cut off at the right.
function labelCells(tbody) {
  const names = [...tbody.closest("table").tHead.rows[0].cells].map((th) => th.textContent);
  for (const row of tbody.rows) [...row.cells].forEach((td, i) => { td.dataset.label = names[i] || ""; });
}

function link(href, text) {
  const a = document.createElement("a");
  a.href = href;
  a.textContent = text;
  return a;
}

// ---------------------------------------------------------------- data sets and the form

async function loadDatasets() {
  const select = document.querySelector("[name=dataset]");
  const result = await api("/datasets");
  if (!result.ok) {
    $("submit-status").textContent = `Cannot list data sets: ${errorText(result)}`;
    return;
  }
  select.replaceChildren(...result.body.map((d) => {
    const option = document.createElement("option");
    option.value = d.name;
    option.textContent = `${d.name} (${d.classes.length} classes, ${d.train_count} train)`;
    return option;
  }));
  const preferred = result.body.find((d) => d.name === "mnist") || result.body[0];
  if (preferred) select.value = preferred.name;
}

// The form's limits, choices and defaults come from the API's own schema (the body of
// POST /quantize-jobs in /openapi.json), so the page never allows what the server refuses.
const PREFERRED_BITS = 4; // the bit widths the form starts on, where the schema allows them
let jobSchema = {}; // field name -> its JSON schema (the non-null branch of an optional field)

function fieldSchemas(openapi) {
  const resolve = (node) => {
    if (!node?.$ref) return node;
    return node.$ref.replace(/^#\//, "").split("/").reduce((at, key) => at?.[key], openapi);
  };
  const body = resolve(openapi.paths?.["/quantize-jobs"]?.post?.requestBody?.content?.["application/json"]?.schema);
  const fields = {};
  for (const [name, prop] of Object.entries(body?.properties || {})) {
    const branch = (prop.anyOf || [prop]).map(resolve).find((b) => b.type !== "null") || prop;
    fields[name] = { ...branch, default: prop.default, description: prop.description };
  }
  return fields;
}

function option(value, selected) {
  const node = document.createElement("option");
  node.value = node.textContent = String(value);
  node.selected = selected;
  return node;
}

function limitField(field, schema) {
  if (schema.description) field.title = schema.description;
  if (field.tagName === "SELECT") {
    const values = schema.enum || (schema.type === "integer"
      ? Array.from({ length: schema.maximum - schema.minimum + 1 }, (_, i) => schema.minimum + i) : []);
    const chosen = schema.default ?? (values.includes(PREFERRED_BITS) ? PREFERRED_BITS : values[0]);
    field.replaceChildren(...values.map((v) => option(v, v === chosen)));
    return;
  }
  field.step = schema.type === "integer" ? "1" : "any";
  if (schema.minimum !== undefined) field.min = schema.minimum;
  if (schema.exclusiveMinimum !== undefined) field.min = schema.exclusiveMinimum;
  if (schema.maximum !== undefined) field.max = schema.maximum;
  if (!field.placeholder && schema.default !== undefined && schema.default !== null) {
    field.placeholder = String(schema.default);
  }
  field.addEventListener("input", () => {
    // HTML has no exclusive minimum: say it the way the browser says the others
    const low = schema.exclusiveMinimum;
    const tooLow = low !== undefined && field.value !== "" && Number(field.value) <= low;
    field.setCustomValidity(tooLow ? `Please enter a value greater than ${low}.` : "");
  });
}

async function loadJobSchema() {
  const result = await api("/openapi.json");
  if (!result.ok) {
    $("submit-status").textContent = `Cannot read the job parameters: ${errorText(result)}`;
    return;
  }
  jobSchema = fieldSchemas(result.body);
  const form = $("job-form");
  for (const [name, schema] of Object.entries(jobSchema)) {
    const field = form.elements.namedItem(name);
    if (field && name !== "dataset") limitField(field, schema);
  }
}

function formBody(form) {
  const body = {};
  for (const [name, value] of new FormData(form).entries()) {
    if (value === "") continue; // empty: the server's (data set's) default
    // a number as typed (2.5 for an integer is the server's to refuse, not ours to cut to 2)
    const numeric = form.elements.namedItem(name).type === "number"
      || ["integer", "number"].includes(jobSchema[name]?.type);
    body[name] = numeric ? Number(value) : value;
  }
  return body;
}

async function submitJob(event) {
  event.preventDefault();
  const form = event.target;
  const status = $("submit-status");
  const button = form.querySelector("[type=submit]");
  button.disabled = true;
  status.className = "small";
  status.textContent = "Submitting…";
  const result = await api("/quantize-jobs", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(formBody(form)),
  });
  button.disabled = false;
  if (!result.ok) {
    status.className = "small error";
    const field = result.body?.error?.field;
    status.textContent = `Not submitted: ${errorText(result)}${field ? ` (${field})` : ""}`;
    return;
  }
  status.replaceChildren("Queued ", link(`#job/${result.body.id}`, `job ${short(result.body.id)}`), ".");
  status.dataset.jobId = result.body.id;
  refreshJobs();
}

// ---------------------------------------------------------------- the jobs table

function accuracyText(job) {
  const r = job.result;
  if (!r) return job.error ? job.error.code : "–";
  return `${pct(r.quantized_accuracy)} (float ${pct(r.float_accuracy)})`;
}

async function refreshJobs() {
  clearTimeout(jobsTimer);
  const result = await api("/quantize-jobs?limit=20");
  let active = false;
  if (result.ok) {
    const { items, total } = result.body;
    const rows = items.map((job) => {
      const tr = document.createElement("tr");
      tr.setAttribute("data-testid", "job-row");
      tr.dataset.jobId = job.id;
      tr.dataset.status = job.status;
      cell(tr, link(`#job/${job.id}`, short(job.id)), "mono");
      cell(tr, job.dataset);
      cell(tr, `W${job.weight_bits} A${job.activation_bits}`);
      cell(tr, statusBadge(job.status));
      const p = job.progress;
      const fraction = job.status === "succeeded" ? 1 : p?.fraction || 0;
      const td = cell(tr, progressBar(fraction, p?.message));
      const label = document.createElement("span");
      label.className = "muted small";
      label.textContent = ACTIVE.has(job.status) && p ? `${p.stage} ${Math.round(100 * p.fraction)} %` : "";
      td.append(label);
      cell(tr, accuracyText(job), "num");
      active ||= ACTIVE.has(job.status);
      return tr;
    });
    $("jobs-body").replaceChildren(...rows);
    labelCells($("jobs-body"));
    $("jobs-empty").hidden = items.length > 0;
    $("jobs-count").textContent = total > items.length ? `newest ${items.length} of ${total}` : "";
    // a job that just finished may have published a bundle
    const finished = items.some((j) => lastStatuses.get(j.id) && lastStatuses.get(j.id) !== j.status
      && j.status === "succeeded");
    lastStatuses = new Map(items.map((j) => [j.id, j.status]));
    if (finished) refreshBundles();
  } else {
    $("jobs-count").textContent = `cannot list jobs: ${errorText(result)}`;
  }
  jobsTimer = setTimeout(refreshJobs, active ? 1500 : 6000);
}

// ---------------------------------------------------------------- one job

function fact(list, term, value) {
  const dt = document.createElement("dt");
  dt.textContent = term;
  const dd = document.createElement("dd");
  if (value instanceof Node) dd.append(value);
  else dd.textContent = value;
  list.append(dt, dd);
}

function plotIterations(iterations) {
  const points = (key) => iterations
    .filter((it) => typeof it[key] === "number")
    .map((it) => [it.iteration, 100 * it[key], `iteration ${it.iteration}: ${(100 * it[key]).toFixed(2)} %`]);
  window.SIQCharts.plot($("iterations-chart"), {
    x: { label: "SIQ iteration", integer: true, min: 0.5, max: Math.max(1, iterations.length) + 0.5 },
    y: { label: "validation accuracy %", pad: 0.15, clampMax: 100 },
    series: [
      { name: "after k-means", color: COLORS[1], kind: "line", points: points("accuracy_after_kmeans") },
      { name: "after retraining", color: COLORS[0], kind: "line", points: points("accuracy_after_retrain") },
    ],
    empty: "no SIQ iteration has finished yet",
  });
  const change = iterations.filter((it) => typeof it.codebook_change === "number")
    .map((it) => [it.iteration, it.codebook_change, `iteration ${it.iteration}: ${it.codebook_change.toFixed(4)}`]);
  window.SIQCharts.plot($("change-chart"), {
    x: { label: "SIQ iteration", integer: true, min: 0.5, max: Math.max(1, iterations.length) + 0.5 },
    y: { label: "relative change", min: 0, pad: 0.15 },
    series: [{ name: "codebook change", color: COLORS[2], kind: "bars", points: change }],
    empty: "the first iteration has no previous codebook",
  });
}

async function showJob(id) {
  clearTimeout(jobTimer);
  const section = $("job");
  const result = await api(`/quantize-jobs/${encodeURIComponent(id)}`);
  if (location.hash !== `#job/${id}`) return; // navigated away meanwhile
  section.hidden = false;
  if (!result.ok) {
    $("job-title").textContent = `Job ${short(id)}`;
    $("job-status").replaceChildren();
    $("job-error").hidden = false;
    $("job-error").textContent = errorText(result);
    return;
  }
  const job = result.body;
  $("job-title").textContent = `Job ${short(job.id)} · ${job.dataset} W${job.weight_bits} A${job.activation_bits}`;
  const status = $("job-status");
  status.textContent = job.status;
  status.className = `status ${job.status}`;
  status.dataset.status = job.status;
  const p = job.progress;
  $("job-stage").textContent = p ? `${p.stage}: ${p.message}` : "";
  const fraction = job.status === "succeeded" ? 1 : p?.fraction || 0;
  $("job-progress").style.width = `${Math.round(100 * fraction)}%`;

  const facts = $("job-facts");
  facts.replaceChildren();
  fact(facts, "job id", job.id);
  const cfg = Object.entries(job.config).filter(([k, v]) => v !== null && k !== "version" && k !== "dataset");
  fact(facts, "parameters", cfg.map(([k, v]) => `${k}=${v}`).join(", "));
  fact(facts, "created", when(job.created));
  if (job.finished) fact(facts, "finished", when(job.finished));
  const r = job.result;
  if (r) {
    fact(facts, "float accuracy", pct(r.float_accuracy));
    fact(facts, "quantised accuracy", pct(r.quantized_accuracy));
    fact(facts, "bundle", `${bytes(r.bundle_bytes)} (${(r.float_bytes / r.bundle_bytes).toFixed(2)}× smaller than float32 ${bytes(r.float_bytes)})`);
    fact(facts, "converged", r.converged === null || r.converged === undefined ? "–" : String(r.converged));
    fact(facts, "seconds", r.seconds.toFixed(1));
  }
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  plotIterations(job.iterations || []);

  const download = $("job-bundle");
  download.hidden = !r;
  if (r) {
    download.href = `/bundles/${r.bundle_id}`;
    download.setAttribute("download", `${r.bundle_id}.siq`);
  }
  const cancel = $("job-cancel");
  cancel.hidden = !ACTIVE.has(job.status) || job.cancel_requested;
  cancel.onclick = async () => {
    cancel.disabled = true;
    const answer = await api(`/quantize-jobs/${job.id}/cancel`, { method: "POST" });
    cancel.disabled = false;
    if (!answer.ok) $("job-stage").textContent = `cancel refused: ${errorText(answer)}`;
    showJob(job.id);
  };
  if (ACTIVE.has(job.status)) jobTimer = setTimeout(() => showJob(id), 1000);
}

function route() {
  clearTimeout(jobTimer);
  const match = location.hash.match(/^#job\/([\w-]+)$/);
  if (match) {
    showJob(match[1]);
    $("job").scrollIntoView({ block: "start" });
  } else {
    $("job").hidden = true;
  }
}

// ---------------------------------------------------------------- bundles

async function manifestOf(id) {
  if (!manifests.has(id)) {
    const result = await api(`/bundles/${id}/manifest`);
    if (!result.ok) return null;
    manifests.set(id, result.body);
  }
  return manifests.get(id);
}

async function refreshBundles() {
  clearTimeout(bundlesTimer);
  bundlesTimer = setTimeout(refreshBundles, 20000);
  const result = await api("/bundles");
  if (!result.ok) {
    $("bundles-empty").hidden = false;
    $("bundles-empty").textContent = `cannot list bundles: ${errorText(result)}`;
    return;
  }
  const items = result.body.items.slice(0, 60);
  // the float32 size lives in the manifest's metrics (the job's result holds it too)
  const floats = await Promise.all(items.map((b) => manifestOf(b.id)));
  const rows = items.map((b, i) => {
    const floatBytes = floats[i]?.metrics?.float_bytes;
    b.float_bytes = floatBytes;
    const tr = document.createElement("tr");
    tr.setAttribute("data-testid", "bundle-row");
    tr.dataset.bundleId = b.id;
    cell(tr, short(b.id), "mono").title = b.id;
    cell(tr, b.dataset);
    cell(tr, `W${b.weight_bits} A${b.activation_bits}`);
    cell(tr, b.bytes.toLocaleString(), "num").title = bytes(b.bytes);
    cell(tr, pct(b.quantized_accuracy), "num");
    cell(tr, pct(b.float_accuracy), "num");
    cell(tr, floatBytes ? `${(floatBytes / b.bytes).toFixed(2)}×` : "–", "num");
    cell(tr, when(b.created));
    const a = link(`/bundles/${b.id}`, "download");
    a.setAttribute("download", `${b.id}.siq`);
    a.addEventListener("click", (event) => downloadWithToken(event, b.id));
    cell(tr, a);
    return tr;
  });
  $("bundles-body").replaceChildren(...rows);
  labelCells($("bundles-body"));
  $("bundles-empty").hidden = items.length > 0;
  $("bundles-empty").textContent = "No bundles yet: a succeeded job publishes one.";
  plotBundles(items);
}

function plotBundles(items) {
  const datasets = [...new Set(items.map((b) => b.dataset))];
  const series = datasets.map((name, i) => ({
    name, color: COLORS[i % COLORS.length], kind: "points", labels: true,
    points: items.filter((b) => b.dataset === name && typeof b.quantized_accuracy === "number")
      .map((b) => [b.bytes, 100 * b.quantized_accuracy, `W${b.weight_bits}A${b.activation_bits}`]),
  }));
  const floats = items.filter((b) => b.float_bytes && typeof b.float_accuracy === "number");
  if (floats.length) {
    series.push({ name: "float32", color: "#4d5b70", kind: "points", hollow: true,
      points: floats.map((b) => [b.float_bytes, 100 * b.float_accuracy, `${b.dataset} float32`]) });
  }
  window.SIQCharts.plot($("size-chart"), {
    x: { label: "bytes (bundle file; float32: parameter bytes)", log: true, format: siBytes },
    y: { label: "test accuracy %", pad: 0.1, clampMax: 100 },
    series,
    empty: "no bundles yet",
  });
}

async function downloadWithToken(event, id) {
  // a plain link carries no Authorization header: with a token, fetch the file and save it
  if (!token()) return;
  event.preventDefault();
  const response = await fetch(`/bundles/${id}`, { headers: { Authorization: `Bearer ${token()}` } });
  if (!response.ok) return;
  const url = URL.createObjectURL(await response.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = `${id}.siq`;
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// ---------------------------------------------------------------- start

$("forget-token").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showTokenState();
});
$("job-form").addEventListener("submit", submitJob);
window.addEventListener("hashchange", route);
showTokenState();
loadJobSchema();
loadDatasets();
refreshJobs();
refreshBundles();
route();
