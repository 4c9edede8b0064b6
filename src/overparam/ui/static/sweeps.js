"use strict";
// Sweeps: a metric against one config key, mean over seeds with a band (standard error or min-max),
// optionally one line per value of a second key; and parallel coordinates from config keys to the metric.
(function () {
  const {el, getJSON, fmtNumber} = OP;
  const data = OP.pageData();
  const form = document.getElementById("sweep-form");
  const errorLine = document.getElementById("sweep-error");
  const plot = document.getElementById("sweep-plot");
  const groupsTable = document.getElementById("groups");
  const axesPick = document.getElementById("axes-pick");
  const parallel = document.getElementById("parcoords");
  const logx = document.getElementById("sweep-logx"), logy = document.getElementById("sweep-logy");
  if (!data.metric_keys.length || !document.getElementById("sweep-study")) return;

  function params() {
    const p = new URLSearchParams();
    for (const [k, v] of new FormData(form)) if (v) p.set(k, v);
    return p;
  }
  function fail(error) { errorLine.textContent = error.message; errorLine.hidden = false; }

  // Axes: the config keys that vary, seed last and off, at most six on at first.
  const chosen = new Set(data.config_keys.filter((k) => k !== "config.seed").slice(0, 6));
  if (!chosen.size && data.config_keys.length) chosen.add(data.config_keys[0]);
  for (const key of data.config_keys) {
    const box = el("input", {type: "checkbox", value: key, checked: chosen.has(key)});
    box.addEventListener("change", () => { if (box.checked) chosen.add(key); else chosen.delete(key); drawParallel(); });
    axesPick.append(el("label", {}, box, " " + key.slice(7)));
  }

  async function drawGroups() {
    const p = params();
    if (!p.get("key")) { plot.replaceChildren(el("p", {class: "muted", text: "The runs of this study take one value of every config key: nothing to group by."})); return; }
    let reply;
    try { reply = await getJSON("/api/groups?" + p.toString()); } catch (error) { fail(error); return; }
    errorLine.hidden = true;
    const groups = reply.groups;
    const band = p.get("band") || "sem";
    const numeric = groups.every((g) => typeof g.x === "number");
    const xValues = [...new Set(groups.map((g) => numeric ? g.x : String(g.x)))];
    if (!numeric) xValues.sort();
    const splits = [...new Set(groups.map((g) => g.split === null ? "" : String(g.split)))];
    const xs = numeric ? xValues.slice().sort((a, b) => a - b) : xValues.map((_, i) => i);
    const where = (g) => numeric ? xs.indexOf(g.x) : xValues.indexOf(String(g.x));
    const series = [], bands = [];
    splits.forEach((s, k) => {
      const mine = groups.filter((g) => (g.split === null ? "" : String(g.split)) === s);
      const at = (f) => { const out = xs.map(() => null); for (const g of mine) out[where(g)] = f(g); return out; };
      const label = (reply.metric.replace(/^metrics\./, "")) + (s ? ` · ${reply.split.slice(7)} = ${s}` : "");
      series.push({label, values: at((g) => g.mean), color: Plots.color(k)});
      if (band === "sem") bands.push({label: label + " ± SE", lo: at((g) => g.mean - (g.sem || 0)), hi: at((g) => g.mean + (g.sem || 0)), fill: fade(Plots.color(k))});
      if (band === "minmax") bands.push({label: label + " min–max", lo: at((g) => g.min), hi: at((g) => g.max), fill: fade(Plots.color(k))});
    });
    Plots.draw(plot, {x: xs, xLabel: reply.key.replace(/^config\./, ""), yLabel: reply.metric.replace(/^metrics\./, ""),
                      series, bands, logx: numeric && logx.checked, logy: logy.checked, xTicks: numeric ? null : xValues});
    groupsTable.replaceChildren(
      el("tr", {}, ...[reply.key.slice(7), reply.split ? reply.split.slice(7) : null, "runs", "mean", "± SE", "min", "max", ""]
        .filter((h) => h !== null).map((h) => el("th", {text: h}))),
      ...groups.map((g) => el("tr", {},
        el("td", {text: fmtNumber(g.x)}), reply.split ? el("td", {text: fmtNumber(g.split)}) : null,
        el("td", {class: "num", text: g.n}), el("td", {class: "num", text: fmtNumber(g.mean)}),
        el("td", {class: "num", text: g.sem === null ? "—" : fmtNumber(g.sem)}),
        el("td", {class: "num", text: fmtNumber(g.min)}), el("td", {class: "num", text: fmtNumber(g.max)}),
        el("td", {}, el("a", {href: "/?ids=" + g.run_ids.join(","), text: "runs"}),
           g.run_ids.length >= 2 ? [" · ", el("a", {href: "/compare?ids=" + g.run_ids.slice(0, 8).join(","), text: "compare"})] : null)))
    );
  }
  function fade(rgb) {
    const n = parseInt(rgb.slice(1), 16);
    return `rgba(${n >> 16},${(n >> 8) & 255},${n & 255},0.18)`;
  }

  async function drawParallel() {
    const p = params();
    const keys = data.config_keys.filter((k) => chosen.has(k));
    p.set("keys", keys.join(","));
    let reply;
    try { reply = await getJSON("/api/points?" + p.toString()); } catch (error) { fail(error); return; }
    ParCoords.draw(parallel, keys.concat([reply.metric]), reply.points, (id) => { location.href = "/run/" + encodeURIComponent(id); });
  }

  function redraw() {
    history.replaceState(null, "", "/sweeps?" + params().toString());
    drawGroups();
    drawParallel();
  }
  form.addEventListener("submit", (event) => { event.preventDefault(); redraw(); });
  for (const node of form.querySelectorAll("select, input[type=checkbox]")) {
    if (node.id === "sweep-study") node.addEventListener("change", () => { location.href = "/sweeps?study=" + encodeURIComponent(node.value); });
    else node.addEventListener("change", redraw);
  }
  redraw();
})();
