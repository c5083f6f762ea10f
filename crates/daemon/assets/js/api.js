// The HTTP API (docs/api.md): token storage, JSON calls, WebSocket URLs.

const KEY = 'ironclaw.token';

export function getToken() {
  try { return localStorage.getItem(KEY) || ''; } catch { return ''; }
}
export function setToken(t) {
  try { localStorage.setItem(KEY, t); } catch { /* private mode: session only */ }
}
export function clearToken() {
  try { localStorage.removeItem(KEY); } catch { /* ignore */ }
}

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Called on any 401 after login (token revoked): the app signs out. */
let onUnauthorized = () => {};
export function setUnauthorizedHandler(fn) { onUnauthorized = fn; }

async function errorFrom(res) {
  let code = 'http_' + res.status;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = body.error.code || code;
      message = body.error.message || message;
    }
  } catch { /* not JSON */ }
  return new ApiError(res.status, code, message);
}

/**
 * fetch() with the bearer token. Returns parsed JSON (or null for 204), or
 * the Response itself when `raw` is set. Throws ApiError.
 */
export async function api(path, { method = 'GET', body, token = getToken(), raw = false, signal } = {}) {
  const headers = { Authorization: `Bearer ${token}` };
  const init = { method, headers, signal, cache: 'no-store' };
  if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    if (e.name === 'AbortError') throw e;
    throw new ApiError(0, 'network', 'Cannot reach ironclawd. Is it running?');
  }
  if (!res.ok) {
    const err = await errorFrom(res);
    if (res.status === 401 && token === getToken()) onUnauthorized(err);
    throw err;
  }
  if (raw) return res;
  if (res.status === 204) return null;
  const type = res.headers.get('content-type') || '';
  return type.includes('json') ? res.json() : res.text();
}

/** ws:// or wss:// URL on this origin, with the token in the query. */
export function wsUrl(path, params = {}) {
  const u = new URL(path, location.href);
  u.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') u.searchParams.set(k, String(v));
  }
  u.searchParams.set('token', getToken());
  return u.toString();
}

export const enc = encodeURIComponent;
