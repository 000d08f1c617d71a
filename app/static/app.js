// The search page: plain browser JavaScript, no build step.
// Talks to the JSON API under /v1 (POST /v1/search, GET /v1/items/{id}/content, GET /readyz)
// and, with the admin key, to /v1/admin (versions, retrain, jobs, activate, rollback).
"use strict";

const SPACE_NAMES = {
  clip: "native CLIP space",
  clap: "native CLAP space",
  shared: "bridged (C-MCR) space",
};
const MAX_RECORD_SECONDS = 10;
const KEY_STORAGE = "modality-bridge.api-key";
// The admin key lives in this tab's sessionStorage at most: never localStorage, never a URL.
const ADMIN_KEY_STORAGE = "modality-bridge.admin-key";
const JOB_STORAGE = "modality-bridge.retrain-job";
const POLL_MS = 400;
const SEARCH_HINTS = {
  401: " Enter the server's API key above.",
  503: " The server is still loading; try again in a moment.",
};
const ADMIN_HINTS = {
  401: " Check the admin key.",
  403: " Set BRIDGE_ADMIN_KEY on the server to use the operator view.",
  503: " The server is still loading; try again in a moment.",
};

const $ = (id) => document.getElementById(id);
let objectUrls = [];
let searchSerial = 0;

// ------------------------------------------------------------------ HTTP

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An Error whose message is the API's own `detail`, in words (plus a hint by status). */
async function apiError(response, hints) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch {
    detail = response.statusText || "no details given";
  }
  const hint = hints[response.status] ?? "";
  const sentence = /[.!?]$/.test(detail) ? detail : `${detail}.`;
  return new Error(`The server answered ${response.status}: ${sentence}${hint}`);
}

async function send(path, options, hints) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(`Could not reach the server (${err.message}).`);
  }
  if (!response.ok) throw await apiError(response, hints);
  return response;
}

function request(path, options = {}) {
  const headers = { ...authHeaders(), ...options.headers };
  return send(path, { ...options, headers }, SEARCH_HINTS);
}

function searchK() {
  const k = Number.parseInt($("k").value, 10);
  return Number.isFinite(k) && k >= 1 ? Math.min(k, 100) : 8;
}

async function searchWithFile(file, target) {
  const form = new FormData();
  form.append("file", file, file.name || "upload");
  form.append("target", target);
  form.append("k", String(searchK()));
  const response = await request("v1/search", { method: "POST", body: form });
  return response.json();
}

async function searchWithJson(query) {
  const response = await request("v1/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(query),
  });
  return response.json();
}

function searchWithText(text, target) {
  return searchWithJson({ text, target, k: searchK() });
}

function searchWithItem(itemId, target) {
  return searchWithJson({ item_id: itemId, target, k: searchK() });
}

/** The stored item that was seeded from the bundled sample `sampleFile`. */
async function findSample(sampleFile, modality) {
  const filters = { sample_file: sampleFile };
  const answer = await searchWithJson({ text: "sample", target: modality, k: 1, filters });
  if (!answer.results.length) {
    throw new Error(
      `The sample ${sampleFile} is not stored here: the server seeds the samples only into an ` +
        "empty store (BRIDGE_SEED_SAMPLES).",
    );
  }
  return answer.results[0];
}

/** A blob: URL for an item's original bytes (fetched with the API key, if any). */
async function contentUrl(itemId) {
  const response = await request(`v1/items/${encodeURIComponent(itemId)}/content`);
  const url = URL.createObjectURL(await response.blob());
  objectUrls.push(url);
  return url;
}

// ------------------------------------------------------------------ rendering

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function resetResults(title) {
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
  $("results-title").textContent = title;
  for (const id of ["image-results", "audio-results"]) $(id).replaceChildren();
  for (const id of ["image-block", "audio-block"]) $(id).hidden = true;
  $("results").hidden = false;
  $("results").setAttribute("aria-busy", "true");
}

