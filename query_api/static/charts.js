// Time-series charts (SVG, drawn here: no chart library) of one /stats/timeseries answer: request rate,
// error rate and latency percentiles, on one time axis (the answer's window), with axes, labels and one
// readout shared by the charts of a service that shows the API's own numbers of the step under the pointer.
//
// A point sits at its step's start time ``t``; consecutive steps are joined by a line, a step without spans
// (the API leaves it out) breaks it. Each point is a <circle data-testid="chart-point"> carrying its series,
// t and value, so tests can check the drawing against the API.

import { h, s } from "./dom.js";

const HEIGHT = 168;
const MARGIN = { right: 14, top: 12, bottom: 26 };
const LABEL_CHAR_W = 6.4; // the axis labels' 11px digits, to make room for the longest
const MINUTE = 60e3;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;
const TICK_STEPS = [MINUTE, 2 * MINUTE, 5 * MINUTE, 10 * MINUTE, 15 * MINUTE, 30 * MINUTE, HOUR, 2 * HOUR, 3 * HOUR, 6 * HOUR, 12 * HOUR, DAY, 2 * DAY];

const pad = (n) => String(n).padStart(2, "0");

function clock(t) {
  const d = new Date(t);
  return `${pad(d.getHours())}:${pad(d.getMinutes())}`;
}

function day(t) {
  const d = new Date(t);
  return `${pad(d.getMonth() + 1)}-${pad(d.getDate())}`;
}

/** A step's time range for the readout: "14:05–14:06", with the date when the window spans days. */
export function stepLabel(t, step, longWindow) {
  const range = `${clock(t)}–${clock(t + step)}`;
  return longWindow ? `${day(t)} ${range}` : range;
}

/** Round numbers for an axis: 0 up to at least ``max`` in about four steps. */
export function niceTicks(max) {
  if (!(max > 0)) return { top: 1, ticks: [0, 0.25, 0.5, 0.75, 1] };
  const raw = max / 4;
  const magnitude = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * magnitude).find((candidate) => candidate >= raw);
  const ticks = [];
  for (let v = 0; v < max + step * 1e-9; v += step) ticks.push(Number(v.toPrecision(12)));
  if (ticks[ticks.length - 1] < max) ticks.push(Number((ticks[ticks.length - 1] + step).toPrecision(12)));
  return { top: ticks[ticks.length - 1], ticks };
}

function timeTicks(start, end, plotWidth) {
  const most = Math.max(2, Math.floor(plotWidth / 78));
  const step = TICK_STEPS.find((candidate) => (end - start) / candidate <= most) ?? TICK_STEPS[TICK_STEPS.length - 1];
  const offset = new Date(start).getTimezoneOffset() * MINUTE; // ticks on local round times
  const ticks = [];
  for (let t = Math.ceil((start - offset) / step) * step + offset; t <= end; t += step) ticks.push(t);
  const long = end - start > DAY;
  return ticks.map((t) => {
    const midnight = new Date(t).getHours() === 0 && new Date(t).getMinutes() === 0;
    return { t, label: step >= DAY || (long && midnight) ? day(t) : clock(t) };
  });
}

/** The metrics a service's charts show, each from the API's point fields. */
export const METRICS = {
  rate: {
    title: "Rate",
    unit: "spans/s",
    series: [{ key: "rate", label: "spans/s", value: (p) => p.rate }],
    axis: (v) => `${trimmed(v)}/s`,
  },
  errors: {
    title: "Error rate",
    unit: "% of spans",
    series: [{ key: "errorRate", label: "errors", value: (p) => (p.count ? (p.errors / p.count) * 100 : 0) }],
    axis: (v) => `${trimmed(v)}%`,
  },
  latency: {
    title: "Latency",
    unit: "ms",
    series: [
      { key: "p50", label: "p50", value: (p) => p.p50 },
      { key: "p95", label: "p95", value: (p) => p.p95 },
      { key: "p99", label: "p99", value: (p) => p.p99 },
    ],
    axis: (v) => (v >= 1000 ? `${trimmed(v / 1000)} s` : `${trimmed(v)} ms`),
  },
};

function trimmed(v) {
  return String(Number(v.toPrecision(4)));
}

