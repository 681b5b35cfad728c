// DOM building and formatting helpers shared by the pages. Text always goes in as text nodes (never
// innerHTML), so span names, tags and log fields cannot inject markup.

const SVG_NS = "http://www.w3.org/2000/svg";

function apply(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "style") Object.assign(el.style, value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else if (key.startsWith("on") && typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.setAttribute("class", Array.isArray(value) ? value.filter(Boolean).join(" ") : value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
}

function append(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === undefined || child === null || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** An HTML element: h("a", {href: "#"}, "text", otherNode). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  apply(el, attrs);
  append(el, children);
  return el;
}

// -- formatting ------------------------------------------------------------------------------------

/** Milliseconds for people: "0.42 ms", "161.5 ms", "2.35 s"; "—" when unknown. */
export function fmtMs(ms) {
  if (ms === null || ms === undefined || Number.isNaN(ms)) return "—";
  if (Math.abs(ms) >= 1000) return `${trim((ms / 1000).toFixed(2))} s`;
  return `${trim(ms.toFixed(2))} ms`;
}

function trim(fixed) {
  return fixed.includes(".") ? fixed.replace(/\.?0+$/, "") : fixed;
}

export function fmtCount(n) {
  return n === null || n === undefined ? "—" : Number(n).toLocaleString("en-US");
}

export function fmtPercent(p) {
  return `${trim(Number(p).toFixed(1))}%`;
}

const pad = (n, w = 2) => String(n).padStart(w, "0");

/** Epoch milliseconds as local "YYYY-MM-DD HH:MM:SS.mmm". */
export function fmtTime(epochMs) {
  if (epochMs === null || epochMs === undefined) return "—";
  const d = new Date(epochMs);
  return (
    `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  );
}

/** "5 s ago", "3 min ago", "2 h ago", "4 d ago". */
export function fmtAgo(epochMs, now = Date.now()) {
  const seconds = Math.round((now - epochMs) / 1000);
  if (seconds < 0) return "in the future";
  if (seconds < 60) return `${seconds} s ago`;
  if (seconds < 3600) return `${Math.floor(seconds / 60)} min ago`;
  if (seconds < 86400) return `${Math.floor(seconds / 3600)} h ago`;
  return `${Math.floor(seconds / 86400)} d ago`;
}

export function fmtValue(value) {
  if (typeof value === "string") return value;
  return JSON.stringify(value);
}

// -- colours ---------------------------------------------------------------------------------------

// Distinct hues, neighbours far apart, none of them the error red.
const PALETTE = [
  "#3b82f6", "#f97316", "#16a34a", "#9333ea", "#eab308", "#06b6d4",
  "#d946ef", "#84cc16", "#92400e", "#64748b", "#4338ca", "#0d9488",
];
const assigned = new Map();
const taken = new Set();

/** A colour per service name: its hash picks a palette slot, the next free one if another service has it
 *  (so the first twelve services seen all differ); the same name keeps its colour for the session. */
export function serviceColor(name) {
  const key = String(name);
  let color = assigned.get(key);
  if (color) return color;
  let hash = 2166136261;
  for (const ch of key) {
    hash ^= ch.codePointAt(0);
    hash = Math.imul(hash, 16777619) >>> 0;
  }
  let slot = hash % PALETTE.length;
  if (taken.size < PALETTE.length) while (taken.has(slot)) slot = (slot + 1) % PALETTE.length;
  taken.add(slot);
  color = PALETTE[slot];
  assigned.set(key, color);
  return color;
}

// -- small components ------------------------------------------------------------------------------

export function statusBadge(status) {
  return h("span", { class: ["badge", `badge-${status}`], "data-testid": "status-badge" }, status);
}

export function serviceDot(name) {
  return h("span", { class: "dot", style: { background: serviceColor(name) }, "aria-hidden": "true" });
}

export function card(title, attrs, ...children) {
  return h("section", { class: "card", ...attrs }, title ? h("h2", { class: "card-title" }, title) : null, ...children);
}

export function empty(text) {
  return h("p", { class: "empty" }, text);
}

export function traceLink(traceId, label) {
  return h("a", { class: "mono", href: `#/trace/${encodeURIComponent(traceId)}` }, label ?? traceId);
}

/** A table with one header row. ``columns``: header labels, or ``[label, attrs]`` (``{class: "num"}`` for
 *  numbers); ``rows``: the body's rows, or a <tbody> to keep (filled later). */
export function table(attrs, columns, rows) {
  const head = columns.map((column) => (Array.isArray(column) ? h("th", column[1], column[0]) : h("th", {}, column)));
  const body = rows instanceof Node ? rows : h("tbody", {}, rows);
  return h("table", { class: "table", ...attrs }, h("thead", {}, h("tr", {}, head)), body);
}

/** A right-aligned number cell that also carries its raw value (``data-field``, ``data-value``), so
 *  tests and tools read the number as the API gave it, not as formatted. */
export function numCell(key, raw, text, cls) {
  return h("td", { class: ["num", cls], "data-field": key, "data-value": raw }, text);
}