function describeSpace(answer) {
  const name = SPACE_NAMES[answer.space] ?? answer.space;
  const version = answer.bridge_version;
  if (!version) return `answered in the ${name} (no bridge version active)`;
  // The bridge answered a shared-space query itself; a native one ran while it was active.
  const by = answer.space === "shared" ? `by bridge ${version}` : `(bridge ${version} active)`;
  return `answered in the ${name} ${by}`;
}

/** A short line of metadata: up to 3 short scalar fields besides the label. */
function metadataText(metadata) {
  return Object.entries(metadata ?? {})
    .filter(([key, value]) => key !== "label" && value !== null && typeof value !== "object")
    .filter(([, value]) => String(value).length <= 40)
    .slice(0, 3)
    .map(([key, value]) => `${key}: ${value}`)
    .join(" · ");
}

function resultCard(hit, rank) {
  const card = document.createElement("li");
  card.className = "result";
  card.dataset.id = hit.id;
  card.dataset.modality = hit.modality;
  card.dataset.score = String(hit.score);
  const label = hit.metadata?.label;
  card.dataset.label = label === undefined || label === null ? "" : String(label);

  const head = document.createElement("div");
  head.className = "result-head";
  head.innerHTML = '<span class="rank"></span><span class="score"></span>';
  head.querySelector(".rank").textContent = `#${rank}`;
  head.querySelector(".score").textContent = `score ${hit.score.toFixed(3)}`;

  const media = document.createElement("div");
  media.className = "media";
  media.textContent = "loading…";

  const meta = document.createElement("p");
  meta.className = "meta";
  if (card.dataset.label) {
    const tag = document.createElement("span");
    tag.className = "label";
    tag.textContent = `label ${card.dataset.label}`;
    meta.append(tag);
  }
  meta.append(metadataText(hit.metadata) || (card.dataset.label ? "" : hit.id));
  meta.title = `item ${hit.id}\n${JSON.stringify(hit.metadata ?? {}, null, 1)}`;

  card.append(head, media, meta);
  return card;
}

async function fillMedia(card, hit) {
  const media = card.querySelector(".media");
  try {
    const url = await contentUrl(hit.id);
    let element;
    if (hit.modality === "image") {
      element = document.createElement("img");
      element.alt = `Result ${card.dataset.label ? `labelled ${card.dataset.label}` : hit.id}`;
    } else {
      element = document.createElement("audio");
      element.controls = true;
      element.preload = "metadata";
    }
    element.src = url;
    media.replaceChildren(element);
  } catch (err) {
    media.textContent = `No preview: ${err.message}`;
    media.classList.add("no-preview");
  }
}

async function renderAnswer(answer, target) {
  const list = $(target === "image" ? "image-results" : "audio-results");
  $(target === "image" ? "image-space" : "audio-space").textContent = `— ${describeSpace(answer)}`;
  $(target === "image" ? "image-block" : "audio-block").hidden = false;
  list.dataset.space = answer.space;
  list.dataset.bridgeVersion = answer.bridge_version ?? "";
  if (answer.results.length === 0) {
    const empty = document.createElement("li");
    empty.className = "empty";
    empty.textContent = "Nothing stored matches yet: add items with POST /v1/items.";
    list.replaceChildren(empty);
    return;
  }
  const cards = answer.results.map((hit, i) => resultCard(hit, i + 1));
  list.replaceChildren(...cards);
  await Promise.all(cards.map((card, i) => fillMedia(card, answer.results[i])));
}

/** Run one search flow; stale answers (a newer search started) are dropped. */
async function runSearch(title, jobs) {
  const serial = ++searchSerial;
  clearError();
  resetResults(title);
  const settled = await Promise.allSettled(jobs.map(({ run }) => run()));
  if (serial !== searchSerial) return;
  const errors = [];
  await Promise.all(
    settled.map((outcome, i) => {
      if (outcome.status === "fulfilled") return renderAnswer(outcome.value, jobs[i].target);
      errors.push(outcome.reason.message);
      return null;
    }),
  );
  if (serial !== searchSerial) return;
  if (errors.length) showError([...new Set(errors)].join(" "));
  if (errors.length === jobs.length) $("results").hidden = true;
  $("results").setAttribute("aria-busy", "false");
}

