// Dependency graph: services as nodes, calls as edges with their counts, laid out deterministically in
// layers (a service sits one layer right of the deepest service that calls it; cycles are broken by a
// depth-first walk in name order). Data from the Jaeger-compatible /api/dependencies; when that endpoint
// is not there, from the per-trace dependencies of the recent traces' analyses. The time window is the
// pages' shared ?window=… (default the last 24 hours; "all": since the epoch), sent as endTs = now and
// lookback = the window; the older ?lookback=<ms> is still read.

import { ApiError, get } from "./api.js";
import { card, empty, fmtCount, h, s, serviceColor } from "./dom.js";
import { WINDOWS, pickWindow, windowLabel, windowLength, windowPicker, withWindow } from "./timewindow.js";

const DEFAULT_WINDOW = "24h";
const FALLBACK_TRACES = 200;
const FALLBACK_CONCURRENCY = 8;

const NODE_W = 184;
const NODE_H = 46;
const COL_GAP = 150;
const ROW_GAP = 34;
const PAD = 36;
const WAYPOINT_H = 12;
const MARKER = {
  viewBox: "0 0 10 10",
  refX: "9",
  refY: "5",
  markerUnits: "userSpaceOnUse",
  markerWidth: "11",
  markerHeight: "11",
  orient: "auto-start-reverse",
};

/** Edges from /api/dependencies, or null when the endpoint is not available (so the fallback is used). */
async function fromJaegerApi(endTs, lookback) {
  try {
    const reply = await get("/api/dependencies", new URLSearchParams({ endTs: String(endTs), lookback }));
    const data = Array.isArray(reply) ? reply : reply.data;
    if (!Array.isArray(data)) return null;
    return data.map((d) => ({
      parent: d.parent,
      child: d.child,
      calls: Number(d.callCount ?? d.calls ?? 0),
      errors: d.errorCount ?? d.errors ?? null,
    }));
  } catch (err) {
    if (err instanceof ApiError && [401, 403, 0].includes(err.status)) throw err;
    return null;
  }
}

/** Edges summed over the analyses of the most recent traces in the window. */
async function fromAnalyses(endTs, lookback) {
  const params = new URLSearchParams({
    start: String(Math.max(0, endTs - Number(lookback))),
    end: String(endTs),
    limit: String(FALLBACK_TRACES),
  });
  const traces = await get("/traces/query", params);
  const edges = new Map();
  let next = 0;
  const worker = async () => {
    while (next < traces.length) {
      const trace = traces[next++];
      let analysis;
      try {
        analysis = await get(`/traces/${encodeURIComponent(trace.traceId)}/analyze`);
      } catch (err) {
        if (err instanceof ApiError && err.status === 404) continue; // purged meanwhile
        throw err;
      }
      for (const dep of analysis.dependencies) {
        const key = `${dep.parent}\u0000${dep.child}`;
        const edge = edges.get(key) || { parent: dep.parent, child: dep.child, calls: 0, errors: 0 };
        edge.calls += dep.calls;
        edge.errors += dep.errors;
        edges.set(key, edge);
      }
    }
  };
  await Promise.all(Array.from({ length: FALLBACK_CONCURRENCY }, worker));
  return { edges: [...edges.values()], traces: traces.length };
}

const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0);

/** The drawing of the graph: a box per service in layers from the callers on the left, the back edges
 *  (those closing a cycle), and for an edge spanning several layers the waypoints it passes through
 *  (virtual nodes that take part in the ordering, so long edges run between boxes, not over them). */
