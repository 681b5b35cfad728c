// Stats page (#/stats?window=…): over the chosen window (15m … 7d, or all time), the trace totals, the
// slowest traces, per-service latency (SLA view), the endpoints with their critical-path totals, and per
// service its charts over time (rate, error rate, p50/p95/p99) and its operations; plus the ingest
// pipeline's health. Every windowed read counts the window the /stats answer names, so all the numbers
// on the page are over the same minutes.

import { get, mapLimited } from "./api.js";
import { drawServiceCharts, serviceCharts } from "./charts.js";
import { card, empty, fmtAgo, fmtCount, fmtMs, fmtPercent, fmtTime, h, numCell, serviceDot, table, traceLink } from "./dom.js";
import { endpointTable } from "./hot.js";
import { chartStep, pickWindow, windowLabel, windowPicker, withWindow } from "./timewindow.js";

const ESTIMATE_TITLE = "estimated traffic: each trace counts 1 / the probability its producer sampled it with";

const AUTO_REFRESH_MS = 5000;
const SERVICE_CONCURRENCY = 4;
const TOP_ENDPOINTS = 10;
const HOUR_MS = 3600e3;
const WEEK_MS = 7 * 24 * HOUR_MS;
let autoRefresh = false;

function tile(label, value, key, raw, extra, tone) {
  return h(
    "div",
    { class: ["tile", tone && `tone-${tone}`], "data-stat": key, "data-value": raw },
    h("span", { class: "tile-label" }, label),
    h("span", { class: "tile-value", "data-testid": "stat-value" }, value),
    extra ? h("span", { class: "tile-extra" }, extra) : null,
  );
}

function totals(stats) {
  const finalized = stats.completedTraces + stats.failedTraces;
  const failRate = finalized ? (stats.failedTraces / finalized) * 100 : 0;
  return h(
    "div",
    { class: "tiles", "data-testid": "stats-totals" },
    tile("Total traces", fmtCount(stats.totalTraces), "totalTraces", stats.totalTraces),
    tile("Active", fmtCount(stats.activeTraces), "activeTraces", stats.activeTraces, "in progress"),
    tile("Completed", fmtCount(stats.completedTraces), "completedTraces", stats.completedTraces, null, "ok"),
    tile(
      "Failed",
      fmtCount(stats.failedTraces),
      "failedTraces",
      stats.failedTraces,
      `${fmtPercent(failRate)} of finished`,
      stats.failedTraces ? "bad" : null,
    ),
    tile("Avg duration", fmtMs(stats.avgDuration), "avgDuration", stats.avgDuration, "finished traces"),
  );
}

function slowest(stats) {
  const max = Math.max(0, ...stats.slowestTraces.map((t) => t.duration));
  return card(
    "Slowest traces",
    { "data-testid": "slowest-traces" },
    stats.slowestTraces.length
      ? h(
          "table",
          { class: "table" },
          h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Trace"), h("th", { class: "share-col" }, "Duration"))),
          h(
            "tbody",
            {},
            stats.slowestTraces.map((t, i) =>
              h(
                "tr",
                { "data-testid": "slow-trace", "data-trace-id": t.traceId, "data-value": t.duration },
                h("td", { class: "muted" }, String(i + 1)),
                h("td", {}, traceLink(t.traceId)),
                h(
                  "td",
                  { class: "share-col" },
                  h(
                    "div",
                    { class: "share" },
                    h("div", { class: "share-bar hot", style: { width: `${max ? (t.duration / max) * 100 : 0}%` } }),
                    h("span", {}, fmtMs(t.duration)),
                  ),
                ),
              ),
            ),
          ),
        )
      : empty("No finished traces yet."),
  );
}

