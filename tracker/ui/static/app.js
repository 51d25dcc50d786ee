// The tracker web UI: hash-routed pages over MLflow's REST API and the native API; no build step.

const API = "/api/2.0/mlflow";
const NATIVE = "/api/tracker/v1";
const PAGE_SIZES = [25, 50, 100, 250];
const LIVE_THROTTLE_MS = 250;
const TERMINAL = new Set(["FINISHED", "FAILED", "KILLED"]);

// Test and benchmark hooks: each chart's state, and what the current page is doing.
const hooks = (window.__tracker = { charts: {}, page: null, ready: false, live: 0, requests: [] });

// -- helpers ---------------------------------------------------------------------------------

function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k in el && typeof v !== "string") el[k] = v;
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

function query(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v === undefined || v === null || v === "") continue;
    for (const one of Array.isArray(v) ? v : [v]) q.append(k, String(one));
  }
  return q.toString();
}

class ApiError extends Error {
  constructor(message, code, status) {
    super(message);
    this.code = code;
    this.status = status;
  }
}

async function call(method, path, body) {
  let url = path;
  const init = { method, headers: {} };
  if (body && method === "GET") {
    const q = query(body);
    if (q) url += "?" + q;
  } else if (body) {
    init.body = JSON.stringify(body);
    init.headers["Content-Type"] = "application/json";
  }
  const response = await fetch(url, init);
  const text = await response.text();
  let data = {};
  try {
    data = text ? JSON.parse(text) : {};
  } catch {
    data = { message: text };
  }
  if (!response.ok) {
    throw new ApiError(data.message || `${response.status} ${response.statusText}`, data.error_code, response.status);
  }
  return data;
}

const num = (v) => (typeof v === "number" ? v : Number(v)); // "NaN", "Infinity" arrive as strings
const pairs = (list) => Object.fromEntries((list || []).map((p) => [p.key, p.value]));

