// opid-view: the page. Plain JavaScript and SVG, no library, no network beyond its own data files.
// Data files are scripts calling opidData(name, payload); they load over http and from file://.
"use strict";

const cache = {}, waiting = {};
function opidData(name, payload) {
  cache[name] = payload;
  (waiting[name] || []).forEach(resolve => resolve(payload));
  delete waiting[name];
}
function load(name) {
  if (name in cache) return Promise.resolve(cache[name]);
  return new Promise((resolve, reject) => {
    const first = !waiting[name];
    (waiting[name] = waiting[name] || []).push(resolve);
    if (first) {
      const s = document.createElement("script");
      s.src = "data/" + name + ".js";
      s.onerror = () => reject(new Error("cannot load data/" + name + ".js"));
      document.head.appendChild(s);
    }
  });
}

const COLORS = ["#2563eb", "#dc2626", "#059669", "#d97706", "#7c3aed", "#0891b2", "#be185d", "#4b5563"];
const DEFAULT_CURVES = ["success", "score", "loss", "format_invalid_rate", "mean_steps", "kl",
                        "opid/adv_skill_step_share", "opid/adv_skill_episode_share"];
const main = document.getElementById("main"), tip = document.getElementById("tip");
let RUNS = [], chosenCurves = null;

const esc = s => String(s == null ? "" : s).replace(/[&<>"']/g, c => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const pct = x => x == null ? "–" : (100 * x).toFixed(1) + " %";
const fmt = v => typeof v !== "number" ? String(v) : (Math.abs(v) >= 1000 || Number.isInteger(v)) ? String(v)
  : Math.abs(v) >= 0.01 ? v.toFixed(4).replace(/0+$/, "").replace(/\.$/, "") : v.toPrecision(3);
const outcome = won => won ? '<span class="won">won</span>' : '<span class="lost">lost</span>';
const where = s => s.phase === "train" ? "update " + (s.update + 1) : (s.label || s.phase);
const hashParams = () => new URLSearchParams(location.hash.split("?")[1] || "");
const link = (view, params) => "#" + view + "?" + new URLSearchParams(params).toString();

function showTip(evt, text) {
  tip.textContent = text;
  tip.hidden = false;
  const x = Math.min(evt.clientX + 14, window.innerWidth - tip.offsetWidth - 8);
  tip.style.left = x + "px";
  tip.style.top = (evt.clientY + 16) + "px";
}
function hideTip() { tip.hidden = true; }

// ---- the run: command, versions, config, learning curves -----------------------------------------

function niceTicks(lo, hi, n) {
  if (lo === hi) { lo -= 0.5; hi += 0.5; }
  const raw = (hi - lo) / n, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => s >= raw);
  const ticks = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) ticks.push(+v.toPrecision(12));
  return ticks;
}

function tickFormat(ticks) {
  // as many decimals as the tick step needs; scientific notation when that is more than 4
  const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : Math.abs(ticks[0]) || 1;
  const mag = Math.floor(Math.log10(step)), mantissa = +(step / Math.pow(10, mag)).toFixed(6);
  const decimals = Math.max(0, -mag + (Number.isInteger(mantissa) ? 0 : 1));
  const top = Math.max(...ticks.map(Math.abs));
  const digits = Math.max(1, Math.ceil(Math.log10(top / step) + 1e-9)) + (Number.isInteger(mantissa) ? 0 : 1);
  return v => v === 0 ? "0" : decimals <= 4 ? v.toFixed(decimals) : v.toExponential(digits);
}

