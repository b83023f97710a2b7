// The so1s dashboard: plain JavaScript over the api server's own /v1 routes, with the same
// bearer tokens. No framework and no build step; served from the binary (see dashboard.rs).
//
// Everything shown comes from the api and is put into the page as text (textContent, never
// innerHTML), so a model's error message or name cannot inject markup. The token lives in
// this tab's sessionStorage and is sent only in the Authorization header, never in a URL.
"use strict";

const TOKEN_KEY = "so1s.token";
const REFRESH_MS = 5000;
const ROLES = ["viewer", "deployer", "admin"];
// States a version can be put into a split or promoted from.
const PLACEABLE = new Set(["built", "live", "retired", "superseded"]);
// States in which a version may be deleted (the server refuses the others with 409).
const DELETABLE = new Set(["built", "retired", "failed", "superseded"]);

const $ = (selector, root = document) => root.querySelector(selector);

const session = {
  token: null,
  identity: null,
  models: [],
  timer: null,
  // Models whose traffic editor holds unsaved weights: not redrawn under the user's hands.
  editing: new Set(),
  // Models whose traffic editor is open: it stays open across redraws.
  open: new Set(),
  // The event stream being followed.
  follow: null,
};

/** An element with attributes and children; strings become text nodes, never markup. */
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") el.className = value;
    else if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

// ---- the api -------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, message, type) {
    super(message);
    this.status = status;
    this.type = type;
  }
}

/** The api's error body (`{"error": ..., "error_type": ...}`) as an ApiError. */
async function errorOf(response) {
  let message = `${response.status} ${response.statusText}`.trim();
  let type;
  try {
    const body = await response.json();
    if (body && typeof body.error === "string") {
      message = body.error;
      type = body.error_type;
    }
  } catch (_) {
    // Not JSON: keep the status line.
  }
  return new ApiError(response.status, message, type);
}

function authHeaders() {
  return { Authorization: `Bearer ${session.token}` };
}

/** A call to the api with the session's token; the JSON answer, or null for 204. */
async function api(method, path, body) {
  const headers = authHeaders();
  const init = { method, headers, cache: "no-store" };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (!response.ok) {
    const error = await errorOf(response);
    if (response.status === 401 && session.identity) {
      signOut(`Signed out: ${error.message}`);
    }
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

const modelPath = (name) => `/v1/models/${encodeURIComponent(name)}`;
const versionPath = (name, version) =>
  `${modelPath(name)}/versions/${encodeURIComponent(version)}`;

// ---- formatting ----------------------------------------------------------------------

function bytes(n) {
  if (n < 1024) return `${n} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(value < 10 ? 1 : 0)} ${units[unit]}`;
}

function when(ms) {
  if (!ms) return "";
  const date = new Date(ms);
  const pad = (n) => String(n).padStart(2, "0");
  return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())} ` +
    `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
}

const stateTag = (state) => h("span", { class: `state state-${state}` }, state);

function splitText(traffic) {
  return Object.entries(traffic)
    .map(([version, weight]) => `${version} ${weight}%`)
    .join(" · ");
}

// ---- feedback ------------------------------------------------------------------------

let toastTimer = null;

/** A short message at the bottom of the page; errors stay until the next one. */
function toast(message, isError = false) {
  const el = $("#toast");
  el.textContent = message;
  el.classList.toggle("toast-error", isError);
  el.setAttribute("role", isError ? "alert" : "status");
  el.hidden = false;
  clearTimeout(toastTimer);
  if (!isError) toastTimer = setTimeout(() => { el.hidden = true; }, 4000);
}

/** Asks before an action; resolves to whether the user confirmed. */
function confirmAction(text, okLabel) {
  const dialog = $("#confirm");
  $("#confirm-text").textContent = text;
  $("#confirm-ok").textContent = okLabel;
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "ok"), { once: true });
    dialog.showModal();
  });
}

/** Runs an action from `button` after confirmation, with the button busy meanwhile. */
async function act(button, question, okLabel, run, done) {
  if (!(await confirmAction(question, okLabel))) return;
  const label = button.textContent;
  button.disabled = true;
  button.textContent = `${label}…`;
  try {
    const result = await run();
    toast(done(result));
  } catch (error) {
    toast(error.message, true);
  } finally {
    button.disabled = false;
    button.textContent = label;
    refresh();
  }
}

