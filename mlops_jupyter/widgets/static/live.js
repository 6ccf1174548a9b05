// Live run monitor / telemetry panel for mlops-jupyter (anywidget ES module, no deps).
// Python sends series already decimated (<= ~2000 points each); this only draws them.

const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b"];

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function fmt(v) {
  if (v === null || v === undefined) return "–";
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e5)) return v.toExponential(3);
  return Number(v.toPrecision(5)).toString();
}

function drawChart(canvas, s, color) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 280;
  const h = canvas.clientHeight || 120;
  if (canvas.width !== w * dpr || canvas.height !== h * dpr) {
    canvas.width = w * dpr;
    canvas.height = h * dpr;
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  ctx.clearRect(0, 0, w, h);
  const xs = s.x || [];
  const ys = s.y || [];
  let lo = Infinity, hi = -Infinity;
  for (const v of ys) {
    if (v !== null) { if (v < lo) lo = v; if (v > hi) hi = v; }
  }
  if (!isFinite(lo)) return 0;
  if (hi === lo) { hi += 1; lo -= 1; }
  const x0 = xs[0], x1 = xs[xs.length - 1];
  const xspan = x1 - x0 || 1;
  const padL = 44, padR = 6, padT = 6, padB = 16;
  const pw = w - padL - padR, ph = h - padT - padB;
  ctx.strokeStyle = "#ddd";
  ctx.lineWidth = 1;
  ctx.strokeRect(padL, padT, pw, ph);
  ctx.fillStyle = "#666";
  ctx.font = "10px sans-serif";
  ctx.fillText(fmt(hi), 2, padT + 8);
  ctx.fillText(fmt(lo), 2, padT + ph);
  ctx.fillText(String(x0), padL, h - 3);
  const lab = String(x1);
  ctx.fillText(lab, w - padR - ctx.measureText(lab).width, h - 3);
  ctx.strokeStyle = color;
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let pen = false, drawn = 0;
  for (let i = 0; i < ys.length; i++) {
    const v = ys[i];
    if (v === null) { pen = false; continue; }
    const px = padL + (pw * (xs[i] - x0)) / xspan;
    const py = padT + ph - (ph * (v - lo)) / (hi - lo);
    if (pen) ctx.lineTo(px, py); else ctx.moveTo(px, py);
    pen = true;
    drawn++;
  }
  ctx.stroke();
  return drawn;
}

