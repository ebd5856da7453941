// Live loss curve of a training run (uPlot, vendored under static/vendor/uplot/).
//
// <div data-loss-chart data-metrics-url="/api/v1/training-runs/7/metrics" data-active="true"
//      data-active-source="#run-progress" data-interval="3000"></div>
//
// Fetches the run's metric rows (GET, same origin: the session cookie authenticates, no CSRF
// header needed for a read), draws train and eval loss against the step, and while the run is
// active asks only for the steps after the last one it has (`?since_step=`). "Active" is read from
// the element named by data-active-source when there is one (the page's polled partial, which the
// server re-renders with data-active="false" once the run has ended), else from data-active.
// After the run ends it fetches once more and stops. Sets data-points (the number of steps drawn)
// so tests and people can tell that points arrived. No inline script or style: uPlot sizes its
// canvas through the CSSOM, which the Content Security Policy allows.
(function () {
  "use strict";

  const TRAIN = "#2b6cb0";
  const EVAL = "#c05621";
  // Whole steps only on the x axis (uPlot would otherwise label 2.5, 7.5, ...).
  const STEP_TICKS = [1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 2500, 5000, 10000,
    20000, 25000, 50000, 100000, 200000, 250000, 500000, 1000000];

  function isActive(el) {
    const sourceSelector = el.dataset.activeSource;
    const source = sourceSelector ? document.querySelector(sourceSelector) : null;
    const holder = source && source.dataset.active !== undefined ? source : el;
    return holder.dataset.active === "true";
  }

  function finite(value) {
    return typeof value === "number" && Number.isFinite(value) ? value : null;
  }

  function setup(el) {
    if (el.dataset.lossChartReady) return;
    el.dataset.lossChartReady = "1";
    const url = el.dataset.metricsUrl;
    const interval = Math.max(1000, parseInt(el.dataset.interval || "3000", 10) || 3000);
    const rows = new Map(); // step -> {train, eval}; a resumed run's rewritten step replaces its row
    let lastStep = -1;
    let plot = null;
    let timer = null;
    let stopped = false;

    const note = document.createElement("p");
    note.className = "muted";
    note.textContent = "No step logged yet.";
    el.appendChild(note);

    function columns() {
      const steps = Array.from(rows.keys()).sort((a, b) => a - b);
      return [
        steps,
        steps.map((s) => rows.get(s).train),
        steps.map((s) => rows.get(s).eval),
      ];
    }

    function width() {
      return Math.max(280, Math.min(el.clientWidth || 720, 960));
    }

    function draw() {
      const data = columns();
      el.dataset.points = String(data[0].length);
      if (!data[0].length) return;
      note.hidden = true;
      if (plot) {
        plot.setData(data);
        return;
      }
      // eslint-disable-next-line no-undef
      plot = new uPlot(
        {
          width: width(),
          height: 280,
          scales: { x: { time: false } },
          axes: [{ label: "step", incrs: STEP_TICKS }, { label: "loss" }],
          series: [
            { label: "step" },
            { label: "train loss", stroke: TRAIN, width: 2, spanGaps: true, points: { show: true, size: 4 } },
            { label: "eval loss", stroke: EVAL, width: 2, dash: [6, 4], spanGaps: true, points: { show: true, size: 6 } },
          ],
        },
        data,
        el,
      );
    }

    async function fetchNew() {
      const query = lastStep >= 0 ? "?since_step=" + encodeURIComponent(String(lastStep)) : "";
      const response = await fetch(url + query, {
        credentials: "same-origin",
        headers: { Accept: "application/json" },
      });
      if (!response.ok) throw new Error("metrics request failed: " + response.status);
      const batch = await response.json();
      for (const m of batch) {
        if (typeof m.step !== "number") continue;
        const previous = rows.get(m.step) || { train: null, eval: null };
        rows.set(m.step, {
          train: finite(m.train_loss) ?? previous.train,
          eval: finite(m.eval_loss) ?? previous.eval,
        });
        lastStep = Math.max(lastStep, m.step);
      }
      draw();
    }

    async function tick() {
      timer = null;
      const active = isActive(el);
      try {
        await fetchNew();
        el.removeAttribute("data-error");
      } catch (err) {
        el.dataset.error = String(err && err.message ? err.message : err);
      }
      if (active && !stopped && document.body.contains(el)) {
        timer = window.setTimeout(tick, interval);
      } else {
        // Ended (or never active): the fetch above was the last one.
        el.dataset.finished = "true";
      }
    }

    window.addEventListener("resize", () => {
      if (plot) plot.setSize({ width: width(), height: 280 });
    });
    // A run that resumes on this page (the partial flips back to active) starts polling again.
    document.body.addEventListener("htmx:afterSettle", () => {
      if (!timer && isActive(el) && document.body.contains(el)) {
        el.removeAttribute("data-finished");
        timer = window.setTimeout(tick, interval);
      }
    });
    window.addEventListener("pagehide", () => {
      stopped = true;
      if (timer) window.clearTimeout(timer);
    });
    tick();
  }

  function init(root) {
    root.querySelectorAll("[data-loss-chart]").forEach(setup);
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", () => init(document));
  } else {
    init(document);
  }
})();
