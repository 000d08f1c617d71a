// The search page: plain browser JavaScript, no build step.
// Talks to the JSON API under /v1 (POST /v1/search, GET /v1/items/{id}/content, GET /readyz).
"use strict";

const SPACE_NAMES = {
  clip: "native CLIP space",
  clap: "native CLAP space",
  shared: "bridged (C-MCR) space",
};
const MAX_RECORD_SECONDS = 10;
const KEY_STORAGE = "modality-bridge.api-key";

const $ = (id) => document.getElementById(id);
let objectUrls = [];
let searchSerial = 0;

// ------------------------------------------------------------------ HTTP

function authHeaders() {
  const key = $("api-key").value.trim();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

/** An Error whose message is the API's own `detail`, in words. */
async function apiError(response) {
  let detail = "";
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail ?? body);
  } catch {
    detail = response.statusText || "no details given";
  }
  let hint = "";
  if (response.status === 401) hint = " Enter the server's API key above.";
  if (response.status === 503) hint = " The server is still loading; try again in a moment.";
  const sentence = /[.!?]$/.test(detail) ? detail : `${detail}.`;
  return new Error(`The server answered ${response.status}: ${sentence}${hint}`);
}

async function request(path, options = {}) {
  let response;
  try {
    response = await fetch(path, { ...options, headers: { ...authHeaders(), ...options.headers } });
  } catch (err) {
    throw new Error(`Could not reach the server (${err.message}).`);
  }
  if (!response.ok) throw await apiError(response);
  return response;
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

async function searchWithText(text, target) {
  const response = await request("v1/search", {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ text, target, k: searchK() }),
  });
  return response.json();
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
  // A bridge version only matters when the bridged space answered.
  const version =
    answer.space === "shared" && answer.bridge_version ? `, bridge ${answer.bridge_version}` : "";
  return `answered in the ${name}${version}`;
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
  checkStatus();
}

document.addEventListener("DOMContentLoaded", init);
