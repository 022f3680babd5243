// medclf label: the page. The server holds the labels and writes the file; this page sends
// one change at a time (in the order the keys were pressed) and shows what the server answers.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  classes: [], multi: false, images: [], labels: {}, suggestions: {}, assist: null,
  picked: 0, pending: new Set(), current: null, unlabelledOnly: false, z: null, depth: 1,
};
let queue = Promise.resolve();

const url = (path) => path.split("/").map(encodeURIComponent).join("/");
const colour = (name) => (S.classes.find((c) => c.name === name) || {}).colour || "#888";

async function call(method, path, body) {
  const response = await fetch(path, {
    method, headers: body ? { "Content-Type": "application/json" } : {},
    body: body ? JSON.stringify(body) : undefined, credentials: "same-origin",
  });
  const data = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(data.error || `${response.status} ${response.statusText}`);
  return data;
}

function say(text) { $("message").textContent = text || ""; }

// Changes run one after another, so that quick keys reach the server in the order pressed.
function act(fn) {
  queue = queue.then(fn).catch((error) => say(error.message));
  return queue;
}

function visible() {
  if (!S.unlabelledOnly) return S.images;
  return S.images.filter((image) => !S.labels[image] || image === S.current);
}

function show(image) {
  if (!image) return;
  S.current = image;
  S.pending = new Set(S.labels[image] || []);
  S.z = null;
  history.replaceState(null, "", "#" + encodeURIComponent(image));
  drawImage();
  draw();
}

function move(step) {
  const list = visible();
  const at = list.indexOf(S.current);
  const next = list[Math.min(Math.max(at + step, 0), list.length - 1)];
  if (next && next !== S.current) show(next);
}

function nextUnlabelled() {
  const at = S.images.indexOf(S.current);
  for (let k = 1; k <= S.images.length; k++) {
    const image = S.images[(at + k) % S.images.length];
    if (!S.labels[image]) { show(image); return true; }
  }
  say("every image is labelled");
  return false;
}

function update(answer) {
  if (answer.image) {
    if (answer.labels === null) delete S.labels[answer.image];
    else S.labels[answer.image] = answer.labels;
  }
  S.progress = answer.progress;
  if (answer.image === S.current) S.pending = new Set(S.labels[S.current] || []);
  say("");
  draw();
}

function chosen() {
  return S.multi ? S.classes.map((c) => c.name).filter((n) => S.pending.has(n))
    : [S.classes[S.picked].name];
}

function assign(thenNext) {
  const image = S.current;
  const labels = chosen();
  return act(async () => {
    update(await call("POST", "api/label", { image, labels }));
    if (thenNext && S.current === image) move(1);
  });
}

function accept() {
  const image = S.current;
  if (!S.suggestions[image]) { say("no suggestion for this image yet"); return; }
  act(async () => {
    update(await call("POST", "api/accept", { image }));
    if (S.current === image) move(1);
  });
}

function undo() {
  act(async () => {
    const answer = await call("POST", "api/undo", {});
    if (!answer.image) { say("nothing to undo"); return; }
    update(answer);
    if (answer.image !== S.current) show(answer.image);
  });
}

function pick(k) {
  if (k >= S.classes.length) return;
  if (S.multi) {
    const name = S.classes[k].name;
    if (S.pending.has(name)) S.pending.delete(name); else S.pending.add(name);
  } else {
    S.picked = k;
  }
  draw();
}

async function drawImage() {
  const image = S.current;
  const info = await call("GET", "api/info/" + url(image)).catch((e) => ({ error: e.message }));
  if (image !== S.current) return;
  const tile = $("error-tile"), img = $("current");
  if (info.error) {
    tile.textContent = "Cannot show this image:\n" + info.error;
    tile.hidden = false; img.hidden = true; $("slice").hidden = true;
    return;
  }
  tile.hidden = true; img.hidden = false;
  S.depth = info.depth;
  if (S.z === null) S.z = Math.floor(info.depth / 2);
  $("slice").hidden = info.depth <= 1;
  $("slice-range").max = info.depth - 1;
  $("slice-range").value = S.z;
  $("slice-text").textContent = `slice ${S.z + 1} / ${info.depth}`;
  img.alt = image;
  img.src = "image/" + url(image) + (info.depth > 1 ? `?z=${S.z}` : "");
}

function setSlice(z) {
  S.z = Math.min(Math.max(z, 0), S.depth - 1);
  drawImage();
}

function border(element, labels) {
  element.style.borderColor = "";
  element.style.boxShadow = "";
  element.classList.toggle("unlabelled", !labels);
  element.classList.toggle("labelled", !!labels);
  if (!labels) return;
  if (labels.length === 0) { element.style.borderColor = "#444"; return; }
  element.style.borderColor = colour(labels[0]);
  // multi-label: every further class as one more ring around the image
  element.style.boxShadow = labels.slice(1)
    .map((name, i) => `0 0 0 ${6 * (i + 1)}px ${colour(name)}`).join(", ");
}