function pipeline(stats) {
  const p = stats.pipeline;
  const now = Date.now();
  const item = (label, value, key, raw, warn) =>
    h(
      "div",
      { class: ["kv", warn && "warn"], "data-stat": `pipeline.${key}`, "data-value": raw },
      h("dt", {}, label),
      h("dd", {}, value),
    );
  return card(
    "Pipeline health",
    { "data-testid": "pipeline" },
    h(
      "dl",
      { class: "kvs kvs-wide" },
      item("Workers", fmtCount(p.workers.length), "workers", p.workers.length, p.workers.length === 0),
      item("Consumer lag", `${fmtCount(p.totalLag)} msgs`, "totalLag", p.totalLag, p.totalLag > 10000),
      item("Throughput", `${fmtCount(Math.round(p.spansPerSecond * 10) / 10)} spans/s`, "spansPerSecond", p.spansPerSecond),
      item("Dead-lettered", fmtCount(p.deadLettered), "deadLettered", p.deadLettered, p.deadLettered > 0),
      item("Late spans", fmtCount(p.lateSpans), "lateSpans", p.lateSpans),
    ),
    p.workers.length
      ? table(
          { class: "table compact" },
          [
            "Worker",
            "Partitions",
            ["Lag", { class: "num" }],
            ["Spans/s", { class: "num" }],
            ["Spans", { class: "num" }],
            ["Finalized", { class: "num" }],
            "Seen",
          ],
          p.workers.map((w) => {
            const lag = Object.values(w.lag).reduce((a, b) => a + b, 0);
            return h(
              "tr",
              { "data-testid": "worker-row", "data-worker": w.workerId },
              h("td", { class: "mono" }, w.workerId),
              h("td", { class: "muted", title: w.partitions.join(", ") }, `${w.partitions.length}`),
              h("td", { class: "num", "data-field": "lag", "data-value": lag }, fmtCount(lag)),
              h("td", { class: "num", "data-field": "spansPerSecond", "data-value": w.spansPerSecond }, fmtCount(w.spansPerSecond)),
              h("td", { class: "num" }, fmtCount(w.spansTotal)),
              h("td", { class: "num" }, fmtCount(w.tracesFinalized)),
              h("td", { class: "muted" }, fmtAgo(w.updatedAt, now)),
            );
          }),
        )
      : empty("No worker sent a heartbeat in the last 30 seconds."),
  );
}

function services(stats, win, jump) {
  const entries = Object.entries(stats.serviceStats).sort((a, b) => a[0].localeCompare(b[0]));
  const maxP99 = Math.max(0, ...entries.map(([, v]) => v.p99));
  return card(
    "Services",
    { "data-testid": "service-stats" },
    h("p", { class: "muted" }, "Spans of finished traces; latency percentiles within 1% of exact; click a service for its charts"),
    entries.length
      ? table(
          {},
          [
            "Service",
            ["Spans", { class: "num" }],
            ["Avg", { class: "num" }],
            ["Errors", { class: "num" }],
            ["Est. spans", { class: "num", title: ESTIMATE_TITLE }],
            ["Est. errors", { class: "num", title: ESTIMATE_TITLE }],
            ["p50", { class: "num" }],
            ["p95", { class: "num" }],
            ["p99", { class: "num" }],
            ["Latency p50 → p99 (| p95)", { class: "lat-col", title: "bar from p50 to p99, tick at p95" }],
          ],
          entries.map(([name, v]) => {
            const errRate = v.count ? (v.errorCount / v.count) * 100 : 0;
            return h(
              "tr",
              { "data-testid": "service-row", "data-service": name },
              h(
                "td",
                { class: "service-cell" },
                h(
                  "button",
                  { type: "button", class: "link", title: "its charts and operations below", onclick: () => jump(name) },
                  serviceDot(name),
                  name,
                ),
                h(
                  "a",
                  {
                    class: "row-link",
                    href: withWindow(`#/search?${new URLSearchParams({ serviceName: name })}`, win),
                    "data-testid": "service-search",
                  },
                  "traces",
                ),
              ),
              numCell("count", v.count, fmtCount(v.count)),
              numCell("avgDuration", v.avgDuration, fmtMs(v.avgDuration)),
              numCell(
                "errorCount",
                v.errorCount,
                v.errorCount ? `${fmtCount(v.errorCount)} (${fmtPercent(errRate)})` : "0",
                v.errorCount && "err",
              ),
              numCell("estimatedCount", v.estimatedCount, fmtCount(v.estimatedCount)),
              numCell("estimatedErrorCount", v.estimatedErrorCount, fmtCount(v.estimatedErrorCount), v.estimatedErrorCount && "err"),
              numCell("p50", v.p50, fmtMs(v.p50)),
              numCell("p95", v.p95, fmtMs(v.p95)),
              numCell("p99", v.p99, fmtMs(v.p99)),
              h(
                "td",
                { class: "lat-col" },
                h(
                  "div",
                  { class: "lat" },
                  h("div", {
                    class: "lat-range",
                    style: {
                      left: `${maxP99 ? (v.p50 / maxP99) * 100 : 0}%`,
                      width: `${maxP99 ? (Math.max(0, v.p99 - v.p50) / maxP99) * 100 : 0}%`,
                    },
                  }),
                  h("div", { class: "lat-tick", style: { left: `${maxP99 ? (v.p95 / maxP99) * 100 : 0}%` } }),
                ),
              ),
            );
          }),
        )
      : empty("No finished traces yet."),
  );
}

