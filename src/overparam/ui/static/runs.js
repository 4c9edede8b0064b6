"use strict";
// The runs table: filters, sorting and pages without a reload (the server renders the table), a bad query
// as one line, live progress of running runs, selection for comparing, cancel buttons.
(function () {
  const {onLive, progressNode, cancel} = OP;
  const form = document.getElementById("filters");
  const table = document.getElementById("table");
  const errorLine = document.getElementById("query-error");
  const compareButton = document.getElementById("compare-btn");
  const selectedCount = document.getElementById("selected-count");
  const message = document.getElementById("action-message");
  const selected = new Set();
  let current = new URLSearchParams(location.search);
  let latest = 0, lastToken = null, refreshTimer = null;

  function paramsFromForm() {
    const params = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (value) params.set(key, value);
    for (const key of ["sort", "dir"]) if (current.get(key)) params.set(key, current.get(key));
    return params;
  }

  async function load(params, keepScroll) {
    const mine = ++latest;
    const response = await fetch("/fragment/runs?" + params.toString());
    if (mine !== latest) return;  // a newer request went out meanwhile
    if (!response.ok) {
      const body = await response.json().catch(() => ({error: response.statusText}));
      errorLine.textContent = body.error;
      errorLine.hidden = false;
      return;
    }
    const html = await response.text();
    if (mine !== latest) return;
    errorLine.hidden = true;
    errorLine.textContent = "";
    const y = window.scrollY;
    table.innerHTML = html;  // rendered and escaped by the server's template
    if (keepScroll) window.scrollTo(0, y);
    current = params;
    history.replaceState(null, "", "/?" + params.toString());
    restoreSelection();
    updateLive(null);
  }

  form.addEventListener("submit", (event) => { event.preventDefault(); load(paramsFromForm()); });
  for (const select of form.querySelectorAll("select")) select.addEventListener("change", () => load(paramsFromForm()));
  let typing = null;
  for (const input of form.querySelectorAll("input.query, input[type=search], #cols")) {
    input.addEventListener("input", () => { clearTimeout(typing); typing = setTimeout(() => load(paramsFromForm()), 350); });
  }

  table.addEventListener("click", (event) => {
    const link = event.target.closest("a.sort, a.page-link");
    if (link) {
      event.preventDefault();
      load(new URL(link.href).searchParams);
      return;
    }
    const button = event.target.closest("[data-cancel]");
    if (button) { button.disabled = true; cancel(button.dataset.cancel, message); }
  });
  table.addEventListener("change", (event) => {
    const box = event.target;
    if (box.id === "select-page") {
      for (const pick of table.querySelectorAll("input.pick")) { pick.checked = box.checked; toggle(pick); }
    } else if (box.classList.contains("pick")) toggle(box);
    showSelection();
  });
  function toggle(box) { if (box.checked) selected.add(box.value); else selected.delete(box.value); }
  function restoreSelection() {
    for (const pick of table.querySelectorAll("input.pick")) pick.checked = selected.has(pick.value);
    showSelection();
  }
  function showSelection() {
    compareButton.disabled = selected.size < 2;
    selectedCount.textContent = selected.size ? `${selected.size} selected` : "";
  }
  compareButton.addEventListener("click", () => {
    location.href = "/compare?ids=" + [...selected].map(encodeURIComponent).join(",");
  });

  // Live: progress of the running runs on this page; when the store changes (a run began or ended), the
  // table is fetched again so new runs appear and ended ones show their status.
  let running = new Map();
  function updateLive(data) {
    if (data) running = new Map(data.running.map((p) => [p.run_id, p]));
    for (const cell of table.querySelectorAll("[data-live]")) {
      const p = running.get(cell.dataset.live);
      if (p) cell.replaceChildren(progressNode(p));
    }
  }
  onLive((data) => {
    updateLive(data);
    const ended = [...table.querySelectorAll("[data-live]")].some((cell) => !running.has(cell.dataset.live));
    if ((lastToken !== null && data.token !== lastToken) || ended) {
      clearTimeout(refreshTimer);
      refreshTimer = setTimeout(() => load(current, true), 150);
    }
    lastToken = data.token;
  });
  restoreSelection();
})();
