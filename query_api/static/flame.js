// The aggregated critical path of an endpoint as a flame graph (icicle, SVG): the root context on top,
// each context's callees below it, every box as wide as the critical time of its subtree (its own time,
// the criticalMs of the context with exactly its path, plus its callees'). Click a box to zoom into it,
// click an ancestor (or "reset") to zoom back out.

import { fmtMs, fmtPercent, h, s, serviceColor } from "./dom.js";

const ROW = 24;
const CHAR_W = 6.7; // average glyph width at the labels' 12px, to shorten labels that do not fit
const ELIDED = "…";

/** The calling-context tree of ``contexts`` (the API's ``[{path, criticalMs, …}]``): a node per path
 *  prefix, ``self`` the criticalMs of the context with exactly that path (0 for a prefix that is only a
 *  caller), ``total`` its own plus its callees' time; children largest first (then by label). Several
 *  top-level labels are kept side by side under the returned root (``label`` null). */
export function contextTree(contexts) {
  const make = (label, path, parent) => ({ label, path, parent, self: 0, total: 0, context: null, children: new Map() });
  const root = make(null, [], null);
  for (const context of contexts) {
    let node = root;
    for (const label of context.path) {
      let child = node.children.get(label);
      if (!child) {
        child = make(label, [...node.path, label], node);
        node.children.set(label, child);
      }
      node = child;
    }
    node.self += context.criticalMs;
    node.context = context;
  }
  const finish = (node) => {
    const children = [...node.children.values()];
    let total = node.self;
    for (const child of children) total += finish(child);
    node.total = total;
    node.children = children.sort((a, b) => b.total - a.total || (a.label < b.label ? -1 : a.label > b.label ? 1 : 0));
    return total;
  };
  finish(root);
  return root;
}

function depthOf(node) {
  let depth = 0;
  for (const child of node.children) depth = Math.max(depth, depthOf(child));
  return depth + 1;
}

function colorOf(label) {
  if (label === ELIDED) return "#cbd5e1";
  const cut = label.indexOf(":");
  return serviceColor(cut < 0 ? label : label.slice(0, cut));
}

/** Dark text on light boxes, white on dark ones (by the fill's relative luminance). */
function inkOn(hex) {
  const [r, g, b] = [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16) / 255);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b < 0.45 ? "#ffffff" : "#0f172a";
}

function fit(text, width) {
  const room = Math.floor((width - 10) / CHAR_W);
  if (room < 3) return "";
  return text.length > room ? `${text.slice(0, room - 1)}…` : text;
}

/** The flame graph of ``tree`` (:func:`contextTree`) with ``endpointTotal`` ms as 100 %; ``mean`` gives a
 *  context's mean ms per trace. Returns ``{root, draw}``: ``draw()`` once ``root`` is in the page, and
 *  again when its width changes. */
export function flameGraph(tree, { endpointTotal }) {
  const host = h("div", { class: "flame-host", "data-testid": "flame" });
  const readout = h("div", { class: "readout flame-readout", "data-testid": "flame-readout" });
  const reset = h("button", { type: "button", class: "ghost small", hidden: true, "data-testid": "flame-reset" }, "Reset zoom");
  const idle = () =>
    readout.replaceChildren(h("span", { class: "muted" }, "point at a box for its numbers; click to zoom in"));
  idle();
  const rows = depthOf(tree) - 1;
  let focus = tree;
  let width = 0;

  const show = (node) => {
    const share = endpointTotal ? (node.total / endpointTotal) * 100 : 0;
    const ctx = node.context;
    readout.replaceChildren(
      h("span", { class: "ro-path", "data-field": "path" }, node.path.join(" › ")),
      h("span", { class: "ro-field", "data-field": "total", "data-value": node.total }, h("b", {}, "with callees"), " ", fmtMs(node.total), ` (${fmtPercent(share)})`),
      h("span", { class: "ro-field", "data-field": "self", "data-value": node.self }, h("b", {}, "own"), " ", `${node.self} ms`),
      ctx ? h("span", { class: "ro-field", "data-field": "meanMs", "data-value": ctx.meanMs }, h("b", {}, "mean"), " ", `${ctx.meanMs} ms/trace`) : null,
      ctx ? h("span", { class: "ro-field", "data-field": "traces", "data-value": ctx.traces }, h("b", {}, "traces"), " ", String(ctx.traces)) : null,
    );
  };

  const draw = (force = false) => {
    const now = Math.floor(host.clientWidth);
    if (!force && now === width) return;
    width = Math.max(200, now);
    const boxes = [];
    // The focus's ancestors span the whole width above it; its subtree is laid out to scale below.
    const chain = [];
    for (let node = focus; node && node.label !== null; node = node.parent) chain.unshift(node);
    const top = chain.length ? chain[chain.length - 1] : null;
    const scale = focus.total > 0 ? width / focus.total : 0;
    const box = (node, x, depth, w, ancestor) => {
      const label = fit(node.label, w);
      boxes.push(
        s(
          "g",
          {
            class: ["flame-box", ancestor && "ancestor", node.label === ELIDED && "elided"],
            transform: `translate(${x.toFixed(3)} ${depth * ROW})`,
            onpointerenter: () => show(node),
            onpointerleave: idle,
            onclick: () => {
              focus = node === focus && node.parent ? node.parent : node;
              reset.hidden = focus === tree;
              draw(true);
            },
          },
          s("title", {}, `${node.path.join(" › ")}\n${fmtMs(node.total)} with callees, ${fmtMs(node.self)} own`),
          s("rect", {
            "data-testid": "flame-node",
            "data-path": JSON.stringify(node.path),
            "data-total": node.total,
            "data-self": node.self,
            width: w.toFixed(3),
            height: ROW - 2,
            fill: colorOf(node.label),
          }),
          // a white edge between neighbours, drawn apart from the box so the box keeps its exact width
          s("line", { class: "flame-sep", x1: w.toFixed(3), x2: w.toFixed(3), y1: 0, y2: ROW - 2 }),
          label ? s("text", { x: 5, y: ROW / 2 + 3, fill: inkOn(colorOf(node.label)) }, label) : null,
        ),
      );
    };
    chain.slice(0, -1).forEach((node, depth) => box(node, 0, depth, width, true));
    const lay = (node, x, depth) => {
      box(node, x, depth, node.total * scale, false);
      let cx = x;
      for (const child of node.children) {
        lay(child, cx, depth + 1);
        cx += child.total * scale;
      }
    };
    if (top) lay(top, 0, chain.length - 1);
    else {
      let x = 0;
      for (const child of tree.children) {
        lay(child, x, 0);
        x += child.total * scale;
      }
    }
    host.replaceChildren(
      s(
        "svg",
        {
          class: "flame",
          width,
          height: Math.max(1, rows) * ROW,
          viewBox: `0 0 ${width} ${Math.max(1, rows) * ROW}`,
          role: "img",
          "aria-label": "critical path by calling context",
        },
        boxes,
      ),
    );
  };
  reset.addEventListener("click", () => {
    focus = tree;
    reset.hidden = true;
    draw(true);
  });
  const root = h("div", { class: "flame-wrap" }, h("div", { class: "flame-tools" }, readout, reset), host);
  return { root, draw };
}
