// Search page: the filter form (its state lives in the URL hash, so results can be linked and the back
// button works) and the matching traces, newest first, each with a duration bar relative to the slowest.
// The time range is the pages' shared ?window=15m|1h|6h|24h|7d|all (the traces that started in it: start
// = now - window), or range=custom with start/end; the older range=15m… is still read.

import { get } from "./api.js";
import { empty, fmtAgo, fmtCount, fmtMs, fmtTime, h, serviceColor, serviceDot, statusBadge } from "./dom.js";

const RANGES = [
  ["", "Any time"],
  ["15m", "Last 15 minutes"],
  ["1h", "Last hour"],
  ["6h", "Last 6 hours"],
  ["24h", "Last 24 hours"],
  ["7d", "Last 7 days"],
  ["custom", "Custom range…"],
];
const RANGE_MS = { "15m": 15 * 60e3, "1h": 3600e3, "6h": 6 * 3600e3, "24h": 24 * 3600e3, "7d": 7 * 24 * 3600e3 };
const STATUSES = [
  ["", "Any status"],
  ["completed", "Completed"],
  ["failed", "Failed"],
  ["active", "Active (in progress)"],
];
const LIMITS = ["20", "50", "100", "200"];
const TEXT_FIELDS = ["serviceName", "operationName", "minDuration", "maxDuration"];

/** The /traces/query parameters for the form state in ``params`` (relative ranges resolved now). */
export function queryParams(params, offset = 0) {
  const out = new URLSearchParams();
  for (const name of [...TEXT_FIELDS, "status"]) {
    const value = (params.get(name) || "").trim();
    if (value) out.set(name, value);
  }
  for (const tag of params.getAll("tag")) if (tag) out.append("tag", tag);
  const range = rangeOf(params);
  if (RANGE_MS[range]) {
    out.set("start", String(Math.floor(Date.now() - RANGE_MS[range])));
  } else if (range === "custom") {
    if (params.get("start")) out.set("start", params.get("start"));
    if (params.get("end")) out.set("end", params.get("end"));
  }
  out.set("limit", params.get("limit") || "20");
  if (offset) out.set("offset", String(offset));
  return out;
}

/** The form's time range for ``params``: a window ("1h"), "custom", or "" for any time. */
function rangeOf(params) {
  const value = params.get("window") ?? params.get("range") ?? "";
  if (value === "custom" || RANGE_MS[value]) return value;
  return "";
}

function toLocalInput(epochMs) {
  if (!epochMs) return "";
  const d = new Date(Number(epochMs));
  const local = new Date(d.getTime() - d.getTimezoneOffset() * 60e3);
  return local.toISOString().slice(0, 16);
}

function fromLocalInput(value) {
  if (!value) return "";
  const t = new Date(value).getTime();
  return Number.isFinite(t) ? String(t) : "";
}

function field(label, control, hint) {
  return h("label", { class: "field" }, h("span", { class: "field-label" }, label), control, hint);
}

function select(name, options, value) {
  return h(
    "select",
    { name, "data-testid": `search-${name}` },
    options.map(([v, text]) => h("option", { value: v, selected: v === value }, text)),
  );
}

function buildForm(ctx) {
  const p = ctx.params;
  const tags = p.getAll("tag").filter(Boolean);
  const chips = h("div", { class: "chips", "data-testid": "tag-chips" });
  const tagInput = h("input", {
    type: "text",
    placeholder: "key:value, then Enter",
    "data-testid": "search-tag",
    spellcheck: "false",
  });
  const renderChips = () => {
    chips.replaceChildren(
      ...tags.map((tag, i) =>
        h(
          "span",
          { class: "chip", "data-testid": "tag-chip" },
          tag,
          h(
            "button",
            {
              type: "button",
              class: "chip-x",
              "aria-label": `remove ${tag}`,
              onclick: () => {
                tags.splice(i, 1);
                renderChips();
              },
            },
            "×",
          ),
        ),
      ),
    );
  };
  const addTag = () => {
    const value = tagInput.value.trim();
    if (value && !tags.includes(value)) tags.push(value);
    tagInput.value = "";
    renderChips();
  };
  tagInput.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      addTag();
    }
  });
  renderChips();

  const range = rangeOf(p);
  const customFrom = h("input", { type: "datetime-local", name: "from", value: toLocalInput(p.get("start")) });
  const customTo = h("input", { type: "datetime-local", name: "to", value: toLocalInput(p.get("end")) });
  const custom = h(
    "div",
    { class: "custom-range", hidden: range !== "custom" },
    field("From", customFrom),
    field("To", customTo),
  );
  const rangeSelect = select("range", RANGES, range);
  rangeSelect.addEventListener("change", () => {
    custom.hidden = rangeSelect.value !== "custom";
  });

  const text = (name, attrs) =>
    h("input", { name, value: p.get(name) || "", "data-testid": `search-${name}`, spellcheck: "false", ...attrs });

  const form = h(
    "form",
    { class: "card search-form", "data-testid": "search-form", autocomplete: "off" },
    h("h2", { class: "card-title" }, "Find traces"),
    field("Service", text("serviceName", { list: "service-names", placeholder: "any service" })),
    h("datalist", { id: "service-names" }),
    field("Operation", text("operationName", { placeholder: "any operation" })),
    h(
      "div",
      { class: "field-row" },
      field("Min duration (ms)", text("minDuration", { type: "number", min: "0", step: "any", placeholder: "0" })),
      field("Max duration (ms)", text("maxDuration", { type: "number", min: "0", step: "any", placeholder: "∞" })),
    ),
    field("Status", select("status", STATUSES, p.get("status") || "")),
    field("Tags", tagInput, chips),
    field("Time range", rangeSelect),
    custom,
    field(
      "Results",
      select(
        "limit",
        LIMITS.map((v) => [v, `${v} traces`]),
        p.get("limit") || "20",
      ),
    ),
    h(
      "div",
      { class: "form-actions" },
      h("button", { type: "submit", class: "primary", "data-testid": "search-submit" }, "Search"),
      h(
        "button",
        { type: "button", class: "ghost", "data-testid": "search-reset", onclick: () => ctx.navigate("#/search") },
        "Reset",
      ),
    ),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    addTag();
    const data = new FormData(form);
    const next = new URLSearchParams();
    for (const name of [...TEXT_FIELDS, "status", "limit"]) {
      const value = String(data.get(name) || "").trim();
      if (value && !(name === "limit" && value === "20")) next.set(name, value);
    }
    for (const tag of tags) next.append("tag", tag);
    const range = String(data.get("range") || "");
    if (RANGE_MS[range]) next.set("window", range);
    else if (range === "custom") {
      next.set("range", "custom");
      const start = fromLocalInput(customFrom.value);
      const end = fromLocalInput(customTo.value);
      if (start) next.set("start", start);
      if (end) next.set("end", end);
    }
    ctx.navigate(`#/search?${next}`);
  });
  return form;
}

