// Trace page: summary, completeness, the waterfall (one row per span in tree order, bars to scale, the
// critical path drawn on the bars) with a detail panel per span, and the performance analysis.

import { get } from "./api.js";
import { endpointHash } from "./hot.js";
import {
  card,
  empty,
  fmtCount,
  fmtMs,
  fmtPercent,
  fmtTime,
  fmtValue,
  h,
  serviceColor,
  serviceDot,
  statusBadge,
  table,
} from "./dom.js";

const INDENT_PX = 14;

/** The rows of the waterfall: every node of the main tree, then of each orphan tree, depth first. */
function flatten(vis) {
  const rows = [];
  const roots = [];
  if (vis.tree) roots.push({ node: vis.tree, orphan: false });
  for (const node of vis.orphans) roots.push({ node, orphan: true });
  for (const { node: top, orphan } of roots) {
    const stack = [{ node: top, depth: 0, parent: -1 }];
    while (stack.length) {
      const { node, depth, parent } = stack.pop();
      const index = rows.length;
      rows.push({ node, depth, parent, orphanRoot: orphan && depth === 0, hasChildren: node.children.length > 0 });
      for (let i = node.children.length - 1; i >= 0; i--) {
        stack.push({ node: node.children[i], depth: depth + 1, parent: index });
      }
    }
  }
  return rows;
}

function pct(value, total) {
  return `${(value / total) * 100}%`;
}

function summary(trace, analysis, rows) {
  const root = trace.rootSpan;
  const services = new Set(rows.map((row) => row.node.serviceName));
  const errors = rows.filter((row) => row.node.status === "error").length;
  const depth = rows.reduce((max, row) => Math.max(max, row.depth + 1), 0);
  const title = root
    ? [serviceDot(root.serviceName), h("span", {}, root.serviceName), h("span", { class: "op" }, root.operationName)]
    : h("span", {}, "Trace without a root span");
  const metric = (label, value, key, raw) =>
    h(
      "div",
      { class: "metric", "data-field": key, "data-value": raw },
      h("span", { class: "metric-label" }, label),
      h("span", { class: "metric-value" }, value),
    );
  return h(
    "section",
    { class: "card trace-head", "data-testid": "trace-summary" },
    h("h1", { class: "trace-title" }, title),
    h(
      "div",
      { class: "trace-ids" },
      statusBadge(trace.status),
      h("span", { class: "mono", "data-testid": "trace-id" }, trace.traceId),
      root
        ? h(
            "a",
            {
              class: "endpoint-link",
              href: endpointHash(root.serviceName, root.operationName),
              "data-testid": "trace-endpoint-link",
              title: "the critical paths of all traces of this endpoint, aggregated",
            },
            "where this endpoint's latency goes →",
          )
        : null,
    ),
    h(
      "div",
      { class: "metrics" },
      metric("Duration", fmtMs(trace.duration), "duration", trace.duration),
      metric("Spans", fmtCount(trace.serviceCalls), "serviceCalls", trace.serviceCalls),
      metric("Services", fmtCount(services.size), "services", services.size),
      metric("Depth", fmtCount(depth), "depth", depth),
      metric("Error spans", fmtCount(errors), "errors", errors),
      metric("Critical path", fmtMs(analysis.criticalPathDuration), "criticalPath", analysis.criticalPathDuration),
      metric("Started", fmtTime(trace.startTime), "startTime", trace.startTime),
    ),
  );
}

