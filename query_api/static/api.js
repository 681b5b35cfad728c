// The API client: same origin, JSON, the read token (if the user set one) as a bearer header.

const TOKEN_KEY = "tracing.readToken";

/** The API's base path: where /ui/ is mounted ("/" normally, "/tracing/" behind a path prefix). */
const BASE = window.location.pathname.replace(/ui(\/.*)?$/, "");

export function getToken() {
  try {
    return window.localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function setToken(token) {
  try {
    if (token) window.localStorage.setItem(TOKEN_KEY, token);
    else window.localStorage.removeItem(TOKEN_KEY);
  } catch {
    // storage disabled: the token lasts for this page only
  }
}

/** A failed API call: ``status`` 0 for network errors, else the HTTP status. */
export class ApiError extends Error {
  constructor(status, message, path) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.path = path;
  }
}

/** GET ``path`` (e.g. "/stats", or "traces/query?..."), answer the decoded JSON or throw ApiError. */
export async function get(path, params) {
  const query = params ? `?${params}` : "";
  const url = BASE + path.replace(/^\//, "") + query;
  const headers = { Accept: "application/json" };
  const token = getToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(url, { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, err && err.message ? err.message : String(err), path);
  }
  let text;
  try {
    text = await response.text();
  } catch (err) {
    throw new ApiError(0, `the connection broke while reading the answer (${err.message})`, path);
  }
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (!response.ok) {
    const message =
      body && typeof body.error === "string" ? body.error : text.trim().slice(0, 300) || response.statusText;
    throw new ApiError(response.status, message, path);
  }
  if (body === null) throw new ApiError(response.status, "the answer is not JSON", path);
  return body;
}

/** A one-line, human explanation of an error, for the banner. */
export function describe(err) {
  if (err instanceof ApiError) {
    const where = `GET ${err.path.split("?")[0]}`;
    switch (err.status) {
      case 0:
        return `Network error: the API could not be reached (${where}: ${err.message}). Is the server running?`;
      case 401:
        return `401: missing bearer token — set a read token in the field at the top right (${where}: ${err.message})`;
      case 403:
        return `403: the read token was not accepted — check the token at the top right (${where}: ${err.message})`;
      case 503:
        return `503: the API cannot reach its store or Kafka (${where}: ${err.message})`;
      default:
        return `${err.status}: ${err.message} (${where})`;
    }
  }
  return `Error: ${err && err.message ? err.message : String(err)}`;
}

/** ``fn(item)`` for every item, at most ``limit`` at a time; the answers in the items' order. The first
 *  failure rejects (the other calls still finish, their answers dropped). */
export async function mapLimited(items, limit, fn) {
  const out = new Array(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i], i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}