function fmtTime(ms) {
  if (!ms) return "";
  const d = new Date(Number(ms));
  const pad = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

function fmtDuration(ms) {
  if (ms === null || ms === undefined || ms < 0) return "";
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m ${Math.round(s % 60)}s`;
  return `${Math.floor(s / 3600)}h ${Math.round((s % 3600) / 60)}m`;
}

function fmtNum(v) {
  v = num(v);
  if (!Number.isFinite(v)) return String(v);
  if (v === 0) return "0";
  const a = Math.abs(v);
  if (a >= 1e5 || a < 1e-3) return v.toExponential(3);
  return String(Number(v.toPrecision(5)));
}

function statusBadge(status) {
  return h("span", { class: `status status-${status}` }, status);
}

function duration(info) {
  const start = Number(info.start_time);
  if (!start) return "";
  const end = info.end_time ? Number(info.end_time) : info.status === "RUNNING" ? Date.now() : null;
  return end ? fmtDuration(end - start) : "";
}

// A colour per run that stays the same on every page: a hue from the run id's hash.
function runColor(runId) {
  let x = 2166136261;
  for (const ch of runId) x = Math.imul(x ^ ch.charCodeAt(0), 16777619);
  const hue = (x >>> 0) % 360;
  return `hsl(${hue}, 70%, 38%)`;
}

function keyPath(key) {
  return key.split("/").map(encodeURIComponent).join("/");
}

function table(headers, rows, attrs) {
  return h("div", { class: "scroll" }, h("table", attrs || {},
    h("thead", {}, h("tr", {}, headers.map((x) => (x instanceof Node && x.tagName === "TH" ? x : h("th", { scope: "col" }, x))))),
    h("tbody", {}, rows)));
}

function kvTable(obj, caption) {
  const keys = Object.keys(obj).sort();
  if (!keys.length) return h("p", { class: "muted" }, `No ${caption.toLowerCase()}.`);
  return table(["Key", "Value"], keys.map((k) => h("tr", {}, h("td", {}, k), h("td", {}, String(obj[k])))), { "aria-label": caption });
}

function errorBox(err) {
  return h("p", { class: "error", role: "alert" }, err instanceof Error ? err.message : String(err));
}

function crumbs(...items) {
  const ol = document.getElementById("crumbs");
  ol.replaceChildren(...items.map(([label, href]) => h("li", {}, href ? h("a", { href }, label) : h("span", { "aria-current": "page" }, label))));
}

async function experimentName(id) {
  try {
    return (await call("GET", `${API}/experiments/get`, { experiment_id: id })).experiment.name;
  } catch {
    return `experiment ${id}`;
  }
}

// -- charts ----------------------------------------------------------------------------------

const PAD = { left: 56, right: 12, top: 8, bottom: 24 };

function niceTicks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const step0 = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(step0));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= step0) || step0;
  const out = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)));
  return out;
}

function parseBuckets(b) {
  const col = (p) => ({ step: p.step, timestamp: p.timestamp, value: p.value.map(num) });
  return {
    lower: b.lower, upper: b.upper, count: b.count,
    first: col(b.first), last: col(b.last), min: col(b.min), max: col(b.max),
    start: b.start_step, end: b.end_step,
  };
}

/** One metric of one or more runs, drawn from the server's buckets for the visible steps. */
class Chart {
  constructor(key, runs, options = {}) {
    this.key = key;
    this.runs = runs; // [{id, label, color}]
    this.options = options; // {cap: max step (replay), shared: {log, smoothing}}
    this.range = null; // [start, end] steps while zoomed; null: everything
    this.data = new Map(); // run id -> parsed buckets
    this.requests = 0;
    this.loading = null;
    this.hover = null;
    this.drag = null;
    this.timer = null;
    const id = `chart-${Math.random().toString(36).slice(2)}`;
    this.canvas = h("canvas", {
      tabindex: "0", role: "img", "aria-label": `Chart of ${key}; arrow keys pan, + and - zoom, 0 resets`,
      "aria-describedby": id, dataset: { key, points: "0", requests: "0" },
    });
    this.readout = h("output", { id, "aria-live": "off" }, "\u00a0");
    const btn = (label, title, fn) => h("button", { type: "button", title, "aria-label": `${title} (${key})`, onclick: fn }, label);
    this.el = h("figure", { class: "chart", dataset: { key } },
      h("figcaption", {}, h("span", { class: "title" }, key),
        btn("+", "Zoom in", () => this.zoomBy(0.5)),
        btn("−", "Zoom out", () => this.zoomBy(2)),
        btn("Reset", "Reset zoom", () => this.setRange(null))),
      this.canvas, this.readout);
    this.bind();
    hooks.charts[runs.map((r) => r.id).join(",") + ":" + key] = this;
  }

  get shared() {
    return this.options.shared || { log: false, smoothing: 0 };
  }

  bind() {
    const c = this.canvas;
    // Pointer capture keeps a drag that leaves the canvas ours until the button is released.
    c.addEventListener("pointermove", (e) => this.onMove(e));
    c.addEventListener("pointerleave", () => { if (!this.drag) { this.hover = null; this.draw(); } });
    c.addEventListener("pointerdown", (e) => {
      if (e.button !== 0) return;
      c.setPointerCapture(e.pointerId);
      const x = this.localX(e);
      this.drag = { x0: x, x1: x, pan: e.shiftKey, range: this.visible() };
    });
    c.addEventListener("pointerup", (e) => this.onUp(e));
    c.addEventListener("pointercancel", () => { this.drag = null; this.draw(); });
    c.addEventListener("dblclick", () => this.setRange(null));
    c.addEventListener("wheel", (e) => {
      e.preventDefault();
      const [lo, hi] = this.visible();
      const at = this.invertX(this.localX(e));
      const f = e.deltaY > 0 ? 1.25 : 0.8;
      this.setRange([at - (at - lo) * f, at + (hi - at) * f]);
    }, { passive: false });
    c.addEventListener("keydown", (e) => {
      const [lo, hi] = this.visible();
      const w = hi - lo;
      if (e.key === "ArrowLeft") this.setRange([lo - w * 0.2, hi - w * 0.2]);
      else if (e.key === "ArrowRight") this.setRange([lo + w * 0.2, hi + w * 0.2]);
      else if (e.key === "+" || e.key === "=") this.zoomBy(0.5);
      else if (e.key === "-") this.zoomBy(2);
      else if (e.key === "0" || e.key === "Escape") this.setRange(null);
      else return;
      e.preventDefault();
    });
    new ResizeObserver(() => this.draw()).observe(c);
  }

  localX(e) {
    return e.clientX - this.canvas.getBoundingClientRect().left;
  }

  extent() {
    let lo = Infinity, hi = -Infinity;
    for (const d of this.data.values()) {
      if (!d.count.length) continue;
      lo = Math.min(lo, d.first.step[0]);
      hi = Math.max(hi, d.last.step[d.last.step.length - 1]);
    }
    return lo <= hi ? [lo, hi] : [0, 1];
  }

  visible() {
    const [lo, hi] = this.range || this.full || this.extent();
    return hi > lo ? [lo, hi] : [lo - 0.5, hi + 0.5];
  }

  zoomBy(f) {
    const [lo, hi] = this.visible();
    const mid = (lo + hi) / 2;
    this.setRange([mid - ((hi - lo) / 2) * f, mid + ((hi - lo) / 2) * f]);
  }

  setRange(range) {
    if (range) {
      const full = this.full || this.extent();
      let [a, b] = range[0] <= range[1] ? range : [range[1], range[0]];
      if (b - a < 2) { const m = (a + b) / 2; a = m - 1; b = m + 1; }
      a = Math.max(Math.floor(a), full[0]);
      b = Math.min(Math.ceil(b), full[1]);
      range = a <= full[0] && b >= full[1] ? null : [a, b];
    }
    this.range = range;
    this.draw();
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this.load(), 120);
  }

  target() {
    return Math.max(50, Math.min(999, Math.round((this.canvas.clientWidth || 500) * 1.5)));
  }

  async fetch(params) {
    return Promise.all(this.runs.map(async (r) => {
      const url = `${NATIVE}/runs/${encodeURIComponent(r.id)}/metrics/${keyPath(this.key)}/buckets?${query(params)}`;
      hooks.requests.push(url);
      return [r.id, await call("GET", url)];
    }));
  }

  /** Fetch the buckets of the visible steps (of the whole series, up to `cap`, when not
   * zoomed: its extent is asked first, as one bucket, which the server answers from stored
   * summaries). Bucket widths are round numbers from a multiple of the width: the chunks a
   * loop logs then seldom straddle two buckets, and the server unpacks only those that do. */
  async load() {
    const token = (this.loading = {});
    this.requests += 1;
    let range = this.range;
    let results = null;
    if (!range) {
      const whole = await this.fetch(this.options.cap === undefined ? { buckets: 1 } : { buckets: 1, end_step: this.options.cap });
      let lo = Infinity, hi = -Infinity;
      for (const [, b] of whole) {
        if (b.count.length) { lo = Math.min(lo, b.start_step); hi = Math.max(hi, b.end_step); }
      }
      if (lo <= hi) {
        this.full = [lo, hi];
        range = [lo, hi];
      } else {
        results = whole; // no points yet
      }
    }
    if (!results) {
      const span = range[1] - range[0] + 1;
      const per = span / this.target();
      let width = 1;
      if (per > 1) {
        const mag = 10 ** Math.floor(Math.log10(per));
        width = [1, 2, 5, 10].map((m) => m * mag).find((w) => w >= per);
      }
      const start = Math.floor(range[0] / width) * width;
      const n = Math.ceil((range[1] + 1 - start) / width); // at most target() + 1
      results = await this.fetch({ buckets: n, start_step: start, end_step: start + n * width - 1 });
    }
    if (token !== this.loading) return; // a newer request was made meanwhile
    for (const [id, b] of results) this.data.set(id, parseBuckets(b));
    let points = 0, last = null;
    for (const d of this.data.values()) {
      points += d.count.reduce((a, b) => a + b, 0);
      if (d.last.step.length) last = Math.max(last ?? -Infinity, d.last.step[d.last.step.length - 1]);
    }
    Object.assign(this.canvas.dataset, {
      points: String(points), requests: String(this.requests), lastStep: last === null ? "" : String(last),
      range: this.range ? this.range.join(":") : "", drawn: "1",
    });
    this.draw();
  }

  y(v) {
    return this.shared.log ? (v > 0 ? Math.log10(v) : NaN) : v;
  }

  lineOf(d) {
    // Each bucket's first and last point, in step order; the min/max band keeps every spike.
    const xs = [], ys = [], ts = [];
    for (let i = 0; i < d.count.length; i++) {
      xs.push(d.first.step[i]); ys.push(d.first.value[i]); ts.push(d.first.timestamp[i]);
      if (d.count[i] > 1) { xs.push(d.last.step[i]); ys.push(d.last.value[i]); ts.push(d.last.timestamp[i]); }
    }
    const s = this.shared.smoothing;
    if (s > 0) {
      let acc = null;
      for (let i = 0; i < ys.length; i++) {
        if (!Number.isFinite(ys[i])) continue;
        acc = acc === null ? ys[i] : acc * s + ys[i] * (1 - s);
        ys[i] = acc;
      }
    }
    return { xs, ys, ts };
  }

  draw() {
    const c = this.canvas;
    const dpr = window.devicePixelRatio || 1;
    const w = c.clientWidth, ht = c.clientHeight;
    if (!w || !ht) return;
    if (c.width !== Math.round(w * dpr) || c.height !== Math.round(ht * dpr)) {
      c.width = Math.round(w * dpr);
      c.height = Math.round(ht * dpr);
    }
    const g = c.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, ht);
    const [x0, x1] = this.visible();
    let y0 = Infinity, y1 = -Infinity;
    for (const d of this.data.values()) {
      for (let i = 0; i < d.count.length; i++) {
        if (d.upper[i] < x0 || d.lower[i] > x1) continue;
        for (const v of [this.y(d.min.value[i]), this.y(d.max.value[i])]) {
          if (Number.isFinite(v)) { y0 = Math.min(y0, v); y1 = Math.max(y1, v); }
        }
      }
    }
    if (!(y0 <= y1)) { y0 = 0; y1 = 1; }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const padY = (y1 - y0) * 0.05;
    y0 -= padY; y1 += padY;
    const pw = w - PAD.left - PAD.right, ph = ht - PAD.top - PAD.bottom;
    const sx = (s) => PAD.left + ((s - x0) / (x1 - x0)) * pw;
    const sy = (v) => PAD.top + (1 - (v - y0) / (y1 - y0)) * ph;
    this.scale = { x0, x1, pw };
    // axes
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#4a5360";
    g.strokeStyle = "#e3e8ee";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (const t of niceTicks(y0, y1, 5)) {
      const yy = Math.round(sy(t)) + 0.5;
      g.beginPath(); g.moveTo(PAD.left, yy); g.lineTo(w - PAD.right, yy); g.stroke();
      g.fillText(this.shared.log ? fmtNum(10 ** t) : fmtNum(t), PAD.left - 4, yy);
    }
    g.textAlign = "center";
    g.textBaseline = "top";
    for (const t of niceTicks(x0, x1, Math.max(2, Math.floor(pw / 90)))) {
      g.fillText(fmtNum(t), sx(t), ht - PAD.bottom + 4);
    }
    g.save();
    g.beginPath();
    g.rect(PAD.left, PAD.top, pw, ph);
    g.clip();
    for (const r of this.runs) {
      const d = this.data.get(r.id);
      if (!d || !d.count.length) continue;
      // min/max band
      g.fillStyle = r.color;
      g.globalAlpha = 0.18;
      g.beginPath();
      const top = [], bottom = [];
      for (let i = 0; i < d.count.length; i++) {
        const lo = this.y(d.min.value[i]), hi = this.y(d.max.value[i]);
        if (!Number.isFinite(lo) || !Number.isFinite(hi)) continue;
        const xa = sx(Math.max(d.lower[i], d.first.step[i])), xb = sx(Math.min(d.upper[i], d.last.step[i]));
        top.push([xa, sy(hi)], [xb, sy(hi)]);
        bottom.push([xa, sy(lo)], [xb, sy(lo)]);
      }
      if (top.length) {
        g.moveTo(top[0][0], top[0][1]);
        for (const [a, b] of top) g.lineTo(a, b);
        for (let i = bottom.length - 1; i >= 0; i--) g.lineTo(bottom[i][0], bottom[i][1]);
        g.closePath();
        g.fill();
      }
      g.globalAlpha = 1;
      // line through each bucket's first and last point
      const { xs, ys } = this.lineOf(d);
      g.strokeStyle = r.color;
      g.lineWidth = 1.5;
      g.beginPath();
      let pen = false;
      for (let i = 0; i < xs.length; i++) {
        const v = this.y(ys[i]);
        if (!Number.isFinite(v)) { pen = false; continue; }
        if (pen) g.lineTo(sx(xs[i]), sy(v)); else g.moveTo(sx(xs[i]), sy(v));
        pen = true;
      }
      g.stroke();
      if (xs.length === 1 && Number.isFinite(this.y(ys[0]))) {
        g.fillStyle = r.color;
        g.fillRect(sx(xs[0]) - 2, sy(this.y(ys[0])) - 2, 4, 4);
      }
    }
    g.restore();
    if (this.drag && !this.drag.pan && Math.abs(this.drag.x1 - this.drag.x0) > 2) {
      g.fillStyle = "rgba(11, 87, 208, 0.15)";
      g.fillRect(Math.min(this.drag.x0, this.drag.x1), PAD.top, Math.abs(this.drag.x1 - this.drag.x0), ph);
    }
    if (this.hover !== null) {
      g.strokeStyle = "#1b1f24";
      g.beginPath(); g.moveTo(this.hover + 0.5, PAD.top); g.lineTo(this.hover + 0.5, PAD.top + ph); g.stroke();
    }
  }

  invertX(px) {
    const { x0, x1, pw } = this.scale || { x0: 0, x1: 1, pw: 1 };
    return x0 + ((px - PAD.left) / pw) * (x1 - x0);
  }

  onMove(e) {
    const x = this.localX(e);
    if (this.drag) {
      this.drag.x1 = x;
      if (this.drag.pan) {
        const [lo, hi] = this.drag.range;
        const ds = ((this.drag.x0 - x) / (this.scale?.pw || 1)) * (hi - lo);
        this.range = [lo + ds, hi + ds];
      }
      this.draw();
      return;
    }
    this.hover = x;
    const step = this.invertX(x);
    const parts = [];
    for (const r of this.runs) {
      const d = this.data.get(r.id);
      if (!d || !d.count.length) continue;
      let best = 0, dist = Infinity;
      for (let i = 0; i < d.count.length; i++) {
        const dd = step < d.lower[i] ? d.lower[i] - step : step > d.upper[i] ? step - d.upper[i] : 0;
        if (dd < dist) { dist = dd; best = i; }
      }
      const label = this.runs.length > 1 ? `${r.label}: ` : "";
      const range = d.count[best] > 1 ? ` (min ${fmtNum(d.min.value[best])}, max ${fmtNum(d.max.value[best])} over ${d.count[best]} points)` : "";
      parts.push(`${label}step ${d.last.step[best]} · value ${fmtNum(d.last.value[best])} · ${fmtTime(d.last.timestamp[best])}${range}`);
    }
    this.readout.textContent = parts.join(" | ") || "\u00a0";
    this.draw();
  }

  onUp() {
    const drag = this.drag;
    if (!drag) return;
    this.drag = null;
    if (drag.pan) {
      if (this.range) this.setRange(this.range);
    } else if (Math.abs(drag.x1 - drag.x0) > 5) {
      this.setRange([this.invertX(drag.x0), this.invertX(drag.x1)]);
    } else {
      this.draw();
    }
  }
}

/** Load charts as they come near the viewport: a run with hundreds of metrics stays quick. */
function lazyLoader() {
  const seen = new WeakSet();
  const io = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting && !seen.has(e.target)) {
        seen.add(e.target);
        e.target.__chart.load().catch((err) => e.target.__chart.el.append(errorBox(err)));
      }
    }
  }, { rootMargin: "400px" });
  return {
    watch(chart) { chart.canvas.__chart = chart; io.observe(chart.canvas); },
    disconnect() { io.disconnect(); },
  };
}

// -- pages -----------------------------------------------------------------------------------

let cleanup = [];
const main = () => document.getElementById("main");

function onLeave(fn) {
  cleanup.push(fn);
}

async function experimentsPage(root) {
  crumbs(["Experiments"]);
  const showDeleted = localStorage.getItem("tracker.showDeleted") === "1";
  const err = h("div");
  const name = h("input", { type: "text", id: "new-exp", required: true, placeholder: "name" });
  const create = h("form", { class: "toolbar", onsubmit: async (e) => {
    e.preventDefault();
    try {
      await call("POST", `${API}/experiments/create`, { name: name.value.trim() });
      name.value = "";
      route();
    } catch (x) { err.replaceChildren(errorBox(x)); }
  } }, h("label", { for: "new-exp" }, "New experiment"), name, h("button", { type: "submit" }, "Create"));
  const deleted = h("input", { type: "checkbox", id: "show-deleted", checked: showDeleted, onchange: () => {
    localStorage.setItem("tracker.showDeleted", deleted.checked ? "1" : "0");
    route();
  } });
  root.replaceChildren(h("h1", {}, "Experiments"), create,
    h("div", { class: "toolbar" }, deleted, h("label", { for: "show-deleted" }, "Show deleted experiments")), err);
  const res = await call("POST", `${API}/experiments/search`, { max_results: 1000, view_type: showDeleted ? "ALL" : "ACTIVE_ONLY", order_by: ["last_update_time DESC"] });
  const exps = res.experiments || [];
  const rows = exps.map((x) => {
    const counts = h("td", { class: "num" }, "…");
    const activity = h("td", {}, fmtTime(x.last_update_time));
    const nameCell = h("td", {}, h("a", { href: `#/experiments/${encodeURIComponent(x.experiment_id)}` }, x.name));
    const act = async (path) => {
      try { await call("POST", `${API}/experiments/${path}`, { experiment_id: x.experiment_id }); route(); } catch (e) { err.replaceChildren(errorBox(e)); }
    };
    const rename = () => {
      const input = h("input", { type: "text", value: x.name, "aria-label": `New name for ${x.name}` });
      const save = async (e) => {
        e.preventDefault();
        try { await call("POST", `${API}/experiments/update`, { experiment_id: x.experiment_id, new_name: input.value.trim() }); route(); } catch (e2) { err.replaceChildren(errorBox(e2)); }
      };
      nameCell.replaceChildren(h("form", { onsubmit: save, class: "toolbar" }, input, h("button", { type: "submit" }, "Save"), h("button", { type: "button", onclick: () => route() }, "Cancel")));
      input.focus();
    };
    const deletedNow = x.lifecycle_stage === "deleted";
    const row = h("tr", { dataset: { experimentId: x.experiment_id } }, nameCell, h("td", {}, x.experiment_id), counts, activity,
      h("td", {}, h("div", { class: "toolbar" },
        h("button", { type: "button", onclick: rename, "aria-label": `Rename ${x.name}` }, "Rename"),
        deletedNow
          ? h("button", { type: "button", onclick: () => act("restore"), "aria-label": `Restore ${x.name}` }, "Restore")
          : h("button", { type: "button", onclick: () => act("delete"), "aria-label": `Delete ${x.name}` }, "Delete"),
        deletedNow ? h("span", { class: "muted" }, "deleted") : null)));
    // The cheap summary: the newest run (last activity) and a count up to one page.
    call("POST", `${API}/runs/search`, { experiment_ids: [x.experiment_id], max_results: 1000, order_by: ["attributes.start_time DESC"], run_view_type: "ACTIVE_ONLY" })
      .then((r) => {
        const runs = r.runs || [];
        counts.textContent = runs.length + (r.next_page_token ? "+" : "");
        const newest = Math.max(Number(x.last_update_time || 0), ...runs.slice(0, 50).map((run) => Number(run.info.end_time || run.info.start_time || 0)));
        activity.textContent = fmtTime(newest);
      })
      .catch(() => { counts.textContent = "?"; });
    return row;
  });
  root.append(exps.length ? table(["Name", "ID", "Runs", "Last activity", "Actions"], rows, { id: "experiments" }) : h("p", {}, "No experiments yet."));
}

