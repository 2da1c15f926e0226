// The one way the console talks to the gateway: the public JSON API with the bearer token.
import { signOut, token } from "./auth.js";

export class ApiError extends Error {
  constructor(status, problem) {
    super(problem.detail || problem.title || `HTTP ${status}`);
    this.status = status;
    this.problem = problem;
    this.problems = problem.problems || [];
  }
}

// `body` is sent as JSON; `text` (with `type`, e.g. "text/csv") as it is.
export async function api(path, { method = "GET", body, text, type, raw = false } = {}) {
  const headers = { Accept: "application/json" };
  const bearer = token();
  if (bearer) headers.Authorization = `Bearer ${bearer}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (text !== undefined) headers["Content-Type"] = type;
  const resp = await fetch(path, {
    method, headers, body: text ?? (body === undefined ? undefined : JSON.stringify(body)),
  });
  if (!resp.ok) {
    const problem = await resp.json().catch(() => ({ title: resp.statusText }));
    const error = new ApiError(resp.status, problem);
    // only the token that was refused is dropped (a late answer to a previous sign-in is not)
    if (resp.status === 401 && bearer && token() === bearer) {
      signOut();
      window.dispatchEvent(new CustomEvent("enclave:signed-out", { detail: error.message }));
    }
    throw error;
  }
  return raw ? resp : resp.json();
}

// Every page of a cursor-paged list (stops at `max` items).
export async function allPages(path, key, max = 5000) {
  const out = [];
  let cursor = "";
  do {
    const sep = path.includes("?") ? "&" : "?";
    const page = await api(`${path}${sep}${qs({ limit: 500, cursor }).slice(1)}`);
    out.push(...page[key]);
    cursor = page.next_cursor;
  } while (cursor && out.length < max);
  return out;
}

export const qs = (params) => {
  const clean = Object.entries(params).filter(([, v]) => v !== "" && v != null);
  return clean.length ? `?${new URLSearchParams(clean)}` : "";
};
