// Small SVG charts for the dashboard, no libraries: `plot(svg, spec)` draws axes, ticks, a
// legend and any number of series (lines with markers, bare points, or bars) into an <svg>
// with a viewBox. Exposed as window.SIQCharts.
"use strict";

(function () {
  const NS = "http://www.w3.org/2000/svg";
  const MARGIN = { left: 52, right: 14, top: 26, bottom: 40 };

  function el(tag, attrs, text) {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // Ticks on 1, 2 or 5 x 10^k, with as many decimals as that step needs: a step of 0.05
  // labels 99.30, 99.35, 99.40 (one decimal would print 99.3, 99.3, 99.4).
  // An integer axis (SIQ iterations) steps by 1 at least.
  function niceTicks(lo, hi, count, integer) {
    const span = hi - lo || 1;
    const raw = span / Math.max(1, count);
    const mag = 10 ** Math.floor(Math.log10(raw));
    const nice = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const step = integer ? Math.max(1, nice) : nice;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) {
      ticks.push(Number(t.toPrecision(12)));
    }
    const decimals = Math.max(0, Math.ceil(-Math.log10(step) - 1e-9));
    return { ticks, format: (v) => v.toFixed(decimals) };
  }

  function logTicks(lo, hi) {
    const ticks = [];
    for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) {
      for (const m of [1, 2, 5]) {
        const t = m * 10 ** e;
        if (t >= lo && t <= hi) ticks.push(t);
      }
    }
    return ticks;
  }

  function axisRange(values, axis) {
    let lo = axis.min ?? Math.min(...values);
    let hi = axis.max ?? Math.max(...values);
    if (!Number.isFinite(lo) || !Number.isFinite(hi)) return [0, 1];
    if (lo === hi) {
      const pad = axis.log ? lo * 0.5 : Math.abs(lo) * 0.05 || 1;
      lo -= pad;
      hi += pad;
    } else if (axis.pad) {
      const pad = axis.log ? 0 : (hi - lo) * axis.pad;
      lo = axis.min ?? lo - pad;
      hi = axis.max ?? hi + pad;
    }
    if (axis.log) {
      lo = axis.min ?? lo / 1.4;
      hi = axis.max ?? hi * 1.4;
    }
    if (axis.clampMax !== undefined) hi = Math.min(hi, axis.clampMax);
    if (axis.clampMin !== undefined) lo = Math.max(lo, axis.clampMin);
    return [lo, hi];
  }

  function scale(axis, lo, hi, from, to) {
    if (axis.log) {
      const a = Math.log10(lo), b = Math.log10(hi);
      return (v) => from + ((Math.log10(v) - a) / (b - a || 1)) * (to - from);
    }
    return (v) => from + ((v - lo) / (hi - lo || 1)) * (to - from);
  }

  // spec: {x: {label, log, min, max, integer, format}, y: {...},
  //        (format: for log axes; a linear axis labels its ticks with its step's decimals)
  //        series: [{name, color, kind: "line" | "points" | "bars", hollow, points: [[x, y, label?]]}],
  //        empty: "text when there is nothing to draw"}
  function plot(svg, spec) {
    svg.replaceChildren();
    svg.siqSpec = spec; // redrawn at the new size when the window is resized
    // one SVG unit per CSS pixel, so the text has the same size on a phone as on a desktop
    const width = Math.max(260, Math.round(svg.clientWidth || 480));
    const height = Math.round(Math.min(320, Math.max(210, width * 0.5)));
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    const all = spec.series.flatMap((s) => s.points);
    if (all.length === 0) {
      svg.append(el("text", { x: width / 2, y: height / 2, "text-anchor": "middle", class: "empty" },
        spec.empty || "nothing to plot yet"));
      return;
    }
    const [xl, xh] = axisRange(all.map((p) => p[0]), spec.x);
    const [yl, yh] = axisRange(all.map((p) => p[1]), spec.y);
    const ticksOf = (axis, lo, hi, count) => (axis.log
      ? { ticks: logTicks(lo, hi), format: axis.format || String }
      : niceTicks(lo, hi, count, axis.integer));
    const { ticks: yTicks, format: fy } = ticksOf(spec.y, yl, yh, 5);
    const { ticks: xTicks, format: fx } = ticksOf(spec.x, xl, xh, 6);
    // room for the widest y label (about 6.5 units a character at 11 px) beside the axis title
    const widest = Math.max(0, ...yTicks.map((t) => fy(t).length));
    const x0 = Math.max(MARGIN.left, Math.ceil(28 + 6.5 * widest)), x1 = width - MARGIN.right;
    const y0 = height - MARGIN.bottom, y1 = MARGIN.top;
    const sx = scale(spec.x, xl, xh, x0, x1);
    const sy = scale(spec.y, yl, yh, y0, y1);

    const grid = el("g", { class: "grid" });
    for (const t of yTicks) {
      grid.append(el("line", { x1: x0, x2: x1, y1: sy(t), y2: sy(t) }));
      grid.append(el("text", { x: x0 - 6, y: sy(t) + 4, "text-anchor": "end" }, fy(t)));
    }
    for (const t of xTicks) {
      grid.append(el("line", { x1: sx(t), x2: sx(t), y1: y0, y2: y0 + 4 }));
      grid.append(el("text", { x: sx(t), y: y0 + 17, "text-anchor": "middle" }, fx(t)));
    }
    grid.append(el("line", { x1: x0, x2: x1, y1: y0, y2: y0, class: "axis" }));
    grid.append(el("line", { x1: x0, x2: x0, y1: y0, y2: y1, class: "axis" }));
    grid.append(el("text", { x: (x0 + x1) / 2, y: height - 6, "text-anchor": "middle", class: "label" },
      spec.x.label || ""));
    grid.append(el("text", { x: 12, y: (y0 + y1) / 2, "text-anchor": "middle", class: "label",
      transform: `rotate(-90 12 ${(y0 + y1) / 2})` }, spec.y.label || ""));
    svg.append(grid);

    const bars = spec.series.filter((s) => s.kind === "bars");
    const barWidth = Math.min(28, ((x1 - x0) / Math.max(1, xTicks.length + 1)) / Math.max(1, bars.length));
    spec.series.forEach((s, index) => {
      const g = el("g", { class: "series", "data-series": s.name });
      const pts = s.points.filter((p) => Number.isFinite(p[0]) && Number.isFinite(p[1]));
      if (s.kind === "bars") {
        const offset = (bars.indexOf(s) - (bars.length - 1) / 2) * barWidth;
        for (const p of pts) {
          const top = sy(Math.max(p[1], yl));
          g.append(el("rect", { x: sx(p[0]) + offset - barWidth / 2, y: top, width: barWidth,
            height: Math.max(0, sy(Math.max(yl, 0)) - top), fill: s.color }));
        }
      } else {
        if (s.kind === "line" && pts.length > 1) {
          const d = pts.map((p, i) => `${i ? "L" : "M"}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`);
          g.append(el("path", { d: d.join(" "), stroke: s.color, fill: "none", "stroke-width": 2 }));
        }
        for (const p of pts) {
          const dot = el("circle", { cx: sx(p[0]), cy: sy(p[1]), r: s.hollow ? 5 : 4,
            fill: s.hollow ? "#fff" : s.color, stroke: s.color, "stroke-width": 2 });
          dot.append(el("title", {}, p[2] || `${fx(p[0])}, ${fy(p[1])}`));
          g.append(dot);
          if (p[2] && s.labels) {
            g.append(el("text", { x: sx(p[0]) + 7, y: sy(p[1]) - 6, class: "point-label" }, p[2]));
          }
        }
      }
      svg.append(g);
      const lx = x0 + 8 + index * Math.min(150, (x1 - x0 - 8) / spec.series.length);
      svg.append(el("rect", { x: lx, y: 8, width: 10, height: 10, fill: s.hollow ? "#fff" : s.color,
        stroke: s.color, "stroke-width": 2 }));
      svg.append(el("text", { x: lx + 15, y: 17, class: "legend" }, s.name));
    });
  }

  let resizeTimer = null;
  window.addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(() => {
      for (const svg of document.querySelectorAll("svg.chart")) if (svg.siqSpec) plot(svg, svg.siqSpec);
    }, 150);
  });

  window.SIQCharts = { plot };
})();
