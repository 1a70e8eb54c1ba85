// hashsink dashboard: the daemon's status streamed (server-sent events over fetch, so that the
// bearer token travels in a header), the chart drawn as SVG, the rest polled every 2 s.
// No third-party code and nothing loaded from elsewhere: it runs on an air-gapped site.
"use strict";

const TOKEN_KEY = "hashsink-token";
const SVG = "http://www.w3.org/2000/svg";
const HOUR_MS = 3600e3, DAY_MS = 86400e3;

const app = {
  token: sessionStorage.getItem(TOKEN_KEY) || "",
  role: null,
  span: "hour",
  series: { hour: [], day: [] },
  bucket: { hour: 5000, day: 60000 },
  lastSeq: 0,
  status: null,
  drawPending: false,
  loginOpen: false,
};

const $ = (id) => document.getElementById(id);

function el(tag, attrs = {}, text) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

function svg(tag, attrs = {}, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ---- formatting -------------------------------------------------------------------------

function power(w) {
  if (w === null || w === undefined || !isFinite(w)) return "–";
  const a = Math.abs(w);
  if (a >= 1e6) return (w / 1e6).toFixed(2) + " MW";
  if (a >= 1e3) return (w / 1e3).toFixed(1) + " kW";
  return w.toFixed(0) + " W";
}

function hashrate(ths) {
  if (ths >= 1e6) return (ths / 1e6).toFixed(2) + " EH/s";
  if (ths >= 1e3) return (ths / 1e3).toFixed(2) + " PH/s";
  return ths.toFixed(1) + " TH/s";
}

function utc(ms, withDate) {
  const iso = new Date(ms).toISOString();
  return withDate ? iso.slice(0, 16).replace("T", " ") : iso.slice(11, 16);
}

// ---- the API ----------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (app.token) headers["Authorization"] = "Bearer " + app.token;
  // Every action is JSON, with a body or not: with no tokens the endpoint refuses anything else
  // (a page elsewhere cannot send JSON here without a preflight it never gets).
  if (options.body || options.method === "POST") headers["Content-Type"] = "application/json";
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    askToken();
    throw new Unauthorized("a token is needed");
  }
  const text = await response.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch (_) { body = { error: text }; }
  if (!response.ok) throw new Error((body && body.error) || response.statusText);
  return body;
}

function askToken() {
  if (app.loginOpen) return;
  app.loginOpen = true;
  $("login-token").value = "";
  $("login").showModal();
}

// ---- live status (server-sent events read with fetch) -----------------------------------

async function stream() {
  for (;;) {
    try {
      const headers = app.token ? { Authorization: "Bearer " + app.token } : {};
      const response = await fetch("/api/v1/stream", { headers });
      if (response.status === 401) { askToken(); throw new Error("unauthorized"); }
      if (!response.ok || !response.body) throw new Error(response.statusText);
      setLink(true);
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          let event = "message", data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) event = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (event === "status" && data) onStatus(JSON.parse(data));
        }
      }
    } catch (_) { /* reconnect below */ }
    setLink(false);
    await new Promise((r) => setTimeout(r, 2000));
  }
}

function setLink(up) {
  const l = $("link");
  l.textContent = up ? "live" : "offline";
  l.className = "badge " + (up ? "good" : "bad");
}

function onStatus(s) {
  app.status = s;
  $("clock").textContent = utc(s.now_ms, true) + " UTC";
  const mode = $("mode");
  if (s.mode === "shed") { mode.textContent = "shed by " + (s.mode_by || "operator"); mode.className = "badge bad"; }
  else if (s.mode === "curtail") { mode.textContent = "curtailed to " + power(s.curtail_w) + " by " + (s.mode_by || "operator"); mode.className = "badge warn"; }
  else { mode.textContent = "following the surplus"; mode.className = "badge good"; }
  // The plant's trip holds the fleet whatever the operator asked (Resume cannot lift it).
  if (s.protection) { mode.textContent = "plant: " + s.protection + "; " + mode.textContent; mode.className = "badge bad"; }
  mode.dataset.mode = s.mode;
  const k = s.kpis;
  $("kpi-surplus").textContent = s.surplus_w === null ? "no reading" : power(s.surplus_w);
  $("kpi-fleet").textContent = power(s.fleet_w);
  $("kpi-fleet").dataset.watts = String(s.fleet_w);
  $("kpi-allowed").textContent = power(s.allowed_w);
  $("kpi-hashrate").textContent = hashrate(s.hashrate_ths);
  $("kpi-absorbed").textContent = k.surplus_kwh > 0
    ? (100 * k.absorbed_kwh / k.surplus_kwh).toFixed(1) + " % of " + k.surplus_kwh.toFixed(0) + " kWh" : "–";
  $("kpi-import").textContent = k.import_kwh.toFixed(2) + " kWh";
  $("kpi-hashes").textContent = k.hashes_eh.toFixed(4) + " EH";
  $("kpi-commands").textContent = String(s.commands);
  for (const span of ["hour", "day"]) addPoint(span, s);
  scheduleDraw();
}