// ---- signing in and out --------------------------------------------------------------

const canDeploy = () =>
  session.identity !== null && ROLES.indexOf(session.identity.role) >= ROLES.indexOf("deployer");

async function signIn(token) {
  session.token = token;
  try {
    session.identity = await api("GET", "/v1/whoami");
  } catch (error) {
    session.token = null;
    session.identity = null;
    throw error;
  }
  sessionStorage.setItem(TOKEN_KEY, token);
  showApp();
}

function signOut(message) {
  sessionStorage.removeItem(TOKEN_KEY);
  session.token = null;
  session.identity = null;
  session.models = [];
  session.editing.clear();
  session.open.clear();
  clearTimeout(session.timer);
  if (session.follow) session.follow.abort();
  $("#models").replaceChildren();
  $("#events").replaceChildren();
  $("#prediction").replaceChildren();
  $("#app").hidden = true;
  $("#who").hidden = true;
  $("#sign-out").hidden = true;
  $("#sign-in").hidden = false;
  $("#sign-in-error").textContent = message || "";
  $("#token").value = "";
  $("#token").focus();
}

function showApp() {
  const { name, role } = session.identity;
  $("#who").textContent = `${name} · ${role}`;
  $("#who").hidden = false;
  $("#sign-out").hidden = false;
  $("#sign-in").hidden = true;
  for (const el of document.querySelectorAll(".deployer")) el.hidden = !canDeploy();
  $("#app").hidden = false;
  refresh();
}

// ---- models --------------------------------------------------------------------------

/** Reads every model's view, redraws them, and schedules the next read. */
async function refresh() {
  clearTimeout(session.timer);
  if (!session.identity) return;
  try {
    const list = await api("GET", "/v1/models");
    const views = await Promise.all(
      list.models.map((model) => api("GET", modelPath(model.name))),
    );
    session.models = views;
    drawModels();
    drawModelChoices();
    $("#updated").textContent = `updated ${when(Date.now()).slice(11)}`;
  } catch (error) {
    if (!session.identity) return;
    $("#updated").textContent = `not updated: ${error.message}`;
  }
  // A hidden tab stops reading; it reads again when shown (visibilitychange).
  if (session.identity && !document.hidden) session.timer = setTimeout(refresh, REFRESH_MS);
}

function drawModels() {
  const container = $("#models");
  $("#models-empty").hidden = session.models.length > 0;
  // Keep focus where it was across the redraw: interactive elements carry a data-key.
  const focused = document.activeElement && container.contains(document.activeElement)
    ? document.activeElement.dataset.key : undefined;
  const present = new Set();
  for (const view of session.models) {
    present.add(view.name);
    const old = container.querySelector(`article[data-model="${CSS.escape(view.name)}"]`);
    if (old && session.editing.has(view.name)) continue;
    const card = modelCard(view);
    if (old) old.replaceWith(card);
    else container.append(card);
  }
  for (const card of container.querySelectorAll("article[data-model]")) {
    if (!present.has(card.dataset.model)) card.remove();
  }
  if (focused) {
    const again = container.querySelector(`[data-key="${CSS.escape(focused)}"]`);
    if (again) again.focus();
  }
}

function drawModelChoices() {
  const names = session.models.map((view) => view.name);
  $("#model-names").replaceChildren(...names.map((name) => h("option", { value: name })));
  const select = $("#try-model");
  const chosen = select.value;
  const live = session.models.filter((view) => view.live_version);
  select.replaceChildren(...live.map((view) =>
    h("option", { value: view.name }, `${view.name} (${view.live_version})`)));
  if (live.some((view) => view.name === chosen)) select.value = chosen;
  $("#try-button").disabled = live.length === 0;
}

function fact(label, value, key) {
  return h("div", { class: "fact", "data-fact": key }, h("dt", {}, label), h("dd", {}, value));
}

function healthFact(health) {
  if (!health) return fact("Health", "–", "health");
  const text = health.ready ? health.status : `${health.status} (not ready)`;
  const dd = h("dd", { title: health.last_exit || "" }, h("span", {
    class: `health health-${health.status}`,
  }, text));
  return h("div", { class: "fact", "data-fact": "health" }, h("dt", {}, "Health"), dd);
}

