// Endpoint page (#/endpoint/<service>/<operation>?window=…&tail=…&baseline=…): where the endpoint's
// latency goes, from its traces' critical paths summed per calling context: a flame graph, the top
// contexts, all traces or only the tail (the slowest, at or above the endpoint's p95), and what changed
// against a baseline window just before the current one.

import { get } from "./api.js";
import { card, empty, fmtCount, fmtMs, fmtPercent, h, numCell, serviceDot, table } from "./dom.js";
import { flameGraph, contextTree } from "./flame.js";
import { barCell, endpointHash, splitLabel } from "./hot.js";
import { pickWindow, windowLabel, windowParams, windowPicker, withWindow } from "./timewindow.js";

const TAIL = "0.95";
const TOP_CONTEXTS = 20;
const BASELINES = [
  ["1h", "1 hour"],
  ["6h", "6 hours"],
  ["24h", "24 hours"],
  ["7d", "7 days"],
];
const DEFAULT_BASELINE = "24h";
const CHANGES_WINDOW_FOR_ALL = "1h";

function apiPath(service, operation, what) {
  return `/analyze/endpoints/${encodeURIComponent(service)}/${encodeURIComponent(operation)}/${what}`;
}

/** A calling context as a breadcrumb: its labels, the last (the one that owned the time) in bold. */
function pathCell(path) {
  const parts = [];
  path.forEach((label, i) => {
    if (i) parts.push(h("span", { class: "sep" }, "›"));
    const [service] = splitLabel(label);
    parts.push(
      h(
        "span",
        { class: ["crumb", i === path.length - 1 && "own"], title: label },
        label === "…" ? null : serviceDot(service),
        label,
      ),
    );
  });
  return h("td", { class: "path-cell", "data-field": "path", "data-value": JSON.stringify(path) }, parts);
}

function contextsTable(contexts) {
  const body = h("tbody", {});
  const more = h("button", { type: "button", class: "ghost small", "data-testid": "contexts-more" });
  const fill = (count) => {
    body.replaceChildren(
      ...contexts.slice(0, count).map((c) =>
        h(
          "tr",
          { "data-testid": "context-row" },
          pathCell(c.path),
          numCell("criticalMs", c.criticalMs, fmtMs(c.criticalMs)),
          numCell("meanMs", c.meanMs, fmtMs(c.meanMs)),
          barCell("share", c.share, c.share / 100, fmtPercent(c.share), true),
          numCell("traces", c.traces, fmtCount(c.traces)),
        ),
      ),
    );
    more.hidden = count >= contexts.length;
    more.textContent = `Show all ${fmtCount(contexts.length)} contexts`;
  };
  more.addEventListener("click", () => fill(contexts.length));
  fill(TOP_CONTEXTS);
  return h(
    "div",
    {},
    table(
      { "data-testid": "contexts-table" },
      [
        "Calling context (root › … › the span that owned the time)",
        ["Critical time", { class: "num" }],
        ["Mean / trace", { class: "num", title: "per trace of the endpoint (or of the tail)" }],
        ["Share", { class: "share-col" }],
        ["Traces", { class: "num", title: "traces whose critical path ran through it" }],
      ],
      body,
    ),
    h("div", { class: "table-foot" }, more),
  );
}

function signed(ms) {
  return `${ms > 0 ? "+" : ms < 0 ? "−" : "±"}${fmtMs(Math.abs(ms))}`;
}

