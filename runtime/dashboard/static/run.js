// A run's page (payload, attempts, error and traceback, logs, return value,
// emitted events, its trace) and the trace view of an event.

import { duration, getJSON, h, note, outcome, path, pretty, table, when, fill } from "./api.js";

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.filter(([, v]) => v !== null && v !== undefined && v !== "")
    .map(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

function attemptsTable(attempts, current) {
  return table(["Attempt#", "Run", "Outcome", "Started", "Duration#", "Error"], attempts.map((a) =>
    h("tr", { class: a.invocation === current ? "current" : null },
      h("td", { class: "num" }, a.attempt),
      h("td", { class: "mono" }, a.invocation === current ? a.invocation.slice(0, 8)
        : h("a", { href: `#/runs/${path(a.invocation)}` }, a.invocation.slice(0, 8))),
      h("td", {}, outcome(a.status)), h("td", {}, when(a.started)),
      h("td", { class: "num" }, duration(a.duration_ms)), h("td", {}, a.error || ""))), { id: "attempts" });
}

function logsTable(logs) {
  if (!logs.length) return note("No log lines.");
  return table(["Time", "Stream", "Level", "Text"], logs.map((line) =>
    h("tr", { class: `log-${line.stream} log-${line.level}` },
      h("td", {}, when(line.at)), h("td", {}, line.stream), h("td", {}, line.level),
      h("td", { class: "text mono" }, line.text))), { id: "logs" });
}

// The trace tree of /_/traces/{event}: event -> deliveries -> attempts -> emitted events.
function attemptNode(a) {
  return h("li", {},
    h("span", { class: "tag" }, `attempt ${a.attempt}`),
    h("a", { href: `#/runs/${path(a.invocation)}` }, outcome(a.status || a.outcome)), " ",
    h("span", { class: "muted" }, duration(a.duration_ms)),
    a.error ? h("span", { class: "error" }, ` ${String(a.error).split("\n")[0]}`) : null,
    (a.emitted || []).length ? h("ul", { class: "tree" }, a.emitted.map(traceNode)) : null);
}

function deliveryNode(d) {
  return h("li", {}, h("span", { class: "tag" }, "delivery"), d.function, " ",
    d.outcome ? outcome(d.outcome) : null, " ", h("span", { class: "muted" }, duration(d.duration_ms)),
    h("ul", { class: "tree" }, (d.attempts || []).map(attemptNode)));
}

function traceNode(node) {
  const event = node.event || node;
  const deliveries = node.deliveries || [];
  return h("li", {},
    h("span", { class: "tag" }, "event"),
    h("span", { class: "mono" }, event.type || ""), " ",
    h("a", { class: "mono", href: `#/traces/${path(event.id)}` }, event.id),
    node.missing ? h("span", { class: "muted" }, " (not stored: past retention)") : null,
    node.shown_above ? h("span", { class: "muted" }, " (shown above)") : null,
    node.cut ? h("span", { class: "muted" }, " (not shown: the trace is cut here)") : null,
    deliveries.length ? h("ul", { class: "tree" }, deliveries.map(deliveryNode)) : null);
}

async function traceOf(eventId) {
  try {
    const trace = await getJSON(`/_/traces/${path(eventId)}`);
    const root = trace.root || trace.tree || trace;
    const id = trace.trace_id || root.trace_id;
    return [id ? h("p", { class: "muted mono" }, `trace ${id}`) : null,
      root.parent ? h("p", { id: "parent" }, "Emitted by a run of event ",
        h("a", { class: "mono", href: `#/traces/${path(root.parent)}` }, root.parent)) : null,
      h("ul", { class: "tree root", id: "trace" }, traceNode(root))];
  } catch (err) {
    return note(`No trace: ${err.message}`, true);
  }
}

// A return value as runtime/results.py encodes it: {"json": v}, {"text": s},
// {"bytes": base64}, or a response {"status", "body", "headers"}.
function plainResult(encoded) {
  if (encoded === null || typeof encoded !== "object" || Array.isArray(encoded)) return encoded;
  if ("status" in encoded && "body" in encoded) {
    return { status: encoded.status, body: plainResult(encoded.body), headers: encoded.headers || {} };
  }
  const keys = Object.keys(encoded);
  if (keys.length === 1 && (keys[0] === "json" || keys[0] === "text")) return encoded[keys[0]];
  if (keys.length === 1 && keys[0] === "bytes") return { base64: encoded.bytes };
  return encoded;
}

export async function runPage(main, invocation) {
  const { run, event, attempts } = await getJSON(`/_/ui/api/runs/${path(invocation)}`);
  fill(main,
    h("h1", {}, `${run.function} · `, h("span", { class: "mono" }, run.event_type), " ", outcome(run.status)),
    facts([["Run", h("span", { class: "mono" }, run.invocation)],
      ["Event", h("a", { class: "mono", href: `#/traces/${path(run.event_id)}` }, run.event_id)],
      ["Attempt", run.attempt], ["Started", when(run.started)], ["Duration", duration(run.duration_ms)]]),
    h("h2", {}, "Payload"),
    event ? [pretty(event.data ?? null), h("details", {}, h("summary", {}, "Event attributes"),
      pretty(Object.fromEntries(Object.entries(event).filter(([k]) => k !== "data"))))]
      : note("The event is past retention."),
    h("h2", {}, "Attempts"), attemptsTable(attempts, run.invocation),
    run.error ? [h("h2", {}, "Error"), pretty(run.error), run.traceback ? pretty(run.traceback) : null] : null,
    h("h2", {}, "Logs"), logsTable(run.logs),
    h("h2", {}, "Return value"), pretty(plainResult(run.result ?? null)),
    h("h2", {}, "Emitted events"),
    run.emitted.length ? h("ul", { id: "emitted" }, run.emitted.map((id) =>
      h("li", {}, h("a", { class: "mono", href: `#/traces/${path(id)}` }, id)))) : note("None."),
    h("h2", {}, "Trace"), await traceOf(run.event_id));
}

export async function tracePage(main, eventId) {
  fill(main, h("h1", {}, "Trace of ", h("span", { class: "mono" }, eventId)),
    await traceOf(eventId));
}