/** The x of time ``t`` and the y of value ``v`` in a plot of ``width`` px over [start, end] and [0, top]. */
function scales(start, end, top, width, left) {
  const plotW = width - left - MARGIN.right;
  const plotH = HEIGHT - MARGIN.top - MARGIN.bottom;
  return {
    plotW,
    plotH,
    x: (t) => left + ((t - start) / (end - start)) * plotW,
    y: (v) => MARGIN.top + plotH - (v / top) * plotH,
  };
}

function drawChart(metric, answer, width, hover) {
  const { start, end } = answer.window;
  const points = answer.points;
  const max = Math.max(0, ...points.flatMap((p) => metric.series.map((series) => series.value(p))));
  const { top, ticks } = niceTicks(max);
  const labels = ticks.map((v) => metric.axis(v));
  const left = Math.ceil(Math.max(...labels.map((label) => label.length)) * LABEL_CHAR_W + 12);
  const { plotW, plotH, x, y } = scales(start, end, top, width, left);

  const grid = ticks.map((v, i) =>
    s(
      "g",
      { class: "y-tick" },
      s("line", { x1: left, x2: left + plotW, y1: y(v), y2: y(v) }),
      s("text", { x: left - 6, y: y(v) + 4, "text-anchor": "end" }, labels[i]),
    ),
  );
  const xTicks = timeTicks(start, end, plotW).map(({ t, label }) =>
    s(
      "g",
      { class: "x-tick" },
      s("line", { x1: x(t), x2: x(t), y1: MARGIN.top + plotH, y2: MARGIN.top + plotH + 4 }),
      s("text", { x: x(t), y: HEIGHT - 8, "text-anchor": "middle" }, label),
    ),
  );
  const lines = [];
  const dots = [];
  metric.series.forEach((series, si) => {
    let d = "";
    points.forEach((p, i) => {
      const joined = i > 0 && p.t - points[i - 1].t === answer.step;
      d += `${joined ? "L" : "M"} ${x(p.t).toFixed(2)} ${y(series.value(p)).toFixed(2)} `;
      dots.push(
        s("circle", {
          class: ["point", `s${si}`],
          "data-testid": "chart-point",
          "data-series": series.key,
          "data-t": p.t,
          "data-value": series.value(p),
          "data-index": i,
          cx: x(p.t).toFixed(2),
          cy: y(series.value(p)).toFixed(2),
          r: 2.6,
        }),
      );
    });
    if (d) lines.push(s("path", { class: ["line", `s${si}`], d: d.trim() }));
  });
  const guide = s("line", { class: "guide", y1: MARGIN.top, y2: MARGIN.top + plotH, x1: 0, x2: 0, visibility: "hidden" });
  const overlay = s("rect", {
    class: "overlay",
    x: left,
    y: MARGIN.top,
    width: plotW,
    height: plotH,
  });
  const svg = s(
    "svg",
    {
      class: "chart",
      width,
      height: HEIGHT,
      viewBox: `0 0 ${width} ${HEIGHT}`,
      role: "img",
      "aria-label": `${metric.title} (${metric.unit}) over time`,
    },
    s("rect", {
      class: "plot",
      "data-testid": "chart-plot",
      "data-start": start,
      "data-end": end,
      "data-top": top,
      x: left,
      y: MARGIN.top,
      width: plotW,
      height: plotH,
    }),
    s("g", { class: "grid" }, grid),
    s("line", { class: "axis", x1: left, x2: left + plotW, y1: MARGIN.top + plotH, y2: MARGIN.top + plotH }),
    s("g", { class: "x-axis" }, xTicks),
    s("g", { class: "lines" }, lines),
    guide,
    s("g", { class: "points" }, dots),
    overlay,
  );
  const nearest = (event) => {
    if (!points.length) return -1;
    const box = svg.getBoundingClientRect();
    const px = event.clientX - box.left;
    let best = 0;
    for (let i = 1; i < points.length; i++) {
      if (Math.abs(x(points[i].t) - px) < Math.abs(x(points[best].t) - px)) best = i;
    }
    return best;
  };
  overlay.addEventListener("pointermove", (event) => hover(nearest(event)));
  overlay.addEventListener("pointerleave", () => hover(-1));
  const mark = (index) => {
    for (const dot of dots) dot.classList.toggle("on", Number(dot.dataset.index) === index);
    if (index < 0) {
      guide.setAttribute("visibility", "hidden");
      return;
    }
    const gx = x(points[index].t).toFixed(2);
    guide.setAttribute("x1", gx);
    guide.setAttribute("x2", gx);
    guide.setAttribute("visibility", "visible");
  };
  return { svg, mark };
}