export function layout(edges) {
  const names = [...new Set(edges.flatMap((e) => [e.parent, e.child]))].sort(byName);
  const out = new Map(names.map((n) => [n, []]));
  const indeg = new Map(names.map((n) => [n, 0]));
  for (const e of edges) {
    if (e.parent === e.child || out.get(e.parent).includes(e.child)) continue;
    out.get(e.parent).push(e.child);
    indeg.set(e.child, indeg.get(e.child) + 1);
  }
  for (const list of out.values()) list.sort(byName);

  // Depth-first from the roots (then from anything left, for pure cycles): edges into the stack are back edges.
  const back = new Set();
  const state = new Map();
  for (const start of [...names.filter((n) => indeg.get(n) === 0), ...names]) {
    if (state.has(start)) continue;
    const stack = [[start, 0]];
    state.set(start, "open");
    while (stack.length) {
      const top = stack[stack.length - 1];
      const [node, i] = top;
      const children = out.get(node);
      if (i >= children.length) {
        state.set(node, "done");
        stack.pop();
        continue;
      }
      top[1] = i + 1;
      const child = children[i];
      if (state.get(child) === "open") back.add(`${node}\u0000${child}`);
      else if (!state.has(child)) {
        state.set(child, "open");
        stack.push([child, 0]);
      }
    }
  }
  const forward = [];
  for (const [parent, children] of out) {
    for (const child of children) if (!back.has(`${parent}\u0000${child}`)) forward.push([parent, child]);
  }

  // Longest-path layers over the forward edges (Kahn's order, names breaking ties).
  const layer = new Map(names.map((n) => [n, 0]));
  const remaining = new Map(names.map((n) => [n, 0]));
  for (const [, child] of forward) remaining.set(child, remaining.get(child) + 1);
  const ready = names.filter((n) => remaining.get(n) === 0);
  while (ready.length) {
    ready.sort(byName);
    const node = ready.shift();
    for (const [parent, child] of forward) {
      if (parent !== node) continue;
      layer.set(child, Math.max(layer.get(child), layer.get(node) + 1));
      remaining.set(child, remaining.get(child) - 1);
      if (remaining.get(child) === 0) ready.push(child);
    }
  }

  // Waypoints of the long edges; neighbours of every box and waypoint, for the ordering.
  const layerOf = new Map(layer);
  const preds = new Map(names.map((n) => [n, []]));
  const succs = new Map(names.map((n) => [n, []]));
  const chains = new Map();
  for (const [parent, child] of forward) {
    const chain = [];
    for (let li = layer.get(parent) + 1; li < layer.get(child); li++) {
      const id = `\u0001${parent}\u0000${child}\u0000${li}`;
      chain.push(id);
      layerOf.set(id, li);
      preds.set(id, []);
      succs.set(id, []);
    }
    chains.set(`${parent}\u0000${child}`, chain);
    const path = [parent, ...chain, child];
    for (let i = 1; i < path.length; i++) {
      succs.get(path[i - 1]).push(path[i]);
      preds.get(path[i]).push(path[i - 1]);
    }
  }
  const layers = [];
  for (const id of [...layerOf.keys()].sort(byName)) (layers[layerOf.get(id)] ||= []).push(id);

  // Order inside each layer by the mean position of the neighbours (barycenter), sweeping down and up.
  const position = new Map();
  const place = (members) => members.forEach((id, i) => position.set(id, i));
  layers.forEach(place);
  const sweep = (li, neighbours) => {
    const members = layers[li];
    const key = new Map(
      members.map((id) => {
        const ns = neighbours.get(id);
        return [id, ns.length ? ns.reduce((acc, n) => acc + position.get(n), 0) / ns.length : position.get(id)];
      }),
    );
    members.sort((a, b) => key.get(a) - key.get(b) || position.get(a) - position.get(b) || byName(a, b));
    place(members);
  };
  for (let round = 0; round < 4; round++) {
    for (let li = 1; li < layers.length; li++) sweep(li, preds);
    for (let li = layers.length - 2; li >= 0; li--) sweep(li, succs);
  }
  for (let li = 1; li < layers.length; li++) sweep(li, preds);

  const heightOf = (id) => (id.startsWith("\u0001") ? WAYPOINT_H : NODE_H);
  const columnHeight = (members) =>
    members.reduce((acc, id) => acc + heightOf(id), 0) + Math.max(0, members.length - 1) * ROW_GAP;
  const height = PAD * 2 + Math.max(NODE_H, ...layers.map(columnHeight));
  const width = PAD * 2 + layers.length * NODE_W + Math.max(0, layers.length - 1) * COL_GAP;
  const nodes = new Map();
  const waypoints = new Map();
  layers.forEach((members, li) => {
    let y = (height - columnHeight(members)) / 2;
    for (const id of members) {
      const box = { x: PAD + li * (NODE_W + COL_GAP), y, layer: li };
      if (id.startsWith("\u0001")) waypoints.set(id, { ...box, cy: y + WAYPOINT_H / 2 });
      else nodes.set(id, box);
      y += heightOf(id) + ROW_GAP;
    }
  });
  return { nodes, back, chains, waypoints, width, height };
}

function truncate(text, max) {
  return text.length > max ? `${text.slice(0, max - 1)}…` : text;
}

