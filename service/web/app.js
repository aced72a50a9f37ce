// HyCAS Certify page: choose a model, send one image, follow its job, show the result.
// Everything comes from this gateway's API; text from the API is set as text, never as HTML.
"use strict";

const KEY_STORAGE = "hycas-api-key"; // sessionStorage: this tab only, gone when it closes
const POLL_MS = 250;
const state = { models: [], defaults: null, jobId: null, polling: null };

const $ = (id) => document.getElementById(id);

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

// Numbers never overstate: radii and probabilities are rounded down, as the service does.
function floorDigits(value, digits = 4) {
  if (!(value > 0)) return "0";
  const quantum = 10 ** (Math.floor(Math.log10(value)) - digits + 1);
  return String(Number((Math.floor(value / quantum) * quantum).toPrecision(digits)));
}

function ceilDigits(value, digits = 6) {
  const quantum = 10 ** (Math.floor(Math.log10(value)) - digits + 1);
  return String(Number((Math.ceil(value / quantum) * quantum).toPrecision(digits)));
}

function floorPercent(fraction, decimals = 1) {
  const scale = 10 ** decimals;
  return `${(Math.floor(fraction * 100 * scale + 1e-9) / scale).toFixed(decimals)} %`;
}

class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function api(method, path, body) {
  const headers = {};
  const key = sessionStorage.getItem(KEY_STORAGE);
  if (key) headers["X-API-Key"] = key;
  const response = await fetch(path, { method, headers, body });
  let payload = null;
  try {
    payload = await response.json();
  } catch {
    payload = null;
  }
  if (!response.ok) {
    const error = payload && payload.error;
    const message = error ? error.message : `${response.status} ${response.statusText}`;
    throw new APIError(response.status, error ? error.code : `http_${response.status}`, message);
  }
  return payload;
}

// An API refusal (its message and code), a failed request, or a sentence of the page's own.
function showError(error) {
  const box = $("error");
  box.replaceChildren();
  if (typeof error === "string") {
    box.append(error);
  } else if (error instanceof APIError) {
    box.append(element("span", {}, error.message), " ", element("code", {}, `(${error.status} ${error.code})`));
    if (error.status === 401) askForKey();
  } else {
    box.append(`The request failed: ${error.message}`);
  }
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").replaceChildren();
}

function askForKey() {
  $("key-section").hidden = false;
  $("api-key").value = sessionStorage.getItem(KEY_STORAGE) || "";
  $("api-key").focus();
}

// ---- models and their cards -------------------------------------------------------------

async function loadModels() {
  clearError();
  try {
    const [list, defaults] = await Promise.all([api("GET", "/v1/models"), api("GET", "/v1/defaults")]);
    state.models = list.models;
    state.defaults = defaults;
  } catch (error) {
    $("model").replaceChildren(element("option", {}, "no models (see the message above)"));
    showError(error);
    return;
  }
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => element("option", { value: m.id }, `${m.id} v${m.version}`)));
  select.disabled = state.models.length === 0;
  if (state.models.length === 0) select.append(element("option", {}, "no model is available"));
  showModel();
}

function currentModel() {
  return state.models.find((m) => m.id === $("model").value);
}

function showModel() {
  const model = currentModel();
  const card = $("card");
  card.replaceChildren();
  if (!model) return;
  const metrics = model.card.metrics || {};
  const rows = [
    ["Input", `${model.input_shape.join("×")} (channels × height × width), values in [0, 1]`],
    ["Classes", model.class_names.join(", ")],
    ["Noise σ", model.sigmas.join(", ")],
    ["Certified Lipschitz bound", model.lipschitz_bound === null ? "none (smoothing only)" : `L ≤ ${ceilDigits(model.lipschitz_bound)} for every draw of the randomness`],
  ];
  if (metrics.clean_accuracy !== undefined) {
    rows.push(["Clean accuracy", `${floorPercent(metrics.clean_accuracy)} on ${metrics.images} ${metrics.dataset} ${metrics.split} images`]);
  }
  for (const [name, certificate] of Object.entries(metrics.certificates || {})) {
    const at = Object.entries(certificate.certified_accuracy || {})
      .sort((p, q) => Number(p[0]) - Number(q[0]))
      .map(([radius, accuracy]) => `${floorPercent(accuracy)} at ${radius}`)
      .join(", ");
    rows.push([`Certified accuracy (${name})`, at]);
  }
  const list = element("dl", { class: "card" });
  for (const [term, value] of rows) list.append(element("dt", {}, term), element("dd", {}, value));
  card.append(list);
  const plot = accuracyPlot(metrics);
  if (plot) card.append(plot);
  showMethods(model);
}

