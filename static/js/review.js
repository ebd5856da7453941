// Review queue keyboard and feedback. Every action also works as a plain button (and without JS).
(function () {
  "use strict";
  const stage = () => document.getElementById("review-stage");
  const current = () => document.getElementById("review-current");
  const help = () => document.getElementById("review-help");
  const errorBox = () => document.getElementById("htmx-error");
  let shownAt = Date.now();

  function typing(target) {
    return !!(target && target.closest && target.closest("input, textarea, select, [contenteditable], [contenteditable=''], [contenteditable=true]"));
  }

  function busy() {
    const s = stage();
    return !!(s && s.querySelector("form.htmx-request"));
  }

  function toggleHelp(force) {
    const h = help();
    if (!h) return;
    h.hidden = force === undefined ? !h.hidden : !force;
  }

  function showError(text) {
    const box = errorBox();
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }

  function clearError() {
    const box = errorBox();
    if (box) box.hidden = true;
  }

  function openPanel(name) {
    const item = current();
    if (!item) return null;
    item.querySelectorAll("details[data-panel]").forEach((d) => { d.open = d.dataset.panel === name; });
    const panel = item.querySelector('details[data-panel="' + name + '"]');
    // The panel opens above the decision bar; on a short page make sure all of it is in view.
    const body = panel && panel.querySelector(".review-panel-body");
    if (body) body.scrollIntoView({ block: "nearest" });
    return panel;
  }

  document.addEventListener("click", (event) => {
    const toggle = event.target.closest && event.target.closest("[data-help-toggle]");
    if (toggle) toggleHelp();
  });

  document.addEventListener("keydown", (event) => {
    // Ctrl/Cmd+Enter in the edit box saves the edit.
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      const form = event.target.closest && event.target.closest("form[data-edit-form]");
      if (form) {
        event.preventDefault();
        if (!busy()) htmx.trigger(form, "submit");
      }
      return;
    }
    if (event.key === "Escape") {
      toggleHelp(false);
      const item = current();
      if (item) item.querySelectorAll("details[data-panel]").forEach((d) => { d.open = false; });
      if (typing(event.target)) event.target.blur();
      return;
    }
    if (typing(event.target) || event.ctrlKey || event.metaKey || event.altKey || event.repeat) return;
    if (event.key === "?") {
      event.preventDefault();
      toggleHelp();
      return;
    }
    const h = help();
    if (h && !h.hidden) return;
    const item = current();
    if (!item || busy()) {
      if (!item && event.key === "u") {
        const undo = stage() && stage().querySelector('[data-key="u"]');
        if (undo) { event.preventDefault(); undo.click(); }
      }
      return;
    }
    const key = event.key.toLowerCase();
    if (key === "r") {
      event.preventDefault();
      openPanel("reject");
      return;
    }
    if (key === "e") {
      event.preventDefault();
      const panel = openPanel("edit");
      const area = panel && panel.querySelector("textarea");
      if (area) { area.focus(); area.setSelectionRange(area.value.length, area.value.length); }
      return;
    }
    if (/^[1-9]$/.test(key)) {
      const panel = item.querySelector('details[data-panel="reject"]');
      if (!panel || !panel.open) return;
      const button = panel.querySelector('[data-reason-key="' + key + '"]');
      if (button) { event.preventDefault(); button.click(); }
      return;
    }
    if (["a", "s", "u"].includes(key)) {
      const button = item.querySelector('[data-key="' + key + '"]');
      if (button) { event.preventDefault(); button.click(); }
    }
  });

  // Time spent on an item travels with the decision.
  document.addEventListener("htmx:configRequest", (event) => {
    const elt = event.detail.elt;
    if (elt && elt.matches && elt.matches("form[data-decision-form]")) {
      event.detail.parameters.duration_ms = String(Date.now() - shownAt);
    }
  });

  document.addEventListener("htmx:afterSwap", (event) => {
    if (event.detail.target && event.detail.target.id === "review-stage") {
      shownAt = Date.now();
      clearError();
      const item = current();
      if (item) item.focus({ preventScroll: true });
    }
  });

  // A failed save keeps the item on screen and says why (app.js writes a generic line first).
  document.addEventListener("htmx:responseError", (event) => {
    if (!stage() || !stage().contains(event.detail.elt)) return;
    const xhr = event.detail.xhr;
    const type = xhr.getResponseHeader("Content-Type") || "";
    const detail = type.startsWith("text/plain") && xhr.responseText ? xhr.responseText : "the server answered " + xhr.status;
    showError("Not saved: " + detail + ". The item is still here; try again.");
  });
  document.addEventListener("htmx:sendError", (event) => {
    if (!stage() || !stage().contains(event.detail.elt)) return;
    showError("Not saved: the server could not be reached. The item is still here; try again.");
  });
})();
