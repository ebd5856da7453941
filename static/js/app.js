// Small progressive enhancements; every page works without this file.
document.addEventListener("htmx:responseError", (event) => {
  const box = document.getElementById("htmx-error");
  if (box) {
    box.textContent = "The server could not save that (" + event.detail.xhr.status + "). Nothing was lost; try again.";
    box.hidden = false;
  }
});

// Behaviour that used to sit in inline handlers, moved here so the Content Security Policy can
// forbid inline script. Each hook is a data attribute; elements htmx swaps in get it too.

// <form data-confirm="Question?">: ask before submitting.
document.addEventListener("submit", (event) => {
  const form = event.target;
  if (!(form instanceof HTMLFormElement) || !form.dataset.confirm) return;
  if (!window.confirm(form.dataset.confirm)) {
    event.preventDefault();
    event.stopImmediatePropagation();
  }
}, true);

// <select data-autosubmit>: submit its form on change (the organisation switcher).
document.addEventListener("change", (event) => {
  const el = event.target;
  if (el instanceof HTMLSelectElement && el.hasAttribute("data-autosubmit") && el.form) {
    el.form.requestSubmit();
  }
});

// <div class="bar" data-width="42.5">: progress widths without style attributes.
function applyWidths(root) {
  root.querySelectorAll("[data-width]").forEach((el) => {
    const value = parseFloat(el.dataset.width);
    el.style.width = (Number.isFinite(value) ? Math.min(Math.max(value, 0), 100) : 0) + "%";
  });
}

// <fieldset data-kind="openai"> inside a form with <select name="kind">: show only the fields of
// the chosen kind (the teacher form); hidden fieldsets are disabled so they are not submitted.
function applyKinds(root) {
  root.querySelectorAll("select[data-kind-select]").forEach((select) => {
    const form = select.form;
    if (!form) return;
    form.querySelectorAll("fieldset[data-kind]").forEach((fieldset) => {
      const shown = fieldset.dataset.kind === select.value;
      fieldset.hidden = !shown;
      fieldset.disabled = !shown;
    });
  });
}

// <select data-samples-target="#id"> whose options carry data-n: the samples field's placeholder
// names the chosen teacher's n (the generation launch form).
function applySamplesPlaceholder(root) {
  root.querySelectorAll("select[data-samples-target]").forEach((select) => {
    const field = document.querySelector(select.dataset.samplesTarget);
    if (!field) return;
    const option = select.selectedOptions[0];
    const n = option && option.dataset.n;
    field.placeholder = n ? "teacher's n (" + n + ")" : "teacher's n";
  });
}

function enhance(root) {
  applyWidths(root);
  applyKinds(root);
  applySamplesPlaceholder(root);
}

document.addEventListener("change", (event) => {
  const el = event.target;
  if (!(el instanceof HTMLSelectElement)) return;
  if (el.hasAttribute("data-kind-select")) applyKinds(el.form || document);
  if (el.hasAttribute("data-samples-target")) applySamplesPlaceholder(el.form || document);
});

if (document.readyState === "loading") {
  document.addEventListener("DOMContentLoaded", () => enhance(document));
} else {
  enhance(document);
}
document.addEventListener("htmx:load", (event) => enhance(event.target));