// ------------------------------------------------------------------ inputs

function previewFile(elementId, file) {
  const element = $(elementId);
  const url = URL.createObjectURL(file);
  if (element.dataset.url) URL.revokeObjectURL(element.dataset.url);
  element.dataset.url = url;
  element.src = url;
  element.hidden = false;
}

function searchSound(file) {
  previewFile("sound-preview", file);
  return runSearch(`Images matching the sound “${file.name}”`, [
    { target: "image", run: () => searchWithFile(file, "image") },
  ]);
}

function searchImage(file) {
  previewFile("image-preview", file);
  return runSearch(`Sounds matching the image “${file.name}”`, [
    { target: "audio", run: () => searchWithFile(file, "audio") },
  ]);
}

async function searchSample(button) {
  const { sampleFile, modality, target, what } = button.dataset;
  clearError();
  let item;
  try {
    item = await findSample(sampleFile, modality);
    const content = await request(`v1/items/${encodeURIComponent(item.id)}/content`);
    previewFile(modality === "audio" ? "sound-preview" : "image-preview", await content.blob());
  } catch (err) {
    showError(err.message);
    return;
  }
  const found = target === "image" ? "Images" : "Sounds";
  await runSearch(`${found} matching the sample: ${what} (${sampleFile})`, [
    { target, run: () => searchWithItem(item.id, target) },
  ]);
}

function searchText(text) {
  return runSearch(`Images and sounds matching “${text}”`, [
    { target: "image", run: () => searchWithText(text, "image") },
    { target: "audio", run: () => searchWithText(text, "audio") },
  ]);
}

// ------------------------------------------------------------------ recording

/** 16-bit PCM mono WAV bytes for float samples in [-1, 1]. */
function encodeWav(samples, sampleRate) {
  const buffer = new ArrayBuffer(44 + samples.length * 2);
  const view = new DataView(buffer);
  const ascii = (offset, text) => {
    for (let i = 0; i < text.length; i++) view.setUint8(offset + i, text.charCodeAt(i));
  };
  ascii(0, "RIFF");
  view.setUint32(4, 36 + samples.length * 2, true);
  ascii(8, "WAVE");
  ascii(12, "fmt ");
  view.setUint32(16, 16, true); // fmt chunk size
  view.setUint16(20, 1, true); // PCM
  view.setUint16(22, 1, true); // mono
  view.setUint32(24, sampleRate, true);
  view.setUint32(28, sampleRate * 2, true); // byte rate
  view.setUint16(32, 2, true); // block align
  view.setUint16(34, 16, true); // bits per sample
  ascii(36, "data");
  view.setUint32(40, samples.length * 2, true);
  for (let i = 0; i < samples.length; i++) {
    const s = Math.max(-1, Math.min(1, samples[i]));
    view.setInt16(44 + i * 2, s < 0 ? s * 0x8000 : s * 0x7fff, true);
  }
  return buffer;
}

/** Decode a MediaRecorder blob (WebM/Ogg) with WebAudio and mix it down to mono. */
async function blobToWav(blob) {
  const context = new AudioContext();
  try {
    const audio = await context.decodeAudioData(await blob.arrayBuffer());
    const mono = new Float32Array(audio.length);
    for (let c = 0; c < audio.numberOfChannels; c++) {
      const channel = audio.getChannelData(c);
      for (let i = 0; i < mono.length; i++) mono[i] += channel[i] / audio.numberOfChannels;
    }
    return new File([encodeWav(mono, audio.sampleRate)], "recording.wav", { type: "audio/wav" });
  } finally {
    await context.close();
  }
}

const recorder = { media: null, stream: null, timer: null };

