"""The report page's fixed parts: its style and script. Nothing from a run is ever pasted into them.

The run's data travels as one JSON block (`<script type="application/json">`, never executed); the script
builds every element from it with `textContent` and attributes, never `innerHTML`, so a file name such as
`<script>.png` is shown as text. The page's Content-Security-Policy allows only these two blocks (by their
hashes), images from files and data: URLs, and no network at all.
"""

from __future__ import annotations

ROWS_PER_PAGE = 50

STYLE = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#fafafa;color:#222}
header{padding:12px 16px;background:#20242a;color:#eee}
header h1{font-size:18px;margin:0 0 6px}
.notice{font-weight:600;color:#ffd479;margin:0 0 8px}
dl{display:grid;grid-template-columns:repeat(2,max-content minmax(0,1fr));gap:2px 12px;margin:0}
dt{color:#aab}dd{margin:0;overflow-wrap:anywhere}
.controls{position:sticky;top:0;background:#fff;border-bottom:1px solid #ccc;padding:8px 16px;
 display:flex;gap:16px;align-items:center;flex-wrap:wrap;z-index:1}
.row{display:flex;gap:12px;padding:8px 16px;border-bottom:1px solid #ddd;align-items:flex-start;flex-wrap:wrap}
.row.failed{background:#fff0f0}.row.not_converged{background:#fffbea}
.info{width:230px;overflow-wrap:anywhere}
.name{font-weight:600}
.status{display:inline-block;padding:0 6px;border-radius:3px;background:#ddd}
.status.ok{background:#c8efc8}.status.failed{background:#f6b8b8}.status.not_converged{background:#f6e3a0}
.error{color:#a00;white-space:pre-wrap}
figure{margin:0;width:128px;text-align:center;font-size:12px;overflow-wrap:anywhere}
figure img,.none{width:128px;height:128px;display:block;background:#eee;object-fit:contain}
img.px{image-rendering:pixelated}
.none{display:flex;align-items:center;justify-content:center;color:#888}
.curves{display:flex;gap:6px;flex-wrap:wrap}
.identity{font-weight:600;color:#6a3d00}
#scale:not([hidden]){display:flex;gap:8px;align-items:center;margin:8px 0 0}#scale img{height:12px;width:256px}
svg.curve{background:#fff;border:1px solid #ccc}
svg text{font-size:10px;fill:#444}
"""

SCRIPT = r"""
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const PER_PAGE = %(per_page)d;
  const SVGNS = "http://www.w3.org/2000/svg";
  const LABEL = {ok: "ok", not_converged: "not converged", failed: "failed", skipped: "skipped"};
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"];
  const state = {status: "all", sort: "name", page: 0};

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined && text !== null) e.textContent = String(text);
    return e;
  }
  function num(x, digits) { return x === null || x === undefined ? "-" : Number(x).toPrecision(digits || 4); }
  function svg(tag, attrs) {
    const e = document.createElementNS(SVGNS, tag);
    for (const k in attrs) e.setAttribute(k, attrs[k]);
    return e;
  }

  function header() {
    const run = data.run;
    document.getElementById("notice").textContent = run.notice;
    const dl = document.getElementById("numbers");
    for (const [k, v] of run.numbers) { dl.appendChild(el("dt", null, k)); dl.appendChild(el("dd", null, v)); }
    if (run.scale) {  // the disagreement maps' fixed scale
      const scale = document.getElementById("scale");
      scale.appendChild(el("span", null, "0"));
      const bar = el("img");
      bar.src = run.scale.bar;
      bar.alt = "colour scale of the disagreement maps";
      scale.appendChild(bar);
      scale.appendChild(el("span", null, run.scale.max + "+"));
      scale.appendChild(el("span", null, run.scale.text));
      scale.hidden = false;
    }
  }

  // One small chart: a polyline per sample (log10 of the values with `log`), an optional dashed level line.
  function curve(title, series, log, level) {
    const W = 180, H = 64, P = 4, T = 12;
    const f = log ? (v) => Math.log10(Math.max(v, 1e-12)) : (v) => v;
    let lo = Infinity, hi = -Infinity;
    const all = series.map((s) => s.map(f));
    for (const s of all) for (const v of s) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (level !== null && level !== undefined) { lo = Math.min(lo, f(level)); hi = Math.max(hi, f(level)); }
    if (!(hi > lo)) { hi = lo + 1; }
    const y = (v) => (T + P + (H - T - 2 * P) * (1 - (v - lo) / (hi - lo))).toFixed(1);
    const box = svg("svg", {"class": "curve", width: W, height: H, viewBox: "0 0 " + W + " " + H});
    const label = svg("text", {x: 3, y: 10});
    label.textContent = title;
    box.appendChild(label);
    all.forEach((s, k) => {
      const pts = s.map((v, i) => (P + (W - 2 * P) * (s.length > 1 ? i / (s.length - 1) : 0)).toFixed(1) + "," + y(v));
      box.appendChild(svg("polyline", {points: pts.join(" "), fill: "none", stroke: COLORS[k %% COLORS.length],
                                       "stroke-width": 1.2}));
    });
    if (level !== null && level !== undefined) {
      box.appendChild(svg("line", {x1: P, x2: W - P, y1: y(f(level)), y2: y(f(level)), stroke: "#000",
                                   "stroke-dasharray": "3 3", "class": "eps"}));
    }
    return box;
  }

  function image(src, caption, pixelated, link) {
    const fig = el("figure");
    if (src) {
      const img = el("img", pixelated ? "px" : null);
      img.loading = "lazy";
      img.alt = caption;
      img.src = src;
      if (link) { const a = el("a"); a.href = src; a.appendChild(img); fig.appendChild(a); }
      else fig.appendChild(img);
    } else {
      fig.appendChild(el("div", "none", "not available"));
    }
    fig.appendChild(el("figcaption", null, caption));
    return fig;
  }

  function row(r) {
    const div = el("div", "row " + r.status);
    div.dataset.status = r.status;
    const info = el("div", "info");
    info.appendChild(el("div", "name", r.name));
    const st = el("span", "status " + r.status, LABEL[r.status] || r.status);
    info.appendChild(st);
    if (r.earlier_status) {
      info.appendChild(el("span", null, " (" + (LABEL[r.earlier_status] || r.earlier_status) + ")"));
    }
    if (r.error) info.appendChild(el("div", "error", r.error));
    if (r.worst_sample_l2 !== null) {
      const l2 = r.samples.length > 1
        ? "L2 best " + num(r.best_sample_l2) + ", worst " + num(r.worst_sample_l2)
        : "L2 " + num(r.worst_sample_l2);
      info.appendChild(el("div", null, l2 + "; eps " + num(data.run.eps, 3)));
    }
    const met = r.samples.filter((s) => s.status === "ok").length;
    if (r.samples.length > 1) info.appendChild(el("div", null, met + " of " + r.samples.length + " samples met eps"));
    if (r.steps !== null) info.appendChild(el("div", null, r.steps + " steps, " + num(r.seconds, 3) + " s"));
    if (r.identity) info.appendChild(el("div", "identity", r.identity));
    div.appendChild(info);
    if (r.status === "failed") return div;
    div.appendChild(image(r.crop, "input " + (r.crop_size || ""), true, false));
    r.samples.forEach((s, k) => {
      const tag = r.samples.length > 1 ? "#" + k + " " : "";
      const score = s.face_score !== undefined && s.face_score !== null ? ", face " + num(s.face_score, 3) : "";
      const mark = s.status === "ok" ? " ok" : s.status === "not_converged" ? " > eps" : "";
      div.appendChild(image(s.image, tag + "L2 " + num(s.best_l2) + mark + score, false, true));
      div.appendChild(image(s.down, tag + "downscaled", true, false));
    });
    if (r.disagreement) {
      const map = image(r.disagreement.image, "spread, mean " + num(r.disagreement.mean, 3), false, true);
      map.className = "disagreement";
      div.appendChild(map);
    }
    const curves = el("div", "curves");
    const have = (key) => r.samples.filter((s) => s.curve && s.curve[key] && s.curve[key].length)
      .map((s) => s.curve[key]);
    if (have("l2").length) curves.appendChild(curve("L2 (log) vs eps", have("l2"), true, data.run.eps));
    if (have("geocross").length) curves.appendChild(curve("GEOCROSS", have("geocross"), false, null));
    if (have("lr").length) curves.appendChild(curve("learning rate", have("lr"), false, null));
    div.appendChild(curves);
    return div;
  }

  function chosen() {
    let rows = data.rows.filter((r) => state.status === "all" || r.outcome === state.status);
    const byName = (a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0);
    const sign = state.sort === "l2desc" ? -1 : 1;
    // the worst sample's L2 (the one that decides the status); no L2 (failed): last either way
    const l2 = (r) => (r.worst_sample_l2 === null ? sign * Infinity : r.worst_sample_l2);
    if (state.sort === "name") rows.sort(byName);
    else rows.sort((a, b) => sign * (l2(a) - l2(b)) || byName(a, b));
    return rows;
  }

  function render() {
    const rows = chosen();
    const pages = Math.max(1, Math.ceil(rows.length / PER_PAGE));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * PER_PAGE;
    const list = document.getElementById("rows");
    list.replaceChildren(...rows.slice(first, first + PER_PAGE).map(row));
    document.getElementById("shown").textContent = rows.length
      ? "rows " + (first + 1) + "-" + Math.min(first + PER_PAGE, rows.length) + " of " + rows.length
      : "no rows";
    document.getElementById("page").textContent = "page " + (state.page + 1) + " of " + pages;
    document.getElementById("prev").disabled = state.page === 0;
    document.getElementById("next").disabled = state.page >= pages - 1;
    window.scrollTo(0, 0);
  }

  function controls() {
    const filter = document.getElementById("filter");
    const counts = {};
    // by where each input stands: a skipped one counts as what its earlier run found (as in the header)
    for (const r of data.rows) counts[r.outcome] = (counts[r.outcome] || 0) + 1;
    filter.appendChild(new Option("all (" + data.rows.length + ")", "all"));
    for (const s of ["ok", "not_converged", "failed", "skipped"]) {
      if (s !== "skipped" || counts[s]) filter.appendChild(new Option(LABEL[s] + " (" + (counts[s] || 0) + ")", s));
    }
    filter.addEventListener("change", () => { state.status = filter.value; state.page = 0; render(); });
    const sort = document.getElementById("sort");
    sort.addEventListener("change", () => { state.sort = sort.value; state.page = 0; render(); });
    document.getElementById("prev").addEventListener("click", () => { state.page -= 1; render(); });
    document.getElementById("next").addEventListener("click", () => { state.page += 1; render(); });
  }

  header();
  controls();
  render();
  document.body.dataset.ready = "1";
})();
"""

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="pulse-records" content="%(records)s">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; img-src 'self' file: data:; \
style-src '%(style_hash)s'; script-src '%(script_hash)s'">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>pulse report</title>
<style>%(style)s</style>
</head>
<body>
<header>
<h1>pulse report</h1>
<p class="notice" id="notice"></p>
<dl id="numbers"></dl>
<div id="scale" hidden></div>
</header>
<div class="controls">
<label>status <select id="filter"></select></label>
<label>sort <select id="sort"><option value="name">name</option><option value="l2">L2 (worst sample), lowest \
first</option><option value="l2desc">L2 (worst sample), highest first</option></select></label>
<button id="prev" type="button">previous</button><span id="page"></span><button id="next" type="button">next</button>
<span id="shown"></span>
</div>
<noscript>This page needs JavaScript to show its rows.</noscript>
<main id="rows"></main>
<script type="application/json" id="report-data">%(data)s</script>
<script>%(script)s</script>
</body>
</html>
"""
