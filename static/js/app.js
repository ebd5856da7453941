// Small progressive enhancements; every page works without this file.
document.addEventListener("htmx:responseError", (event) => {
  const box = document.getElementById("htmx-error");
  if (box) {
    box.textContent = "The server could not save that (" + event.detail.xhr.status + "). Nothing was lost; try again.";
    box.hidden = false;
  }
});