async function startRecording() {
  if (!navigator.mediaDevices?.getUserMedia || typeof MediaRecorder === "undefined") {
    throw new Error("This browser cannot record audio here; upload a sound file instead.");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (err) {
    throw new Error(`No microphone available (${err.message}); upload a sound file instead.`);
  }
  const chunks = [];
  const media = new MediaRecorder(stream);
  media.addEventListener("dataavailable", (event) => {
    if (event.data.size > 0) chunks.push(event.data);
  });
  media.addEventListener("stop", async () => {
    stream.getTracks().forEach((track) => track.stop());
    clearTimeout(recorder.timer);
    recorder.media = null;
    $("record").textContent = "● Record";
    $("record-status").textContent = "Converting to WAV…";
    try {
      const wav = await blobToWav(new Blob(chunks, { type: media.mimeType }));
      $("record-status").textContent = `Recorded ${(wav.size / 1024).toFixed(0)} KB.`;
      await searchSound(wav);
    } catch (err) {
      $("record-status").textContent = "";
      showError(`The recording could not be used: ${err.message}`);
    }
  });
  media.start();
  Object.assign(recorder, { media, stream });
  recorder.timer = setTimeout(stopRecording, MAX_RECORD_SECONDS * 1000);
  $("record").textContent = "■ Stop";
  $("record-status").textContent = `Recording (at most ${MAX_RECORD_SECONDS} s)…`;
}

function stopRecording() {
  if (recorder.media && recorder.media.state !== "inactive") recorder.media.stop();
}

// ------------------------------------------------------------------ status

async function checkStatus() {
  const status = $("status");
  try {
    const response = await fetch("readyz");
    const body = await response.json();
    status.dataset.state = response.ok ? "ready" : "loading";
    status.textContent = response.ok
      ? "Ready."
      : `Not ready yet: ${body.detail ?? body.phase ?? response.status}.`;
    if (!response.ok) setTimeout(checkStatus, 2000);
  } catch (err) {
    status.dataset.state = "down";
    status.textContent = `The server does not answer (${err.message}).`;
    setTimeout(checkStatus, 5000);
  }
}

// ------------------------------------------------------------------ operator view

const operator = { key: "", pollSerial: 0, job: null, active: null };

function sessionGet(name) {
  try {
    return sessionStorage.getItem(name) ?? "";
  } catch {
    return ""; // storage disabled: the key lives in memory only
  }
}

function sessionSet(name, value) {
  try {
    if (value) sessionStorage.setItem(name, value);
    else sessionStorage.removeItem(name);
  } catch {
    // storage disabled: nothing is kept
  }
}

/** An admin call with the operator's key; the parsed JSON answer. */
async function admin(path, { method = "GET", json, form, key = operator.key } = {}) {
  const headers = { Authorization: `Bearer ${key}` };
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form !== undefined) {
    body = form; // multipart: the browser writes the boundary
  }
  const response = await send(path, { method, headers, body }, ADMIN_HINTS);
  return response.json();
}

function showAdminError(message) {
  $("admin-error").textContent = message;
  $("admin-error").hidden = false;
}

function adminNotice(message) {
  $("admin-error").hidden = true;
  $("admin-notice").textContent = message;
  $("admin-notice").hidden = !message;
}

/** Run an operator action: its errors are shown to the operator, in words. */
async function adminAction(action) {
  $("admin-error").hidden = true;
  try {
    await action();
  } catch (err) {
    $("admin-notice").hidden = true;
    showAdminError(err.message);
  }
}

function formatNumber(value, fixed = false) {
  if (typeof value !== "number") return String(value);
  return Number.isInteger(value) && !fixed ? String(value) : value.toFixed(3);
}

function cell(tag, text) {
  const element = document.createElement(tag);
  element.textContent = text;
  return element;
}

