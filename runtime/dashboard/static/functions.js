// Functions: triggers with their next ticks, delivery counts, workers; sources,
// sinks and brokers with their state where the supervisor reports them.

import { getJSON, h, note, path, table, fill } from "./api.js";

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

// A broker section as the supervisor gives it: a list of objects, or {name: object}.
function section(title, items) {
  const rows = Array.isArray(items) ? items
    : Object.entries(items).map(([name, v]) => (typeof v === "object" && v !== null ? { name, ...v } : { name, state: v }));
  if (!rows.length) return null;
  const keys = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const cell = (v) => (v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : String(v));
  return [h("h2", {}, title), table(keys.map((k) => k.replaceAll("_", " ")),
    rows.map((r) => h("tr", {}, keys.map((k) => h("td", { class: k === "state" ? `state ${cell(r[k])}` : null }, cell(r[k]))))))];
}

export async function functionsPage(main) {
  const [listing, health] = await Promise.all([
    getJSON("/_/functions"),
    fetch("/_/health").then((r) => r.json()).catch(() => ({})),
  ]);
  const functions = Array.isArray(listing) ? listing : listing.functions || [];
  const extra = Array.isArray(listing) ? {} : listing;
  fill(main,
    h("h1", {}, "Functions"),
    functions.length
      ? table(["Function", "Triggers", "Pending#", "Running#", "Dead#", "Workers#"],
        functions.map(functionRow), { id: "functions" })
      : note("No functions yet: add one with `fnrun new hello --event demo.hello`."),
    ["sources", "sinks", "brokers"].map((key) => {
      const items = extra[key] ?? health[key];
      return items ? section(key[0].toUpperCase() + key.slice(1), items) : null;
    }));
}