const ATTRS = [["Name", "attributes.run_name"], ["Status", "attributes.status"], ["Started", "attributes.start_time"]];

function orderKey(col) {
  const [kind, ...rest] = col.split(".");
  return `${kind}.\`${rest.join(".").replaceAll("`", "\\`")}\``;
}

async function runsPage(root, experimentId, params) {
  const name = await experimentName(experimentId);
  crumbs(["Experiments", "#/"], [name]);
  const store = `tracker.columns.${experimentId}`;
  const st = {
    filter: params.get("filter") || "",
    order: params.get("order") || "attributes.start_time DESC",
    size: Number(localStorage.getItem("tracker.pageSize")) || 50,
    tokens: [null], // tokens[i] asks for page i (null: the first page)
    index: 0,
    columns: JSON.parse(localStorage.getItem(store) || "null"),
    selected: new Set(),
    collapsed: new Set(),
  };
  const err = h("div", { id: "filter-error" });
  const filter = h("input", { type: "search", id: "filter", value: st.filter, placeholder: "metrics.loss < 0.5 and params.lr = '0.01'", "aria-describedby": "filter-error" });
  const form = h("form", { class: "toolbar", role: "search", onsubmit: (e) => { e.preventDefault(); st.filter = filter.value.trim(); restart(); } },
    h("label", { for: "filter" }, "Filter"), h("span", { class: "grow" }, filter), h("button", { type: "submit" }, "Search"));
  const compare = h("button", { type: "button", id: "compare", disabled: true, onclick: () => { location.hash = `#/compare?${query({ runs: [...st.selected].join(",") })}`; } }, "Compare selected");
  const size = h("select", { id: "page-size", onchange: () => { st.size = Number(size.value); localStorage.setItem("tracker.pageSize", size.value); restart(); } },
    PAGE_SIZES.map((n) => h("option", { value: String(n), selected: n === st.size }, String(n))));
  const prev = h("button", { type: "button", id: "prev", onclick: () => { st.index = Math.max(0, st.index - 1); load(); } }, "Previous");
  const next = h("button", { type: "button", id: "next", onclick: () => {
    if (!current.next) return;
    st.tokens[st.index + 1] = current.next;
    st.index += 1;
    load();
  } }, "Next");
  const pageInfo = h("span", { class: "muted", id: "page-info" });
  const colsBox = h("details", {}, h("summary", {}, "Columns"));
  const body = h("div");
  root.replaceChildren(h("h1", {}, name), form, err,
    h("div", { class: "toolbar" }, compare, colsBox, h("label", { for: "page-size" }, "Runs per page"), size, prev, next, pageInfo), body);

  let current = { runs: [], next: null };
  function chosen(runs) {
    if (st.columns) return st.columns;
    const metrics = new Set(), prm = new Set();
    for (const r of runs) {
      for (const m of r.data.metrics || []) metrics.add(`metrics.${m.key}`);
      for (const p of r.data.params || []) prm.add(`params.${p.key}`);
    }
    return [...[...metrics].sort().slice(0, 6), ...[...prm].sort().slice(0, 4)];
  }

  function renderColumns(runs) {
    const keys = { metrics: new Set(), params: new Set(), tags: new Set() };
    for (const r of runs) {
      for (const m of r.data.metrics || []) keys.metrics.add(m.key);
      for (const p of r.data.params || []) keys.params.add(p.key);
      for (const t of r.data.tags || []) if (!t.key.startsWith("mlflow.")) keys.tags.add(t.key);
    }
    const cols = chosen(runs);
    for (const c of cols) { const [k, ...rest] = c.split("."); keys[k]?.add(rest.join(".")); }
    const boxes = [];
    for (const kind of ["metrics", "params", "tags"]) {
      for (const k of [...keys[kind]].sort()) {
        const col = `${kind}.${k}`;
        const id = `col-${kind}-${k}`.replace(/[^\w-]/g, "_");
        boxes.push(h("label", { for: id }, h("input", { type: "checkbox", id, checked: cols.includes(col), onchange: (e) => {
          const now = chosen(runs).filter((c) => c !== col);
          if (e.target.checked) now.push(col);
          st.columns = now;
          localStorage.setItem(store, JSON.stringify(now));
          renderTable();
        } }), ` ${kind.slice(0, -1)}: ${k}`));
      }
    }
    colsBox.replaceChildren(h("summary", {}, "Columns"), h("div", { class: "cols" }, boxes));
  }

  function sortHeader(label, key) {
    const [k, dir] = st.order.split(/ (?=ASC$|DESC$)/);
    const active = k === key;
    const th = h("th", { scope: "col", "aria-sort": active ? (dir === "ASC" ? "ascending" : "descending") : "none" },
      h("button", { type: "button", class: "sort", dataset: { order: key }, onclick: () => {
        st.order = `${key} ${active && dir === "DESC" ? "ASC" : "DESC"}`;
        restart();
      } }, label, active ? (dir === "ASC" ? " ▲" : " ▼") : ""));
    return th;
  }

  function renderTable() {
    const runs = current.runs;
    const cols = chosen(runs);
    const ids = new Set(runs.map((r) => r.info.run_id));
    const children = new Map();
    const top = [];
    for (const r of runs) {
      const parent = pairs(r.data.tags)["mlflow.parentRunId"];
      if (parent && ids.has(parent)) {
        if (!children.has(parent)) children.set(parent, []);
        children.get(parent).push(r);
      } else top.push(r);
    }
    const rows = [];
    const emit = (r, depth) => {
      const info = r.info, m = pairs(r.data.metrics), p = pairs(r.data.params), t = pairs(r.data.tags);
      const kids = children.get(info.run_id) || [];
      const open = !st.collapsed.has(info.run_id);
      const box = h("input", { type: "checkbox", checked: st.selected.has(info.run_id), "aria-label": `Select ${info.run_name || info.run_id}`, onchange: (e) => {
        if (e.target.checked) st.selected.add(info.run_id); else st.selected.delete(info.run_id);
        compare.disabled = st.selected.size < 1;
        compare.textContent = `Compare selected (${st.selected.size})`;
      } });
      const toggle = kids.length
        ? h("button", { type: "button", class: "link", "aria-expanded": String(open), "aria-label": `${open ? "Collapse" : "Expand"} ${kids.length} child runs`, onclick: () => {
          if (open) st.collapsed.add(info.run_id); else st.collapsed.delete(info.run_id);
          renderTable();
        } }, open ? "▾" : "▸")
        : h("span", { class: "indent" });
      const value = (c) => {
        const [kind, ...rest] = c.split(".");
        const k = rest.join(".");
        const v = kind === "metrics" ? m[k] : kind === "params" ? p[k] : t[k];
        return h("td", { class: kind === "metrics" ? "num" : "" }, v === undefined ? "" : kind === "metrics" ? fmtNum(v) : v);
      };
      rows.push(h("tr", { dataset: { runId: info.run_id, depth: String(depth) } },
        h("td", {}, box),
        h("td", {}, h("span", { style: `padding-left:${depth * 18}px` }), toggle, depth ? "↳ " : "", h("a", { href: `#/runs/${info.run_id}` }, info.run_name || info.run_id)),
        h("td", {}, statusBadge(info.status)),
        h("td", {}, fmtTime(info.start_time)),
        h("td", { class: "num" }, duration(info)),
        cols.map(value)));
      if (open) for (const k of kids) emit(k, depth + 1);
    };
    for (const r of top) emit(r, 0);
    const headers = [h("th", { scope: "col" }, h("span", { class: "muted" }, "Select")), ...ATTRS.map(([l, k]) => sortHeader(l, k)), h("th", { scope: "col" }, "Duration"),
      ...cols.map((c) => sortHeader(c.replace(/^(metrics|params|tags)\./, (x) => ({ "metrics.": "", "params.": "param ", "tags.": "tag " })[x]), orderKey(c)))];
    body.replaceChildren(runs.length ? table(headers, rows, { id: "runs" }) : h("p", { id: "no-runs" }, "No runs match."));
    hooks.ready = true;
  }

  function restart() {
    st.tokens = [null];
    st.index = 0;
    load();
  }

  let asked = 0;
  async function load() {
    hooks.ready = false;
    const ticket = ++asked;
    let res = null, failure = null;
    try {
      res = await call("POST", `${API}/runs/search`, {
        experiment_ids: [experimentId], filter: st.filter, max_results: st.size,
        order_by: [st.order], page_token: st.tokens[st.index] || undefined,
      });
    } catch (x) {
      failure = x;
    }
    if (ticket !== asked) return; // a newer request (sort, filter, page) was made meanwhile
    if (failure) {
      current = { runs: [], next: null };
      err.replaceChildren(errorBox(failure));
    } else {
      err.replaceChildren();
      current = { runs: res.runs || [], next: res.next_page_token || null };
    }
    prev.disabled = st.index === 0;
    next.disabled = !current.next;
    pageInfo.textContent = `page ${st.index + 1}`;
    renderColumns(current.runs);
    renderTable();
  }
  await load();
}