function legend(metric) {
  return h(
    "span",
    { class: "chart-legend" },
    metric.series.length > 1
      ? metric.series.map((series, si) => h("span", {}, h("span", { class: ["swatch", `s${si}`] }), series.label))
      : null,
  );
}

function readoutFields(p, answer) {
  const errorRate = p.count ? (p.errors / p.count) * 100 : 0;
  const field = (key, label, value, text) =>
    h("span", { class: "ro-field", "data-field": key, "data-value": value }, h("b", {}, label), " ", text);
  return [
    h("span", { class: "ro-time", "data-field": "t", "data-value": p.t }, stepLabel(p.t, answer.step, answer.window.end - answer.window.start > DAY)),
    field("count", "spans", p.count, String(p.count)),
    field("errors", "errors", p.errors, `${p.errors} (${Number(errorRate.toFixed(3))}%)`),
    field("rate", "rate", p.rate, `${p.rate} spans/s`),
    field("p50", "p50", p.p50, `${p.p50} ms`),
    field("p95", "p95", p.p95, `${p.p95} ms`),
    field("p99", "p99", p.p99, `${p.p99} ms`),
  ];
}

/** A service's three charts of one /stats/timeseries answer, and their readout. Drawn to the width of
 *  the element they are placed in once it is in the page (:func:`drawServiceCharts`), redrawn when that
 *  width changes. */
export function serviceCharts(answer, name) {
  const hint = answer.points.length
    ? "point at a chart for the numbers of a step"
    : "no spans in this window";
  const readout = h(
    "div",
    { class: "readout", "data-testid": "chart-readout", "aria-live": "polite" },
    h("span", { class: "muted" }, hint),
  );
  const hosts = Object.entries(METRICS).map(([key, metric]) => ({
    key,
    metric,
    el: h("div", { class: "chart-host", "data-testid": "chart", "data-metric": key, "data-service": name }),
  }));
  const root = h(
    "div",
    { class: "charts", "data-testid": "service-charts", "data-service": name, "data-step": answer.step },
    h(
      "div",
      { class: "chart-row" },
      hosts.map(({ metric, el }) =>
        h(
          "figure",
          { class: "chart-box" },
          h("figcaption", {}, h("b", {}, metric.title), h("span", { class: "muted" }, ` ${metric.unit}`), legend(metric)),
          el,
        ),
      ),
    ),
    readout,
  );
  let drawn = [];
  let widths = [];
  const hover = (index) => {
    for (const chart of drawn) chart.mark(index);
    root.dataset.hover = index < 0 ? "" : String(answer.points[index].t);
    if (index < 0) readout.replaceChildren(h("span", { class: "muted" }, hint));
    else readout.replaceChildren(...readoutFields(answer.points[index], answer));
  };
  const draw = () => {
    const now = hosts.map(({ el }) => Math.floor(el.clientWidth));
    if (now.every((w, i) => w === widths[i])) return;
    widths = now;
    drawn = hosts.map(({ metric, el }, i) => {
      const chart = drawChart(metric, answer, Math.max(220, now[i]), hover);
      el.replaceChildren(chart.svg);
      return chart;
    });
  };
  return { root, draw };
}

/** Draw ``charts`` (from :func:`serviceCharts`, now in the page) and redraw them when their width
 *  changes; the redraws stop once ``alive()`` is false (the page was left) or the charts left the page
 *  (a refresh replaced them). */
export function drawServiceCharts(charts, alive) {
  for (const chart of charts) chart.draw();
  if (typeof ResizeObserver === "undefined" || !charts.length) return;
  const observer = new ResizeObserver(() => {
    if (!alive() || !charts[0].root.isConnected) {
      observer.disconnect();
      return;
    }
    for (const chart of charts) chart.draw();
  });
  for (const chart of charts) observer.observe(chart.root);
}
