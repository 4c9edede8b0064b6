"use strict";
// Parallel coordinates in SVG: one vertical axis per config key and one for the metric, one line per run,
// coloured by the metric. Drag along an axis to keep a range of it (brushing); click the range to clear it.
window.ParCoords = (function () {
  const NS = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = text;
    return node;
  }
  // Viridis at five stops, interpolated.
  const STOPS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function colorAt(t) {
    t = Math.min(1, Math.max(0, t)) * (STOPS.length - 1);
    const i = Math.min(STOPS.length - 2, Math.floor(t)), f = t - i;
    const c = STOPS[i].map((v, k) => Math.round(v + f * (STOPS[i + 1][k] - v)));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }
  const display = (v) => typeof v === "number" ? String(Number(v.toPrecision(4))) : String(v);

  function niceTicks(lo, hi, count) {
    const span = hi - lo;
    if (!(span > 0)) return [lo];
    const step = Math.pow(10, Math.floor(Math.log10(span / count)));
    const mult = [1, 2, 5, 10].find((m) => span / (step * m) <= count) || 10;
    const s = step * mult, out = [];
    for (let v = Math.ceil(lo / s) * s; v <= hi + s * 1e-9; v += s) out.push(Number(v.toPrecision(12)));
    return out;
  }

  // An axis over the values it shows: numbers on a linear scale, anything else as evenly spaced categories.
  function axisOf(name, values) {
    const present = values.filter((v) => v !== null && v !== undefined);
    if (present.length && present.every((v) => typeof v === "number")) {
      let lo = Math.min(...present), hi = Math.max(...present);
      if (lo === hi) { lo -= 0.5; hi += 0.5; }
      return {name, numeric: true, pos: (v) => typeof v === "number" ? (v - lo) / (hi - lo) : null,
              ticks: niceTicks(lo, hi, 5).map((v) => ({label: display(v), pos: (v - lo) / (hi - lo)}))};
    }
    const categories = [...new Set(present.map(String))].sort((a, b) => {
      const x = Number(a), y = Number(b);
      return Number.isNaN(x) || Number.isNaN(y) ? a.localeCompare(b) : x - y;
    });
    const at = (i) => categories.length === 1 ? 0.5 : i / (categories.length - 1);
    return {name, numeric: false, pos: (v) => v === null || v === undefined ? null : at(categories.indexOf(String(v))),
            ticks: categories.map((c, i) => ({label: c, pos: at(i)}))};
  }

  // points: [{run_id, values: [...], metric}], names: axis names (the last one is the metric's)
  function draw(container, names, points, onPick) {
    container.replaceChildren();
    const count = document.createElement("p");
    count.className = "muted pc-count";
    if (!points.length) {
      count.textContent = "No finished run has this metric.";
      container.append(count);
      return;
    }
    const columns = names.map((_, i) => points.map((p) => i < names.length - 1 ? p.values[i] : p.metric));
    const axes = names.map((name, i) => axisOf(name, columns[i]));
    const width = Math.max(480, Math.min(container.clientWidth || 900, 1200));
    const height = 400, top = 48, bottom = 24, left = 70, right = 70;
    const h = height - top - bottom;
    const xOf = (i) => names.length === 1 ? left : left + i * (width - left - right) / (names.length - 1);
    const yOf = (pos) => top + (1 - pos) * h;
    const root = svg("svg", {width, height, class: "pc", role: "img", "aria-label": "parallel coordinates"});
    const lines = svg("g", {class: "pc-lines"});
    const metricAxis = axes[axes.length - 1];
    const paths = points.map((p, k) => {
      const coords = axes.map((axis, i) => [xOf(i), axis.pos(columns[i][k])]);
      const d = coords.filter(([, pos]) => pos !== null).map(([x, pos], j) => `${j ? "L" : "M"}${x.toFixed(1)},${yOf(pos).toFixed(1)}`).join("");
      const path = svg("path", {d, stroke: colorAt(metricAxis.pos(p.metric)), class: "pc-line", "data-run": p.run_id});
      path.append(svg("title", {}, `${p.run_id}\n` + names.map((n, i) => `${n} = ${display(columns[i][k])}`).join("\n")));
      path.addEventListener("click", () => onPick && onPick(p.run_id));
      lines.append(path);
      return path;
    });
    root.append(lines);
    const brushes = axes.map(() => null);
    function applyBrushes() {
      let kept = 0;
      points.forEach((p, k) => {
        const inside = axes.every((axis, i) => {
          const b = brushes[i];
          if (!b) return true;
          const pos = axis.pos(columns[i][k]);
          return pos !== null && pos >= b[0] - 1e-9 && pos <= b[1] + 1e-9;
        });
        paths[k].classList.toggle("pc-dim", !inside);
        kept += inside;
      });
      count.textContent = `${kept} of ${points.length} runs in the selected ranges`;
    }
    axes.forEach((axis, i) => {
      const g = svg("g", {class: "pc-axis" + (i === axes.length - 1 ? " pc-metric" : "")});
      const x = xOf(i);
      g.append(svg("line", {x1: x, x2: x, y1: top, y2: top + h}));
      for (const t of axis.ticks) {
        g.append(svg("line", {x1: x - 4, x2: x, y1: yOf(t.pos), y2: yOf(t.pos)}));
        g.append(svg("text", {x: x - 6, y: yOf(t.pos) + 4, "text-anchor": "end"}, t.label.length > 14 ? t.label.slice(0, 13) + "…" : t.label));
      }
      g.append(svg("text", {x, y: top - 22, "text-anchor": "middle", class: "pc-name"}, axis.name.replace(/^(config|metrics)\./, "")));
      const band = svg("rect", {x: x - 8, width: 16, y: top, height: 0, class: "pc-brush", visibility: "hidden"});
      const hit = svg("rect", {x: x - 12, width: 24, y: top, height: h, class: "pc-hit"});
      g.append(hit, band);
      let start = null;
      const posAt = (event) => {
        const box = root.getBoundingClientRect();
        return Math.min(1, Math.max(0, 1 - (event.clientY - box.top - top) / h));
      };
      hit.addEventListener("pointerdown", (event) => { start = posAt(event); hit.setPointerCapture(event.pointerId); });
      hit.addEventListener("pointermove", (event) => {
        if (start === null) return;
        const end = posAt(event), lo = Math.min(start, end), hi = Math.max(start, end);
        band.setAttribute("visibility", "visible");
        band.setAttribute("y", yOf(hi));
        band.setAttribute("height", Math.max(1, yOf(lo) - yOf(hi)));
        brushes[i] = [lo, hi];
        applyBrushes();
      });
      hit.addEventListener("pointerup", (event) => {
        if (start !== null && Math.abs(posAt(event) - start) < 0.01) {  // a click, not a drag: clear
          brushes[i] = null;
          band.setAttribute("visibility", "hidden");
          applyBrushes();
        }
        start = null;
      });
      band.addEventListener("click", () => { brushes[i] = null; band.setAttribute("visibility", "hidden"); applyBrushes(); });
      root.append(g);
    });
    container.append(root, count);
    applyBrushes();
  }

  return {draw, axisOf, colorAt};
})();
