"use strict";
// Compare: hide equal rows on demand; overlay one array of every run (aligned on the chosen x).
(function () {
  const {el, getJSON} = OP;
  const {run_ids: ids} = OP.pageData();
  const onlyDiff = document.getElementById("only-diff");
  const configTable = document.getElementById("compare-config");
  onlyDiff.addEventListener("change", () => configTable.classList.toggle("only-diff", onlyDiff.checked));

  const container = document.getElementById("overlay");
  Promise.all(ids.map((id) => getJSON(`/api/runs/${encodeURIComponent(id)}/arrays`)))
    .then((replies) => overlay(replies.map((r) => r.arrays)))
    .catch((error) => container.replaceChildren(el("p", {class: "query-error", text: error.message})));

  function overlay(perRun) {
    const byName = perRun.map((arrays) => new Map(arrays.filter((a) => a.series).map((a) => [a.name, a])));
    const common = [...byName[0].keys()].filter((name) => byName.every((m) => m.has(name)));
    if (!common.length) {
      container.replaceChildren(el("p", {class: "muted", text: "These runs have no plottable array in common."}));
      return;
    }
    const state = {y: common.find((n) => !/^(widths?|params|n_params|epochs?|steps?|sizes?|ratios?|grid)$/.test(n)) || common[0],
                   row: "mean", x: null, logx: false, logy: false};
    const controls = el("div", {class: "plot-controls"});
    const area = el("div", {class: "plot-area"});
    container.replaceChildren(el("div", {class: "plot-panel"}, controls, area));

    function build() {
      const ys = byName.map((m) => m.get(state.y));
      const rows = Math.min(...ys.map((a) => a.series.length));
      const xNames = common.filter((name) => name !== state.y && byName.every((m, k) => {
        const a = m.get(name);
        return a.layout === "values" && a.series[0].length === ys[k].series[0].length && Plots.increasing(a.series[0]);
      }));
      if (state.x === null) state.x = xNames.find((n) => /width|param|epoch|step|size|ratio|grid|noise|^n$|^k$/.test(n)) || "";
      if (!xNames.includes(state.x)) state.x = "";
      const rowOptions = rows > 1 ? [["mean", "mean over rows"]].concat([...Array(rows).keys()].map((i) => [String(i), `row ${i}`])) : [["0", "values"]];
      if (!rowOptions.some(([v]) => v === state.row)) state.row = rowOptions[0][0];
      controls.replaceChildren(
        Plots.select("array", common.map((n) => [n, n]), state.y, (e) => { state.y = e.target.value; state.x = null; build(); }),
        rows > 1 ? Plots.select("rows", rowOptions, state.row, (e) => { state.row = e.target.value; build(); }) : "",
        Plots.select("x", [["", "index"]].concat(xNames.map((n) => [n, n])), state.x, (e) => { state.x = e.target.value; build(); }),
        Plots.checkbox("log x", state.logx, (e) => { state.logx = e.target.checked; build(); }),
        Plots.checkbox("log y", state.logy, (e) => { state.logy = e.target.checked; build(); }),
      );
      // Align the runs on the union of their x values; a run has no value (a gap) where its x has none.
      const curves = ys.map((a, k) => {
        const values = state.row === "mean" ? meanOfRows(a.series) : a.series[Number(state.row)];
        const xs = state.x ? byName[k].get(state.x).series[0] : values.map((_, i) => i);
        return new Map(xs.map((x, i) => [x, values[i]]));
      });
      const xs = [...new Set(curves.flatMap((c) => [...c.keys()]))].filter((x) => x !== null).sort((a, b) => a - b);
      Plots.draw(area, {x: xs, xLabel: state.x || "index", yLabel: state.y, logx: state.logx, logy: state.logy,
                        series: curves.map((c, k) => ({label: ids[k], values: xs.map((x) => c.has(x) ? c.get(x) : null)}))});
    }
    build();
  }

  function meanOfRows(series) {
    const n = Math.max(...series.map((s) => s.length));
    return [...Array(n).keys()].map((i) => {
      const values = series.map((s) => s[i]).filter((v) => v !== null && v !== undefined);
      return values.length ? values.reduce((a, b) => a + b, 0) / values.length : null;
    });
  }
})();
