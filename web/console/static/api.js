// The public API, as any client calls it: JSON over fetch, a bearer token kept in this tab's
// sessionStorage (never a cookie), refreshed before it expires.

const BASE = "/api/v1";
const STORE = "warden.console.tokens";
// Refresh this many seconds before the access token expires (or at 80 % of a short life).
const MARGIN = 60;

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.code = problem.code || "";
  }
}

// A readable sentence for any failure: the problem's detail and, for a 422, each field.
export function describe(error) {
  if (!(error instanceof ApiError)) {
    return "Warden could not be reached. Check your connection and try again.";
  }
  const p = error.problem;
  const head = p.title && p.detail && p.title !== p.detail ? `${p.title}: ${p.detail}` : (p.detail || p.title);
  const fields = (p.errors || []).map((e) => {
    const where = (e.loc || []).filter((part) => part !== "body" && part !== "query").join(".");
    return where ? `${where}: ${e.msg}` : e.msg;
  });
  const retry = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : "";
  return [head + retry, ...fields].join("\n");
}

let tokens = load();
let timer = null;
let refreshing = null;
const listeners = new Set();

function load() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORE) || "null");
    return saved && saved.access_token && saved.refresh_token ? saved : null;
  } catch {
    return null;
  }
}

function keep(pair) {
  const was = tokens !== null;
  if (pair === null) {
    tokens = null;
    sessionStorage.removeItem(STORE);
    clearTimeout(timer);
  } else {
    tokens = {
      access_token: pair.access_token,
      refresh_token: pair.refresh_token,
      expires_at: Date.now() + pair.expires_in * 1000,
      life: pair.expires_in,
    };
    sessionStorage.setItem(STORE, JSON.stringify(tokens));
    schedule();
  }
  // Only a change of state is news: a refreshed pair must not redraw a page mid-edit.
  if (was !== (tokens !== null)) listeners.forEach((listener) => listener(tokens !== null));
}

function schedule() {
  clearTimeout(timer);
  if (!tokens) return;
  const margin = Math.min(MARGIN, tokens.life * 0.2) * 1000;
  // A little jitter, so that two tabs holding one pair (see `channel`) do not refresh at once.
  const jitter = Math.random() * margin * 0.25;
  const wait = Math.max(0, tokens.expires_at - Date.now() - margin - jitter);
  timer = setTimeout(() => refresh().catch(() => {}), wait);
}

export function onSignedInChange(listener) {
  listeners.add(listener);
}

export function signedIn() {
  return tokens !== null;
}

async function parse(response) {
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    return { title: response.statusText, detail: text.slice(0, 200) };
  }
}

async function send(method, path, { body, bearer = true } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer && tokens) headers.Authorization = `Bearer ${tokens.access_token}`;
  let response;
  try {
    response = await fetch(BASE + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "omit",
      cache: "no-store",
    });
  } catch {
    throw new ApiError(0, { title: "Network error", detail: "Warden could not be reached. Check your connection and try again." });
  }
  const data = await parse(response);
  if (!response.ok) {
    const error = new ApiError(response.status, data || { title: response.statusText || `HTTP ${response.status}` });
    error.retryAfter = response.headers.get("Retry-After");
    throw error;
  }
  return data;
}

const DEAD = new Set(["token_revoked", "invalid_token", "missing_token", "token_reused"]);

// A call with the bearer token: an expired token is refreshed once and the call repeated; a
// dead session signs the tab out.
export async function call(method, path, body) {
  if (tokens && Date.now() >= tokens.expires_at) await refresh().catch(() => {});
  try {
    return await send(method, path, { body });
  } catch (error) {
    if (error.status === 401 && error.code === "token_expired" && tokens) {
      await refresh();
      return send(method, path, { body });
    }
    if (error.status === 401 && DEAD.has(error.code)) keep(null);
    throw error;
  }
}

export const api = {
  get: (path) => call("GET", path),
  post: (path, body = {}) => call("POST", path, body),
  patch: (path, body) => call("PATCH", path, body),
  del: (path, body) => call("DELETE", path, body),
};

// Log in; answers {mfa_token} when the account asks for a second factor (403 mfa_required).
export async function login(username, password) {
  try {
    keep(await send("POST", "/auth/login", { body: { username, password }, bearer: false }));
    return null;
  } catch (error) {
    if (error.status === 403 && error.code === "mfa_required" && error.problem.mfa_token) {
      return { mfa_token: error.problem.mfa_token };
    }
    throw error;
  }
}

export async function loginMfa(mfaToken, code) {
  keep(await send("POST", "/auth/mfa", { body: { mfa_token: mfaToken, code }, bearer: false }));
}

// One refresh at a time: a second caller waits for the first one's pair.
export function refresh() {
  if (!refreshing) {
    const spent = tokens && tokens.refresh_token;
    refreshing = (async () => {
      if (!spent) throw new ApiError(401, { title: "Signed out", detail: "Sign in again.", code: "missing_token" });
      try {
        const pair = await send("POST", "/auth/refresh", { body: { refresh_token: spent }, bearer: false });
        keep(pair);
        if (channel) channel.postMessage({ spent, pair });
      } catch (error) {
        if (error.status === 401 || error.status === 422) keep(null);
        throw error;
      }
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

export async function logout() {
  try {
    if (tokens) await send("POST", "/auth/logout", { body: {} });
  } finally {
    keep(null);
  }
}

// Forget this tab's tokens without a call (the session was ended elsewhere, e.g. revoked).
export function forget() {
  keep(null);
}

// "Duplicate tab" copies sessionStorage, so two tabs may hold one refresh token, and the second
// to spend it would be refused as reuse, which ends the session. The tab that spends it tells
// the others of this origin; one holding that same token takes the new pair instead.
const channel = typeof BroadcastChannel === "function" ? new BroadcastChannel("warden.console") : null;
if (channel) {
  channel.onmessage = (event) => {
    const { spent, pair } = event.data || {};
    if (tokens && spent && pair && tokens.refresh_token === spent) keep(pair);
  };
}

if (tokens) schedule();
