// A small line chart on a canvas (crier's own, no third-party code):
// CrierChart.draw(canvas, times, [{name, values}]) draws every
// series against the same time axis; null values leave gaps.
"use strict";
window.CrierChart = (function () {
  const COLORS = ["#2563eb", "#f97316", "#16a34a", "#db2777", "#7c3aed", "#0891b2"];

  function niceMax(v) {
    if (!(v > 0)) return 1;
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    // A quarter of each is round: the axis has four steps.
    for (const m of [1, 2, 4, 8, 10]) if (m * p >= v) return m * p;
    return 10 * p;
  }

  function fmt(v) {
    if (v >= 1e6) return (v / 1e6).toFixed(v >= 1e7 ? 0 : 1) + "M";
    if (v >= 1e3) return (v / 1e3).toFixed(v >= 1e4 ? 0 : 1) + "k";
    if (v > 0 && v < 1) return v.toPrecision(2);
    return String(Math.round(v * 10) / 10);
  }

  function draw(canvas, times, series) {
    const dpr = window.devicePixelRatio || 1;
    const w = canvas.clientWidth || 300, h = canvas.clientHeight || 180;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    const g = canvas.getContext("2d");
    g.setTransform(dpr, 0, 0, dpr, 0, 0);
    g.clearRect(0, 0, w, h);
    const left = 46, right = 8, top = 8, bottom = 20;
    const pw = w - left - right, ph = h - top - bottom;
    let max = 0;
    for (const s of series) for (const v of s.values) if (v != null && v > max) max = v;
    max = niceMax(max);
    g.font = "11px system-ui, sans-serif";
    g.fillStyle = "#5b6570";
    g.strokeStyle = "#e5e7eb";
    g.lineWidth = 1;
    g.textAlign = "right";
    g.textBaseline = "middle";
    for (let i = 0; i <= 4; i++) {
      const y = top + ph - (ph * i) / 4;
      g.beginPath();
      g.moveTo(left, y);
      g.lineTo(left + pw, y);
      g.stroke();
      g.fillText(fmt((max * i) / 4), left - 4, y);
    }
    const n = times.length;
    if (n > 1) {
      const t0 = times[0], t1 = times[n - 1];
      const x = (t) => left + (t1 === t0 ? pw : ((t - t0) / (t1 - t0)) * pw);
      g.textAlign = "center";
      g.textBaseline = "top";
      const secs = Math.round((t1 - t0) / 1000);
      g.fillText("-" + secs + " s", left + 14, top + ph + 4);
      g.fillText("now", left + pw - 12, top + ph + 4);
      series.forEach((s, k) => {
        g.strokeStyle = COLORS[k % COLORS.length];
        g.lineWidth = 1.8;
        g.beginPath();
        g.fillStyle = g.strokeStyle;
        let pen = false;
        for (let i = 0; i < n; i++) {
          const v = s.values[i];
          if (v == null) { pen = false; continue; }
          const px = x(times[i]), py = top + ph - (Math.min(v, max) / max) * ph;
          if (pen) g.lineTo(px, py); else g.moveTo(px, py);
          // A point between two gaps is drawn as a dot.
          if (!pen && (i + 1 >= n || s.values[i + 1] == null)) g.fillRect(px - 2, py - 2, 4, 4);
          pen = true;
        }
        g.stroke();
      });
    } else {
      g.textAlign = "center";
      g.fillText("collecting…", left + pw / 2, top + ph / 2);
    }
  }

  return { draw: draw, COLORS: COLORS };
})();
