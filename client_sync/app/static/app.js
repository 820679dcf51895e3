// The device app's only script (no inline script: the CSP forbids it).
// 1. A form page asks the app to check the draft as it is typed (debounced):
//    the answer says which fields are asked (skip logic), and the errors,
//    warnings and computed values by field, in the validator's own words.
// 2. The Sync button starts the sync and shows its progress.
// Without this script every page still works: the server checks on save.
"use strict";

function csrfToken(form) {
  var input = form.querySelector("input[name=csrf_token]");
  return input ? input.value : "";
}

function fill(list, items, kind, danger) {
  items.forEach(function (text) {
    var li = document.createElement("li");
    li.className = kind + (danger ? " danger" : "");
    li.textContent = text;           // text, never HTML
    list.appendChild(li);
  });
}

function liveForm(form) {
  var timer = null, touched = {}, seq = 0;
  function apply(answer) {
    form.querySelectorAll("[data-path]").forEach(function (box) {
      var path = box.getAttribute("data-path");
      box.hidden = answer.relevant[path] === false;
    });
    form.querySelectorAll("[data-msgs-for]").forEach(function (list) {
      var path = list.getAttribute("data-msgs-for");
      list.textContent = "";
      if (touched[path] || touched.__all) { fill(list, answer.errors[path] || [], "error", false); }
      fill(list, answer.warnings[path] || [], "warning", answer.danger.indexOf(path) >= 0);
    });
    form.querySelectorAll("[data-computed]").forEach(function (out) {
      out.textContent = answer.computed[out.getAttribute("data-computed")] || "";
    });
    form.setAttribute("data-checked", String(seq));
  }
  function check() {
    var mine = ++seq;
    var body = new FormData(form);
    fetch(form.getAttribute("data-validate"), {
      method: "POST", body: body, credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken(form), "Accept": "application/json"}
    }).then(function (r) { return r.ok ? r.json() : null; })
      .then(function (answer) { if (answer && mine === seq) { apply(answer); } })
      .catch(function () { /* the save still checks everything */ });
  }
  function changed(event) {
    if (event.target && event.target.name) {
      var name = event.target.name;
      touched[name] = true;
    }
    window.clearTimeout(timer);
    timer = window.setTimeout(check, 250);
  }
  form.addEventListener("input", changed);
  form.addEventListener("change", changed);
}

function syncButton(form) {
  var text = document.querySelector("[data-sync-text]") ||
    document.querySelector("[data-sync-status]");
  var bar = document.querySelector("[data-sync-progress]");
  var button = form.querySelector("[data-sync-button]");
  function show(p) {
    if (text) { text.textContent = p.text; text.hidden = false; }
    if (bar) {
      bar.hidden = !p.running;
      if (p.total) { bar.max = p.total; bar.value = p.done; } else { bar.removeAttribute("value"); }
    }
    document.body.setAttribute("data-sync", p.running ? "running" : (p.outcome || ""));
  }
  function poll() {
    fetch("/sync/progress", {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (r) { return r.json(); })
      .then(function (p) {
        show(p);
        if (p.running) { window.setTimeout(poll, 300); return; }
        button.disabled = false;
        if (p.outcome === "ok") {
          // Fresh states on the page; the message stays until the next sync.
          window.sessionStorage.setItem("fieldsync-sync-text", p.text);
          window.location.reload();
        } else if (p.outcome === "login") {
          window.location.href = "/sign-in";
        }
      });
  }
  form.addEventListener("submit", function (event) {
    event.preventDefault();
    button.disabled = true;
    fetch(form.action, {method: "POST", body: new FormData(form), credentials: "same-origin",
                        headers: {"X-CSRFToken": csrfToken(form), "Accept": "application/json"}})
      .then(function () { poll(); });
  });
  var last = window.sessionStorage.getItem("fieldsync-sync-text");
  if (last) {
    window.sessionStorage.removeItem("fieldsync-sync-text");
    if (text) { text.textContent = last; text.hidden = false; }
    document.body.setAttribute("data-sync", "ok");
  }
}

document.addEventListener("DOMContentLoaded", function () {
  var live = document.querySelector("form[data-live]");
  if (live) {
    liveForm(live);
    live.addEventListener("submit", function () { /* the server checks everything */ });
  }
  var sync = document.querySelector("form[data-sync]");
  if (sync) { syncButton(sync); }
});