// Certified accuracy against radius, from the evaluation recorded on the model's card.
function accuracyPlot(metrics) {
  const curves = Object.entries(metrics.certificates || {}).filter(([, c]) => c.certified_accuracy);
  if (curves.length === 0) return null;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  const [width, height, left, bottom, top, right] = [360, 200, 40, 30, 10, 90];
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("class", "plot");
  svg.setAttribute("role", "img");
  const title = document.createElementNS(ns, "title");
  title.textContent = "Certified accuracy on the test split against the L2 radius";
  svg.append(title);
  const radii = curves.flatMap(([, c]) => Object.keys(c.certified_accuracy).map(Number));
  const maxRadius = Math.max(...radii) || 1;
  const x = (r) => left + (r / maxRadius) * (width - left - right);
  const y = (a) => top + (1 - a) * (height - top - bottom);
  const line = (x1, y1, x2, y2) => {
    const node = document.createElementNS(ns, "line");
    for (const [k, v] of Object.entries({ x1, y1, x2, y2, stroke: "#4a4a4a" })) node.setAttribute(k, v);
    return node;
  };
  const text = (tx, ty, content, anchor = "middle") => {
    const node = document.createElementNS(ns, "text");
    node.setAttribute("x", tx);
    node.setAttribute("y", ty);
    node.setAttribute("text-anchor", anchor);
    node.textContent = content;
    return node;
  };
  svg.append(line(left, y(0), x(maxRadius), y(0)), line(left, y(0), left, y(1)));
  for (const a of [0, 0.5, 1]) svg.append(text(left - 4, y(a) + 4, `${a * 100}%`, "end"));
  for (const r of [...new Set(radii)]) svg.append(text(x(r), height - bottom + 14, r));
  svg.append(text((left + x(maxRadius)) / 2, height - 2, "L2 radius"));
  const colours = ["#0b4f94", "#b34d00", "#1d5e20"];
  curves.forEach(([name, certificate], index) => {
    const points = [[0, certificate.accuracy ?? metrics.clean_accuracy ?? 0]];
    for (const [r, a] of Object.entries(certificate.certified_accuracy)) points.push([Number(r), a]);
    points.sort((p, q) => p[0] - q[0]);
    const path = document.createElementNS(ns, "polyline");
    path.setAttribute("points", points.map(([r, a]) => `${x(r)},${y(a)}`).join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", colours[index % colours.length]);
    path.setAttribute("stroke-width", "2");
    svg.append(path);
    const label = text(x(maxRadius) + 6, top + 14 + index * 16, name, "start");
    label.setAttribute("style", `fill: ${colours[index % colours.length]}`);
    svg.append(label);
  });
  return svg;
}

function showMethods(model) {
  const fieldset = $("methods");
  fieldset.replaceChildren(element("legend", {}, "Certificates"));
  const defaults = state.defaults;
  for (const [name, method] of Object.entries(defaults.available_methods)) {
    const id = `method-${name}`;
    const needsBound = method.needs_lipschitz_bound;
    const box = element("input", { type: "checkbox", id, value: name, name: "methods" });
    box.checked = defaults.methods.includes(name) && !(needsBound && model.lipschitz_bound === null);
    box.disabled = needsBound && model.lipschitz_bound === null;
    fieldset.append(element("label", { for: id, title: method.summary }, box, name));
  }
  $("opt-n").placeholder = `default ${defaults.n}`;
  $("opt-n0").placeholder = `default ${defaults.n0}`;
  $("opt-alpha").placeholder = `default ${defaults.alpha}`;
}

// ---- submitting and following a job ------------------------------------------------------

function requestBody(file) {
  const form = new FormData();
  form.append("file", file, file.name);
  form.append("model", $("model").value);
  const methods = [...document.querySelectorAll("#methods input:checked")].map((b) => b.value);
  if (methods.length) form.append("methods", methods.join(","));
  for (const id of ["opt-n", "opt-n0", "opt-alpha", "opt-seed", "opt-target"]) {
    const input = $(id);
    if (input.value.trim() !== "") form.append(input.name, input.value.trim());
  }
  return form;
}

async function submit(event) {
  event.preventDefault();
  clearError();
  const file = $("file").files[0];
  if (!file) {
    showError("Choose an image file first.");
    $("file").focus();
    return;
  }
  $("result").hidden = true;
  $("submit").disabled = true;
  let job;
  try {
    job = await api("POST", "/v1/certify", requestBody(file));
  } catch (error) {
    $("submit").disabled = false;
    showError(error);
    return;
  }
  state.jobId = job.id;
  $("progress-section").hidden = false;
  $("cancel").disabled = false;
  showProgress(job);
  const preview = api("POST", "/v1/preview", requestBody(file)).catch(() => null);
  follow(job.id, preview);
}

function showProgress(job) {
  const percent = Math.round(100 * job.progress.fraction);
  $("progress").value = percent;
  const done = job.progress.samples_done.toLocaleString("en");
  const planned = job.progress.samples_planned.toLocaleString("en");
  $("progress-text").textContent = `${percent} % · ${job.status} · ${done} of ${planned} model evaluations`;
}

async function follow(jobId, preview) {
  let job;
  for (;;) {
    try {
      job = await api("GET", `/v1/jobs/${jobId}`);
    } catch (error) {
      showError(error);
      break;
    }
    if (state.jobId !== jobId) return; // another image was sent meanwhile
    showProgress(job);
    if (["succeeded", "failed", "cancelled"].includes(job.status)) break;
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
  }
  $("submit").disabled = false;
  $("cancel").disabled = true;
  if (!job) return;
  if (job.status === "succeeded") showResult(job, await preview);
  else if (job.status === "cancelled") showError("The job was cancelled: nothing was certified.");
  else showError(new APIError(422, job.error.code, job.error.message));
}

async function cancel() {
  if (!state.jobId) return;
  $("cancel").disabled = true;
  try {
    await api("DELETE", `/v1/jobs/${state.jobId}`);
  } catch (error) {
    showError(error);
  }
}

// ---- the result ---------------------------------------------------------------------------

function plainGuarantee(certificate, job) {
  const space = `${job.result.input_space.shape.slice(1).join("×")} input shown below`;
  const radius = floorDigits(certificate.radius);
  if (certificate.abstained) return certificate.guarantee;
  if (certificate.method === "smoothing") {
    return `With probability ≥ ${floorPercent(1 - job.parameters.alpha)}, no change of L2 size below ${radius} in the ${space} changes the smoothed classifier's answer (${certificate.class_name}).`;
  }
  if (certificate.method === "margin") {
    return `Exactly, with no probability involved: no change of L2 size below ${radius} in the ${space} changes the answer (${certificate.class_name}) of the frozen ensemble F_K.`;
  }
  return certificate.guarantee;
}

function showResult(job, preview) {
  const result = job.result;
  const prediction = result.prediction;
  $("predicted").textContent = prediction.label === null ? "none (abstained)" : prediction.class_name;
  $("prediction-note").textContent = prediction.note;
  $("warnings").replaceChildren(...result.warnings.map((w) => element("li", {}, w)));

  const table = element("table", {}, element("caption", { class: "fine" }, "Each certificate, its radius and what it guarantees"));
  table.append(element("tr", {}, element("th", { scope: "col" }, "certificate"), element("th", { scope: "col" }, "class"),
    element("th", { scope: "col" }, "L2 radius"), element("th", { scope: "col" }, "guarantee")));
  for (const certificate of Object.values(result.certificates)) {
    if (certificate.method === "attack") continue; // an upper bound, not a certificate: below
    const guarantee = element("td", {}, element("p", { class: "sentence" }, plainGuarantee(certificate, job)),
      element("p", { class: "fine" }, certificate.guarantee));
    table.append(element("tr", { "data-method": certificate.method },
      element("th", { scope: "row" }, certificate.method),
      element("td", certificate.abstained ? { class: "abstained" } : {}, certificate.abstained ? "abstained" : certificate.class_name),
      element("td", { class: "radius" }, floorDigits(certificate.radius)),
      guarantee));
  }
  $("certificates").replaceChildren(table, ...attackParts(result));
  $("transforms").replaceChildren(...result.input.transforms.map((t) => element("li", {}, t)));
  showPreview(preview, result);
  $("result").hidden = false;
  $("result-heading").focus();
}

// An attack's distance is an upper bound on the robust radius: shown rounded up, never called
// certified, and beside each certificate it brackets.
function attackParts(result) {
  const attack = result.certificates.attack;
  if (!attack) return [];
  const table = element("table", { id: "attack" }, element("caption", { class: "fine" },
    "What an attack found: the closest input with another answer, an upper bound on the robust radius (not a certificate)"));
  table.append(element("tr", {}, element("th", { scope: "col" }, "classifier"), element("th", { scope: "col" }, "class found"),
    element("th", { scope: "col" }, "L2 distance"), element("th", { scope: "col" }, "what it shows")));
  for (const finding of [attack, ...attack.other_classifiers]) {
    table.append(element("tr", { "data-classifier": finding.classifier },
      element("th", { scope: "row" }, finding.classifier === "smoothed" ? "smoothed g" : "frozen ensemble F_K"),
      element("td", {}, finding.class_name_found === null ? "none found" : finding.class_name_found),
      element("td", { class: "radius" }, finding.distance === null ? "—" : ceilDigits(finding.distance, 4)),
      element("td", {}, element("p", { class: "fine" }, finding.guarantee))));
  }
  const brackets = element("ul", { id: "brackets" }, ...result.brackets.map((b) => element("li", {}, b.statement)));
  return [table, brackets];
}

function figure(src, alt, caption, className) {
  return element("figure", className ? { class: className } : {}, element("img", { src, alt }), element("figcaption", {}, caption));
}

function showPreview(preview, result) {
  const box = $("preview");
  box.replaceChildren();
  if (!preview) {
    $("scale").textContent = "";
    return;
  }
  const shape = preview.input.shape.join("×");
  box.append(
    figure(preview.received, "the image as received, after decoding", `Received: ${preview.input.format}, ${(preview.input.original_size || []).join("×")}`),
    figure(preview.model_input, "the image as the model sees it", `What the model sees: ${shape} (every radius is measured here)`),
  );
  const samples = element("div", { class: "samples" },
    ...preview.noisy_samples.map((src, i) => element("img", { src, alt: `noisy sample ${i + 1} at sigma ${preview.sigma}` })));
  box.append(element("figure", {}, samples,
    element("figcaption", {}, `Noisy samples x + ε at σ = ${preview.sigma}, as smoothing classifies them (clipped to [0, 1] for display)`)));

  const parts = [`The input's own L2 norm is ‖x‖₂ = ${floorDigits(preview.input_norm)}; the smoothing noise has a typical length σ·√d = ${floorDigits(preview.noise_norm)}.`];
  const margin = result.certificates.margin;
  for (const certificate of Object.values(result.certificates)) {
    if (certificate.abstained || certificate.method === "attack") continue;
    const r = certificate.radius;
    let sentence = `The ${certificate.method} radius ${floorDigits(r)} is ${floorPercent(r / preview.input_norm)} of ‖x‖₂`;
    if (margin && !margin.abstained && certificate.method !== "margin") {
      sentence += ` and ${floorPercent(r / margin.radius)} of the margin certificate's distance ${floorDigits(margin.radius)} to the nearest other class (${nearestOtherClass(margin)}) of F_K`;
    }
    parts.push(`${sentence}.`);
  }
  $("scale").textContent = parts.join(" ");
}

function nearestOtherClass(margin) {
  const logits = margin.details.logits || [];
  let best = null;
  logits.forEach((z, index) => {
    if (index !== margin.label && (best === null || z > logits[best])) best = index;
  });
  const model = currentModel();
  return best === null ? "?" : (model ? model.class_names[best] : best);
}

// ---- wiring --------------------------------------------------------------------------------

function wire() {
  $("model").addEventListener("change", showModel);
  $("certify-form").addEventListener("submit", submit);
  $("cancel").addEventListener("click", cancel);
  $("file").addEventListener("change", () => {
    const file = $("file").files[0];
    $("file-name").textContent = file ? `chosen: ${file.name} (${file.size.toLocaleString("en")} bytes)` : "";
  });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    else sessionStorage.removeItem(KEY_STORAGE);
    loadModels();
  });
  const zone = $("drop-zone");
  zone.addEventListener("dragover", (event) => {
    event.preventDefault();
    zone.classList.add("over");
  });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    if (event.dataTransfer.files.length) {
      $("file").files = event.dataTransfer.files;
      $("file").dispatchEvent(new Event("change"));
    }
  });
  $("result-heading").setAttribute("tabindex", "-1");
  if (sessionStorage.getItem(KEY_STORAGE)) $("key-section").hidden = false;
  loadModels();
}

wire();