function fillServiceNames(form) {
  // Suggestions only: a failure here (no token yet, say) is reported by the search itself.
  get("/stats")
    .then((stats) => {
      const list = form.querySelector("#service-names");
      const names = Object.keys(stats.serviceStats || {}).sort();
      list.replaceChildren(...names.map((name) => h("option", { value: name })));
    })
    .catch(() => {});
}

function resultRow(trace, slowest) {
  const share = slowest > 0 ? (trace.duration / slowest) * 100 : 0;
  const title =
    trace.serviceName === null
      ? h("span", { class: "muted" }, "(no root span)")
      : [
          serviceDot(trace.serviceName),
          h("span", { class: "svc" }, trace.serviceName),
          h("span", { class: "op" }, trace.operationName),
        ];
  return h(
    "a",
    {
      class: "result",
      href: `#/trace/${encodeURIComponent(trace.traceId)}`,
      "data-testid": "trace-result",
      "data-trace-id": trace.traceId,
      "data-duration": trace.duration,
    },
    h(
      "div",
      { class: "result-top" },
      h("span", { class: "result-title" }, title),
      h("span", { class: "mono muted result-id", "data-testid": "result-trace-id" }, trace.traceId),
      h("span", { class: "result-duration", "data-testid": "result-duration" }, fmtMs(trace.duration)),
    ),
    h(
      "div",
      { class: "result-track" },
      h("div", {
        class: ["result-bar", trace.status === "failed" && "is-error"],
        "data-testid": "result-duration-bar",
        style: {
          width: `${share}%`,
          background: trace.status === "failed" ? "" : serviceColor(trace.serviceName || "?"),
        },
      }),
    ),
    h(
      "div",
      { class: "result-meta" },
      statusBadge(trace.status),
      trace.complete ? null : h("span", { class: "badge badge-warn", title: "no finished root span" }, "incomplete"),
      h("span", { "data-testid": "result-spans" }, plural(trace.serviceCalls, "span")),
      trace.errorCount
        ? h("span", { class: "err", "data-testid": "result-errors" }, plural(trace.errorCount, "error"))
        : null,
      h(
        "span",
        { class: "services" },
        trace.services.map((name) => h("span", { class: "svc-chip" }, serviceDot(name), name)),
      ),
      h("span", { class: "spacer" }),
      h(
        "time",
        { class: "result-time", title: fmtTime(trace.startTime), "data-testid": "result-start" },
        `${fmtTime(trace.startTime)} · ${fmtAgo(trace.startTime)}`,
      ),
    ),
  );
}

function plural(n, word) {
  return `${fmtCount(n)} ${word}${n === 1 ? "" : "s"}`;
}

export async function renderSearch(ctx) {
  const form = buildForm(ctx);
  const count = h("h2", { class: "card-title", "data-testid": "results-count" }, "Searching…");
  const list = h("div", { class: "results-list", "data-testid": "results-list" });
  const more = h("button", { type: "button", class: "ghost", hidden: true, "data-testid": "load-more" }, "Load more");
  const results = h(
    "section",
    { class: "card results", "data-testid": "results" },
    h("div", { class: "results-head" }, count, h("span", { class: "muted" }, "newest first")),
    list,
    h("div", { class: "results-foot" }, more),
  );
  ctx.main.replaceChildren(h("div", { class: "search-layout" }, form, results));
  fillServiceNames(form);

  const limit = Number(ctx.params.get("limit") || "20");
  const traces = [];
  const show = (page) => {
    traces.push(...page);
    const slowest = Math.max(0, ...traces.map((t) => t.duration));
    list.replaceChildren(...traces.map((trace) => resultRow(trace, slowest)));
    if (!traces.length) list.replaceChildren(empty("No traces match these filters."));
    count.textContent = `${traces.length} trace${traces.length === 1 ? "" : "s"}`;
    more.hidden = page.length < limit;
  };
  more.addEventListener("click", async () => {
    more.disabled = true;
    try {
      show(await get("/traces/query", queryParams(ctx.params, traces.length)));
    } catch (err) {
      ctx.showError(err);
    } finally {
      more.disabled = false;
    }
  });
  try {
    show(await get("/traces/query", queryParams(ctx.params)));
  } catch (err) {
    count.textContent = "No results";
    list.replaceChildren(empty("The search failed: see the message above."));
    throw err;
  }
}