function operationTable(answer) {
  if (!answer.operations.length) return empty("No spans of this service in this window.");
  return table(
    { class: "table compact", "data-testid": "op-table" },
    ["Operation", "Kinds", ...["Spans", "Errors", "Avg", "p50", "p95", "p99"].map((label) => [label, { class: "num" }])],
    answer.operations.map((op) =>
      h(
        "tr",
        { "data-testid": "op-row", "data-operation": op.operation },
        h("td", { class: "op-name" }, op.operation),
        h(
          "td",
          { class: "muted", "data-field": "spanKinds", "data-value": JSON.stringify(op.spanKinds) },
          op.spanKinds.map((kind) => kind || "—").join(", "),
        ),
        numCell("count", op.count, fmtCount(op.count)),
        numCell(
          "errorCount",
          op.errorCount,
          op.errorCount ? `${fmtCount(op.errorCount)} (${fmtPercent((op.errorCount / op.count) * 100)})` : "0",
          op.errorCount && "err",
        ),
        numCell("avgDuration", op.avgDuration, fmtMs(op.avgDuration)),
        numCell("p50", op.p50, fmtMs(op.p50)),
        numCell("p95", op.p95, fmtMs(op.p95)),
        numCell("p99", op.p99, fmtMs(op.p99)),
      ),
    ),
  );
}

function serviceCard(name, series, operations, win) {
  const charts = serviceCharts(series, name);
  const search = withWindow(`#/search?${new URLSearchParams({ serviceName: name })}`, win);
  const section = h(
    "section",
    { class: "card service-card", "data-testid": "service-card", "data-service": name },
    h(
      "div",
      { class: "service-card-head" },
      h("h2", { class: "card-title" }, serviceDot(name), name),
      h(
        "span",
        { class: "muted" },
        win === "all" ? "charts: last 7 days" : `charts: ${windowLabel(win)}`,
        `, one point per ${stepText(series.step)}`,
      ),
      h("span", { class: "spacer" }),
      h("a", { href: search, "data-testid": "service-card-search" }, "traces →"),
      h("a", { href: withWindow("#/dependencies", win), "data-testid": "service-card-deps" }, "dependencies →"),
    ),
    charts.root,
    h("h3", {}, "Operations"),
    operationTable(operations),
  );
  return { section, charts };
}

function stepText(ms) {
  if (ms % 3600e3 === 0) return `${ms / 3600e3} h`;
  if (ms % 60e3 === 0) return `${ms / 60e3} min`;
  return fmtMs(ms);
}

function endpointsCard(endpoints, win) {
  return card(
    "Endpoints",
    { "data-testid": "stats-endpoints" },
    h(
      "p",
      { class: "muted" },
      "Root service and operation of the traces; open one for where its latency goes · ",
      h("a", { href: withWindow("#/endpoints", win) }, "all endpoints"),
      " · ",
      h("a", { href: withWindow("#/hot", win) }, "hot operations"),
    ),
    endpoints.length ? endpointTable(endpoints, win, TOP_ENDPOINTS) : empty("No finished traces in this window."),
  );
}

/** The parameters of the reads that go with a /stats answer: its own window (start, end), or none for
 *  all time; the charts' window for "all" is the last 7 days. */
function sameWindow(stats) {
  const params = new URLSearchParams();
  if (stats.window) {
    params.set("start", String(stats.window.start));
    params.set("end", String(stats.window.end));
  }
  return params;
}