function changesCard(changes, onBaseline, baseline, changesWindow, pageWindow) {
  const picker = h(
    "select",
    { "data-testid": "baseline-picker", "aria-label": "baseline window" },
    BASELINES.map(([value, label]) => h("option", { value, selected: value === baseline }, `vs the ${label} before`)),
  );
  picker.addEventListener("change", () => onBaseline(picker.value));
  const note =
    pageWindow === "all"
      ? `Last ${changesWindow} (the page shows all time) against the window just before it`
      : `The ${windowLabel(changesWindow)} against the window just before it`;
  const rows = changes.changes.length
    ? table(
        { "data-testid": "changes-table" },
        [
          "Calling context",
          ["Now, mean", { class: "num" }],
          ["Baseline, mean", { class: "num" }],
          ["Change", { class: "num" }],
          ["Share now", { class: "num" }],
          ["Share before", { class: "num" }],
        ],
        changes.changes.map((c) =>
          h(
            "tr",
            { "data-testid": "change-row" },
            pathCell(c.path),
            numCell("currentMeanMs", c.currentMeanMs, fmtMs(c.currentMeanMs)),
            numCell("baselineMeanMs", c.baselineMeanMs, fmtMs(c.baselineMeanMs)),
            numCell("deltaMs", c.deltaMs, signed(c.deltaMs), c.deltaMs > 0 ? "worse" : c.deltaMs < 0 ? "better" : null),
            numCell("currentShare", c.currentShare, fmtPercent(c.currentShare)),
            numCell("baselineShare", c.baselineShare, fmtPercent(c.baselineShare)),
          ),
        ),
      )
    : empty("No critical paths in either window.");
  return card(
    "Changes against a baseline",
    { "data-testid": "changes", "data-window": changesWindow, "data-baseline": baseline },
    h(
      "div",
      { class: "toolbar" },
      h("span", { class: "muted" }, note),
      picker,
      h(
        "span",
        { class: "muted", "data-testid": "changes-traces" },
        `${fmtCount(changes.currentTraces)} traces now, ${fmtCount(changes.baselineTraces)} before`,
      ),
    ),
    h("p", { class: "muted" }, "Mean critical time per trace of each context, largest growth first"),
    rows,
  );
}

function metric(label, value, key, raw) {
  return h(
    "div",
    { class: "metric", "data-field": key, "data-value": raw },
    h("span", { class: "metric-label" }, label),
    h("span", { class: "metric-value" }, value),
  );
}