function completeness(trace) {
  const item = (label, value, key, raw, warn) =>
    h(
      "div",
      { class: ["kv", warn && "warn"], "data-field": key, "data-value": raw },
      h("dt", {}, label),
      h("dd", {}, value),
    );
  return card(
    "Completeness",
    { "data-testid": "completeness", class: "card completeness" },
    h(
      "p",
      { class: "completeness-state" },
      trace.complete
        ? h("span", { class: "badge badge-completed", "data-testid": "complete-badge" }, "complete")
        : h("span", { class: "badge badge-warn", "data-testid": "complete-badge" }, "incomplete"),
      h(
        "span",
        { class: "muted" },
        trace.complete ? " a finished root span was seen" : " no finished root span (yet)",
      ),
    ),
    h(
      "dl",
      { class: "kvs kvs-3" },
      item("Orphan spans", fmtCount(trace.orphanSpans), "orphanSpans", trace.orphanSpans, trace.orphanSpans > 0),
      item("Late spans", fmtCount(trace.lateSpans), "lateSpans", trace.lateSpans, trace.lateSpans > 0),
      item("Open spans", fmtCount(trace.openSpans), "openSpans", trace.openSpans, trace.openSpans > 0),
      item(
        "Finalized",
        trace.finalizedAt === null ? "not yet (active)" : fmtTime(trace.finalizedAt),
        "finalizedAt",
        trace.finalizedAt ?? "",
      ),
      item("Re-finalizations", fmtCount(trace.refinalizations), "refinalizations", trace.refinalizations),
    ),
  );
}

function detailPanel(span, node, offset) {
  const field = (label, value, cls) => h("div", { class: "kv" }, h("dt", {}, label), h("dd", { class: cls }, value));
  const tags = Object.entries(span ? span.tags : {}).sort(([a], [b]) => a.localeCompare(b));
  const logs = span ? span.logs : [];
  return h(
    "div",
    {
      class: "wf-detail",
      "data-testid": "span-detail",
      "data-span-id": node.spanId,
      style: { borderLeftColor: node.status === "error" ? "" : serviceColor(node.serviceName) },
    },
    h(
      "dl",
      { class: "kvs detail-fields" },
      field("Service", node.serviceName),
      field("Operation", node.operationName),
      field("Span ID", node.spanId, "mono"),
      field("Parent", span && span.parentSpanId ? span.parentSpanId : "—", "mono"),
      field("Kind", span && span.kind ? span.kind : "—"),
      field("Status", statusBadge(node.status)),
      field("Start", `${fmtTime(span ? span.startTime : null)} (+${fmtMs(offset)})`),
      field("Duration", node.duration === null ? "open (not finished)" : fmtMs(node.duration)),
    ),
    h(
      "div",
      { class: "detail-cols" },
      detailColumn(
        "Tags",
        tags,
        () =>
          h(
            "table",
            { class: "table tags", "data-testid": "detail-tags" },
            h(
              "tbody",
              {},
              tags.map(([key, value]) =>
                h(
                  "tr",
                  { "data-testid": "tag-row", "data-key": key },
                  h("th", { class: "mono" }, key),
                  h("td", { class: ["mono", `v-${typeof value}`] }, fmtValue(value)),
                ),
              ),
            ),
          ),
        "No tags.",
      ),
      detailColumn(
        "Logs",
        logs,
        () =>
          h(
            "ol",
            { class: "logs", "data-testid": "detail-logs" },
            logs.map((log) =>
              h(
                "li",
                { "data-testid": "log-row" },
                h("span", { class: "log-time mono", title: fmtTime(log.timestamp) }, `+${fmtMs(log.timestamp - span.startTime)}`),
                h(
                  "span",
                  { class: "log-fields" },
                  Object.entries(log.fields).map(([key, value]) =>
                    h("span", { class: "log-field mono" }, h("b", {}, key), "=", fmtValue(value)),
                  ),
                ),
              ),
            ),
          ),
        "No logs.",
      ),
    ),
  );
}

/** A column of the span detail: ``title (count)`` over what ``build()`` makes of the items, or ``none``
 *  without items. */
function detailColumn(title, items, build, none) {
  return h("div", {}, h("h3", {}, `${title} (${items.length})`), items.length ? build() : empty(none));
}

