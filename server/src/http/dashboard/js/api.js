// The /v1/ HTTP API as the dashboard uses it. The token lives in this tab's sessionStorage
// (gone when the tab closes, never in a URL) and is sent as a bearer header.
//
// Failures are typed: ApiError carries the server's error body ({code, message, rule?,
// current?}) so views can show a refused rule's own message; NetworkError means the server
// could not be reached. Both also fire window events that main.js turns into the sign-in page
// (401) and the "cannot reach the server" banner.

import { Vocabulary } from "./vocabulary.js";

const TOKEN_KEY = "switchyard.token";

export function getToken() {
  return sessionStorage.getItem(TOKEN_KEY);
}

export function setToken(token) {
  sessionStorage.setItem(TOKEN_KEY, token);
}

export function clearToken() {
  sessionStorage.removeItem(TOKEN_KEY);
}

export class ApiError extends Error {
  constructor(status, body) {
    super(body?.message || `HTTP ${status}`);
    this.status = status;
    this.code = body?.code ?? "unknown";
    this.rule = body?.rule ?? null;
    this.current = body?.current ?? null;
  }
}

export class NetworkError extends Error {}

export function authHeaders(token = getToken()) {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function request(method, path, { body, token } = {}) {
  const headers = { Accept: "application/json", ...authHeaders(token) };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(`/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: "no-store",
    });
  } catch (e) {
    window.dispatchEvent(new CustomEvent("switchyard:offline", { detail: e }));
    throw new NetworkError("cannot reach the Switchyard server");
  }
  window.dispatchEvent(new CustomEvent("switchyard:online"));
  const text = await response.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  if (!response.ok) {
    const error = new ApiError(response.status, json);
    // A token given explicitly is being tried at sign-in: its 401 is an answer, not an expiry.
    if (response.status === 401 && token === undefined) {
      window.dispatchEvent(new CustomEvent("switchyard:unauthenticated", { detail: error }));
    }
    throw error;
  }
  return json;
}

const k = (key) => encodeURIComponent(key);

export const api = {
  /**
   * Who the token is (with its permissions) and the server's vocabulary: what every view needs
   * before it can draw.
   */
  session: async (token) => {
    const [me, vocabulary] = await Promise.all([request("GET", "/whoami", { token }), request("GET", "/vocabulary", { token })]);
    return { me, vocabulary: new Vocabulary(vocabulary) };
  },
  migration: (key) => request("GET", `/migrations/${k(key)}`),
  audit: (key, beforeId) =>
    request("GET", `/migrations/${k(key)}/audit?limit=25${beforeId ? `&before_id=${beforeId}` : ""}`),
  /** Every instance, following the server's pages (a fleet can be thousands). */
  instances: async (key) => {
    const all = { instances: [] };
    let after = null;
    for (;;) {
      const page = await request("GET", `/migrations/${k(key)}/instances${after ? `?after=${encodeURIComponent(after)}` : ""}`);
      all.instances.push(...page.instances);
      if (!page.next_after || page.next_after === after) return all;
      after = page.next_after;
    }
  },
  // The story for the charts' markers and the stage timeline: the server's largest page of
  // entries (500), newest first.
  history: (key) => request("GET", `/migrations/${k(key)}/audit?limit=500`),
  actions: (key) => request("GET", `/migrations/${k(key)}/actions`),
  plans: () => request("GET", "/plans"),
  pausePlan: (key, reason) => request("POST", `/migrations/${k(key)}/plan/pause`, { body: { reason } }),
  resumePlan: (key, reason) => request("POST", `/migrations/${k(key)}/plan/resume`, { body: { reason } }),
  traffic: (key, minutes) => request("GET", `/migrations/${k(key)}/traffic?minutes=${minutes}`),
  gate: (key) => request("GET", `/migrations/${k(key)}/gate`),
  /** What the target database saw of the old shape (pg_stat_statements), and the gate's check on it. */
  usage: (key) => request("GET", `/migrations/${k(key)}/usage`),
  mismatches: (key) => request("GET", `/migrations/${k(key)}/mismatches`),
  backfill: (key) => request("GET", `/migrations/${k(key)}/backfill`),
  backfillSettings: (key, settings, reason) =>
    request("PUT", `/migrations/${k(key)}/backfill/settings`, { body: { ...settings, reason } }),
  // `extra`: { request_approval: true } files the change for a second operator's approval
  // (answered with the request, not the migration).
  rollout: (key, rolloutBp, expectedVersion, reason, extra = {}) =>
    request("POST", `/migrations/${k(key)}/rollout`, {
      body: { rollout_bp: rolloutBp, expected_version: expectedVersion, reason, ...extra },
    }),
  advance: (key, expectedVersion, reason, extra = {}) =>
    request("POST", `/migrations/${k(key)}/advance`, { body: { expected_version: expectedVersion, reason, ...extra } }),
  retreat: (key, expectedVersion, reason, extra = {}) =>
    request("POST", `/migrations/${k(key)}/retreat`, { body: { expected_version: expectedVersion, reason, ...extra } }),
  record: (key, event, expectedVersion, reason, extra = {}) =>
    request("POST", `/migrations/${k(key)}/events`, { body: { event, expected_version: expectedVersion, reason, ...extra } }),
  /** Changes waiting for a second operator's approval (of one migration, or all). */
  approvals: (key) => request("GET", key ? `/approvals?migration=${k(key)}` : "/approvals"),
  approve: (id, reason) => request("POST", `/approvals/${id}/approve`, { body: { reason } }),
  reject: (id, reason) => request("POST", `/approvals/${id}/reject`, { body: { reason } }),
};

/** What the token may do, from the permissions whoami lists, so the page hides what would be refused. */
export function abilities(permissions = []) {
  const granted = new Set(permissions);
  const may = (permission) => granted.has(permission);
  return { may, operate: may("operate"), recordSchema: may("record_schema") };
}
