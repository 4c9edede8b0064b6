"use strict";
// One run: its arrays as interactive plots, and while it runs, its progress and latest metrics.
(function () {
  const {el, getJSON, onLive, watch, progressText, fmtNumber, cancel} = OP;
  const data = OP.pageData();
  const panel = document.getElementById("live-panel");

  if (data.status === "running" || data.live) {
    watch.add(data.run_id);
    const bar = document.getElementById("live-progress");
    const text = document.getElementById("live-text");
    const metrics = document.getElementById("live-metrics");
    let seenLive = Boolean(data.live);
    onLive((live) => {
      const p = live.running.find((r) => r.run_id === data.run_id);
      const status = live.status[data.run_id];
      if (p) {
        seenLive = true;
        panel.hidden = false;
        bar.max = p.total || 1;
        bar.value = p.step || 0;
        text.textContent = progressText(p);
        metrics.replaceChildren(...Object.entries(p.metrics || {}).map(([k, v]) =>
          el("tr", {}, el("th", {text: k}), el("td", {text: fmtNumber(v)}))));
      } else if ((status && status !== data.status) || (seenLive && data.status !== "running")) {
        location.reload();  // the run (or its forced re-run) ended: show what it recorded
      }
    });
    document.getElementById("cancel-btn").addEventListener("click", (event) => {
      event.target.disabled = true;
      cancel(data.run_id, document.getElementById("action-message"));
    });
  }

  const container = document.getElementById("arrays");
  if (container && data.has_arrays) {
    getJSON(`/api/runs/${encodeURIComponent(data.run_id)}/arrays`)
      .then((reply) => Plots.arrayPanels(container, reply.arrays))
      .catch((error) => container.replaceChildren(el("p", {class: "query-error", text: error.message})));
  }
})();
