// Dead letters: each with a Replay button, and replay with an edited payload.

import { getJSON, h, note, path, postJSON, table, when, fill, field } from "./api.js";

function letterRows(letter, done) {
  const data = h("textarea", { name: "data", rows: 4, cols: 60 },
    JSON.stringify(letter.event.data ?? null, null, 2));
  const editor = h("tr", { class: "editor", hidden: true },
    h("td", { colspan: 7 }, h("form", { class: "inline", onsubmit: async (e) => {
      e.preventDefault();
      let value;
      try {
        value = JSON.parse(data.value);
      } catch (err) {
        done(letter, `Data is not JSON: ${err.message}`, true);
        return;
      }
      await replay(letter, { data: value }, done);
    } }, field("Data", data), h("button", { type: "submit" }, "Replay with this data"))));
  const row = h("tr", { "data-letter": letter.id },
    h("td", {}, letter.function),
    h("td", { class: "mono" }, letter.event.type),
    h("td", { class: "mono" }, h("a", { href: `#/traces/${path(letter.event.id)}` }, letter.event.id)),
    h("td", { class: "num" }, letter.attempts),
    h("td", {}, when(letter.failed_at)),
    h("td", { class: "error" }, (letter.error || "").split("\n")[0]),
    h("td", {}, h("button", { type: "button", onclick: () => replay(letter, {}, done) }, "Replay"), " ",
      h("button", { type: "button", class: "plain", onclick: () => { editor.hidden = !editor.hidden; } },
        "Edit and replay")));
  return [row, editor];
}

async function replay(letter, body, done) {
  try {
    await postJSON(`/_/ui/api/dead-letters/${path(letter.id)}/replay`, body);
    done(letter, `Replayed ${letter.event.type} ${letter.event.id} to ${letter.function}${"data" in body ? " with the edited data" : ""}.`);
  } catch (err) {
    done(letter, err.message, true);
  }
}

export async function deadLettersPage(main) {
  const letters = await getJSON("/_/dead-letters");
  const result = h("div", { id: "replayed" });
  const done = (letter, text, isError = false) => {
    if (!isError) {
      for (const tr of main.querySelectorAll(`tr[data-letter="${CSS.escape(letter.id)}"]`)) {
        tr.nextElementSibling?.remove();
        tr.remove();
      }
    }
    fill(result, note(text, isError),
      isError ? null : h("a", { href: `#/runs?function=${path(letter.function)}` }, `See the runs of ${letter.function}`));
  };
  fill(main, h("h1", {}, "Dead letters"), result,
    letters.length
      ? table(["Function", "Event type", "Event id", "Attempts#", "Failed", "Error", "Actions"],
        letters.flatMap((l) => letterRows(l, done)), { id: "dead-letters" })
      : note("No dead letters."));
}