async function runPage(root, runId) {
  const head = await call("GET", `${NATIVE}/log/head`); // first: the stream misses nothing after it
  const { run } = await call("GET", `${API}/runs/get`, { run_id: runId });
  const trail = (name) => crumbs(["Experiments", "#/"], [name, `#/experiments/${run.info.experiment_id}`], [run.info.run_name || runId]);
  trail(`experiment ${run.info.experiment_id}`);
  experimentName(run.info.experiment_id).then((name) => { if (hooks.page === "run") trail(name); });
  const shared = { log: false, smoothing: 0 };
  const infoBox = h("div");
  const paramsBox = h("div"), tagsBox = h("div"), dataBox = h("div");
  const charts = new Map();
  const grid = h("div", { class: "grid", id: "charts" });
  const loader = lazyLoader();
  onLeave(() => loader.disconnect());
  const search = h("input", { type: "search", id: "chart-search", placeholder: "filter charts by name", oninput: () => {
    const q = search.value.toLowerCase();
    for (const [k, c] of charts) c.el.hidden = !k.toLowerCase().includes(q);
  } });
  const logBox = h("input", { type: "checkbox", id: "log-scale", onchange: () => { shared.log = logBox.checked; for (const c of charts.values()) c.draw(); } });
  const smooth = h("select", { id: "smoothing", onchange: () => { shared.smoothing = Number(smooth.value); for (const c of charts.values()) c.draw(); } },
    [["0", "none"], ["0.6", "0.6"], ["0.9", "0.9"], ["0.99", "0.99"]].map(([v, l]) => h("option", { value: v }, l)));

  function addChart(key) {
    if (charts.has(key)) return charts.get(key);
    const c = new Chart(key, [{ id: runId, label: run.info.run_name, color: "#0b57d0" }], { shared });
    charts.set(key, c);
    const q = search.value.toLowerCase();
    c.el.hidden = !key.toLowerCase().includes(q);
    const after = [...charts.keys()].sort().find((k) => k > key);
    grid.insertBefore(c.el, after ? charts.get(after).el : null);
    loader.watch(c);
    return c;
  }

  function renderInfo(r) {
    const tags = pairs(r.data.tags);
    const parent = tags["mlflow.parentRunId"];
    infoBox.replaceChildren(h("dl", { class: "info" },
      h("dt", {}, "Run ID"), h("dd", {}, r.info.run_id),
      h("dt", {}, "Status"), h("dd", { id: "run-status" }, statusBadge(r.info.status)),
      h("dt", {}, "Started"), h("dd", {}, fmtTime(r.info.start_time)),
      h("dt", {}, "Ended"), h("dd", {}, fmtTime(r.info.end_time)),
      h("dt", {}, "Duration"), h("dd", {}, duration(r.info)),
      h("dt", {}, "User"), h("dd", {}, r.info.user_id || ""),
      parent ? [h("dt", {}, "Parent run"), h("dd", {}, h("a", { href: `#/runs/${parent}` }, parent))] : null,
      h("dt", {}, "Artifacts"), h("dd", {}, r.info.artifact_uri)));
    paramsBox.replaceChildren(kvTable(pairs(r.data.params), "Parameters"));
    tagsBox.replaceChildren(kvTable(tags, "Tags"));
    const ds = (r.inputs && r.inputs.dataset_inputs) || [];
    dataBox.replaceChildren(ds.length
      ? table(["Name", "Digest", "Source", "Context"], ds.map((d) => h("tr", {}, h("td", {}, d.dataset.name), h("td", {}, d.dataset.digest), h("td", {}, `${d.dataset.source_type}: ${d.dataset.source}`), h("td", {}, pairs(d.tags)["mlflow.data.context"] || ""))))
      : h("p", { class: "muted" }, "No datasets."));
  }

  root.replaceChildren(
    h("h1", {}, run.info.run_name || runId, " ", h("a", { href: `#/runs/${runId}/history`, id: "history-link" }, "History")),
    infoBox,
    h("h2", {}, "Metrics"),
    h("div", { class: "toolbar" }, h("label", { for: "chart-search" }, "Search"), search, logBox, h("label", { for: "log-scale" }, "Log scale"),
      h("label", { for: "smoothing" }, "Smoothing"), smooth, h("span", { class: "muted" }, "Drag to zoom, shift-drag to pan, wheel to zoom, double-click to reset.")),
    grid,
    h("h2", {}, "Parameters"), paramsBox,
    h("h2", {}, "Tags"), tagsBox,
    h("h2", {}, "Datasets"), dataBox,
    h("h2", {}, "Artifacts"), artifactsBrowser(runId));
  renderInfo(run);
  for (const m of (run.data.metrics || []).map((x) => x.key).sort()) addChart(m);
  hooks.ready = true;

  if (!TERMINAL.has(run.info.status)) follow(runId, head.position, { addChart, charts, renderInfo });
}