function renderVersions(answer) {
  operator.active = answer.active;
  $("versions").dataset.active = answer.active ?? "";
  $("versions-active").textContent = answer.active
    ? `— ${answer.active} is serving the bridged space`
    : "— no version is active";
  const rows = answer.versions.map((v) => {
    const row = document.createElement("tr");
    Object.assign(row.dataset, { version: v.version, status: v.status, active: v.active });
    const recall = v.metrics?.stored_items_by_label?.audio_to_image?.r_at_1;
    row.append(
      cell("th", v.version),
      cell("td", v.status),
      cell("td", v.created_at.replace("T", " ").slice(0, 19)),
      cell("td", v.metrics?.mode ?? "cmcr"),
      cell("td", typeof recall === "number" ? formatNumber(recall) : "—"),
    );
    row.firstChild.scope = "row";
    const serving = document.createElement("td");
    if (v.active) {
      serving.append(cell("strong", "active"));
    } else if (v.status === "ready") {
      const button = cell("button", "Activate");
      button.type = "button";
      button.className = "secondary activate";
      button.setAttribute("aria-label", `Activate version ${v.version}`);
      button.addEventListener("click", () => adminAction(() => activateVersion(v.version)));
      serving.append(button);
    }
    row.append(serving);
    return row;
  });
  $("versions-body").replaceChildren(...rows);
  const job = operator.job;
  $("job-activate").hidden = !(job?.status === "succeeded" && job.version !== answer.active);
}

async function refreshVersions() {
  renderVersions(await admin("v1/admin/versions"));
}

async function activateVersion(version) {
  const answer = await admin("v1/admin/activate", { method: "POST", json: { version } });
  await refreshVersions();
  adminNotice(`Version ${answer.version} is active: searches now use it.`);
}

async function rollback() {
  const answer = await admin("v1/admin/rollback", { method: "POST" });
  await refreshVersions();
  adminNotice(`Rolled back: version ${answer.version} is active again.`);
}

/** Tables of the job's metrics: retrieval groups as rows, every other value listed. */
const METRIC_COLUMNS = {
  r_at_1: "R@1",
  r_at_5: "R@5",
  r_at_10: "R@10",
  map: "mAP",
  median_rank: "median rank",
  p_at_1: "P@1",
  queries: "queries",
  gallery: "gallery",
};
const FRACTIONS = new Set(["r_at_1", "r_at_5", "r_at_10", "map", "p_at_1"]);

function isRetrievalGroup(value) {
  const inner = Object.values(value ?? {});
  return (
    typeof value === "object" &&
    inner.length > 0 &&
    inner.every(
      (row) =>
        row &&
        typeof row === "object" &&
        Object.values(row).every((x) => typeof x === "number"),
    )
  );
}

function flatten(value, prefix, out) {
  if (value !== null && typeof value === "object" && !Array.isArray(value)) {
    for (const [key, inner] of Object.entries(value)) {
      flatten(inner, prefix ? `${prefix}.${key}` : key, out);
    }
  } else if (Array.isArray(value)) {
    out.push([prefix, value.length ? value.map(formatNumber).join("; ") : "none"]);
  } else {
    out.push([prefix, formatNumber(value)]);
  }
  return out;
}

function renderMetrics(metrics) {
  const groups = Object.entries(metrics).filter(([, value]) => isRetrievalGroup(value));
  const nodes = [];
  if (groups.length) {
    const keys = new Set(groups.flatMap(([, g]) => Object.values(g).flatMap(Object.keys)));
    const columns = [
      ...Object.keys(METRIC_COLUMNS).filter((k) => keys.has(k)),
      ...[...keys].filter((k) => !(k in METRIC_COLUMNS)),
    ];
    const table = document.createElement("table");
    table.className = "table metrics";
    table.id = "job-metrics-table";
    table.append(cell("caption", "Retrieval by the new version"));
    const head = document.createElement("tr");
    head.append(cell("th", "evaluation"), cell("th", "direction"));
    head.append(...columns.map((k) => cell("th", METRIC_COLUMNS[k] ?? k.replaceAll("_", " "))));
    for (const th of head.children) th.scope = "col";
    table.append(document.createElement("thead"), document.createElement("tbody"));
    table.tHead.append(head);
    for (const [group, directions] of groups) {
      for (const [direction, values] of Object.entries(directions)) {
        const row = document.createElement("tr");
        row.dataset.group = group;
        row.dataset.direction = direction;
        const name = cell("th", group.replaceAll("_", " "));
        name.scope = "row";
        row.append(name, cell("td", direction.replaceAll("_", " ")));
        for (const k of columns) {
          row.append(cell("td", k in values ? formatNumber(values[k], FRACTIONS.has(k)) : "—"));
        }
        table.tBodies[0].append(row);
      }
    }
    nodes.push(table);
  }
  const rest = Object.fromEntries(
    Object.entries(metrics).filter(([key]) => !groups.some(([group]) => group === key)),
  );
  const facts = flatten(rest, "", []);
  if (facts.length) {
    const details = document.createElement("details");
    details.append(cell("summary", `Every other metric (${facts.length})`));
    const list = document.createElement("dl");
    list.className = "facts";
    for (const [key, value] of facts) list.append(cell("dt", key), cell("dd", value));
    details.append(list);
    nodes.push(details);
  }
  if (!nodes.length) nodes.push(cell("p", "The job reported no metrics."));
  $("job-metrics").replaceChildren(...nodes);
}

