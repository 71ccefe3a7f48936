// tunesmith ui: the pages' one script. Texts from runs (names, test sentences) are always set as
// text, never as HTML. Charts are SVG drawn here: no library, nothing fetched from a network.
"use strict";

const COLORS = ["#2457c5", "#d9480f", "#1b7f3b", "#7b2cbf", "#b08900", "#0b7285", "#c2255c"];

function el(tag, attrs = {}, ...children) {
  const svg = ["svg", "path", "line", "text", "g", "rect", "circle"].includes(tag);
  const node = svg ? document.createElementNS("http://www.w3.org/2000/svg", tag) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

async function api(path, options = {}) {
  const init = { headers: { Accept: "application/json" }, ...options };
  if (options.body !== undefined) {
    init.method = init.method || "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(options.body);
  }
  const answer = await fetch(path, init);
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const detail = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
    throw new Error(detail || `${answer.status} ${answer.statusText}`);
  }
  return data;
}

const fmt = (v, digits = 4) => (typeof v === "number" ? (Number.isInteger(v) ? String(v) : v.toFixed(digits)) : "–");
const seconds = (s) => (typeof s !== "number" ? "–" : s < 90 ? `${s.toFixed(0)} s` : s < 5400 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`);
const param = (name) => new URLSearchParams(location.search).get(name);
const runLink = (id, text) => el("a", { href: `/run?id=${encodeURIComponent(id)}`, text: text || id });

// ---- charts ---------------------------------------------------------------------------------
// series: [{name, points: [[x, y], ...]}]. One SVG, axes with their ranges, a legend below.
function lineChart(container, series, label) {
  container.replaceChildren();
  const drawn = series.filter((s) => s.points.length);
  if (!drawn.length) {
    container.append(el("p", { class: "muted", text: "No points yet." }));
    return;
  }
  const W = 600, H = 260, L = 52, R = 12, T = 12, B = 30;
  const xs = drawn.flatMap((s) => s.points.map((p) => p[0]));
  const ys = drawn.flatMap((s) => s.points.map((p) => p[1]));
  let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  if (x0 === x1) x1 = x0 + 1;
  if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
  const px = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const py = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const svg = el("svg", { class: "chart", viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": label });
  svg.append(el("line", { x1: L, y1: H - B, x2: W - R, y2: H - B, stroke: "#aab3c2" }),
             el("line", { x1: L, y1: T, x2: L, y2: H - B, stroke: "#aab3c2" }));
  for (const y of [y0, (y0 + y1) / 2, y1]) {
    svg.append(el("text", { x: L - 6, y: py(y) + 4, "text-anchor": "end", text: fmt(y, 3) }),
               el("line", { x1: L, y1: py(y), x2: W - R, y2: py(y), stroke: "#eef1f6" }));
  }
  svg.append(el("text", { x: L, y: H - 8, text: fmt(x0, 0) }),
             el("text", { x: W - R, y: H - 8, "text-anchor": "end", text: `step ${fmt(x1, 0)}` }));
  drawn.forEach((s, i) => {
    const d = s.points.map((p, j) => `${j ? "L" : "M"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join(" ");
    svg.append(el("path", { d, fill: "none", stroke: COLORS[i % COLORS.length], "stroke-width": 2, class: "curve",
                            "data-series": s.name, "data-points": s.points.length }));
    if (s.points.length === 1) {
      svg.append(el("circle", { cx: px(s.points[0][0]), cy: py(s.points[0][1]), r: 3, fill: COLORS[i % COLORS.length] }));
    }
  });
  const legend = el("div", { class: "legend" },
    drawn.map((s, i) => el("span", { style: `--swatch:${COLORS[i % COLORS.length]}`, text: s.name })));
  container.append(svg, legend);
}

// What a training step logs besides its loss: preference rewards and margins, GRPO's reward,
// KL and answer length (each task's training_loss extras).
const NOT_SIGNALS = new Set(["step", "epoch", "loss", "lr", "samples_per_second"]);

function curves(history) {
  const loss = { name: "train loss", points: [] };
  const val = {}, signals = {};
  for (const row of history) {
    if (typeof row.loss === "number") loss.points.push([row.step, row.loss]);
    for (const [key, value] of Object.entries(row)) {
      if (typeof value !== "number") continue;
      if (key.startsWith("val_") && key !== "val_loss") {
        (val[key] = val[key] || { name: key.slice(4), points: [] }).points.push([row.step, value]);
      } else if (!key.startsWith("val_") && !NOT_SIGNALS.has(key) && typeof row.loss === "number") {
        (signals[key] = signals[key] || { name: key, points: [] }).points.push([row.step, value]);
      }
    }
  }
  return { loss: [loss], val: Object.values(val), signals: Object.values(signals) };
}

