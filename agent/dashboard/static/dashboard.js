/* edgewatch dashboard: refreshes the fleet table and draws the asset charts from /api/. */
(function () {
  "use strict";
  var REFRESH_MS = 10000;
  var COLORS = ["#1f77b4", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#17becf", "#bcbd22", "#7f7f7f"];

  function text(tag, value, cls) {
    var node = document.createElement(tag);
    if (value !== undefined && value !== null) node.textContent = String(value);
    if (cls) node.className = cls;
    return node;
  }
  function num(v, digits) {
    if (v === null || v === undefined || !isFinite(v)) return "-";
    return Math.abs(v) >= 1000 ? v.toFixed(0) : v.toFixed(digits === undefined ? 2 : digits);
  }
  function age(ms, now) {
    if (ms === null || ms === undefined) return "never";
    var s = Math.max(0, Math.floor((now - ms) / 1000));
    if (s >= 86400) return Math.floor(s / 86400) + " d ago";
    if (s >= 3600) return Math.floor(s / 3600) + " h ago";
    if (s >= 60) return Math.floor(s / 60) + " min ago";
    return s + " s ago";
  }
  function when(ms) {
    var d = new Date(ms);
    function p(n) { return (n < 10 ? "0" : "") + n; }
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" + p(d.getMinutes());
  }
  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { if (!r.ok) throw new Error(url + ": HTTP " + r.status); return r.json(); });
  }

  // ------------------------------------------------------------------ fleet

  function fleetRow(a, now) {
    var tr = document.createElement("tr");
    tr.className = "state-" + a.state;
    tr.setAttribute("data-asset", a.asset);
    var link = text("a", a.asset);
    link.href = "/assets/" + encodeURIComponent(a.asset);
    var name = document.createElement("td"); name.appendChild(link); tr.appendChild(name);
    tr.appendChild(text("td", a.state + (a.stopped ? " (stopped)" : "")));
    var score = text("td", num(a.score) + " / " + num(a.threshold), "n");
    if (a.ratio !== null) {
      score.appendChild(document.createTextNode(" "));
      score.appendChild(text("span", Math.round(a.ratio * 100) + " %", "ratio" + (a.ratio > 1 ? " hot" : "")));
    }
    tr.appendChild(score);
    var rul = text("td", num(a.rul, 0), "n");
    if (a.rul_low !== null) {
      rul.appendChild(document.createTextNode(" "));
      rul.appendChild(text("span", "[" + num(a.rul_low, 0) + ", " + num(a.rul_high, 0) + "]", "muted"));
    }
    tr.appendChild(rul);
    var inc = document.createElement("td");
    a.open_incidents.forEach(function (i, k) {
      if (k) inc.appendChild(document.createTextNode(", "));
      var l = text("a", i.kind + " " + i.severity, "sev-" + i.severity);
      l.href = "/alerts?asset=" + encodeURIComponent(a.asset) + "&status=open#alert-" + i.id;
      inc.appendChild(l);
    });
    tr.appendChild(inc);
    tr.appendChild(text("td", age(a.last_seen_ms, now)));
    tr.appendChild(text("td", a.model_version || "-"));
    return tr;
  }

  function refreshFleet() {
    getJSON("/api/fleet").then(function (f) {
      var body = document.querySelector("#fleet tbody");
      var rows = document.createDocumentFragment();
      f.assets.forEach(function (a) { rows.appendChild(fleetRow(a, f.generated_ms)); });
      body.replaceChildren(rows);
      document.getElementById("count").textContent = f.assets.length + " assets";
      document.getElementById("updated").textContent = when(f.generated_ms);
      var s = f.sync, sync = document.getElementById("sync");
      sync.textContent = s.backlog_items + " waiting" + (s.quarantined_items ? ", " + s.quarantined_items + " refused" : "") +
        "; last upload " + age(s.last_success_ms, f.generated_ms) + (s.healthy ? "" : "; error: " + s.last_error);
      sync.className = s.healthy ? "ok" : "bad";
      document.getElementById("model").textContent = f.model ? f.model.version + " (" + f.model.status + ")" : "none registered";
      document.body.setAttribute("data-refreshed", String(f.generated_ms));
    }).catch(function (e) { document.getElementById("updated").textContent = "refresh failed: " + e.message; });
  }

  // ------------------------------------------------------------------ asset

  function drawAsset(box) {
    var name = box.getAttribute("data-asset");
    var since = Number(box.getAttribute("data-since")), until = Number(box.getAttribute("data-until"));
    var url = "/api/assets/" + encodeURIComponent(name) + "?since=" + since + "&until=" + until;
    getJSON(url).then(function (d) {
      box.replaceChildren();
      var spans = d.incidents.map(function (x) {
        return { start: x.opened_ms, end: x.closed_ms, cls: "sev-" + x.severity, title: x.kind + " " + x.severity + " #" + x.id + (x.label ? " (" + x.label + ")" : "") };
      });
      function zoom(a, b) {
        window.location.assign("/assets/" + encodeURIComponent(name) + "?since=" + a + "&until=" + b);
      }
      // One width for all: the first charts must not be wider than those drawn after
      // the page grew a scroll bar.
      var width = Math.max(320, box.clientWidth - 20);
      var base = { x0: d.since_ms, x1: d.until_ms, spans: spans, onZoom: zoom, width: width };
      var p = d.predictions;
      EWChart.chart(box, Object.assign({}, base, {
        title: "Anomaly score",
        series: [
          { label: "score (max per bucket)", color: "#d62728", ts: p.ts_ms, values: p.score },
          { label: "threshold", color: "#555", ts: p.ts_ms, values: p.threshold, dash: "5 4" }
        ]
      }));
      if (p.rul.some(function (v) { return v !== null; })) {
        EWChart.chart(box, Object.assign({}, base, {
          title: "RUL" + (d.rul_unit ? " (" + d.rul_unit + ")" : ""),
          series: [{ label: "RUL (min per bucket)", color: "#1f77b4", ts: p.ts_ms, values: p.rul }],
          band: p.rul_low.some(function (v) { return v !== null; }) ?
            { label: "80 % interval", color: "rgba(31,119,180,0.18)", ts: p.ts_ms, low: p.rul_low, high: p.rul_high } : null
        }));
      }
      Object.keys(d.sensors.values).forEach(function (sensor, k) {
        EWChart.chart(box, Object.assign({}, base, {
          title: sensor, height: 130,
          series: [{ label: "mean per bucket", color: COLORS[k % COLORS.length], ts: d.sensors.ts_ms, values: d.sensors.values[sensor] }]
        }));
      });
      document.body.setAttribute("data-drawn", "1");
    }).catch(function (e) {
      box.replaceChildren(text("p", "cannot load the charts: " + e.message, "error"));
    });
  }

  window.EWDashboard = { refreshFleet: refreshFleet };

  document.addEventListener("DOMContentLoaded", function () {
    var page = document.body.getAttribute("data-page");
    if (page === "fleet") window.setInterval(refreshFleet, REFRESH_MS);
    if (page === "asset") drawAsset(document.getElementById("charts"));
  });
})();
