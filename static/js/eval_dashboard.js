// The eval dashboard's Pareto charts (uPlot): quality against $ per 1k requests and against p95
// latency. Data comes from the <script type="application/json" id="eval-chart-data"> block.
(function () {
  "use strict";
  const COLOURS = ["#2b6cb0", "#c05621", "#2f855a", "#6b46c1", "#b83280", "#2c7a7b", "#975a16", "#4a5568"];

  function paretoFront(points) {
    // Lower x is better, higher quality is better: keep the points no other point beats on both.
    const sorted = points.slice().sort((a, b) => a.x - b.x || b.y - a.y);
    const front = [];
    let best = -Infinity;
    for (const p of sorted) {
      if (p.y > best) {
        front.push(p);
        best = p.y;
      }
    }
    return front;
  }

  function draw(el, data) {
    const field = el.dataset.x;
    const points = data.points
      .filter((p) => typeof p[field] === "number" && typeof p.quality === "number")
      .map((p) => ({ x: p[field], y: p.quality, label: p.label }));
    if (!points.length) {
      el.textContent = "No model has both a quality score and a measured " + el.dataset.xLabel + ".";
      return;
    }
    const xs = Array.from(new Set(points.map((p) => p.x))).sort((a, b) => a - b);
    const front = new Set(paretoFront(points));
    const series = [{ label: el.dataset.xLabel }];
    const columns = [xs];
    points.forEach((p, i) => {
      columns.push(xs.map((x) => (x === p.x ? p.y : null)));
      series.push({
        label: p.label,
        stroke: COLOURS[i % COLOURS.length],
        fill: COLOURS[i % COLOURS.length],
        points: { show: true, size: 12 },
        paths: () => null,
      });
    });
    columns.push(xs.map((x) => {
      const hit = Array.from(front).filter((p) => p.x === x);
      return hit.length ? Math.max(...hit.map((p) => p.y)) : null;
    }));
    series.push({ label: "Pareto front", stroke: "#718096", dash: [6, 4], spanGaps: true, points: { show: false } });
    const width = Math.max(320, Math.min(el.clientWidth || 720, 900));
    // eslint-disable-next-line no-undef
    new uPlot(
      {
        width,
        height: 320,
        scales: { x: { time: false } },
        axes: [{ label: el.dataset.xLabel }, { label: data.metric }],
        series,
      },
      columns,
      el,
    );
    el.dataset.drawn = String(points.length);
  }

  function init() {
    const block = document.getElementById("eval-chart-data");
    if (!block || typeof window.uPlot === "undefined") return;
    const data = JSON.parse(block.textContent);
    document.querySelectorAll(".chart[data-x]").forEach((el) => draw(el, data));
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
