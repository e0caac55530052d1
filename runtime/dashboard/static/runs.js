// Runs: the Send event form, filters, the newest runs and, live, every new one
// (server-sent events from /_/ui/stream; no reload), older pages by seq cursor.

import { duration, getJSON, h, note, outcome, path, postJSON, table, when, fill, field } from "./api.js";

const STATUSES = ["ok", "error", "timeout", "crash"];
const MAX_ROWS = 500;

export function runRow(run) {
  return h("tr", { "data-invocation": run.invocation, "data-seq": run.seq },
    h("td", { class: "mono" }, h("a", { href: `#/runs/${path(run.invocation)}`, title: run.invocation },
      run.invocation.slice(0, 8))),
    h("td", {}, when(run.started)),
    h("td", {}, run.function),
    h("td", { class: "mono" }, run.event_type),
    h("td", { class: "mono" }, h("a", { href: `#/traces/${path(run.event_id)}`, title: "trace" }, run.event_id)),
    h("td", { class: "num" }, run.attempt),
    h("td", {}, outcome(run.status), run.error ? h("div", { class: "muted" }, run.error) : null),
    h("td", { class: "num" }, duration(run.duration_ms)));
}

function sendForm() {
  const type = h("input", { name: "type", required: true, placeholder: "greet.requested", size: 28 });
  const data = h("textarea", { name: "data", rows: 3 }, "{}");
  const result = h("div");
  const form = h("form", { class: "card inline", id: "send-event", onsubmit: async (e) => {
    e.preventDefault();
    let value;
    try {
      value = data.value.trim() ? JSON.parse(data.value) : null;
    } catch (err) {
      fill(result, note(`Data is not JSON: ${err.message}`, true));
      return;
    }
    try {
      const sent = await postJSON("/_/ui/api/events", { type: type.value.trim(), data: value });
      const reach = sent.matched === 1 ? "1 function" : `${sent.matched} functions`;
      fill(result, note(`Sent event ${sent.id} (reaches ${reach}).`));
    } catch (err) {
      fill(result, note(err.message, true));
    }
  } },
  field("Type", type), field("Data", data),
  h("button", { type: "submit" }, "Send event"), result);
  return [h("h2", {}, "Send event"), form];
}

function filterForm(params, names) {
  const select = (name, options) => h("select", { name },
    h("option", { value: "" }, "any"),
    options.map((o) => h("option", { value: o, selected: params.get(name) === o }, o)));
  return h("form", { class: "card inline", id: "filters", onsubmit: (e) => {
    e.preventDefault();
    const query = new URLSearchParams();
    for (const [k, v] of new FormData(e.target)) if (v) query.set(k, v);
    location.hash = `#/runs${query.size ? `?${query}` : ""}`;
  } },
  field("Function", select("function", names)),
  field("Status", select("status", STATUSES)),
  field("Event type", h("input", { name: "type", value: params.get("type") || "", placeholder: "order.*" })),
  h("button", { type: "submit", class: "plain" }, "Filter"));
}

export async function runsPage(main, query, setStatus) {
  const params = new URLSearchParams(query || "");
  const filters = new URLSearchParams();
  for (const key of ["function", "status", "type"]) if (params.get(key)) filters.set(key, params.get(key));
  const [first, listing, brokers] = await Promise.all([
    getJSON(`/_/ui/api/runs?${filters}`),
    getJSON("/_/functions").catch(() => []),
    getJSON("/_/brokers").catch(() => ({})),
  ]);
  // Sinks run deliveries too, and have runs of their own.
  const names = [...listing.map((f) => f.name), ...Object.keys(brokers.sinks || {})].sort();
  const body = h("tbody");
  const seen = new Set();
  const more = h("button", { type: "button", class: "plain", id: "older" }, "Load older");
  let next = null;
  const add = (runs, { top = false, fresh = false } = {}) => {
    for (const run of runs) {
      if (seen.has(run.invocation)) continue;
      seen.add(run.invocation);
      const tr = runRow(run);
      if (fresh) tr.classList.add("new");
      if (top) body.prepend(tr); else body.append(tr);
    }
    // A page left open keeps at most MAX_ROWS: the oldest go, and "Load older" brings
    // them back from the last row kept.
    while (top && body.rows.length > MAX_ROWS) {
      seen.delete(body.lastElementChild.dataset.invocation);
      body.lastElementChild.remove();
      next = Number(body.lastElementChild.dataset.seq);
      more.hidden = false;
    }
    empty.hidden = seen.size > 0;
  };
  const page = (answer) => { next = answer.next; more.hidden = next === null; };
  more.addEventListener("click", async () => {
    const older = await getJSON(`/_/ui/api/runs?${filters}&before=${next}`);
    add(older.runs);
    page(older);
  });
  const empty = note("No runs yet: send an event above, or `fnrun emit TYPE`.");
  const runsTable = table(["Run", "Started", "Function", "Event type", "Event id", "Attempt#",
    "Outcome", "Duration#"], [], { id: "runs" });
  runsTable.querySelector("tbody").replaceWith(body);
  fill(main, h("h1", {}, "Runs"), sendForm(), h("h2", {}, "Recent runs"),
    filterForm(params, names), runsTable, empty, more);
  add(first.runs);
  page(first);

  const live = new URLSearchParams(filters);
  live.set("after", first.head);
  const stream = new EventSource(`/_/ui/stream?${live}`);
  stream.onopen = () => setStatus("live");
  stream.onerror = () => setStatus("reconnecting…");
  stream.onmessage = (e) => {
    for (const run of JSON.parse(e.data)) add([run], { top: true, fresh: true });
  };
  return () => { stream.close(); setStatus(""); };
}