/** Follow the run's events after `after` while it runs: re-request the buckets of the charts
 * whose metric got points (at most every LIVE_THROTTLE_MS), and the run when its state changed. */
function follow(runId, after, page) {
  const source = new EventSource(`${NATIVE}/events/stream?${query({ run_id: runId, after })}`);
  const dirty = new Set();
  let runDirty = false, timer = null, flushed = 0;
  const flush = async () => {
    timer = null;
    flushed = performance.now();
    const keys = [...dirty];
    dirty.clear();
    for (const k of keys) {
      const c = page.charts.get(k) || page.addChart(k);
      if (c.canvas.dataset.drawn) c.load().catch(() => {});
    }
    if (runDirty) {
      runDirty = false;
      const { run } = await call("GET", `${API}/runs/get`, { run_id: runId });
      page.renderInfo(run);
      if (TERMINAL.has(run.info.status)) source.close();
    }
  };
  source.onmessage = (msg) => {
    const ev = JSON.parse(msg.data);
    hooks.live += 1;
    if (ev.type === "MetricsLogged") for (const s of ev.data.series || []) dirty.add(s.key);
    else runDirty = true;
    // At once after a quiet spell, then at most once per LIVE_THROTTLE_MS while points pour in.
    if (!timer) timer = setTimeout(flush, Math.max(0, flushed + LIVE_THROTTLE_MS - performance.now()));
  };
  source.addEventListener("error", () => { if (source.readyState === EventSource.CLOSED) source.close(); });
  onLeave(() => { source.close(); clearTimeout(timer); });
}

