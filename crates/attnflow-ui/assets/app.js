// attnflow ui: the only script, served from the binary. Pages work
// without it; it adds live progress to the page of a running run.
"use strict";
(function () {
  const panel = document.querySelector("[data-live]");
  if (!panel || !window.EventSource) {
    return;
  }
  const source = new EventSource(panel.getAttribute("data-live"));
  const show = function (event) {
    let snapshot;
    try {
      snapshot = JSON.parse(event.data);
    } catch (error) {
      return;
    }
    for (const field of ["step", "loss", "tokens_per_second", "state"]) {
      const element = panel.querySelector('[data-field="' + field + '"]');
      const value = snapshot[field];
      if (element && value !== null && value !== undefined) {
        element.textContent = typeof value === "number" && field !== "step"
          ? value.toFixed(field === "loss" ? 4 : 0)
          : String(value);
      }
    }
    panel.setAttribute("data-status", snapshot.status);
  };
  source.addEventListener("progress", show);
  source.addEventListener("done", function (event) {
    show(event);
    source.close();
    panel.querySelector("h2").textContent = "Finished";
  });
})();