function waterfall(trace, vis, analysis, rows) {
  const spans = new Map();
  for (const span of [trace.rootSpan, ...trace.spans]) if (span) spans.set(span.spanId, span);
  let total = vis.duration;
  for (const { node } of rows) total = Math.max(total, node.startOffset + (node.duration ?? 0));
  if (!(total > 0)) total = 1; // a zero-length trace: draw everything at the left edge
  const segments = new Map();
  for (const seg of analysis.criticalPathSegments) {
    if (!segments.has(seg.spanId)) segments.set(seg.spanId, []);
    segments.get(seg.spanId).push(seg);
  }

  const ticks = [0, 0.25, 0.5, 0.75, 1].map((f) =>
    h("span", { class: ["tick", f === 1 && "tick-end"], style: { left: `${f * 100}%` } }, fmtMs(total * f)),
  );
  const header = h(
    "div",
    { class: "wf-row wf-header" },
    h("div", { class: "wf-label" }, "Service · operation"),
    h("div", { class: "wf-track wf-ticks", "data-testid": "waterfall-ticks" }, ticks),
  );

  const body = h("div", { class: "wf-body" });
  const rowEls = [];
  const details = new Map();
  const collapsed = new Set();

  const refreshVisibility = () => {
    let hideBelow = Infinity;
    rows.forEach((row, i) => {
      if (row.depth <= hideBelow) hideBelow = Infinity;
      const hidden = hideBelow !== Infinity;
      rowEls[i].hidden = hidden;
      const detail = details.get(i);
      if (detail) detail.hidden = hidden;
      if (!hidden && collapsed.has(i)) hideBelow = row.depth;
    });
  };

  const toggleDetail = (i) => {
    const row = rows[i];
    const el = rowEls[i];
    if (details.has(i)) {
      details.get(i).remove();
      details.delete(i);
      el.classList.remove("selected");
      el.setAttribute("aria-expanded", "false");
      return;
    }
    const panel = detailPanel(spans.get(row.node.spanId), row.node, row.node.startOffset);
    el.after(panel);
    details.set(i, panel);
    el.classList.add("selected");
    el.setAttribute("aria-expanded", "true");
  };

  rows.forEach((row, i) => {
    const { node } = row;
    const open = node.duration === null;
    const start = node.startOffset;
    const length = open ? Math.max(0, total - start) : node.duration;
    const critical = segments.get(node.spanId) || [];
    const isError = node.status === "error";
    const color = serviceColor(node.serviceName);
    const end = start + length;
    // The duration label goes after the bar; when the bar reaches the right end, before it; when the bar
    // spans (nearly) the whole track, as the root's does, inside its right end: never outside the track,
    // where it would cover the service and operation names.
    const labelAt = end / total <= 0.78 ? "after" : start / total >= 0.22 ? "before" : "inside";
    const toggle = row.hasChildren
      ? h(
          "button",
          {
            type: "button",
            class: "wf-toggle",
            "aria-label": "collapse or expand children",
            "data-testid": "span-toggle",
            onclick: (event) => {
              event.stopPropagation();
              if (collapsed.has(i)) collapsed.delete(i);
              else collapsed.add(i);
              event.currentTarget.textContent = collapsed.has(i) ? "▸" : "▾";
              refreshVisibility();
            },
          },
          "▾",
        )
      : h("span", { class: "wf-toggle-space" });
    const el = h(
      "div",
      {
        class: ["wf-row", "span-row", isError && "is-error", critical.length && "critical", row.orphanRoot && "orphan"],
        "data-testid": "span-row",
        "data-span-id": node.spanId,
        "data-depth": row.depth,
        "data-service": node.serviceName,
        "data-operation": node.operationName,
        "data-duration": open ? "" : node.duration,
        "data-start-offset": start,
        "data-critical": critical.length ? "true" : "false",
        "data-error": isError ? "true" : "false",
        tabindex: "0",
        role: "button",
        "aria-expanded": "false",
        onclick: () => toggleDetail(i),
        onkeydown: (event) => {
          if (event.key === "Enter" || event.key === " ") {
            event.preventDefault();
            toggleDetail(i);
          }
        },
      },
      h(
        "div",
        { class: "wf-label", style: { paddingLeft: `${8 + row.depth * INDENT_PX}px` } },
        toggle,
        serviceDot(node.serviceName),
        h("span", { class: "svc" }, node.serviceName),
        h("span", { class: "op", title: node.operationName }, node.operationName),
        critical.length
          ? h("span", { class: "crit-mark", "data-testid": "critical-marker", title: "on the critical path" }, "◆")
          : null,
        isError ? h("span", { class: "err-mark", title: "error" }, "!") : null,
        row.orphanRoot ? h("span", { class: "badge badge-warn", title: "its parent span never arrived" }, "orphan") : null,
      ),
      h(
        "div",
        { class: "wf-track" },
        h("div", {
          class: ["wf-bar", open && "open", isError && "is-error"],
          "data-testid": "span-bar",
          "data-span-id": node.spanId,
          style: {
            left: pct(start, total),
            width: pct(length, total),
            background: isError || open ? "" : color,
            borderColor: open ? color : "",
          },
          title: `${node.serviceName}: ${node.operationName} — ${open ? "open" : fmtMs(node.duration)}`,
        }),
        critical.map((seg) =>
          h("div", {
            class: "wf-crit",
            "data-testid": "critical-segment",
            "data-span-id": node.spanId,
            "data-start": seg.start,
            "data-end": seg.end,
            style: { left: pct(seg.start, total), width: pct(seg.end - seg.start, total) },
          }),
        ),
        h(
          "span",
          {
            class: ["wf-dur", labelAt !== "after" && labelAt],
            "data-testid": "span-duration",
            style:
              labelAt === "after"
                ? { left: `calc(${pct(end, total)} + 6px)` }
                : labelAt === "before"
                  ? { right: `calc(${pct(total - start, total)} + 6px)` }
                  : { right: `calc(${pct(total - end, total)} + 4px)` },
          },
          open ? "open" : fmtMs(node.duration),
        ),
      ),
    );
    rowEls.push(el);
    body.append(el);
  });

  const select = (spanId) => {
    const i = rows.findIndex((row) => row.node.spanId === spanId);
    if (i < 0) return;
    // reveal it: expand collapsed ancestors
    for (let p = rows[i].parent; p >= 0; p = rows[p].parent) collapsed.delete(p);
    refreshVisibility();
    if (!details.has(i)) toggleDetail(i);
    rowEls[i].scrollIntoView({ block: "center" });
    rowEls[i].classList.remove("flash");
    void rowEls[i].offsetWidth;
    rowEls[i].classList.add("flash");
  };

  const legend = h(
    "div",
    { class: "legend" },
    h("span", {}, h("span", { class: "legend-crit" }), "critical path"),
    h("span", {}, h("span", { class: "legend-err" }), "error"),
    h("span", {}, h("span", { class: "legend-open" }), "open span"),
    h("span", { class: "muted" }, "click a span for its tags and logs"),
  );
  const section = card(
    `Waterfall · ${fmtCount(rows.length)} spans`,
    { class: "card waterfall-card" },
    legend,
    h("div", { class: "waterfall", "data-testid": "waterfall", "data-total": total }, header, body),
  );
  return { section, select };
}

