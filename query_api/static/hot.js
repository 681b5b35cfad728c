// Critical paths across traces, bottom-up and by endpoint: the endpoints list (#/endpoints, from
// /analyze/endpoints) linking to each endpoint's page, and the hot operations (#/hot, from
// /analyze/operations): operations ranked by the critical-path time they own over every endpoint.

import { get } from "./api.js";
import { card, empty, fmtCount, fmtMs, fmtPercent, h, numCell, serviceDot, table } from "./dom.js";
import { pickWindow, windowLabel, windowParams, windowPicker, withWindow } from "./timewindow.js";

/** The hash of an endpoint's page (the operation may hold "/": every part is encoded). */
export function endpointHash(service, operation, win, extra) {
  const query = new URLSearchParams(extra || {});
  if (win) query.set("window", win);
  const text = query.toString();
  return `#/endpoint/${encodeURIComponent(service)}/${encodeURIComponent(operation)}${text ? `?${text}` : ""}`;
}

/** "svc:op" split at its first colon (service names hold none; operations may). */
export function splitLabel(label) {
  const cut = label.indexOf(":");
  return cut < 0 ? [label, ""] : [label.slice(0, cut), label.slice(cut + 1)];
}

/** A service and operation as a link (a dot in the service's colour, the service in bold). */
export function labelLink(href, service, operation, attrs) {
  return h(
    "a",
    { class: "label-link", href, ...attrs },
    serviceDot(service),
    h("span", { class: "svc" }, service),
    h("span", { class: "op" }, operation),
  );
}

/** A cell with a bar ``fraction`` (0..1) of its width long and ``text``; carries its raw value. */
export function barCell(key, raw, fraction, text, hot) {
  return h(
    "td",
    { class: "share-col", "data-field": key, "data-value": raw },
    h(
      "div",
      { class: "share" },
      h("div", { class: ["share-bar", hot && "hot"], style: { width: `${Math.max(0, Math.min(1, fraction)) * 100}%` } }),
      h("span", {}, text),
    ),
  );
}

/** The endpoints table (largest critical-path total first, as the API ranks them); ``limit`` rows at most. */
export function endpointTable(endpoints, win, limit = Infinity) {
  const rows = endpoints.slice(0, limit);
  const top = Math.max(0, ...rows.map((e) => e.criticalPathMs));
  return table(
    { "data-testid": "endpoint-table" },
    [
      "Endpoint",
      ["Traces", { class: "num" }],
      ["p50", { class: "num" }],
      ["p95", { class: "num" }],
      ["p99", { class: "num" }],
      ["Mean critical", { class: "num", title: "critical-path time per trace" }],
      ["Critical path, total", { class: "share-col" }],
    ],
    rows.map((e) => {
      const mean = e.traces ? e.criticalPathMs / e.traces : 0;
      return h(
        "tr",
        { "data-testid": "endpoint-row", "data-service": e.service, "data-operation": e.operation },
        h(
          "td",
          {},
          labelLink(endpointHash(e.service, e.operation, win), e.service, e.operation, { "data-testid": "endpoint-link" }),
        ),
        numCell("traces", e.traces, fmtCount(e.traces)),
        numCell("p50", e.p50, fmtMs(e.p50)),
        numCell("p95", e.p95, fmtMs(e.p95)),
        numCell("p99", e.p99, fmtMs(e.p99)),
        numCell("meanCritical", mean, fmtMs(mean)),
        barCell("criticalPathMs", e.criticalPathMs, top ? e.criticalPathMs / top : 0, fmtMs(e.criticalPathMs)),
      );
    }),
  );
}

function pageHead(title, win, ctx, route, note) {
  return h(
    "div",
    { class: "toolbar page-toolbar" },
    h("h1", { class: "page-title" }, title),
    windowPicker(win, (value) => ctx.navigate(withWindow(route, value))),
    h("span", { class: "muted", "data-testid": "page-window" }, note || windowLabel(win)),
  );
}

export async function renderEndpoints(ctx) {
  const win = pickWindow(ctx.params);
  const body = h("div", {}, h("p", { class: "loading" }, "Loading…"));
  ctx.main.replaceChildren(pageHead("Endpoints", win, ctx, "#/endpoints"), body);
  const endpoints = await get("/analyze/endpoints", windowParams(win));
  if (!ctx.isCurrent()) return;
  body.replaceChildren(
    card(
      `Endpoints · ${fmtCount(endpoints.length)}`,
      { "data-testid": "endpoints" },
      h(
        "p",
        { class: "muted" },
        "Root service and operation of traces, ranked by the critical-path time of their traces; open one for where it goes",
      ),
      endpoints.length ? endpointTable(endpoints, win) : empty("No finished traces in this window."),
    ),
  );
}

function hotTable(ranking, win) {
  const top = Math.max(0, ...ranking.map((r) => r.criticalMs));
  return table(
    { "data-testid": "hot-table" },
    [
      "#",
      "Operation",
      ["Critical time", { class: "num" }],
      ["Endpoints", { class: "num", title: "endpoints on whose critical path it is" }],
      ["Share of all critical time", { class: "share-col" }],
    ],
    ranking.map((r, i) => {
      const [service, operation] = splitLabel(r.operation);
      const search = withWindow(`#/search?${new URLSearchParams({ serviceName: service, operationName: operation })}`, win);
      return h(
        "tr",
        { "data-testid": "hot-row", "data-operation": r.operation },
        h("td", { class: "muted" }, String(i + 1)),
        h("td", {}, labelLink(search, service, operation, { title: "traces with this operation", "data-testid": "hot-search" })),
        numCell("criticalMs", r.criticalMs, fmtMs(r.criticalMs)),
        numCell("endpoints", r.endpoints, fmtCount(r.endpoints)),
        barCell("share", r.share, top ? r.criticalMs / top : 0, fmtPercent(r.share), true),
      );
    }),
  );
}

export async function renderHot(ctx) {
  const win = pickWindow(ctx.params);
  const body = h("div", { class: "hot-grid" }, h("p", { class: "loading" }, "Loading…"));
  ctx.main.replaceChildren(pageHead("Hot operations", win, ctx, "#/hot"), body);
  const [ranking, endpoints] = await Promise.all([
    get("/analyze/operations", windowParams(win)),
    get("/analyze/endpoints", windowParams(win)),
  ]);
  if (!ctx.isCurrent()) return;
  body.replaceChildren(
    card(
      "Operations by critical-path time",
      { "data-testid": "hot-operations" },
      h(
        "p",
        { class: "muted" },
        "Time each operation's own work held up its traces' critical paths, summed over every endpoint",
      ),
      ranking.length ? hotTable(ranking, win) : empty("No critical paths in this window."),
    ),
    card(
      "Endpoints",
      { "data-testid": "hot-endpoints" },
      h("p", { class: "muted" }, h("a", { href: withWindow("#/endpoints", win) }, "all endpoints →")),
      endpoints.length ? endpointTable(endpoints, win, 10) : empty("No finished traces in this window."),
    ),
  );
}