function graph(edges) {
  const { nodes, back, chains, waypoints, width, height } = layout(edges);
  const maxCalls = Math.max(1, ...edges.map((e) => e.calls));
  const callsIn = new Map();
  const callsOut = new Map();
  for (const e of edges) {
    callsIn.set(e.child, (callsIn.get(e.child) || 0) + e.calls);
    callsOut.set(e.parent, (callsOut.get(e.parent) || 0) + e.calls);
  }
  const defs = s(
    "defs",
    {},
    s(
      "marker",
      { id: "arrow", ...MARKER },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow" }),
    ),
    s(
      "marker",
      { id: "arrow-err", ...MARKER },
      s("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "arrow err" }),
    ),
  );
  const edgeEls = [];
  const labelEls = [];
  const sorted = [...edges].sort((a, b) => byName(a.parent, b.parent) || byName(a.child, b.child));
  for (const e of sorted) {
    const a = nodes.get(e.parent);
    const b = nodes.get(e.child);
    const isBack = back.has(`${e.parent}\u0000${e.child}`);
    let d;
    let lx;
    let ly;
    if (e.parent === e.child) {
      const cx = a.x + NODE_W / 2;
      d = `M ${cx - 18} ${a.y} C ${cx - 40} ${a.y - 48}, ${cx + 40} ${a.y - 48}, ${cx + 18} ${a.y}`;
      lx = cx;
      ly = a.y - 40;
    } else if (isBack) {
      // Curve below both nodes, right to left.
      const x1 = a.x + NODE_W / 2;
      const y1 = a.y + NODE_H;
      const x2 = b.x + NODE_W / 2;
      const y2 = b.y + NODE_H;
      const dip = Math.max(y1, y2) + 46;
      d = `M ${x1} ${y1} C ${x1} ${dip}, ${x2} ${dip}, ${x2} ${y2}`;
      lx = (x1 + x2) / 2;
      ly = dip - 12;
    } else {
      // Through the waypoints: a curve across each gap between columns, straight across their columns.
      const chain = (chains.get(`${e.parent}\u0000${e.child}`) || []).map((id) => waypoints.get(id));
      let x = a.x + NODE_W;
      let y = a.y + NODE_H / 2;
      d = `M ${x} ${y}`;
      const hops = [...chain.map((w) => [w.x, w.cy, w.x + NODE_W]), [b.x - 1, b.y + NODE_H / 2, null]];
      hops.forEach(([x2, y2, exit], i) => {
        const bend = Math.max(30, (x2 - x) / 2);
        d += ` C ${x + bend} ${y}, ${x2 - bend} ${y2}, ${x2} ${y2}`;
        if (i === 0) {
          lx = chain.length ? x2 + NODE_W / 2 : (x + x2) / 2;
          ly = chain.length ? y2 : (y + y2) / 2;
        }
        if (exit !== null) {
          d += ` L ${exit} ${y2}`;
          x = exit;
          y = y2;
        }
      });
    }
    const hasErrors = Number(e.errors) > 0;
    const strokeWidth = 1.4 + 3.2 * (Math.log1p(e.calls) / Math.log1p(maxCalls));
    const title = `${e.parent} → ${e.child}: ${fmtCount(e.calls)} call${e.calls === 1 ? "" : "s"}${
      e.errors === null || e.errors === undefined ? "" : `, ${fmtCount(e.errors)} error${e.errors === 1 ? "" : "s"}`
    }`;
    edgeEls.push(
      s(
        "path",
        {
          d,
          class: ["edge", hasErrors && "err"],
          "marker-end": hasErrors ? "url(#arrow-err)" : "url(#arrow)",
          "stroke-width": strokeWidth.toFixed(2),
        },
        s("title", {}, title),
      ),
    );
    const text = hasErrors ? `${fmtCount(e.calls)} · ${fmtCount(e.errors)} err` : fmtCount(e.calls);
    const w = 14 + text.length * 7;
    labelEls.push(
      s(
        "g",
        {
          class: ["edge-label", hasErrors && "err"],
          "data-testid": "dep-edge",
          "data-parent": e.parent,
          "data-child": e.child,
          "data-count": e.calls,
          "data-errors": e.errors ?? "",
          transform: `translate(${lx} ${ly})`,
        },
        s("title", {}, title),
        s("rect", { x: -w / 2, y: -10, width: w, height: 20, rx: 10 }),
        s("text", { x: 0, y: 4, "text-anchor": "middle", "data-testid": "dep-edge-count" }, text),
      ),
    );
  }
  const nodeEls = [...nodes.entries()]
    .sort(([a], [b]) => byName(a, b))
    .map(([name, p]) =>
      s(
        "g",
        { class: "node", "data-testid": "dep-node", "data-service": name, transform: `translate(${p.x} ${p.y})` },
        s("title", {}, `${name}: ${fmtCount(callsIn.get(name) || 0)} calls in, ${fmtCount(callsOut.get(name) || 0)} out`),
        s("rect", { class: "node-box", width: NODE_W, height: NODE_H, rx: 9 }),
        s("rect", { class: "node-stripe", width: 6, height: NODE_H, rx: 3, fill: serviceColor(name) }),
        s("text", { class: "node-name", x: 18, y: 20, "data-testid": "dep-node-name" }, truncate(name, 22)),
        s(
          "text",
          { class: "node-sub", x: 18, y: 36 },
          `${fmtCount(callsIn.get(name) || 0)} in · ${fmtCount(callsOut.get(name) || 0)} out`,
        ),
      ),
    );
  return s(
    "svg",
    {
      class: "dep-graph",
      "data-testid": "dep-graph",
      viewBox: `0 ${-20} ${width} ${height + 40}`,
      width,
      height: height + 40,
      role: "img",
      "aria-label": "service dependency graph",
    },
    defs,
    s("g", { class: "edges" }, edgeEls),
    s("g", { class: "nodes" }, nodeEls),
    s("g", { class: "labels" }, labelEls),
  );
}

function edgeTable(edges) {
  const rows = [...edges].sort((a, b) => b.calls - a.calls || byName(a.parent, b.parent) || byName(a.child, b.child));
  const showErrors = edges.some((e) => e.errors !== null && e.errors !== undefined);
  return h(
    "table",
    { class: "table", "data-testid": "dep-table" },
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        h("th", {}, "Caller"),
        h("th", {}, "Callee"),
        h("th", { class: "num" }, "Calls"),
        showErrors ? h("th", { class: "num" }, "Errors") : null,
      ),
    ),
    h(
      "tbody",
      {},
      rows.map((e) =>
        h(
          "tr",
          { "data-testid": "dep-row", "data-parent": e.parent, "data-child": e.child },
          h("td", {}, e.parent),
          h("td", {}, e.child),
          h("td", { class: "num" }, fmtCount(e.calls)),
          showErrors ? h("td", { class: ["num", e.errors > 0 && "err"] }, fmtCount(e.errors ?? 0)) : null,
        ),
      ),
    ),
  );
}