function chart(key, series) {
  const W = 380, H = 230, R = 12, T = 10, B = 40;
  const pts = series.flatMap(s => s.points);
  if (!pts.length) return "";
  let x0 = Math.min(...pts.map(p => p[0])), x1 = Math.max(...pts.map(p => p[0]));
  let y0 = Math.min(...pts.map(p => p[1])), y1 = Math.max(...pts.map(p => p[1]));
  if (x0 === x1) { x0 -= 1; x1 += 1; }
  const yt = niceTicks(y0, y1, 4);
  y0 = Math.min(y0, yt[0]); y1 = Math.max(y1, yt[yt.length - 1]);
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const yfmt = tickFormat(yt);
  // room left of the axis for the axis title (x 6-18) and the longest tick label (10 px text: about
  // 6 px a character), e.g. 1.0000010e-1
  const L = Math.max(54, 26 + 6 * Math.max(...yt.map(v => yfmt(v).length)));
  const xt = niceTicks(x0, x1, Math.min(8, x1 - x0)).filter(v => Number.isInteger(v));
  const sx = x => L + (x - x0) / (x1 - x0) * (W - L - R), sy = y => H - B - (y - y0) / (y1 - y0) * (H - T - B);
  let svg = `<svg viewBox="0 0 ${W} ${H}" data-key="${esc(key)}" role="img" aria-label="${esc(key)} by update">`;
  for (const v of yt) svg += `<line x1="${L}" x2="${W - R}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/>` +
    `<text x="${L - 5}" y="${sy(v) + 4}" font-size="10" text-anchor="end" fill="#6b7280">${yfmt(v)}</text>`;
  for (const v of xt) svg += `<line x1="${sx(v)}" x2="${sx(v)}" y1="${H - B}" y2="${H - B + 4}" stroke="#9ca3af"/>` +
    `<text x="${sx(v)}" y="${H - B + 15}" font-size="10" text-anchor="middle" fill="#6b7280">${v}</text>`;
  svg += `<line x1="${L}" x2="${W - R}" y1="${H - B}" y2="${H - B}" stroke="#9ca3af"/>`;
  svg += `<text x="${(L + W - R) / 2}" y="${H - 6}" font-size="11" text-anchor="middle" fill="#374151">update</text>`;
  svg += `<text x="12" y="${(T + H - B) / 2}" font-size="11" text-anchor="middle" fill="#374151" transform="rotate(-90 12 ${(T + H - B) / 2})">${esc(key)}</text>`;
  series.forEach(s => {
    if (!s.points.length) return;
    svg += `<polyline fill="none" stroke="${s.color}" stroke-width="1.8" points="${s.points.map(p => sx(p[0]) + "," + sy(p[1])).join(" ")}"/>`;
    if (s.points.length <= 60) s.points.forEach(p => svg += `<circle cx="${sx(p[0])}" cy="${sy(p[1])}" r="2.2" fill="${s.color}"/>`);
  });
  svg += `<line class="guide" x1="0" x2="0" y1="${T}" y2="${H - B}" stroke="#111827" stroke-dasharray="3 3" visibility="hidden"/>`;
  svg += `<rect class="hover" x="${L}" y="${T}" width="${W - L - R}" height="${H - T - B}" fill="transparent"/>`;
  return svg + "</svg>";
}

function wireChart(div, key, series) {
  const svg = div.querySelector("svg"), guide = svg.querySelector(".guide"), rect = svg.querySelector(".hover");
  const box = svg.viewBox.baseVal, xs = [...new Set(series.flatMap(s => s.points.map(p => p[0])))].sort((a, b) => a - b);
  const L = +rect.getAttribute("x"), Wd = +rect.getAttribute("width");
  const x0 = xs[0], x1 = xs.length > 1 ? xs[xs.length - 1] : xs[0] + 1;
  rect.addEventListener("mousemove", evt => {
    const r = svg.getBoundingClientRect(), vx = (evt.clientX - r.left) / r.width * box.width;
    const want = x0 - (x0 === x1 ? 1 : 0) + (vx - L) / Wd * (x1 - x0 + (x0 === x1 ? 2 : 0));
    const x = xs.reduce((a, b) => Math.abs(b - want) < Math.abs(a - want) ? b : a);
    const px = L + (x - (x0 === x1 ? x0 - 1 : x0)) / ((x0 === x1 ? 2 : x1 - x0)) * Wd;
    guide.setAttribute("x1", px); guide.setAttribute("x2", px); guide.setAttribute("visibility", "visible");
    const lines = series.map(s => { const p = s.points.find(q => q[0] === x); return p ? `${s.name}: ${+p[1].toPrecision(7)}` : null; }).filter(Boolean);
    showTip(evt, `${key} at update ${x}\n` + lines.join("\n"));
  });
  rect.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); hideTip(); });
}

