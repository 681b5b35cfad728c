// The single-page app: hash routes (#/search, #/trace/<id>, #/dependencies, #/stats, #/endpoints,
// #/endpoint/<service>/<operation>, #/hot), the token form and the error banner. Each page is an async
// function that fills <main>; an error it throws is shown in the banner, so a failed request never leaves
// a blank page. A page's ?window=… is carried over to the navigation links, so moving between pages keeps
// the time window.

import { describe, getToken, setToken } from "./api.js";
import { h } from "./dom.js";
import { renderDependencies } from "./dependencies.js";
import { renderEndpoint } from "./endpoint.js";
import { renderEndpoints, renderHot } from "./hot.js";
import { renderSearch } from "./search.js";
import { renderStats } from "./stats.js";
import { pickWindow, withWindow } from "./timewindow.js";
import { renderTrace } from "./trace.js";

const PAGES = {
  search: renderSearch,
  trace: renderTrace,
  dependencies: renderDependencies,
  stats: renderStats,
  endpoints: renderEndpoints,
  endpoint: renderEndpoint,
  hot: renderHot,
};
/** The navigation entry a page belongs to, when it has none of its own. */
const NAV_OF = { trace: "search", endpoint: "endpoints" };

const main = document.getElementById("main");
const banner = document.getElementById("banner");
let generation = 0;

export function showError(err) {
  banner.replaceChildren(
    h("span", { class: "banner-icon", "aria-hidden": "true" }, "!"),
    h("span", { class: "banner-text", "data-testid": "error-text" }, describe(err)),
  );
  banner.hidden = false;
}

function clearError() {
  banner.hidden = true;
  banner.replaceChildren();
}

function parseHash() {
  const raw = window.location.hash.replace(/^#\/?/, "");
  const cut = raw.indexOf("?");
  const path = cut < 0 ? raw : raw.slice(0, cut);
  const query = cut < 0 ? "" : raw.slice(cut + 1);
  const segments = path.split("/").filter(Boolean).map((part) => {
    try {
      return decodeURIComponent(part);
    } catch {
      return part;
    }
  });
  return { segments, params: new URLSearchParams(query) };
}

async function route() {
  const current = ++generation;
  const { segments, params } = parseHash();
  const name = segments[0] in PAGES ? segments[0] : "search";
  const win = pickWindow(params, null);
  for (const link of document.querySelectorAll("[data-nav]")) {
    link.classList.toggle("active", link.dataset.nav === (NAV_OF[name] || name));
    link.setAttribute("href", withWindow(`#/${link.dataset.nav}`, win));
  }
  clearError();
  document.body.dataset.page = name;
  document.body.dataset.state = "loading";
  // Which route the state is about: a click changes the hash before its hashchange runs route().
  document.body.dataset.route = window.location.hash;
  main.replaceChildren(h("p", { class: "loading" }, "Loading…"));
  const ctx = {
    main,
    params,
    segments: segments.slice(1),
    isCurrent: () => current === generation,
    showError: (err) => {
      if (current === generation) showError(err);
    },
    clearError: () => {
      if (current === generation) clearError();
    },
    navigate: (hash) => {
      if (window.location.hash === hash) route();
      else window.location.hash = hash;
    },
  };
  try {
    await PAGES[name](ctx);
  } catch (err) {
    if (current === generation) {
      showError(err);
      if (main.querySelector(".loading")) main.replaceChildren(h("p", { class: "empty" }, "Nothing to show."));
    }
  } finally {
    if (current === generation) document.body.dataset.state = "ready";
  }
}

function setupToken() {
  const form = document.getElementById("token-form");
  const input = document.getElementById("token-input");
  const state = document.getElementById("token-state");
  const show = () => {
    const token = getToken();
    state.textContent = token ? "token set" : "no token";
    state.classList.toggle("on", Boolean(token));
  };
  input.value = getToken();
  show();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    setToken(input.value.trim());
    show();
    route();
  });
  document.getElementById("token-clear").addEventListener("click", () => {
    input.value = "";
    setToken("");
    show();
    route();
  });
}

window.addEventListener("hashchange", route);
window.addEventListener("unhandledrejection", (event) => {
  showError(event.reason);
  event.preventDefault();
});
setupToken();
route();
