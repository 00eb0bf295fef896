// Small SVG charts for the dashboard: no library, no build step. Every label is set with
// textContent, so data (category names from the model) can never become markup.
"use strict";

const Charts = (() => {
  const NS = "http://www.w3.org/2000/svg";
  const PAD = { left: 44, right: 8, top: 8, bottom: 22 };

  function node(name, attrs, parent) {
    const el = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) el.setAttribute(key, value);
    if (parent) parent.appendChild(el);
    return el;
  }

  function text(parent, x, y, value, anchor) {
    const el = node("text", { x, y, "text-anchor": anchor || "start" }, parent);
    el.textContent = value;
    return el;
  }

  function frame(container) {
    container.replaceChildren();
    const width = container.clientWidth || 400;
    const height = container.clientHeight || 180;
    const svg = node("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" }, container);
    return { svg, width, height, w: width - PAD.left - PAD.right, h: height - PAD.top - PAD.bottom };
  }

  function empty(container, message) {
    const f = frame(container);
    text(f.svg, f.width / 2, f.height / 2, message, "middle");
  }

  function fmt(value) {
    if (value === null || value === undefined || Number.isNaN(value)) return "–";
    if (Math.abs(value) >= 100) return value.toFixed(0);
    if (Math.abs(value) >= 1) return value.toFixed(1);
    return value.toFixed(2);
  }

  // series: [{name, color, points: [[x, y], ...]}]; x is seconds since the epoch
  function lines(container, series, opts) {
    const all = series.flatMap((s) => s.points.filter((p) => p[1] !== null));
    if (!all.length) return empty(container, (opts && opts.empty) || "no data yet");
    const f = frame(container);
    const xs = all.map((p) => p[0]);
    const x0 = Math.min(...xs), x1 = Math.max(...xs, x0 + 1);
    const yMax = (opts && opts.yMax) || Math.max(...all.map((p) => p[1]), 1e-9) * 1.1;
    const X = (x) => PAD.left + ((x - x0) / (x1 - x0)) * f.w;
    const Y = (y) => PAD.top + f.h - (y / yMax) * f.h;
    node("line", { x1: PAD.left, y1: Y(0), x2: PAD.left + f.w, y2: Y(0), stroke: "#ccd" }, f.svg);
    for (const tick of [0, yMax / 2, yMax]) text(f.svg, PAD.left - 4, Y(tick) + 3, fmt(tick), "end");
    text(f.svg, PAD.left, f.height - 6, new Date(x0 * 1000).toLocaleTimeString());
    text(f.svg, PAD.left + f.w, f.height - 6, new Date(x1 * 1000).toLocaleTimeString(), "end");
    series.forEach((s, i) => {
      const pts = s.points.filter((p) => p[1] !== null);
      if (pts.length) {
        const d = pts.map((p, j) => `${j ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
        node("path", { d, fill: "none", stroke: s.color, "stroke-width": 1.8 }, f.svg);
        if (pts.length === 1) node("circle", { cx: X(pts[0][0]), cy: Y(pts[0][1]), r: 3, fill: s.color }, f.svg);
      }
      const label = text(f.svg, PAD.left + 6 + i * 90, PAD.top + 10, s.name);
      label.setAttribute("fill", s.color);
      label.setAttribute("class", "legend");
    });
  }

  // items: [{label, values: [number, ...]}]; opts.names / opts.colors per value
  function bars(container, items, opts) {
    if (!items.length) return empty(container, (opts && opts.empty) || "no data yet");
    const f = frame(container);
    const colors = (opts && opts.colors) || ["#3b6fb6", "#b0b8c6"];
    const max = (opts && opts.max) || Math.max(...items.flatMap((i) => i.values), 1e-9);
    const labelWidth = (opts && opts.labelWidth) || 120;
    const row = f.h / items.length;
    const width = f.width - labelWidth - 40;
    items.forEach((item, i) => {
      const y = PAD.top + i * row;
      text(f.svg, labelWidth - 4, y + row / 2 + 3, item.label, "end");
      const band = Math.max(2, (row - 2) / item.values.length);
      item.values.forEach((value, j) => {
        const w = Math.max(0, Math.min(value / max, 1) * width);
        node("rect", { x: labelWidth, y: y + j * band, width: w, height: band - 1, fill: (item.colors || colors)[j] }, f.svg);
      });
      const first = item.values[0];
      text(f.svg, labelWidth + 4 + Math.min(first / max, 1) * width, y + band - 2, item.shown ?? fmt(first));
    });
    if (opts && opts.names) {
      opts.names.forEach((name, j) => {
        const label = text(f.svg, f.width - 8, f.height - 6 - j * 12, name, "end");
        label.setAttribute("fill", colors[j]);
      });
    }
  }

  return { lines, bars, empty, fmt };
})();