// ---- runs page ------------------------------------------------------------------------------
async function runsPage() {
  let runs = [], sortKey = "started", ascending = false;
  const selected = new Set();
  const body = document.querySelector("#runs tbody");
  const compare = document.getElementById("compare");

  function render() {
    const needle = document.getElementById("filter").value.trim().toLowerCase();
    const shown = runs.filter((r) => !needle || [r.name, r.task, r.method, r.data, r.status, r.model]
      .some((v) => String(v).toLowerCase().includes(needle)));
    shown.sort((a, b) => {
      const [x, y] = [a[sortKey], b[sortKey]];
      const order = x === y ? 0 : x === null || x === undefined ? 1 : y === null || y === undefined ? -1 : x < y ? -1 : 1;
      return ascending ? order : -order;
    });
    body.replaceChildren(...shown.map((r) => el("tr", { "data-run": r.id },
      el("td", {}, el("input", { type: "checkbox", "aria-label": `Select ${r.id} for comparison`,
        checked: selected.has(r.id), onchange: (e) => { e.target.checked ? selected.add(r.id) : selected.delete(r.id); update(); } })),
      el("td", {}, runLink(r.id)),
      el("td", { text: r.task }), el("td", { text: r.method }), el("td", { text: r.data }),
      el("td", { class: "num", text: r.value === null ? "–" : `${r.split} ${r.metric} ${fmt(r.value)}` }),
      el("td", { class: "num", text: seconds(r.seconds) }),
      el("td", { class: "num", text: typeof r.trainable_pct === "number" ? `${r.trainable_pct.toFixed(2)}%` : "–" }),
      el("td", {}, el("span", { class: `status ${r.status}`, text: r.status })))));
    document.getElementById("count").textContent = `${shown.length} of ${runs.length} runs`;
  }
  function update() {
    compare.disabled = selected.size < 2 || selected.size > 5;
    compare.textContent = selected.size ? `Compare selected (${selected.size})` : "Compare selected";
  }
  async function refresh() {
    const data = await api("/api/runs");
    document.getElementById("root").textContent = data.root;
    runs = data.runs;
    render();
  }
  document.getElementById("filter").addEventListener("input", render);
  document.querySelectorAll("th button[data-sort]").forEach((b) => b.addEventListener("click", () => {
    ascending = sortKey === b.dataset.sort ? !ascending : true;
    sortKey = b.dataset.sort;
    render();
  }));
  compare.addEventListener("click", () => { location.href = `/compare?ids=${[...selected].map(encodeURIComponent).join(",")}`; });
  await refresh();
  setInterval(() => refresh().catch(() => {}), 3000);
  await startForm(refresh);
}

async function startForm(refreshRuns) {
  const choices = await api("/api/choices");
  const fill = (id, items, chosen) => document.getElementById(id).replaceChildren(
    ...items.map((item) => el("option", { value: item.value ?? item, text: item.label ?? item, selected: (item.value ?? item) === chosen })));
  fill("start-data", choices.data);
  fill("start-task", choices.tasks, "text-classification");
  fill("start-method", choices.methods, "lora");
  const form = document.getElementById("start");
  const error = document.getElementById("start-error");
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    error.textContent = "";
    const values = Object.fromEntries(new FormData(form).entries());
    for (const key of ["epochs", "max_length"]) values[key] = values[key] ? Number(values[key]) : null;
    if (!values.model) values.model = null;
    try {
      await api("/api/jobs", { body: values });
      showJobs();
    } catch (e) { error.textContent = e.message; }
  });
  async function showJobs() {
    const jobs = await api("/api/jobs");
    document.getElementById("jobs").replaceChildren(...jobs.slice().reverse().map((job) => el("div", { class: "job", "data-job": job.id },
      el("p", { class: "row" }, el("strong", { text: `Job ${job.id}: ` }), runLink(job.run_id),
        el("span", { class: `status ${job.state}`, text: job.state }),
        job.state === "running" ? el("button", { type: "button", class: "secondary", "aria-label": `Cancel job ${job.id}`,
          text: "Cancel", onclick: async () => { await api(`/api/jobs/${job.id}/cancel`, { body: {} }); showJobs(); } }) : null),
      el("pre", { class: "log", text: job.log.join("\n") }))));
    if (jobs.some((j) => j.state === "running")) setTimeout(() => showJobs().then(refreshRuns), 1500);
  }
  showJobs();
}

