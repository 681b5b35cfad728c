// The time window shared by the stats, dependency, search, endpoint and hot-operations pages: one of
// 15m, 1h, 6h, 24h, 7d or all, kept in the URL hash as ?window=… so links (and the navigation) keep it.

import { h } from "./dom.js";

const MINUTE = 60e3;
const HOUR = 60 * MINUTE;
const DAY = 24 * HOUR;

/** The windows a page offers: [value, label, length in ms (null: all time)]. */
export const WINDOWS = [
  ["15m", "15 min", 15 * MINUTE],
  ["1h", "1 hour", HOUR],
  ["6h", "6 hours", 6 * HOUR],
  ["24h", "24 hours", DAY],
  ["7d", "7 days", 7 * DAY],
  ["all", "All time", null],
];
const LENGTH = new Map(WINDOWS.map(([value, , ms]) => [value, ms]));

/** Chart steps per window: at most ~100 points, whole minutes (the rollups' grain), never over the API's
 *  1440-point limit. "all" is charted over its last 7 days. */
const STEPS = new Map([
  ["15m", MINUTE],
  ["1h", MINUTE],
  ["6h", 5 * MINUTE],
  ["24h", 15 * MINUTE],
  ["7d", 2 * HOUR],
  ["all", 2 * HOUR],
]);

/** The window named in ``params`` (``window=``), or ``fallback`` when it is missing or not one we offer. */
export function pickWindow(params, fallback = "all") {
  const value = params.get("window");
  return value && LENGTH.has(value) ? value : fallback;
}

/** The window's length in milliseconds; null for all time. */
export function windowLength(value) {
  return LENGTH.get(value) ?? null;
}

/** The charts' step (ms) for a page window ("all" is charted over the last 7 days). */
export function chartStep(value) {
  return STEPS.get(value) ?? STEPS.get("all");
}

/** The API's window parameters: ``window=1h``, nothing for all time. */
export function windowParams(value, params = new URLSearchParams()) {
  if (value !== "all") params.set("window", value);
  return params;
}

/** ``hash`` (e.g. "#/search?serviceName=x") with ``window`` set (removed for ``null``). */
export function withWindow(hash, value) {
  const cut = hash.indexOf("?");
  const path = cut < 0 ? hash : hash.slice(0, cut);
  const query = new URLSearchParams(cut < 0 ? "" : hash.slice(cut + 1));
  if (value === null || value === undefined) query.delete("window");
  else query.set("window", value);
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

/** The window buttons; ``onPick(value)`` runs when another one is chosen. */
export function windowPicker(current, onPick) {
  return h(
    "div",
    { class: "segmented", role: "group", "aria-label": "time window", "data-testid": "window-picker" },
    WINDOWS.map(([value, label]) =>
      h(
        "button",
        {
          type: "button",
          class: value === current && "on",
          "aria-pressed": value === current ? "true" : "false",
          "data-window": value,
          title: value === "all" ? "all stored traces" : `traces that started in the last ${label}`,
          onclick: () => {
            if (value !== current) onPick(value);
          },
        },
        value === "all" ? "all" : value,
      ),
    ),
  );
}

/** "last 1 hour" / "all time", for headings. */
export function windowLabel(value) {
  const found = WINDOWS.find(([v]) => v === value);
  if (!found) return value;
  return found[2] === null ? "all time" : `last ${found[1]}`;
}
