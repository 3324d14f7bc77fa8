/* llmobs overview charts: draws every <div class="chart" data-chart="ID"> of #charts with uPlot
   from the page's JSON (data-charts, or fetched from data-src). No inline script: the CSP is
   script-src 'self'. Times are epoch seconds, shown in UTC. */
(function () {
  "use strict";
  var COLORS = ["#2f6fdf", "#e4572e", "#3fb68b", "#f0ad4e", "#8e6fd8", "#17becf", "#9aa5b1", "#d62780"];

  function fmt(unit, v) {
    if (v == null) return "–";
    if (unit === "usd") return "$" + (Math.abs(v) >= 1 ? v.toFixed(2) : v.toPrecision(2));
    if (unit === "share") return Math.round(v * 100) + " %";
    if (unit === "ms") return v >= 1000 ? (v / 1000).toFixed(1) + " s" : Math.round(v) + " ms";
    if (Math.abs(v) >= 1e6) return (v / 1e6).toFixed(1) + "M";
    if (Math.abs(v) >= 1e3) return (v / 1e3).toFixed(1) + "k";
    return String(Math.round(v * 100) / 100);
  }

  function options(chart, width) {
    var stepped = chart.kind === "bars" && uPlot.paths && uPlot.paths.stepped;
    var series = [{ label: "time (UTC)" }];
    chart.series.forEach(function (s, i) {
      var color = COLORS[i % COLORS.length];
      var opt = {
        label: s.label, stroke: color, width: 1.5, spanGaps: chart.kind !== "bars",
        value: function (u, v) { return fmt(chart.unit, v); },
        points: { show: chart.x.length < 60 }
      };
      if (stepped) { opt.paths = uPlot.paths.stepped({ align: 1 }); opt.fill = color + "22"; }
      series.push(opt);
    });
    return {
      title: chart.title,
      width: width,
      height: 220,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      scales: { y: chart.unit === "share" ? { range: [0, 1] } : { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 1]; } } },
      axes: [{}, { size: 72, values: function (u, vals) { return vals.map(function (v) { return fmt(chart.unit, v); }); } }],
      series: series,
      legend: { live: true }
    };
  }

  function draw(box, chart) {
    box.textContent = "";
    var total = 0;
    chart.series.forEach(function (s) { s.values.forEach(function (v) { if (v) total += 1; }); });
    if (!chart.x.length || !total) {
      var empty = document.createElement("p");
      empty.className = "muted chart-empty";
      empty.textContent = chart.title + ": no data in this window";
      box.appendChild(empty);
      box.setAttribute("data-drawn", "empty");
      return null;
    }
    var data = [chart.x].concat(chart.series.map(function (s) { return s.values; }));
    var width = Math.max(280, box.clientWidth || 480);
    var plot = new uPlot(options(chart, width), data, box);
    box.setAttribute("data-drawn", "1");
    return plot;
  }

  function render(root, payload) {
    var plots = [];
    root.querySelectorAll(".chart[data-chart]").forEach(function (box) {
      var chart = payload.charts[box.getAttribute("data-chart")];
      if (chart) {
        var plot = draw(box, chart);
        if (plot) plots.push([box, plot]);
      }
    });
    var pending = null;
    window.addEventListener("resize", function () {
      clearTimeout(pending);
      pending = setTimeout(function () {
        plots.forEach(function (p) { p[1].setSize({ width: Math.max(280, p[0].clientWidth), height: 220 }); });
      }, 150);
    });
    root.setAttribute("data-ready", "1");
  }

  function start() {
    var root = document.getElementById("charts");
    if (!root || typeof uPlot === "undefined") return;
    var inline = root.getAttribute("data-charts");
    if (inline) {
      render(root, JSON.parse(inline));
      return;
    }
    fetch(root.getAttribute("data-src"), { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (payload) { render(root, payload); })
      .catch(function (err) { root.textContent = "charts could not be loaded: " + err; });
  }

  /* Charts that arrive in an htmx fragment carry their data: data-chart-json. */
  function drawInline(root) {
    if (typeof uPlot === "undefined") return;
    root.querySelectorAll(".chart[data-chart-json]:not([data-drawn])").forEach(function (box) {
      draw(box, JSON.parse(box.getAttribute("data-chart-json")));
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
  document.addEventListener("htmx:afterSettle", function (event) { drawInline(event.target); });
})();
