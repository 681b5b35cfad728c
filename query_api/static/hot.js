// Critical paths across traces, bottom-up and by endpoint: the endpoints list (#/endpoints, from
// /analyze/endpoints) linking to each endpoint's page, and the hot operations (#/hot, from
// /analyze/operations): operations ranked by the critical-path time they own over every endpoint.

import { get } from "./api.js";
import { card, empty, fmtCount, fmtMs, fmtPercent, h, serviceDot } from "./dom.js";
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

const num = (key, raw, text, cls) => h("td", { class: ["num", cls], "data-field": key, "data-value": raw }, text);

/** The endpoints table (largest critical-path total first, as the API ranks them); ``limit`` rows at most. */
export function endpointTable(endpoints, win, limit = Infinity) {
  const rows = endpoints.slice(0, limit);
  const top = Math.max(0, ...rows.map((e) => e.criticalPathMs));
  return h(
    "table",
    { class: "table", "data-testid": "endpoint-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Endpoint"),
        h("th", { class: "num" }, "Traces"),
        h("th", { class: "num" }, "p50"),
        h("th", { class: "num" }, "p95"),
        h("th", { class: "num" }, "p99"),
        h("th", { class: "num", title: "critical-path time per trace" }, "Mean critical"),
        h("th", { class: "share-col" }, "Critical path, total"),
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((e) =>
        h(
          "tr",
          { "data-testid": "endpoint-row", "data-service": e.service, "data-operation": e.operation },
          h(
            "td",
            { class: "endpoint-cell" },
            h(
              "a",
              { href: endpointHash(e.service, e.operation, win), "data-testid": "endpoint-link" },
              serviceDot(e.service),
              h("span", { class: "svc" }, e.service),
              " ",
              h("span", { class: "op" }, e.operation),
            ),
          ),
          num("traces", e.traces, fmtCount(e.traces)),
          num("p50", e.p50, fmtMs(e.p50)),
          num("p95", e.p95, fmtMs(e.p95)),
          num("p99", e.p99, fmtMs(e.p99)),
          num("meanCritical", e.traces ? e.criticalPathMs / e.traces : 0, fmtMs(e.traces ? e.criticalPathMs / e.traces : 0)),
          h(
            "td",
            { class: "share-col", "data-field": "criticalPathMs", "data-value": e.criticalPathMs },
            h(
              "div",
              { class: "share" },
              h("div", { class: "share-bar", style: { width: `${top ? (e.criticalPathMs / top) * 100 : 0}%` } }),
              h("span", {}, fmtMs(e.criticalPathMs)),
            ),
          ),
        ),
      ),
    ),
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
  return h(
    "table",
    { class: "table hot-table", "data-testid": "hot-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "#"),
        h("th", {}, "Operation"),
        h("th", { class: "num" }, "Critical time"),
        h("th", { class: "num", title: "endpoints on whose critical path it is" }, "Endpoints"),
        h("th", { class: "share-col" }, "Share of all critical time"),
      ),
    ),
    h(
      "tbody",
      {},
      ranking.map((r, i) => {
        const [service, operation] = splitLabel(r.operation);
        const search = withWindow(
          `#/search?${new URLSearchParams({ serviceName: service, operationName: operation })}`,
          win,
        );
        return h(
          "tr",
          { "data-testid": "hot-row", "data-operation": r.operation },
          h("td", { class: "muted" }, String(i + 1)),
          h(
            "td",
            {},
            h(
              "a",
              { href: search, title: "traces with this operation", "data-testid": "hot-search" },
              serviceDot(service),
              h("span", { class: "svc" }, service),
              " ",
              h("span", { class: "op" }, operation),
            ),
          ),
          num("criticalMs", r.criticalMs, fmtMs(r.criticalMs)),
          num("endpoints", r.endpoints, fmtCount(r.endpoints)),
          h(
            "td",
            { class: "share-col", "data-field": "share", "data-value": r.share },
            h(
              "div",
              { class: "share" },
              h("div", { class: "share-bar hot", style: { width: `${top ? (r.criticalMs / top) * 100 : 0}%` } }),
              h("span", {}, fmtPercent(r.share)),
            ),
          ),
        );
      }),
    ),
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
