// cnnarena web page: classify a dropped/picked image, or webcam frames one after another.
"use strict";

const $ = (id) => document.getElementById(id);
const MOST_SHOWN = 5;
let topK = null; // the model's number of classes, up to MOST_SHOWN, once its card is read (the server's own else)
const FRAME_SIDE = 320; // webcam frames are downscaled before upload: the model needs far fewer pixels
let camera = null; // {stream, running, frames, since}
let previewUrl = null;
let heatUrl = null;
let lastFile = null; // the heat-map toggle explains the image already shown
let heatInFlight = false; // webcam: one heat map at a time, frames go on being classified meanwhile

async function loadModel() {
  try {
    const card = await (await fetch("/v1/model")).json();
    if (Number.isInteger(card.num_classes) && card.num_classes > 0) topK = Math.min(MOST_SHOWN, card.num_classes);
    // the served model predicts one view: a run tested with test-time augmentation records that accuracy too
    const metrics = card.metrics || {};
    const shown = metrics.test_accuracy_one_view != null ? metrics.test_accuracy_one_view : metrics.test_accuracy;
    const acc = typeof shown === "number"
      ? `<span class="tag">test accuracy ${(100 * shown).toFixed(1)}%</span>` : "";
    const size = card.input ? `${card.input.size.join("×")} ${card.input.color}` : "";
    $("model").innerHTML = `<b>${escapeHtml(card.model)}</b> · ${card.num_classes} classes · ${size}` +
      `<span class="tag">${escapeHtml(card.backend || "")}</span>${acc}`;
  } catch (e) {
    $("model").textContent = "model information unavailable";
  }
}

async function refreshStats() {
  try {
    const h = await (await fetch("/v1/health")).json();
    const b = h.batching;
    const count = (n, one, many) => `${n} ${n === 1 ? one : many}`;
    $("stats").textContent = `server: ${count(h.images, "image", "images")} classified in ` +
      `${count(b.batches, "batch", "batches")} · ` +
      `mean batch size ${b.mean_batch_size} · largest ${b.max_batch_size_seen}`;
  } catch (e) { /* the stats line is decoration; predictions report their own errors */ }
}

async function classify(blob, name) {
  const form = new FormData();
  form.append("file", blob, name);
  const t0 = performance.now();
  const query = topK ? `?top_k=${topK}` : "";
  const response = await fetch(`/v1/predict${query}`, { method: "POST", body: form });
  const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return { result: body.results[0], roundTrip: performance.now() - t0 };
}

