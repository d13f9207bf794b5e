// GET /draw's script (served at /draw.js): draw a digit, ask the model, and show every step of its forward pass.
// The page runs TinyCNN itself, from the served weights (GET /model/weights), so that it can draw the maps the API
// does not send (before ReLU, before pooling) and run the model again on weights the learner edits ("What if").
"use strict";
const PAUSE_MS = 300;  // the model runs once per pause in the drawing, not on every pointer move
const SLOW_MS = 3000;  // an answer slower than this: the server may be waking up
const STARTING = "The server is starting; on a free instance this can take a minute. Try again then.";
const UNREACHABLE = "Cannot reach the server. If it was asleep, it is starting; on a free instance this can take a " +
  "minute. Try again then.";
const WAITING = "Still waiting: the server may be starting; on a free instance this can take a minute.";
const EMPTY_ANSWER = "Draw a digit: the model's answer and how sure it is appear here.";
const TEMPERATURES = [0.25, 0.5, 1, 2, 3, 5, 10, 20, 50];
const $ = (id) => document.getElementById(id);
const pad = $("pad");
const ink = pad.getContext("2d");
const bars = $("bars");
const status = $("status");

// One row per digit: label, bar, percentage.
for (let digit = 0; digit < 10; digit++) {
  bars.insertAdjacentHTML("beforeend",
    `<li data-digit="${digit}"><span>${digit}</span><span class="track"><span class="fill"></span></span>` +
    `<span class="value"></span></li>`);
}

// ---- Drawing -------------------------------------------------------------------------------------------------

let drawing = false;
let drawn = false;
let pauseTimer = null;

function clearPad() {
  // A white sheet with dark ink, like paper; the server turns it into MNIST's white on black.
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  ink.strokeStyle = "#000";
  ink.lineWidth = 20;
  ink.lineCap = "round";
  ink.lineJoin = "round";
  drawn = false;
}