const TEXT = /\.(txt|log|md|py|csv|tsv|cfg|ini|toml|xml|sh|rst|err|out)$|(^|\/)(MLmodel|MLproject)$/i;
const IMAGE = /\.(png|jpe?g|gif|webp|bmp|svg)$/i;
const PREVIEW_BYTES = 512 * 1024;

function artifactUrl(runId, path, download) {
  return `${NATIVE}/runs/${encodeURIComponent(runId)}/artifacts/${keyPath(path)}${download ? "?download=1" : ""}`;
}

function artifactsBrowser(runId) {
  const preview = h("div", { class: "preview", id: "artifact-preview", "aria-live": "polite" }, h("p", { class: "muted" }, "Choose a file to preview it."));
  const tree = h("div", { id: "artifacts" });

  async function show(file) {
    const url = artifactUrl(runId, file.path, false);
    const dl = h("a", { href: artifactUrl(runId, file.path, true), download: file.path.split("/").pop(), id: "artifact-download" }, `Download ${file.path}`);
    const head = h("p", {}, dl, file.file_size !== undefined ? h("span", { class: "muted" }, ` (${file.file_size} bytes)`) : null);
    if (IMAGE.test(file.path)) {
      preview.replaceChildren(head, h("img", { src: url, alt: file.path }));
      return;
    }
    const isJson = /\.json$/i.test(file.path), isYaml = /\.ya?ml$/i.test(file.path);
    if (!(isJson || isYaml || TEXT.test(file.path))) {
      preview.replaceChildren(head, h("p", { class: "muted" }, "No preview for this kind of file."));
      return;
    }
    if ((file.file_size || 0) > PREVIEW_BYTES * 8) {
      preview.replaceChildren(head, h("p", { class: "muted" }, "Too large to preview; download it."));
      return;
    }
    const res = await fetch(url);
    let text = await res.text();
    if (!res.ok) { preview.replaceChildren(head, errorBox(text)); return; }
    if (isJson) { try { text = JSON.stringify(JSON.parse(text), null, 2); } catch { /* shown as it is */ } }
    const cut = text.length > PREVIEW_BYTES;
    preview.replaceChildren(head, h("pre", { dataset: { path: file.path } }, cut ? text.slice(0, PREVIEW_BYTES) : text), cut ? h("p", { class: "muted" }, "(truncated)") : null);
  }

  async function list(path, into) {
    try {
      const res = await call("GET", `${API}/artifacts/list`, { run_id: runId, path });
      const files = (res.files || []).sort((a, b) => (b.is_dir - a.is_dir) || a.path.localeCompare(b.path));
      if (!files.length && !path) { into.replaceChildren(h("p", { class: "muted" }, "No artifacts.")); return; }
      into.replaceChildren(h("ul", { class: "tree" }, files.map((f) => {
        const name = f.path.split("/").pop();
        if (f.is_dir) {
          const sub = h("div");
          const btn = h("button", { type: "button", class: "link", "aria-expanded": "false", onclick: () => {
            const open = btn.getAttribute("aria-expanded") === "true";
            btn.setAttribute("aria-expanded", String(!open));
            btn.textContent = `${open ? "▸" : "▾"} ${name}/`;
            if (open) sub.replaceChildren(); else list(f.path, sub);
          } }, `▸ ${name}/`);
          return h("li", {}, btn, sub);
        }
        return h("li", {}, h("button", { type: "button", class: "link", dataset: { path: f.path }, onclick: () => show(f) }, name));
      })));
    } catch (e) {
      into.replaceChildren(errorBox(e));
    }
  }
  list("", tree);
  return h("div", { class: "split" }, tree, preview);
}