function render({ model, el: root }) {
  root.classList.add("mlw-live");
  const head = el("div", "mlw-head");
  const title = el("span", "mlw-title");
  const status = el("span", "mlw-badge mlw-status");
  const thermal = el("span", "mlw-badge mlw-thermal");
  const upd = el("span", "mlw-updates");
  head.append(title, status, thermal, upd);
  const strip = el("div", "mlw-strip");
  const grid = el("div", "mlw-grid");
  const alerts = el("div", "mlw-alerts");
  const mediaGrid = el("div", "mlw-media");
  root.append(head, strip, grid, mediaGrid, alerts);
  const charts = new Map();
  const mediaBoxes = new Map();
  let pending = false;

  function drawHead() {
    title.textContent = model.get("title");
    const st = model.get("status");
    status.textContent = st;
    status.dataset.status = st;
    const th = model.get("thermal");
    thermal.textContent = "thermal: " + th;
    thermal.dataset.level = th;
    upd.textContent = model.get("updates") + " updates";
    root.dataset.updates = String(model.get("updates"));
  }

  function drawStrip() {
    strip.replaceChildren();
    for (const it of model.get("telemetry") || []) {
      const c = el("span", "mlw-chip mlw-" + it.level);
      c.append(el("span", "mlw-chip-label", it.label + " "), el("b", null, it.value));
      strip.append(c);
    }
  }

  function drawSeries() {
    const series = model.get("series") || {};
    const keys = Object.keys(series);
    let i = 0;
    let total = 0;
    for (const key of keys) {
      let c = charts.get(key);
      if (!c) {
        const box = el("div", "mlw-chart");
        box.dataset.key = key;
        const label = el("div", "mlw-chart-label");
        const canvas = el("canvas", "mlw-canvas");
        box.append(label, canvas);
        grid.append(box);
        c = { box, label, canvas };
        charts.set(key, c);
      }
      const s = series[key];
      c.label.textContent = `${key}  last ${fmt(s.last)}  min ${fmt(s.min)}  max ${fmt(s.max)}  (${s.n} pts)`;
      const drawn = drawChart(c.canvas, s, COLORS[i % COLORS.length]);
      c.box.dataset.points = String(s.n);
      c.box.dataset.drawn = String(drawn);
      total += s.n;
      i++;
    }
    for (const [key, c] of charts) {
      if (!(key in series)) { c.box.remove(); charts.delete(key); }
    }
    root.dataset.points = String(total);
    if (!keys.length) {
      grid.dataset.empty = "1";
      if (!grid.querySelector(".mlw-empty")) grid.append(el("div", "mlw-empty", "waiting for metrics…"));
    } else {
      delete grid.dataset.empty;
      const e = grid.querySelector(".mlw-empty");
      if (e) e.remove();
    }
  }

  function drawAlerts() {
    alerts.replaceChildren();
    for (const a of model.get("alerts") || []) {
      const row = el("div", "mlw-alert mlw-" + a.level);
      const open = a.end === null || a.end === undefined;
      row.append(
        el("span", "mlw-badge mlw-level", a.kind === "throttle" ? "throttle" : a.level),
        el("span", null, " " + a.message + (open ? "" : " (ended)")),
      );
      alerts.append(row);
    }
  }

  // latest image/figure per key; a slider picks an earlier step (it follows new steps
  // while it sits at the newest one)
  function showMedia(m) {
    const it = m.item;
    const i = Math.min(Number(m.slider.value), it.urls.length - 1);
    if (m.img.getAttribute("src") !== it.urls[i]) m.img.src = it.urls[i];
    m.box.dataset.step = String(it.steps[i]);
    m.stepLabel.textContent = `step ${it.steps[i]} (${i + 1}/${it.steps.length})`;
  }

  function drawMedia() {
    const items = model.get("media") || [];
    for (const it of items) {
      let m = mediaBoxes.get(it.key);
      if (!m) {
        const box = el("div", "mlw-media-item");
        box.dataset.key = it.key;
        const label = el("div", "mlw-chart-label", it.key);
        const img = el("img", "mlw-media-img");
        img.alt = it.key;
        const row = el("div", "mlw-media-row");
        const slider = el("input", "mlw-media-slider");
        slider.type = "range";
        slider.min = "0";
        slider.step = "1";
        const stepLabel = el("span", "mlw-media-step");
        row.append(slider, stepLabel);
        box.append(label, img, row);
        mediaGrid.append(box);
        m = { box, img, slider, stepLabel, item: it, follow: true };
        const mm = m;
        slider.addEventListener("input", () => {
          mm.follow = Number(slider.value) === mm.item.urls.length - 1;
          showMedia(mm);
        });
        mediaBoxes.set(it.key, m);
      }
      m.item = it;
      m.slider.max = String(it.urls.length - 1);
      m.slider.disabled = it.urls.length < 2;
      if (m.follow) m.slider.value = String(it.urls.length - 1);
      m.box.dataset.steps = String(it.steps.length);
      showMedia(m);
    }
  }

  // coalesce bursts of trait changes into one paint per frame
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => {
      pending = false;
      drawHead();
      drawStrip();
      drawSeries();
      drawAlerts();
      drawMedia();
    });
  }
  drawHead(); drawStrip(); drawSeries(); drawAlerts(); drawMedia();
  for (const name of ["title", "status", "thermal", "updates", "telemetry", "series", "alerts", "media"]) {
    model.on("change:" + name, schedule);
  }
  const ro = typeof ResizeObserver !== "undefined" ? new ResizeObserver(schedule) : null;
  if (ro) ro.observe(grid);
  return () => { if (ro) ro.disconnect(); };
}

export default { render };