function addPoint(span, s) {
  const points = app.series[span];
  const size = app.bucket[span];
  const t = s.now_ms - (s.now_ms % size);
  const p = { t_ms: t, surplus_w: s.surplus_w, fleet_w: s.fleet_w, allowed_w: s.allowed_w };
  const last = points[points.length - 1];
  if (last && last.t_ms === t) points[points.length - 1] = p;
  else if (!last || t > last.t_ms) points.push(p);
  const keep = span === "hour" ? HOUR_MS : DAY_MS;
  while (points.length && points[0].t_ms < t - keep) points.shift();
}

// ---- the chart --------------------------------------------------------------------------

function scheduleDraw() {
  if (app.drawPending) return;
  app.drawPending = true;
  requestAnimationFrame(() => { app.drawPending = false; draw(); });
}

function niceStep(max, ticks) {
  const raw = max / ticks;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  for (const m of [1, 2, 2.5, 5, 10]) if (raw <= m * mag) return m * mag;
  return 10 * mag;
}

function draw() {
  const chart = $("chart");
  const points = app.series[app.span];
  while (chart.firstChild) chart.removeChild(chart.firstChild);
  const W = 900, H = 300, left = 64, right = 12, top = 10, bottom = 26;
  if (points.length === 0) {
    chart.appendChild(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle" }, "waiting for data"));
    return;
  }
  const end = points[points.length - 1].t_ms;
  const span = app.span === "hour" ? HOUR_MS : DAY_MS;
  const start = end - span;
  let max = 1;
  for (const p of points) max = Math.max(max, p.surplus_w || 0, p.fleet_w, p.allowed_w);
  const unit = max >= 2e6 ? [1e6, "MW"] : max >= 2e3 ? [1e3, "kW"] : [1, "W"];
  const step = niceStep(max / unit[0], 5) * unit[0];
  const top_w = Math.ceil(max / step) * step;
  const x = (t) => left + ((t - start) / span) * (W - left - right);
  const y = (w) => top + (1 - w / top_w) * (H - top - bottom);
  for (let w = 0; w <= top_w + 1e-9; w += step) {
    chart.appendChild(svg("line", { class: "grid-line", x1: left, x2: W - right, y1: y(w), y2: y(w) }));
    chart.appendChild(svg("text", { x: left - 6, y: y(w) + 4, "text-anchor": "end" },
      (w / unit[0]).toFixed(step / unit[0] < 1 ? 1 : 0) + " " + unit[1]));
  }
  const tickEvery = app.span === "hour" ? 10 * 60e3 : 3 * HOUR_MS;
  for (let t = Math.ceil(start / tickEvery) * tickEvery; t <= end; t += tickEvery) {
    chart.appendChild(svg("line", { class: "grid-line", x1: x(t), x2: x(t), y1: top, y2: H - bottom }));
    chart.appendChild(svg("text", { x: x(t), y: H - 8, "text-anchor": "middle" }, utc(t)));
  }
  const path = (get) => {
    let d = "", pen = false;
    for (const p of points) {
      const v = get(p);
      if (v === null || v === undefined || p.t_ms < start) { pen = false; continue; }
      d += (pen ? "L" : "M") + x(p.t_ms).toFixed(1) + "," + y(v).toFixed(1);
      pen = true;
    }
    return d;
  };
  const surplus = path((p) => p.surplus_w);
  if (surplus) chart.appendChild(svg("path", { id: "surplus-line", d: surplus, fill: "none", stroke: "#2a9d8f", "stroke-width": 2 }));
  chart.appendChild(svg("path", { id: "allowed-line", d: path((p) => p.allowed_w), fill: "none", stroke: "#6c757d", "stroke-width": 1, "stroke-dasharray": "4 3" }));
  chart.appendChild(svg("path", { id: "fleet-line", d: path((p) => p.fleet_w), fill: "none", stroke: "#e76f51", "stroke-width": 2 }));
  chart.dataset.points = String(points.length);
  chart.dataset.lastT = String(end);
}

async function loadHistory(span) {
  const h = await api("/api/v1/history?span=" + span);
  // Keep points the stream added after the snapshot was taken.
  const newer = app.series[span].filter((p) => h.points.length === 0 || p.t_ms > h.points[h.points.length - 1].t_ms);
  app.series[span] = h.points.concat(newer);
  scheduleDraw();
}

// ---- fleet, miners, events (polled) ------------------------------------------------------

const STATES = ["mining", "booting", "asleep", "unreachable", "faulted", "excluded"];

async function refreshFleet() {
  const f = await api("/api/v1/fleet");
  const total = STATES.reduce((n, s) => n + (f.by_state[s] || 0), 0) || 1;
  const bar = $("state-bar"), counts = $("state-counts");
  bar.replaceChildren();
  counts.replaceChildren();
  for (const s of STATES) {
    const n = f.by_state[s] || 0;
    const part = el("div", { class: "st-" + s, title: s + ": " + n });
    part.style.width = (100 * n / total) + "%";
    bar.appendChild(part);
    const c = el("span", { "data-state": s });
    c.appendChild(el("span", { class: "dot st-" + s }));
    c.appendChild(document.createTextNode(s + " " + n));
    counts.appendChild(c);
  }
  const rows = $("models");
  rows.replaceChildren();
  for (const m of f.by_model) {
    const tr = el("tr");
    for (const v of [m.model, m.firmware.join(", "), m.miners, m.mining, m.asleep, m.faulted + m.excluded, power(m.power_w), m.hashrate_ths.toFixed(0)]) {
      tr.appendChild(el("td", {}, String(v)));
    }
    rows.appendChild(tr);
  }
}

async function refreshMiners() {
  const q = encodeURIComponent($("miner-search").value.trim());
  const state = encodeURIComponent($("miner-state").value);
  const m = await api("/api/v1/miners?limit=200&q=" + q + "&state=" + state);
  $("miner-count").textContent = m.matched + " of " + m.fleet + (m.matched > m.miners.length ? " (first " + m.miners.length + " shown)" : "");
  const rows = $("miners");
  rows.replaceChildren();
  for (const r of m.miners) {
    const tr = el("tr", { "data-miner": String(r.id) });
    for (const v of [r.id, r.address, r.model, r.firmware, r.state, power(r.power_w), r.hashrate_ths.toFixed(1), r.fault || ""]) {
      tr.appendChild(el("td", {}, String(v)));
    }
    // How the controller uses it, and why (a refused level, a fault) on hover.
    const control = { levels: "levels", on_off: "on/off", none: "none" }[r.control] || "";
    tr.appendChild(el("td", r.control_why ? { title: r.control_why, class: "control-" + r.control } : {}, control));
    const td = el("td");
    const b = el("button", { type: "button", class: "miner-action" }, r.excluded ? "Include" : "Exclude");
    b.disabled = !canAct();
    b.addEventListener("click", () => {
      const verb = r.excluded ? "include" : "exclude";
      confirmThen(
        (r.excluded ? "Include" : "Exclude") + " miner " + r.id,
        r.excluded
          ? "Put miner " + r.id + " (" + r.address + ") back under control? It starts asleep."
          : "Take miner " + r.id + " (" + r.address + ") out of control? It is told to sleep once and then left alone.",
        () => act("/api/v1/miners/" + r.id + "/" + verb));
    });
    td.appendChild(b);
    tr.appendChild(td);
    rows.appendChild(tr);
  }
}

async function refreshEvents() {
  const e = await api("/api/v1/events/recent?limit=100&after=" + app.lastSeq);
  const rows = $("events");
  for (const ev of e.events) {
    app.lastSeq = Math.max(app.lastSeq, ev.seq);
    const tr = el("tr", { "data-kind": ev.kind });
    tr.appendChild(el("td", {}, utc(ev.at_ms, true)));
    tr.appendChild(el("td", {}, ev.kind));
    tr.appendChild(el("td", {}, ev.actor));
    tr.appendChild(el("td", { class: "detail" }, ev.detail));
    rows.insertBefore(tr, rows.firstChild);
  }
  while (rows.children.length > 100) rows.removeChild(rows.lastChild);
}

// Every site of the ledger (a region's daemons share one), today's totals; shown only where
// the ledger holds more than this site.
async function refreshSites() {
  const now = new Date();
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  const range = "from=" + new Date(midnight).toISOString() + "&to=" + new Date(now.getTime() + 60000).toISOString();
  const r = await api("/api/v1/sites?" + range);
  $("sites-card").hidden = r.sites.length < 2;
  const rows = $("sites");
  rows.textContent = "";
  const row = (name, t, cls) => {
    const tr = el("tr", cls ? { class: cls } : {});
    tr.appendChild(el("td", {}, name));
    t = t || {};
    const n = (v, d) => el("td", { class: "num" }, (v || 0).toFixed(d));
    tr.appendChild(n(t.energy_mwh, 3));
    tr.appendChild(n(t.absorbed_mwh, 3));
    tr.appendChild(n(t.import_mwh, 3));
    tr.appendChild(n(t.hashes_eh, 4));
    tr.appendChild(n(t.expected_btc, 6));
    tr.appendChild(el("td", { class: "num" }, String(t.curtailments || 0)));
    rows.appendChild(tr);
  };
  for (const s of r.sites) row(s.site + (s.this ? " (this site)" : ""), s.total, s.this ? "this" : "");
  row("All sites", r.all, "total");
}

async function refreshWho() {
  const w = await api("/api/v1/whoami");
  app.role = w.role;
  $("whoami").textContent = w.actor + " (" + w.role + ")";
  const can = canAct();
  for (const id of ["btn-shed", "btn-resume", "btn-curtail", "btn-reprobe"]) $(id).disabled = !can;
}

function canAct() { return app.role === "operator" || app.role === "admin"; }

// ---- operator actions ---------------------------------------------------------------------

function confirmThen(title, text, action) {
  const d = $("confirm");
  $("confirm-title").textContent = title;
  $("confirm-text").textContent = text;
  d.returnValue = "";
  d.onclose = () => { if (d.returnValue === "yes") action(); };
  d.showModal();
}

async function act(path, body) {
  const out = $("action-result");
  try {
    const r = await api(path, { method: "POST", body: body ? JSON.stringify(body) : undefined });
    out.textContent = "accepted: " + (r && r.accepted ? r.accepted : "ok");
  } catch (e) {
    out.textContent = "refused: " + e.message;
  }
  refreshEvents().catch(() => {});
  refreshMiners().catch(() => {});
}

function wire() {
  $("btn-shed").addEventListener("click", () => confirmThen("Shed the fleet",
    "Put every miner to sleep now? The fleet stays shed until someone resumes it.", () => act("/api/v1/shed")));
  $("btn-resume").addEventListener("click", () => confirmThen("Resume",
    "Lift the shed or curtailment and let the fleet follow the surplus again?", () => act("/api/v1/resume")));
  $("btn-reprobe").addEventListener("click", () => confirmThen("Offer levels again",
    "Offer power levels again to every miner used on/off? Each is tried at its next level change; one that refuses again goes back to on/off.",
    () => act("/api/v1/miners/reprobe")));
  $("curtail-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const mw = Number($("curtail-mw").value);
    if (!(mw >= 0)) return;
    confirmThen("Curtail", "Keep the fleet at or below " + mw + " MW, whatever the surplus?",
      () => act("/api/v1/curtail", { max_w: mw * 1e6 }));
  });
  for (const span of ["hour", "day"]) {
    $("span-" + span).addEventListener("click", () => {
      app.span = span;
      $("span-hour").classList.toggle("active", span === "hour");
      $("span-day").classList.toggle("active", span === "day");
      draw();
    });
  }
  let searchTimer = null;
  const research = () => { clearTimeout(searchTimer); searchTimer = setTimeout(() => refreshMiners().catch(() => {}), 200); };
  $("miner-search").addEventListener("input", research);
  $("miner-state").addEventListener("change", research);
  $("btn-token").addEventListener("click", askToken);
  $("login").addEventListener("close", () => {
    app.loginOpen = false;
    const t = $("login-token").value.trim();
    if (t) {
      app.token = t;
      sessionStorage.setItem(TOKEN_KEY, t);
      start();
    }
  });
}

let started = false;
async function start() {
  try {
    await refreshWho();
  } catch (_) { return; }
  await Promise.all([loadHistory("hour"), loadHistory("day")]).catch(() => {});
  if (started) return;
  started = true;
  stream();
  const poll = () => Promise.all([refreshFleet(), refreshMiners(), refreshEvents()]).catch(() => {});
  poll();
  setInterval(poll, 2000);
  setInterval(() => loadHistory("day").catch(() => {}), 30000);
  refreshSites().catch(() => {});
  setInterval(() => refreshSites().catch(() => {}), 30000);
}

wire();
start();
