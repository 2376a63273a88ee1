/* edgewatch chart: a small SVG time-series chart, no dependencies, no build step.
 *
 * EWChart.chart(container, {
 *   title, x0, x1,                       // time axis (epoch ms), shared by every chart
 *   series: [{label, color, ts, values, dash}],   // null values leave gaps
 *   band: {label, color, ts, low, high},          // optional filled interval
 *   spans: [{start, end, cls, title}],            // optional shaded time spans (incidents)
 *   width, height, onZoom(x0, x1)                 // drag across the plot to zoom
 * })
 * Text goes in with textContent only: names from the database are never parsed as markup.
 */
(function () {
  "use strict";
  var NS = "http://www.w3.org/2000/svg";
  var M = { l: 60, r: 12, t: 22, b: 22 };

  function el(name, attrs, parent) {
    var node = document.createElementNS(NS, name);
    for (var k in attrs) { if (attrs[k] !== undefined) node.setAttribute(k, attrs[k]); }
    if (parent) parent.appendChild(node);
    return node;
  }

  function finite(v) { return typeof v === "number" && isFinite(v); }

  function niceTicks(lo, hi, count) {
    var span = hi - lo;
    if (!(span > 0)) return [lo];
    var step = Math.pow(10, Math.floor(Math.log10(span / count)));
    var err = span / count / step;
    step *= err >= 7.5 ? 10 : err >= 3.5 ? 5 : err >= 1.5 ? 2 : 1;
    var out = [];
    for (var v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(v);
    return out;
  }

  function fmtNum(v, step) {
    var digits = step >= 1 ? 0 : Math.min(6, Math.ceil(-Math.log10(step)));
    return v.toFixed(digits);
  }

  var MIN = 60000, HOUR = 60 * MIN, DAY = 24 * HOUR;
  var TIME_STEPS = [MIN, 5 * MIN, 10 * MIN, 15 * MIN, 30 * MIN, HOUR, 2 * HOUR, 3 * HOUR,
    6 * HOUR, 12 * HOUR, DAY, 2 * DAY, 7 * DAY];

  // Ticks on round local times (whole hours, midnights), not round milliseconds.
  function timeTicks(x0, x1, count) {
    var step = TIME_STEPS[TIME_STEPS.length - 1];
    for (var i = 0; i < TIME_STEPS.length; i++) {
      if ((x1 - x0) / TIME_STEPS[i] <= count) { step = TIME_STEPS[i]; break; }
    }
    var offset = new Date(x0).getTimezoneOffset() * MIN;
    var out = [];
    for (var t = Math.ceil((x0 - offset) / step) * step + offset; t <= x1; t += step) out.push(t);
    return out;
  }

  function pad2(n) { return (n < 10 ? "0" : "") + n; }

  function fmtTime(ms, span) {
    var d = new Date(ms);
    var hm = pad2(d.getHours()) + ":" + pad2(d.getMinutes());
    if (span <= 36 * HOUR) return hm;
    return pad2(d.getMonth() + 1) + "-" + pad2(d.getDate()) + (d.getHours() || d.getMinutes() ? " " + hm : "");
  }

  function path(ts, values, sx, sy) {
    var d = "", pen = false;
    for (var i = 0; i < ts.length; i++) {
      if (!finite(values[i])) { pen = false; continue; }
      d += (pen ? "L" : "M") + sx(ts[i]).toFixed(1) + " " + sy(values[i]).toFixed(1);
      pen = true;
    }
    return d;
  }

  function bandPaths(band, sx, sy) {
    var out = [], run = [];
    function flush() {
      if (run.length > 1) {
        var d = "";
        run.forEach(function (i, k) { d += (k ? "L" : "M") + sx(band.ts[i]).toFixed(1) + " " + sy(band.high[i]).toFixed(1); });
        for (var k = run.length - 1; k >= 0; k--) { var i = run[k]; d += "L" + sx(band.ts[i]).toFixed(1) + " " + sy(band.low[i]).toFixed(1); }
        out.push(d + "Z");
      }
      run = [];
    }
    for (var i = 0; i < band.ts.length; i++) {
      if (finite(band.low[i]) && finite(band.high[i])) run.push(i); else flush();
    }
    flush();
    return out;
  }

  function chart(container, opts) {
    var width = opts.width || Math.max(320, container.clientWidth || 800);
    var height = opts.height || 180;
    var x0 = opts.x0, x1 = opts.x1;
    var lo = Infinity, hi = -Infinity;
    function take(v) { if (finite(v)) { lo = Math.min(lo, v); hi = Math.max(hi, v); } }
    (opts.series || []).forEach(function (s) { s.values.forEach(take); });
    if (opts.band) { opts.band.low.forEach(take); opts.band.high.forEach(take); }
    var empty = !(hi >= lo);
    if (empty) { lo = 0; hi = 1; }
    if (hi === lo) { hi += 1; lo -= 1; }
    var pad = (hi - lo) * 0.06; lo -= pad; hi += pad;
    var pw = width - M.l - M.r, ph = height - M.t - M.b;
    function sx(t) { return M.l + (t - x0) / (x1 - x0) * pw; }
    function sy(v) { return M.t + (1 - (v - lo) / (hi - lo)) * ph; }

    var figure = document.createElement("figure");
    figure.className = "chart";
    var svg = el("svg", { width: width, height: height, viewBox: "0 0 " + width + " " + height, role: "img" }, figure);
    el("title", {}, svg).textContent = opts.title || "";
    var clipId = "clip" + Math.random().toString(36).slice(2);
    el("rect", { x: M.l, y: M.t, width: pw, height: ph }, el("clipPath", { id: clipId }, el("defs", {}, svg)));
    el("rect", { x: M.l, y: M.t, width: pw, height: ph, class: "plot" }, svg);

    var grid = el("g", { class: "grid" }, svg);
    var yTicks = niceTicks(lo, hi, 4);
    var yStep = yTicks.length > 1 ? yTicks[1] - yTicks[0] : 1;
    yTicks.forEach(function (v) {
      el("line", { x1: M.l, x2: M.l + pw, y1: sy(v), y2: sy(v) }, grid);
      var t = el("text", { x: M.l - 6, y: sy(v) + 4, "text-anchor": "end" }, grid);
      t.textContent = fmtNum(v, yStep);
    });
    timeTicks(x0, x1, Math.max(2, Math.floor(pw / 110))).forEach(function (ms) {
      el("line", { x1: sx(ms), x2: sx(ms), y1: M.t, y2: M.t + ph }, grid);
      var t = el("text", { x: sx(ms), y: height - 6, "text-anchor": "middle" }, grid);
      t.textContent = fmtTime(ms, x1 - x0);
    });

    var body = el("g", { "clip-path": "url(#" + clipId + ")" }, svg);
    (opts.spans || []).forEach(function (s) {
      var a = sx(Math.max(s.start, x0)), b = sx(Math.min(s.end === null ? x1 : s.end, x1));
      var r = el("rect", { x: a, y: M.t, width: Math.max(2, b - a), height: ph, class: "span " + (s.cls || "") }, body);
      if (s.title) el("title", {}, r).textContent = s.title;
    });
    if (opts.band) {
      bandPaths(opts.band, sx, sy).forEach(function (d) {
        el("path", { d: d, class: "band", fill: opts.band.color }, body);
      });
    }
    (opts.series || []).forEach(function (s) {
      el("path", { d: path(s.ts, s.values, sx, sy), stroke: s.color, "stroke-dasharray": s.dash, class: "line" }, body);
    });

    var legend = el("g", { class: "legend" }, svg);
    var lx = M.l;
    var items = (opts.series || []).map(function (s) { return [s.label, s.color]; });
    if (opts.band) items.push([opts.band.label, opts.band.color]);
    var title = el("text", { x: lx, y: 14, class: "title" }, legend);
    title.textContent = opts.title || "";
    lx += (opts.title || "").length * 7 + 16;
    items.forEach(function (it) {
      el("rect", { x: lx, y: 6, width: 10, height: 10, fill: it[1] }, legend);
      var t = el("text", { x: lx + 14, y: 15 }, legend);
      t.textContent = it[0];
      lx += 14 + String(it[0]).length * 7 + 14;
    });
    if (empty) {
      var none = el("text", { x: M.l + pw / 2, y: M.t + ph / 2, "text-anchor": "middle", class: "empty" }, svg);
      none.textContent = "no data in this range";
    }

    if (opts.onZoom) {
      var sel = el("rect", { x: 0, y: M.t, width: 0, height: ph, class: "selection", visibility: "hidden" }, svg);
      var overlay = el("rect", { x: M.l, y: M.t, width: pw, height: ph, class: "overlay" }, svg);
      var start = null;
      function px(ev) {
        var box = svg.getBoundingClientRect();
        return Math.min(M.l + pw, Math.max(M.l, ev.clientX - box.left));
      }
      overlay.addEventListener("mousedown", function (ev) {
        start = px(ev);
        sel.setAttribute("x", start); sel.setAttribute("width", 0); sel.setAttribute("visibility", "visible");
        ev.preventDefault();
      });
      overlay.addEventListener("mousemove", function (ev) {
        if (start === null) return;
        var p = px(ev);
        sel.setAttribute("x", Math.min(start, p)); sel.setAttribute("width", Math.abs(p - start));
      });
      function end(ev) {
        if (start === null) return;
        var p = px(ev), a = Math.min(start, p), b = Math.max(start, p);
        start = null;
        sel.setAttribute("visibility", "hidden");
        if (b - a < 5) return;
        function t(x) { return Math.round(x0 + (x - M.l) / pw * (x1 - x0)); }
        opts.onZoom(t(a), t(b));
      }
      overlay.addEventListener("mouseup", end);
      overlay.addEventListener("mouseleave", function () { start = null; sel.setAttribute("visibility", "hidden"); });
    }
    container.appendChild(figure);
    return figure;
  }

  window.EWChart = { chart: chart };
})();