const JOB_WORDS = {
  queued: "Queued",
  running: "Running",
  succeeded: "Done",
  failed: "Failed",
};

function renderJob(job) {
  operator.job = job;
  $("job").hidden = false;
  $("job").dataset.jobId = job.job_id;
  $("job").dataset.version = job.version ?? "";
  $("job-title").textContent = `Retrain to version ${job.version ?? "?"} (job ${job.job_id})`;
  const progress = Math.max(0, Math.min(1, job.progress));
  $("job-progress").value = progress;
  $("job-percent").textContent = `${Math.round(progress * 100)} %`;
  const words = JOB_WORDS[job.status] ?? job.status;
  $("job-status").textContent = words;
  $("job-status").dataset.status = job.status;
  const message = job.message || (job.status === "queued" ? "waiting to start" : "");
  $("job-message").textContent = message.toLowerCase() === words.toLowerCase() ? "" : message;
  const finished = job.status === "succeeded" || job.status === "failed";
  $("retrain-start").disabled = !finished;
  if (!finished) {
    $("job-metrics").replaceChildren();
    $("job-activate").hidden = true;
  }
}

async function finishJob(job) {
  sessionSet(JOB_STORAGE, "");
  if (job.status === "failed") {
    showAdminError(`The retrain to version ${job.version} failed: ${job.error ?? job.message}`);
    return;
  }
  renderMetrics(job.metrics);
  $("job-activate").textContent = `Activate version ${job.version}`;
  await refreshVersions();
  if (job.version === operator.active) adminNotice(`Version ${job.version} is ready and active.`);
}

const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Poll GET /v1/admin/jobs/{job_id} until the job ends (a newer follow stops this one). */
async function followJob(jobId) {
  const serial = ++operator.pollSerial;
  for (;;) {
    let job;
    try {
      job = await admin(`v1/admin/jobs/${encodeURIComponent(jobId)}`);
    } catch (err) {
      if (serial === operator.pollSerial) {
        $("retrain-start").disabled = false;
        showAdminError(`Lost track of job ${jobId}: ${err.message}`);
      }
      return;
    }
    if (serial !== operator.pollSerial) return;
    renderJob(job);
    if (job.status === "succeeded" || job.status === "failed") {
      await adminAction(() => finishJob(job));
      return;
    }
    await sleep(POLL_MS);
    if (serial !== operator.pollSerial) return;
  }
}

