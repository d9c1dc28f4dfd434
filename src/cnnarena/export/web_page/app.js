// cnnarena web export: the model runs in this page with ONNX Runtime Web (WebAssembly); nothing is uploaded.
// Preprocessing follows model.card.json: draw on white at the model's size, to L (PIL's weights) or RGB, /255.
"use strict";

const $ = (id) => document.getElementById(id);
const MOST_SHOWN = 5;
let card = null;
let session = null;
let camera = null; // {stream, running}
const results = []; // every image classified: {name, label, index, probability, ms}
window.cnnarenaResults = results;

async function start() {
  try {
    card = await (await fetch("model.card.json")).json();
    ort.env.wasm.wasmPaths = "./";
    ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
    session = await ort.InferenceSession.create(card.onnx_file, { executionProviders: ["wasm"] });
    $("model").textContent = `${card.model} · ${card.num_classes} classes · ` +
      `${card.input.size.join("×")} ${card.input.color}`;
    document.body.dataset.ready = "1";
  } catch (e) {
    showError(`the model did not load: ${e.message || e}`);
  }
}

function pixels(source, width, height) {
  const [h, w] = card.input.size;
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#fff"; // transparent pixels count as white, as in cnnarena's decoding
  ctx.fillRect(0, 0, w, h);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, 0, 0, width, height, 0, 0, w, h);
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const c = card.input.channels, plane = w * h, out = new Float32Array(c * plane);
  for (let i = 0; i < plane; i++) {
    const r = rgba[4 * i], g = rgba[4 * i + 1], b = rgba[4 * i + 2];
    if (c === 1) {
      out[i] = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16) / 255; // PIL's convert("L")
    } else {
      out[i] = r / 255; out[plane + i] = g / 255; out[2 * plane + i] = b / 255;
    }
  }
  return out;
}

async function run(data, batch) {
  const [h, w] = card.input.size;
  const input = new ort.Tensor("float32", data, [batch, card.input.channels, h, w]);
  const output = await session.run({ [card.input.name]: input });
  return output[card.output.name].data;
}

function softmax(logits) {
  const top = Math.max(...logits);
  const e = Array.from(logits, (v) => Math.exp(v - top));
  const sum = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / sum);
}

async function classify(source, width, height, name) {
  const t0 = performance.now();
  const probs = softmax(await run(pixels(source, width, height), 1));
  const ms = performance.now() - t0;
  const ranked = probs.map((p, i) => [p, i]).sort((a, b) => b[0] - a[0]).slice(0, Math.min(MOST_SHOWN, probs.length));
  const best = ranked[0][1];
  const result = { name, label: card.classes[best], index: best, probability: probs[best], ms };
  render(result, ranked);
  return result;
}

function render(result, ranked) {
  $("error").hidden = true;
  $("label").textContent = result.label;
  $("confidence").textContent = `${(100 * result.probability).toFixed(1)}%`;
  $("latency").textContent = `${result.ms.toFixed(1)} ms in this browser`;
  $("bars").replaceChildren(...ranked.map(([p, i]) => {
    const li = document.createElement("li");
    li.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    li.querySelector(".name").textContent = card.classes[i];
    li.querySelector(".name").title = card.classes[i];
    li.querySelector(".pct").textContent = `${(100 * p).toFixed(1)}%`;
    li.querySelector(".fill").style.width = `${Math.max(0.5, 100 * p)}%`;
    return li;
  }));
}

function addRow(result) {
  const row = document.createElement("tr");
  for (const value of [result.name, result.label, `${(100 * result.probability).toFixed(1)}%`, result.ms.toFixed(1)]) {
    const cell = document.createElement("td");
    cell.textContent = value;
    row.append(cell);
  }
  $("results").tBodies[0].prepend(row);
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function classifyFiles(files) {
  for (const file of files) {
    try {
      const bitmap = await createImageBitmap(file);
      const preview = $("preview");
      if (files.length === 1) { preview.src = URL.createObjectURL(file); preview.hidden = false; }
      const result = await classify(bitmap, bitmap.width, bitmap.height, file.name);
      bitmap.close();
      results.push(result);
      addRow(result);
    } catch (e) {
      showError(`${file.name}: not an image this browser can decode (${e.message || e})`);
      results.push({ name: file.name, error: String(e.message || e) });
    }
  }
  document.body.dataset.classified = String(results.length);
}

async function toggleCamera() {
  if (camera) {
    camera.running = false;
    camera.stream.getTracks().forEach((t) => t.stop());
    camera = null;
    $("video").hidden = true;
    $("camera").textContent = "Start webcam";
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "environment" } });
    camera = { stream, running: true };
    const video = $("video");
    video.srcObject = stream; video.hidden = false; $("preview").hidden = true;
    await video.play();
    $("camera").textContent = "Stop webcam";
    const loop = async () => {
      if (!camera || !camera.running) return;
      if (video.videoWidth) await classify(video, video.videoWidth, video.videoHeight, "webcam");
      document.body.dataset.frames = String(Number(document.body.dataset.frames || 0) + 1);
      requestAnimationFrame(loop);
    };
    loop();
  } catch (e) {
    showError(`no webcam: ${e.message || e} (browsers allow it on https:// pages and on this machine only)`);
  }
}

// images/s at a batch size, for `cnnarena export --format web`'s check and for anyone curious
window.cnnarenaSpeed = async (batch, seconds) => {
  const [h, w] = card.input.size;
  const data = new Float32Array(batch * card.input.channels * h * w).map(() => Math.random());
  await run(data, batch); // warm-up
  let images = 0;
  const t0 = performance.now();
  while (performance.now() - t0 < 1000 * seconds) { await run(data, batch); images += batch; }
  return images / ((performance.now() - t0) / 1000);
};

$("files").addEventListener("change", (e) => classifyFiles([...e.target.files]));
$("camera").addEventListener("click", toggleCamera);
start();