// Whether the model's predict servers run, and its idle policy: "always on", "running",
// "scaled to zero" (woken by its next request) or "waking" (requests are held meanwhile).
function scaleFact(view) {
  const s = view.scale || { idle_after_s: 0, running: true, wakeups: 0 };
  let state = "always on";
  if (s.waking) state = "waking";
  else if (!s.running && view.live_version) state = "scaled to zero";
  else if (s.idle_after_s > 0) state = "running";
  const detail = s.idle_after_s > 0
    ? ` · idle after ${s.idle_after_s} s · ${s.wakeups} wake-up${s.wakeups === 1 ? "" : "s"}` : "";
  return fact("Scale", h("span", {},
    h("span", { class: `scale scale-${state.replaceAll(" ", "-")}` }, state),
    detail && h("span", { class: "hint" }, detail)), "scale");
}

// The idle policy, for deployers: seconds without a request before the model's predict
// servers stop (0: always on).
function idleEditor(view) {
  const name = view.name;
  const input = h("input", {
    type: "number",
    min: 0,
    step: 1,
    inputmode: "numeric",
    id: `idle-${name}`,
    "data-key": `${name}:idle`,
    value: (view.scale && view.scale.idle_after_s) || 0,
  });
  return h("form", {
    class: "idle weights",
    oninput: () => session.editing.add(name),
    onsubmit: (e) => {
      e.preventDefault();
      const seconds = Number(input.value) || 0;
      const question = seconds > 0
        ? `Stop ${name}'s predict servers after ${seconds} s without a request? ` +
          "Its next request wakes it."
        : `Keep ${name} always on?`;
      act(e.currentTarget.querySelector("button"), question, "Set",
        async () => {
          const scale = await api("PATCH", modelPath(name), { idle_after_s: seconds });
          session.editing.delete(name);
          return scale;
        },
        (scale) => scale.idle_after_s > 0
          ? `${name}: scaled to zero after ${scale.idle_after_s} s idle`
          : `${name}: always on`);
    },
  },
  h("div", { class: "weight-row" },
    h("label", { for: `idle-${name}` }, "Idle after (s, 0: always on)", input),
    h("button", { type: "submit", "data-key": `${name}:set-idle` }, "Set")));
}

function modelCard(view) {
  const name = view.name;
  const latest = view.versions[view.versions.length - 1];
  const traffic = view.traffic || (view.live_version ? { [view.live_version]: 100 } : {});
  const served = view.versions.some((v) => v.state === "retired");
  const head = h("div", { class: "model-head" },
    h("h3", { id: `model-${name}` }, name),
    view.default && h("span", { class: "tag", title: "served at /inference/predict" }, "default"),
    canDeploy() && h("button", {
      type: "button",
      class: "quiet",
      "data-key": `${name}:rollback`,
      disabled: !served || !view.live_version,
      onclick: (e) => act(e.currentTarget, `Roll ${name} back to the version that served before?`,
        "Roll back", () => api("POST", `${modelPath(name)}/rollback`),
        (v) => `${name}: ${v.version} is live again`),
    }, "Roll back"));
  const facts = h("dl", { class: "facts" },
    fact("Live", view.live_version || "none", "live"),
    fact("Latest", latest ? h("span", {}, `${latest.version} `, stateTag(latest.state)) : "–",
      "latest"),
    fact("Traffic", Object.keys(traffic).length ? splitText(traffic) : "none", "traffic"),
    healthFact(view.health),
    fact("Restarts", view.health ? view.health.restarts : 0, "restarts"),
    scaleFact(view),
    fact("Predict", h("code", {}, view.predict), "predict"));
  return h("article", { class: "model", "data-model": name, "aria-labelledby": `model-${name}` },
    head, facts, trafficBar(traffic), versionsTable(view),
    canDeploy() && view.live_version && idleEditor(view),
    canDeploy() && trafficEditor(view, traffic));
}

function trafficBar(traffic) {
  const arms = Object.entries(traffic);
  if (arms.length < 2) return null;
  return h("div", { class: "split", role: "img", "aria-label": `traffic: ${splitText(traffic)}` },
    arms.map(([version, weight], i) => {
      const arm = h("span", { class: `arm arm-${i}` }, `${version} ${weight}%`);
      arm.style.flexGrow = String(Math.max(weight, 1));
      return arm;
    }));
}