// ---- one run's page -------------------------------------------------------------------------
async function runPage() {
  const id = param("id");
  const run = await api(`/api/run?id=${encodeURIComponent(id)}`);
  document.title = `tunesmith: ${run.name}`;
  document.getElementById("run-title").textContent = run.id;
  const statusBadge = document.getElementById("status");
  const setStatus = (s) => { statusBadge.textContent = s; statusBadge.className = `status ${s}`; };
  setStatus(run.status);
  if (run.ending) document.getElementById("ending").textContent = run.ending.error;
  const resume = document.getElementById("resume");
  resume.hidden = !["interrupted", "failed"].includes(run.status);
  resume.addEventListener("click", async () => {
    resume.disabled = true;
    await api("/api/run/resume", { body: { id } });
    setStatus("running");
    follow();
  });
  if (run.report) {
    const report = document.getElementById("report");
    report.href = `/api/run/report?id=${encodeURIComponent(id)}`;
    report.hidden = false;
  }
  const facts = [["task", run.task], ["method", run.method], ["model", run.config.model], ["data", run.config.data],
                 ["metric", run.value === null ? "–" : `${run.split} ${run.metric} ${fmt(run.value)}`],
                 ["training time", seconds(run.seconds)],
                 ["trainable", typeof run.trainable_pct === "number" ? `${run.trainable_pct.toFixed(2)}%` : "–"],
                 ["lr", run.config.lr], ["epochs", run.config.epochs], ["max length", run.config.max_length]];
  document.getElementById("facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v ?? "–" })]));

  // Curves: the rows so far, then live ones while it trains (server-sent events).
  const history = [];
  const draw = () => {
    const c = curves(history);
    lineChart(document.getElementById("loss-chart"), c.loss, "Training loss by step");
    lineChart(document.getElementById("val-chart"), c.val, "Validation metrics by step");
    const signals = document.getElementById("signals-figure");
    signals.hidden = !c.signals.length;  // only tasks whose steps log more than a loss
    if (c.signals.length) lineChart(document.getElementById("signals-chart"), c.signals, "Training signals by step");
  };
  function follow() {
    history.length = 0;
    const source = new EventSource(`/api/run/events?id=${encodeURIComponent(id)}`);
    let pending = false;
    source.onmessage = (event) => {
      history.push(JSON.parse(event.data));
      if (!pending) { pending = true; requestAnimationFrame(() => { pending = false; draw(); }); }
    };
    source.addEventListener("end", (event) => {
      source.close();
      draw();
      const ended = JSON.parse(event.data).status;
      setStatus(ended);
      if (ended !== run.status && ended === "finished") location.reload();  // the results are in now
    });
    source.onerror = () => source.close();
  }
  draw();
  follow();
  results(run);

  document.getElementById("load-errors").addEventListener("click", async (event) => {
    const box = document.getElementById("errors");
    event.target.disabled = true;
    box.replaceChildren(el("p", { class: "muted", text: "Scoring the test split ..." }));
    try {
      const found = await api(`/api/run/errors?id=${encodeURIComponent(id)}`);
      if (!found.available) { box.replaceChildren(el("p", { class: "muted", text: found.reason })); return; }
      box.replaceChildren(
        el("p", { class: "muted", text: `${found.wrong} wrong of ${found.scored} test texts scored` +
          (found.scored < found.test_size ? ` (the first ${found.scored} of ${found.test_size})` : "") }),
        el("table", { id: "errors-table" }, el("thead", {}, el("tr", {}, ["Text", "Label", "Predicted", "Confidence"].map((h) => el("th", { scope: "col", text: h })))),
          el("tbody", {}, found.rows.map((r) => el("tr", {}, el("td", { text: r.text }), el("td", { text: r.label }),
            el("td", { text: r.predicted }), el("td", { class: "num", text: fmt(r.confidence, 3) }))))));
    } catch (e) { box.replaceChildren(el("p", { class: "error", text: e.message })); }
    finally { event.target.disabled = false; }
  });

  const pairLabel = document.getElementById("pair-label");
  pairLabel.hidden = !run.config.text_pair_col;
  document.getElementById("try").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("try-output");
    out.replaceChildren(el("p", { class: "muted", text: "Predicting ..." }));
    try {
      const answer = await api("/api/run/predict", { body: { id, text: document.getElementById("try-text").value,
        text_pair: run.config.text_pair_col ? document.getElementById("try-pair").value : null } });
      out.replaceChildren(answerView(answer));
    } catch (e) { out.replaceChildren(el("p", { class: "error", text: e.message })); }
  });
}