function summary(ev) {
  const d = ev.data || {};
  switch (ev.type) {
    case "MetricsLogged": {
      const series = d.series || [];
      const n = series.reduce((a, s) => a + s.steps.length, 0);
      return `${n} points of ${series.map((s) => s.key).join(", ")}`;
    }
    case "ParamsLogged": return Object.entries(d.params || {}).map(([k, v]) => `${k}=${v}`).join(", ") || JSON.stringify(d);
    case "TagsSet": return Object.entries(d.tags || {}).map(([k, v]) => `${k}=${v}`).join(", ") || JSON.stringify(d);
    case "RunStatusChanged": return d.status || JSON.stringify(d);
    case "RunCreated": return `${d.run_name || ""} in experiment ${d.experiment_id}`;
    case "ArtifactLogged": return `${d.path}${d.size !== undefined ? ` (${d.size} bytes)` : ""}`;
    case "DatasetInputsLogged": return (d.datasets || []).map((x) => x.name || JSON.stringify(x)).join(", ");
    default: {
      const s = JSON.stringify(d);
      return s.length > 160 ? s.slice(0, 160) + "…" : s;
    }
  }
}

async function historyPage(root, runId) {
  const { run } = await call("GET", `${API}/runs/get`, { run_id: runId });
  const expName = await experimentName(run.info.experiment_id);
  crumbs(["Experiments", "#/"], [expName, `#/experiments/${run.info.experiment_id}`], [run.info.run_name || runId, `#/runs/${runId}`], ["History"]);
  const events = [];
  let nextAfter = 0;
  const timeline = h("ol", { class: "timeline", id: "timeline", "aria-label": "Events" });
  const slider = h("input", { type: "range", id: "replay", min: "0", max: "0", value: "0", step: "1" });
  const label = h("output", { for: "replay", id: "replay-label" });
  const more = h("button", { type: "button", id: "more-events", onclick: () => page() }, "Load more events");
  const state = h("div", { id: "replay-state" });
  const shared = { log: false, smoothing: 0 };
  root.replaceChildren(h("h1", {}, `History of ${run.info.run_name || runId}`),
    h("div", { class: "replay" }, h("label", { for: "replay" }, "Replay position "), label, slider),
    timeline, more, state);

  async function page() {
    const res = await call("GET", `${NATIVE}/runs/${encodeURIComponent(runId)}/events`, { after: nextAfter, limit: 1000 });
    for (const ev of res.events) {
      const i = events.length;
      events.push(ev);
      timeline.append(h("li", { dataset: { index: String(i) } },
        h("button", { type: "button", class: "link", onclick: () => { slider.value = String(i); moved(); } }, `#${ev.position}`),
        h("span", { class: "muted" }, fmtTime(ev.recorded_at)), h("strong", {}, ev.type), h("span", { class: "sum", title: summary(ev) }, summary(ev))));
    }
    nextAfter = res.next_after || null;
    more.hidden = !nextAfter;
    slider.max = String(Math.max(0, events.length - 1));
  }

  let timer = null, asked = 0;
  function marks(i) {
    for (const li of timeline.children) {
      const k = Number(li.dataset.index);
      li.className = k === i ? "current" : k < i ? "past" : "";
    }
  }
  async function render(i) {
    const ev = events[i];
    if (!ev) return;
    const ticket = ++asked;
    label.textContent = `event ${i + 1} of ${events.length}${nextAfter ? "+" : ""} · position ${ev.position} · ${fmtTime(ev.recorded_at)}`;
    marks(i);
    const s = await call("GET", `${NATIVE}/runs/${encodeURIComponent(runId)}/state`, { at: ev.position });
    if (ticket !== asked) return;
    const r = s.run;
    const latest = s.latest.slice().sort((a, b) => a.key.localeCompare(b.key));
    const grid = h("div", { class: "grid" });
    for (const m of latest) {
      // The series up to the step it had reached then: exact for loops whose steps only grow.
      const c = new Chart(m.key, [{ id: runId, label: r.info.run_name, color: "#0b57d0" }], { shared, cap: m.step });
      grid.append(c.el);
      c.load().catch((e) => c.el.append(errorBox(e)));
    }
    state.dataset.position = String(ev.position);
    state.replaceChildren(
      h("h2", {}, "Status"), h("p", {}, statusBadge(r.info.status)),
      h("h2", {}, "Parameters"), h("div", { id: "replay-params" }, kvTable(pairs(r.data.params), "Parameters")),
      h("h2", {}, "Tags"), h("div", { id: "replay-tags" }, kvTable(pairs(r.data.tags), "Tags")),
      h("h2", {}, "Latest metrics"),
      latest.length
        ? table(["Metric", "Value", "Step", "Time"], latest.map((m) => h("tr", {}, h("td", {}, m.key), h("td", { class: "num" }, fmtNum(m.value)), h("td", { class: "num" }, m.step), h("td", {}, fmtTime(m.timestamp)))), { id: "replay-metrics" })
        : h("p", { class: "muted", id: "replay-metrics" }, "No metrics yet."),
      grid);
    hooks.ready = true;
  }
  function moved() {
    hooks.ready = false;
    clearTimeout(timer);
    timer = setTimeout(() => render(Number(slider.value)).catch((e) => state.replaceChildren(errorBox(e))), 120);
  }
  slider.addEventListener("input", moved);
  onLeave(() => clearTimeout(timer));
  await page();
  slider.value = slider.max;
  await render(Number(slider.value));
}

