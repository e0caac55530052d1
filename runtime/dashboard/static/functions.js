// Functions: triggers with their next ticks, delivery counts, workers; sources,
// sinks and brokers with their state where the supervisor reports them.

import { fill, getJSON, h, note, path, table, when } from "./api.js";

function triggerText(t) {
  if (t.kind === "event") return `event ${t.pattern}`;
  if (t.kind === "schedule") {
    const next = t.next ? `next ${t.next}${t.timezone && t.timezone !== "UTC" ? ` (${t.timezone})` : ""}` : "never fires again";
    return `schedule ${t.cron}, ${next}`;
  }
  if (t.kind === "webhook") return `webhook ${(t.methods || ["POST"]).join(",")} ${t.url} (${t.mode})`;
  return String(t.kind);
}

function functionRow(f) {
  return h("tr", { "data-function": f.name },
    h("td", {}, h("a", { href: `#/runs?function=${path(f.name)}` }, f.name),
      h("div", { class: "muted mono" }, f.handler),
      f.load_error ? h("div", { class: "error" }, `does not load: ${f.load_error}`) : null),
    h("td", {}, (f.triggers || []).length
      ? (f.triggers || []).map((t) => h("div", { class: "mono" }, triggerText(t)))
      : h("span", { class: "muted" }, "no triggers (fnrun invoke)")),
    h("td", { class: "num" }, f.pending),
    h("td", { class: "num" }, f.running),
    h("td", { class: "num" }, f.dead ? h("a", { href: "#/dead-letters" }, f.dead) : f.dead),
    h("td", { class: "num" }, f.workers ?? "–"));
}

// Brokers, sources and sinks as GET /_/brokers gives them ({name: {...}} each): their
// declaration and live state.
const SECTIONS = [
  ["brokers", "Brokers", [["Broker", "name"], ["Kind", "kind"], ["URL", "url"], ["State", "state"],
    ["Since", "since"], ["Error", "error"]]],
  ["sources", "Sources", [["Source", "name"], ["Broker", "broker"], ["Event type", "type"],
    ["State", "state"], ["Since", "since"], ["Messages#", "messages"], ["Error", "error"]]],
  ["sinks", "Sinks", [["Sink", "name"], ["Broker", "broker"], ["Events", "events"],
    ["Format", "format"], ["Pending#", "pending"]]],
];

function cell(key, value) {
  if (value === null || value === undefined) return h("td", { class: "muted" }, "–");
  if (key === "since" && typeof value === "number") return h("td", {}, when(new Date(value * 1000).toISOString()));
  if (key === "state") return h("td", {}, h("span", { class: `state ${value}` }, value));
  if (key === "error") return h("td", { class: "error" }, String(value));
  return h("td", { class: typeof value === "number" ? "num" : null },
    typeof value === "object" ? JSON.stringify(value) : String(value));
}

function section(key, title, columns, items) {
  const rows = Object.entries(items || {});
  if (!rows.length) return null;
  return [h("h2", {}, title), table(columns.map(([label]) => label), rows.map(([name, item]) =>
    h("tr", { "data-name": name }, columns.map(([, field]) =>
      cell(field, field === "name" ? name : item[field])))), { id: key })];
}

const REFRESH_MS = 5000;

export async function functionsPage(main) {
  await render(main);
  // Counts, workers and broker states change: refreshed while the page is shown.
  const timer = setInterval(() => render(main).catch(() => {}), REFRESH_MS);
  return () => clearInterval(timer);
}

async function render(main) {
  const [listing, brokers] = await Promise.all([
    getJSON("/_/functions"),
    getJSON("/_/brokers").catch(() => ({})),
  ]);
  fill(main,
    h("h1", {}, "Functions"),
    listing.length
      ? table(["Function", "Triggers", "Pending#", "Running#", "Dead#", "Workers#"],
        listing.map(functionRow), { id: "functions" })
      : note("No functions yet: add one with `fnrun new hello --event demo.hello`."),
    SECTIONS.map(([key, title, columns]) => section(key, title, columns, brokers[key])));
}