function renderCurves(box) {
  const keys = new Set();
  RUNS.forEach(r => r.metrics.forEach(row => Object.entries(row).forEach(([k, v]) => {
    if (k !== "update" && typeof v === "number") keys.add(k);
  })));
  const all = [...keys].sort();
  if (!all.length) { box.innerHTML = '<p class="muted">No metrics.jsonl in these runs.</p>'; return; }
  if (!chosenCurves) chosenCurves = DEFAULT_CURVES.filter(k => keys.has(k));
  if (!chosenCurves.length) chosenCurves = all.slice(0, 4);
  box.innerHTML = `<div class="legend">${RUNS.map((r, i) => `<span><i style="background:${COLORS[i % COLORS.length]}"></i>${esc(r.name)}</span>`).join("")}</div>
    <details><summary>Pick metrics (${chosenCurves.length} of ${all.length} shown)</summary><div class="picker">
    ${all.map(k => `<label><input type="checkbox" value="${esc(k)}" ${chosenCurves.includes(k) ? "checked" : ""}> ${esc(k)}</label>`).join("")}
    </div></details><div class="charts"></div>`;
  box.querySelectorAll(".picker input").forEach(cb => cb.addEventListener("change", () => {
    chosenCurves = [...box.querySelectorAll(".picker input:checked")].map(c => c.value);
    renderCurves(box);
    box.querySelector("details").open = true;
  }));
  const grid = box.querySelector(".charts");
  for (const key of chosenCurves) {
    // x is the update as the console counts it: update 1 is the first
    const series = RUNS.map((r, i) => ({name: r.name, color: COLORS[i % COLORS.length],
      points: r.metrics.filter(row => typeof row[key] === "number").map(row => [row.update + 1, row[key]])}));
    const div = document.createElement("div");
    div.className = "chart";
    div.innerHTML = `<div class="title">${esc(key)}</div>` + chart(key, series);
    grid.appendChild(div);
    if (div.querySelector("svg")) wireChart(div, key, series);
  }
}

function renderRun() {
  main.innerHTML = '<h2>Learning curves</h2><div id="curves"></div><div id="runs"></div>';
  renderCurves(document.getElementById("curves"));
  const box = document.getElementById("runs");
  for (const r of RUNS) {
    const info = r.run_info || {}, cfg = r.config || {};
    const argv = shellLine(info.argv);
    const versions = Object.entries(info.versions || {}).map(([k, v]) => `<tr><td>${esc(k)}</td><td class="mono">${esc(v)}</td></tr>`).join("");
    const warm = r.warmstart && Object.keys(r.warmstart).length ? Object.entries(r.warmstart).map(([k, v]) => `${esc(k)} ${esc(fmt(v))}`).join(" · ") : "";
    box.insertAdjacentHTML("beforeend", `<div class="card run"><h2>${esc(r.name)}</h2>
      <div class="muted mono">${esc(r.path)}</div>
      <p>${esc(cfg.env || "")} ${cfg.env_kwargs ? "<code>" + esc(JSON.stringify(cfg.env_kwargs)) + "</code>" : ""} ·
        method <b>${esc(cfg.algo || "–")}</b> · policy ${esc(cfg.policy || "–")} · seed ${esc(info.seed ?? cfg.seed ?? "–")} ·
        ${r.metrics.length} updates logged · ${r.trajectories} trajectories recorded · started ${esc(info.started || "–")}</p>
      ${argv ? `<h3>Command</h3><pre class="command">${esc(argv)}</pre>` : ""}
      ${warm ? `<h3>Warm start</h3><p class="mono">${warm}</p>` : ""}
      ${versions ? `<h3>Versions</h3><table>${versions}</table>` : ""}
      ${resumedList(info)}
      <details><summary>Config</summary><pre>${esc(JSON.stringify(cfg, null, 2))}</pre></details></div>`);
  }
}