function toPad(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

// Every change to the ink restarts the wait: the model runs once the pen has paused for PAUSE_MS.
function inkChanged() {
  clearTimeout(pauseTimer);
  pauseTimer = setTimeout(predictDrawing, PAUSE_MS);
}

// Pointer events cover mouse, pen and touch alike.
pad.addEventListener("pointerdown", (event) => {
  drawing = true;
  drawn = true;
  pad.setPointerCapture(event.pointerId);
  const [x, y] = toPad(event);
  ink.beginPath();
  ink.moveTo(x, y);
  ink.lineTo(x, y);  // a tap leaves a dot
  ink.stroke();
  inkChanged();
});
pad.addEventListener("pointermove", (event) => {
  if (!drawing) return;
  const [x, y] = toPad(event);
  ink.lineTo(x, y);
  ink.stroke();
  inkChanged();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.addEventListener(type, () => {
    if (drawing) inkChanged();
    drawing = false;
  });
}

// ---- Asking the server ---------------------------------------------------------------------------------------

let latest = 0;  // each request's ticket: only the newest one's answer is shown
let modelRequest = null;

// GET /model (the training record's filter counts) and GET /model/weights (every weight, for the page's own
// forward pass), asked once: at load, which also wakes a sleeping server. A part that failed is asked again later.
function loadModel() {
  modelRequest ??= Promise.all([getJson("model"), getJson("model/weights")]).then(([card, all]) => {
    if (card === null || all === null) modelRequest = null;
    return { card, served: all === null ? null : unpack(all) };
  });
  return modelRequest;
}

function getJson(url) {
  return fetch(url).then((response) => (response.ok ? response.json() : null)).catch(() => null);
}

// /model/weights: the state_dict's tensors as float32 bytes (little-endian) in base64, each with its shape and
// offset. Float32Array reads them exactly; every number is then a plain double, as JavaScript computes.
function unpack(all) {
  const bytes = Uint8Array.from(atob(all.data), (char) => char.charCodeAt(0));
  const view = new DataView(bytes.buffer);
  const values = Float64Array.from({ length: bytes.length / 4 }, (_, i) => view.getFloat32(4 * i, true));
  const tensor = (name) => {
    const { shape, offset } = all.tensors[name];
    return values.slice(offset, offset + shape.reduce((a, b) => a * b, 1));
  };
  const weights = {};
  for (const layer of ["conv1", "conv2", "fc1", "fc2"]) {
    weights[layer] = { w: tensor(`${layer}.weight`), b: tensor(`${layer}.bias`) };
  }
  return weights;
}

async function predictDrawing() {
  clearTimeout(pauseTimer);
  if (!drawn) {
    showError("Draw a digit first.");
    return;
  }
  await ask(new Promise((resolve) => pad.toBlob(resolve, "image/png")), "drawing.png", "your drawing");
}

async function predictFile(input) {
  const [file] = input.files;
  input.value = "";  // the same file can be chosen again
  if (!file) return;
  clearTimeout(pauseTimer);
  clearPad();  // the answer is now the picture's, not the pad's
  await ask(file, file.name, file.name);
}

// One prediction, with the explanation and the 28x28 input; a newer request (or Clear) makes this one's answer
// stale. `picture` may still be on its way (the pad's PNG): the ticket is taken first, so Clear wins meanwhile.
async function ask(picture, filename, source) {
  const ticket = ++latest;
  $("result").setAttribute("aria-busy", "true");
  status.className = "";
  status.textContent = "";
  const slow = setTimeout(() => {
    if (ticket === latest) status.textContent = WAITING;
  }, SLOW_MS);
  try {
    const answer = await post(await picture, filename);
    const model = await loadModel();
    if (ticket !== latest) return;
    status.textContent = "";
    showResult(answer, model, source);
  } catch (error) {
    if (ticket === latest) {
      showNothing();
      showError(error.message);
    }
  } finally {
    clearTimeout(slow);
    if (ticket === latest) $("result").setAttribute("aria-busy", "false");
  }
}

async function post(picture, filename) {
  const form = new FormData();
  form.append("file", picture, filename);
  let response;
  try {
    // A relative URL: the page works wherever the API runs, locally or on Render.
    response = await fetch("predict/image?explain=true&return_input=true", { method: "POST", body: form });
  } catch {
    throw new Error(UNREACHABLE);  // fetch only throws when no answer came at all
  }
  const answer = await response.json().catch(() => null);  // a proxy's error page is not JSON
  if (response.ok && answer) return answer;
  throw new Error(problem(response.status, answer));
}

// The API says what was wrong in `message`; a host's proxy answers 502-504 while the server wakes up.
function problem(code, answer) {
  if (answer?.message) return `Could not predict: ${answer.message}`;
  if ([502, 503, 504].includes(code)) return STARTING;
  return `Could not predict: the server answered ${code}.`;
}

function showError(message) {
  status.className = "error";
  status.textContent = message;
}

// ---- The page's own TinyCNN ----------------------------------------------------------------------------------
// The notes' forward, on flat arrays: conv1 -> ReLU -> pool -> conv2 -> ReLU -> pool -> flatten -> fc1 -> ReLU ->
// fc2. Every step is kept, so the page can draw it. Same numbers as torch's float32, to about 1e-6.

// A 3x3 convolution with padding 1: `channels` maps of side x side in, one map per filter out (sums plus bias).
function conv(input, channels, side, { w, b }) {
  const filters = b.length;
  const area = side * side;
  const out = new Float64Array(filters * area);
  for (let f = 0; f < filters; f++) {
    for (let y = 0; y < side; y++) {
      for (let x = 0; x < side; x++) {
        let sum = b[f];
        for (let c = 0; c < channels; c++) {
          const kernel = (f * channels + c) * 9;
          for (let dy = -1; dy <= 1; dy++) {
            const yy = y + dy;
            if (yy < 0 || yy >= side) continue;  // padding 1: zeros outside the map
            for (let dx = -1; dx <= 1; dx++) {
              const xx = x + dx;
              if (xx < 0 || xx >= side) continue;
              sum += input[c * area + yy * side + xx] * w[kernel + (dy + 1) * 3 + dx + 1];
            }
          }
        }
        out[f * area + y * side + x] = sum;
      }
    }
  }
  return out;
}

const relu = (values) => values.map((value) => Math.max(0, value));

// 2x2 max-pooling, stride 2: each map's side halves.
function pool(input, channels, side) {
  const half = side / 2;
  const out = new Float64Array(channels * half * half);
  for (let c = 0; c < channels; c++) {
    for (let y = 0; y < half; y++) {
      for (let x = 0; x < half; x++) {
        const at = (dy, dx) => input[c * side * side + (2 * y + dy) * side + 2 * x + dx];
        out[c * half * half + y * half + x] = Math.max(at(0, 0), at(0, 1), at(1, 0), at(1, 1));
      }
    }
  }
  return out;
}

function linear(input, { w, b }) {
  return Float64Array.from(b, (bias, o) => {
    let sum = bias;
    for (let i = 0; i < input.length; i++) sum += input[i] * w[o * input.length + i];
    return sum;
  });
}

function softmax(logits, temperature = 1) {
  const scaled = Array.from(logits, (logit) => logit / temperature);
  const top = Math.max(...scaled);  // subtracted first so that exp cannot overflow; the ratios stay the same
  const powers = scaled.map((value) => Math.exp(value - top));
  const total = powers.reduce((sum, power) => sum + power, 0);
  return powers.map((power) => power / total);
}

function forward(pixels, weights) {
  const input = Float64Array.from(pixels.flat());
  const conv1 = conv(input, 1, 28, weights.conv1);  // [8, 28, 28], before ReLU
  const relu1 = relu(conv1);
  const pool1 = pool(relu1, 8, 28);  // [8, 14, 14]
  const conv2 = conv(pool1, 8, 14, weights.conv2);  // [16, 14, 14], before ReLU
  const relu2 = relu(conv2);
  const pool2 = pool(relu2, 16, 14);  // [16, 7, 7]; flattened, the 784 values fc1 reads
  const fc1 = relu(linear(pool2, weights.fc1));  // [64]
  const logits = linear(fc1, weights.fc2);  // [10]
  return { input, conv1, relu1, pool1, conv2, relu2, pool2, fc1, logits, probabilities: softmax(logits) };
}

// Map `index` of a layer's flat values as rows of numbers.
function mapOf(values, index, side) {
  return Array.from({ length: side }, (_, row) =>
    Array.from(values.subarray(index * side * side + row * side, index * side * side + (row + 1) * side)));
}

// ---- The weights on show: the served ones, or the learner's edit of them -------------------------------------

let served = null;  // the served weights, as GET /model/weights gave them
let current = null;  // what the page runs: a copy of `served`, edited by the learner
let card = null;  // GET /model
let shown = null;  // { answer, net, source }: the answer on show and the page's forward pass of its input
let opened = null;  // { layer, index, row, col, channel }: the filter open in the detail panel
let choice = null;  // { layer, index }: the map hovered or focused in the overview, else the opened one
let blank = null;  // the forward pass of empty paper (all 0), for the note on conv2's band

function copyWeights(weights) {
  return Object.fromEntries(Object.entries(weights).map(([layer, { w, b }]) => [layer, { w: w.slice(), b: b.slice() }]));
}

// What differs from the served weights, in words: e.g. ["conv1 filter 2's kernel", "conv2 filter 5 (off)"].
function edits() {
  if (served === null) return [];
  const changes = [];
  for (const layer of ["conv1", "conv2"]) {
    const perFilter = served[layer].w.length / served[layer].b.length;
    for (let f = 0; f < served[layer].b.length; f++) {
      const slice = (w) => w.subarray(f * perFilter, (f + 1) * perFilter);
      const kernelChanged = slice(current[layer].w).some((value, i) => value !== slice(served[layer].w)[i]);
      const biasChanged = current[layer].b[f] !== served[layer].b[f];
      if (!kernelChanged && !biasChanged) continue;
      const off = current[layer].b[f] === 0 && slice(current[layer].w).every((value) => value === 0);
      changes.push(off ? `${layer} filter ${f} switched off`
        : `${layer} filter ${f}'s ${[kernelChanged && "kernel", biasChanged && "bias"].filter(Boolean).join(" and ")}`);
    }
  }
  return changes;
}

function recompute() {
  if (shown === null || current === null) return;
  shown.net = forward(shown.answer.input, current);
  showInside();
}

function resetWeights() {
  current = copyWeights(served);
  recompute();
}

// ---- The answer ----------------------------------------------------------------------------------------------

function showResult(answer, model, source) {
  card = model.card;
  if (model.served !== null && served === null) {
    served = model.served;
    current = copyWeights(served);
    blank = forward(Array.from({ length: 28 }, () => new Array(28).fill(0)), served);
  }
  shown = { answer, source, net: current === null ? null : forward(answer.input, current) };
  $("result").classList.remove("empty");
  $("digit").textContent = answer.predicted_digit;
  const sure = `${(answer.confidence * 100).toFixed(1)}% sure`;
  $("confidence").textContent = sure;
  $("announce").textContent = `${answer.predicted_digit}, ${sure}`;
  answer.probabilities.forEach((probability, digit) => {
    const row = bars.children[digit];
    const percent = (probability * 100).toFixed(1);
    row.querySelector(".fill").style.width = `${percent}%`;
    row.querySelector(".value").textContent = `${percent}%`;
    row.classList.toggle("best", digit === answer.predicted_digit);
  });
  // The 28x28 picture the model classified, to see what preprocessing did.
  paintPixels($("seen"), answer.input, greyLevel);
  $("seen-caption").textContent = `what the model saw, from ${source}`;
  showInside();
}

function showNothing() {
  shown = null;
  $("result").classList.add("empty");
  $("digit").textContent = "";
  $("confidence").textContent = EMPTY_ANSWER;
  $("announce").textContent = "";
  $("seen").getContext("2d").clearRect(0, 0, 28, 28);
  $("seen-caption").textContent = "the 28\u00d728 picture the model sees appears here";
  $("layers").hidden = true;
  $("marks-note").hidden = true;
  $("empty").hidden = false;
  $("whatif").hidden = true;
  $("source").textContent = "";
  closeDetail(false);
  closeFc(false);
  for (const row of bars.children) {
    row.querySelector(".fill").style.width = "0";
    row.querySelector(".value").textContent = "";
    row.classList.remove("best");
  }
}

// ---- The overview --------------------------------------------------------------------------------------------

// The values each row of the overview shows: from the page's forward pass when it has the weights; else (GET
// /model/weights did not answer) the API's explanation, which has the pooled maps, fc1 and the logits only.
function values() {
  const { answer, net } = shown;
  if (net !== null) return net;
  const flat = (maps) => Float64Array.from(maps.flat(2));
  const { feature_maps: maps, fc1, logits } = answer.explanation;
  return { pool1: flat(maps.conv1), pool2: flat(maps.conv2), fc1: Float64Array.from(fc1),
           logits: Float64Array.from(logits), probabilities: softmax(logits) };
}

const LAYERS = {
  conv1: { filters: 8, side: 28, relu: "conv1-relu", pool: "conv1-pool", legends: ["legend-conv1", "legend-pool1"] },
  conv2: { filters: 16, side: 14, relu: "conv2-relu", pool: "conv2-pool", legends: ["legend-conv2", "legend-pool2"] },
};

function perMap() {
  return document.querySelector("input[name=scaling]:checked").value === "map";
}

// The brightest value of a layer (after ReLU; pooling keeps it), the scale its black-to-white runs on.
function layerTop(layer) {
  const v = values();
  return Math.max(...(v[layer === "conv1" ? "pool1" : "pool2"]), 1e-6);
}

function showInside() {
  if (shown === null) return;
  const { answer, net } = shown;
  const v = values();
  paintPixels($("seen-large"), answer.input, greyLevel);
  paintPixels($("saliency"), answer.explanation.saliency, inferno);
  const firing = card?.training?.filters_firing ?? null;  // older records have no counts: then no word on dead
  const notes = [];
  for (const [layer, { filters, side, relu: reluRow, pool: poolRow, legends }] of Object.entries(LAYERS)) {
    const top = layerTop(layer);
    const rows = [[reluRow, "relu", side, net?.[layer === "conv1" ? "relu1" : "relu2"]],
                  [poolRow, "pool", side / 2, v[layer === "conv1" ? "pool1" : "pool2"]]];
    for (const [id, stage, mapSide, layerValues] of rows) {
      $(id).replaceChildren(...Array.from({ length: filters }, (_, index) =>
        mapTile(layer, stage, index, layerValues ? mapOf(layerValues, index, mapSide) : null, top, firing)));
    }
    for (const id of legends) $(id).innerHTML = greyLegend(top);
    const summary = darkSummary(layer, mapsOfLayer(layer), firing);
    if (summary) notes.push(summary);
  }
  paintPixels($("flat-mini"), [Array.from(v.pool2)], scaledGrey(layerTop("conv2")));
  const fc1Top = Math.max(...v.fc1, 1e-6);
  paintPixels($("fc1-mini"), [Array.from(v.fc1)], scaledGrey(fc1Top));
  $("legend-fc1").innerHTML = greyLegend(fc1Top);
  $("fc1-ticks").innerHTML = [0, 8, 16, 24, 32, 40, 48, 56, 63]
    .map((unit) => `<span style="left:${(unit + 0.5) / 64 * 100}%">${unit}</span>`).join("");
  showDigits(v);
  const changed = edits();
  $("overview").classList.toggle("edited", changed.length > 0);
  $("whatif").hidden = changed.length === 0;
  $("whatif-text").textContent = changed.length === 0 ? "" : `What if: you changed ${changed.join(", ")}. ` +
    "The maps, fc1, logits and probabilities here are the page's own, worked out from your edited weights, not " +
    "the served model's. The answer on the left is still the server's.";
  $("source").textContent = net === null
    ? "These are the API's values (GET /model/weights did not answer, so the page cannot run the model itself)."
    : changed.length === 0
      ? "Worked out in this page from the served weights (GET /model/weights): the same as the API's, to 0.0001."
      : "";
  $("marks-note").hidden = notes.length === 0;
  $("marks-note").textContent = notes.join(" ");
  $("empty").hidden = true;
  $("layers").hidden = false;
  highlight();
  if (opened) showDetail();  // the open map follows the drawing
  if (!$("fc-panel").hidden) showFc();
}

function mapsOfLayer(layer) {
  const v = values();
  const { filters, side } = LAYERS[layer];
  return Array.from({ length: filters }, (_, index) => mapOf(v[layer === "conv1" ? "pool1" : "pool2"], index, side / 2));
}

// The ten logits and their softmax, one cell per digit.
function showDigits(v) {
  const best = v.logits.indexOf(Math.max(...v.logits));
  const largest = Math.max(...Array.from(v.logits, Math.abs), 1e-6);
  $("logits-row").replaceChildren(...Array.from(v.logits, (logit, digit) => {
    const cell = digitCell(digit, best, logit, signed(logit, 1));
    const background = diverging(logit / largest).map(Math.round);
    cell.style.background = `rgb(${background.join(" ")})`;
    cell.style.color = textOn(background);
    return cell;
  }));
  $("softmax-row").replaceChildren(...v.probabilities.map((probability, digit) => {
    const cell = digitCell(digit, best, probability, probability >= 0.001 ? `${(probability * 100).toPrecision(3)}%`
      : `${(probability / 10 ** Math.floor(Math.log10(probability))).toFixed(0)}e\u2212` +
        `${-Math.floor(Math.log10(probability))}`);
    cell.append(Object.assign(document.createElement("span"), { className: "bar" }));
    cell.lastChild.style.width = `${Math.max(probability * 100, 0)}%`;
    return cell;
  }));
}

function digitCell(digit, best, value, text) {
  const cell = Object.assign(document.createElement("div"), { className: `cell${digit === best ? " best" : ""}` });
  cell.dataset.digit = digit;
  cell.dataset.value = value;
  cell.innerHTML = `<b>${digit}</b>${text}`;
  return cell;
}

// A percentage that never hides a small chance as 0.0%: below 0.1% it is written in powers of ten.
function percent(probability) {
  if (probability >= 0.001) return `${(probability * 100).toFixed(1)}%`;
  return scientific(probability);
}

function scientific(value) {
  if (value === 0) return "0";
  const power = Math.floor(Math.log10(value));
  const mantissa = value / 10 ** power;
  const exponent = String(power).replace("-", "\u2212");
  return `${mantissa.toFixed(1)}\u00b710<sup>${exponent}</sup>`;
}

function greyLegend(top) {
  if (perMap()) return `<span class="ramp grey"></span> black 0, white: each map's own largest`;
  return `<span class="ramp grey"></span> black 0, white ${top.toFixed(2)}`;
}

// One feature map as a button: the map in grey on its layer's scale (or its own), labelled with its filter number.
function mapTile(layer, stage, index, map, top, firing) {
  const { zero, dead } = darkness(layer, index, mapsOfLayer(layer)[index], firing);
  const button = Object.assign(document.createElement("button"), { type: "button" });
  button.className = `map ${layer === "conv1" ? "wide" : "narrow"}`;
  button.classList.toggle("dead", dead);
  button.dataset.layer = layer;
  button.dataset.stage = stage;
  button.dataset.index = index;
  button.setAttribute("aria-controls", "detail");
  button.setAttribute("aria-expanded", String(opened?.layer === layer && opened?.index === index));
  const side = map?.length ?? LAYERS[layer].side / (stage === "pool" ? 2 : 1);
  const canvas = Object.assign(document.createElement("canvas"), { width: side, height: side });
  if (map !== null) {
    paintPixels(canvas, map, scaledGrey(perMap() ? Math.max(...map.flat(), 1e-6) : top));
    if (stage === "pool") button.dataset.values = JSON.stringify(map);
  }
  const mini = Object.assign(document.createElement("canvas"), { className: "kernel-mini", width: 3, height: 3 });
  const label = document.createElement("span");
  label.textContent = index;
  const state = dead ? "dead" : zero ? "zero" : "";
  if (state) label.append(Object.assign(document.createElement("span"), { className: "mark", textContent: ` ${state}` }));
  const what = stage === "relu" ? `after ReLU, [${side}, ${side}]` : `after pooling, [${side}, ${side}]`;
  button.setAttribute("aria-label", `${layer} filter ${index}, ${what}${state ? `, ${state}` : ""}`);
  button.append(canvas, mini, label);
  button.addEventListener("click", () => openDetail(layer, index));
  // A mouse over a map, or the keyboard's focus on it, lights what feeds it; a tap opens it (and lights it too).
  const mouse = (handler) => (event) => event.pointerType === "mouse" && handler();
  button.addEventListener("pointerenter", mouse(() => choose({ layer, index })));
  button.addEventListener("pointerleave", mouse(() => choose(null)));
  button.addEventListener("focus", () => choose({ layer, index }));
  button.addEventListener("blur", () => choose(null));
  return button;
}

// Is a filter's map all zero for this drawing, and did training's count find it never firing on the test set?
function darkness(layer, index, map, firing) {
  return { zero: Math.max(...map.flat()) === 0, dead: firing !== null && firing[layer][index] === 0 };
}

function darkSummary(layer, maps, firing) {
  const lines = [];
  const dark = maps.map((map, index) => darkness(layer, index, map, firing));
  const numbers = (which) => dark.flatMap((filter, index) => (which(filter) ? [index] : []));
  const dead = numbers((filter) => filter.dead);
  const zero = numbers((filter) => filter.zero && !filter.dead);  // a dead filter is zero for every drawing
  if (dead.length) lines.push(`Dead (never fires on the test digits, says the training record): ${layer} ${dead.join(", ")}.`);
  if (zero.length) lines.push(`Zero for this drawing: ${layer} ${zero.join(", ")}.`);
  return lines.join(" ");
}

const ZERO_WHY = "Every sum in such a map was below zero, and ReLU makes negative values zero: its filter " +
  "found nothing of its pattern here.";

function deadWhy(layer, of) {
  const next = layer === "conv1" ? "conv2" : "fc1";
  return `In the training record's count, such a filter fires on none of the ${of.toLocaleString("en")} test ` +
    `digits: its sums are below zero whatever the digit, so ReLU always gives 0 and it passes nothing on to ` +
    `${next}. Where ReLU gives 0 it passes no gradient back either, so training cannot change it any more: a ` +
    `dead ReLU filter.`;
}

// ---- What feeds what: the chosen map, its inputs lit, and lines from them ------------------------------------

function choose(which) {
  choice = which;
  highlight();
}

function highlight() {
  const chosen = choice ?? (opened ? { layer: opened.layer, index: opened.index } : null);
  const tiles = document.querySelectorAll("#layers .map");
  $("overview").classList.toggle("choosing", chosen !== null);
  for (const tile of tiles) {
    const layer = tile.dataset.layer;
    const index = Number(tile.dataset.index);
    const isChosen = chosen !== null && layer === chosen.layer && index === chosen.index;
    // conv2's filter reads all 8 of conv1's pooled maps, each through a kernel of its own; conv1's reads the input.
    const feeds = chosen?.layer === "conv2" && layer === "conv1";
    tile.classList.toggle("chosen", isChosen);
    tile.classList.toggle("feeds", feeds);
    tile.classList.toggle("own-kernel", isChosen && layer === "conv1" && tile.dataset.stage === "relu");
    const mini = tile.querySelector(".kernel-mini");
    const kernel = feeds && tile.dataset.stage === "pool" ? kernelOf("conv2", chosen.index, index)
      : isChosen && layer === "conv1" ? kernelOf("conv1", index, 0) : null;
    if (kernel !== null) {
      const largest = Math.max(...kernel.map(Math.abs), 1e-6);
      paintPixels(mini, [kernel.slice(0, 3), kernel.slice(3, 6), kernel.slice(6)], (w) => diverging(w / largest));
      mini.dataset.values = JSON.stringify(kernel);
    } else {
      delete mini.dataset.values;
    }
  }
  drawWires(chosen);
}

// Filter `index`'s 3x3 kernel for input channel `channel`, from the weights the page runs.
function kernelOf(layer, index, channel) {
  if (current === null) return null;
  const channels = layer === "conv1" ? 1 : 8;
  const start = (index * channels + channel) * 9;
  return Array.from(current[layer].w.subarray(start, start + 9));
}

const WIDE = window.matchMedia("(min-width: 761px)");

// Lines from each input of the chosen map to it: red where its kernel adds (its weights sum above 0), blue where
// it takes away, thicker the larger. Drawn on a wide screen; on a phone the lit tiles say it.
function drawWires(chosen) {
  const svg = $("wires");
  svg.replaceChildren();
  if (chosen === null || !WIDE.matches || $("layers").hidden) return;
  const origin = $("layers").getBoundingClientRect();
  const tile = (layer, stage, index) => document.querySelector(
    `#layers .map[data-layer="${layer}"][data-stage="${stage}"][data-index="${index}"]`);
  const line = (from, to, colour, width) => {
    if (!from || !to) return;
    const a = from.getBoundingClientRect();
    const b = to.getBoundingClientRect();
    const path = document.createElementNS("http://www.w3.org/2000/svg", "line");
    for (const [name, value] of Object.entries({
      x1: a.left + a.width / 2 - origin.left, y1: a.bottom - origin.top,
      x2: b.left + b.width / 2 - origin.left, y2: b.top - origin.top,
    })) path.setAttribute(name, value);
    path.setAttribute("stroke", colour);
    path.setAttribute("stroke-width", width);
    path.setAttribute("stroke-opacity", "0.8");
    svg.append(path);
  };
  const { layer, index } = chosen;
  if (layer === "conv1") {
    line($("seen-large"), tile("conv1", "relu", index), "#b35c00", 2);
    line(tile("conv1", "relu", index), tile("conv1", "pool", index), "#1f55b8", 2);
    return;
  }
  const sums = Array.from({ length: 8 }, (_, channel) => kernelOf("conv2", index, channel)?.reduce((a, b) => a + b, 0) ?? 0);
  const largest = Math.max(...sums.map(Math.abs), 1e-6);
  sums.forEach((sum, channel) => line(tile("conv1", "pool", channel), tile("conv2", "relu", index),
    sum >= 0 ? "rgb(178 24 43)" : "rgb(33 102 172)", 0.75 + 3 * Math.abs(sum) / largest));
  line(tile("conv2", "relu", index), tile("conv2", "pool", index), "#1f55b8", 2);
}
WIDE.addEventListener("change", () => highlight());
window.addEventListener("resize", () => highlight());

// ---- One filter, in detail: each step as a picture, its kernel (editable), the arithmetic of one value -------

function openDetail(layer, index) {
  const map = mapsOfLayer(layer)[index];
  const [row, col] = brightestCell(map);  // open on the strongest value: an example before any tap
  opened = { layer, index, row, col, channel: 0 };
  for (const tile of document.querySelectorAll("#layers .map")) {
    tile.setAttribute("aria-expanded", String(tile.dataset.layer === layer && Number(tile.dataset.index) === index));
  }
  showDetail();
  highlight();
  $("detail").scrollIntoView({ block: "nearest" });
  $("big").focus({ preventScroll: true });
}

function openTile() {
  return document.querySelector(`#layers .map[data-layer="${opened.layer}"][data-stage="pool"]` +
    `[data-index="${opened.index}"]`);
}

function closeDetail(refocus = true) {
  if (opened === null) return;
  const button = openTile();
  $("detail").hidden = true;
  opened = null;
  for (const tile of document.querySelectorAll("#layers .map")) tile.setAttribute("aria-expanded", "false");
  highlight();
  if (refocus) button?.focus();  // back where the keyboard was before the map opened
}

function showDetail() {
  const { layer, index } = opened;
  const { side } = LAYERS[layer];
  const { net } = shown;
  const pooled = mapsOfLayer(layer)[index];
  $("detail").hidden = false;
  $("detail-title").textContent = `${layer}, filter ${index} (filters ${layer === "conv1" ? "0\u20137" : "0\u201315"}` +
    `, counted from 0 as in /model's arrays)`;
  const top = layerTop(layer);
  const scaleTop = perMap() ? Math.max(...pooled.flat(), 1e-6) : top;
  // The first two steps need the page's own forward pass: the API sends only the pooled maps.
  for (const [id, key, words] of [["step-conv", layer === "conv1" ? "conv1" : "conv2", "before ReLU"],
                                  ["step-relu", layer === "conv1" ? "relu1" : "relu2", "after ReLU"]]) {
    const canvas = $(id);
    canvas.width = canvas.height = side;
    $(`${id}-shape`).textContent = `[${side}, ${side}]`;
    if (net === null) {
      canvas.getContext("2d").clearRect(0, 0, side, side);
      canvas.setAttribute("aria-label", `${layer} filter ${index} ${words}: needs GET /model/weights`);
      continue;
    }
    const map = mapOf(net[key], index, side);
    canvas.dataset.values = JSON.stringify(map);
    canvas.setAttribute("aria-label", `${layer} filter ${index}'s map ${words}, ${side} by ${side}`);
    if (id === "step-conv") {
      const reach = Math.max(...map.flat().map(Math.abs), 1e-6);
      paintPixels(canvas, map, (value) => diverging(value / reach));
      $("legend-step-conv").innerHTML = `<span class="ramp signed"></span> blue \u2212${reach.toFixed(2)}, white 0, ` +
        `red +${reach.toFixed(2)}`;
    } else {
      paintPixels(canvas, map, scaledGrey(scaleTop));
      $("legend-step-relu").innerHTML = greyLegend(top);
    }
  }
  $("step-pool-shape").textContent = `[${side / 2}, ${side / 2}], ${side}x${side} \u2192 ${side / 2}x${side / 2}`;
  $("legend-step-pool").innerHTML = greyLegend(top);
  const chosen = pooled[opened.row][opened.col];  // in the label too: the arrow keys' answer, for a screen reader
  $("big").dataset.values = JSON.stringify(pooled);
  $("big").setAttribute("aria-label", `${layer} filter ${index}'s map after pooling, ${side / 2} by ${side / 2}; ` +
    `row ${opened.row}, column ${opened.col}: ${signed(chosen, 4)}`);
  drawBig(pooled, scaleTop);
  showKernel(layer, index);
  showEditor(layer, index);
  const firing = card?.training?.filters_firing ?? null;
  $("filter-note").textContent = filterNote(layer, index, pooled, firing);
  showEmptyPaper(layer, index);
  showCell();
}

function brightestCell(map) {
  let best = [0, 0];
  map.forEach((row, r) => row.forEach((value, c) => {
    if (value > map[best[0]][best[1]]) best = [r, c];
  }));
  return best;
}

// The pooled map large, cell by cell, with the chosen cell outlined.
function drawBig(map, top) {
  const canvas = $("big");
  const context = canvas.getContext("2d");
  const size = canvas.width / map.length;
  const grey = scaledGrey(top);
  map.forEach((row, r) => row.forEach((value, c) => {
    context.fillStyle = `rgb(${grey(value).join(" ")})`;
    context.fillRect(c * size, r * size, size, size);
  }));
  context.lineWidth = 3;
  context.strokeStyle = "#ff9f1c";
  context.strokeRect(opened.col * size + 1.5, opened.row * size + 1.5, size - 3, size - 3);
}

function showKernel(layer, index) {
  const box = $("kernel");
  if (current === null) {
    box.replaceChildren();
    $("kernel-caption").textContent = "The kernels come from GET /model/weights, which did not answer; they appear " +
      "with the next prediction.";
    return;
  }
  const channels = layer === "conv1" ? 1 : 8;
  const kernels = Array.from({ length: channels }, (_, channel) => kernelOf(layer, index, channel));
  const largest = Math.max(...kernels.flat().map(Math.abs), 1e-6);
  box.replaceChildren(...kernels.map((kernel, channel) => {
    const figure = document.createElement("div");
    const name = channels > 1 ? `for conv1's map ${channel}` : "its kernel";
    figure.append(Object.assign(document.createElement("div"), { className: "kernel-name", textContent: name }));
    figure.append(numberGrid([kernel.slice(0, 3), kernel.slice(3, 6), kernel.slice(6)],
      (value) => diverging(value / largest), 2, "weight"));
    return figure;
  }));
  const bias = current[layer].b[index];
  const shape = channels > 1 ? "8 \u00d7 3\u00d73, one per conv1 map (they light up in the overview)" : "3\u00d73";
  $("kernel-caption").innerHTML = `Its learned kernel, ${shape} (red: positive weights, blue: negative), ` +
    `and its bias: <b id="bias">${signed(bias, 3)}</b>.`;
}

// "What if": nine number fields for one 3x3 kernel (conv2: of the conv1 map chosen), the bias, and off.
function showEditor(layer, index) {
  const editor = $("editor");
  editor.disabled = current === null;
  if (current === null) return;
  const channelChoice = $("channel-choice");
  channelChoice.hidden = layer === "conv1";
  const select = $("edit-channel");
  if (layer === "conv2") {
    select.replaceChildren(...Array.from({ length: 8 }, (_, channel) =>
      Object.assign(document.createElement("option"), { value: channel, textContent: channel })));
    select.value = opened.channel;
  }
  const channels = layer === "conv1" ? 1 : 8;
  const kernel = kernelOf(layer, index, opened.channel);
  const grid = $("editor-grid");
  const key = `${layer}/${index}/${opened.channel}`;
  if (grid.dataset.key !== key) {  // a new kernel to edit; else the fields stay, and the one being typed in keeps focus
    grid.dataset.key = key;
    grid.replaceChildren(...kernel.map((_, i) => {
      const input = Object.assign(document.createElement("input"), { type: "number", step: "0.01" });
      input.dataset.position = i;
      input.setAttribute("aria-label", `weight at row ${Math.floor(i / 3)}, column ${i % 3}`);
      input.addEventListener("input", () => {
        const value = Number(input.value);
        if (input.value === "" || !Number.isFinite(value)) return;
        current[layer].w[(index * channels + opened.channel) * 9 + i] = value;
        recompute();
      });
      return input;
    }));
  }
  for (const input of grid.children) {
    const weight = kernel[Number(input.dataset.position)];
    if (input !== document.activeElement || Number(input.value) !== weight) input.value = weight.toFixed(4);
  }
  const bias = $("bias-input");
  if (bias !== document.activeElement || Number(bias.value) !== current[layer].b[index]) {
    bias.value = current[layer].b[index].toFixed(4);
  }
  const off = $("filter-off");
  const slice = current[layer].w.subarray(index * channels * 9, (index + 1) * channels * 9);
  off.checked = current[layer].b[index] === 0 && slice.every((value) => value === 0);
}

$("edit-channel").addEventListener("change", () => {
  opened.channel = Number($("edit-channel").value);
  showDetail();
});
$("bias-input").addEventListener("input", () => {
  const value = Number($("bias-input").value);
  if ($("bias-input").value === "" || !Number.isFinite(value)) return;
  current[opened.layer].b[opened.index] = value;
  recompute();
});
$("filter-off").addEventListener("change", () => {
  const { layer, index } = opened;
  const per = layer === "conv1" ? 9 : 72;
  const source = $("filter-off").checked ? new Float64Array(per) : served[layer].w.subarray(index * per, (index + 1) * per);
  current[layer].w.set(source, index * per);
  current[layer].b[index] = $("filter-off").checked ? 0 : served[layer].b[index];
  recompute();
});

function filterNote(layer, index, map, firing) {
  const { zero, dead } = darkness(layer, index, map, firing);
  if (dead) return `Dead. ${deadWhy(layer, firing.of)}`;
  if (zero) return `Zero for this drawing. ${ZERO_WHY}`;
  return "";
}

// What this filter makes of empty paper (every pixel 0), from the served weights: conv1's maps are then their
// bias alone, after ReLU; conv2 sums those constants, so its map is flat in the middle and differs at the edge,
// where padding 1 puts zeros in place of conv1's values: the grey band of conv2 on empty paper.
function showEmptyPaper(layer, index) {
  const box = $("empty-paper");
  if (blank === null) {
    box.replaceChildren();
    return;
  }
  const side = LAYERS[layer].side;
  const map = mapOf(blank[layer], index, side);  // the sums, before ReLU
  const middle = map[side >> 1][side >> 1];
  const edges = [map[0][side >> 1], map[side - 1][side >> 1], map[side >> 1][0], map[side >> 1][side - 1]];
  const canvas = Object.assign(document.createElement("canvas"), { width: side, height: side, className: "pixels" });
  canvas.setAttribute("role", "img");
  canvas.setAttribute("aria-label", `${layer} filter ${index}'s sums on empty paper, before ReLU`);
  const reach = Math.max(...map.flat().map(Math.abs), 1e-6);
  paintPixels(canvas, map, (value) => diverging(value / reach));
  const bias = served[layer].b[index];
  const text = document.createElement("p");
  const after = (value) => `${signed(value, 3)}, after ReLU ${signed(Math.max(0, value), 3)}`;
  if (layer === "conv1") {
    text.textContent = `On empty paper (every pixel 0; left, its sums, on the colours above), every product is 0 ` +
      `and each sum is the bias alone: ${after(bias)}, everywhere` +
      (bias > 0 ? ": this map is lit even where there is no ink." : ": this map is dark there.");
  } else {
    const band = edges.some((edge) => Math.abs(edge - middle) > 1e-6);
    text.textContent = `On empty paper (left: this filter's sums, red above 0, blue below), conv1's maps are not 0: ` +
      `each holds its bias (after ReLU) everywhere. So each of this filter's sums is the same in the middle: its ` +
      `bias, ${signed(bias, 3)}, plus those constants times its kernels, ${after(middle)}. At the edge, padding 1 ` +
      `adds zeros in place of conv1's values, so the sums there differ: top row ${after(edges[0])}; bottom ` +
      `${after(edges[1])}; left ${after(edges[2])}; right ${after(edges[3])}` +
      (band ? ". That is the grey band along the edge of a conv2 map on empty paper: its bias and the zero " +
        "padding at the edge, not ink." : ".");
  }
  box.replaceChildren(canvas, text);
}

// How the chosen value was made: 4 conv outputs (the 2x2 pooling window), each the sum of a 3x3 patch (of the
// input for conv1, of each of conv1's 8 maps for conv2) times the kernel, plus the bias; then max-pool, then ReLU.
function showCell() {
  const { layer, index, row, col } = opened;
  const { answer, net } = shown;
  const apiValue = answer.explanation.feature_maps[layer][index][row][col];
  const cell = $("cell");
  if (net === null) {
    cell.replaceChildren();
    delete cell.dataset.value;
    return;
  }
  const inputs = layer === "conv1" ? [answer.input] : Array.from({ length: 8 }, (_, c) => mapOf(net.pool1, c, 14));
  const channels = inputs.length;
  const kernels = inputs.map((_, channel) => {
    const kernel = kernelOf(layer, index, channel);
    return [kernel.slice(0, 3), kernel.slice(3, 6), kernel.slice(6)];
  });
  const bias = current[layer].b[index];
  const windows = [[0, 0], [0, 1], [1, 0], [1, 1]].map(([dy, dx]) => {
    const y = 2 * row + dy;
    const x = 2 * col + dx;
    const sums = inputs.map((map, channel) => dot(patch(map, y, x), kernels[channel]));
    const total = sums.reduce((sum, value) => sum + value, 0);
    return { y, x, sums, value: total + bias };
  });
  const pooled = Math.max(...windows.map((window) => window.value));
  const value = Math.max(0, pooled);
  const best = windows.findIndex((window) => window.value === pooled);
  cell.dataset.value = value;
  const [from, size] = layer === "conv1" ? ["the input", 28] : ["conv1's maps", 14];
  const steps = layer === "conv1"
    ? conv1Windows(windows, inputs[0], kernels[0], bias, best)
    : conv2Windows(windows, inputs, bias, best);
  const matches = Math.abs(value - apiValue) <= 1e-4;
  const changed = edits().length > 0;
  cell.innerHTML =
    `<h3>How the value at row ${row}, column ${col} was made: ${signed(value, 4)}</h3>` +
    `<p>Before pooling, ${layer}'s map was ${size}\u00d7${size}. This value pools a 2\u00d72 window of it: the ` +
    `outputs at rows ${2 * row}\u2013${2 * row + 1}, columns ${2 * col}\u2013${2 * col + 1} (counted from 0). Each ` +
    `output is the sum of a 3\u00d73 patch of ${from} times the kernel, plus the bias (outside the edge, padding 1 ` +
    `adds zeros).</p>` +
    steps +
    `<p class="sum">Max-pool of the four ("Pooling keeps strongest activations"): ` +
    `max(${windows.map((window) => signed(window.value, 4)).join(", ")}) = ${signed(pooled, 4)}</p>` +
    `<p class="sum">ReLU ("Negative values become zero"): max(0, ${signed(pooled, 4)}) = ` +
    `<b>${signed(value, 4)}</b></p>` +
    `<p>The notes apply ReLU before pooling; the result is the same, since ReLU never changes which of four ` +
    `values is the largest.</p>` +
    `<p class="sum">The API's value (the served weights): ${signed(apiValue, 4)} ` +
    (matches ? `<span class="ok">the same, to 0.0001</span>`
      : `<span class="warn">differs${changed ? ": your edited weights made this one" : ""}</span>`) + `</p>` +
    whereFigure(layer);
  paintWhere(answer.input, layer, row, col);
}

// conv1: the 4 input patches, each with its sum, and the largest written out product by product.
function conv1Windows(windows, input, kernel, bias, best) {
  const boxes = windows.map((window, i) => {
    const grid = numberGrid(patch(input, window.y, window.x), greyLevel, 2, "input");
    return `<div class="window${i === best ? " best" : ""}">${grid.outerHTML}` +
      `<p class="sum">\u03a3 = ${signed(window.sums[0], 3)}<br>+ bias ${signed(bias, 3)} = ` +
      `<b>${signed(window.value, 3)}</b></p></div>`;
  });
  const products = patch(input, windows[best].y, windows[best].x).flat()
    .map((level, i) => `${level.toFixed(3)}\u00d7${parenthesised(kernel.flat()[i])}`).join(" + ");
  return `<div class="windows">${boxes.join("")}</div>` +
    `<p>The largest, product by product (patch &times; kernel, then the bias; each number rounded to 3 ` +
    `decimals):</p>` +
    `<p class="products">${products} + ${parenthesised(bias)} = ${signed(windows[best].value, 4)}</p>`;
}

// conv2: for each of the 4 outputs, the sum over each of conv1's 8 maps (its 3x3 patch times its kernel).
function conv2Windows(windows, maps, bias, best) {
  const head = windows.map((window, i) =>
    `<th scope="col">${i === best ? "<b>" : ""}(${window.y}, ${window.x})${i === best ? "</b>" : ""}</th>`);
  const rows = maps.map((_, channel) => `<tr><th scope="row">conv1 map ${channel}</th>` +
    windows.map((window) => `<td>${signed(window.sums[channel], 3)}</td>`).join("") + "</tr>");
  const biasRow = `<tr><th scope="row">bias</th>${windows.map(() => `<td>${signed(bias, 3)}</td>`).join("")}</tr>`;
  const totals = `<tr class="best"><th scope="row">sum</th>` +
    windows.map((window) => `<td>${signed(window.value, 3)}</td>`).join("") + "</tr>";
  const top = Math.max(...maps.flat(2), 1e-6);
  const patches = maps.map((map, channel) =>
    `<div><div class="kernel-name">conv1 map ${channel}</div>` +
    numberGrid(patch(map, windows[best].y, windows[best].x), scaledGrey(top), 2, "input").outerHTML + "</div>");
  return `<div class="scroll" tabindex="0" role="region" aria-label="the sums of the four outputs"><table>` +
    `<caption>Each conv1 map's 3\u00d73 patch times its 3\u00d73 kernel, summed, for the four outputs (row, column)` +
    `</caption><thead><tr><th scope="col">from</th>${head.join("")}</tr></thead>` +
    `<tbody>${rows.join("")}${biasRow}${totals}</tbody></table></div>` +
    `<details><summary>The 8 patches of the largest</summary><div class="kernels">${patches.join("")}</div>` +
    `</details>`;
}

// Where in the picture this value looks: 4x4 pixels for conv1, 10x10 for conv2 (its receptive field).
function receptiveField(layer, row, col) {
  const [scale, reach] = layer === "conv1" ? [2, 1] : [4, 3];
  const first = (at) => Math.max(0, scale * at - reach);
  const last = (at) => Math.min(27, scale * at + scale - 1 + reach);
  return { top: first(row), left: first(col), bottom: last(row), right: last(col) };
}

function whereFigure(layer) {
  const span = layer === "conv1" ? "4\u00d74" : "10\u00d710";
  return `<figure><canvas id="where" class="pixels where" width="112" height="112" role="img" ` +
    `aria-label="the part of the picture this value depends on"></canvas><figcaption>The part of the picture ` +
    `this value depends on: at most ${span} pixels.</figcaption></figure>`;
}

function paintWhere(input, layer, row, col) {
  const canvas = $("where");
  const context = canvas.getContext("2d");
  const size = canvas.width / 28;
  input.forEach((line, r) => line.forEach((level, c) => {
    context.fillStyle = `rgb(${greyLevel(level).join(" ")})`;
    context.fillRect(c * size, r * size, size, size);
  }));
  const box = receptiveField(layer, row, col);
  context.lineWidth = 2;
  context.strokeStyle = "#ff9f1c";
  context.strokeRect(box.left * size + 1, box.top * size + 1,
    (box.right - box.left + 1) * size - 2, (box.bottom - box.top + 1) * size - 2);
}

function selectCell(row, col) {
  opened.row = row;
  opened.col = col;
  showDetail();
}

$("big").addEventListener("click", (event) => {
  const box = $("big").getBoundingClientRect();
  const side = LAYERS[opened.layer].side / 2;
  const at = (offset, length) => Math.min(side - 1, Math.max(0, Math.floor(offset / length * side)));
  selectCell(at(event.clientY - box.top, box.height), at(event.clientX - box.left, box.width));
});

// The keyboard's way to tap a cell: the arrow keys move the outline.
const MOVES = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
$("big").addEventListener("keydown", (event) => {
  const move = MOVES[event.key];
  if (!move) return;
  event.preventDefault();
  const side = LAYERS[opened.layer].side / 2;
  const clamp = (at) => Math.min(side - 1, Math.max(0, at));
  selectCell(clamp(opened.row + move[0]), clamp(opened.col + move[1]));
});

// ---- fc1, the logits and softmax, in detail ------------------------------------------------------------------

function openFc() {
  $("fc-panel").hidden = false;
  $("open-fc").setAttribute("aria-expanded", "true");
  showFc();
  $("fc-panel").scrollIntoView({ block: "nearest" });
  $("close-fc").focus({ preventScroll: true });
}

function closeFc(refocus = true) {
  if ($("fc-panel").hidden) return;
  $("fc-panel").hidden = true;
  $("open-fc").setAttribute("aria-expanded", "false");
  if (refocus) $("open-fc").focus();
}

function showFc() {
  const v = values();
  paintPixels($("flat-big"), Array.from({ length: 16 }, (_, map) => Array.from(v.pool2.subarray(49 * map, 49 * map + 49))),
    scaledGrey(layerTop("conv2")));
  const top = Math.max(...v.fc1, 1e-6);
  $("fc1-grid").replaceChildren(...Array.from(v.fc1, (value, unit) => {
    const background = greyLevel(value / top).map(Math.round);
    const span = Object.assign(document.createElement("span"), { title: `fc1 unit ${unit}` });
    span.innerHTML = `${unit}<br>${value.toFixed(2)}`;
    span.dataset.value = value;
    span.style.background = `rgb(${background.join(" ")})`;
    span.style.color = textOn(background);
    return span;
  }));
  const temperature = TEMPERATURES[Number($("temperature").value)];
  $("temperature-value").textContent = temperature;
  const logScale = $("log-scale").checked;
  const probabilities = softmax(v.logits, temperature);
  const powers = Array.from(v.logits, (logit) => Math.exp(logit / temperature));
  const best = probabilities.indexOf(Math.max(...probabilities));
  // On the log scale, a bar's length counts powers of ten: from 1 (full) down to a decade below the smallest chance.
  const decades = Math.max(3, Math.ceil(-Math.log10(Math.max(Math.min(...probabilities), 1e-300))) + 1);
  $("log-range").innerHTML = logScale ? `: full is 1, empty 10<sup>\u2212${decades}</sup>` : "";
  const rows = probabilities.map((probability, digit) => {
    const row = document.createElement("tr");
    row.dataset.digit = digit;
    row.dataset.logit = v.logits[digit];
    row.dataset.probability = probability;
    row.classList.toggle("best", digit === best);
    const width = logScale ? Math.max(0, 1 + Math.log10(Math.max(probability, 1e-300)) / decades) : probability;
    row.innerHTML = `<td>${digit}</td><td>${signed(v.logits[digit], 2)}</td>` +
      `<td>${Number.isFinite(powers[digit]) ? scientific(powers[digit]) : "too large"}</td>` +
      `<td>${percent(probability)}</td>` +
      `<td class="bar-cell"><span class="pbar" style="width:${(100 * width).toFixed(2)}%"></span></td>`;
    row.lastChild.dataset.width = width;
    return row;
  });
  document.querySelector("#softmax-table tbody").replaceChildren(...rows);
  const total = powers.reduce((sum, power) => sum + power, 0);
  $("exp-sum").innerHTML = Number.isFinite(total) ? scientific(total) : "too large";
  const second = [...probabilities].sort((a, b) => b - a)[1];
  $("temperature-note").innerHTML = (temperature === 1
    ? "T = 1: the model's own softmax, the probabilities the API gives for this picture. "
    : `T = ${temperature}: each logit is divided by ${temperature} first; ` +
      (temperature > 1 ? "the chances even out, " : "the largest takes even more, ") +
      "the order stays the same, and the answer too. Only T = 1 is the model's. ") +
    `The runner-up has ${percent(second)}.`;
}

$("open-fc").addEventListener("click", () => ($("fc-panel").hidden ? openFc() : closeFc()));
$("close-fc").addEventListener("click", () => closeFc());
$("temperature").addEventListener("input", showFc);
$("log-scale").addEventListener("change", showFc);
for (const radio of document.querySelectorAll("input[name=scaling]")) radio.addEventListener("change", showInside);

// ---- Arithmetic ----------------------------------------------------------------------------------------------

// The 3x3 patch of a map centred on (y, x); outside the map, padding 1 gives zeros.
function patch(map, y, x) {
  return [-1, 0, 1].map((dy) => [-1, 0, 1].map((dx) => map[y + dy]?.[x + dx] ?? 0));
}

function dot(patchValues, kernel) {
  return patchValues.flat().reduce((sum, value, i) => sum + value * kernel.flat()[i], 0);
}

// ---- Pictures and numbers ------------------------------------------------------------------------------------

// Any grid of numbers as a picture, one pixel per number, in the colours `colour` gives.
function paintPixels(canvas, grid, colour) {
  const context = canvas.getContext("2d");
  const picture = context.createImageData(canvas.width, canvas.height);
  grid.flat().forEach((value, i) => picture.data.set([...colour(value), 255], i * 4));
  context.putImageData(picture, 0, 0);
}

function greyLevel(level) {
  const clamped = Math.min(Math.max(level, 0), 1);
  return [clamped * 255, clamped * 255, clamped * 255];
}

// Grey from black at 0 to white at `top`: one layer's scale (or one map's own largest).
function scaledGrey(top) {
  return (value) => greyLevel(Math.max(0, value) / top);
}

// The saliency's colour map (inferno): dark to bright, each step lighter than the last, readable in grey too.
const INFERNO = [[0, 0, 4], [87, 16, 110], [188, 55, 84], [249, 142, 9], [252, 255, 164]];
function inferno(t) {
  const at = Math.min(Math.max(t, 0), 1) * (INFERNO.length - 1);
  const low = Math.min(Math.floor(at), INFERNO.length - 2);
  return INFERNO[low].map((channel, i) => channel + (INFERNO[low + 1][i] - channel) * (at - low));
}

// Signed values: white at 0, red for positive, blue for negative, the deeper the larger.
function diverging(t) {
  const [r, g, b] = t >= 0 ? [178, 24, 43] : [33, 102, 172];
  const depth = Math.min(Math.abs(t), 1);
  return [255 + (r - 255) * depth, 255 + (g - 255) * depth, 255 + (b - 255) * depth];
}

// Black or white text, whichever keeps a 4.5:1 contrast on that background (WCAG's relative luminance).
function textOn([r, g, b]) {
  const linear = (channel) => {
    const c = channel / 255;
    return c <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  };
  const luminance = 0.2126 * linear(r) + 0.7152 * linear(g) + 0.0722 * linear(b);
  return luminance > 0.18 ? "#000" : "#fff";
}

// A 3x3 grid of numbers, each on its colour: a kernel, or a patch of the input or of a map.
function numberGrid(grid, colour, digits, kind) {
  const box = Object.assign(document.createElement("div"), { className: `grid3 ${kind}` });
  for (const value of grid.flat()) {
    const background = colour(value).map(Math.round);
    const number = Object.assign(document.createElement("span"), { textContent: signed(value, digits) });
    number.dataset.value = value;
    number.style.background = `rgb(${background.join(" ")})`;
    number.style.color = textOn(background);
    box.append(number);
  }
  return box;
}

// A number with a true minus sign, easier to read in a column.
function signed(value, digits) {
  const text = Math.abs(value).toFixed(digits);
  return value < 0 && Number(text) !== 0 ? `\u2212${text}` : text;
}

function parenthesised(value) {
  return value < 0 ? `(${signed(value, 3)})` : signed(value, 3);
}

// ---- Buttons -------------------------------------------------------------------------------------------------

$("predict").addEventListener("click", predictDrawing);
$("clear").addEventListener("click", () => {
  clearTimeout(pauseTimer);
  latest++;  // an answer still on its way is for the old drawing
  $("result").setAttribute("aria-busy", "false");
  clearPad();
  showNothing();
  status.className = "";
  status.textContent = "";
});
for (const input of [$("file"), $("camera")]) {
  input.addEventListener("change", () => predictFile(input));
}
$("close-detail").addEventListener("click", () => closeDetail());
for (const button of [$("reset"), $("reset-here")]) button.addEventListener("click", resetWeights);
clearPad();
showNothing();
loadModel();