// What `auto` precision measured at build and chose, in a cell: the precision served and
// the drift from f32 (the whole measurement in the tooltip); "—" where nothing was measured
// (a precision asked for, or a CPU without native bf16: f32).
function precisionCell(v) {
  const p = v.artifact && v.artifact.precision;
  if (!p) return h("td", { class: "hint" }, "—");
  const d = p.drift;
  const cosine = d.measure === "least_cosine";
  const value = cosine ? `cos ${d.value.toFixed(5)}` : `Δ ${d.value.toFixed(4)}`;
  const verdict = p.chosen === p.measured ? "within the contract"
    : d.same_answers ? "outside the contract" : "answers changed";
  const title = `${p.measured} against f32 on ${d.texts} calibration texts: ` +
    `${cosine ? "least cosine" : "largest score change"} ${d.value} ` +
    `(tolerance ${d.tolerance}), ${verdict}: serves ${p.chosen}`;
  return h("td", { class: "precision", title }, h("code", {}, p.chosen), ` ${value}`);
}

function versionsTable(view) {
  const name = view.name;
  const rows = [...view.versions].reverse().map((v) => {
    const actions = h("td", { class: "actions" },
      h("button", {
        type: "button",
        class: "quiet",
        "data-key": `${name}:${v.version}:events`,
        onclick: () => followEvents(name, v.version),
      }, "Events"));
    if (canDeploy()) {
      const inSplit = v.state === "live" && (v.weight ?? 100) < 100;
      if (v.state === "built" || v.state === "retired" || inSplit) {
        actions.append(h("button", {
          type: "button",
          "data-key": `${name}:${v.version}:promote`,
          onclick: (e) => act(e.currentTarget,
            `Promote ${name} ${v.version}? It takes all requests; the other versions stop.`,
            "Promote", () => api("POST", `${versionPath(name, v.version)}/promote`),
            (r) => `${name}: ${r.version} is live`),
        }, "Promote"));
      }
      if (DELETABLE.has(v.state)) {
        actions.append(h("button", {
          type: "button",
          class: "danger",
          "data-key": `${name}:${v.version}:delete`,
          onclick: (e) => act(e.currentTarget,
            `Delete ${name} ${v.version}? Its archive and build are removed for good.`,
            "Delete", () => api("DELETE", versionPath(name, v.version)),
            () => `${name} ${v.version} deleted`),
        }, "Delete"));
      }
    }
    return h("tr", { "data-version": v.version },
      h("th", { scope: "row" }, v.version),
      h("td", {}, stateTag(v.state), v.weight !== undefined && v.weight < 100
        ? h("span", { class: "hint" }, ` ${v.weight}%`) : null),
      h("td", { class: "num" }, bytes(v.size)),
      h("td", {}, h("code", { title: v.sha256 }, v.sha256.slice(0, 12))),
      precisionCell(v),
      h("td", {}, when(v.stored_at * 1000)),
      h("td", {}, when(v.updated_at_ms)),
      h("td", { class: "error-cell" }, v.error || ""),
      actions);
  });
  return h("div", { class: "scroll" }, h("table", { class: "versions" },
    h("caption", { class: "sr-only" }, `Versions of ${name}`),
    h("thead", {}, h("tr", {},
      ["Version", "State", "Size", "sha256", "Precision", "Stored", "Changed", "Error", ""]
        .map((title) =>
        h("th", { scope: "col" }, title)))),
    h("tbody", {}, rows)));
}