async function startRetrain() {
  const epochs = Number.parseInt($("epochs").value, 10);
  const overrides = { epochs: Number.isFinite(epochs) ? epochs : $("epochs").value };
  const activate = $("retrain-activate").checked;
  const source = document.querySelector('input[name="captions-source"]:checked').value;
  let job;
  if (source === "file") {
    const file = $("captions-file").files[0];
    if (!file) throw new Error("Choose a captions file first (UTF-8 text, one caption per line).");
    const form = new FormData();
    form.append("captions", file, file.name);
    form.append("train_overrides", JSON.stringify(overrides));
    form.append("activate", String(activate));
    job = await admin("v1/admin/retrain", { method: "POST", form });
  } else {
    const captions = $("captions-text")
      .value.split("\n")
      .map((line) => line.trim())
      .filter(Boolean);
    const json = { captions, train_overrides: overrides, activate };
    job = await admin("v1/admin/retrain", { method: "POST", json });
  }
  adminNotice("");
  sessionSet(JOB_STORAGE, job.job_id);
  renderJob(job);
  followJob(job.job_id);
}

async function openOperator(key) {
  const versions = await admin("v1/admin/versions", { key });
  operator.key = key;
  sessionSet(ADMIN_KEY_STORAGE, key);
  $("admin-key").value = "";
  $("admin-key").placeholder = "key entered";
  $("admin-forget").hidden = false;
  $("admin-view").hidden = false;
  renderVersions(versions);
  const jobId = sessionGet(JOB_STORAGE);
  if (jobId && !operator.job) followJob(jobId);
}

function closeOperator() {
  operator.key = "";
  operator.pollSerial++;
  operator.job = null;
  sessionSet(ADMIN_KEY_STORAGE, "");
  $("admin-key").placeholder = "BRIDGE_ADMIN_KEY";
  $("admin-forget").hidden = true;
  $("admin-view").hidden = true;
  $("job").hidden = true;
  $("retrain-start").disabled = false;
  $("admin-error").hidden = true;
  adminNotice("");
}

function initOperator() {
  $("admin-key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("admin-key").value.trim();
    if (!key) {
      showAdminError("Enter the admin key (the server's BRIDGE_ADMIN_KEY) first.");
      return;
    }
    adminAction(() => openOperator(key));
  });
  $("admin-forget").addEventListener("click", closeOperator);
  $("versions-refresh").addEventListener("click", () => adminAction(refreshVersions));
  $("rollback").addEventListener("click", () => adminAction(rollback));
  $("job-activate").addEventListener("click", () =>
    adminAction(() => activateVersion(operator.job.version)),
  );
  $("retrain-form").addEventListener("submit", (event) => {
    event.preventDefault();
    adminAction(startRetrain);
  });
  for (const radio of document.querySelectorAll('input[name="captions-source"]')) {
    radio.addEventListener("change", () => {
      const fromFile = radio.value === "file" && radio.checked;
      $("captions-file").hidden = !fromFile;
      $("captions-text").hidden = fromFile;
    });
  }
  const saved = sessionGet(ADMIN_KEY_STORAGE);
  if (saved) {
    adminAction(async () => {
      try {
        await openOperator(saved);
      } catch (err) {
        sessionSet(ADMIN_KEY_STORAGE, ""); // e.g. the server's key changed since
        throw err;
      }
    });
  }
}

// ------------------------------------------------------------------ wiring

function init() {
  $("options").addEventListener("submit", (event) => event.preventDefault());
  const key = $("api-key");
  key.value = localStorage.getItem(KEY_STORAGE) ?? "";
  key.addEventListener("change", () => localStorage.setItem(KEY_STORAGE, key.value.trim()));

  $("sound-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) searchSound(file);
  });
  $("image-file").addEventListener("change", (event) => {
    const file = event.target.files[0];
    if (file) searchImage(file);
  });
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const text = $("text-query").value.trim();
    if (text) searchText(text);
  });
  for (const button of document.querySelectorAll("button.sample")) {
    button.addEventListener("click", () => {
      if (button.dataset.text) {
        $("text-query").value = button.dataset.text;
        searchText(button.dataset.text);
      } else {
        searchSample(button);
      }
    });
  }
  $("record").addEventListener("click", async () => {
    if (recorder.media) {
      stopRecording();
      return;
    }
    clearError();
    try {
      await startRecording();
    } catch (err) {
      showError(err.message);
    }
  });
  initOperator();
  checkStatus();
}

document.addEventListener("DOMContentLoaded", init);