/** The page's window: ?window=…, else a legacy ?lookback=<ms> that equals one of the windows, else 24h. */
function windowOf(params) {
  const legacy = WINDOWS.find(([, , ms]) => ms !== null && String(ms) === params.get("lookback"));
  return pickWindow(params, legacy ? legacy[0] : DEFAULT_WINDOW);
}

export async function renderDependencies(ctx) {
  const win = windowOf(ctx.params);
  const picker = windowPicker(win, (value) => ctx.navigate(withWindow("#/dependencies", value)));
  const refresh = h("button", { type: "button", class: "ghost", onclick: () => ctx.navigate(window.location.hash) }, "Refresh");
  const source = h("p", { class: "muted", "data-testid": "dep-source" }, "Loading…");
  const body = h("div", { class: "dep-body" }, h("p", { class: "loading" }, "Loading…"));
  ctx.main.replaceChildren(
    card(
      "Service dependencies",
      { class: "card deps" },
      h("div", { class: "toolbar" }, picker, h("span", { class: "muted" }, windowLabel(win)), refresh, source),
      body,
    ),
  );

  const endTs = Date.now();
  const lookback = String(windowLength(win) ?? endTs);
  source.dataset.endTs = endTs;
  source.dataset.lookback = lookback;
  let edges = await fromJaegerApi(endTs, lookback);
  if (!ctx.isCurrent()) return;
  if (edges !== null) {
    source.textContent = "From /api/dependencies: every call between services in the window.";
    source.dataset.source = "api";
  } else {
    const built = await fromAnalyses(endTs, lookback);
    if (!ctx.isCurrent()) return;
    edges = built.edges;
    source.textContent = `Built from the analyses of the ${built.traces} most recent traces in the window.`;
    source.dataset.source = "analyses";
  }
  edges = edges.filter((e) => e.parent && e.child);
  if (!edges.length) {
    body.replaceChildren(empty("No calls between services in this window."));
    return;
  }
  body.replaceChildren(h("div", { class: "graph-wrap" }, graph(edges)), h("h3", {}, "Calls"), edgeTable(edges));
}