function trafficEditor(view, traffic) {
  const name = view.name;
  const candidates = view.versions.filter((v) => PLACEABLE.has(v.state));
  if (candidates.length < 2) return null;
  const total = h("span", { class: "hint" });
  const inputs = candidates.map((v) => h("input", {
    type: "number",
    min: 0,
    max: 100,
    step: 1,
    inputmode: "numeric",
    id: `weight-${name}-${v.version}`,
    "data-key": `${name}:${v.version}:weight`,
    "data-version": v.version,
    value: traffic[v.version] ?? "",
  }));
  const sum = () => inputs.reduce((acc, input) => acc + (Number(input.value) || 0), 0);
  const showSum = () => { total.textContent = `total ${sum()}%`; };
  showSum();
  const form = h("form", {
    class: "weights",
    oninput: () => { session.editing.add(name); showSum(); },
    onreset: () => { session.editing.delete(name); setTimeout(() => { showSum(); refresh(); }); },
    onsubmit: (e) => {
      e.preventDefault();
      const split = {};
      for (const input of inputs) {
        if (input.value !== "") split[input.dataset.version] = Number(input.value);
      }
      const button = e.currentTarget.querySelector("button[type=submit]");
      act(button, `Split ${name}'s requests: ${splitText(split)}?`, "Apply split",
        async () => {
          const applied = await api("PUT", `${modelPath(name)}/traffic`, split);
          session.editing.delete(name);
          return applied;
        },
        (applied) => `${name}: ${splitText(applied)}`);
    },
  },
  h("p", { class: "hint" }, "Percent of requests per version, adding up to 100. Leave a " +
    "version empty to leave it out; 0 keeps it running for requests that name it."),
  h("div", { class: "weight-row" }, candidates.map((v, i) => h("label", {
    for: inputs[i].id,
  }, `${v.version} `, stateTag(v.state), inputs[i]))),
  h("div", { class: "weight-row" }, total,
    h("button", { type: "reset", class: "quiet" }, "Reset"),
    h("button", { type: "submit", "data-key": `${name}:split` }, "Apply split")));
  return h("details", {
    class: "traffic",
    open: session.open.has(name),
    ontoggle: (e) => {
      if (e.currentTarget.open) session.open.add(name);
      else session.open.delete(name);
    },
  },
    h("summary", { "data-key": `${name}:traffic` }, "Split traffic"), form);
}

// ---- events --------------------------------------------------------------------------

/** Follows a version's event stream (server-sent events, read through fetch so the token
 * travels in a header) until it settles or another is followed. */
async function followEvents(name, version) {
  if (session.follow) session.follow.abort();
  const controller = new AbortController();
  session.follow = controller;
  const list = $("#events");
  const badge = $("#events-state");
  list.replaceChildren();
  $("#events-of").textContent = `${name} ${version}`;
  badge.hidden = true;
  const show = (state) => {
    badge.textContent = state;
    badge.className = `state state-${state}`;
    badge.hidden = false;
  };
  try {
    const response = await fetch(`${versionPath(name, version)}/events`, {
      headers: { ...authHeaders(), Accept: "text/event-stream" },
      cache: "no-store",
      signal: controller.signal,
    });
    if (!response.ok) throw await errorOf(response);
    for await (const { event, data } of serverSentEvents(response.body)) {
      const line = JSON.parse(data);
      list.append(h("li", { class: `event event-${event}` },
        h("time", {}, when(line.at_ms).slice(11)),
        h("span", { class: "stage" }, line.stage),
        h("span", { class: "message" }, line.message)));
      // Keep the newest line in view inside the log, without scrolling the page.
      list.scrollTop = list.scrollHeight;
      if (line.state) {
        show(line.state);
        refresh();
      }
    }
  } catch (error) {
    if (controller.signal.aborted) return;
    list.append(h("li", { class: "event event-error" }, h("span", { class: "message" },
      `the event stream broke off: ${error.message}`)));
  } finally {
    if (session.follow === controller) session.follow = null;
  }
}

/** The events of a text/event-stream body: `{event, data}` for each one with data. */
async function* serverSentEvents(body) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      let event = "message";
      const data = [];
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event = text;
        else if (field === "data") data.push(text);
      }
      if (data.length) yield { event, data: data.join("\n") };
    }
  }
}

// ---- upload --------------------------------------------------------------------------

/** POSTs `file` as the raw body, reporting progress; resolves to the stored version. */
function uploadArchive(name, file, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `${modelPath(name)}/versions`);
    xhr.setRequestHeader("Authorization", `Bearer ${session.token}`);
    xhr.setRequestHeader("Content-Type", "application/octet-stream");
    xhr.responseType = "json";
    xhr.upload.onprogress = (e) => { if (e.lengthComputable) onProgress(e.loaded / e.total); };
    xhr.onload = () => {
      const body = xhr.response;
      if (xhr.status === 202) resolve(body);
      else reject(new ApiError(xhr.status, (body && body.error) || `${xhr.status} ${xhr.statusText}`));
    };
    xhr.onerror = () => reject(new ApiError(0, "the upload broke off (network error)"));
    xhr.send(file);
  });
}

