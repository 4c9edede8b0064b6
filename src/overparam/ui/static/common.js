"use strict";
// Helpers shared by the explorer's pages. Text from the store is only ever put into the page as text
// (textContent, attributes set one by one), never parsed as HTML; the only HTML inserted is rendered and
// escaped by the server's templates.
window.OP = (function () {
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  async function request(url, options) {
    const response = await fetch(url, Object.assign({headers: {Accept: "application/json"}}, options || {}));
    const body = await response.json().catch(() => ({error: `${response.status} ${response.statusText}`}));
    if (!response.ok) throw new Error(body.error || `${response.status} ${response.statusText}`);
    return body;
  }
  const getJSON = (url) => request(url);
  const postJSON = (url, data) => request(url, {method: "POST", body: JSON.stringify(data),
    headers: {"Content-Type": "application/json", Accept: "application/json"}});

  function pageData() {
    const node = document.getElementById("page-data");
    return node ? JSON.parse(node.textContent) : {};
  }

  function fmtSeconds(s) {
    if (s === null || s === undefined) return "—";
    s = Math.round(s);
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${s % 60} s`;
    return `${Math.floor(m / 60)} h ${m % 60} min`;
  }

  function fmtNumber(v) {
    if (typeof v !== "number") return v === null || v === undefined ? "—" : String(v);
    if (Number.isInteger(v)) return String(v);
    return String(Number(v.toPrecision(4)));
  }

  // "ensemble: 120/500 · 1 min 3 s elapsed · about 9 s left in this stage"
  function progressText(p) {
    const parts = [];
    if (p.step === null || p.step === undefined) parts.push(p.attempt ? "re-run starting" : "starting");
    else parts.push(`${p.desc ? p.desc + ": " : ""}${p.step}/${p.total}${p.bar > 1 ? ` (stage ${p.bar})` : ""}`);
    parts.push(`${fmtSeconds(p.elapsed)} elapsed`);
    if (p.eta !== null && p.eta !== undefined) parts.push(`about ${fmtSeconds(p.eta)} left in this stage`);
    if (p.quiet_for) parts.push(`no progress for ${fmtSeconds(p.quiet_for)}`);
    if (p.attempt) parts.push("forced re-run");
    return parts.join(" · ");
  }

  // The table's short form: "2528/60000 · 16 s · ~4 min 47 s left" (the full text on hover).
  function progressShort(p) {
    if (p.step === null || p.step === undefined) return p.attempt ? "re-run starting" : "starting";
    const eta = p.eta !== null && p.eta !== undefined ? ` · ~${fmtSeconds(p.eta)} left` : "";
    return `${p.step}/${p.total} · ${fmtSeconds(p.elapsed)}${eta}${p.quiet_for ? " · quiet" : ""}`;
  }

  function progressNode(p) {
    const bar = el("progress", {max: p.total || 1, value: p.step || 0});
    return el("span", {class: "progress-view", title: progressText(p)}, bar, " ",
              el("span", {class: "progress-text", text: progressShort(p)}));
  }

  // Live updates: /api/live every second while the page is visible, one request at a time.
  const listeners = [];
  const watch = new Set();
  let timer = null, inflight = false;
  async function poll() {
    if (inflight || document.hidden) return;
    inflight = true;
    const dot = document.getElementById("live-dot");
    try {
      const query = watch.size ? "?watch=" + [...watch].map(encodeURIComponent).join(",") : "";
      const data = await getJSON("/api/live" + query);
      if (dot) { dot.className = "live-dot on"; dot.title = "live: updated " + new Date().toLocaleTimeString(); }
      for (const fn of listeners) fn(data);
    } catch (error) {
      if (dot) { dot.className = "live-dot off"; dot.title = "live updates failed: " + error.message; }
    } finally {
      inflight = false;
    }
  }
  function onLive(fn) {
    listeners.push(fn);
    if (timer === null) { poll(); timer = setInterval(poll, 1000); }
  }

  async function cancel(runId, messageNode) {
    try {
      const reply = await postJSON(`/api/runs/${encodeURIComponent(runId)}/cancel`, {});
      const others = reply.stops.filter((id) => id !== runId);
      if (messageNode) messageNode.textContent = `cancelling ${runId} (SIGTERM to process ${reply.pid})` +
        (others.length ? `; its sweep stops too: ${others.join(", ")}` : "");
      poll();
    } catch (error) {
      if (messageNode) messageNode.textContent = error.message;
    }
  }

  return {el, getJSON, postJSON, pageData, fmtSeconds, fmtNumber, progressText, progressShort, progressNode, onLive, watch,
          cancel, poll};
})();