function analysisCards(analysis, select, serviceOf) {
  const total = analysis.totalDuration;
  const segs = analysis.criticalPathSegments;
  const spanCount = new Set(segs.map((seg) => seg.spanId)).size;
  const critical = card(
    "Critical path",
    { "data-testid": "critical-path", class: "card critical-card" },
    h(
      "p",
      { class: "muted" },
      segs.length
        ? `${fmtMs(analysis.criticalPathDuration)} in ${segs.length} segment${segs.length === 1 ? "" : "s"} of ` +
            `${spanCount} span${spanCount === 1 ? "" : "s"}, in execution order; click one to find it above`
        : "",
    ),
    segs.length
      ? table(
          { class: "table compact" },
          [
            "Span",
            ["From", { class: "num" }],
            ["To", { class: "num" }],
            ["Time", { class: "num" }],
            ["", { class: "seg-col" }],
          ],
          segs.map((seg) =>
            h(
              "tr",
              {
                class: "clickable",
                "data-testid": "critical-path-step",
                "data-span-id": seg.spanId,
                "data-start": seg.start,
                "data-end": seg.end,
                onclick: () => select(seg.spanId),
              },
              h("td", { class: "step-label" }, serviceDot(serviceOf(seg.spanId, seg.span)), seg.span),
              h("td", { class: "num" }, fmtMs(seg.start)),
              h("td", { class: "num" }, fmtMs(seg.end)),
              h("td", { class: "num" }, fmtMs(seg.end - seg.start)),
              h(
                "td",
                { class: "seg-col" },
                h(
                  "div",
                  { class: "seg-track" },
                  h("div", {
                    class: "seg-bar",
                    style: { left: pct(seg.start, total || 1), width: pct(seg.end - seg.start, total || 1) },
                  }),
                ),
              ),
            ),
          ),
        )
      : empty("No critical path: the trace has no finished main root span."),
  );

  const bottlenecks = card(
    "Bottlenecks",
    { "data-testid": "bottlenecks" },
    h("p", { class: "muted" }, "Spans whose own work takes more than 10% of the trace"),
    analysis.bottlenecks.length
      ? table(
          {},
          [
            "Span",
            ["Self time", { class: "num" }],
            ["Duration", { class: "num" }],
            ["Share", { class: "share-col" }],
          ],
          analysis.bottlenecks.map((b) =>
            h(
              "tr",
              { class: "clickable", "data-testid": "bottleneck-row", "data-span-id": b.spanId, onclick: () => select(b.spanId) },
              h("td", { class: "bottleneck-span" }, serviceDot(serviceOf(b.spanId, b.span)), b.span),
              h("td", { class: "num" }, fmtMs(b.selfTime)),
              h("td", { class: "num" }, fmtMs(b.duration)),
              h(
                "td",
                { class: "share-col" },
                h(
                  "div",
                  { class: "share" },
                  h("div", { class: "share-bar hot", style: { width: `${Math.min(100, b.percentage)}%` } }),
                  h("span", {}, fmtPercent(b.percentage)),
                ),
              ),
            ),
          ),
        )
      : empty("No bottlenecks: no span's own work takes more than 10% of the trace."),
  );

  const entries = Object.entries(analysis.serviceBreakdown).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  const sum = entries.reduce((acc, [, v]) => acc + v, 0) || total || 1;
  const breakdown = card(
    "Service breakdown",
    { "data-testid": "service-breakdown" },
    h("p", { class: "muted" }, "Self time per service"),
    entries.length
      ? h(
          "div",
          { class: "bars" },
          entries.map(([service, ms]) =>
            h(
              "div",
              { class: "bar-row", "data-testid": "breakdown-row", "data-service": service, "data-value": ms },
              h("span", { class: "bar-label" }, serviceDot(service), service),
              h(
                "div",
                { class: "share" },
                h("div", { class: "share-bar", style: { width: pct(ms, sum), background: serviceColor(service) } }),
              ),
              h("span", { class: "bar-value" }, `${fmtMs(ms)} · ${fmtPercent((ms / sum) * 100)}`),
            ),
          ),
        )
      : empty("No spans."),
  );
  return h("div", { class: "analysis-grid" }, h("div", { class: "stack" }, bottlenecks, breakdown), critical);
}