async function comparePage(root, params) {
  const ids = (params.get("runs") || "").split(",").filter(Boolean);
  crumbs(["Experiments", "#/"], ["Compare"]);
  if (!ids.length) {
    root.replaceChildren(h("h1", {}, "Compare"), h("p", {}, "Select runs in an experiment's table to compare them."));
    hooks.ready = true;
    return;
  }
  const runs = await Promise.all(ids.map((id) => call("GET", `${API}/runs/get`, { run_id: id }).then((r) => r.run)));
  const keys = [...new Set(runs.flatMap((r) => (r.data.metrics || []).map((m) => m.key)))].sort();
  const chosen = params.get("metric") && keys.includes(params.get("metric")) ? params.get("metric") : keys[0];
  const select = h("select", { id: "compare-metric", onchange: () => show(select.value) }, keys.map((k) => h("option", { value: k, selected: k === chosen }, k)));
  const chartBox = h("div");
  const shared = { log: false, smoothing: 0 };
  const logBox = h("input", { type: "checkbox", id: "log-scale", onchange: () => { shared.log = logBox.checked; current?.draw(); } });
  const series = runs.map((r) => ({ id: r.info.run_id, label: r.info.run_name || r.info.run_id, color: runColor(r.info.run_id) }));
  let current = null;
  function show(key) {
    if (!key) { chartBox.replaceChildren(h("p", { class: "muted" }, "These runs have no metrics.")); return; }
    current = new Chart(key, series, { shared });
    chartBox.replaceChildren(current.el);
    current.load().catch((e) => chartBox.append(errorBox(e)));
  }
  const onlyDiff = h("input", { type: "checkbox", id: "only-diff", onchange: () => renderDiff() });
  const diffBox = h("div");
  function renderDiff() {
    const rows = [];
    for (const [kind, field] of [["param", "params"], ["tag", "tags"]]) {
      const maps = runs.map((r) => pairs(r.data[field]));
      const all = [...new Set(maps.flatMap((m) => Object.keys(m)))].sort();
      for (const k of all) {
        if (kind === "tag" && k.startsWith("mlflow.") && k !== "mlflow.parentRunId") continue;
        const vals = maps.map((m) => m[k]);
        const differs = new Set(vals.map(String)).size > 1;
        if (onlyDiff.checked && !differs) continue;
        rows.push(h("tr", { class: differs ? "diff" : "", dataset: { key: `${field}.${k}` } }, h("td", {}, `${kind} ${k}`),
          vals.map((v) => h("td", {}, v ?? "—")), h("td", {}, differs ? "differs" : "")));
      }
    }
    diffBox.replaceChildren(table(["Key", ...series.map((s) => h("th", { scope: "col" }, h("span", { class: "swatch", style: `background:${s.color}` }), s.label)), "Differs"], rows, { id: "diff-table" }));
  }
  root.replaceChildren(h("h1", {}, `Compare ${runs.length} runs`),
    h("ul", { class: "legend", id: "legend" }, series.map((s) => h("li", {}, h("span", { class: "swatch", style: `background:${s.color}` }), h("a", { href: `#/runs/${s.id}` }, s.label)))),
    h("div", { class: "toolbar" }, h("label", { for: "compare-metric" }, "Metric"), select, logBox, h("label", { for: "log-scale" }, "Log scale")),
    chartBox,
    h("h2", {}, "Parameters and tags"), h("div", { class: "toolbar" }, onlyDiff, h("label", { for: "only-diff" }, "Only differences")), diffBox);
  show(chosen);
  renderDiff();
  hooks.ready = true;
}

// -- routing ---------------------------------------------------------------------------------

async function route() {
  for (const fn of cleanup.splice(0)) fn();
  hooks.charts = {};
  hooks.ready = false;
  const raw = location.hash.replace(/^#\/?/, "");
  const [path, q] = raw.split("?");
  const params = new URLSearchParams(q || "");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const root = main();
  let page = "experiments", run;
  if (parts[0] === "experiments" && parts[1]) { page = "runs"; run = () => runsPage(root, parts[1], params); }
  else if (parts[0] === "runs" && parts[1] && parts[2] === "history") { page = "history"; run = () => historyPage(root, parts[1]); }
  else if (parts[0] === "runs" && parts[1]) { page = "run"; run = () => runPage(root, parts[1]); }
  else if (parts[0] === "compare") { page = "compare"; run = () => comparePage(root, params); }
  else run = () => experimentsPage(root);
  hooks.page = page;
  document.body.dataset.page = page;
  try {
    await run();
  } catch (e) {
    root.replaceChildren(errorBox(e));
  }
  hooks.ready = true;
  document.title = `${page} · tracker`;
}

window.addEventListener("hashchange", route);
route();