function draw() {
  const image = S.current;
  const labels = S.labels[image];
  border($("frame"), labels);
  $("name").textContent = image;
  const list = visible();
  $("position").textContent = `${list.indexOf(image) + 1} / ${list.length}`;
  const p = S.progress || { labelled: 0, total: 0, counts: {} };
  $("progress-text").textContent = `${p.labelled} / ${p.total} labelled`;
  $("bar").style.width = `${p.total ? (100 * p.labelled) / p.total : 0}%`;
  $("progress").setAttribute("aria-valuenow", p.labelled);
  $("progress").setAttribute("aria-valuemax", p.total);
  const buttons = $("classes").children;
  S.classes.forEach((c, k) => {
    const on = S.multi ? S.pending.has(c.name) : k === S.picked;
    buttons[k].classList.toggle("picked", on);
    buttons[k].setAttribute("aria-pressed", on);
    buttons[k].querySelector(".count").textContent = p.counts[c.name] ?? 0;
  });
  const s = S.suggestions[image];
  const box = $("suggestion");
  box.textContent = "";
  if (s) {
    box.append("model: ");
    s.labels.forEach((name, i) => {
      const tag = document.createElement("span");
      tag.className = "sugg";
      tag.style.background = colour(name);
      const prob = Array.isArray(s.probability) ? s.probability[i] : s.probability;
      tag.textContent = `${name} ${prob.toFixed(2)}`;
      box.append(tag, " ");
    });
    if (!s.labels.length) box.append("no class ");
    box.append(`(margin ${s.margin.toFixed(2)}; Enter accepts)`);
    if (s.set) {
      const set = document.createElement("span");
      set.className = s.abstain ? "set abstain" : "set";
      set.textContent = ` set {${s.set.join(", ")}}` + (s.abstain ? " — unsure: review" : "");
      box.append(set);
    }
  }
  drawStrip(list);
}

function drawStrip(list) {
  const strip = $("strip");
  const at = list.indexOf(S.current);
  const around = list.slice(Math.max(at - 5, 0), at + 6);
  strip.textContent = "";
  for (const image of around) {
    const tile = document.createElement("div");
    tile.className = "thumb" + (image === S.current ? " current" : "");
    tile.title = image;
    border(tile, S.labels[image]);
    const img = document.createElement("img");
    img.alt = image;
    img.src = "image/" + url(image) + "?size=96";
    img.onerror = () => { tile.classList.add("broken"); tile.textContent = "unreadable"; };
    tile.append(img);
    tile.onclick = () => show(image);
    strip.append(tile);
  }
}

async function refresh(first) {
  const state = await call("GET", "api/state");
  S.classes = state.classes;
  S.multi = state.multi_label;
  // the order changes only when new suggestions arrive (labelling must not reshuffle it)
  const known = Object.keys(S.suggestions).length;
  if (first || Object.keys(state.suggestions).length !== known) S.images = state.images;
  S.labels = state.labels;
  S.suggestions = state.suggestions;
  S.progress = state.progress;
  S.assist = state.assist;
  if (first) {
    $("folder").textContent = state.folder;
    $("command").textContent = state.command;
    $("multi-hint").hidden = !S.multi;
    $("accept").hidden = !state.assist;
    const box = $("classes");
    state.classes.forEach((c, k) => {
      const button = document.createElement("button");
      button.innerHTML = '<span class="swatch"></span><span class="name"></span><span class="count"></span>';
      button.querySelector(".swatch").style.background = c.colour;
      button.querySelector(".name").textContent = (c.key ? `${c.key}  ` : "") + c.name;
      button.dataset.cls = c.name;
      button.onclick = () => pick(k);
      box.append(button);
    });
    const wanted = decodeURIComponent(location.hash.slice(1));
    const start = S.images.includes(wanted) ? wanted
      : S.images.find((image) => !S.labels[image]) || S.images[0];
    show(start);
  } else if (S.current) {
    S.pending = new Set(S.labels[S.current] || []);
    draw();
  }
  const a = state.assist;
  if (a) {
    $("assist").textContent = a.status === "failed" ? `suggestions failed: ${a.error}`
      : `model ${a.status}: ${a.done} / ${a.total} predicted` + (state.order === "uncertainty" ? " · least sure first" : "");
    if (a.status === "running" || a.status === "waiting") setTimeout(() => act(() => refresh(false)), 1000);
  }
}

document.addEventListener("keydown", (event) => {
  if (event.target.tagName === "INPUT" && event.target.type !== "checkbox" && event.key.length === 1) return;
  const key = event.key;
  let handled = true;
  if (/^[1-9]$/.test(key) && !event.ctrlKey && !event.altKey && !event.metaKey) pick(Number(key) - 1);
  else if (key === "F1") assign(false);
  else if (key === "F2") assign(true);
  else if (key === "Enter") accept();
  else if (key === "z" || key === "Z") undo();
  else if (key === "u" || key === "U") act(async () => nextUnlabelled());
  else if (key === "ArrowRight" || key === "ArrowDown") act(async () => move(1));
  else if (key === "ArrowLeft" || key === "ArrowUp") act(async () => move(-1));
  else handled = false;
  if (handled) event.preventDefault();
});

$("assign").onclick = () => assign(false);
$("assign-next").onclick = () => assign(true);
$("accept").onclick = accept;
$("undo").onclick = undo;
$("next-unlabelled").onclick = () => act(async () => nextUnlabelled());
$("unlabelled-only").onchange = (event) => { S.unlabelledOnly = event.target.checked; draw(); };
$("slice-range").oninput = (event) => setSlice(Number(event.target.value));
$("frame").addEventListener("wheel", (event) => {
  if (S.depth <= 1) return;
  event.preventDefault();
  setSlice(S.z + (event.deltaY > 0 ? 1 : -1));
}, { passive: false });
window.addEventListener("focus", () => act(() => refresh(false)));
act(() => refresh(true));