function chosenFile(file) {
  $("#drop-text").textContent = file ? `${file.name} (${bytes(file.size)})` :
    "Choose or drop a model archive (.tar.gz or .zip)";
}

async function onUpload(e) {
  e.preventDefault();
  const name = $("#upload-name").value.trim();
  const file = $("#upload-file").files[0];
  const error = $("#upload-error");
  const button = $("#upload-button");
  const progress = $("#upload-progress");
  const percent = $("#upload-percent");
  error.textContent = "";
  if (!file) {
    error.textContent = "Choose an archive first.";
    return;
  }
  button.disabled = true;
  progress.hidden = false;
  progress.value = 0;
  const show = (fraction) => {
    progress.value = Math.round(fraction * 100);
    percent.textContent = `${Math.round(fraction * 100)}%`;
  };
  show(0);
  try {
    const stored = await uploadArchive(name, file, show);
    show(1);
    percent.textContent = `stored as ${stored.version}`;
    toast(`${name} ${stored.version} stored: building`);
    refresh();
    followEvents(name, stored.version);
  } catch (err) {
    error.textContent = err.message;
    progress.hidden = true;
    percent.textContent = "";
  } finally {
    button.disabled = false;
  }
}

// ---- try it --------------------------------------------------------------------------

async function onPredict(e) {
  e.preventDefault();
  const model = $("#try-model").value;
  const text = $("#try-text").value;
  const out = $("#prediction");
  const button = $("#try-button");
  button.disabled = true;
  const started = performance.now();
  try {
    const response = await fetch(`/inference/${encodeURIComponent(model)}/predict`, {
      method: "POST",
      headers: { ...authHeaders(), "Content-Type": "application/json" },
      body: JSON.stringify({ text }),
      cache: "no-store",
    });
    if (!response.ok) throw await errorOf(response);
    const body = await response.json();
    const ms = performance.now() - started;
    const version = response.headers.get("so1s-model-version") || "?";
    const about = h("p", { class: "hint" }, `${model} ${version} · ${ms.toFixed(0)} ms`);
    if (Array.isArray(body.result)) {
      const values = body.result;
      out.replaceChildren(
        h("p", {}, h("strong", { id: "prediction-dim" }, `${values.length}`), " dimensions"),
        h("ol", { class: "values", id: "prediction-values" },
          values.slice(0, 8).map((x) => h("li", {}, x.toFixed(4)))),
        about);
    } else {
      out.replaceChildren(
        h("p", {}, h("strong", { id: "prediction-label" }, String(body.result)),
          h("span", { id: "prediction-score" }, ` ${(body.score * 100).toFixed(1)}%`)),
        about);
    }
  } catch (error) {
    out.replaceChildren(h("p", { class: "error" }, error.message));
  } finally {
    button.disabled = false;
  }
}

// ---- start ---------------------------------------------------------------------------

function start() {
  $("#sign-in-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const token = $("#token").value.trim();
    $("#sign-in-error").textContent = "";
    try {
      await signIn(token);
      $("#main").focus();
    } catch (error) {
      $("#sign-in-error").textContent = error.status === 401
        ? "That token is unknown or revoked." : error.message;
    }
  });
  $("#sign-out").addEventListener("click", () => signOut("Signed out."));
  $("#refresh").addEventListener("click", () => refresh());
  $("#upload-form").addEventListener("submit", onUpload);
  $("#try-form").addEventListener("submit", onPredict);
  const input = $("#upload-file");
  const drop = $("#drop");
  input.addEventListener("change", () => chosenFile(input.files[0]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    if (e.dataTransfer.files.length) {
      input.files = e.dataTransfer.files;
      chosenFile(input.files[0]);
    }
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden) refresh();
  });
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) {
    signIn(saved).catch(() => signOut("Your saved token is no longer accepted: sign in again."));
  } else {
    signOut();
  }
}

start();
