// The doctor's review page: one decision per image id (keep / exclude / relabel:CLASS), saved as curation.yaml.
// Every text from the data goes through textContent: ids and class names are never markup.
"use strict";

const decisions = new Map();  // id -> "" | "keep" | "exclude" | "relabel:CLASS"
const selects = new Map();    // id -> the <select>s showing it
let page = null;

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === "text") node.textContent = v; else if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const child of children) node.appendChild(child);
  return node;
}

function option(value, text) {
  const o = el("option", { text });
  o.value = value;
  return o;
}

function decide(id, value) {
  decisions.set(id, value);
  for (const s of selects.get(id) || []) {
    s.value = value;
    s.closest("figure").className = value.split(":")[0];
  }
  counts();
}

function counts() {
  let excluded = 0, relabelled = 0, kept = 0;
  for (const v of decisions.values()) {
    if (v === "exclude") excluded++; else if (v.startsWith("relabel:")) relabelled++; else if (v === "keep") kept++;
  }
  document.getElementById("counts").textContent =
    `${excluded} to exclude, ${relabelled} to relabel, ${kept} kept`;
}

function picture(image, card) {
  const select = el("select", { "aria-label": `decision for ${image.id}`, "data-id": image.id });
  select.appendChild(option("", "— undecided"));
  select.appendChild(option("keep", "keep"));
  select.appendChild(option("exclude", "exclude"));
  const order = card.likely ? [card.likely, ...page.classes.filter((c) => c !== card.likely)] : page.classes;
  for (const c of order) {
    if (c === image.label) continue;
    select.appendChild(option(`relabel:${c}`, `relabel to ${c}` + (c === card.likely ? " (likely)" : "")));
  }
  select.addEventListener("change", () => decide(image.id, select.value));
  if (!selects.has(image.id)) selects.set(image.id, []);
  selects.get(image.id).push(select);
  const img = el("img", { src: `/api/image/${image.index}`, alt: image.id, loading: "lazy" });
  return el("figure", {}, [img, el("figcaption", { text: `${image.id} · ${image.label}` }), select]);
}

function render() {
  const cards = document.getElementById("cards");
  for (const card of page.cards) {
    const node = el("section", { class: `finding ${card.kind}` }, [
      el("h3", { text: card.title }), el("div", { class: "detail", text: card.detail }),
      el("div", { class: "pics" }, card.images.map((image) => picture(image, card))),
    ]);
    cards.appendChild(node);
  }
  const saved = page.saved;
  for (const id of saved.exclude) decide(id, "exclude");
  for (const id of saved.keep) decide(id, "keep");
  for (const [id, cls] of Object.entries(saved.relabel)) decide(id, `relabel:${cls}`);
  if (saved.note) document.getElementById("status").textContent = saved.note;
  counts();
}

async function save() {
  const body = { exclude: [], keep: [], relabel: {} };
  for (const [id, v] of decisions) {
    if (v === "exclude") body.exclude.push(id);
    else if (v === "keep") body.keep.push(id);
    else if (v.startsWith("relabel:")) body.relabel[id] = v.slice("relabel:".length);
  }
  const status = document.getElementById("status");
  try {
    const response = await fetch("/api/curation", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body),
    });
    const answer = await response.json();
    if (!response.ok) throw new Error(answer.detail || response.statusText);
    status.className = "";
    status.textContent = `saved ${answer.path}: ${answer.excluded} excluded, ${answer.relabelled} relabelled`;
  } catch (e) {
    status.className = "error";
    status.textContent = `not saved: ${e.message}`;
  }
}

for (const box of document.querySelectorAll(".filters input")) {
  box.addEventListener("change", () => {
    for (const card of document.querySelectorAll(`.finding.${box.dataset.kind}`)) card.hidden = !box.checked;
  });
}
document.getElementById("save").addEventListener("click", save);

fetch("/api/findings").then((r) => r.json()).then((data) => {
  page = data;
  document.getElementById("dataset").textContent =
    `${data.dataset}: ${data.cards.length} findings · saves to ${data.curation}`;
  render();
}).catch((e) => {
  document.getElementById("dataset").textContent = `could not load the findings: ${e.message}`;
});