function shellLine(argv) {
  return (argv || []).map(a => /^[\w@%+=:,./-]+$/.test(a) ? a : "'" + a.replace(/'/g, "'\\''") + "'").join(" ");
}

// Each later start of a resumed run: when, the command, and the versions that differ from the first start's.
function resumedList(info) {
  if (!Array.isArray(info.resumed) || !info.resumed.length) return "";
  const first = info.versions || {};
  const items = info.resumed.filter(r => r && typeof r === "object").map(r => {
    const changed = Object.entries(r.versions || {}).filter(([k, v]) => first[k] !== v)
      .map(([k, v]) => `${esc(k)} ${esc(first[k] ?? "–")} → ${esc(v)}`).join(" · ");
    return `<li>started ${esc(r.started || "–")}${changed ? ` · <b>other versions:</b> ${changed}` : " · same versions"}
      <pre class="command">${esc(shellLine(r.argv))}</pre></li>`;
  }).join("");
  return `<h3>Resumed</h3><ul class="resumed">${items}</ul>`;
}

// ---- evaluation ----------------------------------------------------------------------------------

function evalTable(r) {
  const evs = r.evaluations || [];
  if (!evs.length) return '<p class="muted">No evaluation results (eval.json, main_eval.json, eval_*.json) in this run.</p>';
  const splits = [...new Set(evs.flatMap(e => Object.keys(e.results)))];
  let html = `<table class="eval"><tr><th>split</th><th>task type</th>${evs.map(e => `<th class="num">${esc(e.name)}</th>`).join("")}</tr>`;
  for (const split of splits) {
    const types = [...new Set(evs.flatMap(e => Object.keys((e.results[split] || {}).by_type || {})))].sort();
    for (const t of ["ALL", ...types]) {
      html += `<tr${t === "ALL" ? ' style="font-weight:600"' : ""}><td>${esc(split)}</td><td>${esc(t)}</td>` + evs.map(e => {
        const res = e.results[split]; if (!res) return "<td></td>";
        const s = t === "ALL" ? res.all : (res.by_type || {})[t];
        return s ? `<td class="num" title="score ${fmt(s.score)}, ${fmt(s.mean_steps)} steps">${pct(s.success)} <span class="muted">(${s.episodes})</span></td>` : "<td></td>";
      }).join("") + "</tr>";
    }
  }
  return html + "</table>";
}

async function renderEval() {
  main.innerHTML = "<h2>Evaluation</h2><p class='muted'>Success per split and task type; the warm start stands before the trained policy. " +
    "Hover a cell for the score and mean steps. Below: each task's recorded episodes (click one to read it).</p>";
  for (const [k, r] of RUNS.entries()) {
    const card = document.createElement("div");
    card.className = "card";
    card.innerHTML = `<h2>${esc(r.name)}</h2>${evalTable(r)}<h3>Episodes per task</h3><div class="tasks muted">loading…</div>`;
    main.appendChild(card);
    const index = await load(`run${k}-index`);
    const evals = index.filter(s => s.phase === "eval");
    const box = card.querySelector(".tasks");
    if (!evals.length) { box.textContent = "No recorded evaluation episodes."; continue; }
    box.classList.remove("muted");
    // the warm start (a run's initial/ policy) before the trained one
    const labels = [...new Set(evals.map(s => s.label))].sort((a, b) => (b.startsWith("initial") ? 1 : 0) - (a.startsWith("initial") ? 1 : 0));
    const tasks = new Map();
    for (const s of evals) {
      const key = s.split + "\u0000" + s.task_id;
      if (!tasks.has(key)) tasks.set(key, {split: s.split, task_id: s.task_id, task_type: s.task_type, task: s.task, eps: {}});
      (tasks.get(key).eps[s.label] = tasks.get(key).eps[s.label] || []).push(s);
    }
    const rows = [...tasks.values()].sort(byTask).slice(0, 400);
    box.innerHTML = `<table><tr><th>split</th><th>task</th><th>type</th>${labels.map(l => `<th>${esc(l)}</th>`).join("")}</tr>` +
      rows.map(t => `<tr><td>${esc(t.split)}</td><td title="${esc(t.task)}">${esc(t.task_id)}</td><td>${esc(t.task_type)}</td>` +
        labels.map(l => `<td class="eps">${(t.eps[l] || []).map(s => `<a href="${link("traj", {run: k, i: s.i})}" class="${s.won ? "won" : "lost"}" title="${s.won ? "won" : "lost"}, ${s.steps} steps">${s.won ? "✓" : "✗"}</a>`).join("")}</td>`).join("") +
        "</tr>").join("") + "</table>" + (tasks.size > rows.length ? `<p class="muted">first ${rows.length} of ${tasks.size} tasks</p>` : "");
  }
}

// ---- trajectory browser --------------------------------------------------------------------------

const FILTERS = [["run", "run"], ["phase", "phase"], ["update", "update"], ["label", "evaluation"], ["split", "split"],
                 ["task_type", "task type"], ["outcome", "outcome"], ["method", "method"]];

async function allSummaries() {
  const out = [];
  for (let k = 0; k < RUNS.length; k++) (await load(`run${k}-index`)).forEach(s => out.push({...s, run: k}));
  return out;
}

function matches(s, p) {
  for (const [key] of FILTERS) {
    const want = p.get(key);
    if (want == null || want === "") continue;
    const have = key === "outcome" ? (s.won ? "won" : "lost") : key === "update" ? (s.update == null ? "" : String(s.update + 1)) : String(s[key]);
    if (have !== want) return false;
  }
  const q = (p.get("task") || "").trim().toLowerCase();
  return !q || String(s.task_id) === q || String(s.task || "").toLowerCase().includes(q);
}

async function renderBrowse() {
  const p = hashParams(), all = await allSummaries();
  const values = key => [...new Set(all.map(s => key === "outcome" ? (s.won ? "won" : "lost") : key === "update" ? (s.update == null ? null : s.update + 1) : s[key]))]
    .filter(v => v != null).sort((a, b) => typeof a === "number" ? a - b : String(a).localeCompare(String(b)));
  let html = `<h2>Trajectories</h2><div class="card filters" id="filters">`;
  for (const [key, title] of FILTERS) {
    const opts = values(key);
    html += `<label>${title}<select name="${key}"><option value="">all</option>${opts.map(v =>
      `<option value="${esc(v)}" ${p.get(key) === String(v) ? "selected" : ""}>${esc(key === "run" ? RUNS[v].name : v)}</option>`).join("")}</select></label>`;
  }
  html += `<label>task id or text<input name="task" value="${esc(p.get("task") || "")}" size="18"></label></div>`;
  const hits = all.filter(s => matches(s, p)), shown = hits.slice(0, 500);
  html += `<p id="count">${hits.length} of ${all.length} trajectories${hits.length > shown.length ? ` (first ${shown.length} listed)` : ""}</p>`;
  html += `<table id="trajectories"><tr><th>run</th><th>method</th><th>when</th><th>split</th><th class="num">task</th><th>type</th><th>outcome</th><th class="num">score</th><th class="num">steps</th><th>group</th><th>analysis</th><th>task text</th></tr>` +
    shown.map(s => `<tr class="click" data-href="${link("traj", {run: s.run, i: s.i})}"><td>${esc(RUNS[s.run].name)}</td><td>${esc(s.method)}</td><td>${esc(where(s))}</td><td>${esc(s.split)}</td><td class="num">${esc(s.task_id)}</td><td>${esc(s.task_type)}</td><td>${outcome(s.won)}</td><td class="num">${fmt(s.score)}</td><td class="num">${s.steps}</td><td>${esc(s.group_id)}</td><td>${s.analysed ? "yes" : ""}</td><td class="muted">${esc(String(s.task || "").slice(0, 90))}</td></tr>`).join("") + "</table>";
  main.innerHTML = html;
  const apply = () => {
    const q = new URLSearchParams();
    main.querySelectorAll("#filters select, #filters input").forEach(el => { if (el.value) q.set(el.name, el.value); });
    location.hash = "browse?" + q.toString();
  };
  main.querySelectorAll("#filters select").forEach(el => el.addEventListener("change", apply));
  main.querySelector("#filters input").addEventListener("change", apply);
  main.querySelectorAll("tr.click").forEach(tr => tr.addEventListener("click", () => { location.hash = tr.dataset.href.slice(1); }));
}

// ---- one trajectory, step by step ------------------------------------------------------------------

async function record(run, i) {
  const size = RUNS[run].chunk_size, chunk = await load(`run${run}-chunk${Math.floor(i / size)}`);
  return chunk[i % size];
}

function changedLines(prompt, previous) {
  if (previous == null) return prompt;
  const before = new Set(previous.split("\n"));
  return prompt.split("\n").filter(line => !before.has(line)).join("\n");
}

const SKILL_NAMES = {episode: "episode skill", step: "step skill", teacher: "teacher (routed skills)"};

function tokenHTML(step, component, scale) {
  const values = (step.teacher || {})[component];
  if (!step.tokens || !values) return esc(step.response);
  return step.tokens.map((tok, j) => {
    const v = values[j], a = Math.min(1, Math.abs(v) / scale);
    const bg = v > 0 ? `rgba(22,163,74,${(0.08 + 0.8 * a).toFixed(3)})` : v < 0 ? `rgba(220,38,38,${(0.08 + 0.8 * a).toFixed(3)})` : "transparent";
    return `<span class="tok" style="background:${bg}" data-v="${v}" data-c="${component}">${esc(tok)}</span>`;
  }).join("");
}

function trajectoryHTML(rec, run, i, component) {
  const steps = rec.steps || [];
  const components = [...new Set(steps.flatMap(s => Object.keys(s.teacher || {})))];
  if (!components.includes(component)) component = components[0];
  const scale = Math.max(1e-9, ...steps.flatMap(s => ((s.teacher || {})[component] || []).map(Math.abs)));
  let html = `<div class="card"><h2>${esc(RUNS[run].name)} · ${esc(where(rec))} · task ${esc(rec.task_id)} ${outcome(rec.won)}</h2>
    <p><b>Task:</b> ${esc(rec.task)}<br><span class="muted">${esc(rec.env_id)} · split ${esc(rec.split)} · type ${esc(rec.task_type)} ·
    method ${esc(rec.method)} · group ${esc(rec.group_id)} · trajectory ${esc(rec.traj_id)} · score ${fmt(rec.score)} · ${steps.length} steps</span></p>`;
  if ("analysis" in rec) {
    const a = rec.analysis;
    html += a ? `<div class="analysis"><h3>Analysis (hindsight, by the analyzer)</h3><dl>
      <dt>Summary</dt><dd>${esc(a.episode_summary)}</dd><dt>Episode skill</dt><dd class="episode-skill">${esc(a.episode_skill)}</dd>
      <dt>Critical steps and their step skills</dt><dd>${Object.keys(a.step_skills).length ? Object.entries(a.step_skills).map(([t, s]) =>
        `<div><a href="#step-${esc(t)}">step ${esc(t)}</a>: ${esc(s)}</div>`).join("") : "none"}</dd></dl></div>`
      : '<p class="bad badge">the analysis of this trajectory failed: no teacher signal</p>';
  }
  if (components.length) {
    html += `<p class="teacher-legend">Response tokens coloured by the self-teacher's term log π(y|h+skill) − log π(y|h)
      for <select id="component">${components.map(c => `<option value="${c}" ${c === component ? "selected" : ""}>${SKILL_NAMES[c] || c}</option>`).join("")}</select>:
      <span class="scale"></span> red pushed down, green pushed up; full colour at ±${fmt(scale)}. Hover a token for its value.</p>`;
  }
  html += `</div><div class="conversation">`;
  steps.forEach((s, t) => {
    const changed = changedLines(s.prompt, t ? steps[t - 1].prompt : null);
    html += `<div class="bubble env" id="step-${s.t}"><div class="who">environment · step ${s.t}</div><div class="obs">${esc(s.observation)}</div>
      <details><summary>prompt${t ? " (lines new since the last step)" : ""}</summary><pre>${esc(changed)}</pre></details>
      ${t ? `<details><summary>full prompt</summary><pre>${esc(s.prompt)}</pre></details>` : ""}</div>`;
    const badges = (s.format_valid ? "" : '<span class="badge bad">format invalid</span>') +
      (s.format_valid && !s.action_valid ? '<span class="badge bad">action invalid</span>' : "") +
      (s.critical ? '<span class="badge crit">critical step</span>' : "");
    const skills = Object.entries(s.skills || {}).map(([c, text]) => `<div class="skill">scored under the <b>${esc(SKILL_NAMES[c] || c)}</b>: “${esc(text)}”</div>`).join("");
    html += `<div class="bubble agent"><div class="who">agent</div><div class="response">${tokenHTML(s, component, scale)}</div>
      <div class="muted">action: <code>${esc(s.action ?? "(none)")}</code> · reward ${fmt(s.reward)} ${badges}</div>${skills}</div>`;
  });
  const last = steps[steps.length - 1];
  if (last && last.next_observation != null) {
    html += `<div class="bubble env end ${rec.won ? "" : "lost"}"><div class="who">environment · end (${rec.won ? "won" : "lost"}, score ${fmt(rec.score)})</div><div class="obs">${esc(last.next_observation)}</div></div>`;
  }
  return html + "</div>";
}

function wireTokens(box, rerender) {
  box.querySelectorAll(".tok").forEach(el => {
    el.addEventListener("mousemove", evt => showTip(evt, `teacher term ${(+el.dataset.v >= 0 ? "+" : "") + el.dataset.v} (${SKILL_NAMES[el.dataset.c] || el.dataset.c})\ntoken ${JSON.stringify(el.textContent)}`));
    el.addEventListener("mouseleave", hideTip);
  });
  const sel = box.querySelector("#component");
  if (sel) sel.addEventListener("change", () => rerender(sel.value));
}

async function renderTrajectory() {
  const p = hashParams(), run = +p.get("run"), i = +p.get("i");
  if (!RUNS[run]) { main.innerHTML = "<p>No such run.</p>"; return; }
  const rec = await record(run, i), index = await load(`run${run}-index`);
  const same = k => (s => (s[k] ?? null) === (rec[k] ?? null));
  const group = index.filter(s => ["phase", "update", "label", "group_id", "task_id"].every(k => same(k)(s)));
  const draw = component => {
    main.innerHTML = `<p><a href="#browse">← all trajectories</a> · same group: ${group.map(s => s.i === i ? `<b>${s.won ? "✓" : "✗"}</b>`
      : `<a class="${s.won ? "won" : "lost"}" href="${link("traj", {run, i: s.i})}">${s.won ? "✓" : "✗"}</a>`).join(" ")}</p>` + trajectoryHTML(rec, run, i, component);
    wireTokens(main, draw);
  };
  draw(p.get("component"));
}

// ---- two runs on the same tasks ------------------------------------------------------------------------

// evaluations first, then updates in order; tasks by split and id
const byTask = (x, y) => (x.phase === "eval" ? 0 : 1) - (y.phase === "eval" ? 0 : 1) || (x.update ?? 0) - (y.update ?? 0) ||
  String(x.label ?? "").localeCompare(String(y.label ?? "")) || String(x.split).localeCompare(String(y.split)) ||
  (+x.task_id - +y.task_id) || String(x.task_id).localeCompare(String(y.task_id));
const pairKey = s => [s.phase, s.phase === "train" ? s.update : s.label, s.split, s.task_id].join("\u0000");

async function renderCompare() {
  if (RUNS.length < 2) { main.innerHTML = "<h2>Compare runs</h2><p>Open two runs to compare them: <code>opid-view RUN_A RUN_B</code>.</p>"; return; }
  const p = hashParams(), a = +(p.get("a") ?? 0), b = +(p.get("b") ?? 1);
  const [ia, ib] = [await load(`run${a}-index`), await load(`run${b}-index`)];
  const group = idx => idx.reduce((m, s) => m.set(pairKey(s), [...(m.get(pairKey(s)) || []), s]), new Map());
  const ga = group(ia), gb = group(ib);
  const rows = [...ga.keys()].filter(k => gb.has(k)).map(k => {
    const A = ga.get(k), B = gb.get(k), ra = A.filter(s => s.won).length / A.length, rb = B.filter(s => s.won).length / B.length;
    return {k, A, B, ra, rb, d: rb - ra};
  }).sort((x, y) => Math.abs(y.d) - Math.abs(x.d) || byTask(x.A[0], y.A[0]));
  const differ = rows.filter(r => r.d !== 0).length;
  const sel = (name, v) => `<select name="${name}">${RUNS.map((r, k) => `<option value="${k}" ${k === v ? "selected" : ""}>${esc(r.name)}</option>`).join("")}</select>`;
  const eps = (list, run) => list.map(s => `<a class="${s.won ? "won" : "lost"}" href="${link("traj", {run, i: s.i})}">${s.won ? "✓" : "✗"}</a>`).join("");
  main.innerHTML = `<h2>Compare runs</h2><div class="card filters" id="pick"><label>run A${sel("a", a)}</label><label>run B${sel("b", b)}</label></div>
    <p id="summary">${rows.length} tasks played by both (same phase, update or evaluation, split and task id); <b>${differ}</b> with different outcomes, listed first.
    Click a row to read both side by side.</p>
    <table id="pairs"><tr><th>when</th><th>split</th><th class="num">task</th><th>type</th><th>${esc(RUNS[a].name)}</th><th>${esc(RUNS[b].name)}</th><th class="num">B − A</th></tr>` +
    rows.slice(0, 600).map(r => { const s = r.A[0]; return `<tr class="click${r.d ? " differ" : ""}" data-href="${link("pair", {a, ia: r.A[0].i, b, ib: r.B[0].i})}">
      <td>${esc(where(s))}</td><td>${esc(s.split)}</td><td class="num">${esc(s.task_id)}</td><td>${esc(s.task_type)}</td>
      <td class="eps">${eps(r.A, a)} ${pct(r.ra)}</td><td class="eps">${eps(r.B, b)} ${pct(r.rb)}</td>
      <td class="num ${r.d > 0 ? "won" : r.d < 0 ? "lost" : ""}">${r.d ? (r.d > 0 ? "+" : "") + (100 * r.d).toFixed(0) + " pts" : "="}</td></tr>`; }).join("") + "</table>";
  main.querySelectorAll("#pick select").forEach(el => el.addEventListener("change", () => {
    location.hash = "compare?" + new URLSearchParams({a: main.querySelector("[name=a]").value, b: main.querySelector("[name=b]").value});
  }));
  main.querySelectorAll("tr.click").forEach(tr => tr.addEventListener("click", evt => {
    if (evt.target.tagName !== "A") location.hash = tr.dataset.href.slice(1);
  }));
}

async function renderPair() {
  const p = hashParams(), sides = [[+p.get("a"), +p.get("ia")], [+p.get("b"), +p.get("ib")]];
  const recs = await Promise.all(sides.map(([run, i]) => record(run, i)));
  main.innerHTML = `<p><a href="${link("compare", {a: sides[0][0], b: sides[1][0]})}">← compare</a></p><div class="pair">${sides.map(() => "<div></div>").join("")}</div>`;
  main.querySelectorAll(".pair > div").forEach((col, j) => {
    const draw = component => { col.innerHTML = trajectoryHTML(recs[j], sides[j][0], sides[j][1], component); wireTokens(col, draw); };
    draw(null);
  });
}

// ---- routing -------------------------------------------------------------------------------------

const VIEWS = {run: renderRun, eval: renderEval, browse: renderBrowse, traj: renderTrajectory, compare: renderCompare, pair: renderPair};

async function route() {
  hideTip();
  const view = (location.hash.slice(1).split("?")[0]) || "run";
  const tab = {traj: "browse", pair: "compare"}[view] || view;
  document.querySelectorAll("#tabs a").forEach(a => a.classList.toggle("active", a.dataset.view === tab));
  main.dataset.view = view;
  main.dataset.ready = "";
  try {
    await (VIEWS[view] || renderRun)();
    main.dataset.ready = view;
  } catch (err) {
    main.innerHTML = `<p class="lost">${esc(err.message)}</p>`;
  }
}

load("runs").then(runs => {
  RUNS = runs;
  document.getElementById("run-names").textContent = runs.map(r => r.name).join(" · ");
  window.addEventListener("hashchange", route);
  route();
});