function render({ result, roundTrip }) {
  $("error").hidden = true;
  $("label").textContent = result.label;
  $("confidence").textContent = `${(100 * result.probability).toFixed(1)}%`;
  $("latency").textContent = `server ${result.latency_ms.toFixed(1)} ms · round trip ${roundTrip.toFixed(1)} ms`;
  const bars = $("bars");
  bars.replaceChildren(...result.predictions.map((p) => {
    const li = document.createElement("li");
    li.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span>` +
      `<span class="pct"></span>`;
    li.querySelector(".name").textContent = p.label;
    li.querySelector(".name").title = p.label;
    li.querySelector(".pct").textContent = `${(100 * p.probability).toFixed(1)}%`;
    li.querySelector(".fill").style.width = `${Math.max(0.5, 100 * p.probability)}%`;
    return li;
  }));
  document.body.dataset.predictions = String(Number(document.body.dataset.predictions || 0) + 1);
}

// ---- heat map: POST /v1/explain returns the overlay PNG of the predicted class ----------------------

async function explainImage(blob, name) {
  if (!$("heat-on").checked || heatInFlight) return;
  heatInFlight = true;
  const form = new FormData();
  form.append("file", blob, name);
  try {
    const response = await fetch("/v1/explain", { method: "POST", body: form });
    if (!response.ok) {
      const body = await response.json().catch(() => ({ error: `HTTP ${response.status}` }));
      throw new Error(`heat map: ${body.error || response.status}`);
    }
    const png = await response.blob();
    if (heatUrl) URL.revokeObjectURL(heatUrl);
    heatUrl = URL.createObjectURL(png);
    const img = $("heat");
    img.src = heatUrl;
    const target = decodeURIComponent(response.headers.get("X-Target") || "");
    $("heat-caption").textContent = `${response.headers.get("X-Method")} of ${target}`;
    $("heat-box").hidden = false;
    await img.decode().catch(() => {});
    document.body.dataset.heatmaps = String(Number(document.body.dataset.heatmaps || 0) + 1);
  } catch (e) {
    showError(e.message);
  } finally {
    heatInFlight = false;
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function classifyFile(file) {
  if (!file) return;
  await stopCamera();
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  previewUrl = URL.createObjectURL(file);
  const img = $("preview");
  img.onload = () => img.classList.toggle("tiny", Math.max(img.naturalWidth, img.naturalHeight) < 128);
  img.src = previewUrl;
  img.hidden = false;
  $("video").hidden = true;
  $("drop-hint").hidden = true;
  $("label").textContent = "…";
  lastFile = file;
  try {
    render(await classify(file, file.name));
    await explainImage(file, file.name);
  } catch (e) {
    showError(e.message);
    $("label").textContent = "—";
  }
  refreshStats();
}

// ---- webcam: send a frame, wait for the answer, send the next -------------------------------------

async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError("this browser offers no webcam access here (it needs https or localhost)");
    return;
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    showError(`webcam unavailable: ${e.message || e.name}`);
    return;
  }
  camera = { stream, running: true, frames: 0, since: performance.now(), statsAt: 0 };
  const video = $("video");
  video.srcObject = stream;
  video.hidden = false;
  $("preview").hidden = true;
  $("drop-hint").hidden = true;
  $("camera").textContent = "Stop webcam";
  $("camera").classList.add("on");
  await video.play().catch(() => {});
  loop(camera);
}

async function loop(cam) {
  const video = $("video");
  const canvas = $("grab");
  while (cam.running) {
    if (video.readyState < 2 || !video.videoWidth) {
      await new Promise((r) => setTimeout(r, 50));
      continue;
    }
    const scale = Math.min(1, FRAME_SIDE / Math.max(video.videoWidth, video.videoHeight));
    canvas.width = Math.round(video.videoWidth * scale);
    canvas.height = Math.round(video.videoHeight * scale);
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    const blob = await new Promise((r) => canvas.toBlob(r, "image/jpeg", 0.85));
    try {
      const answer = await classify(blob, "webcam.jpg");
      if (!cam.running) break;
      render(answer);
      explainImage(blob, "webcam.jpg"); // not awaited: the next frame is classified meanwhile
      cam.frames += 1;
      const fps = cam.frames / ((performance.now() - cam.since) / 1000);
      $("camera-status").textContent = `live · ${cam.frames} frames · ${fps.toFixed(1)} frames/s`;
    } catch (e) {
      showError(e.message);
      await new Promise((r) => setTimeout(r, 500)); // a failing server is not hammered
    }
    if (performance.now() - cam.statsAt > 1000) {
      cam.statsAt = performance.now();
      refreshStats();
    }
  }
}

async function stopCamera() {
  if (!camera) return;
  camera.running = false;
  camera.stream.getTracks().forEach((t) => t.stop());
  camera = null;
  $("video").srcObject = null;
  $("video").hidden = true;
  $("camera").textContent = "Start webcam";
  $("camera").classList.remove("on");
  $("camera-status").textContent = "";
  refreshStats();
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

// ---- wiring ------------------------------------------------------------------------------------------

$("file").addEventListener("change", (e) => { classifyFile(e.target.files[0]); e.target.value = ""; });
$("heat-on").addEventListener("change", () => {
  if (!$("heat-on").checked) { $("heat-box").hidden = true; return; }
  if (lastFile && !camera) explainImage(lastFile, lastFile.name);
});
$("camera").addEventListener("click", () => (camera ? stopCamera() : startCamera()));
const drop = $("drop");
drop.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") $("file").click(); });
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.add("over");
}));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, () => drop.classList.remove("over")));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  classifyFile(e.dataTransfer.files[0]);
});
// Images pasted from the clipboard work too.
window.addEventListener("paste", (e) => {
  const item = [...e.clipboardData.items].find((i) => i.type.startsWith("image/"));
  if (item) classifyFile(item.getAsFile());
});

loadModel();
refreshStats();
