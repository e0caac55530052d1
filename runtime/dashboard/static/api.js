// fnrun's JSON API as the dashboard uses it, and small DOM helpers (no innerHTML:
// every value from the store is set as text, so no event can inject markup).

let csrf = "";

export class LoginNeeded extends Error {}

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = value;
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
  return el;
}

async function answer(response) {
  if (response.status === 401) throw new LoginNeeded();
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(body?.error || `${response.status} ${response.statusText}`);
  return body;
}

export async function getJSON(path) {
  return answer(await fetch(path, { headers: { accept: "application/json" } }));
}

export async function postJSON(path, body) {
  return answer(await fetch(path, {
    method: "POST",
    headers: { "content-type": "application/json", "x-fnrun-csrf": csrf },
    body: JSON.stringify(body),
  }));
}

export async function startSession() {
  const session = await getJSON("/_/ui/api/session");
  csrf = session.csrf;
  return session;
}

export function table(headers, rows, attrs = {}) {
  return h("table", attrs,
    h("thead", {}, h("tr", {}, headers.map((label) =>
      h("th", { scope: "col", class: label.endsWith("#") ? "num" : null },
        label.replace(/#$/, ""))))),
    h("tbody", {}, rows));
}

export function outcome(status) {
  return h("span", { class: `outcome ${status}` }, status);
}

export function duration(ms) {
  if (ms === null || ms === undefined) return "";
  if (ms < 1000) return `${ms < 10 ? ms.toFixed(1) : Math.round(ms)} ms`;
  return `${(ms / 1000).toFixed(2)} s`;
}

export function when(iso) {
  if (!iso) return "";
  const moment = new Date(iso);
  const today = new Date().toDateString() === moment.toDateString();
  return today ? moment.toLocaleTimeString() : moment.toLocaleString();
}

export function pretty(value) {
  return h("pre", {}, typeof value === "string" ? value : JSON.stringify(value, null, 2));
}

export function note(text, isError = false) {
  return h("p", { class: isError ? "note error" : "note muted", role: "status" }, text);
}

export const path = encodeURIComponent;

// replaceChildren for nested lists with gaps (null for "nothing here").
export function fill(el, ...children) {
  el.replaceChildren(...children.flat(Infinity).filter((c) => c !== null && c !== undefined && c !== false));
}

let fields = 0;

// A form control under its own label (the label names only the control, so a
// screen reader and a test find it by its visible name).
export function field(text, control) {
  control.id ||= `field-${++fields}`;
  return h("div", { class: "field" }, h("label", { for: control.id }, text), control);
}