export async function renderTrace(ctx) {
  const traceId = ctx.segments[0];
  if (!traceId) {
    ctx.navigate("#/search");
    return;
  }
  const path = `/traces/${encodeURIComponent(traceId)}`;
  let trace, vis, analysis;
  try {
    [trace, vis, analysis] = await Promise.all([get(path), get(`${path}/visualize`), get(`${path}/analyze`)]);
  } catch (err) {
    if (!ctx.isCurrent()) return;
    ctx.main.replaceChildren(
      h(
        "section",
        { class: "card trace-head" },
        h("h1", { class: "trace-title" }, "Trace ", h("span", { class: "mono" }, traceId)),
        empty("This trace could not be loaded: see the message above."),
        h("p", {}, h("a", { href: "#/search" }, "← Back to search")),
      ),
    );
    throw err;
  }
  if (!ctx.isCurrent()) return;
  const rows = flatten(vis);
  const { section, select } = waterfall(trace, vis, analysis, rows);
  const services = new Map(rows.map((row) => [row.node.spanId, row.node.serviceName]));
  ctx.main.replaceChildren(
    h(
      "div",
      { class: "trace-page" },
      h("div", { class: "trace-top" }, summary(trace, analysis, rows), completeness(trace)),
      section,
      analysisCards(analysis, select, (spanId, label) => services.get(spanId) ?? label.split(":")[0]),
    ),
  );
}
