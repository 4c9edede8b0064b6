"use strict";
// Start a run or a sweep: the study's presets and keys, validated by the server with the CLI's own words.
(function () {
  const {el, getJSON, postJSON} = OP;
  const form = document.getElementById("start-form");
  const study = document.getElementById("start-study");
  const preset = document.getElementById("start-preset");
  const sets = document.getElementById("start-sets");
  const grid = document.getElementById("start-grid");
  const keys = document.getElementById("study-keys");
  const description = document.getElementById("study-description");
  const errorLine = document.getElementById("start-error");
  const message = document.getElementById("start-message");
  const kind = () => form.querySelector("input[name=kind]:checked").value;

  function showKind() {
    for (const node of form.querySelectorAll(".run-only")) node.hidden = kind() !== "run";
    for (const node of form.querySelectorAll(".sweep-only")) node.hidden = kind() !== "sweep";
  }
  for (const radio of form.querySelectorAll("input[name=kind]")) radio.addEventListener("change", showKind);

  async function loadStudy() {
    errorLine.hidden = true;
    let s;
    try { s = await getJSON("/api/studies/" + encodeURIComponent(study.value)); } catch (error) { errorLine.textContent = error.message; errorLine.hidden = false; return; }
    preset.replaceChildren(...s.presets.map((p) => el("option", {value: p, text: p})));
    description.replaceChildren(s.description, el("br"), el("span", {class: "muted", text: "Reproduces: " + s.paper}));
    keys.replaceChildren(
      el("tr", {}, ...["key", "default", "allowed", ...s.presets.map((p) => `${p} preset`), ""].map((h) => el("th", {text: h}))),
      ...s.keys.map((k) => el("tr", {},
        el("td", {}, el("button", {type: "button", class: "link key", title: "add to the form", text: k.key, onclick: () => addKey(k.key)})),
        el("td", {}, el("code", {text: JSON.stringify(k.default)})),
        el("td", {text: k.allowed}),
        ...s.presets.map((p) => el("td", {}, p in k.presets ? el("code", {text: JSON.stringify(k.presets[p])}) : "")),
        el("td", {class: "muted", text: k.help}))));
  }
  function addKey(key) {
    const target = kind() === "sweep" && !grid.closest("label").hidden ? grid : sets;
    target.value = (target.value && !target.value.endsWith("\n") ? target.value + "\n" : target.value) + key + "=";
    target.focus();
  }
  study.addEventListener("change", loadStudy);

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    errorLine.hidden = true;
    message.textContent = "checking…";
    const body = {kind: kind(), study: study.value, preset: preset.value, sets: sets.value};
    if (body.kind === "run") Object.assign(body, {seed: form.seed.value, force: form.force.checked});
    else Object.assign(body, {grid: grid.value, seeds: form.seeds.value});
    try {
      const reply = await postJSON("/api/start", body);
      if (reply.reused) {
        message.replaceChildren(reply.message + " ", el("a", {href: "/run/" + reply.run_id, text: "open it"}));
      } else if (reply.kind === "run") {
        message.textContent = `started (process ${reply.pid})`;
        location.href = "/run/" + reply.run_id;
      } else {
        message.textContent = `sweep started (process ${reply.pid}, ${reply.run_ids.length} points)`;
        location.href = "/?ids=" + reply.run_ids.join(",");
      }
    } catch (error) {
      message.textContent = "";
      errorLine.textContent = error.message;
      errorLine.hidden = false;
    }
  });
  showKind();
  loadStudy();
})();
