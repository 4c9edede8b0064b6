"use strict";
// Plot panels over uPlot: drag to zoom (double-click to reset), hover for values, log axes.
window.Plots = (function () {
  const {el} = OP;
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf"];
  const color = (i) => COLORS[i % COLORS.length];
  const AXIS_NAME = /(^|_)(width|widths|param|params|n_params|epoch|epochs|step|steps|size|sizes|ratio|ratios|grid|n|ns|x|xs|lambda|lambdas|alpha|alphas|time|iter|iters|k|ks|rank|ranks|noise|levels?|batch|batches|t)$/i;

  function increasing(values) {
    for (let i = 1; i < values.length; i++) if (!(values[i] > values[i - 1])) return false;
    return values.length > 1;
  }

  // spec: {x, xLabel, yLabel, series: [{label, values, color}], bands: [{lo, hi, fill, label}], logx, logy,
  //        xTicks: [labels] for a categorical x (x = 0..k-1), height, title}
  function draw(target, spec) {
    target.replaceChildren();
    const finite = (v) => v !== null && v !== undefined && Number.isFinite(v);
    const order = spec.x.map((_, i) => i)
      .filter((i) => finite(spec.x[i]) && (!spec.logx || spec.x[i] > 0))
      .sort((a, b) => spec.x[a] - spec.x[b]);
    const pick = (values) => order.map((i) => {
      const v = values[i];
      return !finite(v) || (spec.logy && v <= 0) ? null : v;
    });
    const data = [order.map((i) => spec.x[i])];
    const series = [{label: spec.xLabel || "x"}];
    spec.series.forEach((s, k) => {
      data.push(pick(s.values));
      series.push({label: s.label, stroke: s.color || color(k), width: 1.5, spanGaps: true,
                   points: {show: order.length <= 80, size: 5}});
    });
    const bands = [];
    for (const b of spec.bands || []) {
      data.push(pick(b.hi));
      series.push({label: b.label + " (upper)", stroke: "transparent", width: 0, points: {show: false}, spanGaps: true});
      data.push(pick(b.lo));
      series.push({label: b.label + " (lower)", stroke: "transparent", width: 0, points: {show: false}, spanGaps: true});
      bands.push({series: [data.length - 2, data.length - 1], fill: b.fill});
    }
    const hasValues = data.slice(1).some((col) => col.some((v) => v !== null));
    if (!order.length || !hasValues) {
      target.append(el("p", {class: "muted", text: "nothing to plot" + (spec.logx || spec.logy ? " on a log axis (values <= 0 are left out)" : "")}));
      return null;
    }
    const xAxis = {label: spec.xLabel || "", stroke: "#444"};
    if (spec.xTicks) {
      xAxis.splits = () => spec.xTicks.map((_, i) => i);
      xAxis.values = (u, splits) => splits.map((i) => spec.xTicks[i] === undefined ? "" : spec.xTicks[i]);
    }
    const width = Math.max(320, Math.min(target.clientWidth || 900, 1100));
    const opts = {
      width, height: spec.height || 320, title: spec.title,
      scales: {x: {time: false, distr: spec.logx ? 3 : 1, log: 10}, y: {distr: spec.logy ? 3 : 1, log: 10}},
      series, bands, axes: [xAxis, {label: spec.yLabel || "", stroke: "#444"}],
      legend: {show: series.length <= 40},
      cursor: {drag: {x: true, y: true, uni: 20}},
    };
    if (spec.xTicks && spec.xTicks.length === 1) opts.scales.x.range = () => [-0.5, 0.5];
    return new uPlot(opts, data, target);
  }

  function select(label, options, value, onChange) {
    const node = el("select", {"aria-label": label});
    for (const [v, text] of options) node.append(el("option", {value: v, text, selected: v === value}));
    node.addEventListener("change", onChange);
    return el("label", {}, label + " ", node);
  }
  function checkbox(label, checked, onChange) {
    const box = el("input", {type: "checkbox", checked});
    box.addEventListener("change", onChange);
    return el("label", {}, box, " " + label);
  }

  // Arrays whose values can stand on the x axis of a series of length n.
  function xCandidates(arrays, n) {
    return arrays.filter((a) => a.layout === "values" && a.series[0].length === n && increasing(a.series[0]));
  }
  function defaultX(arrays, n, yName) {
    const options = xCandidates(arrays, n).filter((a) => a.name !== yName);
    const named = options.find((a) => AXIS_NAME.test(a.name));
    return named ? named.name : "";
  }
  function isAxisLike(a) {
    return a.layout === "values" && AXIS_NAME.test(a.name) && increasing(a.series[0]);
  }

  function seriesLabels(a) {
    if (a.layout === "values") return [a.name];
    return a.series.map((_, i) => `${a.name}[${a.layout === "rows" ? i + "," + ":" : ":," + i}]`);
  }

  // One panel: choose the y array (each row/column a line), the x array or the index, log axes.
  function arrayPanel(arrays, initialY, onRemove) {
    const plottable = arrays.filter((a) => a.series);
    const state = {y: initialY, x: null, logx: false, logy: false};
    const area = el("div", {class: "plot-area"});
    const controls = el("div", {class: "plot-controls"});
    const panel = el("div", {class: "plot-panel"}, controls, area);
    function build() {
      const y = plottable.find((a) => a.name === state.y);
      const n = y.series[0].length;
      if (state.x === null) state.x = defaultX(arrays, n, y.name);
      const xOptions = [["", "index"]].concat(xCandidates(arrays, n).filter((a) => a.name !== y.name).map((a) => [a.name, a.name]));
      if (!xOptions.some(([v]) => v === state.x)) state.x = "";
      controls.replaceChildren(
        select("y", plottable.map((a) => [a.name, `${a.name} (${a.shape.join("×")})`]), state.y,
               (e) => { state.y = e.target.value; state.x = null; build(); }),
        select("x", xOptions, state.x, (e) => { state.x = e.target.value; build(); }),
        checkbox("log x", state.logx, (e) => { state.logx = e.target.checked; build(); }),
        checkbox("log y", state.logy, (e) => { state.logy = e.target.checked; build(); }),
        onRemove ? el("button", {type: "button", class: "link", onclick: () => { panel.remove(); onRemove(); }, text: "remove"}) : null,
      );
      const xs = state.x ? arrays.find((a) => a.name === state.x).series[0] : y.series[0].map((_, i) => i);
      const labels = seriesLabels(y);
      draw(area, {x: xs, xLabel: state.x || "index", yLabel: y.name, logx: state.logx, logy: state.logy,
                  series: y.series.map((values, i) => ({label: labels[i], values}))});
    }
    build();
    return panel;
  }

  // Every array of one run: a panel for the first arrays that are not axes, and "add a plot".
  function arrayPanels(container, arrays) {
    container.replaceChildren();
    const plottable = arrays.filter((a) => a.series);
    const skipped = arrays.filter((a) => !a.series);
    if (!plottable.length) {
      container.append(el("p", {class: "muted", text: "No array here can be plotted."}));
    } else {
      const ys = plottable.filter((a) => !isAxisLike(a));
      const first = (ys.length ? ys : plottable).slice(0, 2);
      let next = first.length;
      const panels = el("div", {class: "panels"});
      for (const a of first) panels.append(arrayPanel(arrays, a.name, () => {}));
      const add = el("button", {type: "button", text: "add a plot", onclick: () => {
        const a = plottable[next++ % plottable.length];
        panels.append(arrayPanel(arrays, a.name, () => {}));
      }});
      container.append(panels, add);
    }
    if (skipped.length) {
      container.append(el("p", {class: "muted", text: "Not plotted: " + skipped.map((a) => `${a.name} (${a.shape.join("×")}: ${a.why})`).join("; ")}));
    }
  }

  return {draw, arrayPanels, select, checkbox, color, increasing, xCandidates, seriesLabels};
})();
