# ruff: noqa: E501  (the page's CSS and script read better unwrapped)
"""The status page: one HTML document, inline CSS and JavaScript, no external assets.

It reads ``/api/overview`` once, then follows ``/api/events`` (Server-Sent Events, read with
``fetch`` so a bearer token can go in a header, never in a URL) and updates in place.  A
token comes from the form on the page or from the URL fragment ``#token=...`` (fragments are
not sent to the server); it is kept in ``sessionStorage`` only.  Every value is put into the
DOM as text, never as markup.
"""

from __future__ import annotations

from typing import Final

PAGE: Final = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ServiceStage job poller</title>
<style>
:root { --bg:#f7f7f8; --fg:#1b1b1f; --muted:#5b5b66; --card:#fff; --line:#d9d9e0;
  --ok:#116b2e; --okbg:#dcf5e3; --bad:#a3141c; --badbg:#fde2e2; --run:#0b4fa8; --runbg:#dfeafc;
  --warn:#8a5200; --warnbg:#fdf0d5; --idle:#4a4a55; --idlebg:#ececf0; --focus:#ffbf47; }
@media (prefers-color-scheme: dark) {
  :root { --bg:#121216; --fg:#ececf1; --muted:#a5a5b3; --card:#1c1c22; --line:#33333d;
    --ok:#7fe09b; --okbg:#12351f; --bad:#ff9ea2; --badbg:#431317; --run:#9cc3ff;
    --runbg:#142a4d; --warn:#ffd38a; --warnbg:#3d2b0a; --idle:#c9c9d4; --idlebg:#2a2a33; }
}
* { box-sizing: border-box; }
body { margin:0; font:15px/1.45 system-ui, sans-serif; background:var(--bg); color:var(--fg); }
header, main { max-width:1200px; margin:0 auto; padding:12px 16px; }
header { display:flex; flex-wrap:wrap; gap:8px 16px; align-items:center; justify-content:space-between; }
h1 { font-size:1.25rem; margin:0; }
h2 { font-size:1.05rem; margin:0 0 8px; }
.muted { color:var(--muted); }
.cards { display:grid; grid-template-columns:repeat(auto-fit, minmax(140px, 1fr)); gap:10px; margin-bottom:14px; }
.card, section.panel { background:var(--card); border:1px solid var(--line); border-radius:8px; padding:10px 12px; }
.card .n { font-size:1.6rem; font-weight:600; }
section.panel { margin-bottom:14px; }
.scroll { overflow-x:auto; }
table { width:100%; border-collapse:collapse; }
th, td { text-align:left; padding:6px 8px; border-top:1px solid var(--line); vertical-align:top; }
th { font-size:.85rem; color:var(--muted); border-top:none; }
.id { font-family:ui-monospace, monospace; word-break:break-all; }
button, input { font:inherit; color:inherit; }
button { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:4px 10px; cursor:pointer; }
button.link { border:none; background:none; padding:0; text-align:left; color:var(--run); text-decoration:underline; cursor:pointer; }
input { background:var(--card); border:1px solid var(--line); border-radius:6px; padding:4px 8px; }
:focus-visible { outline:3px solid var(--focus); outline-offset:2px; }
tr.selected td { background:var(--runbg); }
.st { display:inline-block; padding:1px 7px; border-radius:10px; font-size:.8rem; font-weight:600; white-space:nowrap; }
.st-SUCCEEDED { color:var(--ok); background:var(--okbg); }
.st-FAILED, .st-PARTIALLY_FAILED, .st-ROLLBACKED, .st-abandoned { color:var(--bad); background:var(--badbg); }
.st-RUNNING, .st-SCHEDULED, .st-SUBMITTED, .st-ROLLBACKING { color:var(--run); background:var(--runbg); }
.st-CANCELLED, .st-UNKNOWN, .st-SKIPPED { color:var(--warn); background:var(--warnbg); }
.st-none { color:var(--idle); background:var(--idlebg); }
.tasks { display:flex; flex-wrap:wrap; gap:3px; margin-top:4px; }
.tasks .st { font-size:.72rem; }
.bar { height:6px; background:var(--idlebg); border-radius:3px; overflow:hidden; margin-top:3px; max-width:240px; }
.bar > span { display:block; height:100%; background:var(--ok); }
ol.timeline { list-style:none; padding:0; margin:0; }
ol.timeline li { border-top:1px solid var(--line); padding:5px 0; display:grid; grid-template-columns:3.5em 16em 1fr; gap:6px; }
#token-form { display:flex; gap:6px; flex-wrap:wrap; align-items:center; }
#notice:empty { display:none; }
#notice { background:var(--warnbg); color:var(--warn); padding:6px 10px; border-radius:6px; margin-bottom:10px; }
.live-on { color:var(--ok); } .live-off { color:var(--bad); }
@media (max-width: 640px) {
  ol.timeline li { grid-template-columns:3em 1fr; }
  ol.timeline li .when { grid-column:2; }
  ol.timeline li .what { grid-column:1 / -1; }
  th.opt, td.opt { display:none; }
}
</style>
</head>
<body>
<header>
  <h1>ServiceStage job poller</h1>
  <form id="token-form" autocomplete="off">
    <label for="token">Access token</label>
    <input id="token" type="password" size="18">
    <button type="submit">Use token</button>
    <span id="live" class="live-off" role="status">offline</span>
  </form>
</header>
<main>
  <div id="notice" role="alert"></div>
  <div class="cards">
    <div class="card"><div class="muted">Queue depth</div><div class="n" id="c-queue">-</div></div>
    <div class="card"><div class="muted">Dead letters</div><div class="n" id="c-dead">-</div></div>
    <div class="card"><div class="muted">Tracked jobs</div><div class="n" id="c-tracked">-</div></div>
    <div class="card"><div class="muted">Live replicas</div><div class="n" id="c-replicas">-</div></div>
  </div>
  <section class="panel" id="detail" hidden aria-labelledby="detail-title">
    <div style="display:flex;justify-content:space-between;gap:8px;flex-wrap:wrap">
      <h2 id="detail-title" tabindex="-1">Job</h2>
      <button type="button" id="detail-close">Close</button>
    </div>
    <p class="muted" id="detail-state"></p>
    <ol class="timeline" id="timeline" aria-live="polite"></ol>
  </section>
  <section class="panel" aria-labelledby="h-tracked">
    <h2 id="h-tracked">Tracked jobs</h2>
    <div class="scroll"><table id="tracked"><thead><tr><th>Job</th><th>Status</th><th>Tasks</th><th class="opt">Outcome</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="panel" aria-labelledby="h-finished">
    <h2 id="h-finished">Recently finished</h2>
    <div class="scroll"><table id="finished"><thead><tr><th>Job</th><th>Status</th><th>Tasks</th><th class="opt">Outcome</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="panel" aria-labelledby="h-replicas">
    <h2 id="h-replicas">Replicas</h2>
    <div class="scroll"><table id="replicas"><thead><tr><th>Replica</th><th>Heartbeat deadline</th><th>State</th></tr></thead><tbody></tbody></table></div>
  </section>
  <section class="panel" aria-labelledby="h-dead">
    <h2 id="h-dead">Newest dead letters</h2>
    <div class="scroll"><table id="dead"><thead><tr><th>Reason</th><th>Message</th><th class="opt">At</th></tr></thead><tbody></tbody></table></div>
  </section>
</main>
<script>
"use strict";
const TERMINAL = new Set(["SUCCEEDED","FAILED","CANCELLED","PARTIALLY_FAILED","ROLLBACKED","SKIPPED"]);
const JOB_FINAL = new Set(["SUCCEEDED","FAILED","CANCELLED","PARTIALLY_FAILED","ROLLBACKED"]);
let token = sessionStorage.getItem("poller-token") || "";
const hash = new URLSearchParams(location.hash.slice(1));
if (hash.get("token")) {
  token = hash.get("token");
  sessionStorage.setItem("poller-token", token);
  history.replaceState(null, "", location.pathname + location.search);
}
const state = { tracked: new Map(), finished: new Map(), replicas: [], offset: 0, selected: null };
const $ = (id) => document.getElementById(id);
function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v; else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}
function notice(text) { $("notice").textContent = text || ""; }
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}
async function api(path) {
  const r = await fetch(path, { headers: headers(), cache: "no-store" });
  if (r.status === 401) { notice("An access token is needed to read this poller's state."); throw new Error("401"); }
  if (!r.ok) throw new Error(path + ": HTTP " + r.status);
  return r.json();
}
// Server-Sent Events over fetch (EventSource cannot send a bearer token).  Reconnects after
// the last ID seen unless the server ended the stream after a final event (onEnd).
function follow(path, onEvent, opts) {
  const ctl = { closed: false, abort: null, last: "" };
  (async () => {
    let delay = 500;
    while (!ctl.closed) {
      const abort = new AbortController();
      ctl.abort = abort;
      let ended = false;
      try {
        const h = headers({ "Accept": "text/event-stream" });
        if (ctl.last) h["Last-Event-ID"] = ctl.last;
        const r = await fetch(path, { headers: h, signal: abort.signal, cache: "no-store" });
        if (r.status === 401) { notice("An access token is needed to read this poller's state."); ctl.closed = true; break; }
        if (!r.ok) throw new Error("HTTP " + r.status);
        if (opts.onOpen) opts.onOpen();
        delay = 500;
        const reader = r.body.getReader();
        const dec = new TextDecoder();
        let buf = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) { ended = true; break; }
          buf += dec.decode(value, { stream: true });
          let cut;
          while ((cut = buf.search(/\r?\n\r?\n/)) >= 0) {
            const frame = buf.slice(0, cut);
            buf = buf.slice(cut).replace(/^\r?\n\r?\n/, "");
            let id = "", kind = "message", data = "";
            for (const line of frame.split(/\r?\n/)) {
              if (line.startsWith(":")) continue;
              const i = line.indexOf(":");
              const f = i < 0 ? line : line.slice(0, i);
              const v = i < 0 ? "" : line.slice(i + 1).replace(/^ /, "");
              if (f === "id") id = v; else if (f === "event") kind = v; else if (f === "data") data += v;
            }
            if (!data) continue;
            if (id) ctl.last = id;
            try { onEvent(id, kind, JSON.parse(data)); } catch (e) { console.error(e); }
          }
        }
      } catch (e) {
        if (ctl.closed) break;
      }
      if (opts.onDrop) opts.onDrop();
      if (ended && opts.endsAfterFinal && ctl.sawFinal) { if (opts.onEnd) opts.onEnd(); break; }
      await new Promise((res) => setTimeout(res, delay));
      delay = Math.min(delay * 2, 10000);
    }
  })();
  return { close() { ctl.closed = true; if (ctl.abort) ctl.abort.abort(); }, ctl };
}
function badge(status) {
  const s = status || "";
  return el("span", { class: "st st-" + (s || "none") }, s || "not seen yet");
}
function progress(job) {
  const tasks = job.tasks || [];
  const done = tasks.filter((t) => TERMINAL.has(t.status)).length;
  const cell = el("td", { "data-done": String(done), "data-total": String(tasks.length) });
  cell.append(el("span", { class: "progress" }, done + "/" + tasks.length));
  const bar = el("div", { class: "bar", role: "progressbar", "aria-valuemin": "0",
    "aria-valuemax": String(tasks.length), "aria-valuenow": String(done),
    "aria-label": "tasks done" });
  const fill = el("span");
  fill.style.width = (tasks.length ? (100 * done / tasks.length) : 0) + "%";
  bar.append(fill);
  cell.append(bar);
  const chips = el("div", { class: "tasks" });
  for (const t of [...tasks].sort((a, b) => a.task_index - b.task_index)) {
    const chip = badge(t.status);
    chip.title = t.task_index + " " + (t.task_name || "") + ": " + t.status;
    chip.textContent = (t.task_name || ("#" + t.task_index)) + " " + t.status;
    chips.append(chip);
  }
  cell.append(chips);
  return cell;
}
function key(job) { return job.project_id + ":" + job.job_id; }
function jobRow(job) {
  const status = job.status || "";
  const tr = el("tr", { "data-job-id": job.job_id, "data-project-id": job.project_id,
    "data-status": status, "data-tracking": String(!!job.tracking) });
  if (state.selected === key(job)) tr.className = "selected";
  const open = el("button", { type: "button", class: "link id",
    "aria-label": "Show the event timeline of job " + job.job_id,
    onclick: () => select(job) }, job.job_id);
  tr.append(el("td", {}, open, job.project_id ? el("div", { class: "muted" }, "project " + job.project_id) : null));
  tr.append(el("td", {}, badge(status)));
  tr.append(progress(job));
  tr.append(el("td", { class: "opt" }, job.outcome || (job.tracking ? "tracking" : "")));
  return tr;
}
function renderJobs() {
  // rows are rebuilt: keep the keyboard focus on the same job's button
  const focused = document.activeElement && document.activeElement.closest
    ? document.activeElement.closest("tr[data-job-id]") : null;
  const focusKey = focused ? focused.dataset.projectId + ":" + focused.dataset.jobId : null;
  for (const [id, map, empty] of [["tracked", state.tracked, "No job is being tracked."],
                                  ["finished", state.finished, "No job finished recently."]]) {
    const body = $(id).tBodies[0];
    const rows = [...map.values()].map(jobRow);
    if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "4", class: "muted" }, empty)));
    body.replaceChildren(...rows);
  }
  $("c-tracked").textContent = String(state.tracked.size);
  if (focusKey) {
    for (const tr of document.querySelectorAll("tr[data-job-id]")) {
      if (tr.dataset.projectId + ":" + tr.dataset.jobId === focusKey) { tr.querySelector("button").focus(); break; }
    }
  }
}
function renderReplicas() {
  const now = Date.now() / 1000 + state.offset;
  const rows = state.replicas.map((r) => {
    const left = r.deadline - now;
    return el("tr", {}, el("td", { class: "id" }, r.replica),
      el("td", {}, new Date(r.deadline * 1000).toISOString().replace(".000", "") +
        " (" + (left >= 0 ? "in " + left.toFixed(1) + " s" : (-left).toFixed(1) + " s ago") + ")"),
      el("td", {}, left > 0 ? badge("RUNNING") : badge("FAILED")));
  });
  for (const r of rows) { const s = r.lastChild.firstChild; s.textContent = s.classList.contains("st-RUNNING") ? "live" : "lapsed"; }
  if (!rows.length) rows.push(el("tr", {}, el("td", { colspan: "3", class: "muted" }, "No replica registered.")));
  $("replicas").tBodies[0].replaceChildren(...rows);
  $("c-replicas").textContent = String(state.replicas.filter((r) => r.deadline > now).length);
}
function apply(doc) {
  state.offset = doc.now - Date.now() / 1000;
  $("c-queue").textContent = String(doc.counts.queue);
  $("c-dead").textContent = String(doc.counts.dead);
  state.tracked = new Map(doc.tracked.map((j) => [key(j), j]));
  state.finished = new Map(doc.finished.map((j) => [key(j), j]));
  state.replicas = doc.replicas;
  const dead = doc.dead_letters.map((d) => el("tr", {}, el("td", {}, d.reason || ""),
    el("td", { class: "id" }, d.raw || ""), el("td", { class: "opt" }, d.at || "")));
  if (!dead.length) dead.push(el("tr", {}, el("td", { colspan: "3", class: "muted" }, "None.")));
  $("dead").tBodies[0].replaceChildren(...dead);
  renderJobs();
  renderReplicas();
}
let refreshTimer = null;
function refreshSoon(ms) {
  if (refreshTimer) return;
  refreshTimer = setTimeout(async () => {
    refreshTimer = null;
    try { apply(await api("/api/overview")); notice(""); } catch (e) { /* shown by api() */ }
  }, ms);
}
function isFinal(f) {
  return f.event === "job.abandoned" || (f.event === "job.status_changed" && JOB_FINAL.has(f.to_status));
}
// One event from the global stream: update the job in place, reconcile with the server soon.
function onGlobal(id, kind, f) {
  const k = f.project_id + ":" + f.job_id;
  let job = state.tracked.get(k) || state.finished.get(k);
  if (!job || (job && !job.tracking && !isFinal(f) && !state.tracked.has(k))) {
    job = { job_id: f.job_id, project_id: f.project_id, tracking: true, status: null, outcome: null, tasks: [] };
    state.finished.delete(k);
    state.tracked.set(k, job);
  }
  if (kind === "task.status_changed") {
    const idx = Number(f.task_index);
    const t = job.tasks.find((x) => x.task_index === idx);
    if (t) t.status = f.to_status;
    else job.tasks.push({ task_id: f.task_id, task_index: idx, task_name: f.task_name, status: f.to_status });
  } else {
    job.status = f.to_status || job.status;
  }
  if (isFinal(f)) {
    job.tracking = false;
    job.outcome = f.reason ? "abandoned: " + f.reason : f.to_status;
    state.tracked.delete(k);
    state.finished = new Map([[k, job], ...[...state.finished].filter(([x]) => x !== k)]);
  }
  renderJobs();
  refreshSoon(1000);
}
let detail = null;
function select(job) {
  if (detail) detail.close();
  state.selected = key(job);
  renderJobs();
  $("detail").hidden = false;
  $("detail-title").textContent = "Job " + job.job_id;
  $("detail-state").textContent = "Project " + job.project_id + " - following its events";
  $("timeline").replaceChildren();
  const q = "?project_id=" + encodeURIComponent(job.project_id);
  const path = "/api/jobs/" + encodeURIComponent(job.job_id) + "/events" + q;
  const opts = { endsAfterFinal: true, onEnd: () => { $("detail-state").textContent = "Project " + job.project_id + " - finished, every event shown"; } };
  detail = follow(path, (id, kind, f) => {
    if (isFinal(f)) detail.ctl.sawFinal = true;
    const what = kind === "task.status_changed"
      ? "task " + f.task_index + " " + (f.task_name || "") : kind === "job.abandoned" ? "job abandoned (" + f.reason + ")" : "job";
    $("timeline").append(el("li", { "data-seq": f.seq, "data-event-id": id },
      el("span", { class: "muted" }, "#" + f.seq), el("span", { class: "when muted" }, f.observed_at),
      el("span", { class: "what" }, what + ": ", f.from_status ? badge(f.from_status) : el("span", { class: "muted" }, "first seen"),
        " \u2192 ", badge(f.to_status))));
  }, opts);
  $("detail-title").focus();
}
$("detail-close").addEventListener("click", () => {
  if (detail) detail.close();
  detail = null; state.selected = null;
  $("detail").hidden = true; renderJobs();
});
$("token-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  token = $("token").value.trim();
  $("token").value = "";
  sessionStorage.setItem("poller-token", token);
  start();
});
let global = null;
function start() {
  if (global) global.close();
  notice("");
  refreshSoon(0);
  global = follow("/api/events", onGlobal, {
    onOpen: () => { $("live").textContent = "live"; $("live").className = "live-on"; refreshSoon(0); },
    onDrop: () => { $("live").textContent = "reconnecting"; $("live").className = "live-off"; },
  });
}
setInterval(renderReplicas, 1000);
setInterval(() => refreshSoon(0), 5000);
start();
</script>
</body>
</html>
"""