export async function renderEndpoint(ctx) {
  const [service, ...rest] = ctx.segments;
  const operation = rest.join("/");
  if (!service || !operation) {
    ctx.navigate("#/endpoints");
    return;
  }
  const win = pickWindow(ctx.params);
  const tail = ctx.params.get("tail");
  const baseline = BASELINES.some(([v]) => v === ctx.params.get("baseline")) ? ctx.params.get("baseline") : DEFAULT_BASELINE;
  const changesWindow = win === "all" ? CHANGES_WINDOW_FOR_ALL : win;
  const here = (changes) => {
    const params = new URLSearchParams(ctx.params);
    for (const [k, v] of Object.entries(changes)) {
      if (v === null) params.delete(k);
      else params.set(k, v);
    }
    const text = params.toString();
    return `${endpointHash(service, operation)}${text ? `?${text}` : ""}`;
  };

  const toggle = h(
    "div",
    { class: "segmented", role: "group", "aria-label": "which traces", "data-testid": "tail-toggle" },
    [
      [null, "All traces", "every trace of the endpoint in the window (from the rollups)"],
      [tail && tail !== TAIL ? tail : TAIL, `Tail ≥ p${Math.round(Number(tail || TAIL) * 100)}`, "only its slowest traces"],
    ].map(([value, label, title]) =>
      h(
        "button",
        {
          type: "button",
          class: (value === null) === !tail && "on",
          "aria-pressed": (value === null) === !tail ? "true" : "false",
          "data-tail": value ?? "all",
          title,
          onclick: () => ctx.navigate(here({ tail: value })),
        },
        label,
      ),
    ),
  );
  const head = h(
    "section",
    { class: "card endpoint-head", "data-testid": "endpoint-head" },
    h(
      "div",
      { class: "toolbar" },
      h(
        "h1",
        { class: "trace-title", "data-testid": "endpoint-title" },
        serviceDot(service),
        h("span", {}, service),
        h("span", { class: "op" }, operation),
      ),
      h("span", { class: "spacer" }),
      h(
        "a",
        {
          href: withWindow(`#/search?${new URLSearchParams({ serviceName: service, operationName: operation })}`, win),
          "data-testid": "endpoint-search",
        },
        "its traces →",
      ),
      h("a", { href: withWindow("#/hot", win) }, "hot operations →"),
    ),
    h(
      "div",
      { class: "toolbar" },
      windowPicker(win, (value) => ctx.navigate(here({ window: value }))),
      toggle,
    ),
    h("div", { class: "metrics", "data-testid": "endpoint-metrics" }, h("span", { class: "muted" }, "Loading…")),
  );
  const body = h("div", { class: "endpoint-body" }, h("p", { class: "loading" }, "Loading…"));
  ctx.main.replaceChildren(h("div", { class: "endpoint-page" }, head, body));

  const params = windowParams(win);
  if (tail) params.set("tail", tail);
  const [view, changes, endpoints] = await Promise.all([
    get(apiPath(service, operation, "critical-path"), params),
    get(apiPath(service, operation, "changes"), new URLSearchParams({ window: changesWindow, baseline })),
    get("/analyze/endpoints", windowParams(win)),
  ]);
  if (!ctx.isCurrent()) return;
  const endpoint = endpoints.find((e) => e.service === service && e.operation === operation);
  const metrics = head.querySelector("[data-testid=endpoint-metrics]");
  metrics.replaceChildren(
    metric(view.selection ? "Traces (tail)" : "Traces", fmtCount(view.traces), "traces", view.traces),
    metric("Critical path, total", fmtMs(view.criticalPathMs), "criticalPathMs", view.criticalPathMs),
    metric("Per trace", fmtMs(view.traces ? view.criticalPathMs / view.traces : 0), "meanCritical", view.traces ? view.criticalPathMs / view.traces : 0),
    endpoint ? metric("p50", fmtMs(endpoint.p50), "p50", endpoint.p50) : null,
    endpoint ? metric("p95", fmtMs(endpoint.p95), "p95", endpoint.p95) : null,
    endpoint ? metric("p99", fmtMs(endpoint.p99), "p99", endpoint.p99) : null,
    metric("Window", windowLabel(win), "window", win),
  );
  const notes = [];
  if (view.selection) {
    const sel = view.selection;
    notes.push(
      h(
        "p",
        { class: "muted", "data-testid": "selection" },
        `The slowest ${fmtCount(sel.selected)} of ${fmtCount(endpoint ? endpoint.traces : sel.selected)} traces: ` +
          `those that lasted at least ${fmtMs(sel.minDurationMs)}` +
          (sel.truncated ? ` (more matched; the ${fmtCount(sel.limit)} slowest were kept)` : ""),
      ),
    );
  }
  if (view.elidedContexts) {
    notes.push(
      h(
        "p",
        { class: "muted", "data-testid": "elided" },
        `${fmtCount(view.elidedContexts)} contexts are deeper than ${view.maxDepth} calls: "…" stands for the calls left out`,
      ),
    );
  }
  if (!view.contexts.length) {
    body.replaceChildren(
      card(
        "Critical path by calling context",
        { "data-testid": "flame-card" },
        ...notes,
        empty(view.traces ? "These traces have no critical path." : "No traces of this endpoint in this window."),
      ),
      changesCard(changes, (value) => ctx.navigate(here({ baseline: value })), baseline, changesWindow, win),
    );
    return;
  }
  const flame = flameGraph(contextTree(view.contexts), { endpointTotal: view.criticalPathMs });
  body.replaceChildren(
    card(
      "Critical path by calling context",
      { "data-testid": "flame-card", "data-total": view.criticalPathMs },
      h(
        "p",
        { class: "muted" },
        "Each box: a calling context, as wide as the critical-path time of it and its callees over the selected traces",
      ),
      ...notes,
      flame.root,
    ),
    card(
      "Top calling contexts",
      { "data-testid": "contexts" },
      h("p", { class: "muted" }, "Critical-path time owned by each context's own work, largest first"),
      contextsTable(view.contexts),
    ),
    changesCard(changes, (value) => ctx.navigate(here({ baseline: value })), baseline, changesWindow, win),
  );
  flame.draw();
  if (typeof ResizeObserver !== "undefined") {
    const observer = new ResizeObserver(() => {
      if (ctx.isCurrent() && flame.root.isConnected) flame.draw();
      else observer.disconnect();
    });
    observer.observe(flame.root);
  }
}