export async function renderStats(ctx) {
  const win = pickWindow(ctx.params, "all");
  let timer = null;
  const schedule = () => {
    clearTimeout(timer);
    if (autoRefresh) timer = setTimeout(refresh, AUTO_REFRESH_MS);
  };
  const auto = h("input", { type: "checkbox", checked: autoRefresh, "data-testid": "auto-refresh" });
  auto.addEventListener("change", () => {
    autoRefresh = auto.checked;
    schedule();
  });
  const stamp = h("span", { class: "muted", "data-testid": "stats-updated" });
  const counted = h("span", { class: "muted", "data-testid": "stats-window" });
  const toolbar = h(
    "div",
    { class: "toolbar page-toolbar" },
    h("h1", { class: "page-title" }, "Statistics"),
    windowPicker(win, (value) => ctx.navigate(withWindow("#/stats", value))),
    counted,
    h("span", { class: "spacer" }),
    stamp,
    h("label", { class: "check" }, auto, `auto-refresh (${AUTO_REFRESH_MS / 1000} s)`),
    h("button", { type: "button", class: "ghost", "data-testid": "stats-refresh", onclick: () => refresh() }, "Refresh"),
  );
  const body = h("div", { class: "stats-page", "data-testid": "stats" }, h("p", { class: "loading" }, "Loading…"));
  ctx.main.replaceChildren(toolbar, body);

  const load = async () => {
    const stats = await get("/stats", win === "all" ? undefined : new URLSearchParams({ window: win }));
    if (!ctx.isCurrent()) return;
    const same = sameWindow(stats);
    const names = Object.keys(stats.serviceStats).sort((a, b) => a.localeCompare(b));
    const step = chartStep(win);
    const chartParams = (name) => {
      const params = new URLSearchParams({ serviceName: name, step: String(step) });
      // The window of /stats (all time: the last 7 days, up to the server's now). Steps of whole hours
      // start at a whole hour, so the store reads its hour rows (60 times fewer than minute rows): the
      // first step may begin up to 59 minutes before the window.
      let start = stats.window ? stats.window.start : Date.now() - WEEK_MS;
      if (step % HOUR_MS === 0) start -= start % HOUR_MS;
      params.set("start", String(start));
      if (stats.window) params.set("end", String(stats.window.end));
      return params;
    };
    const [endpoints, perService] = await Promise.all([
      get("/analyze/endpoints", same),
      mapLimited(names, SERVICE_CONCURRENCY, (name) =>
        Promise.all([
          get("/stats/timeseries", chartParams(name)),
          get("/stats/operations", new URLSearchParams([["serviceName", name], ...same])),
        ]),
      ),
    ]);
    if (!ctx.isCurrent()) return;
    stamp.textContent = `updated ${new Date().toLocaleTimeString()}`;
    if (stats.window) {
      counted.textContent = `traces that started ${fmtTime(stats.window.start).slice(0, 16)} – ${fmtTime(stats.window.end).slice(11, 16)}`;
      counted.dataset.start = stats.window.start;
      counted.dataset.end = stats.window.end;
    } else {
      counted.textContent = "all stored traces";
      delete counted.dataset.start;
      delete counted.dataset.end;
    }
    const cards = names.map((name, i) => serviceCard(name, perService[i][0], perService[i][1], win));
    const byName = new Map(names.map((name, i) => [name, cards[i].section]));
    const jump = (name) => byName.get(name)?.scrollIntoView({ behavior: "smooth", block: "start" });
    body.replaceChildren(
      totals(stats),
      h("div", { class: "stats-grid" }, slowest(stats), pipeline(stats)),
      services(stats, win, jump),
      endpointsCard(endpoints, win),
      h("h2", { class: "section-title" }, "Services over time"),
      ...(cards.length ? cards.map((c) => c.section) : [empty("No spans in this window.")]),
    );
    drawServiceCharts(
      cards.map((c) => c.charts),
      ctx.isCurrent,
    );
  };
  // In place (no "Loading…" flash); a failure shows in the banner and the last numbers stay.
  async function refresh() {
    if (!ctx.isCurrent()) return;
    try {
      await load();
      ctx.clearError();
    } catch (err) {
      ctx.showError(err);
    }
    if (ctx.isCurrent()) schedule();
  }
  try {
    await load();
  } catch (err) {
    body.replaceChildren(empty("The statistics could not be loaded: see the message above."));
    throw err;
  }
  schedule();
}
