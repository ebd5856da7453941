// Prompt set upload: drag and drop onto the file input and a progress bar while the file uploads.
// Progressive enhancement: without this file the form is an ordinary multipart POST.
(function () {
  "use strict";

  function csrfToken(form) {
    const input = form.querySelector("input[name=csrfmiddlewaretoken]");
    return input ? input.value : "";
  }

  function setFiles(input, files) {
    try {
      input.files = files;
    } catch (e) {
      const transfer = new DataTransfer();
      for (const f of files) transfer.items.add(f);
      input.files = transfer.files;
    }
    input.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function enhance(root) {
    if (!root || root.dataset.enhanced) return;
    root.dataset.enhanced = "1";
    const form = root.querySelector("form");
    const zone = root.querySelector("[data-dropzone]");
    const label = root.querySelector("[data-dropzone-label]");
    const input = form.querySelector("input[type=file]");
    const progress = root.querySelector("[data-progress]");
    const bar = progress ? progress.querySelector(".bar") : null;
    const text = root.querySelector("[data-progress-text]");
    const nameInput = form.querySelector("input[name=name]");

    input.addEventListener("change", () => {
      const file = input.files && input.files[0];
      if (!file) return;
      label.textContent = file.name + " (" + Math.max(1, Math.round(file.size / 1024)).toLocaleString() + " KB)";
      if (nameInput && !nameInput.value) nameInput.value = file.name.replace(/\.[^.]+$/, "");
    });
    ["dragenter", "dragover"].forEach((type) =>
      zone.addEventListener(type, (event) => {
        event.preventDefault();
        zone.classList.add("dragover");
      })
    );
    ["dragleave", "drop"].forEach((type) =>
      zone.addEventListener(type, () => zone.classList.remove("dragover"))
    );
    zone.addEventListener("drop", (event) => {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files.length) setFiles(input, event.dataTransfer.files);
    });

    if (!window.FormData || !window.XMLHttpRequest) return;
    form.addEventListener("submit", (event) => {
      if (!input.files || !input.files.length) return; // let the browser say the file is required
      event.preventDefault();
      const button = form.querySelector("button[type=submit]");
      const xhr = new XMLHttpRequest();
      xhr.open("POST", form.action);
      xhr.setRequestHeader("X-CSRFToken", csrfToken(form));
      xhr.setRequestHeader("X-Requested-With", "XMLHttpRequest");
      progress.hidden = false;
      progress.style.display = "";
      button.disabled = true;
      xhr.upload.addEventListener("progress", (e) => {
        if (!e.lengthComputable) return;
        const pct = Math.round((100 * e.loaded) / e.total);
        bar.style.width = pct + "%";
        text.textContent = "Uploading… " + pct + " %";
      });
      xhr.upload.addEventListener("load", () => {
        bar.style.width = "100%";
        text.textContent = "Uploaded. Checking and importing the prompts…";
      });
      xhr.addEventListener("load", () => {
        if (xhr.status >= 200 && xhr.status < 300) {
          // The server redirected to the new prompt set; XHR followed it.
          window.location.assign(xhr.responseURL || window.location.href);
          return;
        }
        const type = xhr.getResponseHeader("Content-Type") || "";
        if (type.indexOf("text/html") === 0 && xhr.status < 500) {
          const holder = document.createElement("div");
          holder.innerHTML = xhr.responseText;
          const replacement = holder.querySelector("[data-upload]");
          if (replacement) {
            root.replaceWith(replacement);
            enhance(replacement);
            return;
          }
        }
        button.disabled = false;
        text.textContent = "The upload failed (" + xhr.status + "). Nothing was imported; try again.";
      });
      xhr.addEventListener("error", () => {
        button.disabled = false;
        text.textContent = "The connection was lost during the upload. Nothing was imported; try again.";
      });
      xhr.send(new FormData(form));
    });
  }

  function init() {
    document.querySelectorAll("[data-upload]").forEach(enhance);
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