function answerView(answer) {
  if (answer.label !== undefined) {
    const scores = answer.scores || {};
    return el("div", { class: "answer" }, el("p", {}, "Prediction: ", el("strong", { id: "try-label", text: answer.label })),
      el("table", {}, el("tbody", {}, Object.entries(scores).map(([k, v]) => el("tr", {}, el("td", { text: k }), el("td", { class: "num", text: fmt(v, 3) }))))));
  }
  return el("pre", { class: "log", id: "try-label", text: JSON.stringify(answer, null, 2) });
}

function results(run) {
  const test = run.test || {}, base = run.baseline || {};
  const names = Object.keys(test).filter((k) => typeof test[k] === "number" && k !== "count");
  const versus = document.getElementById("versus");
  if (!names.length) {
    versus.replaceChildren(el("caption", { class: "muted", text: "The test split is scored when the run finishes." }));
  } else {
    versus.replaceChildren(el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Metric" }), el("th", { scope: "col", class: "num", text: "Untuned baseline" }),
      el("th", { scope: "col", class: "num", text: "Tuned" }))),
      el("tbody", {}, names.map((k) => el("tr", {}, el("th", { scope: "row", text: k }), el("td", { class: "num", text: fmt(base[k]) }), el("td", { class: "num", text: fmt(test[k]) })))));
  }
  const matrix = test.confusion_matrix;
  if (Array.isArray(matrix)) {
    const max = Math.max(1, ...matrix.flat());
    document.getElementById("confusion").replaceChildren(el("table", { id: "confusion-table" },
      el("caption", { class: "muted", text: "rows: true label; columns: predicted" }),
      el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "" }), run.labels.map((l) => el("th", { scope: "col", text: l })))),
      el("tbody", {}, matrix.map((row, i) => el("tr", {}, el("th", { scope: "row", text: run.labels[i] }),
        row.map((n) => el("td", { class: "cell", style: `background: rgba(36, 87, 197, ${(0.08 + 0.6 * n / max).toFixed(2)})`, text: n })))))));
  }
  const perClass = test.per_class;
  if (perClass && !Array.isArray(perClass)) {
    const cols = ["precision", "recall", "f1", "support"];
    document.getElementById("per-class").replaceChildren(el("thead", {}, el("tr", {}, el("th", { scope: "col", text: "Class" }), cols.map((c) => el("th", { scope: "col", class: "num", text: c })))),
      el("tbody", {}, Object.entries(perClass).map(([label, m]) => el("tr", {}, el("th", { scope: "row", text: label }), cols.map((c) => el("td", { class: "num", text: fmt(m[c], 3) }))))));
  }
}

// ---- compare --------------------------------------------------------------------------------
async function comparePage() {
  const ids = (param("ids") || "").split(",").filter(Boolean).slice(0, 5);
  const runs = await Promise.all(ids.map((id) => api(`/api/run?id=${encodeURIComponent(id)}`)));
  const cols = ["Run", "Task", "Method", "Model", "Metric", "Baseline", "Time", "Trainable", "Status"];
  document.getElementById("compare-table").replaceChildren(
    el("thead", {}, el("tr", {}, cols.map((c) => el("th", { scope: "col", text: c })))),
    el("tbody", {}, runs.map((r) => el("tr", {}, el("td", {}, runLink(r.id)), el("td", { text: r.task }), el("td", { text: r.method }),
      el("td", { text: r.model }), el("td", { class: "num", text: r.value === null ? "–" : `${r.split} ${r.metric} ${fmt(r.value)}` }),
      el("td", { class: "num", text: fmt((r.baseline || {})[r.metric]) }), el("td", { class: "num", text: seconds(r.seconds) }),
      el("td", { class: "num", text: typeof r.trainable_pct === "number" ? `${r.trainable_pct.toFixed(2)}%` : "–" }),
      el("td", {}, el("span", { class: `status ${r.status}`, text: r.status }))))));
  const val = runs.map((r) => ({ name: r.id, points: r.history.filter((h) => typeof h[`val_${r.metric}`] === "number").map((h) => [h.step, h[`val_${r.metric}`]]) }));
  const loss = runs.map((r) => ({ name: r.id, points: r.history.filter((h) => typeof h.loss === "number").map((h) => [h.step, h.loss]) }));
  lineChart(document.getElementById("compare-val"), val, "Validation metric by step, every run");
  lineChart(document.getElementById("compare-loss"), loss, "Training loss by step, every run");
}

const pages = { runs: runsPage, run: runPage, compare: comparePage };
pages[document.body.dataset.page]().catch((e) => {
  document.querySelector("main").prepend(el("p", { class: "error", role: "alert", text: e.message }));
});
