// The dashboard's shell: a hash router over the pages, and the login form when
// FNRUN_TOKEN is set and this browser has no session yet.

import { h, LoginNeeded, note, startSession, fill, field } from "./api.js";
import { deadLettersPage } from "./dead.js";
import { functionsPage } from "./functions.js";
import { runPage, tracePage } from "./run.js";
import { runsPage } from "./runs.js";

const main = document.getElementById("main");
const status = document.getElementById("status");
const setStatus = (text) => { status.textContent = text; };

const ROUTES = [
  [/^#\/functions$/, "functions", () => functionsPage(main)],
  [/^#\/runs(?:\?(.*))?$/, "runs", (m) => runsPage(main, m[1], setStatus)],
  [/^#\/runs\/(.+)$/, "runs", (m) => runPage(main, decodeURIComponent(m[1]))],
  [/^#\/traces\/(.+)$/, "runs", (m) => tracePage(main, decodeURIComponent(m[1]))],
  [/^#\/dead-letters$/, "dead-letters", () => deadLettersPage(main)],
];

let leave = null;

async function show() {
  if (leave) { leave(); leave = null; }
  const hash = location.hash || "#/runs";
  const [pattern, page, render] = ROUTES.find(([re]) => re.test(hash)) || ROUTES[1];
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("current", a.dataset.page === page);
  try {
    leave = (await render(hash.match(pattern) || [])) || null;
  } catch (err) {
    if (err instanceof LoginNeeded) loginForm();
    else fill(main, note(err.message, true));
  }
}

function loginForm() {
  const token = h("input", { type: "password", name: "token", autocomplete: "off", size: 40 });
  const result = h("div");
  fill(main, h("h1", {}, "Log in"),
    h("p", {}, "This fnrun asks for its token. Open the login link that ",
      h("code", {}, "fnrun dev"), " printed, or paste FNRUN_TOKEN here:"),
    h("form", { class: "card inline", onsubmit: async (e) => {
      e.preventDefault();
      const answer = await fetch("/_/ui/login", { method: "POST",
        headers: { "content-type": "application/json" }, body: JSON.stringify({ token: token.value }) });
      if (answer.ok) location.reload();
      else fill(result, note((await answer.json()).error, true));
    } }, field("Token", token), h("button", { type: "submit" }, "Log in"), result));
}

window.addEventListener("hashchange", show);
startSession().then(show, (err) => {
  if (err instanceof LoginNeeded) loginForm();
  else fill(main, note(err.message, true));
});
